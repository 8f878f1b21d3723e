"""Service accounts: the file is re-read when it changes, a bad version keeps the last
good one, and the watcher does it while the gateway runs."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
import scramp
from prometheus_client import REGISTRY

from gateway.config import UserConfig
from gateway.errors import AuthenticationFailed, ConfigError
from gateway.identity.accounts import AccountStore, AccountsWatcher
from gateway.identity.guard import AuthGuard
from gateway.identity.mechanisms import AuthContext, Challenge, Verified
from gateway.identity.scram import ScramMechanism, format_credential, make_credential

CONTEXT = AuthContext(listener="sasl", peer="192.0.2.9:4000", address="192.0.2.9")
BUILD_PASSWORD = "build-secret"  # noqa: S105 - a test credential
DEPLOY_PASSWORD = "deploy-secret"  # noqa: S105 - a test credential


def credential(password: str) -> str:
    return format_credential(make_credential("SCRAM-SHA-256", password))


BUILD = credential(BUILD_PASSWORD)
DEPLOY = credential(DEPLOY_PASSWORD)


def write(path: Path, text: str) -> None:
    """Replace the file's content and make sure its stamp changes, as an editor would."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def account(name: str, scram: str, *, disabled: bool = False, groups: str = "[ci]") -> str:
    return (
        f"  - name: {name}\n    scram_sha_256: '{scram}'\n    groups: {groups}\n"
        f"    disabled: {str(disabled).lower()}\n"
    )


def reloads(result: str) -> float:
    value = REGISTRY.get_sample_value(
        "gateway_identity_reloads_total", {"source": "service_accounts", "result": result}
    )
    return value or 0.0


@pytest.fixture
def guard() -> AuthGuard:
    guard = AuthGuard(workers=1, per_address=1, failures_per_minute=100, delay=0)
    yield guard  # type: ignore[misc]
    guard.close()


async def login(store: AccountStore, guard: AuthGuard, name: str, password: str) -> str:
    """A SCRAM-SHA-256 login; the principal, or the refusal's reason."""
    mechanism = ScramMechanism("SCRAM-SHA-256", store, guard)
    client = scramp.ScramClient(["SCRAM-SHA-256"], name, password)
    exchange = mechanism.start(CONTEXT)
    try:
        first = await exchange.step(client.get_client_first().encode())
        assert isinstance(first, Challenge)
        client.set_server_first(first.data.decode())
        final = await exchange.step(client.get_client_final().encode())
    except AuthenticationFailed as exc:
        return exc.reason
    assert isinstance(final, Verified)
    return final.identity.principal


@pytest.fixture
def accounts_file(tmp_path: Path) -> Path:
    path = tmp_path / "service-accounts.yaml"
    write(path, "accounts:\n" + account("build-bot", BUILD))
    return path


async def test_an_account_added_to_the_file_works_after_reload(
    accounts_file: Path, guard: AuthGuard
) -> None:
    store = AccountStore([], accounts_file)
    assert await login(store, guard, "deploy-bot", DEPLOY_PASSWORD) == "unknown_user"
    successes = reloads("success")

    write(
        accounts_file, "accounts:\n" + account("build-bot", BUILD) + account("deploy-bot", DEPLOY)
    )

    assert store.reload_if_changed() is True
    assert await login(store, guard, "deploy-bot", DEPLOY_PASSWORD) == "deploy-bot"
    assert await login(store, guard, "build-bot", BUILD_PASSWORD) == "build-bot"
    assert reloads("success") == successes + 1


async def test_an_account_removed_from_the_file_stops_working(
    accounts_file: Path, guard: AuthGuard
) -> None:
    store = AccountStore([], accounts_file)
    assert await login(store, guard, "build-bot", BUILD_PASSWORD) == "build-bot"

    write(accounts_file, "accounts:\n" + account("deploy-bot", DEPLOY))

    assert store.reload_if_changed() is True
    assert await login(store, guard, "build-bot", BUILD_PASSWORD) == "unknown_user"


async def test_an_account_set_disabled_is_refused_after_reload(
    accounts_file: Path, guard: AuthGuard
) -> None:
    store = AccountStore([], accounts_file)

    write(accounts_file, "accounts:\n" + account("build-bot", BUILD, disabled=True))

    assert store.reload_if_changed() is True
    assert await login(store, guard, "build-bot", BUILD_PASSWORD) == "disabled_account"


