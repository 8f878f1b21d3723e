"""From ``policies/*.yaml`` to one immutable, indexed :class:`Policy`.

The whole set is validated before anything is returned: a problem in any file (bad
YAML, an unknown key, a rule or safeguard id used twice, in one file or across two) raises
:class:`~gateway.errors.PolicyError` listing every problem with its file, line and field,
so that a reload can keep the old policy. The version is a content hash: the same
files give the same version wherever they are read.

:func:`build_policy` is pure (names and bytes in, policy out); :func:`load_policy_dir`
only reads the files for it. Nothing here knows sockets, Kafka or the server.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from gateway.errors import PolicyError
from gateway.identity import Identity
from gateway.policy import Operation, ResourceType
from gateway.policy.masking import CompiledMasking, compile_masking
from gateway.policy.model import WILDCARD, MaskingRule, PolicyFile, Rule, Safeguard
from gateway.policy.safeguards import CompiledSafeguard, compile_safeguard
from gateway.policy.subjects import SubjectSet, compile_subjects

VERSION_HEX_CHARS = 12
_WithId = TypeVar("_WithId", Rule, Safeguard, MaskingRule)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A validated rule, ready to match: subjects, operations, where it came from."""

    id: str
    allow: bool
    operations: frozenset[Operation]
    subjects: SubjectSet
    order: int  # position in the whole set (files sorted by name): earlier wins a tie
    source: str  # "policies/apps.yaml:12"
    description: str | None = None

    def matches(self, identity: Identity) -> bool:
        """Does any listed subject match ``identity``?"""
        return self.subjects.matches(identity)


def compile_rule(rule: Rule, order: int, source: str) -> CompiledRule:
    return CompiledRule(
        id=rule.id,
        allow=rule.effect == "allow",
        operations=frozenset(rule.operations),
        subjects=compile_subjects(rule.subjects),
        order=order,
        source=source,
        description=rule.description,
    )


@dataclass(frozen=True, slots=True)
class _TypeIndex:
    """The rules about one resource type, grouped so a name finds its rules quickly:
    a dict for literal names, a dict per prefix length for prefixes, a list of globs."""

    literal: Mapping[str, tuple[CompiledRule, ...]]
    prefix: Mapping[str, tuple[CompiledRule, ...]]
    prefix_lengths: tuple[int, ...]
    globs: tuple[tuple[re.Pattern[str], CompiledRule], ...]

    def candidates(self, name: str) -> Iterator[CompiledRule]:
        yield from self.literal.get(name, ())
        if name != WILDCARD:
            yield from self.literal.get(WILDCARD, ())
        for length in self.prefix_lengths:
            if length > len(name):
                break
            yield from self.prefix.get(name[:length], ())
        for pattern, rule in self.globs:
            if pattern.match(name):
                yield rule


_EMPTY_INDEX = _TypeIndex(MappingProxyType({}), MappingProxyType({}), (), ())


@dataclass(frozen=True, slots=True)
class Policy:
    """An immutable, validated set of rules and safeguards with its version (a content
    hash). Rules decide who may do what (:func:`~gateway.policy.decide.decide`);
    safeguards bound what an allowed request may ask for
    (:func:`~gateway.policy.safeguards.check`)."""

    version: str
    files: tuple[str, ...]
    rules: tuple[CompiledRule, ...]
    index: Mapping[ResourceType, _TypeIndex]
    safeguards: tuple[CompiledSafeguard, ...] = ()
    masking: tuple[CompiledMasking, ...] = ()

    def candidates(self, resource_type: ResourceType, name: str) -> Iterator[CompiledRule]:
        """Every rule whose resources match (type, name), for any subject or operation."""
        return self.index.get(resource_type, _EMPTY_INDEX).candidates(name)

    def rules_about(self, resource_type: ResourceType) -> Iterator[tuple[CompiledRule, bool]]:
        """Every rule about some resource of this type, each with whether it names every
        resource of the type (a literal ``*``)."""
        index = self.index.get(resource_type, _EMPTY_INDEX)
        for name, rules in index.literal.items():
            # There is one cluster: a rule naming it names every cluster resource.
            every = name == WILDCARD or resource_type is ResourceType.CLUSTER
            for rule in rules:
                yield rule, every
        for rules in index.prefix.values():
            for rule in rules:
                yield rule, False
        for _, rule in index.globs:
            yield rule, False

    @classmethod
    def from_rules(
        cls, rules: Sequence[Rule], version: str = "unversioned", source: str = "<rules>"
    ) -> Policy:
        """A policy straight from rule models (tests, tools): no files, no hash."""
        return _index([(rule, f"{source}:{n}") for n, rule in enumerate(rules)], version, ())


def _index(
    rules: Sequence[tuple[Rule, str]],
    version: str,
    files: tuple[str, ...],
    safeguards: Sequence[tuple[Safeguard, str]] = (),
    masking: Sequence[tuple[MaskingRule, str]] = (),
) -> Policy:
    literal: dict[ResourceType, dict[str, list[CompiledRule]]] = defaultdict(dict)
    prefix: dict[ResourceType, dict[str, list[CompiledRule]]] = defaultdict(dict)
    globs: dict[ResourceType, list[tuple[re.Pattern[str], CompiledRule]]] = defaultdict(list)
    compiled = tuple(compile_rule(rule, n, source) for n, (rule, source) in enumerate(rules))
    for (rule, _), done in zip(rules, compiled, strict=True):
        for resource in rule.resources:
            kind, pattern, kind_of = resource.kind, resource.pattern, resource.type
            if kind == "glob":
                globs[kind_of].append((re.compile(fnmatch.translate(pattern)), done))
            else:
                table = literal if kind == "literal" else prefix
                table[kind_of].setdefault(pattern, []).append(done)
    index = {
        kind: _TypeIndex(
            literal=MappingProxyType({k: tuple(v) for k, v in literal[kind].items()}),
            prefix=MappingProxyType({k: tuple(v) for k, v in prefix[kind].items()}),
            prefix_lengths=tuple(sorted({len(k) for k in prefix[kind]})),
            globs=tuple(globs[kind]),
        )
        for kind in ResourceType
    }
    guards = tuple(compile_safeguard(s, source) for s, source in safeguards)
    masks = tuple(compile_masking(m, source) for m, source in masking)
    return Policy(version, files, compiled, MappingProxyType(index), guards, masks)


