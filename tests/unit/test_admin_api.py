"""The admin API's authentication and roles, served by aiohttp's test server.

Static tokens are configured by their SHA-256; JWTs go through a fake validator with
the real one's interface (``validate(token, address) -> Identity``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from gateway.admin.auth import AdminAuth, AdminDenied, StaticTokens, bearer_token
from gateway.admin.http import make_app
from gateway.admin.tls import AdminTls
from gateway.audit import keys, read_events
from gateway.audit.log import AuditLog
from gateway.audit.recorder import Recorder, StageSettings
from gateway.config import AdminConfig, AuditConfig, ListenerTlsConfig
from gateway.errors import AuthenticationFailed, ConfigError, GatewayError
from gateway.identity import Identity, TlsDetails
from gateway.identity.registry import Authenticator
from gateway.pipeline.policies import PolicyStore
from gateway.protocol.connection import ServerProtocol
from gateway.session import ClientSession, Services
from tests.certs import TestAuthority
from tests.unit.harness import ScriptedPool, harness_config

OPERATOR_TOKEN = "op-token-3c1f9a7e52d84b06a1e2"  # noqa: S105 - test tokens
VIEWER_TOKEN = "viewer-token-77d0e2b9a4c1f35e"  # noqa: S105
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"  # noqa: S105
BAD_JWT = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJldmUifQ.bm8tc2lnbmF0dXJl"  # noqa: S105
SECRETS = (OPERATOR_TOKEN, VIEWER_TOKEN, JWT, BAD_JWT)


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _admin(**changes: Any) -> dict[str, Any]:
    return {
        "tokens": [
            {"name": "sre-bot", "token_sha256": _sha256(OPERATOR_TOKEN), "groups": ["sre"]},
            {"name": "viewer", "token_sha256": _sha256(VIEWER_TOKEN), "groups": ["staff"]},
        ],
        "roles": {"operator": ["sre"], "auditor": ["audit"]},
        **changes,
    }


UNVERIFIABLE_JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJib2IifQ.a2V5cy1taXNzaW5n"  # noqa: S105


class JwksUnreadable(GatewayError):
    """What a validator raises when it cannot check a token at all."""


async def fake_jwt(token: str, address: str) -> Identity:
    """Accepts ``JWT`` as alice (groups audit), refuses everything else."""
    if token == UNVERIFIABLE_JWT:
        raise JwksUnreadable("the provider's keys could not be read")
    if token != JWT:
        raise AuthenticationFailed("signature does not verify", reason="bad_signature")
    return Identity("alice", "OAUTHBEARER", groups=("audit",), expires_at=2_000_000_000.0)


Client = TestClient[Any, Any]
Jwt = Callable[[str, str], Awaitable[Identity]]


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., Awaitable[tuple[Client, Services]]]]:
    """Starts admin apps on test servers (config from ``_admin()`` unless given)."""
    opened: list[tuple[Client, ScriptedPool]] = []

    async def make(
        admin: dict[str, Any] | None = None,
        jwt: Jwt | None = None,
        policy_dir: Path | None = None,
        audit: dict[str, Any] | None = None,
        clusters: dict[str, Any] | None = None,
        **limits: Any,
    ) -> tuple[Client, Services]:
        limits.setdefault("failed_authentication_delay_seconds", 0)
        overrides: dict[str, Any] = {"admin": admin or _admin()}
        if audit is not None:
            overrides["audit"] = audit
        if clusters is not None:
            overrides["clusters"] = clusters
        config = harness_config(overrides, **limits)
        pool = ScriptedPool(config)
        services = Services(config, pool, Authenticator(config), policies=PolicyStore(policy_dir))
        client: Client = TestClient(TestServer(make_app(services, jwt)))
        await client.start_server()
        opened.append((client, pool))
        return client, services

    yield make
    for client, pool in opened:
        await client.close()
        await pool.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _count(endpoint: str, result: str) -> float:
    labels = {"endpoint": endpoint, "result": result}
    return REGISTRY.get_sample_value("gateway_admin_requests_total", labels) or 0.0


async def test_no_token_gets_401_with_a_bearer_challenge(make_client: Any) -> None:
    client, _ = await make_client()

    response = await client.get("/whoami")

    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    assert await response.json() == {"error": "a bearer token is required"}


async def test_wrong_token_gets_401_without_echoing_it(make_client: Any) -> None:
    client, _ = await make_client()
    wrong = "not-a-configured-token-5e2a"

    response = await client.get("/whoami", headers=_bearer(wrong))
    basic = await client.get("/whoami", headers={"Authorization": f"Basic {OPERATOR_TOKEN}"})

    assert response.status == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert wrong not in await response.text()
    assert basic.status == 401
    assert OPERATOR_TOKEN not in await basic.text()


async def test_token_without_the_role_gets_403(make_client: Any) -> None:
    client, _ = await make_client()
    before = _count("/sessions", "forbidden")

    response = await client.get("/sessions", headers=_bearer(VIEWER_TOKEN))

    assert response.status == 403
    assert "operator" in (await response.json())["error"]
    assert _count("/sessions", "forbidden") == before + 1


async def test_token_with_the_role_gets_200(make_client: Any) -> None:
    client, _ = await make_client()
    before = _count("/sessions", "ok")

    response = await client.get("/sessions", headers=_bearer(OPERATOR_TOKEN))

    assert response.status == 200
    assert await response.json() == {"sessions": []}
    assert _count("/sessions", "ok") == before + 1


async def test_clusters_shows_the_active_clusters_health_to_operators(make_client: Any) -> None:
    client, services = await make_client()
    services.pool.health.checked({2: "timed out"})

    response = await client.get("/clusters", headers=_bearer(OPERATOR_TOKEN))
    refused = await client.get("/clusters", headers=_bearer(VIEWER_TOKEN))

    assert response.status == 200
    body = await response.json()
    assert body["active"] == "harness"
    (shown,) = body["clusters"]
    assert (shown["name"], shown["role"], shown["state"]) == ("harness", "active", "degraded")
    assert shown["reason"] == "broker 2: timed out"
    assert (shown["down_after_failures"], shown["up_after_successes"]) == (1, 1)
    assert shown["canary_topic"] is None
    assert refused.status == 403


async def test_whoami_names_the_static_token_caller_and_its_roles(make_client: Any) -> None:
    client, _ = await make_client()

    response = await client.get("/whoami", headers=_bearer(OPERATOR_TOKEN))
    text = await response.text()

    assert response.status == 200
    assert await response.json() == {
        "principal": "sre-bot",
        "groups": ["sre"],
        "roles": ["operator"],
        "authenticated_by": "static_token",
        "expires_at": None,
    }
    assert OPERATOR_TOKEN not in text
    assert _sha256(OPERATOR_TOKEN) not in text


async def test_a_valid_jwt_authenticates_through_the_validator(make_client: Any) -> None:
    client, _ = await make_client(jwt=fake_jwt)

    who = await client.get("/whoami", headers=_bearer(JWT))
    listed = await client.get("/sessions", headers=_bearer(JWT))
    refused = await client.get("/whoami", headers=_bearer(BAD_JWT))
    unverifiable = await client.get("/whoami", headers=_bearer(UNVERIFIABLE_JWT))

    assert who.status == 200
    body = await who.json()
    assert (body["principal"], body["roles"], body["authenticated_by"]) == (
        "alice",
        ["auditor"],
        "jwt",
    )
    assert JWT not in await who.text()
    assert listed.status == 200
    assert refused.status == 401
    assert await refused.json() == {"error": "invalid token"}
    assert unverifiable.status == 401


async def test_jwts_are_refused_when_accept_oauthbearer_is_off(make_client: Any) -> None:
    client, _ = await make_client(_admin(accept_oauthbearer=False), jwt=fake_jwt)

    response = await client.get("/whoami", headers=_bearer(JWT))

    assert response.status == 401


async def test_default_open_endpoints_need_no_token(make_client: Any) -> None:
    client, _ = await make_client()

    health = await client.get("/healthz")
    metrics = await client.get("/metrics")

    assert health.status == 200
    assert metrics.status == 200


async def test_endpoints_left_out_of_open_endpoints_need_a_token(make_client: Any) -> None:
    client, _ = await make_client(_admin(open_endpoints=["/healthz"]))

    health = await client.get("/healthz")
    anonymous = await client.get("/metrics")
    with_token = await client.get("/metrics", headers=_bearer(VIEWER_TOKEN))

    assert health.status == 200
    assert anonymous.status == 401
    assert with_token.status == 200


async def test_unknown_paths_need_a_token_before_they_are_found_missing(
    make_client: Any,
) -> None:
    client, _ = await make_client()
    before = _count("unmatched", "unauthorized")

    anonymous = await client.get("/secret-path-41d2")
    with_token = await client.get("/secret-path-41d2", headers=_bearer(VIEWER_TOKEN))
    wrong_method = await client.post("/whoami", headers=_bearer(VIEWER_TOKEN))

    assert anonymous.status == 401
    assert with_token.status == 404
    assert wrong_method.status == 405
    # Counted under a fixed template, never the raw path.
    assert _count("unmatched", "unauthorized") == before + 1
    assert _count("/secret-path-41d2", "not_found") == 0


async def test_repeated_failures_from_an_address_are_rate_limited(make_client: Any) -> None:
    client, _ = await make_client(failed_authentications_per_address=2)

    failures = [(await client.get("/whoami", headers=_bearer(f"guess-{n}"))).status for n in (1, 2)]
    limited = await client.get("/whoami", headers=_bearer(OPERATOR_TOKEN))

    assert failures == [401, 401]
    assert limited.status == 429


async def test_an_oversized_body_is_refused_before_authentication(make_client: Any) -> None:
    client, _ = await make_client()

    response = await client.post("/whoami", data=b"x" * (65 * 1024))

    assert response.status == 413


def _session(services: Services, peer: str, identity: Identity | None) -> ClientSession:
    listener = services.config.listeners[0]
    session = ClientSession(
        services=services,
        listener=listener,
        peer=peer,
        upstream=services.pool.session(),
        protocol=ServerProtocol(lambda: services.versions, 1024, 1024),
        tls=TlsDetails("TLSv1.3", "TLS_AES_128_GCM_SHA256", "CN=billing,O=example"),
    )
    if identity is not None:
        session.authenticated(identity, lifetime=600)
    return session


async def test_sessions_lists_the_open_connections_with_their_identity(
    make_client: Any,
) -> None:
    client, services = await make_client()
    alice = Identity("alice", "PLAIN", groups=("payments",))
    first = _session(services, "192.0.2.1:4001", alice)
    second = _session(services, "192.0.2.2:4002", alice)
    services.sessions.add(first)
    services.sessions.add(second)
    services.sessions.remove(second)

    response = await client.get("/sessions", headers=_bearer(OPERATOR_TOKEN))

    [listed] = (await response.json())["sessions"]
    assert listed["principal"] == "alice"
    assert listed["groups"] == ["payments"]
    assert listed["mechanism"] == "PLAIN"
    assert listed["listener"] == "harness"
    assert listed["peer"] == "192.0.2.1:4001"
    assert listed["tls"] == {
        "version": "TLSv1.3",
        "cipher": "TLS_AES_128_GCM_SHA256",
        "client_subject": "CN=billing,O=example",
    }
    assert listed["connected_since"] is not None
    assert listed["session_expires_at"] is not None
    assert len(services.sessions) == 1


async def test_no_token_appears_in_any_response_or_log(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, _ = await make_client(jwt=fake_jwt)
    texts = []
    for token in SECRETS + ("unknown-token-9f0c",):
        for path in ("/whoami", "/sessions", "/nowhere", "/metrics"):
            response = await client.get(path, headers=_bearer(token))
            texts.append(await response.text())
            texts.append(str(response.headers))

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "refused GET /whoami" in logged
    for secret in SECRETS + ("unknown-token-9f0c",):
        assert all(secret not in text for text in texts), secret
        assert secret not in logged, secret


def test_bearer_token_refuses_other_schemes_and_oversized_tokens() -> None:
    with pytest.raises(AdminDenied) as basic:
        bearer_token("Basic dXNlcjpwYXNz")
    with pytest.raises(AdminDenied) as huge:
        bearer_token("Bearer " + "a" * 9000)

    assert bearer_token("bearer  abc ") == "abc"
    assert (basic.value.status, huge.value.status) == (401, 401)


def test_static_tokens_match_only_their_own_hash() -> None:
    tokens = StaticTokens(AdminConfig.model_validate(_admin()))

    assert tokens.match(OPERATOR_TOKEN) == ("sre-bot", ("sre",))
    assert tokens.match(OPERATOR_TOKEN + "x") is None
    assert tokens.match(_sha256(OPERATOR_TOKEN)) is None


async def test_a_refused_jwt_reports_the_validators_reason() -> None:
    auth = AdminAuth(AdminConfig.model_validate(_admin()), fake_jwt)

    with pytest.raises(AdminDenied) as refused:
        await auth.authenticate(f"Bearer {BAD_JWT}", "192.0.2.9")

    assert refused.value.reason == "jwt_bad_signature"
    assert BAD_JWT not in str(refused.value)


def test_admin_tls_names_a_missing_certificate_file(tmp_path: Path) -> None:
    config = ListenerTlsConfig(cert_file=tmp_path / "no.pem", key_file=tmp_path / "no.key")

    with pytest.raises(ConfigError, match="no.pem"):
        AdminTls(config)


def _handshake(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
    """A TLS handshake between the two contexts over memory buffers; SSLError if refused."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_out, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, client_out, server_hostname="127.0.0.1")
    server = server_context.wrap_bio(to_server, server_out, server_side=True)
    done: set[str] = set()
    for _ in range(10):
        for name, side in (("client", client), ("server", server)):
            if name not in done:
                with contextlib.suppress(ssl.SSLWantReadError):
                    side.do_handshake()
                    done.add(name)
        to_server.write(client_out.read())
        to_client.write(server_out.read())
        if done == {"client", "server"}:
            return
    raise AssertionError("the handshake did not finish")


