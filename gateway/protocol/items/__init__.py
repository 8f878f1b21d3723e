"""Every served API's items, described once, and the answer a broker gives when they fail.

A request names items: the topics and partitions of a Produce, the groups of a
DescribeGroups, the config resources of a DescribeConfigs, the one group of a
Heartbeat. :data:`~gateway.protocol.items.table.APIS` says, per API and version range,
where those items sit in the request and which entity of the response answers each,
field by field, as Kafka's message definitions and each request's ``getErrorResponse``
do. From that one description:

- :func:`error_response` builds the answer a broker sends when every item of a request
  fails with one error (the upstream cluster cannot serve it, a policy denies it);
- :func:`names` lists the resources (topics, groups, transactional ids, config
  resources) a request names;
- :func:`unavailable_error` is the retriable code to answer when the upstream cluster
  cannot be reached for an API;
- :func:`without_items` removes items from a request (a policy refused them) and
  :func:`merge_items` joins their answers, built by :func:`error_response` from the
  request of those items alone, into the answer to the rest.

Fields an answer does not echo take the values Kafka's generated Java classes start
with (the field's declared default, else 0, "", false, empty, or null where nullable),
overridden where ``getErrorResponse`` sets them (-1 offsets, epochs and node ids).
Sans-IO: kio entities in, kio entities out.
"""

from __future__ import annotations

import dataclasses
import datetime
import types
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Union, get_args, get_origin

from kio.schema.errors import ErrorCode

from gateway.errors import UnsupportedApi
from gateway.protocol import codec
from gateway.protocol.items.model import Api, Items, Resource
from gateway.protocol.items.table import APIS
from gateway.protocol.items.unavailable import unavailable_error
from gateway.protocol.versions import PRODUCE

__all__ = [
    "APIS",
    "Resource",
    "describe",
    "error_response",
    "has_items",
    "merge_items",
    "names",
    "unavailable_error",
    "without_items",
]


def describe(api_key: int, api_version: int) -> Api:
    """The item description of one API version, or :class:`UnsupportedApi`."""
    chosen = None
    for first, description in APIS.get(api_key, {}).items():
        if first <= api_version:
            chosen = description
    if chosen is None:
        raise UnsupportedApi(f"api_key={api_key} version={api_version} has no item description")
    return chosen


def error_response(request_body: Any, error: ErrorCode, message: str | None = None) -> Any:
    """The response a broker sends when every item of ``request_body`` fails with
    ``error``: each item the request names answered with it (and with ``message``
    where the version has an error message), throttle 0, the other fields as Kafka
    sets them on errors.

    None for a Produce with acks=0, which gets no answer (a handler returns None too).
    A Metadata answer lists no broker: the caller adds the gateway's own, since
    librdkafka drops every known broker an answer with topics leaves out (an answer
    with neither brokers nor topics makes both librdkafka and Java simply ask again).
    """
    cls = type(request_body)
    api_key, version = int(cls.__api_key__), int(cls.__version__)
    description = describe(api_key, version)
    if api_key == PRODUCE and request_body.acks == 0:
        return None
    response_cls = codec.response_schema(api_key, version)
    module = codec.entity_module(response_cls)
    values = dict(description.fill)
    if description.error:
        values.update(error_code=error, error_message=message)
    for items in description.items:
        if items.response is not None:
            values[items.response] = _answers(module, items, request_body, error, message)
    return _entity(response_cls, values)


def _answers(
    module: types.ModuleType, items: Items, parent: Any, error: ErrorCode, message: str | None
) -> tuple[Any, ...]:
    cls = getattr(module, items.entity)
    answers = []
    for item in getattr(parent, items.request, None) or ():
        values = dict(items.fill)
        for answer_field, request_field in items.echo.items():
            values[answer_field] = getattr(item, request_field, None) if request_field else item
        if items.error:
            values.update({items.error: error, "error_message": message})
        for child in items.children:
            if child.response is not None:
                values[child.response] = _answers(module, child, item, error, message)
        answers.append(_entity(cls, values))
    return tuple(answers)


def names(request_body: Any) -> tuple[Resource, ...]:
    """The resources a request names, in request order (repeats included)."""
    cls = type(request_body)
    description = describe(int(cls.__api_key__), int(cls.__version__))
    found: list[Resource | None] = []
    for name, namer in description.names.items():
        value = getattr(request_body, name, None)
        if value is not None:
            found.append(namer(request_body, value))
    for items in description.items:
        found += _named_in(request_body, items, request_body)
    return tuple(r for r in found if r is not None)


