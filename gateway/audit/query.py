"""Reading the audit log back: events by time, principal, topic, connection and type;
client sessions; one session's events in order, and how to show them to a person.

Events come from the segment files in chain order (instance, then seq), each with the
``instance`` whose chain holds it. A time range is ``[since, until)`` in seconds since
the epoch; ``parse_time`` reads RFC 3339 or epoch seconds. This module reads segment
files only; ``verify`` is what checks them.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.audit import segments

CHECKPOINT = "checkpoint"


def parse_time(text: str) -> float:
    """Seconds since the epoch from RFC 3339 (``2026-11-28T18:00:00Z``, a date alone
    meaning its midnight UTC) or from a number of seconds. Raises ValueError."""
    try:
        return float(text)
    except ValueError:
        pass
    value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value.timestamp()


def format_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Filter:
    since: float | None = None
    until: float | None = None
    principal: str | None = None
    topic: str | None = None
    connection: str | None = None
    types: frozenset[str] = frozenset()
    checkpoints: bool = False  # checkpoints are left out unless asked for

    def matches(self, event: dict[str, Any]) -> bool:
        kind = event.get("type")
        if kind == CHECKPOINT and not self.checkpoints:
            return False
        if self.types and kind not in self.types:
            return False
        at = event.get("time")
        if self.since is not None and (not isinstance(at, int | float) or at < self.since):
            return False
        if self.until is not None and (not isinstance(at, int | float) or at >= self.until):
            return False
        if self.principal is not None and event.get("principal") != self.principal:
            return False
        if self.connection is not None and event.get("connection") != self.connection:
            return False
        return self.topic is None or self.topic in topics_of(event)


def topics_of(event: dict[str, Any]) -> set[str]:
    """The topics an event names: its resources of kind topic, and the partitions a
    Produce wrote or a Fetch delivered."""
    found = {
        str(r.get("name"))
        for r in event.get("resources") or ()
        if isinstance(r, dict) and r.get("kind") == "topic"
    }
    for key in ("produce", "fetch"):
        found |= {str(p.get("topic")) for p in event.get(key) or () if isinstance(p, dict)}
    return found


def events(paths: Sequence[Path], where: Filter = Filter()) -> Iterator[dict[str, Any]]:
    """Every whole line of the segments under ``paths`` that ``where`` keeps, in chain
    order, each with ``instance`` added (a torn last line is left out)."""
    for segment in segments.find(paths):
        for raw in segments.split(segment.path.read_bytes()).lines:
            try:
                line = json.loads(raw)
            except ValueError:
                continue  # verify names such a line; a query shows what it can read
            if isinstance(line, dict) and where.matches(line):
                yield {"instance": segment.instance, **line}


@dataclass
class Session:
    """One client connection as the log saw it."""

    connection: str
    instance: str
    listener: str | None = None
    peer: str | None = None
    principal: str | None = None
    mechanism: str | None = None
    opened: float | None = None
    closed: float | None = None
    reason: str | None = None
    requests: int = 0
    failed_logins: int = 0
    bytes_in: int | None = None
    bytes_out: int | None = None
    apis: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "connection": self.connection,
            "instance": self.instance,
            "listener": self.listener,
            "peer": self.peer,
            "principal": self.principal,
            "mechanism": self.mechanism,
            "opened": self.opened,
            "closed": self.closed,
            "open": self.closed is None,
            "reason": self.reason,
            "requests": self.requests,
            "failed_logins": self.failed_logins,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "apis": dict(self.apis),
        }


def sessions(paths: Sequence[Path], where: Filter = Filter()) -> list[Session]:
    """The connections with an event in ``where``'s range (and of its principal, when
    given: the principal a connection authenticated as), in order of opening."""
    found: dict[str, Session] = {}
    in_range: set[str] = set()
    ranged = Filter(since=where.since, until=where.until)
    for event in events(paths):
        connection = event.get("connection")
        if not isinstance(connection, str):
            continue
        session = found.get(connection)
        if session is None:
            session = found[connection] = Session(connection, str(event["instance"]))
        _fold(session, event)
        if ranged.matches(event):
            in_range.add(connection)
    chosen = [
        s
        for c, s in found.items()
        if c in in_range and (where.principal is None or s.principal == where.principal)
    ]
    return sorted(chosen, key=lambda s: (s.opened or 0.0, s.connection))


def _fold(session: Session, event: dict[str, Any]) -> None:
    kind = event.get("type")
    if kind == "connection_opened":
        session.listener = event.get("listener")
        session.peer = event.get("peer")
        session.opened = event.get("time")
    elif kind == "connection_closed":
        session.closed = event.get("time")
        session.reason = event.get("reason")
        session.bytes_in = event.get("bytes_in")
        session.bytes_out = event.get("bytes_out")
    elif kind == "authentication":
        if event.get("result") == "success":
            session.principal = event.get("principal")
            session.mechanism = event.get("mechanism")
        else:
            session.failed_logins += 1
    elif kind == "request":
        session.requests += 1
        api = str(event.get("api"))
        session.apis[api] = session.apis.get(api, 0) + 1


def replay(paths: Sequence[Path], connection: str) -> list[dict[str, Any]]:
    """Every event of one connection, in chain order."""
    return list(events(paths, Filter(connection=connection)))


# For a person: one line per event.


def describe(event: dict[str, Any]) -> str:
    at = format_time(event.get("time"))
    kind = event.get("type")
    if kind == "connection_opened":
        tls = event.get("tls")
        how = f" TLS {tls.get('version')}" if isinstance(tls, dict) else ""
        return f"{at}  opened   {event.get('listener')} from {event.get('peer')}{how}"
    if kind == "connection_closed":
        return (
            f"{at}  closed   {event.get('reason')} after {event.get('requests')} requests, "
            f"{event.get('bytes_in')} bytes in, {event.get('bytes_out')} out"
        )
    if kind == "authentication":
        reason = f" ({event.get('reason')})" if event.get("reason") else ""
        return (
            f"{at}  login    {event.get('mechanism')} {event.get('principal')}: "
            f"{event.get('result')}{reason}"
        )
    if kind == "request":
        return f"{at}  {_request_line(event)}"
    return f"{at}  {kind}"


def _request_line(event: dict[str, Any]) -> str:
    parts = [
        f"{event.get('api')} v{event.get('version')}",
        f"#{event.get('correlation_id')}",
        f"as {event.get('principal')}",
    ]
    resources = [f"{r.get('kind')}:{r.get('name')}" for r in event.get("resources") or ()]
    if resources:
        parts.append(" ".join(resources))
    decisions = [
        f"{'allow' if d.get('allowed') else 'DENY'}({d.get('rule') or 'no rule'})"
        for d in event.get("decisions") or ()
    ]
    if decisions:
        parts.append(" ".join(sorted(set(decisions))))
    errors = sorted({str(r.get("error")) for r in event.get("results") or ()} - {"none"})
    parts.append("errors " + ",".join(errors) if errors else "ok")
    for written in event.get("produce") or ():
        parts.append(
            f"wrote {written.get('topic')}/{written.get('partition')} "
            f"{written.get('records')} at {written.get('base_offset')}"
        )
    for read in event.get("fetch") or ():
        where = f"{read.get('topic')}/{read.get('partition')}"
        if read.get("first_offset") is None:
            parts.append(f"read {where} nothing")
        else:
            parts.append(f"read {where} {read.get('first_offset')}..{read.get('last_offset')}")
    latency = event.get("latency_ms")
    if isinstance(latency, int | float):
        parts.append(f"{latency:.1f} ms")
    return "  ".join(parts)


CSV_COLUMNS = (
    "time",
    "instance",
    "seq",
    "type",
    "connection",
    "principal",
    "api",
    "resources",
    "decisions",
    "errors",
    "latency_ms",
)


def csv_row(event: dict[str, Any]) -> list[str]:
    """The CSV_COLUMNS of ``event``, as text."""
    resources = ";".join(f"{r.get('kind')}:{r.get('name')}" for r in event.get("resources") or ())
    decisions = ";".join(
        f"{d.get('kind')}:{d.get('name')}={'allow' if d.get('allowed') else 'deny'}"
        f"({d.get('rule') or ''})"
        for d in event.get("decisions") or ()
    )
    errors = ";".join(
        f"{r.get('item')}={r.get('error')}"
        for r in event.get("results") or ()
        if r.get("error") != "none"
    )
    latency = event.get("latency_ms")
    return [
        format_time(event.get("time")),
        str(event.get("instance", "")),
        str(event.get("seq", "")),
        str(event.get("type", "")),
        str(event.get("connection") or ""),
        str(event.get("principal") or ""),
        str(event.get("api") or ""),
        resources,
        decisions,
        errors,
        f"{latency:.3f}" if isinstance(latency, int | float) else "",
    ]


def parse_cursor(text: str) -> tuple[str, int]:
    """``instance:seq`` as ``page`` returns it; raises ValueError."""
    instance, _, seq = text.rpartition(":")
    if not instance or not seq.isdigit():
        raise ValueError(f"cursor {text!r}: not instance:seq")
    return instance, int(seq)


def page(
    paths: Sequence[Path], where: Filter, after: tuple[str, int] | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """At most ``limit`` events after the cursor ``after`` (in chain order, which a
    growing log only extends), and the cursor of the next page (None at the end)."""
    found: list[dict[str, Any]] = []
    for event in events(paths, where):
        place = (str(event["instance"]), int(event.get("seq", -1)))
        if after is not None and place <= after:
            continue
        if len(found) == limit:
            last = found[-1]
            return found, f"{last['instance']}:{last['seq']}"
        found.append(event)
    return found, None
