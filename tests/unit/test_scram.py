"""SCRAM-SHA-256/512: stored credentials, the server exchange driven by scramp's own
client, refusals with their reasons, and ``hash-password --scram``."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable

import pytest
import scramp
import yaml
from pydantic import ValidationError

from gateway.__main__ import main
from gateway.config import UserConfig
from gateway.errors import AuthenticationFailed
from gateway.identity import Identity
from gateway.identity.accounts import AccountStore
from gateway.identity.guard import AuthGuard
from gateway.identity.mechanisms import AuthContext, Challenge, Exchange, Verified
from gateway.identity.passwords import admin_token_sha256
from gateway.identity.scram import (
    MAX_MESSAGE,
    ScramCredential,
    ScramMechanism,
    ScramName,
    format_credential,
    make_credential,
    parse_credential,
)

MECHANISMS: tuple[ScramName, ...] = ("SCRAM-SHA-256", "SCRAM-SHA-512")
CONTEXT = AuthContext(listener="sasl", peer="192.0.2.7:5000", address="192.0.2.7")


def stored(mechanism: ScramName, password: str) -> str:
    return format_credential(make_credential(mechanism, password))


def user(name: str, password: str, **extra: object) -> UserConfig:
    return UserConfig(
        name=name,
        scram_sha_256=stored("SCRAM-SHA-256", password),
        scram_sha_512=stored("SCRAM-SHA-512", password),
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def accounts() -> AccountStore:
    return AccountStore(
        [
            user("alice", "wonderland", groups=["payments", "ops"]),
            user("carol", "gone", disabled=True),
            user("odd,name=x", "commas"),
            UserConfig(name="only256", scram_sha_256=stored("SCRAM-SHA-256", "short")),
        ]
    )


@pytest.fixture
def guard() -> AuthGuard:
    guard = AuthGuard(workers=2, per_address=2, failures_per_minute=100, delay=0)
    yield guard  # type: ignore[misc]
    guard.close()


Make = Callable[[ScramName], ScramMechanism]


@pytest.fixture
def mechanism(accounts: AccountStore, guard: AuthGuard) -> Make:
    return lambda name: ScramMechanism(name, accounts, guard)


async def login(
    mechanism: ScramMechanism, name: str, password: str
) -> tuple[Identity, scramp.ScramClient]:
    """A whole exchange with scramp's client; returns the identity and the client
    (which has checked the server's final message)."""
    client = scramp.ScramClient([mechanism.name], name, password)
    exchange = mechanism.start(CONTEXT)
    first = await exchange.step(client.get_client_first().encode())
    assert isinstance(first, Challenge)
    client.set_server_first(first.data.decode())
    final = await exchange.step(client.get_client_final().encode())
    assert isinstance(final, Verified)
    client.set_server_final(final.final.decode())
    return final.identity, client


async def refused(exchange: Exchange, *tokens: bytes) -> str:
    """Feed tokens until one is refused; the refusal's reason."""
    with pytest.raises(AuthenticationFailed) as caught:
        for token in tokens:
            await exchange.step(token)
    return caught.value.reason


async def first_then_final(
    mechanism: ScramMechanism, name: str, password: str
) -> tuple[Exchange, bytes, bytes]:
    """client-first's server answer and the client-final a real client would send."""
    client = scramp.ScramClient([mechanism.name], name, password)
    exchange = mechanism.start(CONTEXT)
    first = await exchange.step(client.get_client_first().encode())
    assert isinstance(first, Challenge)
    client.set_server_first(first.data.decode())
    return exchange, first.data, client.get_client_final().encode()


# Stored credentials -------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_credential_round_trips_through_its_stored_form(mechanism: ScramName) -> None:
    credential = make_credential(mechanism, "pencil", iterations=8192)

    text = format_credential(credential)

    assert text.startswith(f"{mechanism.lower()}$8192$")
    assert parse_credential(text) == credential
    assert "pencil" not in text


def test_credential_matches_rfc_7677_for_known_salt_and_password() -> None:
    # RFC 7677 section 3: user "user", password "pencil", this salt, 4096 iterations.
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    _, stored_key, server_key, _ = scramp.ScramMechanism("SCRAM-SHA-256").make_auth_info(
        "pencil", iteration_count=4096, salt=salt
    )
    client = scramp.ScramClient(["SCRAM-SHA-256"], "user", "pencil", c_nonce="rOprNGfwEbeRWgbNEkqO")
    server_nonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    server = scramp.ScramMechanism("SCRAM-SHA-256").make_server(
        lambda _: (salt, stored_key, server_key, 4096), s_nonce=server_nonce
    )
    server.set_client_first(client.get_client_first())
    client.set_server_first(server.get_server_first())
    final = client.get_client_final()

    assert final.endswith("p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    text = format_credential(ScramCredential("SCRAM-SHA-256", 4096, salt, stored_key, server_key))
    assert parse_credential(text).stored_key == stored_key


def test_each_credential_gets_a_fresh_salt() -> None:
    first = make_credential("SCRAM-SHA-256", "same")
    second = make_credential("SCRAM-SHA-256", "same")

    assert first.salt != second.salt
    assert first.stored_key != second.stored_key


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("scram-sha-256$4096$AAAA", "five"),
        ("scram-sha-1$4096$a$b$c", "starts with"),
        ("scram-sha-256$1000$" + "A" * 24 + "$" + "A" * 44 + "$" + "A" * 44, "iteration"),
        ("scram-sha-256$04096$" + "A" * 24 + "$" + "A" * 44 + "$" + "A" * 44, "number"),
        ("scram-sha-256$4096$not base64$" + "A" * 44 + "$" + "A" * 44, "base64"),
        ("scram-sha-256$4096$AAAA$" + "A" * 44 + "$" + "A" * 44, "salt"),
        ("scram-sha-256$4096$" + "A" * 24 + "$" + "A" * 88 + "$" + "A" * 88, "32 bytes"),
    ],
)
def test_malformed_credential_is_refused_with_what_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_credential(text)


