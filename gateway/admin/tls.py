"""The TLS context the admin API serves HTTPS with (``admin.tls``).

TLS 1.2 at least, no compression; with a ``ca_file`` and ``client_auth`` the caller
must (``required``) or may (``requested``) present a certificate that chains to it.
The bearer token is still required: the certificate protects the channel, the token
names the caller.
"""

from __future__ import annotations

import ssl

from gateway.config import ListenerTlsConfig
from gateway.errors import ConfigError


def admin_ssl_context(config: ListenerTlsConfig) -> ssl.SSLContext:
    """A server context from ``config``; ConfigError naming the file that failed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    password = config.key_password.resolve() if config.key_password is not None else None
    try:
        context.load_cert_chain(config.cert_file, config.key_file, password)
    except (OSError, ssl.SSLError) as exc:
        # The library's message names files and reasons, never the key or its password.
        raise ConfigError(
            f"admin.tls: cannot load {config.cert_file} / {config.key_file}: "
            f"{getattr(exc, 'strerror', None) or type(exc).__name__}"
        ) from None
    if config.ca_file is not None:
        try:
            context.load_verify_locations(cafile=config.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"admin.tls: cannot load ca_file {config.ca_file}: "
                f"{getattr(exc, 'strerror', None) or type(exc).__name__}"
            ) from None
    context.verify_mode = {
        "none": ssl.CERT_NONE,
        "requested": ssl.CERT_OPTIONAL,
        "required": ssl.CERT_REQUIRED,
    }[config.client_auth]
    return context
