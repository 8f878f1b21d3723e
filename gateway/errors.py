"""The gateway's exception hierarchy.

Every error raised inside the gateway is one of these; third-party exceptions are
translated at the boundary that calls the third party (``protocol/`` for kio,
``upstream/`` for aiokafka).

    GatewayError
    ├── ConfigError              a config or policy file is invalid (names the field)
    │   └── PolicyError          a policy set is invalid: every problem names file, line, field
    ├── ProtocolError            the client broke the Kafka protocol: close its connection
    │   ├── FrameTooLarge        a size prefix over the limit (or negative)
    │   ├── MalformedRequest     a frame that does not decode as the request it claims to be
    │   ├── UnsupportedApi       an API key or version the gateway does not serve
    │   └── NotAuthenticated     a request other than ApiVersions/SASL before authentication
    ├── AuthenticationFailed     bad credentials: answered with SASL_AUTHENTICATION_FAILED
    ├── JwksUnavailable          the identity provider's keys could not be read (last good kept)
    ├── UpstreamError            the active Kafka cluster could not serve the request
    │   ├── UpstreamUnavailable  no connection could be made (or it broke)
    │   ├── UpstreamTimeout      no answer within the request's time budget
    │   ├── MalformedResponse    an upstream answer that does not decode
    │   └── UpstreamRefused      the cluster answered with an error the client must see
    ├── DevClusterError          the local development clusters could not be managed
    └── AuditUnavailable         the audit log cannot make an event durable (fail closed)
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """A configuration or policy file is invalid."""


class PolicyError(ConfigError):
    """A set of policy files is invalid. ``problems`` holds one line per problem, each
    naming the file, the line and the field (``policies/apps.yaml:7: rules[0].effect:
    ...``), so that a checker can print them all at once."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid policy:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = tuple(problems)


class ProtocolError(GatewayError):
    """The peer violated the Kafka protocol; the connection must be closed."""


class FrameTooLarge(ProtocolError):
    """A frame's size prefix is negative or larger than the limit in force."""


class MalformedRequest(ProtocolError):
    """A frame does not decode as the request its header names."""


class UnsupportedApi(ProtocolError):
    """An API key or version that the gateway does not serve."""


class NotAuthenticated(ProtocolError):
    """A request that needs an authenticated session arrived before authentication."""


class AuthenticationFailed(GatewayError):
    """Credentials were presented and rejected. ``reason`` is a fixed word for metric
    labels and logs (``bad_password``, ``unknown_user``, ``expired``, ...); the message
    is for the log, never for the client, and never holds a secret."""

    def __init__(
        self, message: str, reason: str = "invalid_credentials", attempted: str | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        # The name the client tried to log in as, once the exchange got that far (for
        # the audit log: who tried); never a password, token or proof.
        self.attempted = attempted


class JwksUnavailable(GatewayError):
    """The identity provider's key set (JWKS) could not be fetched or is not a valid key
    set; the last good keys stay in force."""


class UpstreamError(GatewayError):
    """The upstream cluster could not serve a request."""


class UpstreamUnavailable(UpstreamError):
    """No usable connection to the upstream broker."""


class UpstreamTimeout(UpstreamError):
    """The upstream broker did not answer in time."""


class MalformedResponse(UpstreamError):
    """An upstream response does not decode as the response to the request sent."""


class UpstreamRefused(UpstreamError):
    """The upstream answered a request the gateway made on the client's behalf with an
    error the client must see as it is (e.g. GROUP_AUTHORIZATION_FAILED from
    FindCoordinator): ``error_code`` is Kafka's code."""

    def __init__(self, message: str, error_code: int) -> None:
        super().__init__(message)
        self.error_code = error_code


class DevClusterError(GatewayError):
    """The local development clusters could not be started, stopped or inspected."""


class AuditUnavailable(GatewayError):
    """The audit log cannot make an event durable now (disk full, permission, I/O
    error). Requests are refused with a retriable error until it can (fail closed)."""
