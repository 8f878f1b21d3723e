"""SASL/OAUTHBEARER: the token rejection matrix, the good paths, JWKS refresh and
rotation, the bounded refetch on unknown kids, and the initial client response."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from jose import jwe, jwt
from kio.schema.errors import ErrorCode
from kio.schema.sasl_authenticate.v2 import request as authenticate_request
from prometheus_client import REGISTRY

from gateway.config import OAuthBearerConfig, UserConfig
from gateway.errors import AuthenticationFailed, JwksUnavailable
from gateway.identity.accounts import AccountStore
from gateway.identity.guard import AuthGuard
from gateway.identity.mechanisms import AuthContext, Verified
from gateway.identity.oauthbearer import (
    MAX_EXTENSIONS,
    MAX_JWKS_BYTES,
    MAX_JWKS_KEYS,
    JwksSource,
    JwtValidator,
    OAuthBearerMechanism,
    parse_client_response,
    parse_jwks,
)
from tests.integration.oidc import SigningKey, jwks
from tests.unit.harness import Harness, eventually
from tests.unit.test_sasl_sessions import handshake, sample, written

ISSUER = "https://idp.example"
AUDIENCE = "kafka-gateway"
KEY = SigningKey.generate("key-1")
NEW_KEY = SigningKey.generate("key-2")
STRANGER = SigningKey.generate("key-1")  # same kid as KEY, different key pair


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "orders-service",
        "azp": "orders-azp",
        "client_id": "orders-client",
        "groups": ["payments", "sre"],
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def unsigned(header: dict[str, Any], body: dict[str, Any], signature: bytes = b"") -> str:
    head = b64(json.dumps(header).encode())
    return f"{head}.{b64(json.dumps(body).encode())}.{b64(signature)}"


class FakeJwks:
    """The provider's JWKS endpoint: a document that can change, and a count of reads."""

    def __init__(self, *keys: SigningKey) -> None:
        self.document = json.dumps(jwks(*keys)).encode()
        self.fetches = 0
        self.fail = False

    def publish(self, *keys: SigningKey) -> None:
        self.document = json.dumps(jwks(*keys)).encode()

    async def fetch(self) -> bytes:
        self.fetches += 1
        await asyncio.sleep(0.01)  # a read takes a while: concurrent tokens overlap it
        if self.fail:
            raise JwksUnavailable("connection refused")
        return self.document


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def config(**changes: Any) -> OAuthBearerConfig:
    data: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks_url": "http://127.0.0.1:9/jwks",
        "jwks_refresh_seconds": 300,
        "jwks_min_refetch_seconds": 10,
    }
    data.update(changes)
    return OAuthBearerConfig.model_validate(data)


@pytest.fixture
async def guard() -> AsyncIterator[AuthGuard]:
    g = AuthGuard(workers=2, per_address=2, failures_per_minute=1000, delay=0)
    yield g
    g.close()


Make = Callable[..., JwtValidator]


@pytest.fixture
def provider() -> FakeJwks:
    return FakeJwks(KEY)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make(guard: AuthGuard, provider: FakeJwks, clock: Clock) -> Make:
    def build(accounts: AccountStore | None = None, **changes: Any) -> JwtValidator:
        cfg = config(**changes)
        source = JwksSource(cfg, fetch=provider.fetch, clock=clock)
        return JwtValidator(cfg, guard, accounts, source)

    return build


async def refused(validator: JwtValidator, token: str) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as caught:
        await validator.validate(token, "192.0.2.1")
    # The refusal names why, never the token or its signature.
    signature = token.rsplit(".", 1)[-1]
    assert len(signature) < 8 or signature not in str(caught.value)
    return caught.value


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- good tokens ----------------------------------------------------------------------------


async def test_valid_token_names_principal_groups_and_expiry(make: Make) -> None:
    body = claims()
    identity = await make().validate(KEY.sign(body))
    assert identity.principal == "orders-service"
    assert identity.groups == ("payments", "sre")
    assert identity.mechanism == "OAUTHBEARER"
    assert identity.expires_at == body["exp"]


async def test_groups_as_space_separated_string_are_split(make: Make) -> None:
    identity = await make().validate(KEY.sign(claims(groups="payments  sre audit")))
    assert identity.groups == ("payments", "sre", "audit")


