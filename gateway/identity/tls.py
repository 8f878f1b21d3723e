"""TLS on client listeners: the server context, what a handshake proved, and the
identity a client certificate stands for.

:class:`ServerTls` builds a listener's ``ssl.SSLContext`` (TLS 1.2 at least, no
compression, no renegotiation, forward-secret AEAD ciphers) and rebuilds it when the
certificate, key or CA file changes on disk, so a renewed certificate is served to new
connections without a restart; a broken new file is logged and the last good context
stays. :func:`tls_details` reads a finished handshake; :func:`certificate_identity`
turns a verified client certificate into an :class:`~gateway.identity.Identity`
(a service account by its ``tls_subject``, else the principal the listener's mapping
rules give). No sockets here: the server does the handshake.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
import time
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway import metrics
from gateway.config import ListenerTlsConfig
from gateway.errors import AuthenticationFailed, ConfigError
from gateway.identity import Identity, TlsDetails
from gateway.identity.accounts import AccountStore
from gateway.identity.principal_mapping import (
    MappingRule,
    map_principal,
    parse_rules,
)

log = logging.getLogger(__name__)

CERTIFICATE_MECHANISM = "SSL"

# TLS 1.2 suites with forward secrecy and authenticated encryption only (TLS 1.3
# suites are all of that and are not affected by this list).
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"

_VERIFY = {
    "none": ssl.CERT_NONE,
    "requested": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}

Stamp = tuple[tuple[int, int] | None, ...]


def _load_context(config: ListenerTlsConfig, where: str) -> ssl.SSLContext:
    """A fresh server context from the files; ConfigError names the listener and the
    file, never key material."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_ciphers(CIPHERS)
    password = None
    if config.key_password is not None:
        try:
            password = config.key_password.resolve()
        except ConfigError as exc:
            raise ConfigError(
                f"listener {where}: key password of {config.key_file}: {exc}"
            ) from None
    for path in (config.cert_file, config.key_file):
        if not path.is_file():
            raise ConfigError(f"listener {where}: TLS file {path} does not exist")
    try:
        context.load_cert_chain(config.cert_file, config.key_file, password=password)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"listener {where}: cannot use certificate {config.cert_file} with key "
            f"{config.key_file} (not PEM, not a matching pair, or a wrong key password): "
            f"{exc.reason or 'unreadable'}"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"listener {where}: cannot read {config.cert_file} or {config.key_file}: {exc.strerror}"
        ) from None
    context.verify_mode = _VERIFY[config.client_auth]
    if config.ca_file is not None:
        try:
            context.load_verify_locations(cafile=config.ca_file)
        except (ssl.SSLError, OSError) as exc:
            what = exc.strerror if isinstance(exc, OSError) and exc.strerror else "no PEM CA"
            raise ConfigError(
                f"listener {where}: cannot use CA file {config.ca_file}: {what}"
            ) from None
    return context


