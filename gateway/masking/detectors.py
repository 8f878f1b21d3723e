"""Finding and masking sensitive pieces of free text: card numbers, e-mails, IBANs, ids.

A :class:`Detector` is a name, a compiled pattern and an optional check that a match
must pass (Luhn for cards, mod-97 for IBANs, each national id's own check), so a run
of digits that merely looks like a card is left alone. :class:`TextMasker` runs a set
of detectors over a text and replaces each match with a :class:`~gateway.masking
.methods.Method` applied to the matched text.

Decisions:

- Built-in patterns use bounded repetition only and no nested quantifiers, so their
  cost grows linearly with the text. Custom patterns are the operator's; Python's
  ``re`` cannot bound them, so :class:`TextMasker` refuses texts over ``max_chars``
  (1 MiB by default) before any pattern runs.
- Overlapping matches are masked as one span (their union), counted once under the
  detector whose match starts first; nothing of either is left in clear.
- :func:`TextMasker.mask_bytes_text` reads bytes as UTF-8 with invalid bytes carried
  through unchanged (``surrogateescape``): text around them is still searched, and the
  output differs from the input only where something was masked. Refusing would stall
  a topic on one binary value; guessing another encoding would miss matches silently.
- ``null`` cannot replace part of a text and is refused.

No I/O; patterns are compiled once, when a detector is made.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from gateway.masking import MaskingError
from gateway.masking.methods import MaskKey, Method, mask_string

__all__ = ["BUILTIN", "Detector", "TextMasker", "builtin"]

DEFAULT_MAX_CHARS = 1 << 20
Check = Callable[[str], bool]


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def luhn_ok(number: str) -> bool:
    """The Luhn check used by payment cards (and Canada's SIN)."""
    digits = [int(d) for d in _digits(number)]
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return bool(digits) and total % 10 == 0


# Lengths of IBANs for countries in the SWIFT registry's common part; others must only
# pass mod-97 within the general 15-34 limits.
_IBAN_LENGTHS = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22,
    "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21,
    "HU": 28, "IE": 22, "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24,
    "SI": 19, "SK": 24, "SM": 27, "TR": 26,
}  # fmt: skip


def iban_ok(candidate: str) -> bool:
    """ISO 13616: known length for the country, and mod-97 of the rearranged digits is 1."""
    iban = candidate.replace(" ", "").upper()
    expected = _IBAN_LENGTHS.get(iban[:2])
    if expected is not None and len(iban) != expected:
        return False
    if not 15 <= len(iban) <= 34:
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def ssn_us_ok(candidate: str) -> bool:
    """US SSN: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    digits = _digits(candidate)
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def bsn_nl_ok(candidate: str) -> bool:
    """Dutch BSN: the 11-check (weights 9..2 and -1, sum divisible by 11, not 0)."""
    digits = [int(d) for d in _digits(candidate)]
    weights = (9, 8, 7, 6, 5, 4, 3, 2, -1)
    total = sum(d * w for d, w in zip(digits, weights, strict=True))
    return total != 0 and total % 11 == 0


def pesel_pl_ok(candidate: str) -> bool:
    """Polish PESEL: weighted check digit."""
    digits = [int(d) for d in candidate]
    weights = (1, 3, 7, 9, 1, 3, 7, 9, 1, 3)
    total = sum(d * w for d, w in zip(digits[:10], weights, strict=True))
    return (10 - total % 10) % 10 == digits[10]


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def dni_es_ok(candidate: str) -> bool:
    """Spanish DNI / NIE: the control letter is the number mod 23."""
    body = candidate[:-1].upper()
    body = str("XYZ".index(body[0])) + body[1:] if body[0] in "XYZ" else body
    return _DNI_LETTERS[int(body) % 23] == candidate[-1].upper()


@dataclass(frozen=True, slots=True)
class Detector:
    """A named pattern; a match counts only if ``check`` (when given) accepts it."""

    name: str
    pattern: re.Pattern[str] = field(repr=False)
    check: Check | None = field(default=None, repr=False, compare=False)
    # Turns one pattern match into candidate spans; by default the match itself.
    candidates: Callable[[re.Match[str]], Iterable[tuple[int, int]]] | None = field(
        default=None, repr=False, compare=False
    )

    @classmethod
    def custom(cls, name: str, pattern: str) -> Detector:
        """An operator's regular expression, compiled once."""
        if not name:
            raise MaskingError("a custom detector needs a name")
        if not pattern:
            raise MaskingError(f"custom detector {name!r}: the pattern is empty")
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            where = f" at position {exc.pos}" if exc.pos is not None else ""
            raise MaskingError(
                f"custom detector {name!r}: pattern does not compile: {exc.msg}{where}"
            ) from None
        if compiled.search("") is not None:
            # A pattern matching the empty string would "mask" between every character.
            raise MaskingError(f"custom detector {name!r}: pattern matches the empty string")
        return cls(name, compiled)

    def find(self, text: str) -> Iterable[tuple[int, int]]:
        """Spans of matches that pass the check."""
        for match in self.pattern.finditer(text):
            spans = [match.span()] if self.candidates is None else self.candidates(match)
            for start, end in spans:
                if self.check is None or self.check(text[start:end]):
                    yield start, end


_DIGIT_GROUP = re.compile(r"[0-9]+")


def _card_candidates(match: re.Match[str]) -> Iterable[tuple[int, int]]:
    """Spans of 13-19 digits inside a run of digit groups, starting and ending on groups.

    A card number may follow or precede other digits in the same run ("order
    12345 4111 1111 1111 1111"); checking only the whole run would miss it.
    """
    groups = [m.span() for m in _DIGIT_GROUP.finditer(match.group())]
    offset = match.start()
    for first, (start, _) in enumerate(groups):
        digits = 0
        for group_start, group_end in groups[first:]:
            digits += group_end - group_start
            if digits > 19:
                break
            if digits >= 13:
                yield offset + start, offset + group_end