def test_config_refuses_a_credential_with_too_few_iterations_naming_the_field() -> None:
    weak = "scram-sha-256$1000$" + "A" * 24 + "$" + "A" * 44 + "$" + "A" * 44

    with pytest.raises(ValidationError, match=r"scram_sha_256\n.*the iteration count"):
        UserConfig(name="weak", scram_sha_256=weak)


def test_config_refuses_a_512_credential_in_the_256_field() -> None:
    with pytest.raises(ValidationError, match=r"scram_sha_256\n.*holds a scram-sha-512 credential"):
        UserConfig(name="mixed", scram_sha_256=stored("SCRAM-SHA-512", "x"))


def test_too_few_iterations_are_refused_when_hashing() -> None:
    with pytest.raises(ValueError, match="iteration count"):
        make_credential("SCRAM-SHA-512", "x", iterations=1000)


# The exchange -------------------------------------------------------------------------


@pytest.mark.parametrize("name", MECHANISMS)
async def test_right_password_authenticates_and_the_client_accepts_the_server(
    mechanism: Make, name: ScramName
) -> None:
    identity, _ = await login(mechanism(name), "alice", "wonderland")

    assert identity == Identity(principal="alice", mechanism=name, groups=("payments", "ops"))


async def test_username_with_escaped_comma_and_equals_authenticates(mechanism: Make) -> None:
    identity, _ = await login(mechanism("SCRAM-SHA-256"), "odd,name=x", "commas")

    assert identity.principal == "odd,name=x"


@pytest.mark.parametrize("name", MECHANISMS)
async def test_wrong_password_is_refused_as_bad_password(mechanism: Make, name: ScramName) -> None:
    exchange, _, final = await first_then_final(mechanism(name), "alice", "queen of hearts")

    assert await refused(exchange, final) == "bad_password"


async def test_a_refusal_names_the_user_attempted_and_never_the_proof(mechanism: Make) -> None:
    exchange, _, final = await first_then_final(mechanism("SCRAM-SHA-512"), "alice", "wrong")

    with pytest.raises(AuthenticationFailed) as caught:
        await exchange.step(final)

    assert caught.value.attempted == "alice"
    assert "p=" not in str(caught.value)  # the client proof stays out of the message


async def test_unknown_user_gets_a_plausible_challenge_and_fails_only_at_the_end(
    mechanism: Make,
) -> None:
    scram = mechanism("SCRAM-SHA-256")
    exchange, server_first, final = await first_then_final(scram, "mallory", "guess")

    fields = dict(part.split("=", 1) for part in server_first.decode().split(","))
    assert set(fields) == {"r", "s", "i"}
    assert fields["i"] == "4096"
    assert await refused(exchange, final) == "unknown_user"