async def test_an_invalid_file_keeps_the_last_good_version_and_names_file_and_field(
    accounts_file: Path, guard: AuthGuard, caplog: pytest.LogCaptureFixture
) -> None:
    store = AccountStore([], accounts_file)
    failures = reloads("failure")
    weak = "scram-sha-256$1000$" + "A" * 24 + "$" + "A" * 44 + "$" + "A" * 44

    write(accounts_file, "accounts:\n" + account("deploy-bot", weak))
    with caplog.at_level(logging.ERROR, logger="gateway.identity.accounts"):
        assert store.reload_if_changed() is False

    assert await login(store, guard, "build-bot", BUILD_PASSWORD) == "build-bot"
    assert await login(store, guard, "deploy-bot", DEPLOY_PASSWORD) == "unknown_user"
    assert reloads("failure") == failures + 1
    message = caplog.records[-1].getMessage()
    assert str(accounts_file) in message
    assert "accounts.0.scram_sha_256" in message
    assert "A" * 24 not in message  # the credential itself is not echoed


@pytest.mark.parametrize(
    "content",
    [
        "accounts: [unclosed\n",
        "accounts:\n  - name: x\n    colour: blue\n",
        "accounts:\n  - name: build-bot\n  - name: build-bot\n",
        "just a string\n",
    ],
    ids=["yaml", "unknown-field", "duplicate", "not-a-mapping"],
)
async def test_any_bad_version_keeps_the_last_good_one(
    accounts_file: Path, guard: AuthGuard, content: str
) -> None:
    store = AccountStore([], accounts_file)

    write(accounts_file, content)

    assert store.reload_if_changed() is False
    assert await login(store, guard, "build-bot", BUILD_PASSWORD) == "build-bot"


async def test_a_deleted_file_keeps_the_last_good_version(
    accounts_file: Path, guard: AuthGuard
) -> None:
    store = AccountStore([], accounts_file)

    accounts_file.unlink()

    assert store.reload_if_changed() is False
    assert await login(store, guard, "build-bot", BUILD_PASSWORD) == "build-bot"


def test_an_unchanged_file_is_not_read_again(accounts_file: Path) -> None:
    store = AccountStore([], accounts_file)
    successes = reloads("success")

    assert store.reload_if_changed() is False
    assert reloads("success") == successes


def test_a_file_account_may_not_reuse_a_configured_users_name(accounts_file: Path) -> None:
    with pytest.raises(ConfigError, match="duplicate identity names: build-bot"):
        AccountStore([UserConfig(name="build-bot", scram_sha_256=BUILD)], accounts_file)


def test_an_invalid_file_at_start_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "accounts.yaml"
    write(path, "accounts:\n  - name: x\n    disabled: maybe\n")

    with pytest.raises(ConfigError, match=r"accounts\.0\.disabled"):
        AccountStore([], path)


async def test_watcher_picks_up_a_change_while_running(
    accounts_file: Path, guard: AuthGuard
) -> None:
    store = AccountStore([], accounts_file)
    watcher = AccountsWatcher(store, interval=0.01)
    watcher.start()
    try:
        write(accounts_file, "accounts:\n" + account("deploy-bot", DEPLOY))
        # Wait for the change rather than for a time: the assertion is on behaviour.
        for _ in range(500):
            if store.get("deploy-bot") is not None:
                break
            await asyncio.sleep(0.01)
    finally:
        await watcher.stop()

    assert await login(store, guard, "deploy-bot", DEPLOY_PASSWORD) == "deploy-bot"
    assert await login(store, guard, "build-bot", BUILD_PASSWORD) == "unknown_user"


async def test_watcher_without_a_file_starts_nothing() -> None:
    watcher = AccountsWatcher(AccountStore([]), interval=0.01)

    watcher.start()

    assert watcher.running is False
    await watcher.stop()


async def test_watcher_check_reports_whether_a_new_version_took_effect(
    accounts_file: Path,
) -> None:
    store = AccountStore([], accounts_file)
    watcher = AccountsWatcher(store, interval=60)

    assert await watcher.check() is False
    write(accounts_file, "accounts:\n" + account("deploy-bot", DEPLOY, groups="[deploy, ci]"))
    assert await watcher.check() is True
    deploy = store.get("deploy-bot")
    assert deploy is not None
    assert deploy.groups == ["deploy", "ci"]
