"""What every client driver shares: endpoints, records, errors and small helpers.

Nothing here imports a client library; the driver modules (``java``, ``kcat``,
``confluent``, ``kafka_python``, ``aiokafka``) build on it, and ``dispatch`` picks a
driver by client name.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

CLIENTS = ("java", "confluent", "kafka-python", "aiokafka", "kcat")

COMPRESSION_CODECS = ("gzip", "snappy", "lz4", "zstd")

# Consumer group protocols each client can speak: "classic" (JoinGroup/SyncGroup) and,
# for the clients that have it, "consumer" (KIP-848, ConsumerGroupHeartbeat).
GROUP_PROTOCOLS: dict[str, tuple[str, ...]] = {
    "java": ("classic", "consumer"),
    "confluent": ("classic", "consumer"),
    "kafka-python": ("classic",),
    "aiokafka": ("classic",),
    "kcat": ("classic",),
}

# Members of a classic group heartbeat this often (ms), so that a rebalance started by
# another member joining or leaving reaches them quickly (the default is 3 s).
CLASSIC_HEARTBEAT_MS = 500


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"  # or "SASL_PLAINTEXT", "SSL", "SASL_SSL"
    sasl_mechanism: str | None = None  # "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    # OAUTHBEARER: the identity provider's token endpoint; username and password are
    # then the OAuth client id and secret. Without it, Java clients use Kafka's
    # unsecured login module (unsigned tokens).
    oauth_token_url: str | None = None
    # TLS (SSL, SASL_SSL): the CA that signed the server's certificate, and the
    # client's own certificate and key (PEM) for mutual TLS.
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.upper().startswith("SASL")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol.upper() in ("SSL", "SASL_SSL")

    def redact(self, text: str) -> str:
        """``text`` with the password replaced by ``***``."""
        if self.password:
            return text.replace(self.password, "***")
        return text


@dataclass(frozen=True, order=True)
class Record:
    """One Kafka record. ``offset`` is -1 for records about to be produced."""

    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


class ClientError(RuntimeError):
    """A driver failed: a delivery error, a client error or a failed subprocess."""


def unique_topic(prefix: str = "it") -> str:
    """A fresh topic name."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``factory()`` on a fresh event loop; refuse to block a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False
    else:
        running = True
    if running:
        raise ClientError(
            "called from a running event loop: use `await asyncio.to_thread(...)` "
            "(or the aproduce/aconsume/acreate_topic wrappers)"
        )
    return asyncio.run(factory())


@contextlib.contextmanager
def client_errors(client: str, ep: Endpoint) -> Iterator[None]:
    """Turn a client library's exception into a ``ClientError`` without the password."""
    try:
        yield
    except (ClientError, ValueError):
        raise
    except Exception as exc:
        # `from None`: the chained original would bypass the redaction.
        raise fail(ep, f"{client}: {type(exc).__name__}: {exc}") from None


def fail(ep: Endpoint, message: str) -> ClientError:
    return ClientError(ep.redact(message))


def check_text(client: str, records: Sequence[Record], header_name_forbidden: str) -> None:
    """Reject what a line-oriented tool cannot carry faithfully."""

    def printable(data: bytes) -> bool:
        return all(0x20 <= b <= 0x7E for b in data)

    for rec in records:
        fields = [rec.key, rec.value, *(v for _, v in rec.headers)]
        names = [n.encode("utf-8", "replace") for n, _ in rec.headers]
        if not all(printable(f) for f in fields + names):
            raise ValueError(f"{client}: keys, values and headers must be printable ASCII: {rec}")
        if any(header_name_forbidden in n for n, _ in rec.headers):
            raise ValueError(f"{client}: header names must not contain {header_name_forbidden!r}")


def python_client_config(ep: Endpoint) -> dict[str, Any]:
    """Connection settings shared by kafka-python and aiokafka."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": ep.bootstrap,
        "security_protocol": ep.security_protocol,
    }
    if ep.uses_sasl:
        kwargs |= {
            "sasl_mechanism": ep.sasl_mechanism or "PLAIN",
            "sasl_plain_username": ep.username,
            "sasl_plain_password": ep.password,
        }
    return kwargs


def headers_of(raw: Any) -> tuple[tuple[str, bytes], ...]:
    return tuple((str(k), bytes(v) if v is not None else b"") for k, v in raw or ())


def python_record(msg: Any) -> Record:
    """A kafka-python or aiokafka ``ConsumerRecord`` as a ``Record``."""
    return Record(
        partition=msg.partition,
        offset=msg.offset,
        key=msg.key or b"",
        value=msg.value or b"",
        headers=headers_of(msg.headers),
    )


def deadline_left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def last_offsets(records: list[Record]) -> dict[int, int]:
    last: dict[int, int] = {}
    for rec in records:
        last[rec.partition] = max(rec.offset, last.get(rec.partition, -1))
    return last
