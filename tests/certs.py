"""Throw-away certificate authorities for the admin HTTPS tests, each in a directory,
on top of the dev CA code (:mod:`gateway.dev.certs`)."""

from __future__ import annotations

import ssl
from pathlib import Path

from gateway.dev.certs import CertificateAuthority, cert_pem, subject


class TestAuthority:
    """A CA whose certificate is ``file`` in ``directory``, issuing into ``directory``."""

    __test__ = False  # a helper, not a test class

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.ca = CertificateAuthority.create(name)
        self.file = directory / f"{name.replace(' ', '-')}.pem"
        self.file.write_bytes(cert_pem(self.ca.certificate))

    def issue(self, common_name: str, stem: str, *, server: bool = True) -> tuple[Path, Path]:
        """A server (also valid for 127.0.0.1) or client certificate: (cert, key)."""
        files = self.ca.issue_files(
            self.directory,
            stem,
            subject(common_name),
            server=server,
            ips=("127.0.0.1",) if server else (),
        )
        return files.cert_file, files.key_file

    def trusting(self) -> ssl.SSLContext:
        """A client context that trusts only this CA."""
        return ssl.create_default_context(cafile=str(self.file))
