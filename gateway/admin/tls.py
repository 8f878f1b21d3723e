"""The TLS the admin API serves HTTPS with (``admin.tls``), reloaded when its files change.

TLS 1.2 at least, no compression; with a ``ca_file`` and ``client_auth`` the caller
must (``required``) or may (``requested``) present a certificate that chains to it.
The bearer token is still required: the certificate protects the channel, the token
names the caller.

The server is started with one context for its whole life, so a renewed certificate
is put in place per handshake: the served context's SNI callback (called on every
ClientHello, with or without a server name) switches the connection to the newest
context built from the files. A file that fails to load is logged and the last good
context stays.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path

from gateway.config import ListenerTlsConfig
from gateway.errors import ConfigError

log = logging.getLogger(__name__)

_VERIFY = {"none": ssl.CERT_NONE, "requested": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def _failure(exc: OSError) -> str:
    # The library's text names files and reasons, never the key or its password.
    return exc.strerror or type(exc).__name__


def admin_ssl_context(config: ListenerTlsConfig) -> ssl.SSLContext:
    """A server context from ``config``; ConfigError naming the file that failed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    password = config.key_password.resolve() if config.key_password is not None else None
    try:
        context.load_cert_chain(config.cert_file, config.key_file, password)
    except OSError as exc:  # ssl.SSLError is an OSError
        raise ConfigError(
            f"admin.tls: cannot load {config.cert_file} / {config.key_file}: {_failure(exc)}"
        ) from None
    if config.ca_file is not None:
        try:
            context.load_verify_locations(cafile=config.ca_file)
        except OSError as exc:
            raise ConfigError(
                f"admin.tls: cannot load ca_file {config.ca_file}: {_failure(exc)}"
            ) from None
    context.verify_mode = _VERIFY[config.client_auth]
    return context


def _stamp(config: ListenerTlsConfig) -> tuple[tuple[int, int] | None, ...]:
    """What changes when any of the files is replaced or rewritten."""
    stamps: list[tuple[int, int] | None] = []
    for path in (config.cert_file, config.key_file, config.ca_file):
        try:
            stat = os.stat(Path(path)) if path is not None else None
        except OSError:
            stat = None
        stamps.append((stat.st_mtime_ns, stat.st_size) if stat is not None else None)
    return tuple(stamps)


class ReloadingTls:
    """The context to serve with (``served``) and the newest one built from the files."""

    def __init__(self, config: ListenerTlsConfig) -> None:
        self.config = config
        self._stamp = _stamp(config)
        self.served = admin_ssl_context(config)
        self.served.sni_callback = self._switch
        self.current = self.served

    def _switch(self, connection: ssl.SSLObject, _name: str | None, _: ssl.SSLContext) -> None:
        if self.current is not self.served:
            connection.context = self.current

    def reload_if_changed(self) -> bool:
        """Build a new context if the files changed; True when one was put in place."""
        stamp = _stamp(self.config)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self.current = admin_ssl_context(self.config)
        except ConfigError as exc:
            log.error("%s; the admin API keeps its previous certificate", exc)
            return False
        log.info("admin API: certificate reloaded from %s", self.config.cert_file)
        return True

    async def watch(self) -> None:
        """Check the files every ``reload_interval_seconds`` until cancelled."""
        while True:
            await asyncio.sleep(self.config.reload_interval_seconds)
            try:
                self.reload_if_changed()
            except Exception:
                # Keep watching: the next change may load.
                log.exception("admin API: checking %s failed", self.config.cert_file)
