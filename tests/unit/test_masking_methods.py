"""The masking methods, text detectors, JSON masker and Avro rule compilation, value
by value: each method keeps its type, detectors find only what passes their check,
JSON keeps its structure and types, and a rule that cannot apply is refused naming its
path."""

from __future__ import annotations

import hmac
import json
import random
import string

import pytest

from gateway.masking import MaskingError, NotWireFormat
from gateway.masking.avro import compile_masker, join_wire, split_wire
from gateway.masking.detectors import Detector, TextMasker, builtin
from gateway.masking.jsonmask import JsonMasker
from gateway.masking.methods import (
    MaskKey,
    Method,
    hash_text,
    mask_bool,
    mask_bytes,
    mask_enum,
    mask_fixed,
    mask_float,
    mask_int,
    partial_text,
)
from gateway.masking.paths import FieldRule, parse_path

KEY = MaskKey(b"m" * 32)
OTHER_KEY = MaskKey(b"n" * 32)


def _hash_by_character(text: str, key: MaskKey) -> str:
    """The keyed hash as documented, one character at a time: each digit or ASCII
    letter becomes one of its kind chosen by the key stream's byte there."""
    noise = key.stream(b"string", text.encode("utf-8", "surrogatepass"), len(text))
    out = []
    for ch, n in zip(text, noise, strict=True):
        for alphabet in (string.digits, string.ascii_lowercase, string.ascii_uppercase):
            if ch in alphabet:
                ch = alphabet[n % len(alphabet)]
                break
        out.append(ch)
    return "".join(out)


def test_hashed_text_is_what_the_character_rule_gives_and_stays_the_same_across_versions() -> None:
    rnd = random.Random(11)
    alphabet = [chr(c) for c in range(128)] + ["é", "ß", "İ", "٣", "中", "²", "ǅ"]
    for _ in range(2000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 40)))
        assert hash_text(text, KEY) == _hash_by_character(text, KEY), text
        keep = rnd.randint(0, 6)
        cut = max(len(text) - keep, 0)
        head = "".join("*" if ch.isalnum() else ch for ch in text[:cut])
        assert partial_text(text, keep) == head + text[cut:], text
    # Pseudonyms must not change with a gateway upgrade: pinned outputs.
    pinned = MaskKey(b"k" * 32)
    assert hash_text("4111 1111 1111 1111", pinned) == "1760 2857 6697 4898"
    assert hash_text("customer42@example.com", pinned) == "stjqyqew59@xdrfudd.bhd"
    assert hash_text("Jürgen Groß-Müller", pinned) == "Uüeuqu Rfqß-Xüyldd"


def test_a_keyed_hash_keeps_the_shape_of_a_string_and_depends_on_the_key() -> None:
    text = "Ann-Marie.77@example.com"
    hashed = hash_text(text, KEY)
    assert hashed == hash_text(text, KEY)
    assert hashed != text and hashed != hash_text(text, OTHER_KEY)
    assert len(hashed) == len(text)
    for before, after in zip(text, hashed, strict=True):
        if before.isdigit():
            assert after.isdigit()
        elif before.isupper():
            assert after.isupper()
        elif before.islower():
            assert after.islower()
        else:
            assert after == before


def test_partial_keeps_the_last_characters_and_the_separators() -> None:
    assert partial_text("4111 1111 1111 1234", 4) == "**** **** **** 1234"
    assert partial_text("ab", 4) == "ab"


def test_each_type_keeps_its_type_and_range() -> None:
    redact, hashed = Method("redact"), Method("hash")
    assert mask_int(5, redact, KEY, 32) == 0
    value = mask_int(5, hashed, KEY, 32)
    assert isinstance(value, int) and -(2**31) <= value < 2**31
    assert isinstance(mask_float(1.5, hashed, KEY), float)
    assert mask_bool(True, redact, KEY) is False
    assert mask_bytes(b"secret", redact, KEY) == b""
    assert mask_fixed(b"12345678", 8, redact, KEY) == b"\0" * 8
    fixed = mask_fixed(b"12345678", 8, hashed, KEY)
    assert fixed is not None and len(fixed) == 8
    assert mask_enum("GBP", ["EUR", "USD", "GBP"], redact, KEY) == "EUR"
    assert mask_enum("GBP", ["EUR", "USD", "GBP"], hashed, KEY) in {"EUR", "USD", "GBP"}


def test_a_key_shows_only_its_fingerprint_and_a_short_key_is_refused() -> None:
    assert "m" * 32 not in repr(KEY) and KEY.fingerprint in repr(KEY)
    with pytest.raises(MaskingError, match="at least"):
        MaskKey(b"short")


