"""TLS listeners without sockets: mapping rules, subjects, contexts, reloads, identities.

Handshakes run between two ``ssl.SSLObject``s over memory BIOs, so the server context
and what it proves are checked with real TLS and no port.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from gateway.config import ListenerTlsConfig, UserConfig, parse_config
from gateway.dev.certs import (
    CertificateAuthority,
    cert_pem,
    ensure_dev_certificates,
    key_pem,
    subject,
)
from gateway.errors import AuthenticationFailed, ConfigError
from gateway.identity import TlsDetails
from gateway.identity.accounts import AccountStore
from gateway.identity.principal_mapping import InvalidRule, map_principal, parse_rules
from gateway.identity.tls import ServerTls, certificate_identity, rfc2253, tls_details
from gateway.server.tls import handshake_failure_reason

# Mapping rules: Kafka's own examples (SslPrincipalMapperTest) -------------------------

KAFKA_VALID = [
    "DEFAULT",
    "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/",
    "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, DEFAULT",
    "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/",
    "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L",
    "RULE:^cn=(.?),ou=(.?),dc=(.?),dc=(.?)$/$1@$2/U",
    "RULE:^CN=([^,ADEFLTU,]+)(,.*|$)/$1/",
    "RULE:^CN=([^,DEFAULT,]+)(,.*|$)/$1/",
]
KAFKA_INVALID = [
    "default",
    "DEFAUL",
    "DEFAULT/L",
    "DEFAULT/U",
    "RULE:CN=(.*?),OU=ServiceUsers.*/$1",
    "rule:^CN=(.*?),OU=ServiceUsers.*$/$1/",
    "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L/U",
    "RULE:^CN=(.*?),OU=ServiceUsers.*$/L",
    "RULE:^CN=(.*?),OU=ServiceUsers.*$/U",
    "RULE:^CN=(.*?),OU=ServiceUsers.*$/LU",
]


@pytest.mark.parametrize("rule", KAFKA_VALID)
def test_kafkas_valid_mapping_rules_parse(rule: str) -> None:
    assert parse_rules([rule])


@pytest.mark.parametrize("rule", KAFKA_INVALID)
def test_kafkas_invalid_mapping_rules_are_refused(rule: str) -> None:
    with pytest.raises(InvalidRule):
        parse_rules([rule])


def test_mapping_rules_map_names_as_kafkas_mapper_does() -> None:
    rules = parse_rules(
        [
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L",
            "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L",
            "RULE:^cn=(.*?),ou=(.*?),dc=(.*?),dc=(.*?)$/$1@$2/U",
            "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U",
            "DEFAULT",
        ]
    )

    assert map_principal(rules, "CN=Duke,OU=ServiceUsers,O=Org,C=US") == "duke"
    assert map_principal(rules, "CN=Duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US") == "duke@sme"
    assert map_principal(rules, "cn=duke,ou=sme,dc=mycp,dc=com") == "DUKE@SME"
    assert map_principal(rules, "cN=duke,OU=JavaSoft,O=Sun Microsystems") == "DUKE"
    assert (
        map_principal(rules, "OU=JavaSoft,O=Sun Microsystems,C=US")
        == "OU=JavaSoft,O=Sun Microsystems,C=US"
    )


def test_one_entry_may_hold_kafkas_comma_separated_rules() -> None:
    rules = parse_rules(["  RULE:([A-Z]*)/$1/U   ,RULE:([a-z]+)/$1/,   DEFAULT  ", ",, ,"])

    assert [r.text for r in rules] == ["RULE:([A-Z]*)/$1/U", "RULE:([a-z]+)/$1/", "DEFAULT"]


def test_an_escaped_comma_in_a_subject_survives_mapping() -> None:
    rules = parse_rules(["RULE:^CN=((\\\\, *|\\w)+)(,.*|$)/$1/,DEFAULT"])

    assert map_principal(rules, "CN=Tkac\\, Adam,OU=ITZ,DC=geodis,DC=cz") == "Tkac\\, Adam"


def test_a_group_reference_beyond_the_pattern_is_literal_text() -> None:
    rules = parse_rules(["RULE:^CN=([a-z]+)$/$1-$2/"])

    assert map_principal(rules, "CN=orders") == "orders-$2"


def test_no_applicable_rule_gives_no_principal() -> None:
    assert map_principal(parse_rules(["RULE:^CN=(.*),O=Acme$/$1/"]), "CN=x,O=Other") is None


def _config_with_rules(rules: list[str]) -> dict[str, object]:
    return {
        "listeners": [
            {
                "name": "mtls-in",
                "bind": "127.0.0.1:9095",
                "security_protocol": "SSL",
                "tls": {
                    "cert_file": "/x/server.pem",
                    "key_file": "/x/server.key",
                    "ca_file": "/x/ca.pem",
                    "client_auth": "required",
                    "principal_mapping_rules": rules,
                },
            }
        ],
        "clusters": {"primary": {"bootstrap_servers": ["127.0.0.1:19092"]}},
    }


def test_a_bad_mapping_rule_is_a_config_error_naming_listener_and_rule() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config_with_rules(["RULE:^CN=(.*)$/$1/X"]), environ={})

    assert "listener mtls-in" in str(caught.value)
    assert "RULE:^CN=(.*)$/$1/X" in str(caught.value)


def test_a_mapping_rule_with_a_bad_regex_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"mtls-in.*bad pattern"):
        parse_config(_config_with_rules(["RULE:^CN=(.*$/$1/"]), environ={})


# Subjects as Java writes them ---------------------------------------------------------


def _name(*pairs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])


def test_subject_is_written_most_specific_first_as_x500principal_getname() -> None:
    name = _name(
        (NameOID.COUNTRY_NAME, "US"),
        (NameOID.ORGANIZATION_NAME, "Org"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "ServiceUsers"),
        (NameOID.COMMON_NAME, "Duke"),
    )

    assert rfc2253(name) == "CN=Duke,OU=ServiceUsers,O=Org,C=US"


def test_subject_special_characters_are_escaped_as_rfc_2253_says() -> None:
    name = _name((NameOID.ORGANIZATION_NAME, "Acme, Inc."), (NameOID.COMMON_NAME, "a+b"))

    assert rfc2253(name) == "CN=a\\+b,O=Acme\\, Inc."


def test_attributes_without_an_rfc_2253_keyword_are_an_oid_with_hex_der() -> None:
    name = _name((NameOID.EMAIL_ADDRESS, "a@b.c"), (NameOID.COMMON_NAME, "x"))

    # Java: new X500Principal("EMAILADDRESS=a@b.c, CN=x").getName() (IA5String, tag 0x16)
    assert rfc2253(name) == "CN=x,1.2.840.113549.1.9.1=#16056140622e63"


# Server contexts over memory BIOs -----------------------------------------------------


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("unit CA")


@pytest.fixture
def tls_files(ca: CertificateAuthority, tmp_path: Path) -> dict[str, Path]:
    server = ca.issue_files(
        tmp_path, "server", subject("localhost"), server=True, ips=("127.0.0.1",)
    )
    client = ca.issue_files(
        tmp_path, "client", subject("orders", "Acme"), dns=("orders.acme.test",)
    )
    ca.write(tmp_path / "ca.pem", tmp_path / "ca.key")
    return {
        "cert": server.cert_file,
        "key": server.key_file,
        "ca": tmp_path / "ca.pem",
        "client_cert": client.cert_file,
        "client_key": client.key_file,
    }


def _tls_config(files: dict[str, Path], **extra: object) -> ListenerTlsConfig:
    return ListenerTlsConfig.model_validate(
        {"cert_file": files["cert"], "key_file": files["key"], **extra}
    )


def _client_context(
    ca_file: Path, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def _handshake(
    server: ssl.SSLContext, client: ssl.SSLContext
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A whole handshake between two SSLObjects, pumping bytes by hand; raises the
    server's error if it refuses."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    s = server.wrap_bio(s_in, s_out, server_side=True)
    c = client.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    done = {"s": False, "c": False}
    for _ in range(20):
        for name, obj in (("c", c), ("s", s)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            # TLS 1.3: the server learns of a refused client certificate on its next read.
            with contextlib.suppress(ssl.SSLWantReadError):
                s.read(1)
            return s, c
    raise AssertionError("handshake did not finish")


def test_tls_details_name_version_cipher_client_subject_and_sans(
    tls_files: dict[str, Path],
) -> None:
    server = ServerTls(
        _tls_config(tls_files, ca_file=tls_files["ca"], client_auth="required"), "mtls"
    )
    client = _client_context(tls_files["ca"], tls_files["client_cert"], tls_files["client_key"])

    s, _ = _handshake(server.context(), client)
    details = tls_details(s)

    assert details.version == "TLSv1.3"
    assert details.cipher.startswith("TLS_")
    assert details.client_subject == "CN=orders,O=Acme"
    assert details.client_sans == ("DNS:orders.acme.test",)


def test_without_a_client_certificate_the_details_have_no_subject(
    tls_files: dict[str, Path],
) -> None:
    server = ServerTls(_tls_config(tls_files), "tls")

    s, _ = _handshake(server.context(), _client_context(tls_files["ca"]))

    assert tls_details(s).client_subject is None


def test_the_server_context_refuses_tls_1_1_and_compression(tls_files: dict[str, Path]) -> None:
    context = ServerTls(_tls_config(tls_files), "tls").context()

    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION


def test_required_client_auth_refuses_a_certificate_from_another_ca(
    tls_files: dict[str, Path], tmp_path: Path
) -> None:
    other = CertificateAuthority.create("someone else's CA")
    stranger = other.issue_files(tmp_path, "stranger", subject("orders", "Acme"))
    server = ServerTls(
        _tls_config(tls_files, ca_file=tls_files["ca"], client_auth="required"), "mtls"
    )
    client = _client_context(tls_files["ca"], stranger.cert_file, stranger.key_file)

    with pytest.raises(ssl.SSLError) as caught:
        _handshake(server.context(), client)

    assert handshake_failure_reason(caught.value) == "bad_certificate"


def test_plaintext_bytes_are_a_not_tls_handshake_failure(tls_files: dict[str, Path]) -> None:
    server = ServerTls(_tls_config(tls_files), "tls").context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = server.wrap_bio(incoming, outgoing, server_side=True)
    incoming.write(b"\x00\x00\x00\x14\x00\x12\x00\x03\x00\x00\x00\x01\x00\x04kcat" + b"\x00" * 8)

    with pytest.raises(ssl.SSLError) as caught:
        obj.do_handshake()

    assert handshake_failure_reason(caught.value) == "not_tls"


def test_a_handshake_timeout_is_counted_as_timeout() -> None:
    assert handshake_failure_reason(ConnectionAbortedError("too slow")) == "timeout"
    assert handshake_failure_reason(ConnectionResetError()) == "closed"


# Bad files ----------------------------------------------------------------------------


def test_a_missing_certificate_file_is_a_config_error_naming_listener_and_file(
    tls_files: dict[str, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "nope.pem"
    config = ListenerTlsConfig(cert_file=missing, key_file=tls_files["key"])

    with pytest.raises(ConfigError) as caught:
        ServerTls(config, "edge")

    assert "listener edge" in str(caught.value)
    assert str(missing) in str(caught.value)


def test_a_key_that_does_not_match_is_a_config_error_without_key_material(
    ca: CertificateAuthority, tls_files: dict[str, Path], tmp_path: Path
) -> None:
    other = ca.issue_files(tmp_path, "other", subject("other"), server=True)
    config = ListenerTlsConfig(cert_file=tls_files["cert"], key_file=other.key_file)

    with pytest.raises(ConfigError) as caught:
        ServerTls(config, "edge")

    key_text = other.key_file.read_text()
    body = "".join(key_text.splitlines()[1:-1])
    assert "listener edge" in str(caught.value)
    assert str(other.key_file) in str(caught.value)
    assert body[:40] not in str(caught.value)
    assert "PRIVATE KEY" not in str(caught.value)


def test_a_ca_file_that_is_not_pem_is_a_config_error(
    tls_files: dict[str, Path], tmp_path: Path
) -> None:
    bad = tmp_path / "bad-ca.pem"
    bad.write_text("not a certificate\n")
    config = _tls_config(tls_files, ca_file=bad, client_auth="required")

    with pytest.raises(ConfigError, match=r"listener edge.*bad-ca\.pem"):
        ServerTls(config, "edge")


def test_an_encrypted_key_loads_with_its_password(ca: CertificateAuthority, tmp_path: Path) -> None:
    certificate, key = ca.issue(subject("localhost"), server=True)
    (tmp_path / "s.pem").write_bytes(cert_pem(certificate))
    (tmp_path / "s.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"key-pass-123"),
        )
    )
    good = ListenerTlsConfig.model_validate(
        {"cert_file": tmp_path / "s.pem", "key_file": tmp_path / "s.key",
         "key_password": {"value": "key-pass-123"}}
    )  # fmt: skip
    wrong = ListenerTlsConfig.model_validate(
        {"cert_file": tmp_path / "s.pem", "key_file": tmp_path / "s.key",
         "key_password": {"env": "NO_SUCH_TLS_VAR"}}
    )  # fmt: skip

    assert ServerTls(good, "edge").context() is not None
    with pytest.raises(ConfigError, match=r"listener edge: key password .*NO_SUCH_TLS_VAR"):
        ServerTls(wrong, "edge")


# Reloads ------------------------------------------------------------------------------


def _served_serial(server: ServerTls, ca_file: Path) -> int:
    _, c = _handshake(server.context(), _client_context(ca_file))
    der = c.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_a_replaced_certificate_is_served_after_a_reload(
    ca: CertificateAuthority, tls_files: dict[str, Path], tmp_path: Path
) -> None:
    server = ServerTls(_tls_config(tls_files), "edge")
    first = _served_serial(server, tls_files["ca"])
    renewed, key = ca.issue(subject("localhost"), server=True, ips=("127.0.0.1",))
    tls_files["key"].write_bytes(key_pem(key))
    tls_files["cert"].write_bytes(cert_pem(renewed))

    assert server.reload_if_changed() is True
    assert _served_serial(server, tls_files["ca"]) == renewed.serial_number != first


def test_the_context_is_looked_at_no_more_often_than_the_interval(
    tls_files: dict[str, Path],
) -> None:
    server = ServerTls(_tls_config(tls_files, reload_interval_seconds=3600), "edge")
    before = server.context()
    tls_files["cert"].write_bytes(tls_files["cert"].read_bytes() + b"\n")

    assert server.context() is before
    assert server.reloads == 0


def test_a_broken_new_certificate_keeps_the_old_one_and_logs_the_file(
    tls_files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    server = ServerTls(_tls_config(tls_files), "edge")
    before = server.context()
    tls_files["cert"].write_text("-----BEGIN CERTIFICATE-----\ngarbage\n")

    with caplog.at_level(logging.ERROR):
        assert server.reload_if_changed() is False

    assert server.context() is before
    assert str(tls_files["cert"]) in caplog.text
    assert "edge" in caplog.text


# Certificate identities ---------------------------------------------------------------


def _details(subject_text: str, sans: tuple[str, ...] = ()) -> TlsDetails:
    return TlsDetails("TLSv1.3", "TLS_AES_128_GCM_SHA256", subject_text, sans)


def _mtls(tls_files: dict[str, Path], **extra: object) -> ListenerTlsConfig:
    return _tls_config(tls_files, ca_file=tls_files["ca"], client_auth="required", **extra)


def test_a_service_accounts_certificate_is_that_account_with_its_groups(
    tls_files: dict[str, Path],
) -> None:
    accounts = AccountStore(
        [UserConfig(name="orders-svc", tls_subject="CN=orders,O=Acme", groups=["writers"])]
    )

    identity = certificate_identity(
        _details("CN=orders,O=Acme"), _mtls(tls_files), accounts, "mtls", "10.0.0.1:5000"
    )

    assert (identity.principal, identity.groups, identity.mechanism) == (
        "orders-svc",
        ("writers",),
        "SSL",
    )
    assert (identity.listener, identity.peer) == ("mtls", "10.0.0.1:5000")


def test_a_disabled_service_accounts_certificate_is_refused(tls_files: dict[str, Path]) -> None:
    accounts = AccountStore(
        [UserConfig(name="orders-svc", tls_subject="CN=orders,O=Acme", disabled=True)]
    )

    with pytest.raises(AuthenticationFailed) as caught:
        certificate_identity(_details("CN=orders,O=Acme"), _mtls(tls_files), accounts, "m", "p")

    assert caught.value.reason == "disabled"


def test_another_certificate_gets_the_mapped_principal_and_no_groups(
    tls_files: dict[str, Path],
) -> None:
    config = _mtls(tls_files, principal_mapping_rules=["RULE:^CN=([^,]+),O=Acme$/$1/L"])

    identity = certificate_identity(
        _details("CN=Billing,O=Acme"), config, AccountStore([]), "m", "p"
    )

    assert (identity.principal, identity.groups) == ("billing", ())


def test_a_certificate_no_rule_applies_to_is_refused(tls_files: dict[str, Path]) -> None:
    config = _mtls(tls_files, principal_mapping_rules=["RULE:^CN=([^,]+),O=Acme$/$1/"])

    with pytest.raises(AuthenticationFailed) as caught:
        certificate_identity(_details("CN=x,O=Evil"), config, AccountStore([]), "m", "p")

    assert caught.value.reason == "no_principal"


def test_a_certificate_mapped_to_a_disabled_identity_is_refused(
    tls_files: dict[str, Path],
) -> None:
    config = _mtls(tls_files, principal_mapping_rules=["RULE:^CN=([^,]+),.*$/$1/"])
    accounts = AccountStore([UserConfig(name="old-job", disabled=True)])

    with pytest.raises(AuthenticationFailed, match="disabled"):
        certificate_identity(_details("CN=old-job,O=Acme"), config, accounts, "m", "p")


def test_the_principal_can_come_from_the_first_dns_san(tls_files: dict[str, Path]) -> None:
    config = _mtls(tls_files, principal_source="san_dns")
    details = _details("CN=x", ("URI:spiffe://acme/x", "DNS:orders.acme.test", "DNS:b.test"))

    identity = certificate_identity(details, config, AccountStore([]), "m", "p")

    assert identity.principal == "orders.acme.test"


# Dev certificates ---------------------------------------------------------------------


def test_dev_certificates_are_written_once_with_private_keys_0600(tmp_path: Path) -> None:
    made = ensure_dev_certificates(tmp_path / "tls")
    first = made.server.cert_file.read_bytes()
    again = ensure_dev_certificates(tmp_path / "tls")

    for key in (made.ca_key_file, made.server.key_file, made.client.key_file):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert again.server.cert_file.read_bytes() == first
    server = x509.load_pem_x509_certificate(first)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    client = x509.load_pem_x509_certificate(made.client.cert_file.read_bytes())
    assert rfc2253(client.subject) == "CN=dev-client,O=soc2-gateway-dev"


def test_the_dev_server_certificate_verifies_against_the_dev_ca(tmp_path: Path) -> None:
    made = ensure_dev_certificates(tmp_path / "tls")
    config = ListenerTlsConfig(
        cert_file=made.server.cert_file,
        key_file=made.server.key_file,
        ca_file=made.ca_file,
        client_auth="required",
    )
    client = _client_context(made.ca_file, made.client.cert_file, made.client.key_file)

    s, _ = _handshake(ServerTls(config, "dev").context(), client)

    assert tls_details(s).client_subject == "CN=dev-client,O=soc2-gateway-dev"
