"""A local certificate authority for trying and testing the gateway's TLS listeners.

`dev up` writes, if absent, into `<run dir>/tls/`:

    ca.pem       the dev CA certificate (what clients trust: kcat's ssl.ca.location)
    ca.key       0600: the CA's private key (to issue more client certificates)
    server.pem   the gateway's certificate for 127.0.0.1 and localhost (SAN IP and DNS)
    server.key   0600
    client.pem   a client certificate, CN=dev-client,O=soc2-gateway-dev (for mTLS)
    client.key   0600

Keys are ECDSA P-256 in PKCS#8 PEM, unencrypted (Kafka's Java clients read them as a
PEM keystore). :class:`CertificateAuthority` also issues certificates for tests,
including from a second CA that the gateway does not trust. Uses the `cryptography`
package only; nothing here imports the gateway.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEV_CA_NAME = "soc2-gateway dev CA"
DEV_ORGANIZATION = "soc2-gateway-dev"
DEV_CLIENT_SUBJECT = f"CN=dev-client,O={DEV_ORGANIZATION}"
SERVER_HOSTS = ("localhost",)
SERVER_IPS = ("127.0.0.1",)
VALID_DAYS = 825


@dataclass(frozen=True)
class IssuedFiles:
    """A certificate and its private key on disk."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class DevCertificates:
    """The dev CA, the gateway's server certificate and a client certificate."""

    ca_file: Path
    ca_key_file: Path
    server: IssuedFiles
    client: IssuedFiles


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file only its owner can read (created 0600, never wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


class CertificateAuthority:
    """A self-signed CA that issues server and client certificates."""

    def __init__(self, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.certificate = certificate
        self.key = key

    @classmethod
    def create(
        cls, common_name: str = DEV_CA_NAME, organization: str = DEV_ORGANIZATION
    ) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name(common_name, organization)
        now = _now()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),  # fmt: skip
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    @classmethod
    def load(cls, cert_file: Path, key_file: Path) -> CertificateAuthority:
        certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(certificate, key)

    def issue(
        self,
        subject: x509.Name,
        *,
        server: bool = False,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        uris: tuple[str, ...] = (),
        emails: tuple[str, ...] = (),
        valid_days: int = VALID_DAYS,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A certificate for ``subject`` (a server's when ``server``, else a client's)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        names: list[x509.GeneralName] = [
            *(x509.DNSName(d) for d in dns),
            *(x509.IPAddress(ipaddress.ip_address(i)) for i in ips),
            *(x509.UniformResourceIdentifier(u) for u in uris),
            *(x509.RFC822Name(e) for e in emails),
        ]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key

    def issue_files(
        self,
        directory: Path,
        stem: str,
        subject: x509.Name,
        *,
        server: bool = False,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        uris: tuple[str, ...] = (),
        emails: tuple[str, ...] = (),
    ) -> IssuedFiles:
        """:meth:`issue`, written as ``<stem>.pem`` and a 0600 ``<stem>.key``."""
        certificate, key = self.issue(
            subject, server=server, dns=dns, ips=ips, uris=uris, emails=emails
        )
        files = IssuedFiles(directory / f"{stem}.pem", directory / f"{stem}.key")
        write_private(files.key_file, key_pem(key))
        _write_public(files.cert_file, cert_pem(certificate))
        return files

    def write(self, cert_file: Path, key_file: Path) -> None:
        write_private(key_file, key_pem(self.key))
        _write_public(cert_file, cert_pem(self.certificate))


def dev_certificates(tls_dir: Path) -> DevCertificates:
    """Where the dev certificates live in ``tls_dir`` (they may not exist yet)."""
    return DevCertificates(
        ca_file=tls_dir / "ca.pem",
        ca_key_file=tls_dir / "ca.key",
        server=IssuedFiles(tls_dir / "server.pem", tls_dir / "server.key"),
        client=IssuedFiles(tls_dir / "client.pem", tls_dir / "client.key"),
    )


def ensure_dev_certificates(tls_dir: Path) -> DevCertificates:
    """Create the dev CA, server and client certificates unless all of them exist."""
    found = dev_certificates(tls_dir)
    files = [
        found.ca_file,
        found.ca_key_file,
        found.server.cert_file,
        found.server.key_file,
        found.client.cert_file,
        found.client.key_file,
    ]
    if all(f.is_file() for f in files):
        return found
    tls_dir.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority.create()
    ca.write(found.ca_file, found.ca_key_file)
    ca.issue_files(
        tls_dir, "server", _name("localhost", DEV_ORGANIZATION), server=True,
        dns=SERVER_HOSTS, ips=SERVER_IPS,
    )  # fmt: skip
    ca.issue_files(tls_dir, "client", _name("dev-client", DEV_ORGANIZATION))
    return found


def subject(common_name: str, organization: str = DEV_ORGANIZATION) -> x509.Name:
    """``CN=<common_name>,O=<organization>`` as a certificate subject."""
    return _name(common_name, organization)