async def test_groups_from_a_configured_claim(make: Make) -> None:
    token = KEY.sign(claims(roles=["ops"]))
    assert (await make(groups_claim="roles").validate(token)).groups == ("ops",)


async def test_token_without_groups_has_none(make: Make) -> None:
    assert (await make().validate(KEY.sign(claims(groups=None)))).groups == ()


@pytest.mark.parametrize(
    ("claim", "principal"), [("azp", "orders-azp"), ("client_id", "orders-client")]
)
async def test_principal_from_a_configured_claim(make: Make, claim: str, principal: str) -> None:
    identity = await make(principal_claim=claim).validate(KEY.sign(claims()))
    assert identity.principal == principal


async def test_audience_list_containing_the_audience_is_accepted(make: Make) -> None:
    token = KEY.sign(claims(aud=["other", AUDIENCE]))
    assert (await make().validate(token)).principal == "orders-service"


async def test_expiry_within_leeway_is_accepted(make: Make) -> None:
    token = KEY.sign(claims(exp=int(time.time()) - 5))
    assert (await make(leeway_seconds=30).validate(token)).principal == "orders-service"


async def test_enabled_service_account_adds_its_groups(make: Make) -> None:
    accounts = AccountStore([UserConfig(name="orders-service", groups=["sre", "billing"])])
    identity = await make(accounts).validate(KEY.sign(claims()))
    assert identity.groups == ("payments", "sre", "billing")


async def test_hs256_with_shared_secret_is_accepted(guard: AuthGuard) -> None:
    cfg = config(
        jwks_url=None,
        algorithms=["HS256"],
        shared_secret={"value": "s3cret-shared-key-32-bytes-long!"},
    )
    token = jwt.encode(claims(), "s3cret-shared-key-32-bytes-long!", algorithm="HS256")
    identity = await JwtValidator(cfg, guard).validate(token)
    assert identity.principal == "orders-service"


# -- the rejection matrix -------------------------------------------------------------------


async def test_alg_none_is_refused(make: Make) -> None:
    token = unsigned({"alg": "none", "kid": KEY.kid, "typ": "JWT"}, claims())
    assert (await refused(make(), token)).reason == "alg_not_allowed"


async def test_alg_none_in_other_case_is_refused(make: Make) -> None:
    token = unsigned({"alg": "None", "kid": KEY.kid}, claims())
    assert (await refused(make(), token)).reason == "alg_not_allowed"