def policy_version(sources: Mapping[str, bytes]) -> str:
    """sha256 over the sorted file names (without their directory) and contents."""
    digest = hashlib.sha256()
    for name, data in sorted((PurePath(n).name, d) for n, d in sources.items()):
        encoded = name.encode()
        digest.update(len(encoded).to_bytes(8, "big") + encoded)
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()[:VERSION_HEX_CHARS]


def _field(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _line_of(node: yaml.Node, loc: Sequence[int | str]) -> int:
    """The line of the YAML node at ``loc``, or of its deepest existing parent (a
    missing field is reported where its mapping starts)."""
    line: int = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    line, node = key.start_mark.line + 1, value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _duplicate_keys(
    node: yaml.Node, loc: tuple[int | str, ...] = ()
) -> Iterator[tuple[int, tuple[int | str, ...]]]:
    """(line, field) of every key repeated in one mapping: YAML loaders keep the last
    one silently, and a policy must not change meaning because of a pasted line."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                yield key.start_mark.line + 1, (*loc, name)
            seen.add(name)
            yield from _duplicate_keys(value, (*loc, name))
    elif isinstance(node, yaml.SequenceNode):
        for n, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*loc, n))


def _parse_file(name: str, data: bytes) -> tuple[PolicyFile, yaml.Node] | list[str]:
    """One file's model and YAML tree, or its problems."""
    try:
        text = data.decode("utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        value: Any = yaml.safe_load(text)
    except UnicodeDecodeError as exc:
        return [f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})"]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        return [f"{name}:{line}: not valid YAML: {exc.problem or exc.context}"]
    if node is None:
        return [f"{name}:1: the file is empty; it needs a rules: or safeguards: list"]
    repeated = [
        f"{name}:{line}: {_field(loc)}: this key is given twice"
        for line, loc in _duplicate_keys(node)
    ]
    if repeated:
        return repeated
    try:
        return PolicyFile.model_validate(value), node
    except ValidationError as exc:
        return [
            f"{name}:{_line_of(node, item['loc'])}: {_field(item['loc'])}: "
            + item["msg"].removeprefix("Value error, ")
            for item in exc.errors()
        ]


_SINGULAR = {"rules": "rule", "safeguards": "safeguard", "masking": "masking rule"}


def _placed(
    items: Sequence[_WithId], where: Callable[[int, str], str | None]
) -> list[tuple[_WithId, str]]:
    """Each item with its place, leaving out those ``where`` refuses (a repeated id)."""
    out = []
    for n, item in enumerate(items):
        if (place := where(n, item.id)) is not None:
            out.append((item, place))
    return out


def build_policy(sources: Mapping[str, bytes]) -> Policy:
    """Validate a whole set of policy files (name -> bytes) and index it.

    Raises :class:`PolicyError` with every problem found, in file order.
    """
    problems: list[str] = []
    rules: list[tuple[Rule, str]] = []
    safeguards: list[tuple[Safeguard, str]] = []
    masking: list[tuple[MaskingRule, str]] = []
    # One namespace for rule, safeguard and masking ids: a decision or a POLICY_VIOLATION names
    # its id alone, which must lead to exactly one place.
    first_seen: dict[str, str] = {}

    def unique(name: str, node: yaml.Node, kind: str, n: int, id_: str) -> str | None:
        where = f"{name}:{_line_of(node, (kind, n, 'id'))}"
        if id_ in first_seen:
            problems.append(
                f"{where}: {kind}[{n}].id: {_SINGULAR[kind]} id {id_!r} is already used "
                f"at {first_seen[id_]}"
            )
            return None
        first_seen[id_] = where
        return where

    for name in sorted(sources):
        parsed = _parse_file(name, sources[name])
        if isinstance(parsed, list):
            problems += parsed
            continue
        model, node = parsed
        rules += _placed(model.rules, functools.partial(unique, name, node, "rules"))
        safeguards += _placed(model.safeguards, functools.partial(unique, name, node, "safeguards"))
        masking += _placed(model.masking, functools.partial(unique, name, node, "masking"))
    if problems:
        raise PolicyError(problems)
    return _index(rules, policy_version(sources), tuple(sorted(sources)), safeguards, masking)


def load_policy_dir(directory: Path) -> Policy:
    """Read ``directory/*.yaml`` (sorted) and build the policy; no files is an error,
    since an empty policy would deny everything by accident."""
    if not directory.is_dir():
        raise PolicyError([f"{directory}: not a directory"])
    try:
        paths = sorted(p for p in directory.glob("*.yaml") if p.is_file())
        sources = {str(p): p.read_bytes() for p in paths}
    except OSError as exc:
        raise PolicyError([f"{directory}: cannot read: {exc.strerror}"]) from exc
    if not sources:
        raise PolicyError([f"{directory}: no *.yaml policy files"])
    return build_policy(sources)