def test_admin_tls_serves_a_renewed_certificate_on_the_context_it_started_with(
    tmp_path: Path,
) -> None:
    old_ca = TestAuthority(tmp_path, "old CA")
    new_ca = TestAuthority(tmp_path, "new CA")
    cert, key = old_ca.issue("127.0.0.1", "admin")
    tls = AdminTls(ListenerTlsConfig(cert_file=cert, key_file=key))

    _handshake(tls.served, old_ca.trusting())
    new_ca.issue("127.0.0.1", "admin")
    assert tls.files.reload_if_changed()

    _handshake(tls.served, new_ca.trusting())
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tls.served, old_ca.trusting())


# -- /policy and /policy/reload ---------------------------------------------------------

AUDITOR_TOKEN = "auditor-token-0b9e4d2c6a8f13"  # noqa: S105
POLICY = b"""\
rules:
  - id: read-orders
    effect: allow
    subjects: {principals: [alice]}
    resources:
      - {type: topic, literal: orders}
    operations: [read]
"""


def _policy_admin() -> dict[str, Any]:
    admin = _admin()
    admin["tokens"].append(
        {"name": "auditor", "token_sha256": _sha256(AUDITOR_TOKEN), "groups": ["audit"]}
    )
    return admin


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "apps.yaml").write_bytes(POLICY)
    return directory


