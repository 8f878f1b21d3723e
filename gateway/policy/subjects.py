"""Who a rule or a safeguard is about, compiled once for matching on every request."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.identity import Identity
from gateway.policy.model import WILDCARD, Subjects


@dataclass(frozen=True, slots=True)
class SubjectSet:
    """Matches an identity when any listed subject does: its principal, a group, its
    listener, its mechanism (without case) or a claim of its token; ``everyone`` when a
    list holds ``"*"``."""

    principals: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    listeners: frozenset[str] = frozenset()
    mechanisms: frozenset[str] = frozenset()  # upper case
    # (name, value) pairs of token claims, and claim names for which any value matches.
    claims: frozenset[tuple[str, str]] = frozenset()
    any_claim: frozenset[str] = frozenset()
    everyone: bool = False

    def matches(self, identity: Identity) -> bool:
        return (
            self.everyone
            or identity.principal in self.principals
            or identity.listener in self.listeners
            or identity.mechanism.upper() in self.mechanisms
            or not self.groups.isdisjoint(identity.groups)
            or (bool(self.claims or self.any_claim) and self._claim_matches(identity))
        )

    def _claim_matches(self, identity: Identity) -> bool:
        return any(pair in self.claims or pair[0] in self.any_claim for pair in identity.claims)


EVERYONE = SubjectSet(everyone=True)


def compile_subjects(subjects: Subjects) -> SubjectSet:
    s = subjects
    every = (s.principals, s.groups, s.listeners, s.mechanisms)
    return SubjectSet(
        principals=frozenset(s.principals),
        groups=frozenset(s.groups),
        listeners=frozenset(s.listeners),
        mechanisms=frozenset(m.upper() for m in s.mechanisms),
        claims=frozenset(
            (name, value)
            for name, values in s.claims.items()
            for value in values
            if value != WILDCARD
        ),
        any_claim=frozenset(name for name, values in s.claims.items() if WILDCARD in values),
        everyone=any(WILDCARD in names for names in every),
    )