@pytest.mark.parametrize(
    ("detector", "found", "left"),
    [
        ("card", "4111 1111 1111 1111", "4111 1111 1111 1112"),  # second fails Luhn
        ("email", "ann@example.com", "ann at example"),
        ("iban", "NL91ABNA0417164300", "NL91ABNA0417164301"),  # mod-97 fails
        ("ssn_us", "123-45-6789", "000-45-6789"),
        ("bsn_nl", "111222333", "111222334"),
    ],
)
def test_detectors_mask_what_passes_their_check_and_leave_the_rest(
    detector: str, found: str, left: str
) -> None:
    masker = TextMasker([builtin(detector)], Method("redact", replacement="#"), KEY)
    masked, counts = masker.mask(f"a {found} b")
    assert masked == "a # b" and counts == {detector: 1}
    assert masker.mask(f"a {left} b") == (f"a {left} b", {})


def test_custom_detectors_and_bad_patterns() -> None:
    custom = Detector.custom("ticket", r"TCK-\d{6}")
    masker = TextMasker([custom], Method("partial", keep_last=2), KEY)
    assert masker.mask("see TCK-123456") == ("see ***-****56", {"ticket": 1})
    with pytest.raises(MaskingError):
        Detector.custom("broken", "([")
    with pytest.raises(MaskingError, match="unknown detector"):
        builtin("passport")


def test_invalid_utf8_passes_through_and_text_around_it_is_masked() -> None:
    masker = TextMasker([builtin("email")], Method("redact", replacement="@"), KEY)
    value = b"\xff\xfe mail ann@example.com \x80"
    masked, counts = masker.mask_bytes_text(value)
    assert masked == b"\xff\xfe mail @ \x80" and counts == {"email": 1}


def test_json_paths_keep_types_and_structure() -> None:
    rules = [
        FieldRule("user.email", Method("redact", replacement="x"), "email"),
        FieldRule("user.age", Method("hash"), "age"),
        FieldRule("cards[].number", Method("partial", keep_last=4), "cards"),
        FieldRule("flags{}", Method("redact"), "flags"),
    ]
    document = {
        "user": {"email": "a@b.c", "age": 41, "name": "Ann"},
        "cards": [{"number": "4111111111111111"}, {"number": "5500000000000004"}],
        "flags": {"vip": True, "score": 2.5},
        "n": None,
    }
    masked, counts = JsonMasker(rules, KEY).mask(json.dumps(document).encode())
    out = json.loads(masked)
    assert out["user"]["email"] == "x" and out["user"]["name"] == "Ann"
    assert isinstance(out["user"]["age"], int) and out["user"]["age"] != 41
    assert [c["number"] for c in out["cards"]] == ["************1111", "************0004"]
    assert out["flags"] == {"vip": False, "score": 0.0}
    assert list(out) == ["user", "cards", "flags", "n"]
    assert counts == {"email": 1, "age": 1, "cards": 2, "flags": 2}
    with pytest.raises(MaskingError):
        JsonMasker(rules, KEY).mask(b"{not json")


def test_paths_parse_and_bad_paths_are_refused() -> None:
    assert parse_path("a.b[].c{}") == ("a", "b", "[]", "c", "{}")
    with pytest.raises(MaskingError):
        parse_path("a..b")


RECORD = {
    "type": "record",
    "name": "R",
    "fields": [
        {"name": "n", "type": "int"},
        {"name": "s", "type": ["null", "string"]},
    ],
}


def test_an_avro_rule_that_cannot_apply_is_refused_naming_its_path() -> None:
    with pytest.raises(MaskingError, match="n"):
        compile_masker(RECORD, [FieldRule("n", Method("partial"), "r1")], KEY)
    with pytest.raises(MaskingError, match="n"):
        compile_masker(RECORD, [FieldRule("n", Method("null"), "r2")], KEY)
    masker = compile_masker(RECORD, [FieldRule("missing", Method("redact"), "r3")], KEY)
    assert [r.rule_id for r in masker.unmatched] == ["r3"]


def test_the_wire_format_is_split_and_joined_and_anything_else_refused() -> None:
    value = join_wire(42, b"body")
    schema_id, body = split_wire(value)
    assert schema_id == 42 and bytes(body) == b"body"
    for bad in (b"", b"\x01\x00\x00\x00\x2abody", b"\x00\x00\x00"):
        with pytest.raises(NotWireFormat):
            split_wire(bad)


@pytest.mark.parametrize("secret", [b"k" * 16, b"k" * 32, b"s" * 64, bytes(range(100))])
def test_the_key_digest_is_hmac_sha256_of_domain_and_value(secret: bytes) -> None:
    # Keys longer than SHA-256's block are hashed first, as RFC 2104 says.
    key = MaskKey(secret)
    for value in (b"", b"4111 1111 1111 1111", bytes(200)):
        expected = hmac.digest(secret, b"string\x00" + value, "sha256")
        assert key.digest(b"string", value) == expected
    seed = hmac.digest(secret, b"fixed\x00abc", "sha256")
    stream = hmac.digest(secret, seed + bytes(4), "sha256")
    stream += hmac.digest(secret, seed + (1).to_bytes(4, "big"), "sha256")
    assert key.stream(b"fixed", b"abc", 40) == stream[:40]
    assert key.stream(b"fixed", b"abc", 7) == stream[:7]