async def test_unknown_users_get_a_stable_salt_per_name(mechanism: Make) -> None:
    scram = mechanism("SCRAM-SHA-512")

    def salt(first: bytes) -> str:
        return dict(p.split("=", 1) for p in first.decode().split(","))["s"]

    _, one, _ = await first_then_final(scram, "mallory", "a")
    _, again, _ = await first_then_final(scram, "mallory", "b")
    _, other, _ = await first_then_final(scram, "trudy", "a")

    assert salt(one) == salt(again)
    assert salt(one) != salt(other)


async def test_user_without_a_credential_of_this_size_is_refused_as_unknown(
    mechanism: Make,
) -> None:
    await login(mechanism("SCRAM-SHA-256"), "only256", "short")

    exchange, _, final = await first_then_final(mechanism("SCRAM-SHA-512"), "only256", "short")

    assert await refused(exchange, final) == "unknown_user"


async def test_disabled_account_is_refused_even_with_its_password(mechanism: Make) -> None:
    exchange, _, final = await first_then_final(mechanism("SCRAM-SHA-256"), "carol", "gone")

    assert await refused(exchange, final) == "disabled_account"


async def test_refusal_message_never_contains_the_password_or_proof(mechanism: Make) -> None:
    exchange, _, final = await first_then_final(mechanism("SCRAM-SHA-256"), "alice", "s3cr3t!")

    with pytest.raises(AuthenticationFailed) as caught:
        await exchange.step(final)

    proof = final.decode().rpartition("p=")[2]
    assert "s3cr3t!" not in str(caught.value)
    assert proof not in str(caught.value)


@pytest.mark.parametrize(
    ("client_first", "reason"),
    [
        (b"y,,n=alice,r=abcdef", "channel_binding"),
        (b"p=tls-unique,,n=alice,r=abcdef", "channel_binding"),
        (b"x,,n=alice,r=abcdef", "malformed"),
        (b"n,a=alice,n=alice,r=abcdef", "malformed"),
        (b"n=alice,r=abcdef", "malformed"),
        (b"n,,n=alice", "malformed"),
        (b"n,,r=abcdef,n=alice", "malformed"),
        (b"n,,n=alice,r=abc,def", "unsupported_extension"),
        (b"n,,n=alice,r=abcdef,tokenauth=true", "delegation_token"),
        (b"n,,n=alice,r=abcdef,m=mandatory", "unsupported_extension"),
        (b"n,,n=al=ZZice,r=abcdef", "malformed"),
        (b"n,,n=,r=abcdef", "malformed"),
        (b"n,,", "malformed"),
        (b"n,", "malformed"),
        (b"", "malformed"),
        (b"\xff\xfe", "malformed"),
        (b"n,,n=alice,r=" + b"a" * MAX_MESSAGE, "malformed"),
    ],
)
async def test_bad_client_first_is_refused_with_its_reason(
    mechanism: Make, client_first: bytes, reason: str
) -> None:
    exchange = mechanism("SCRAM-SHA-256").start(CONTEXT)

    assert await refused(exchange, client_first) == reason


async def test_message_of_exactly_the_maximum_size_is_parsed(mechanism: Make) -> None:
    head = b"n,,n=alice,r="
    exchange = mechanism("SCRAM-SHA-256").start(CONTEXT)

    result = await exchange.step(head + b"a" * (MAX_MESSAGE - len(head)))

    assert isinstance(result, Challenge)


def truncate(final: bytes) -> bytes:
    return final[: final.index(b",p=")]


def other_nonce(final: bytes) -> bytes:
    c, r, p = final.split(b",")
    return b",".join((c, r + b"x", p))


def flipped_proof(final: bytes) -> bytes:
    head, _, proof = final.rpartition(b",p=")
    raw = bytearray(base64.b64decode(proof))
    raw[0] ^= 1
    return head + b",p=" + base64.b64encode(bytes(raw))