async def test_hs256_signed_with_the_rsa_public_key_is_refused(make: Make) -> None:
    header = {"alg": "HS256", "kid": KEY.kid, "typ": "JWT"}
    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(claims()).encode())
    mac = hmac.new(KEY.public_pem(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert (await refused(make(), f"{head}.{body}.{b64(mac)}")).reason == "alg_not_allowed"


async def test_algorithm_allowed_but_key_of_another_type_is_refused(make: Make) -> None:
    token = unsigned({"alg": "ES256", "kid": KEY.kid}, claims(), b"x" * 64)
    refusal = await refused(make(algorithms=["RS256", "ES256"]), token)
    assert refusal.reason == "key_mismatch"


async def test_unknown_kid_is_refused(make: Make) -> None:
    token = NEW_KEY.sign(claims())
    assert (await refused(make(), token)).reason == "unknown_kid"


async def test_token_without_kid_is_refused(make: Make) -> None:
    token = jwt.encode(claims(), KEY.private_pem(), algorithm="RS256")
    assert (await refused(make(), token)).reason == "unknown_kid"


async def test_signature_by_another_key_is_refused(make: Make) -> None:
    assert (await refused(make(), STRANGER.sign(claims()))).reason == "bad_signature"


async def test_tampered_payload_is_refused(make: Make) -> None:
    head, _, signature = KEY.sign(claims()).split(".")
    forged = f"{head}.{b64(json.dumps(claims(sub='admin')).encode())}.{signature}"
    assert (await refused(make(), forged)).reason == "bad_signature"


async def test_expired_token_is_refused(make: Make) -> None:
    token = KEY.sign(claims(exp=int(time.time()) - 120))
    assert (await refused(make(leeway_seconds=30), token)).reason == "expired"


async def test_not_before_in_the_future_is_refused(make: Make) -> None:
    token = KEY.sign(claims(nbf=int(time.time()) + 120))
    assert (await refused(make(leeway_seconds=30), token)).reason == "not_yet_valid"


async def test_issued_in_the_future_is_refused(make: Make) -> None:
    token = KEY.sign(claims(iat=int(time.time()) + 120))
    assert (await refused(make(leeway_seconds=30), token)).reason == "not_yet_valid"


async def test_wrong_issuer_is_refused(make: Make) -> None:
    token = KEY.sign(claims(iss="https://evil.example"))
    assert (await refused(make(), token)).reason == "bad_issuer"


async def test_missing_issuer_is_refused(make: Make) -> None:
    assert (await refused(make(), KEY.sign(claims(iss=None)))).reason == "bad_issuer"


async def test_wrong_audience_is_refused(make: Make) -> None:
    token = KEY.sign(claims(aud="another-service"))
    assert (await refused(make(), token)).reason == "bad_audience"


async def test_missing_audience_is_refused(make: Make) -> None:
    assert (await refused(make(), KEY.sign(claims(aud=None)))).reason == "bad_audience"


async def test_missing_exp_is_refused(make: Make) -> None:
    assert (await refused(make(), KEY.sign(claims(exp=None)))).reason == "missing_exp"


async def test_exp_that_is_not_a_number_is_refused(make: Make) -> None:
    assert (await refused(make(), KEY.sign(claims(exp="tomorrow")))).reason == "malformed"


async def test_9_kib_token_is_refused_before_parsing(make: Make, provider: FakeJwks) -> None:
    token = KEY.sign(claims(padding="x" * 9 * 1024))
    assert len(token) > 9 * 1024
    assert (await refused(make(), token)).reason == "too_large"
    assert provider.fetches == 0  # not even the keys were looked at


async def test_jwe_is_refused(make: Make) -> None:
    token = jwe.encrypt(
        json.dumps(claims()), secrets.token_bytes(32), encryption="A256GCM", algorithm="dir"
    ).decode()
    assert token.count(".") == 4
    assert (await refused(make(), token)).reason == "jwe"


async def test_valid_token_for_a_disabled_service_account_is_refused(make: Make) -> None:
    accounts = AccountStore([UserConfig(name="orders-service", disabled=True)])
    assert (await refused(make(accounts), KEY.sign(claims()))).reason == "disabled_account"


async def test_critical_header_extension_is_refused(make: Make) -> None:
    token = KEY.sign(claims(), headers={"crit": ["exp"]})
    assert (await refused(make(), token)).reason == "malformed"


async def test_missing_principal_claim_is_refused(make: Make) -> None:
    assert (await refused(make(), KEY.sign(claims(sub=None)))).reason == "bad_principal"


async def test_principal_with_control_characters_is_refused(make: Make) -> None:
    token = KEY.sign(claims(sub="alice\nFAKE LOG LINE"))
    assert (await refused(make(), token)).reason == "bad_principal"


async def test_groups_of_the_wrong_shape_are_refused(make: Make) -> None:
    assert (await refused(make(), KEY.sign(claims(groups=[1, 2])))).reason == "bad_groups"


@pytest.mark.parametrize(
    "token", ["", "a.b", "a.b.c.d", "@@@.e30.", "e30.e30.", "W10.e30.", "ünïcode.e30.x"]
)
async def test_malformed_tokens_are_refused(make: Make, token: str) -> None:
    assert (await refused(make(), token)).reason == "malformed"


async def test_rs256_token_is_refused_when_only_hs256_is_configured(guard: AuthGuard) -> None:
    cfg = config(jwks_url=None, algorithms=["HS256"], shared_secret={"value": "k" * 32})
    refusal = await refused(JwtValidator(cfg, guard), KEY.sign(claims()))
    assert refusal.reason == "alg_not_allowed"


# -- the key set ----------------------------------------------------------------------------


async def test_rotated_key_is_accepted_after_the_jwks_changes_with_one_refetch(
    make: Make, provider: FakeJwks, clock: Clock
) -> None:
    validator = make()
    await validator.validate(KEY.sign(claims()))
    assert provider.fetches == 1
    provider.publish(NEW_KEY, KEY)
    clock.now += 11  # past jwks_min_refetch_seconds
    identity = await validator.validate(NEW_KEY.sign(claims()))
    assert identity.principal == "orders-service"
    assert provider.fetches == 2


async def test_new_kid_within_the_refetch_interval_is_refused_without_a_fetch(
    make: Make, provider: FakeJwks, clock: Clock
) -> None:
    validator = make()
    await validator.validate(KEY.sign(claims()))
    provider.publish(NEW_KEY, KEY)
    clock.now += 5
    assert (await refused(validator, NEW_KEY.sign(claims()))).reason == "unknown_kid"
    assert provider.fetches == 1


async def test_100_tokens_with_random_kids_cost_one_fetch_per_interval(
    make: Make, provider: FakeJwks, clock: Clock
) -> None:
    validator = make()
    await validator.validate(KEY.sign(claims()))
    body = claims()

    async def attempt() -> str:
        # Refused before any signature check, so any signature will do.
        token = unsigned({"alg": "RS256", "kid": secrets.token_hex(8)}, body, b"s" * 256)
        try:
            await validator.validate(token)
        except AuthenticationFailed as exc:
            return exc.reason
        return "accepted"

    for _ in range(3):
        clock.now += 11
        before = provider.fetches
        reasons = await asyncio.gather(*(attempt() for _ in range(100)))
        assert set(reasons) == {"unknown_kid"}
        assert provider.fetches - before == 1
    # Within the interval: no fetch at all.
    reasons = await asyncio.gather(*(attempt() for _ in range(100)))
    assert provider.fetches == 4


async def test_keys_are_refreshed_in_the_background_after_the_refresh_interval(
    make: Make, provider: FakeJwks, clock: Clock
) -> None:
    validator = make()
    await validator.validate(KEY.sign(claims()))
    clock.now += 301
    await validator.validate(KEY.sign(claims()))  # served from the current keys
    await asyncio.sleep(0.05)
    assert provider.fetches == 2


async def test_failed_fetch_keeps_the_last_good_keys_and_is_counted(
    make: Make, provider: FakeJwks, clock: Clock
) -> None:
    validator = make()
    await validator.validate(KEY.sign(claims()))
    failed = metric("gateway_jwks_fetches_total", result="failed")
    provider.fail = True
    clock.now += 301
    await validator.validate(KEY.sign(claims()))
    await asyncio.sleep(0.05)
    assert metric("gateway_jwks_fetches_total", result="failed") == failed + 1
    assert (await validator.validate(KEY.sign(claims()))).principal == "orders-service"


async def test_invalid_jwks_document_keeps_the_last_good_keys(
    make: Make, provider: FakeJwks, clock: Clock
) -> None:
    validator = make()
    await validator.validate(KEY.sign(claims()))
    provider.document = b"<html>maintenance</html>"
    clock.now += 11
    await refused(validator, NEW_KEY.sign(claims()))
    assert provider.fetches == 2
    assert (await validator.validate(KEY.sign(claims()))).principal == "orders-service"


async def test_jwks_file_is_re_read_when_it_changes(guard: AuthGuard, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(KEY)))
    validator = JwtValidator(config(jwks_url=None, jwks_file=path), guard)
    await validator.validate(KEY.sign(claims()))
    path.write_text(json.dumps(jwks(NEW_KEY)))
    assert (await validator.validate(NEW_KEY.sign(claims()))).principal == "orders-service"
    assert (await refused(validator, KEY.sign(claims()))).reason == "unknown_kid"


def test_jwks_over_the_size_limit_is_refused() -> None:
    with pytest.raises(JwksUnavailable, match="larger"):
        parse_jwks(b" " * (MAX_JWKS_BYTES + 1))


def test_jwks_with_too_many_keys_is_refused() -> None:
    document = {"keys": [dict(KEY.public_jwk(), kid=str(i)) for i in range(MAX_JWKS_KEYS + 1)]}
    with pytest.raises(JwksUnavailable, match="keys"):
        parse_jwks(json.dumps(document).encode())


def test_jwks_leaves_out_encryption_keys_and_keys_without_kid() -> None:
    enc = dict(NEW_KEY.public_jwk(), use="enc")
    nameless = {k: v for k, v in KEY.public_jwk().items() if k != "kid"}
    document = {"keys": [KEY.public_jwk(), enc, nameless]}
    assert list(parse_jwks(json.dumps(document).encode())) == ["key-1"]


@pytest.mark.parametrize("raw", [b"[]", b"{}", b'{"keys": {}}', b'{"keys": [1]}', b"\xff"])
def test_jwks_of_the_wrong_shape_is_refused(raw: bytes) -> None:
    with pytest.raises(JwksUnavailable):
        parse_jwks(raw)


# -- the initial client response ------------------------------------------------------------


def test_client_response_with_token_authzid_and_extensions_parses() -> None:
    message = b"n,a=svc=2Cx,\x01auth=Bearer abc.def.ghi\x01traceId=42\x01\x01"
    response = parse_client_response(message)
    assert response.token == "abc.def.ghi"
    assert response.authzid == "svc,x"
    assert response.extensions == {"traceId": "42"}


def test_client_response_without_authzid_parses() -> None:
    assert parse_client_response(b"n,,\x01auth=Bearer t.t.t\x01\x01").token == "t.t.t"


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"\x01",
        b"n,,auth=Bearer t\x01\x01",
        b"p=tls-unique,,\x01auth=Bearer t\x01\x01",
        b"n,,\x01auth=Bearer t\x01",
        b"n,,\x01auth=Basic dXNlcjpwdw==\x01\x01",
        b"n,,\x01traceId=1\x01\x01",
        b"n,,\x01auth=Bearer t\x01auth=Bearer u\x01\x01",
        b"n,,\x01auth=Bearer t\x01bad key=1\x01\x01",
        b"n,,\x01auth=Bearer t\x01k=\x00\x01\x01",
        b"n,b=x,\x01auth=Bearer t\x01\x01",
        b"n,,\x01auth=Bearer \xff\x01\x01",
    ],
)
def test_malformed_client_response_is_refused(message: bytes) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        parse_client_response(message)
    assert caught.value.reason == "malformed"


