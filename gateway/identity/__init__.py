"""Who a client is: SASL mechanisms and the identities they establish."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated (or deliberately anonymous) principal."""

    principal: str
    mechanism: str
    groups: tuple[str, ...] = field(default=())


ANONYMOUS = Identity(principal="anonymous", mechanism="none")