def _iban_candidates(match: re.Match[str]) -> Iterable[tuple[int, int]]:
    """Prefixes of the match with the country's IBAN length (or any length, 15-34).

    The pattern may run on into a following word in capitals ("... 0130 00 AND").
    """
    text = match.group()
    expected = _IBAN_LENGTHS.get(text[:2])
    count = 0
    for index, ch in enumerate(text):
        if ch == " ":
            continue
        count += 1
        if count == expected or (expected is None and 15 <= count <= 34):
            yield match.start(), match.start() + index + 1


_NOT_DIGIT_BEFORE = r"(?<![0-9])"
_NOT_DIGIT_AFTER = r"(?![0-9])"

BUILTIN: dict[str, Detector] = {
    detector.name: detector
    for detector in (
        Detector(
            "card",
            # A run of digits in groups split by one space or dash, at most 64 long.
            re.compile(_NOT_DIGIT_BEFORE + r"[0-9](?:[ -]?[0-9]){12,63}" + _NOT_DIGIT_AFTER),
            luhn_ok,
            _card_candidates,
        ),
        Detector(
            "email",
            re.compile(
                r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@"
                r"[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}"
                r"(?![A-Za-z0-9-])"
            ),
        ),
        Detector(
            "iban",
            re.compile(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}"),
            iban_ok,
            _iban_candidates,
        ),
        Detector(
            "ssn_us",
            re.compile(_NOT_DIGIT_BEFORE + r"[0-9]{3}-[0-9]{2}-[0-9]{4}" + _NOT_DIGIT_AFTER),
            ssn_us_ok,
        ),
        Detector(
            "nino_gb",
            # Prefix letters exclude D, F, I, Q, U, V (both) and O (second); BG, GB, KN,
            # NK, NT, TN and ZZ are never issued; suffix A-D.
            re.compile(
                r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
                r" ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D]\b"
            ),
        ),
        Detector(
            "bsn_nl",
            re.compile(_NOT_DIGIT_BEFORE + r"[0-9]{9}" + _NOT_DIGIT_AFTER),
            bsn_nl_ok,
        ),
        Detector(
            "pesel_pl",
            re.compile(_NOT_DIGIT_BEFORE + r"[0-9]{11}" + _NOT_DIGIT_AFTER),
            pesel_pl_ok,
        ),
        Detector(
            "dni_es",
            re.compile(r"\b(?:[0-9]{8}|[XYZ][0-9]{7})[A-Z]\b"),
            dni_es_ok,
        ),
        Detector(
            "sin_ca",
            re.compile(
                _NOT_DIGIT_BEFORE + r"[1-79][0-9]{2}[ -]?[0-9]{3}[ -]?[0-9]{3}" + _NOT_DIGIT_AFTER
            ),
            luhn_ok,
        ),
    )
}


def builtin(name: str) -> Detector:
    """A built-in detector by name; an unknown name lists the known ones."""
    try:
        return BUILTIN[name]
    except KeyError:
        raise MaskingError(
            f"unknown detector {name!r}; built-in detectors are {', '.join(sorted(BUILTIN))}"
        ) from None


class TextMasker:
    """Masks every match of ``detectors`` in a text with ``method``."""

    def __init__(
        self,
        detectors: Sequence[Detector],
        method: Method,
        key: MaskKey | None = None,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        if method.kind == "null":
            raise MaskingError("method null cannot replace part of a text; use redact")
        if method.kind == "hash" and key is None:
            raise MaskingError("method hash needs a masking key and none is configured")
        if not detectors:
            raise MaskingError("a text masker needs at least one detector")
        names = [d.name for d in detectors]
        if len(set(names)) != len(names):
            raise MaskingError(f"detector names repeat: {', '.join(names)}")
        self._detectors = tuple(detectors)
        self._method = method
        self._key = key
        self._max_chars = max_chars

    def mask(self, text: str) -> tuple[str, dict[str, int]]:
        """Return the masked text and, per detector name, how many matches it masked."""
        if len(text) > self._max_chars:
            raise MaskingError(
                f"text of {len(text)} characters is over the {self._max_chars}-character limit"
            )
        found = sorted(
            (start, end, detector.name)
            for detector in self._detectors
            for start, end in detector.find(text)
        )
        if not found:
            return text, {}
        pieces: list[str] = []
        counts: dict[str, int] = {}
        done = 0
        for start, end, name in _merge(found):
            pieces.append(text[done:start])
            masked = mask_string(text[start:end], self._method, self._key)
            pieces.append(masked if masked is not None else "")
            counts[name] = counts.get(name, 0) + 1
            done = end
        pieces.append(text[done:])
        return "".join(pieces), counts

    def mask_bytes_text(self, value: bytes | memoryview) -> tuple[bytes, dict[str, int]]:
        """:meth:`mask` for a UTF-8 value; invalid bytes pass through unchanged."""
        text = bytes(value).decode("utf-8", "surrogateescape")
        masked, counts = self.mask(text)
        if not counts:
            return bytes(value), counts
        return masked.encode("utf-8", "surrogateescape"), counts


def _merge(spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Join overlapping matches into one span named by its first match.

    Masking the union, rather than keeping one match and dropping the other, leaves no
    digit of either in clear (a 13-digit false positive overlapping a real card).
    """
    merged: list[tuple[int, int, str]] = []
    for start, end, name in spans:
        if merged and start < merged[-1][1]:
            first_start, first_end, first_name = merged[-1]
            merged[-1] = (first_start, max(first_end, end), first_name)
        else:
            merged.append((start, end, name))
    return merged