@pytest.mark.parametrize(
    ("method", "path", "token", "status"),
    [
        ("GET", "/policy", None, 401),
        ("GET", "/policy", VIEWER_TOKEN, 403),
        ("GET", "/policy", AUDITOR_TOKEN, 200),
        ("GET", "/policy", OPERATOR_TOKEN, 200),
        ("POST", "/policy/reload", None, 401),
        ("POST", "/policy/reload", VIEWER_TOKEN, 403),
        ("POST", "/policy/reload", AUDITOR_TOKEN, 403),
        ("POST", "/policy/reload", OPERATOR_TOKEN, 200),
        ("GET", "/policy/reload", OPERATOR_TOKEN, 405),
        ("POST", "/policy", OPERATOR_TOKEN, 405),
    ],
)
async def test_policy_endpoints_answer_by_token_and_role(
    make_client: Any, policy_dir: Path, method: str, path: str, token: str | None, status: int
) -> None:
    client, _ = await make_client(_policy_admin(), policy_dir=policy_dir)

    response = await client.request(method, path, headers=_bearer(token) if token else {})

    assert response.status == status, await response.text()


async def test_get_policy_describes_the_policy_in_force(make_client: Any, policy_dir: Path) -> None:
    client, services = await make_client(policy_dir=policy_dir)

    body = await (await client.get("/policy", headers=_bearer(OPERATOR_TOKEN))).json()

    assert set(body) == {"enforced", "version", "directory", "files", "rules", "last_reload"}
    assert body["enforced"] is True
    assert body["version"] == services.policies.version
    assert (body["directory"], body["files"], body["rules"]) == (
        str(policy_dir),
        ["apps.yaml"],
        1,
    )
    assert body["last_reload"]["result"] == "success"
    assert body["last_reload"]["error"] is None


