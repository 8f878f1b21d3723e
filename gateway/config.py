"""The gateway's one configuration file, as pydantic models.

A YAML file is read, ``${VAR}``-free: secrets are referenced, never interpolated
(``password: {env: NAME}`` or ``{file: path}``), so a config file can be committed
without its secrets. Any field can be overridden from the environment with the
``GATEWAY__`` prefix and ``__`` between levels, e.g. ``GATEWAY__ADMIN__BIND=0.0.0.0:9000``.
A bad file is refused with :class:`ConfigError` naming the field.
"""

from __future__ import annotations

import copy
import os
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
    field_validator,
    model_validator,
)

from gateway.errors import ConfigError

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


class ListenerConfig(_Model):
    """One address clients connect to."""

    name: str = Field(description="Name used in logs and metrics.")
    bind: HostPort = Field(description="Address the gateway listens on.")
    advertised: HostPort | None = Field(
        None, description="Address clients are told to use (defaults to bind)."
    )
    authentication: Literal["none", "sasl_plain"] = Field(
        "sasl_plain",
        description="none: no authentication (identity 'anonymous'); sasl_plain: SASL/PLAIN "
        "against the configured users.",
    )

    @field_validator("bind", "advertised")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            _split_host_port(value)
        return value

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


class HealthCheckConfig(_Model):
    """How the gateway checks an upstream cluster (metadata, then every broker)."""

    interval_seconds: float = Field(
        5.0, gt=0, description="Time between checks while the cluster answers."
    )
    timeout_seconds: float = Field(
        5.0, gt=0, description="How long one check waits for a broker to connect and answer."
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


class ClustersConfig(_Model):
    primary: ClusterConfig = Field(description="The cluster served normally.")
    secondary: ClusterConfig | None = Field(None, description="The failover cluster.")


class UserConfig(_Model):
    """A client identity for SASL/PLAIN."""

    name: str = Field(min_length=1, description="SASL/PLAIN username.")
    password_hash: str = Field(
        description="pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>, from "
        "`python -m gateway hash-password`.",
        # At most 9 digits of iterations: a larger count would tie up a thread per login.
        pattern=r"^pbkdf2_sha256\$[1-9]\d{0,8}\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$",
    )


class AdminConfig(_Model):
    bind: HostPort = Field("127.0.0.1:8080", description="Admin HTTP address (/metrics etc).")

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
    users: list[UserConfig] = Field(default_factory=list, description="SASL/PLAIN users.")
    admin: AdminConfig = AdminConfig()
    limits: LimitsConfig = LimitsConfig()

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        for kind, names in (
            ("listener", [item.name for item in self.listeners]),
            ("user", [u.name for u in self.users]),
        ):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"duplicate {kind} names: {', '.join(duplicates)}")
        return self


_SECTIONS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("gateway", GatewayIdentity),
    ("listeners[]", ListenerConfig),
    ("clusters", ClustersConfig),
    ("clusters.primary / clusters.secondary", ClusterConfig),
    ("clusters.*.sasl", SaslConfig),
    ("clusters.*.tls", TlsConfig),
    ("clusters.*.health", HealthCheckConfig),
    ("secret reference (e.g. clusters.*.sasl.password)", SecretRef),
    ("users[]", UserConfig),
    ("admin", AdminConfig),
    ("limits", LimitsConfig),
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
