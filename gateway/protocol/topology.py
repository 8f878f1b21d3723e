"""What the virtual broker says about itself in config and log-dir answers.

Clients know one broker, the gateway. Config answers (DescribeConfigs, the results of
AlterConfigs and IncrementalAlterConfigs) and DescribeLogDirs come from upstream
brokers and would otherwise tell a client where those brokers listen, which
listeners, controllers and SASL/TLS setup they use, and where their disks are. The
functions here turn such a decoded answer into what the gateway's own broker would say.
They take decoded kio entities and return new ones; they may not touch sockets, the
upstream pool, sessions or handlers (the ``protocol is sans-IO`` import contract).

The rule, for every entry of a broker resource (type BROKER):

* **Own values.** What describes the broker a client talks to is answered with the
  gateway's values: ``listeners`` and ``advertised.listeners`` are the client's
  listener (``PROTOCOL://host:port``, with its security protocol as listener name, as
  Kafka names a listener without a protocol map), ``listener.security.protocol.map``
  maps that one listener, ``node.id`` and ``broker.id`` are the gateway's node id.
* **Withheld.** Host paths, upstream addresses and the upstream security setup
  (``log.dir``, ``log.dirs``, ``metadata.log.dir``, ``controller.*``,
  ``inter.broker.listener.name``, ``security.inter.broker.protocol``,
  ``process.roles``, ``broker.rack``, ``sasl.*``, ``ssl.*``) keep their name but
  answer as Kafka answers a sensitive config: value null, ``is_sensitive`` true,
  synonyms' values null. Clients and tools already show such entries ("sensitive")
  without failing, and the set of config names stays the one Kafka documents.
* **Dropped.** ``listener.name.<listener>.*`` entries are left out: their very name
  is an upstream listener's.

For every config entry of every resource (topics included), whatever its name: a
value or synonym value that contains a ``host:port``, a URL or an absolute path is
withheld as above. An error message that contains one is replaced by null (the client
shows the error code's own message).

A broker resource named anything but the gateway's node id (or the empty name, which
Kafka reads as the cluster-wide default) is answered as a Kafka broker answers a
resource for another broker: INVALID_REQUEST, "Unexpected broker id, expected N or
empty string, but received M", without asking upstream.

DescribeLogDirs: each log directory is renamed ``log-dir-<i>`` in answer order; sizes,
topics and partitions pass unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kio.schema.errors import ErrorCode

from gateway.protocol import codec

BROKER = 4
"""DescribeConfigs' resource type for a broker."""
BROKER_LOGGER = 8
"""A broker's log levels: named by broker id, but its entries name no address."""

_WITHHELD_NAMES = frozenset(
    {
        "log.dir",
        "log.dirs",
        "metadata.log.dir",
        "inter.broker.listener.name",
        "security.inter.broker.protocol",
        "process.roles",
        "broker.rack",
    }
)
_WITHHELD_PREFIXES = ("controller.", "sasl.", "ssl.")
_DROPPED_PREFIXES = ("listener.name.",)

# A host:port (name, IPv4 or bracketed IPv6, then a port), a URL, or an absolute path
# (POSIX, home-relative or a Windows drive) anywhere in a value.
_REVEALING = re.compile(
    r"""
      (?:[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}\b
    | [A-Za-z][A-Za-z0-9+.\-]*://
    | (?:^|[\s,=:;"'(])(?:~?/|[A-Za-z]:\\)
    """,
    re.VERBOSE,
)


def reveals(value: str | None) -> bool:
    """True when ``value`` contains a host:port, a URL or an absolute path."""
    return value is not None and _REVEALING.search(value) is not None


@dataclass(frozen=True, slots=True)
class VirtualBroker:
    """The broker a client sees: the gateway's node id and the client's listener."""

    node_id: int
    security_protocol: str
    host: str
    port: int

    @property
    def listener(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.security_protocol}://{host}:{self.port}"

    def own_values(self) -> dict[str, str]:
        """Config values that describe this broker, by config name."""
        return {
            "listeners": self.listener,
            "advertised.listeners": self.listener,
            "listener.security.protocol.map": (
                f"{self.security_protocol}:{self.security_protocol}"
            ),
            "node.id": str(self.node_id),
            "broker.id": str(self.node_id),
        }