async def test_get_policy_without_a_policy_says_nothing_is_enforced(make_client: Any) -> None:
    client, _ = await make_client()

    body = await (await client.get("/policy", headers=_bearer(OPERATOR_TOKEN))).json()

    assert body["enforced"] is False
    assert body["version"] is None and body["last_reload"] is None


async def test_post_reload_without_a_policy_directory_gets_409(make_client: Any) -> None:
    client, _ = await make_client()

    response = await client.post("/policy/reload", headers=_bearer(OPERATOR_TOKEN))

    assert response.status == 409


async def test_post_reload_puts_a_valid_change_in_force(make_client: Any, policy_dir: Path) -> None:
    client, services = await make_client(policy_dir=policy_dir)
    old = services.policies.version
    (policy_dir / "more.yaml").write_bytes(POLICY.replace(b"read-orders", b"also"))

    response = await client.post("/policy/reload", headers=_bearer(OPERATOR_TOKEN))
    body = await response.json()

    assert response.status == 200
    assert body["version"] == services.policies.version != old
    assert body["files"] == ["apps.yaml", "more.yaml"] and body["rules"] == 2
    assert body["last_reload"]["result"] == "success"


async def test_post_reload_of_unchanged_files_answers_200_unchanged(
    make_client: Any, policy_dir: Path
) -> None:
    client, services = await make_client(policy_dir=policy_dir)
    version = services.policies.version

    response = await client.post("/policy/reload", headers=_bearer(OPERATOR_TOKEN))
    body = await response.json()

    assert response.status == 200
    assert body["version"] == version
    assert body["last_reload"]["result"] == "unchanged"


