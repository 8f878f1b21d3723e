"""Field rules and their path syntax, shared by the Avro and JSON maskers.

A path names where a value sits inside a record or a JSON document:

- ``address.city``: field ``city`` of the record (object) in field ``address``;
- ``phones[]``: every item of the array in ``phones``; ``phones[].number``: field
  ``number`` of each item;
- ``attrs{}``: every value of the map (JSON object) in ``attrs``;
- a path may start with ``[]`` or ``{}`` when the whole value is an array or a map;
- the empty path names the whole value (an Avro key that is a plain ``string``).

Field names may hold any character but ``.``, ``[``, ``]``, ``{`` and ``}``. Unions
(nullable fields) are not written in paths: the maskers look through them.

This module only parses; it touches no schema and no value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from gateway.masking import MaskingError
from gateway.masking.methods import Method

ITEMS: Final = "[]"
VALUES: Final = "{}"
_SPECIAL = frozenset(".[]{}")


@dataclass(frozen=True, slots=True)
class FieldRule:
    """Mask the value(s) at ``path`` with ``method``; ``rule_id`` names it in the audit log."""

    path: str
    method: Method
    rule_id: str

    def __post_init__(self) -> None:
        if not self.rule_id:
            raise MaskingError(f"a masking rule for path {self.path!r} has no rule id")
        parse_path(self.path)


def _suffixes(segment: str, path: str) -> tuple[str, list[str]]:
    """Split ``name[]{}`` into the name and its ``[]`` / ``{}`` steps."""
    cut = len(segment)
    while cut >= 2 and segment[cut - 2 : cut] in (ITEMS, VALUES):
        cut -= 2
    name, rest = segment[:cut], segment[cut:]
    if any(ch in _SPECIAL for ch in name):
        raise MaskingError(
            f"path {path!r}: bad segment {segment!r} (expected name, name[] or name{{}})"
        )
    return name, [rest[i : i + 2] for i in range(0, len(rest), 2)]


def parse_path(path: str) -> tuple[str, ...]:
    """Turn a path into steps: field names, ``ITEMS`` and ``VALUES``."""
    if not isinstance(path, str):
        raise MaskingError("a masking path must be a string")
    if path == "":
        return ()
    steps: list[str] = []
    for position, segment in enumerate(path.split(".")):
        name, containers = _suffixes(segment, path)
        if name:
            steps.append(name)
        elif position > 0 or not containers:
            raise MaskingError(f"path {path!r}: empty field name")
        steps.extend(containers)
    return tuple(steps)


@dataclass
class RuleNode:
    """Rules sharing a path prefix: one may end here, others continue below."""

    rule: FieldRule | None = None
    children: dict[str, RuleNode] = field(default_factory=dict)


def rule_tree(rules: Sequence[FieldRule]) -> RuleNode:
    """Merge rules into one tree of path steps; two rules may not share a path."""
    root = RuleNode()
    for rule in rules:
        node = root
        for step in parse_path(rule.path):
            node = node.children.setdefault(step, RuleNode())
        if node.rule is not None:
            raise MaskingError(
                f"rules {node.rule.rule_id} and {rule.rule_id} both name path {rule.path!r}"
            )
        node.rule = rule
    return root