def _dropped(name: str) -> bool:
    return name.startswith(_DROPPED_PREFIXES)


def _withheld_by_name(name: str) -> bool:
    return name in _WITHHELD_NAMES or name.startswith(_WITHHELD_PREFIXES)


def _withhold(entry: Any) -> Any:
    synonyms = tuple(codec.replace(s, value=None) for s in entry.synonyms if not _dropped(s.name))
    return codec.replace(entry, value=None, is_sensitive=True, synonyms=synonyms)


def _own(entry: Any, value: str) -> Any:
    # Kafka lists synonyms by precedence, the first being where the value comes from;
    # the others describe the upstream's own settings and defaults.
    synonyms = tuple(codec.replace(s, value=value) for s in entry.synonyms[:1])
    return codec.replace(entry, value=value, is_sensitive=False, synonyms=synonyms)


def config_entry(entry: Any, broker: VirtualBroker | None) -> Any | None:
    """One DescribeConfigs entry as the client may see it, or None to leave it out;
    ``broker`` is the virtual broker when the entry belongs to a broker resource."""
    if broker is not None:
        if _dropped(entry.name):
            return None
        own = broker.own_values()
        if entry.name in own:
            return _own(entry, own[entry.name])
        if _withheld_by_name(entry.name):
            return _withhold(entry)
    if reveals(entry.value) or any(reveals(s.value) or _dropped(s.name) for s in entry.synonyms):
        return _withhold(entry)
    return entry


def message(text: str | None) -> str | None:
    """An error message as the client may see it: null when it reveals anything."""
    return None if reveals(text) else text


def describe_configs_result(result: Any, broker: VirtualBroker) -> Any:
    """A DescribeConfigsResult with every entry and its message made safe."""
    as_broker = broker if result.resource_type == BROKER else None
    entries = (config_entry(e, as_broker) for e in result.configs)
    return codec.replace(
        result,
        error_message=message(result.error_message),
        configs=tuple(e for e in entries if e is not None),
    )


def alter_configs_result(result: Any) -> Any:
    """An AlterConfigs / IncrementalAlterConfigs result with its message made safe."""
    return codec.replace(result, error_message=message(result.error_message))


def foreign_broker(resource: Any, node_id: int) -> str | None:
    """Kafka's error message when a config resource names a broker other than the
    gateway (the empty name is the cluster-wide default and passes), else None."""
    if resource.resource_type not in (BROKER, BROKER_LOGGER) or resource.resource_name in (
        "",
        str(node_id),
    ):
        return None
    return (
        f"Unexpected broker id, expected {node_id} or empty string, "
        f"but received {resource.resource_name}"
    )


def gateway_broker_alteration(resource: Any, node_id: int) -> str | None:
    """Why a config change of the gateway's own broker (or its loggers) is refused, else
    None. The gateway is no broker of the cluster: forwarding the change would alter one
    upstream broker and leave the others as they were. The cluster-wide default (the
    empty name) applies to every broker and passes."""
    if resource.resource_type not in (BROKER, BROKER_LOGGER):
        return None
    if resource.resource_name != str(node_id):
        return None
    return (
        f"broker {node_id} is the gateway, not a broker of the cluster: alter broker "
        "configs for the whole cluster (an empty resource name) instead"
    )


def foreign_broker_result(
    result_cls: type[Any],
    resource: Any,
    text: str,
    error: ErrorCode = ErrorCode.invalid_request,
) -> Any:
    """The answer for a resource :func:`foreign_broker` (or another check) refused, of
    ``result_cls`` (DescribeConfigsResult or an AlterConfigs result class)."""
    return codec.build(
        result_cls,
        error_code=error,
        error_message=text,
        resource_type=resource.resource_type,
        resource_name=resource.resource_name,
        configs=(),
    )


def log_dirs(results: Iterable[Any]) -> tuple[Any, ...]:
    """DescribeLogDirs results with neutral directory names, ``log-dir-<i>``."""
    return tuple(codec.replace(r, log_dir=f"log-dir-{i}") for i, r in enumerate(results))