def binding_y(final: bytes) -> bytes:
    return final.replace(b"c=biws", b"c=" + base64.b64encode(b"y,,"))


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (truncate, "malformed"),
        (lambda f: f[:-10], "malformed"),
        (flipped_proof, "bad_password"),
        (lambda f: f + b"A" * MAX_MESSAGE, "malformed"),
        (other_nonce, "malformed"),
        (binding_y, "channel_binding"),
        (lambda f: b"\xc3\x28" + f, "malformed"),
        (lambda f: b"", "malformed"),
    ],
    ids=[
        "truncated",
        "short-proof",
        "flipped-proof",
        "oversized",
        "nonce",
        "binding",
        "not-utf8",
        "empty",
    ],
)
async def test_bad_client_final_is_refused_with_its_reason(
    mechanism: Make, mangle: Callable[[bytes], bytes], reason: str
) -> None:
    exchange, _, final = await first_then_final(mechanism("SCRAM-SHA-512"), "alice", "wonderland")

    assert await refused(exchange, mangle(final)) == reason


async def test_no_step_after_the_exchange_finished(mechanism: Make) -> None:
    exchange, _, final = await first_then_final(mechanism("SCRAM-SHA-256"), "alice", "wonderland")
    assert isinstance(await exchange.step(final), Verified)

    assert await refused(exchange, final) == "malformed"


async def test_no_step_after_a_refused_client_first(mechanism: Make) -> None:
    exchange = mechanism("SCRAM-SHA-256").start(CONTEXT)
    assert await refused(exchange, b"y,,n=alice,r=abcdef") == "channel_binding"

    assert await refused(exchange, b"n,,n=alice,r=abcdef") == "malformed"


async def test_proof_check_takes_its_turn_in_the_guard(accounts: AccountStore) -> None:
    guard = AuthGuard(workers=1, per_address=1, failures_per_minute=1, delay=0)
    scram = ScramMechanism("SCRAM-SHA-256", accounts, guard)
    exchange, _, final = await first_then_final(scram, "alice", "wonderland")
    await guard.failed(CONTEXT.address)  # the address has used up its failures

    try:
        assert await refused(exchange, final) == "rate_limited"
    finally:
        guard.close()


# hash-password ------------------------------------------------------------------------


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str, stdin: str = ""
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(["hash-password", *args])
    out, err = capsys.readouterr()
    return code, out, err


async def test_hash_password_scram_lines_are_yaml_that_authenticates(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], guard: AuthGuard
) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "--scram", stdin="correct horse\n")

    assert code == 0
    fields = yaml.safe_load(out)
    assert set(fields) == {"scram_sha_256", "scram_sha_512"}
    assert "correct horse" not in out
    accounts = AccountStore([UserConfig(name="dave", **fields)])
    for name in MECHANISMS:
        identity, _ = await login(ScramMechanism(name, accounts, guard), "dave", "correct horse")
        assert identity.principal == "dave"
        assert parse_credential(fields[name.lower().replace("-", "_")]).iterations == 4096


def test_hash_password_scram_takes_an_iteration_count(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "--scram", "--iterations", "5000", stdin="pw\n")

    assert code == 0
    assert all(parse_credential(v).iterations == 5000 for v in yaml.safe_load(out).values())


def test_hash_password_scram_refuses_too_few_iterations(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "--scram", "--iterations", "100", stdin="pw\n")

    assert (code, out) == (2, "")
    assert "iteration count" in err


def test_hash_password_without_scram_keeps_the_pbkdf2_output(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "--iterations", "1000", stdin="pw\n")

    assert code == 0
    assert out.startswith("pbkdf2_sha256$1000$")
    UserConfig(name="p", password_hash=out.strip())


def test_hash_password_admin_token_prints_a_fresh_token_and_its_sha256(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "--admin-token")
    _, again, _ = run_cli(monkeypatch, capsys, "--admin-token")

    assert code == 0
    comment, line = out.strip().splitlines()[-2:]
    token = comment.removeprefix("# ")
    assert yaml.safe_load(line) == {"token_sha256": admin_token_sha256(token)}
    assert out != again


def test_hash_password_admin_token_read_hashes_the_given_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(monkeypatch, capsys, "--admin-token", "read", stdin="abc\n")

    assert code == 0
    # The SHA-256 of "abc" (FIPS 180-2 appendix B.1).
    assert out == "token_sha256: ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"