def test_too_many_extensions_are_refused() -> None:
    extensions = "".join(
        f"k{chr(97 + i % 26)}{chr(97 + i // 26)}=1\x01" for i in range(MAX_EXTENSIONS + 1)
    )
    with pytest.raises(AuthenticationFailed) as caught:
        parse_client_response(f"n,,\x01auth=Bearer t\x01{extensions}\x01".encode())
    assert caught.value.reason == "malformed"


def test_oversized_client_response_is_refused() -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        parse_client_response(b"n,,\x01auth=Bearer " + b"a" * 20_000 + b"\x01\x01")
    assert caught.value.reason == "too_large"


CONTEXT = AuthContext(listener="l", peer="192.0.2.1:5000", address="192.0.2.1")


async def test_mechanism_verifies_the_bearer_token(make: Make) -> None:
    token = KEY.sign(claims())
    exchange = OAuthBearerMechanism(make()).start(CONTEXT)
    result = await exchange.step(f"n,a=orders-service,\x01auth=Bearer {token}\x01\x01".encode())
    assert isinstance(result, Verified)
    assert result.identity.principal == "orders-service"
    assert result.final == b""


async def test_mechanism_refuses_an_authzid_other_than_the_principal(make: Make) -> None:
    token = KEY.sign(claims())
    exchange = OAuthBearerMechanism(make()).start(CONTEXT)
    with pytest.raises(AuthenticationFailed) as caught:
        await exchange.step(f"n,a=admin,\x01auth=Bearer {token}\x01\x01".encode())
    assert caught.value.reason == "authzid_mismatch"


