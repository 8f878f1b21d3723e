"""SASL/PLAIN: token parsing, PBKDF2 password hashes and the authenticator."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import UserConfig
from gateway.errors import AuthenticationFailed
from gateway.identity import Identity
from gateway.identity.accounts import AccountStore
from gateway.identity.guard import AuthGuard
from gateway.identity.mechanisms import AuthContext, Verified
from gateway.identity.passwords import hash_password, verify_password
from gateway.identity.plain import MECHANISM, PlainMechanism, parse_token

# Low iteration counts keep the tests fast; the format is the same as in production.
ITERATIONS = 1000
FAST = settings(max_examples=50, deadline=None, database=None)

passwords = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)  # any encodable text


@FAST
@given(passwords)
def test_hash_then_verify_accepts_the_password(password: str) -> None:
    assert verify_password(password, hash_password(password, iterations=ITERATIONS))


@FAST
@given(passwords, passwords)
def test_verify_rejects_a_different_password(password: str, other: str) -> None:
    stored = hash_password(password, iterations=ITERATIONS)

    assert verify_password(other, stored) == (other == password)


def test_hash_has_the_configured_format_and_a_fresh_salt() -> None:
    first = hash_password("secret", iterations=ITERATIONS)
    second = hash_password("secret", iterations=ITERATIONS)

    algorithm, iterations, salt, digest = first.split("$")
    assert (algorithm, iterations) == ("pbkdf2_sha256", str(ITERATIONS))
    assert first != second
    UserConfig(name="alice", password_hash=first)  # accepted by the config's pattern


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "nonsense",
        "pbkdf2_sha256$1000$AAAA",
        "pbkdf2_sha256$1000$AAAA$AAAA$AAAA",
        "md5$1000$AAAA$AAAA",
        "pbkdf2_sha256$many$AAAA$AAAA",
        "pbkdf2_sha256$0$AAAA$AAAA",
        "pbkdf2_sha256$-5$AAAA$AAAA",
        "pbkdf2_sha256$1000$not base64!$AAAA",
        "pbkdf2_sha256$1000$AAAA$AAA",
        "pbkdf2_sha256$1000$ÄÄÄÄ$AAAA",
    ],
)
def test_malformed_stored_hash_verifies_false_without_raising(stored: str) -> None:
    assert verify_password("secret", stored) is False


def test_stored_hash_with_out_of_range_iteration_count_verifies_false() -> None:
    # Matches the config's pattern (digits), but does not fit a C long.
    stored = "pbkdf2_sha256$99999999999999999999$AAAAAAAAAAAAAAAAAAAAAA==$AAAA"

    assert verify_password("secret", stored) is False


# Token parsing ------------------------------------------------------------------------


def test_token_with_empty_authzid_parses() -> None:
    assert parse_token(b"\x00alice\x00secret") == ("", "alice", "secret")


def test_token_with_authzid_equal_to_user_parses() -> None:
    assert parse_token(b"alice\x00alice\x00secret") == ("alice", "alice", "secret")


def test_token_password_may_be_empty() -> None:
    assert parse_token(b"\x00alice\x00") == ("", "alice", "")


def test_token_with_non_ascii_utf8_parses() -> None:
    token = "\x00jürgen\x00pässwörd".encode()

    assert parse_token(token) == ("", "jürgen", "pässwörd")


@FAST
@given(
    user=st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        min_size=1,
        max_size=50,
    ),
    password=st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=50
    ),
)
def test_any_well_formed_token_round_trips(user: str, password: str) -> None:
    assert parse_token(f"\x00{user}\x00{password}".encode()) == ("", user, password)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (b"bob\x00alice\x00secret", "authorization id"),
        (b"alice\x00secret", "authzid NUL user NUL password"),
        (b"alice", "authzid NUL user NUL password"),
        (b"", "authzid NUL user NUL password"),
        (b"\x00alice\x00sec\x00ret", "authzid NUL user NUL password"),
        (b"\x00al\xffice\x00secret", "UTF-8"),
        (b"\x00alice\x00\xc3", "UTF-8"),
        (b"\x00\x00secret", "empty username"),
        (b"\x00alice\x00" + b"x" * 5000, "too long"),
    ],
)
def test_bad_token_raises_authentication_failed(token: bytes, reason: str) -> None:
    with pytest.raises(AuthenticationFailed, match=reason):
        parse_token(token)


def test_token_of_exactly_the_maximum_length_is_accepted() -> None:
    token = b"\x00alice\x00" + b"x" * (4096 - len(b"\x00alice\x00"))

    assert parse_token(token)[1] == "alice"


# The authenticator --------------------------------------------------------------------


class Authenticator:
    """PLAIN exchanges from one address, one token each."""

    def __init__(self, mechanism: PlainMechanism) -> None:
        self.mechanism = mechanism
        self.context = AuthContext(listener="sasl", peer="192.0.2.1:5000", address="192.0.2.1")

    async def authenticate(self, token: bytes) -> Identity:
        result = await self.mechanism.start(self.context).step(token)
        assert isinstance(result, Verified)
        assert result.final == b""
        return result.identity


@pytest.fixture
def authenticator() -> Authenticator:
    accounts = AccountStore(
        [
            UserConfig(
                name="alice",
                password_hash=hash_password("wonderland", ITERATIONS),
                groups=["payments"],
            ),
            UserConfig(name="bob", password_hash=hash_password("builder", ITERATIONS)),
            UserConfig(
                name="carol", password_hash=hash_password("gone", ITERATIONS), disabled=True
            ),
            UserConfig(name="scram-only", scram_sha_256=None),
        ]
    )
    guard = AuthGuard(workers=2, per_address=2, failures_per_minute=100, delay=0)
    return Authenticator(PlainMechanism(accounts, guard))


async def test_configured_user_with_right_password_is_authenticated(
    authenticator: Authenticator,
) -> None:
    identity = await authenticator.authenticate(b"\x00alice\x00wonderland")

    assert identity == Identity(principal="alice", mechanism=MECHANISM, groups=("payments",))


async def test_authzid_equal_to_user_is_authenticated(authenticator: Authenticator) -> None:
    identity = await authenticator.authenticate(b"bob\x00bob\x00builder")

    assert identity.principal == "bob"


async def test_wrong_password_is_rejected(authenticator: Authenticator) -> None:
    with pytest.raises(AuthenticationFailed, match="alice"):
        await authenticator.authenticate(b"\x00alice\x00builder")


async def test_unknown_user_is_rejected(authenticator: Authenticator) -> None:
    with pytest.raises(AuthenticationFailed, match="mallory"):
        await authenticator.authenticate(b"\x00mallory\x00wonderland")


async def test_another_users_password_is_rejected(authenticator: Authenticator) -> None:
    with pytest.raises(AuthenticationFailed):
        await authenticator.authenticate(b"\x00bob\x00wonderland")


async def test_malformed_token_is_rejected_by_the_authenticator(
    authenticator: Authenticator,
) -> None:
    with pytest.raises(AuthenticationFailed):
        await authenticator.authenticate(b"alice\x00wonderland")


async def test_rejection_message_never_contains_the_password(
    authenticator: Authenticator,
) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        await authenticator.authenticate(b"\x00alice\x00not-the-password")

    assert "not-the-password" not in str(caught.value)


async def test_disabled_account_is_rejected_even_with_its_password(
    authenticator: Authenticator,
) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        await authenticator.authenticate(b"\x00carol\x00gone")

    assert caught.value.reason == "disabled_account"


async def test_account_without_a_plain_credential_is_rejected_as_unknown(
    authenticator: Authenticator,
) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        await authenticator.authenticate(b"\x00scram-only\x00")

    assert caught.value.reason == "unknown_user"


async def test_wrong_password_and_unknown_user_have_their_reasons(
    authenticator: Authenticator,
) -> None:
    with pytest.raises(AuthenticationFailed) as wrong:
        await authenticator.authenticate(b"\x00alice\x00builder")
    with pytest.raises(AuthenticationFailed) as unknown:
        await authenticator.authenticate(b"\x00mallory\x00x")

    assert (wrong.value.reason, unknown.value.reason) == ("bad_password", "unknown_user")
