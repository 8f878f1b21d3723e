"""Kafka's ``ssl.principal.mapping.rules``: how a certificate's name becomes a principal.

The syntax and behaviour follow Kafka's ``SslPrincipalMapper``, so a rule set copied
from a broker's config means the same here:

* ``DEFAULT`` maps a name to itself;
* ``RULE:pattern/replacement/`` applies when ``pattern`` (a regular expression) matches
  the whole name, and gives the name with every match replaced by ``replacement``
  (``$1``, ``$2`` ... name groups; a group that does not exist is literal text);
  ``/L`` or ``/U`` after the replacement lowers or uppers the result;
* rules are tried in order and the first that applies wins; when none applies the
  name has no principal and the client is refused.

An entry may hold several comma-separated rules, as Kafka's single config value does.
Pure: no I/O, no config models; ``config.py`` parses the rules when the file loads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# Kafka's own grammar (SslPrincipalMapper.RULE_PATTERN): a `/` inside pattern or
# replacement is written `\/`.
_RULE = r"(DEFAULT)|RULE:((\\.|[^\\/])*)/((\\.|[^\\/])*)/([LU]?).*?|(.*?)"
_SPLITTER = re.compile(r"\s*(" + _RULE + r")\s*(,\s*|$)")
_PARSER = re.compile(_RULE)


class InvalidRule(ValueError):
    """A mapping rule that does not parse; the message names the rule."""


@dataclass(frozen=True, slots=True)
class MappingRule:
    """One parsed rule; ``pattern`` is None for DEFAULT."""

    text: str
    pattern: re.Pattern[str] | None = None
    replace: Callable[[re.Match[str]], str] | None = None
    case: str = ""  # "L", "U" or ""

    def apply(self, name: str) -> str | None:
        """The principal this rule gives ``name``, or None when it does not apply."""
        if self.pattern is None:
            return name
        if self.pattern.fullmatch(name) is None:
            return None
        assert self.replace is not None
        # As Java's String.replaceAll: every match is replaced (a pattern that can
        # match the empty string also matches at the end).
        result = self.pattern.sub(self.replace, name)
        if self.case == "L":
            return result.lower()
        if self.case == "U":
            return result.upper()
        return result


def _replacement(text: str, groups: int) -> Callable[[re.Match[str]], str]:
    """Java's replacement syntax (``$n``, ``\\x``) as a function of the match.

    ``$n`` takes as many digits as still name an existing group (Java's rule); a
    reference beyond the last group is literal text, as Kafka makes it.
    """
    parts: list[str | int] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            if i + 1 >= len(text):
                raise InvalidRule("the replacement ends with a lone backslash")
            parts.append(text[i + 1])
            i += 2
        elif char == "$" and i + 1 < len(text) and text[i + 1].isdigit():
            j = i + 1
            number = int(text[j])
            j += 1
            while j < len(text) and text[j].isdigit() and int(text[i + 1 : j + 1]) <= groups:
                number = int(text[i + 1 : j + 1])
                j += 1
            if text[i + 1] != "0" and number > groups:
                parts.append(text[i:j])  # not a group: literal, as Kafka escapes it
            else:
                parts.append(number)
            i = j
        elif char == "$":
            raise InvalidRule("'$' in the replacement must be followed by a group number")
        else:
            parts.append(char)
            i += 1

    def replace(match: re.Match[str]) -> str:
        return "".join(p if isinstance(p, str) else (match.group(p) or "") for p in parts)

    return replace


def _parse_one(rule: str) -> MappingRule | None:
    found = _PARSER.match(rule)
    if found is None or found.end() != len(rule):
        raise InvalidRule(f"invalid principal mapping rule {rule!r}")
    if found.group(1) is not None:
        return MappingRule("DEFAULT")
    if found.group(2) is None:
        return None  # an empty rule, ignored as Kafka ignores it
    try:
        pattern = re.compile(found.group(2))
    except re.error as exc:
        raise InvalidRule(f"principal mapping rule {rule!r}: bad pattern: {exc}") from None
    try:
        replace = _replacement(found.group(4), pattern.groups)
    except InvalidRule as exc:
        raise InvalidRule(f"principal mapping rule {rule!r}: {exc}") from None
    return MappingRule(rule, pattern, replace, found.group(6) or "")


def split_rules(text: str) -> list[str]:
    """The rules of one comma-separated value, as Kafka splits it."""
    return [m.group(1) for m in _SPLITTER.finditer(text.strip()) if m.group(1)]


def parse_rules(entries: Iterable[str]) -> tuple[MappingRule, ...]:
    """Every rule of ``entries`` in order; InvalidRule names the first bad one."""
    rules: list[MappingRule] = []
    for entry in entries:
        for text in split_rules(entry):
            rule = _parse_one(text)
            if rule is not None:
                rules.append(rule)
    return tuple(rules)


def map_principal(rules: Iterable[MappingRule], name: str) -> str | None:
    """The principal of ``name`` by the first rule that applies; None if none does."""
    for rule in rules:
        mapped = rule.apply(name)
        if mapped is not None:
            return mapped
    return None