# -- through a real ClientConnection --------------------------------------------------------


def oauth_harness(tmp_path: Path, max_session: float = 3600) -> Harness:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(KEY)))
    overrides = {
        "listener": {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanisms": ["OAUTHBEARER"]},
        "identity": {
            "oauthbearer": {
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "jwks_file": str(path),
                "max_session_seconds": max_session,
            }
        },
    }
    return Harness(limits={"failed_authentication_delay_seconds": 0}, overrides=overrides)


def bearer(token: str) -> Any:
    return authenticate_request.SaslAuthenticateRequest(
        auth_bytes=f"n,,\x01auth=Bearer {token}\x01\x01".encode()
    )


async def test_session_lifetime_is_the_tokens_remaining_life(tmp_path: Path) -> None:
    async with oauth_harness(tmp_path) as h:
        h.client.send(handshake("OAUTHBEARER"), bearer(KEY.sign(claims(exp=int(time.time()) + 40))))
        answers = await written(h, 2)

        assert answers[1].body.error_code == ErrorCode.none
        assert 30 <= answers[1].body.session_lifetime.total_seconds() <= 40
        assert h.connection.session.identity is not None
        assert h.connection.session.identity.principal == "orders-service"


async def test_session_lifetime_is_capped_by_max_session_seconds(tmp_path: Path) -> None:
    async with oauth_harness(tmp_path, max_session=5) as h:
        h.client.send(handshake("OAUTHBEARER"), bearer(KEY.sign(claims())))
        answers = await written(h, 2)

        assert 4 <= answers[1].body.session_lifetime.total_seconds() <= 5


async def test_refused_token_gets_a_generic_answer_and_its_reason_counted(tmp_path: Path) -> None:
    labels = {"listener": "harness", "mechanism": "OAUTHBEARER", "reason": "alg_not_allowed"}
    before = sample("gateway_authentication_failures_total", **labels)
    token = unsigned({"alg": "none"}, claims())
    async with oauth_harness(tmp_path) as h:
        h.client.send(handshake("OAUTHBEARER"), bearer(token))
        answers = await written(h, 2)

        await eventually(lambda: not h.is_open, "the connection to close")
        assert answers[1].body.error_code == ErrorCode.sasl_authentication_failed
        assert answers[1].body.error_message == "Authentication failed"
    assert sample("gateway_authentication_failures_total", **labels) == before + 1


async def test_reauthentication_with_another_principals_token_is_refused(tmp_path: Path) -> None:
    async with oauth_harness(tmp_path) as h:
        h.client.send(handshake("OAUTHBEARER"), bearer(KEY.sign(claims())))
        h.client.send(handshake("OAUTHBEARER"), bearer(KEY.sign(claims(sub="admin"))))
        answers = await written(h, 4)

        assert answers[1].body.error_code == ErrorCode.none
        assert answers[3].body.error_code == ErrorCode.sasl_authentication_failed
        await eventually(lambda: not h.is_open, "the connection to close")


async def test_closing_abandons_a_key_read_in_progress(make: Make, clock: Clock) -> None:
    validator = make()
    await validator.validate(KEY.sign(claims()))
    clock.now += 301
    await validator.validate(KEY.sign(claims()))  # starts a background read
    assert validator.jwks is not None
    running = validator.jwks._running
    assert running is not None
    validator.close()
    with pytest.raises(asyncio.CancelledError):
        await running


async def test_rsa_key_shorter_than_2048_bits_is_refused(guard: AuthGuard, clock: Clock) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    weak = SigningKey("weak", rsa.generate_private_key(65537, 1024))
    source = JwksSource(config(), fetch=FakeJwks(weak).fetch, clock=clock)
    validator = JwtValidator(config(), guard, None, source)
    assert (await refused(validator, weak.sign(claims()))).reason == "bad_key"


async def test_100_first_tokens_at_once_share_one_fetch(make: Make, provider: FakeJwks) -> None:
    validator = make()
    token = KEY.sign(claims())
    identities = await asyncio.gather(*(validator.validate(token) for _ in range(100)))
    assert {i.principal for i in identities} == {"orders-service"}
    assert provider.fetches == 1


async def test_token_claims_are_kept_as_text_pairs_for_policies(make: Make) -> None:
    token = KEY.sign(claims(department="payments", scopes=["read", "write"], admin=False))
    pairs = (await make().validate(token)).claims
    assert ("department", "payments") in pairs
    assert {("scopes", "read"), ("scopes", "write")} <= set(pairs)
    assert ("admin", "false") in pairs
    assert ("sub", "orders-service") in pairs