async def test_post_reload_of_an_invalid_file_gets_422_and_keeps_the_old_policy(
    make_client: Any, policy_dir: Path
) -> None:
    client, services = await make_client(policy_dir=policy_dir)
    version = services.policies.version
    (policy_dir / "broken.yaml").write_bytes(b"rules:\n  - id: bad\n    effect: perhaps\n")

    response = await client.post("/policy/reload", headers=_bearer(OPERATOR_TOKEN))
    body = await response.json()
    after = await (await client.get("/policy", headers=_bearer(OPERATOR_TOKEN))).json()

    assert response.status == 422
    assert body["version"] == version == services.policies.version
    assert version in body["error"]
    assert body["last_reload"]["result"] == "failure"
    assert any("broken.yaml:3: rules[0].effect" in line for line in body["last_reload"]["error"])
    assert after["last_reload"] == body["last_reload"]
    assert _count("/policy/reload", "invalid") >= 1


async def test_post_reload_with_an_oversized_body_gets_413(
    make_client: Any, policy_dir: Path
) -> None:
    client, _ = await make_client(policy_dir=policy_dir)

    response = await client.post(
        "/policy/reload", data=b"x" * (65 * 1024), headers=_bearer(OPERATOR_TOKEN)
    )

    assert response.status == 413


@pytest.mark.parametrize(("fail_open", "status"), [(False, 503), (True, 200)])
async def test_readyz_is_unavailable_while_the_audit_log_cannot_write_unless_fail_open(
    make_client: Any, tmp_path: Path, fail_open: bool, status: int
) -> None:
    client, services = await make_client()
    services.pool.health.checked({})  # the cluster is up: only the audit log decides
    assert (await client.get("/readyz")).status == 200
    audit_config = AuditConfig(dir=tmp_path, key_file=tmp_path / "key", fail_open=fail_open)
    audit_log = AuditLog(audit_config)
    services.audit = Recorder(audit_log, StageSettings(fail_open=fail_open))
    # The state the writer thread leaves after a failed write (tested in test_audit_log).
    audit_log.healthy = False
    audit_log.unhealthy_reason = "ENOSPC: No space left on device"

    answer = await client.get("/readyz")

    assert answer.status == status
    body = await answer.json()
    assert body["audit"] == {"healthy": False, "reason": "ENOSPC: No space left on device"}


@pytest.fixture
async def audit_log(tmp_path: Path) -> AsyncIterator[AuditLog]:
    key_file = tmp_path / "audit.key"
    keys.generate(key_file)
    log = AuditLog(AuditConfig(dir=tmp_path / "audit", key_file=key_file, instance_id="adm"))
    await log.start()
    yield log
    await log.close()


async def _audited_client(
    make_client: Any, audit_log: AuditLog, policy_dir: Path | None = None
) -> tuple[Any, Services]:
    client, services = await make_client(
        _policy_admin(),
        policy_dir=policy_dir,
        audit={"dir": str(audit_log.config.dir), "key_file": str(audit_log.config.key_file)},
    )
    services.audit = Recorder(audit_log, StageSettings())
    services.audit.watch_policy(services.policies)
    return client, services


