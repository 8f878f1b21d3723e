"""Masking rules of the policy files, compiled: which rules apply to an identity's
records of a topic, on fetch or on produce.

A rule applies when its topics name the topic, it applies on that side, its
``subjects`` (absent: everyone) match the identity and its ``exempt`` subjects do not.
Several rules may apply to one topic; the masking stage applies all of them, in file
order. What a rule masks (value, key, headers) stays the validated model: the masking
package compiles it against each record's schema. Nothing here reads records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.identity import Identity
from gateway.policy.model import MaskingRule
from gateway.policy.safeguards import _Topics, topic_set
from gateway.policy.subjects import EVERYONE, SubjectSet, compile_subjects

Side = Literal["fetch", "produce"]


@dataclass(frozen=True, slots=True)
class CompiledMasking:
    """A validated masking rule, ready to match; ``rule`` is what it masks."""

    id: str
    source: str  # "policies/masking.yaml:3"
    topics: _Topics
    subjects: SubjectSet
    exempt: SubjectSet | None
    sides: frozenset[str]
    rule: MaskingRule

    def applies(self, identity: Identity, topic: str, side: Side) -> bool:
        return (
            side in self.sides
            and self.topics.covers(topic)
            and self.subjects.matches(identity)
            and not (self.exempt is not None and self.exempt.matches(identity))
        )

    def guards(self, identity: Identity, topic: str) -> bool:
        """Whether the rule requires registered schemas of ``identity``'s writes to
        ``topic`` (on produce, whatever ``apply_on`` says)."""
        return (
            self.rule.require_schema
            and self.topics.covers(topic)
            and self.subjects.matches(identity)
            and not (self.exempt is not None and self.exempt.matches(identity))
        )

    def names(self, topic: str) -> bool:
        """Whether the rule is about ``topic`` at all (for anyone, on any side)."""
        return self.topics.covers(topic)


def compile_masking(rule: MaskingRule, source: str) -> CompiledMasking:
    return CompiledMasking(
        id=rule.id,
        source=source,
        topics=topic_set(rule.topics),
        subjects=EVERYONE if rule.subjects is None else compile_subjects(rule.subjects),
        exempt=None if rule.exempt is None else compile_subjects(rule.exempt),
        sides=frozenset(rule.apply_on),
        rule=rule,
    )


def masking_for(
    rules: tuple[CompiledMasking, ...], identity: Identity, topic: str, side: Side
) -> tuple[CompiledMasking, ...]:
    """The rules that mask ``identity``'s records of ``topic`` on ``side``."""
    return tuple(r for r in rules if r.applies(identity, topic, side))