def _stamp(paths: list[Path]) -> Stamp:
    stamps: list[tuple[int, int] | None] = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            stamps.append(None)
        else:
            stamps.append((stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


class ServerTls:
    """A listener's server-side TLS: :meth:`context` is the one to use for the next
    connection."""

    def __init__(self, config: ListenerTlsConfig, where: str) -> None:
        config = config.model_copy(
            update={
                "cert_file": config.cert_file.expanduser(),
                "key_file": config.key_file.expanduser(),
                "ca_file": config.ca_file.expanduser() if config.ca_file else None,
            }
        )
        self.config = config
        self.where = where
        self._paths = [p for p in (config.cert_file, config.key_file, config.ca_file) if p]
        self._stamp = _stamp(self._paths)
        self._context = _load_context(config, where)
        self._next_check = time.monotonic() + config.reload_interval_seconds
        self.reloads = 0

    def context(self) -> ssl.SSLContext:
        """The current context, rebuilt first if a file changed since the last look
        (looked at no more often than ``reload_interval_seconds``)."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.config.reload_interval_seconds
            self.reload_if_changed()
        return self._context

    def reload_if_changed(self) -> bool:
        """Rebuild the context if a file changed; True when a new one took effect."""
        stamp = _stamp(self._paths)
        if stamp == self._stamp:
            return False
        # Remember the broken version too: it is retried once it changes again (a
        # certificate and its key are often written one after the other).
        self._stamp = stamp
        try:
            context = _load_context(self.config, self.where)
        except ConfigError as exc:
            metrics.TLS_RELOADS.labels(self.where, "failed").inc()
            log.error("TLS files not reloaded, the current certificate stays: %s", exc)
            return False
        self._context = context
        self.reloads += 1
        metrics.TLS_RELOADS.labels(self.where, "ok").inc()
        log.info("listener %s: TLS certificate reloaded from %s", self.where, self.config.cert_file)
        return True


# RFC 2253 keywords Java's X500Principal.getName() uses; others are written as the
# attribute's OID with the DER value in hex.
_KEYWORDS = {
    NameOID.COMMON_NAME: "CN",
    NameOID.COUNTRY_NAME: "C",
    NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.STREET_ADDRESS: "STREET",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.USER_ID: "UID",
}


def _der_hex(attribute: x509.NameAttribute[str | bytes]) -> str:
    value = attribute.value if isinstance(attribute.value, bytes) else attribute.value.encode()
    tag = attribute._type.value  # the ASN.1 string type (UTF8String = 12, ...)
    if len(value) < 0x80:
        length = bytes([len(value)])
    else:
        size = len(value).to_bytes((len(value).bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(size)]) + size
    return "#" + (bytes([tag]) + length + value).hex()


def rfc2253(name: x509.Name) -> str:
    """``name`` as Java's ``X500Principal.getName()`` writes it (RFC 2253: most specific
    first, keywords for the common attributes, ``oid=#hex`` for the others), which is
    the string Kafka's principal mapping rules and ``tls_subject`` are written against."""
    rdns: list[str] = []
    for rdn in reversed(name.rdns):
        parts: list[str] = []
        for attribute in rdn:
            keyword = _KEYWORDS.get(attribute.oid)
            if keyword is not None:
                parts.append(attribute.rfc4514_string({attribute.oid: keyword}))
            else:
                parts.append(f"{attribute.oid.dotted_string}={_der_hex(attribute)}")
        rdns.append("+".join(parts))
    return ",".join(rdns)


def _sans(certificate: x509.Certificate) -> tuple[str, ...]:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    names = extension.value
    return (
        *(f"DNS:{v}" for v in names.get_values_for_type(x509.DNSName)),
        *(f"URI:{v}" for v in names.get_values_for_type(x509.UniformResourceIdentifier)),
        *(f"email:{v}" for v in names.get_values_for_type(x509.RFC822Name)),
        *(f"IP:{v}" for v in names.get_values_for_type(x509.IPAddress)),
    )


def tls_details(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> TlsDetails:
    """What a finished handshake established: version, cipher and the client
    certificate's subject and SANs (when the client presented one that verified)."""
    cipher = ssl_object.cipher()
    version = ssl_object.version() or "unknown"
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return TlsDetails(version=version, cipher=cipher[0] if cipher else "unknown")
    certificate = x509.load_der_x509_certificate(der)
    return TlsDetails(
        version=version,
        cipher=cipher[0] if cipher else "unknown",
        client_subject=rfc2253(certificate.subject),
        client_sans=_sans(certificate),
    )


@functools.lru_cache(maxsize=64)
def mapping_rules(entries: tuple[str, ...]) -> tuple[MappingRule, ...]:
    """The parsed rules of a listener (parsed once; the config checked them at load)."""
    return parse_rules(entries)


_SAN_PREFIX = {"san_dns": "DNS:", "san_uri": "URI:", "san_email": "email:"}


def _principal_name(details: TlsDetails, config: ListenerTlsConfig) -> str | None:
    """The certificate name the mapping rules read (subject or the first SAN of a kind)."""
    if config.principal_source == "subject":
        return details.client_subject
    prefix = _SAN_PREFIX[config.principal_source]
    for san in details.client_sans:
        if san.startswith(prefix):
            return san[len(prefix) :]
    return None


def certificate_identity(
    details: TlsDetails,
    config: ListenerTlsConfig,
    accounts: AccountStore,
    listener: str,
    peer: str,
) -> Identity:
    """The identity a verified client certificate stands for.

    A certificate whose subject is a service account's ``tls_subject`` is that account,
    with its groups. Otherwise the principal is what the mapping rules make of the
    certificate's name, with no groups. Raises AuthenticationFailed (reason
    ``no_certificate``, ``no_principal``, ``disabled``) when there is none to give.
    """
    subject = details.client_subject
    if subject is None:
        raise AuthenticationFailed("no client certificate", reason="no_certificate")
    account = accounts.by_tls_subject(subject)
    if account is not None:
        if account.disabled:
            raise AuthenticationFailed(
                f"certificate {subject!r} of disabled identity {account.name!r}", reason="disabled"
            )
        return Identity(
            principal=account.name,
            mechanism=CERTIFICATE_MECHANISM,
            groups=tuple(account.groups),
            listener=listener,
            peer=peer,
            tls=details,
        )
    name = _principal_name(details, config)
    principal = (
        None
        if name is None
        else map_principal(mapping_rules(tuple(config.principal_mapping_rules)), name)
    )
    if not principal:
        raise AuthenticationFailed(
            f"no principal for certificate {subject!r} ({config.principal_source})",
            reason="no_principal",
        )
    named = accounts.get(principal)
    if named is not None and named.disabled:
        # A certificate must not bring a disabled identity back by its name.
        raise AuthenticationFailed(
            f"certificate {subject!r} maps to disabled identity {principal!r}", reason="disabled"
        )
    return Identity(
        principal=principal,
        mechanism=CERTIFICATE_MECHANISM,
        listener=listener,
        peer=peer,
        tls=details,
    )
