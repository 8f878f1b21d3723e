"""SCRAM-SHA-256 and SCRAM-SHA-512 logins at the gateway with real clients (Kafka's
Java tools, confluent-kafka, kcat), refusals counted by reason, and service accounts
added or disabled in the accounts file while the gateway runs."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from gateway import dev
from gateway.identity.scram import ScramName, format_credential, make_credential
from tests.integration.clients import (
    ClientError,
    Endpoint,
    Record,
    aconsume,
    acreate_topic,
    aproduce,
    unique_topic,
)
from tests.integration.conftest import GatewayUnderTest, SessionLog, running_gateway

pytestmark = pytest.mark.integration

MECHANISMS: tuple[ScramName, ...] = ("SCRAM-SHA-256", "SCRAM-SHA-512")
SCRAM_CLIENTS = ("java", "confluent", "kcat")
SCRAM_USER = "it-scram"
SCRAM_PASSWORD = "it-scram-password-7f3a"  # noqa: S105 - a gateway test user
SERVICE_PASSWORD = "it-service-password-c41d"  # noqa: S105 - a gateway test user
WRONG_PASSWORD = "it-wrong-password-9b2e"  # noqa: S105 - deliberately wrong
RELOAD_SECONDS = 0.2


def credentials(password: str) -> dict[str, str]:
    return {
        "scram_sha_256": format_credential(make_credential("SCRAM-SHA-256", password)),
        "scram_sha_512": format_credential(make_credential("SCRAM-SHA-512", password)),
    }


USER_CREDENTIALS = credentials(SCRAM_PASSWORD)
SERVICE_CREDENTIALS = credentials(SERVICE_PASSWORD)


@dataclass(frozen=True)
class ScramGateway:
    running: GatewayUnderTest
    accounts_file: Path

    def endpoint(
        self, mechanism: str, user: str = SCRAM_USER, password: str = SCRAM_PASSWORD
    ) -> Endpoint:
        return dataclasses.replace(
            self.running.sasl, sasl_mechanism=mechanism, username=user, password=password
        )


def write_accounts(path: Path, *accounts: str) -> None:
    """Replace the accounts file in one step, as a deployment tool would."""
    text = "accounts:\n" + "".join(accounts) if accounts else "accounts: []\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def service_account(name: str, *, disabled: bool = False) -> str:
    return (
        f"  - name: {name}\n"
        f"    scram_sha_256: '{SERVICE_CREDENTIALS['scram_sha_256']}'\n"
        f"    scram_sha_512: '{SERVICE_CREDENTIALS['scram_sha_512']}'\n"
        f"    groups: [machines]\n"
        f"    disabled: {str(disabled).lower()}\n"
    )


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def successes(mechanism: str) -> float:
    return sample(
        "gateway_authentications_total", listener="sasl", mechanism=mechanism, result="success"
    )


def failures(mechanism: str, reason: str) -> float:
    return sample(
        "gateway_authentication_failures_total", listener="sasl", mechanism=mechanism, reason=reason
    )


@pytest.fixture(scope="module")
async def scram_gateway(
    primary: dev.ClusterInfo, session_log: SessionLog, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ScramGateway]:
    accounts_file = tmp_path_factory.mktemp("scram") / "service-accounts.yaml"
    write_accounts(accounts_file)
    async with running_gateway(
        primary,
        users=[{"name": SCRAM_USER, "groups": ["it"], **USER_CREDENTIALS}],
        identity={
            "service_accounts_file": str(accounts_file),
            "reload_interval_seconds": RELOAD_SECONDS,
        },
        # Every client here connects from 127.0.0.1: the wrong-password tests must not
        # use up that address's failures for the tests that log in correctly.
        failed_authentications_per_address=100_000,
        failed_authentication_delay_seconds=0.2,
    ) as running:
        yield ScramGateway(running, accounts_file)


async def round_trip(client: str, ep: Endpoint, gw: ScramGateway) -> None:
    topic = unique_topic("scram")
    await acreate_topic(gw.running.plain, topic, 1)
    records = [Record(0, -1, f"k{i}".encode(), f"v{i}".encode()) for i in range(10)]

    await aproduce(client, ep, topic, records, timeout=60)
    consumed = await aconsume(client, ep, topic, 1, len(records), timeout=60)

    assert [(r.key, r.value) for r in consumed] == [(r.key, r.value) for r in records]


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("client", SCRAM_CLIENTS)
async def test_client_produces_and_consumes_with_scram(
    scram_gateway: ScramGateway, client: str, mechanism: str
) -> None:
    before = successes(mechanism)

    await round_trip(client, scram_gateway.endpoint(mechanism), scram_gateway)

    assert successes(mechanism) > before


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("client", SCRAM_CLIENTS)
async def test_wrong_password_is_refused_and_counted(
    scram_gateway: ScramGateway, client: str, mechanism: str
) -> None:
    before = failures(mechanism, "bad_password")
    wrong = scram_gateway.endpoint(mechanism, password=WRONG_PASSWORD)

    with pytest.raises(ClientError) as caught:
        await aproduce(
            client, wrong, unique_topic("scram-bad"), [Record(0, -1, b"k", b"v")], timeout=10
        )

    assert "authentication" in str(caught.value).lower()
    assert WRONG_PASSWORD not in str(caught.value)
    assert failures(mechanism, "bad_password") > before


async def test_unknown_user_is_refused_as_unknown(scram_gateway: ScramGateway) -> None:
    before = failures("SCRAM-SHA-256", "unknown_user")
    stranger = scram_gateway.endpoint("SCRAM-SHA-256", user="it-nobody", password=SCRAM_PASSWORD)

    with pytest.raises(ClientError):
        await aproduce(
            "confluent", stranger, unique_topic("scram-x"), [Record(0, -1, b"k", b"v")], timeout=10
        )

    assert failures("SCRAM-SHA-256", "unknown_user") > before


async def wait_for_account(gw: ScramGateway, name: str, *, disabled: bool) -> None:
    """Until the gateway holds the file's version of ``name`` (not a timing assertion:
    the test fails on behaviour, after a generous bound)."""
    accounts = gw.running.gateway.services.authenticator.accounts
    for _ in range(600):
        account = accounts.get(name)
        if account is not None and account.disabled == disabled:
            return
        await asyncio.sleep(RELOAD_SECONDS / 4)
    raise AssertionError(f"the gateway did not pick up {name} (disabled={disabled})")


async def test_service_account_added_while_running_logs_in_and_disabling_it_refuses_it(
    scram_gateway: ScramGateway,
) -> None:
    name = unique_topic("svc")
    ep = scram_gateway.endpoint("SCRAM-SHA-512", user=name, password=SERVICE_PASSWORD)
    reloads = sample("gateway_identity_reloads_total", source="service_accounts", result="success")

    write_accounts(scram_gateway.accounts_file, service_account(name))
    await wait_for_account(scram_gateway, name, disabled=False)
    await round_trip("confluent", ep, scram_gateway)
    await round_trip("java", ep, scram_gateway)

    refused = failures("SCRAM-SHA-512", "disabled_account")
    write_accounts(scram_gateway.accounts_file, service_account(name, disabled=True))
    await wait_for_account(scram_gateway, name, disabled=True)
    with pytest.raises(ClientError):
        await aproduce(
            "confluent", ep, unique_topic("svc-off"), [Record(0, -1, b"k", b"v")], timeout=10
        )

    assert failures("SCRAM-SHA-512", "disabled_account") > refused
    reloaded = sample("gateway_identity_reloads_total", source="service_accounts", result="success")
    assert reloaded >= reloads + 2


async def test_invalid_accounts_file_keeps_the_last_good_version(
    scram_gateway: ScramGateway,
) -> None:
    name = unique_topic("svc")
    ep = scram_gateway.endpoint("SCRAM-SHA-256", user=name, password=SERVICE_PASSWORD)
    write_accounts(scram_gateway.accounts_file, service_account(name))
    await wait_for_account(scram_gateway, name, disabled=False)
    bad = sample("gateway_identity_reloads_total", source="service_accounts", result="failure")

    scram_gateway.accounts_file.write_text("accounts:\n  - name: [broken\n", encoding="utf-8")
    for _ in range(600):
        if (
            sample("gateway_identity_reloads_total", source="service_accounts", result="failure")
            > bad
        ):
            break
        await asyncio.sleep(RELOAD_SECONDS / 4)

    assert (
        sample("gateway_identity_reloads_total", source="service_accounts", result="failure") > bad
    )
    await round_trip("confluent", ep, scram_gateway)


async def test_scram_secrets_appear_in_no_log_line(
    scram_gateway: ScramGateway, session_log: SessionLog
) -> None:
    # Runs after this module's logins and refusals (file order).
    secrets = [SCRAM_PASSWORD, SERVICE_PASSWORD, WRONG_PASSWORD]
    for stored in (*USER_CREDENTIALS.values(), *SERVICE_CREDENTIALS.values()):
        secrets += stored.split("$")[2:]  # salt, stored key, server key
    log = "\n".join(session_log.lines)

    assert "authenticated it-scram" in log
    assert [s for s in secrets if s in log] == []
