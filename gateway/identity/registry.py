"""Every way a client can prove who it is, built once from the config.

The :class:`Authenticator` holds the configured identities (``accounts``), the guard
that makes failed attempts expensive for the caller (``guard``), and one
:class:`~gateway.identity.mechanisms.Mechanism` per SASL mechanism the gateway can
offer. A listener offers the mechanisms it lists.
"""

from __future__ import annotations

from gateway.config import Config, ListenerConfig
from gateway.identity.accounts import AccountStore, AccountsWatcher
from gateway.identity.guard import AuthGuard
from gateway.identity.mechanisms import Mechanism
from gateway.identity.oauthbearer import JwtValidator, OAuthBearerMechanism
from gateway.identity.plain import PlainMechanism
from gateway.identity.scram import ScramMechanism


class Authenticator:
    def __init__(self, config: Config) -> None:
        limits = config.limits
        self.config = config
        self.accounts = AccountStore(config.users, config.identity.service_accounts_file)
        # Started and stopped with the gateway; idle when there is no accounts file.
        self.watcher = AccountsWatcher(self.accounts, config.identity.reload_interval_seconds)
        self.guard = AuthGuard(
            workers=limits.authentication_workers,
            per_address=limits.authentications_per_address,
            failures_per_minute=limits.failed_authentications_per_address,
            delay=limits.failed_authentication_delay_seconds,
        )
        found: list[Mechanism] = [
            PlainMechanism(self.accounts, self.guard),
            ScramMechanism("SCRAM-SHA-256", self.accounts, self.guard),
            ScramMechanism("SCRAM-SHA-512", self.accounts, self.guard),
        ]
        oauth = config.identity.oauthbearer
        # Also what the admin API checks bearer JWTs with; None without oauthbearer.
        self.jwt_validator: JwtValidator | None = None
        if oauth is not None:
            self.jwt_validator = JwtValidator(oauth, self.guard, self.accounts)
            found.append(OAuthBearerMechanism(self.jwt_validator))
        self.mechanisms: dict[str, Mechanism] = {m.name: m for m in found}

    def offered(self, listener: ListenerConfig) -> tuple[str, ...]:
        """The SASL mechanisms ``listener`` offers, in its configured order."""
        return tuple(m for m in listener.sasl_mechanisms if m in self.mechanisms)

    def max_session_seconds(self, mechanism: str) -> float | None:
        """The longest session a login with ``mechanism`` gets before it must
        re-authenticate (KIP-368); None for no limit."""
        oauth = self.config.identity.oauthbearer
        if mechanism == "OAUTHBEARER" and oauth is not None:
            return oauth.max_session_seconds
        return self.config.identity.max_session_seconds

    def close(self) -> None:
        if self.jwt_validator is not None:
            self.jwt_validator.close()
        self.guard.close()