def _events(audit_log: AuditLog, kind: str) -> list[dict[str, Any]]:
    return [e for e in read_events(audit_log.config.dir) if e["type"] == kind]


async def test_admin_calls_are_recorded_with_their_caller_and_open_endpoints_are_not(
    make_client: Any, audit_log: AuditLog, policy_dir: Path
) -> None:
    client, _ = await _audited_client(make_client, audit_log, policy_dir)
    assert (await client.get("/sessions", headers=_bearer(OPERATOR_TOKEN))).status == 200
    assert (await client.get("/policy?verbose=1")).status == 401
    assert (await client.get("/policy", headers=_bearer(VIEWER_TOKEN))).status == 403
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/metrics")).status == 200

    recorded = [
        (e["principal"], e["method"], e["path"], e["status"])
        for e in _events(audit_log, "admin_action")
    ]
    assert recorded == [
        ("sre-bot", "GET", "/sessions", 200),
        (None, "GET", "/policy", 401),
        ("viewer", "GET", "/policy", 403),
    ]
    log_bytes = b"".join(p.read_bytes() for p in audit_log.config.dir.iterdir())
    assert OPERATOR_TOKEN.encode() not in log_bytes and VIEWER_TOKEN.encode() not in log_bytes


async def test_an_admin_reload_records_a_policy_reload_event_with_who_asked(
    make_client: Any, audit_log: AuditLog, policy_dir: Path
) -> None:
    client, services = await _audited_client(make_client, audit_log, policy_dir)
    old = services.policies.version
    (policy_dir / "apps.yaml").write_bytes(POLICY.replace(b"read-orders", b"read-orders-2"))
    assert (await client.post("/policy/reload", headers=_bearer(OPERATOR_TOKEN))).status == 200
    (policy_dir / "apps.yaml").write_bytes(b"rules: [{id: broken}]\n")
    assert (await client.post("/policy/reload", headers=_bearer(OPERATOR_TOKEN))).status == 422
    await services.audit.drain()  # type: ignore[union-attr]

    applied, rejected = _events(audit_log, "policy_reload")
    assert (applied["result"], applied["trigger"], applied["by"]) == ("applied", "admin", "sre-bot")
    assert applied["old_version"] == old and applied["new_version"] != old
    assert rejected["result"] == "rejected" and rejected["errors"]
    assert rejected["new_version"] == applied["new_version"]  # the old set stays in force


async def test_a_state_changing_admin_call_is_refused_while_the_audit_log_cannot_write(
    make_client: Any, audit_log: AuditLog, policy_dir: Path
) -> None:
    client, services = await _audited_client(make_client, audit_log, policy_dir)
    before = services.policies.last_reload
    audit_log.healthy = False  # as the writer thread leaves it after a failed write
    audit_log.unhealthy_reason = "EIO: Input/output error"

    response = await client.post("/policy/reload", headers=_bearer(OPERATOR_TOKEN))

    assert response.status == 503
    assert services.policies.last_reload is before  # nothing was reloaded
    audit_log.healthy, audit_log.unhealthy_reason = True, None


async def test_audit_events_are_read_by_filter_and_page_by_auditors_only(
    make_client: Any, audit_log: AuditLog, policy_dir: Path
) -> None:
    client, _ = await _audited_client(make_client, audit_log, policy_dir)
    for _ in range(3):
        assert (await client.get("/sessions", headers=_bearer(OPERATOR_TOKEN))).status == 200
    auditor = _bearer(AUDITOR_TOKEN)

    first = await (
        await client.get(
            "/audit/events?type=admin_action&principal=sre-bot&limit=2", headers=auditor
        )
    ).json()
    assert [e["path"] for e in first["events"]] == ["/sessions", "/sessions"]
    assert first["next_cursor"] is not None
    rest = await (
        await client.get(
            "/audit/events",
            params={"type": "admin_action", "principal": "sre-bot", "cursor": first["next_cursor"]},
            headers=auditor,
        )
    ).json()
    assert [e["path"] for e in rest["events"]] == ["/sessions"]
    assert rest["next_cursor"] is None
    seqs = [e["seq"] for e in first["events"] + rest["events"]]
    assert seqs == sorted(set(seqs))
    # An operator may see sessions, not the audit trail.
    assert (await client.get("/audit/events", headers=_bearer(OPERATOR_TOKEN))).status == 403