def _named_in(request_body: Any, items: Items, parent: Any) -> list[Resource | None]:
    found: list[Resource | None] = []
    for item in getattr(parent, items.request, None) or ():
        if items.names is not None:
            found.append(items.names(request_body, item))
        for child in items.children:
            found += _named_in(request_body, child, item)
    return found


def without_items(request_body: Any, drop: Callable[[Resource], bool]) -> Any:
    """``request_body`` without the top-level items whose resource ``drop`` picks (the
    same entity when none is picked). Items nested deeper, and lists Kafka answers at
    the level above, are kept: their answers cannot be given one by one."""
    description = _description_of(request_body)
    changes: dict[str, tuple[Any, ...]] = {}
    for items in description.items:
        if items.names is None or items.response is None:
            continue
        present = getattr(request_body, items.request, None)
        if not present:
            continue
        kept = tuple(
            item
            for item in present
            if (resource := items.names(request_body, item)) is None or not drop(resource)
        )
        if len(kept) != len(present):
            changes[items.request] = kept
    return codec.replace(request_body, **changes) if changes else request_body


def has_items(request_body: Any) -> bool:
    """True when the request still names an item its answer answers one by one."""
    description = _description_of(request_body)
    return any(
        getattr(request_body, items.request, None)
        for items in description.items
        if items.response is not None
    )


def merge_items(response: Any, extra: Any) -> Any:
    """``response`` with the top-level item answers of ``extra`` (a response of the same
    API and version) after its own."""
    cls = type(response)
    description = describe(int(cls.__api_key__), int(cls.__version__))
    changes = {
        items.response: getattr(response, items.response) + getattr(extra, items.response)
        for items in description.items
        if items.response is not None and getattr(extra, items.response)
    }
    return codec.replace(response, **changes) if changes else response


def _description_of(request_body: Any) -> Api:
    cls = type(request_body)
    return describe(int(cls.__api_key__), int(cls.__version__))


# Entities as Java's generated classes start them.

_MISSING = object()
_ZEROS: tuple[tuple[type, Any], ...] = (
    (ErrorCode, ErrorCode.none),
    (bool, False),
    (int, 0),
    (float, 0.0),
    (str, ""),
    (bytes, b""),
    (datetime.timedelta, datetime.timedelta(0)),
    (datetime.datetime, datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)),
    (uuid.UUID, uuid.UUID(int=0)),
)
_Defaults = tuple[tuple[str, bool, Callable[[], Any]], ...]
_DEFAULTS: dict[type[Any], _Defaults] = {}


def _entity(cls: type[Any], values: Mapping[str, Any]) -> Any:
    """``cls`` with ``values`` for the fields its version has, the others defaulted.

    A null for a field that is not nullable in this version becomes its type's zero
    (a Metadata v10 topic asked for by id only is named "", as Kafka answers).
    """
    kwargs = {}
    for name, nullable, default in _defaults(cls):
        value = values.get(name, _MISSING)
        if value is _MISSING or (value is None and not nullable):
            value = default()
        kwargs[name] = value
    return cls(**kwargs)


def _defaults(cls: type[Any]) -> _Defaults:
    """Per field of ``cls``: its name, whether it is nullable, and its default."""
    found = _DEFAULTS.get(cls)
    if found is None:
        found = _DEFAULTS[cls] = tuple(
            (f.name, _nullable(f.type), _default_of(f)) for f in dataclasses.fields(cls)
        )
    return found


def _nullable(annotation: Any) -> bool:
    origin = get_origin(annotation)
    return origin in (Union, types.UnionType) and type(None) in get_args(annotation)


def _default_of(f: dataclasses.Field[Any]) -> Callable[[], Any]:
    if f.default is not dataclasses.MISSING:
        value = f.default
        return lambda: value
    annotation = f.type
    if _nullable(annotation):
        return lambda: None
    if get_origin(annotation) is tuple:
        return tuple
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return lambda: _entity(annotation, {})
    zero = _zero(annotation)
    return lambda: zero


def _zero(annotation: Any) -> Any:
    for base, zero in _ZEROS:
        if isinstance(annotation, type) and issubclass(annotation, base):
            return zero
    raise TypeError(f"no zero value for {annotation!r}")
