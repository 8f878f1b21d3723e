"""The TLS the admin API serves HTTPS with (``admin.tls``), renewed without a restart.

The context, its checks (TLS 1.2 at least, no compression, client certificates when
``client_auth`` asks for them) and its reload from disk are the client listeners'
(:class:`gateway.identity.tls.ServerTls`). The bearer token is still required: the
certificate protects the channel, the token names the caller.

aiohttp's server keeps the one context it was started with, so a renewed certificate
is put in place per handshake: that context's SNI callback (called on every
ClientHello, with or without a server name) moves the connection to the newest
context built from the files.
"""

from __future__ import annotations

import ssl

from gateway.config import ListenerTlsConfig
from gateway.identity.tls import ServerTls


class AdminTls:
    """``served`` is the context to start the server with; each handshake on it uses
    the newest good context from the files."""

    def __init__(self, config: ListenerTlsConfig) -> None:
        self.files = ServerTls(config, "admin")
        self.served = self.files.context()
        self.served.sni_callback = self._switch

    def _switch(self, connection: ssl.SSLObject, _name: str | None, _: ssl.SSLContext) -> None:
        current = self.files.context()
        if current is not self.served:
            connection.context = current