@pytest.mark.parametrize(
    ("query_string", "named"),
    [
        ("from=yesterday", "from"),
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("cursor=x", "cursor"),
    ],
)
async def test_a_bad_audit_query_parameter_is_named_in_a_400(
    make_client: Any, audit_log: AuditLog, policy_dir: Path, query_string: str, named: str
) -> None:
    client, _ = await _audited_client(make_client, audit_log, policy_dir)
    response = await client.get(f"/audit/events?{query_string}", headers=_bearer(AUDITOR_TOKEN))
    assert response.status == 400
    assert (await response.json())["error"].startswith(named)


async def test_an_audit_session_is_replayed_or_answered_400_or_404(
    make_client: Any, audit_log: AuditLog, policy_dir: Path
) -> None:
    client, _ = await _audited_client(make_client, audit_log, policy_dir)
    auditor = _bearer(AUDITOR_TOKEN)
    connection = "ab" * 16
    await audit_log.append(
        {"v": 1, "type": "connection_opened", "time": 1.0, "connection": connection}
    )
    await audit_log.append(
        {"v": 1, "type": "connection_closed", "time": 2.0, "connection": connection}
    )

    listing = await (await client.get("/audit/sessions", headers=auditor)).json()
    assert [s["connection"] for s in listing["sessions"]] == [connection]
    replay = await (await client.get(f"/audit/sessions/{connection}", headers=auditor)).json()
    assert [e["type"] for e in replay["events"]] == ["connection_opened", "connection_closed"]
    assert (await client.get("/audit/sessions/nope", headers=auditor)).status == 400
    assert (await client.get(f"/audit/sessions/{'cd' * 16}", headers=auditor)).status == 404


async def test_audit_endpoints_answer_404_when_audit_is_off(make_client: Any) -> None:
    client, _ = await make_client(_policy_admin())
    response = await client.get("/audit/events", headers=_bearer(AUDITOR_TOKEN))
    assert response.status == 404
    assert "audit is not configured" in (await response.json())["error"]


# -- /failover/drill ----------------------------------------------------------------------

# Nothing listens on port 1: reading either cluster fails at once.
UNREACHABLE = {
    "primary": {"bootstrap_servers": ["127.0.0.1:1"], "health": {"canary_topic": None}},
    "secondary": {"bootstrap_servers": ["127.0.0.1:1"], "health": {"canary_topic": None}},
}


async def test_a_drill_dry_run_needs_a_secondary_cluster(make_client: Any) -> None:
    client, _ = await make_client()
    response = await client.post(
        "/failover/drill",
        json={"to": "secondary", "dry_run": True},
        headers=_bearer(OPERATOR_TOKEN),
    )
    assert response.status == 409
    assert (await response.json())["error"] == "no clusters.secondary is configured"


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"not json", 400, "body: a JSON object"),
        (b"[1, 2]", 400, "body: a JSON object"),
        (b'{"to": "primary", "dry_run": true}', 400, 'to: "secondary"'),
        (b'{"to": "secondary"}', 501, "only a dry run is built"),
        (b'{"to": "secondary", "dry_run": false}', 501, "only a dry run is built"),
        (b'{"to": "secondary", "dry_run": true}', 502, "could not be read (KafkaConnectionError)"),
    ],
)
async def test_a_drill_is_refused_unless_it_is_a_dry_run_of_a_move_to_the_secondary(
    make_client: Any, body: bytes, status: int, says: str
) -> None:
    client, _ = await make_client(clusters=UNREACHABLE)
    response = await client.post(
        "/failover/drill",
        data=body,
        headers={**_bearer(OPERATOR_TOKEN), "Content-Type": "application/json"},
    )
    assert response.status == status
    error = (await response.json())["error"]
    assert says in error
    assert "127.0.0.1" not in error


@pytest.mark.parametrize(("token", "status"), [(None, 401), (VIEWER_TOKEN, 403)])
async def test_a_drill_dry_run_is_for_operators(
    make_client: Any, token: str | None, status: int
) -> None:
    client, _ = await make_client(clusters=UNREACHABLE)
    response = await client.post(
        "/failover/drill",
        json={"to": "secondary", "dry_run": True},
        headers=_bearer(token) if token else {},
    )
    assert response.status == status
