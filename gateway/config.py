"""The gateway's one configuration file, as pydantic models.

A YAML file is read, ``${VAR}``-free: secrets are referenced, never interpolated
(``password: {env: NAME}`` or ``{file: path}``), so a config file can be committed
without its secrets. Any field can be overridden from the environment with the
``GATEWAY__`` prefix and ``__`` between levels, e.g. ``GATEWAY__ADMIN__BIND=0.0.0.0:9000``.
A bad file is refused with :class:`ConfigError` naming the field.
"""

from __future__ import annotations

import copy
import fnmatch
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.errors import ConfigError
from gateway.identity.principal_mapping import InvalidRule, parse_rules
from gateway.identity.scram import parse_credential

ENV_PREFIX = "GATEWAY__"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _split_host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


HostPort = Annotated[str, Field(description="host:port", examples=["127.0.0.1:9092"])]


class SecretRef(_Model):
    """A secret given inline, from an environment variable, or from a file."""

    value: SecretStr | None = Field(None, description="The secret itself (avoid in files).")
    env: str | None = Field(None, description="Name of an environment variable holding it.")
    file: Path | None = Field(
        None, description="Path of a file holding it (trailing newline stripped)."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        given = [n for n in ("value", "env", "file") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of value, env, file")
        return self

    def resolve(self) -> str:
        """The secret's text. Raises ConfigError naming the source (never the secret)."""
        if self.value is not None:
            return self.value.get_secret_value()
        if self.env is not None:
            found = os.environ.get(self.env)
            if found is None:
                raise ConfigError(f"environment variable {self.env} is not set")
            return found
        assert self.file is not None
        try:
            return self.file.expanduser().read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read secret file {self.file}: {exc.strerror}") from exc


SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
# The signature algorithms python-jose verifies (it has no PS*).
JwtAlgorithm = Literal[
    "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "HS256", "HS384", "HS512",
]  # fmt: skip
OpenEndpoint = Literal["/healthz", "/readyz", "/metrics"]


class ListenerTlsConfig(_Model):
    """TLS on a client listener (SSL and SASL_SSL). Files are re-read when they change."""

    cert_file: Path = Field(description="Server certificate chain (PEM), leaf first.")
    key_file: Path = Field(description="Private key of the server certificate (PEM).")
    key_password: SecretRef | None = Field(None, description="Password of an encrypted key.")
    ca_file: Path | None = Field(
        None, description="CA bundle (PEM) that client certificates must chain to."
    )
    client_auth: Literal["none", "requested", "required"] = Field(
        "none",
        description="Ask for a client certificate (requested) or refuse the connection "
        "without one that verifies against ca_file (required).",
    )
    principal_mapping_rules: list[str] = Field(
        default_factory=lambda: ["DEFAULT"],
        description="How a client certificate's subject becomes the principal, in Kafka's "
        "ssl.principal.mapping.rules syntax: RULE:pattern/replacement/[LU] entries tried in "
        "order, DEFAULT for the whole RFC 2253 subject.",
    )
    principal_source: Literal["subject", "san_dns", "san_uri", "san_email"] = Field(
        "subject",
        description="Which part of the certificate the mapping rules read: the subject "
        "distinguished name or the first subject alternative name of a kind.",
    )
    reload_interval_seconds: float = Field(
        10.0, gt=0, description="How often the certificate files are checked for changes."
    )

    @model_validator(mode="after")
    def _ca_for_client_auth(self) -> ListenerTlsConfig:
        if self.client_auth != "none" and self.ca_file is None:
            raise ValueError(f"ca_file is required with client_auth {self.client_auth}")
        return self


def _check_rules(tls: ListenerTlsConfig, where: str) -> None:
    """Mapping rules are parsed when the file loads, so a typo stops the start."""
    try:
        parse_rules(tls.principal_mapping_rules)
    except InvalidRule as exc:
        raise ValueError(f"{where}: {exc}") from None


class ListenerConfig(_Model):
    """One address clients connect to."""

    name: str = Field(description="Name used in logs and metrics.")
    bind: HostPort = Field(description="Address the gateway listens on.")
    advertised: HostPort | None = Field(
        None, description="Address clients are told to use (defaults to bind)."
    )
    security_protocol: SecurityProtocol = Field(
        "SASL_PLAINTEXT",
        description="As Kafka names it. PLAINTEXT: no authentication (principal "
        "'anonymous'); SSL: TLS, the principal from the client certificate when one is "
        "required, else 'anonymous'; SASL_PLAINTEXT / SASL_SSL: SASL without / over TLS.",
    )
    sasl_mechanisms: list[SaslMechanism] = Field(
        default_factory=lambda: list[SaslMechanism](["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]),
        min_length=1,
        description="SASL mechanisms offered on a SASL_* listener (OAUTHBEARER needs "
        "identity.oauthbearer).",
    )
    tls: ListenerTlsConfig | None = Field(None, description="Required for SSL and SASL_SSL.")

    @field_validator("bind", "advertised")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            _split_host_port(value)
        return value

    @model_validator(mode="after")
    def _tls_matches_protocol(self) -> ListenerConfig:
        if self.uses_tls and self.tls is None:
            raise ValueError(f"tls is required with security_protocol {self.security_protocol}")
        if not self.uses_tls and self.tls is not None:
            raise ValueError(f"tls is set but security_protocol is {self.security_protocol}")
        if self.tls is not None:
            _check_rules(self.tls, f"listener {self.name}")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def bind_address(self) -> tuple[str, int]:
        return _split_host_port(self.bind)

    @property
    def advertised_address(self) -> tuple[str, int]:
        return _split_host_port(self.advertised or self.bind)


class SaslConfig(_Model):
    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        description="SASL mechanism the gateway uses towards the cluster."
    )
    username: str = Field(description="The gateway's own user on the cluster.")
    password: SecretRef = Field(description="The gateway's password on the cluster.")


class TlsConfig(_Model):
    ca_file: Path | None = Field(None, description="CA bundle to verify the brokers.")
    cert_file: Path | None = Field(None, description="Client certificate (mutual TLS).")
    key_file: Path | None = Field(None, description="Client private key (mutual TLS).")
    check_hostname: bool = Field(True, description="Verify broker host names.")


_TOPIC_NAME = r"^[A-Za-z0-9._-]{1,249}$"


class HealthCheckConfig(_Model):
    """How the gateway checks an upstream cluster: log in and read its metadata, ask
    every broker for its API versions, then write a record to a small topic of the
    gateway's own and read it back (the canary)."""

    interval_seconds: float = Field(
        5.0, gt=0, description="Time between checks while the cluster answers."
    )
    timeout_seconds: float = Field(
        5.0, gt=0, description="How long one check waits for a broker to connect and answer."
    )
    down_after_failures: int = Field(
        1,
        ge=1,
        le=100,
        description="Failed checks in a row that mark an up cluster down. One failed "
        "check already means no broker answered within timeout_seconds; more keep a "
        "lost check from flapping /readyz, at the cost of clients' retriable errors "
        "meanwhile.",
    )
    up_after_successes: int = Field(
        1,
        ge=1,
        le=100,
        description="Passed checks in a row that mark a down cluster up again (the first "
        "check after start-up needs one).",
    )
    canary_topic: str | None = Field(
        "__gateway-canary",
        pattern=_TOPIC_NAME,
        description="The gateway's own one-partition topic each check writes a record to "
        "and reads it back from (created when missing, 1 h retention); null: no canary. "
        "A failed round trip marks the cluster degraded. MirrorMaker's default "
        "topics.exclude (`__.*`) leaves the default name unmirrored.",
    )


class ClusterConfig(_Model):
    """An upstream Kafka cluster, reached with credentials only the gateway holds."""

    bootstrap_servers: list[HostPort] = Field(min_length=1, description="host:port list.")
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How the gateway connects to the brokers."
    )
    sasl: SaslConfig | None = Field(None, description="Required for SASL_* protocols.")
    tls: TlsConfig | None = Field(None, description="Used with SSL and SASL_SSL.")
    health: HealthCheckConfig = Field(
        default_factory=HealthCheckConfig,
        description="Health checks of this cluster (see clusters.*.health).",
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: list[str]) -> list[str]:
        for item in value:
            _split_host_port(item)
        return value

    @model_validator(mode="after")
    def _sasl_matches_protocol(self) -> ClusterConfig:
        if self.security_protocol.startswith("SASL_") and self.sasl is None:
            raise ValueError(f"sasl is required with security_protocol {self.security_protocol}")
        if not self.security_protocol.startswith("SASL_") and self.sasl is not None:
            raise ValueError(f"sasl is set but security_protocol is {self.security_protocol}")
        return self

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [_split_host_port(s) for s in self.bootstrap_servers]


class ReplicationConfig(_Model):
    """How MirrorMaker 2 replicates the primary to the secondary, and how the gateway
    watches it (with a secondary configured): the records of each mirrored topic the
    secondary still lacks, counted as ``gateway failover status`` counts them, as
    metrics and in ``GET /clusters``."""

    source_alias: str = Field(
        "primary", min_length=1, description="MirrorMaker's alias of the primary cluster."
    )
    target_alias: str = Field(
        "secondary", min_length=1, description="MirrorMaker's alias of the secondary cluster."
    )
    watch_interval_seconds: float | None = Field(
        30.0, gt=0, description="Time between measurements of the lag; null: not watched."
    )
    round_timeout_seconds: float = Field(
        30.0, gt=0, description="How long one measurement may take before it counts as failed."
    )
    topics: str | None = Field(
        None, description="Only topics matching this regex are watched (default: all mirrored)."
    )
    groups: str | None = Field(
        None,
        description="Only consumer groups matching this regex are watched (default: every "
        "group MirrorMaker checkpoints).",
    )
    pending_read_limit: int = Field(
        1000,
        ge=0,
        le=1_000_000,
        description="Records read per partition to count pending ones exactly (transaction "
        "markers and aborted records are not copied); beyond it the offset distance is "
        "reported, as an upper bound.",
    )

    @field_validator("topics", "groups")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @property
    def topic_pattern(self) -> re.Pattern[str] | None:
        return re.compile(self.topics) if self.topics is not None else None

    @property
    def group_pattern(self) -> re.Pattern[str] | None:
        return re.compile(self.groups) if self.groups is not None else None


class ClustersConfig(_Model):
    primary: ClusterConfig = Field(description="The cluster served normally.")
    secondary: ClusterConfig | None = Field(None, description="The failover cluster.")
    replication: ReplicationConfig = Field(
        default_factory=ReplicationConfig,
        description="MirrorMaker 2's replication of primary to secondary, as the gateway "
        "watches it (see clusters.replication).",
    )


_PBKDF2 = r"^pbkdf2_sha256\$[1-9]\d{0,8}\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$"
# scram-sha-256$<iterations>$<salt>$<stored key>$<server key>, base64 parts. At most
# 7 digits of iterations: the client pays them, but a bound keeps the config sane.
# identity.scram.parse_credential checks the rest (4096 iterations at least, sizes).
_SCRAM = r"^scram-sha-(256|512)\$[1-9]\d{3,6}\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$"


class UserConfig(_Model):
    """A client identity: a person's or a machine's (service account) credentials.

    The same entries may live in ``identity.service_accounts_file``, which is re-read
    when it changes.
    """

    name: str = Field(min_length=1, max_length=255, description="The principal.")
    password_hash: str | None = Field(
        None,
        description="For SASL/PLAIN: pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>, "
        "from `python -m gateway hash-password`.",
        # At most 9 digits of iterations: a larger count would tie up a thread per login.
        pattern=_PBKDF2,
    )
    scram_sha_256: str | None = Field(
        None,
        description="For SCRAM-SHA-256: scram-sha-256$<iterations>$<salt>$<stored key>$"
        "<server key>, from `python -m gateway hash-password --scram`.",
        pattern=_SCRAM,
    )
    scram_sha_512: str | None = Field(
        None, description="For SCRAM-SHA-512, the same format with scram-sha-512.", pattern=_SCRAM
    )
    tls_subject: str | None = Field(
        None,
        description="A client certificate subject (RFC 2253, e.g. 'CN=orders,O=Acme') that "
        "authenticates as this identity on a listener with client_auth.",
    )
    groups: list[str] = Field(default_factory=list, description="Group memberships.")
    disabled: bool = Field(False, description="Refuse every authentication as this identity.")

    @field_validator("scram_sha_256", "scram_sha_512")
    @classmethod
    def _scram_credential(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        kind = info.field_name[len("scram_sha_") :] if info.field_name else ""
        if not value.startswith(f"scram-sha-{kind}$"):
            raise ValueError(f"holds a scram-sha-{value[10:13]} credential, not scram-sha-{kind}")
        # The pattern checked the shape; this checks the numbers and sizes.
        parse_credential(value)
        return value


class OAuthBearerConfig(_Model):
    """SASL/OAUTHBEARER: JSON Web Tokens from an identity provider."""

    issuer: str = Field(min_length=1, description="Required value of the iss claim.")
    audience: str = Field(min_length=1, description="Required value (or member) of aud.")
    algorithms: list[JwtAlgorithm] = Field(
        default_factory=lambda: list[JwtAlgorithm](["RS256"]),
        min_length=1,
        description="Accepted signature algorithms; the token's header never widens them. "
        "HS* only with shared_secret, never mixed with asymmetric ones.",
    )
    jwks_url: str | None = Field(
        None,
        description="The provider's JWKS: https (verified against jwks_ca_file or the "
        "system CAs), or http on a loopback address only.",
    )
    jwks_ca_file: Path | None = Field(None, description="CA bundle for an https jwks_url.")
    jwks_file: Path | None = Field(None, description="A JWKS file, re-read when it changes.")
    shared_secret: SecretRef | None = Field(None, description="Key for HS* algorithms.")
    jwks_refresh_seconds: float = Field(300.0, gt=0, description="Keys are re-read this often.")
    jwks_min_refetch_seconds: float = Field(
        10.0,
        gt=0,
        description="A token with an unknown kid triggers at most one refetch per this interval.",
    )
    principal_claim: str = Field("sub", min_length=1, description="Claim naming the principal.")
    groups_claim: str | None = Field(
        "groups",
        description="Claim holding the groups (a list or a space-separated string).",
    )
    leeway_seconds: float = Field(
        30.0, ge=0, le=300, description="Clock skew allowed for exp, nbf and iat."
    )
    max_session_seconds: float = Field(
        3600.0,
        gt=0,
        description="Longest session before re-authentication (KIP-368), also capped by "
        "the token's exp.",
    )

    @model_validator(mode="after")
    def _keys(self) -> OAuthBearerConfig:
        symmetric = {a for a in self.algorithms if a.startswith("HS")}
        if symmetric and len(symmetric) != len(self.algorithms):
            raise ValueError("HS* algorithms cannot be mixed with asymmetric ones")
        if symmetric:
            if self.shared_secret is None:
                raise ValueError("HS* algorithms need shared_secret")
            if self.jwks_url is not None or self.jwks_file is not None:
                raise ValueError("HS* algorithms take shared_secret, not a JWKS")
        else:
            if (self.jwks_url is None) == (self.jwks_file is None):
                raise ValueError("give exactly one of jwks_url, jwks_file")
            if self.shared_secret is not None:
                raise ValueError("shared_secret is only for HS* algorithms")
        if self.jwks_url is not None:
            _check_jwks_url(self.jwks_url)
        return self


def _check_jwks_url(url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1"):
        return
    raise ValueError("jwks_url must be https, or http on a loopback address")


class IdentityConfig(_Model):
    """Where identities come from besides ``users``."""

    service_accounts_file: Path | None = Field(
        None,
        description="A YAML file with `accounts:` entries shaped like users[]; re-read when "
        "it changes (an invalid new version is logged and the last good one kept).",
    )
    reload_interval_seconds: float = Field(
        5.0, gt=0, description="How often the service accounts file is checked."
    )
    oauthbearer: OAuthBearerConfig | None = Field(
        None, description="Token validation for SASL/OAUTHBEARER."
    )
    max_session_seconds: float | None = Field(
        None,
        gt=0,
        description="Longest session of PLAIN, SCRAM and certificate logins before the "
        "client must re-authenticate (KIP-368); unset: no limit.",
    )


class AdminTokenConfig(_Model):
    """A static bearer token for the admin API, stored as its SHA-256."""

    name: str = Field(min_length=1, description="Who holds the token (the principal).")
    token_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="Hex SHA-256 of the token, from `python -m gateway hash-password "
        "--admin-token`.",
    )
    groups: list[str] = Field(default_factory=list, description="Groups, which grant roles.")


AdminRole = Literal["operator", "approver", "auditor", "admin"]


class AdminConfig(_Model):
    bind: HostPort = Field("127.0.0.1:8080", description="Admin HTTP address (/metrics etc).")
    tls: ListenerTlsConfig | None = Field(
        None, description="Serve the admin API over HTTPS with this certificate."
    )
    open_endpoints: list[OpenEndpoint] = Field(
        default_factory=lambda: list[OpenEndpoint](["/healthz", "/readyz", "/metrics"]),
        description="Endpoints served without a token; every other one needs a bearer token.",
    )
    tokens: list[AdminTokenConfig] = Field(
        default_factory=list, description="Static bearer tokens (stored hashed)."
    )
    accept_oauthbearer: bool = Field(
        True,
        description="Also accept JWTs validated as identity.oauthbearer validates them.",
    )
    roles: dict[AdminRole, list[str]] = Field(
        default_factory=dict,
        description="Groups granting each role, e.g. {operator: [sre], auditor: [audit]}.",
    )

    @model_validator(mode="after")
    def _tls_rules(self) -> AdminConfig:
        if self.tls is not None:
            _check_rules(self.tls, "admin")
        return self

    @property
    def bind_address(self) -> tuple[str, int]:
        return _split_host_port(self.bind)


class LimitsConfig(_Model):
    max_frame_bytes: int = Field(
        104_857_600, gt=0, description="Largest request accepted after authentication."
    )
    pre_auth_max_frame_bytes: int = Field(
        524_288, gt=0, description="Largest request accepted before authentication."
    )
    idle_timeout_seconds: float = Field(
        600.0, gt=0, description="Close client connections idle this long."
    )
    max_in_flight_requests: int = Field(
        128, gt=0, description="Per connection; reading pauses while this many are pending."
    )
    upstream_timeout_seconds: float = Field(
        30.0, gt=0, description="Time budget for an upstream request beyond its own timeout."
    )
    shutdown_grace_seconds: float = Field(
        10.0, ge=0, description="How long in-flight requests may finish on shutdown."
    )
    queued_max_request_bytes: int = Field(
        268_435_456,
        gt=0,
        description="Gateway-wide budget for requests being read or handled, in bytes (as "
        "Kafka's queued.max.request.bytes): reading pauses while it is spent.",
    )
    authentication_timeout_seconds: float = Field(
        10.0, gt=0, description="A connection must have authenticated this long after connect."
    )
    frame_timeout_seconds: float = Field(
        60.0, gt=0, description="A request whose first bytes arrived must be complete within this."
    )
    max_connections_per_address: int = Field(
        1000, gt=0, description="Open client connections allowed from one IP address."
    )
    failed_authentication_delay_seconds: float = Field(
        1.0,
        ge=0,
        description="A failed authentication is answered after this delay (Kafka's "
        "connection.failed.authentication.delay.ms).",
    )
    authentication_workers: int = Field(
        4, gt=0, description="Threads that verify passwords and tokens, for all connections."
    )
    authentications_per_address: int = Field(
        2, gt=0, description="Credential checks from one IP address running at once."
    )
    failed_authentications_per_address: int = Field(
        20,
        gt=0,
        description="Failures one IP address may have in a minute; beyond it, its attempts "
        "are refused without checking the credentials until the minute has passed.",
    )


class PolicyConfig(_Model):
    """Which policy decides what each identity may do (see ``policies/``)."""

    dir: Path | None = Field(
        None,
        description="Directory of policy files (*.yaml). Once set, every request is "
        "authorized and what no rule allows is denied, anonymous listeners included; "
        "unset: every authenticated client may do what the gateway's upstream account may.",
    )
    reload_interval_seconds: float = Field(
        2.0, gt=0, description="How often the directory is checked for changed files."
    )


AuditCapture = Literal["none", "sha256", "full"]


class AuditPayloadConfig(_Model):
    """Which record payloads Produce and Fetch events carry, for the topics named."""

    topics: str = Field(
        min_length=1,
        description="A topic name, or a glob (* ? [...]); a name ending in * is a prefix.",
    )
    capture: AuditCapture = Field(
        "none",
        description="none; sha256: SHA-256 of each record's key and value; full: the "
        "payload itself (base64).",
    )

    def matches(self, topic: str) -> bool:
        return fnmatch.fnmatchcase(topic, self.topics)


def default_instance_id() -> str:
    """The host name, reduced to the characters a segment file name may hold: stable
    for as long as the host keeps its name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())
    return cleaned or "gateway"


class AuditKafkaConfig(_Model):
    """A copy of this instance's audit chain on a Kafka topic (the local files stay the
    source of durability)."""

    cluster: str = Field(
        description="One of `clusters:` (primary or secondary); reached with the gateway's "
        "own credentials and TLS for it."
    )
    topic: str = Field(
        "_gateway_audit",
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="Topic the lines go to, keyed by instance id.",
    )
    create_topic: bool = Field(
        True,
        description="Create the topic if missing: `partitions` partitions, replication "
        "min(3, brokers), min.insync.replicas min(2, replication), cleanup.policy=delete, "
        "retention 400 days.",
    )
    partitions: int = Field(3, ge=1, le=1000, description="Partitions of a topic the sink creates.")
    batch_max_lines: int = Field(
        500, ge=1, le=100_000, description="Most lines sent (and held in memory) per batch."
    )
    poll_interval_ms: float = Field(
        100.0, gt=0, le=60_000, description="How often the sink looks for new durable lines."
    )
    stop_timeout_seconds: float = Field(
        5.0, ge=0, description="At shutdown, longest wait to ship what is durable."
    )


class AuditConfig(_Model):
    """The audit log: every connection, login and request, hash-chained and signed."""

    dir: Path = Field(description="Directory of the segment files (created if missing).")
    key_file: Path = Field(
        description="Ed25519 private key (PEM, mode 0600) signing checkpoints; made by "
        "`python -m gateway audit keygen --out FILE`."
    )
    instance_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,100}$",
        description="Names this gateway's chain and its files; unset: the host name.",
    )
    checkpoint_every_events: int = Field(
        1000, ge=1, description="A signed checkpoint after this many lines."
    )
    checkpoint_every_seconds: float = Field(
        10.0, gt=0, description="A signed checkpoint at least this often while events arrive."
    )
    segment_max_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="A new segment file once one reaches this size."
    )
    segment_max_seconds: float = Field(
        3600.0, gt=0, description="A new segment file once one is this old."
    )
    group_commit_ms: float = Field(
        2.0,
        ge=0,
        le=1000,
        description="Longest wait for more events to share one fsync with the first (it "
        "ends sooner once none came for an eighth of it); 0: only what queued meanwhile.",
    )
    fail_open: bool = Field(
        False,
        description="Serve requests while events cannot be written (counted, logged, and "
        "recorded once the log works again); false: refuse them with a retriable error.",
    )
    payloads: list[AuditPayloadConfig] = Field(
        default_factory=list,
        description="Payload capture per topic pattern, first match wins; default none.",
    )
    kafka: AuditKafkaConfig | None = Field(
        None, description="Ship the chain to a Kafka topic; unset: local files only."
    )

    @field_validator("dir", "key_file")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        # "~/..." as in the other file fields; the writer and key loader see real paths.
        return value.expanduser()

    @property
    def instance(self) -> str:
        return self.instance_id or default_instance_id()

    def capture_for(self, topic: str) -> AuditCapture:
        """What Produce and Fetch events of ``topic`` capture of its records."""
        for rule in self.payloads:
            if rule.matches(topic):
                return rule.capture
        return "none"


class RegistryConfig(_Model):
    """An external Confluent-compatible schema registry (Confluent, Karapace, Apicurio's
    ccompat API, ...)."""

    url: Annotated[str, Field(pattern=r"^https?://")] = Field(
        description="Base URL, e.g. http://registry:8081."
    )
    username: str | None = Field(None, description="Basic auth user (with password).")
    password: SecretRef | None = Field(None, description="Basic auth password.")
    token: SecretRef | None = Field(None, description="Bearer token (instead of basic auth).")
    ca_file: Path | None = Field(None, description="CA bundle to verify an https registry.")
    timeout_seconds: float = Field(5.0, gt=0, description="Per HTTP request.")
    cache_size: int = Field(
        1000, ge=1, description="Schemas kept by id (ids never change: kept until evicted)."
    )
    subject_ttl_seconds: float = Field(
        300.0, gt=0, description="How long a subject's latest version is trusted."
    )

    @model_validator(mode="after")
    def _one_auth(self) -> RegistryConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("basic auth needs both username and password")
        if self.token is not None and self.username is not None:
            raise ValueError("give basic auth (username, password) or token, not both")
        return self


class MaskingConfig(_Model):
    """Masking of record fields before delivery (rules: ``masking:`` in the policy
    files). Schemas come from ``registry`` or, unset, from the embedded registry of
    ``schemas_dir``."""

    key_file: Path = Field(
        description="The masking key (32+ random bytes, mode 0600) for keyed hashes; made "
        "by `python -m gateway masking keygen --out FILE`. Never logged or exported."
    )
    registry: RegistryConfig | None = Field(
        None, description="External schema registry; unset: the embedded one."
    )
    schemas_dir: Path = Field(
        Path("schemas"),
        description="The embedded registry's .avsc files (subject = file name), used "
        "when no registry is set.",
    )
    serve_registry: HostPort | None = Field(
        None,
        description="Serve the embedded registry (Confluent REST API, read-only) here, "
        "so producers use the same schema ids.",
    )
    max_batch_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024 * 1024,
        description="The most one record batch may take decompressed while it is masked; "
        "a larger one (a few kilobytes of zstd can claim gigabytes) is refused like any "
        "batch that cannot be masked: its partition on fetch, INVALID_RECORD on produce.",
    )
    inline_max_bytes: int = Field(
        64 * 1024,
        ge=0,
        description="A partition's records up to this size are masked on the event loop; "
        "larger ones on a worker thread, so one large fetch does not stall other clients.",
    )

    @field_validator("key_file", "schemas_dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()


class GatewayIdentity(_Model):
    node_id: int = Field(0, ge=0, description="The one broker id clients see.")
    cluster_id: str = Field(
        "soc2-gateway", min_length=1, description="Cluster id clients see (stable across failover)."
    )


class Config(_Model):
    """The whole configuration file."""

    gateway: GatewayIdentity = GatewayIdentity()
    listeners: list[ListenerConfig] = Field(min_length=1, description="Client listeners.")
    clusters: ClustersConfig
    users: list[UserConfig] = Field(
        default_factory=list, description="Client identities and their credentials."
    )
    identity: IdentityConfig = IdentityConfig()
    admin: AdminConfig = AdminConfig()
    limits: LimitsConfig = LimitsConfig()
    policy: PolicyConfig = PolicyConfig()
    audit: AuditConfig | None = Field(
        None, description="The audit log; unset: no audit events are written."
    )
    masking: MaskingConfig | None = Field(
        None,
        description="Field masking; unset: a policy with masking rules is refused at "
        "start (it could not be applied).",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        for kind, names in (
            ("listener", [item.name for item in self.listeners]),
            ("user", [u.name for u in self.users]),
        ):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"duplicate {kind} names: {', '.join(duplicates)}")
        if self.identity.oauthbearer is None:
            for listener in self.listeners:
                if listener.uses_sasl and "OAUTHBEARER" in listener.sasl_mechanisms:
                    raise ValueError(
                        f"listener {listener.name} offers OAUTHBEARER but identity.oauthbearer "
                        "is not set"
                    )
        if self.audit is not None and self.audit.kafka is not None:
            name = self.audit.kafka.cluster
            if name not in ("primary", "secondary") or getattr(self.clusters, name) is None:
                raise ValueError(
                    f"audit.kafka.cluster: unknown cluster {name!r} (configured: "
                    f"{', '.join(self.cluster_names)})"
                )
        return self

    @property
    def cluster_names(self) -> list[str]:
        return ["primary"] + (["secondary"] if self.clusters.secondary is not None else [])


_SECTIONS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("gateway", GatewayIdentity),
    ("listeners[]", ListenerConfig),
    ("listeners[].tls / admin.tls", ListenerTlsConfig),
    ("clusters", ClustersConfig),
    ("clusters.primary / clusters.secondary", ClusterConfig),
    ("clusters.*.sasl", SaslConfig),
    ("clusters.*.tls", TlsConfig),
    ("clusters.*.health", HealthCheckConfig),
    ("clusters.replication", ReplicationConfig),
    ("secret reference (e.g. clusters.*.sasl.password)", SecretRef),
    ("users[] (and service accounts)", UserConfig),
    ("identity", IdentityConfig),
    ("identity.oauthbearer", OAuthBearerConfig),
    ("admin", AdminConfig),
    ("admin.tokens[]", AdminTokenConfig),
    ("limits", LimitsConfig),
    ("policy", PolicyConfig),
    ("audit", AuditConfig),
    ("audit.payloads[]", AuditPayloadConfig),
    ("audit.kafka", AuditKafkaConfig),
    ("masking", MaskingConfig),
    ("masking.registry", RegistryConfig),
)


def config_reference() -> str:
    """The README's config reference, generated from the models' field descriptions."""
    lines: list[str] = []
    for section, model in _SECTIONS:
        lines += [f"#### `{section}`", "", "| field | default | meaning |", "| --- | --- | --- |"]
        for name, info in model.model_fields.items():
            default = "required" if info.is_required() else f"`{info.default!r}`"
            if info.default_factory is not None:
                made = info.default_factory()  # type: ignore[call-arg]
                default = "`[]`" if made == [] else "see below"
            lines.append(f"| `{name}` | {default} | {info.description or ''} |")
        lines.append("")
    return "\n".join(lines)


def _env_value(value: str) -> Any:
    """An override's value: a YAML list or mapping when it looks like one, else the text
    itself (pydantic converts text to numbers and booleans where a field wants them)."""
    if value.lstrip().startswith(("[", "{")):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"environment override is not valid YAML: {exc}") from exc
    return value


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in key[len(ENV_PREFIX) :].split("__") if part]
        if not path:
            continue
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{key}: {'.'.join(path[:-1])} is not a section")
            node = child
        node[path[-1]] = _env_value(value)


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def parse_config(
    data: Any, source: str = "<data>", environ: Mapping[str, str] | None = None
) -> Config:
    """Validate already-loaded YAML data (plus env overrides)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {source}: the top level must be a mapping")
    data = copy.deepcopy(data)
    _apply_env(data, os.environ if environ is None else environ)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from exc
    return parse_config(data, str(path), environ)
