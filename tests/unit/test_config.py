"""The configuration file: validation names the field, env overrides, secret references."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import gateway
from gateway.config import Config, SecretRef, load_config, parse_config
from gateway.errors import ConfigError
from gateway.identity.passwords import verify_password

INLINE_SECRET = "inline-secret-Zx81"  # noqa: S105 - a test value that must never be echoed


def minimal() -> dict[str, Any]:
    return {
        "listeners": [{"name": "plain", "bind": "127.0.0.1:9092"}],
        "clusters": {"primary": {"bootstrap_servers": ["kafka:9092"]}},
    }


def with_sasl(password: dict[str, Any]) -> dict[str, Any]:
    data = minimal()
    data["clusters"]["primary"].update(
        security_protocol="SASL_PLAINTEXT",
        sasl={"mechanism": "SCRAM-SHA-256", "username": "gateway", "password": password},
    )
    return data


def parse(data: dict[str, Any], environ: dict[str, str] | None = None) -> Config:
    return parse_config(data, "test.yaml", environ or {})


def config_error(data: dict[str, Any], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(data, environ)
    return str(caught.value)


def test_minimal_config_parses_with_defaults() -> None:
    config = parse(minimal())

    assert config.listeners[0].bind_address == ("127.0.0.1", 9092)
    assert config.listeners[0].advertised_address == ("127.0.0.1", 9092)
    assert config.listeners[0].security_protocol == "SASL_PLAINTEXT"
    assert config.clusters.primary.addresses == [("kafka", 9092)]
    assert config.clusters.primary.security_protocol == "PLAINTEXT"
    assert config.clusters.secondary is None
    assert config.admin.bind_address == ("127.0.0.1", 8080)
    assert config.users == []


def test_the_replication_watch_has_defaults_and_refuses_a_bad_topics_regex() -> None:
    replication = parse(minimal()).clusters.replication
    assert (replication.source_alias, replication.target_alias) == ("primary", "secondary")
    assert replication.watch_interval_seconds == 30.0 and replication.topic_pattern is None
    data = minimal()
    data["clusters"]["replication"] = {"topics": "orders-(", "watch_interval_seconds": None}
    message = config_error(data)
    assert "test.yaml" in message and "clusters.replication.topics" in message
    assert "not a regular expression" in message
    data["clusters"]["replication"] = {"topics": "orders-.*", "groups": "[billing"}
    assert "clusters.replication.groups" in config_error(data)
    data["clusters"]["replication"]["groups"] = "billing-.*"
    replication = parse(data).clusters.replication
    assert replication.topic_pattern is not None and replication.group_pattern is not None
    assert replication.topic_pattern.fullmatch("orders-eu")
    assert replication.group_pattern.fullmatch("billing-eu")


def test_ipv6_listener_address_is_split_without_brackets() -> None:
    data = minimal()
    data["listeners"][0]["bind"] = "[::1]:9092"

    assert parse(data).listeners[0].bind_address == ("::1", 9092)


@pytest.mark.parametrize("bind", ["nope", "host:", ":9092", "host:99999", "host:port"])
def test_bad_listener_address_names_the_field(bind: str) -> None:
    data = minimal()
    data["listeners"][0]["bind"] = bind

    assert "listeners.0.bind" in config_error(data)


def test_bad_bootstrap_server_names_the_field() -> None:
    data = minimal()
    data["clusters"]["primary"]["bootstrap_servers"] = ["kafka:9092", "broken"]

    assert "clusters.primary.bootstrap_servers" in config_error(data)


def test_missing_primary_cluster_names_the_field() -> None:
    data = minimal()
    data["clusters"] = {}

    message = config_error(data)

    assert "clusters.primary" in message
    assert "Field required" in message


def test_error_names_the_source_file() -> None:
    data = minimal()
    del data["listeners"]

    assert "test.yaml" in config_error(data)


@pytest.mark.parametrize(
    ("path", "where"),
    [
        ((), "bogus"),
        (("clusters", "primary"), "clusters.primary.bogus"),
        (("admin",), "admin.bogus"),
    ],
)
def test_unknown_keys_are_rejected_with_their_path(path: tuple[str, ...], where: str) -> None:
    data = minimal()
    data.setdefault("admin", {})
    node = data
    for key in path:
        node = node[key]
    node["bogus"] = 1

    message = config_error(data)

    assert where in message
    assert "Extra inputs are not permitted" in message


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_protocols_require_sasl_settings(protocol: str) -> None:
    data = minimal()
    data["clusters"]["primary"]["security_protocol"] = protocol

    message = config_error(data)

    assert "clusters.primary" in message
    assert "sasl is required" in message


def test_sasl_settings_without_a_sasl_protocol_are_rejected() -> None:
    data = with_sasl({"env": "PW"})
    data["clusters"]["primary"]["security_protocol"] = "SSL"

    assert "sasl is set but security_protocol is SSL" in config_error(data)


def test_sasl_protocol_with_sasl_settings_parses() -> None:
    config = parse(with_sasl({"env": "PW"}))

    sasl = config.clusters.primary.sasl
    assert sasl is not None
    assert sasl.password.env == "PW"


def test_duplicate_listener_names_are_rejected() -> None:
    data = minimal()
    data["listeners"].append({"name": "plain", "bind": "127.0.0.1:9093"})

    assert "duplicate listener names: plain" in config_error(data)


def test_duplicate_user_names_are_rejected() -> None:
    data = minimal()
    user = {"name": "alice", "password_hash": "pbkdf2_sha256$1000$AAAA$AAAA"}
    data["users"] = [user, dict(user)]

    assert "duplicate user names: alice" in config_error(data)


def test_malformed_user_password_hash_names_the_field() -> None:
    data = minimal()
    data["users"] = [{"name": "alice", "password_hash": "plaintext-password"}]

    assert "users.0.password_hash" in config_error(data)


def test_top_level_that_is_not_a_mapping_is_rejected() -> None:
    with pytest.raises(ConfigError, match="mapping"):
        parse_config(["listeners"], "test.yaml", {})


# Environment overrides ----------------------------------------------------------------


def test_env_override_sets_a_nested_field() -> None:
    config = parse(minimal(), {"GATEWAY__ADMIN__BIND": "0.0.0.0:9000"})

    assert config.admin.bind == "0.0.0.0:9000"


def test_env_override_values_are_typed_like_yaml() -> None:
    config = parse(
        minimal(),
        {
            "GATEWAY__LIMITS__MAX_FRAME_BYTES": "1000",
            "GATEWAY__CLUSTERS__PRIMARY__BOOTSTRAP_SERVERS": '["a:1", "b:2"]',
        },
    )

    assert config.limits.max_frame_bytes == 1000
    assert config.clusters.primary.addresses == [("a", 1), ("b", 2)]


def test_env_override_replaces_a_value_from_the_file() -> None:
    data = minimal()
    data["admin"] = {"bind": "127.0.0.1:1"}

    assert parse(data, {"GATEWAY__ADMIN__BIND": "127.0.0.1:2"}).admin.bind == "127.0.0.1:2"


def test_invalid_env_override_names_the_field() -> None:
    message = config_error(minimal(), {"GATEWAY__LIMITS__MAX_FRAME_BYTES": "0"})

    assert "limits.max_frame_bytes" in message


def test_variables_without_the_prefix_are_ignored() -> None:
    config = parse(minimal(), {"ADMIN__BIND": "0.0.0.0:9000", "GATEWAY_ADMIN_BIND": "x"})

    assert config.admin.bind == "127.0.0.1:8080"


def test_explicit_environ_replaces_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY__ADMIN__BIND", "0.0.0.0:9000")

    assert parse_config(minimal(), "test.yaml", {}).admin.bind == "127.0.0.1:8080"
    assert parse_config(minimal(), "test.yaml").admin.bind == "0.0.0.0:9000"


def test_env_override_of_a_text_field_keeps_digits_as_text() -> None:
    # A cluster id (or a username, or a password given as a value) made of digits is
    # still text; the override must not turn it into a number the field then rejects.
    config = parse(minimal(), {"GATEWAY__GATEWAY__CLUSTER_ID": "12345"})

    assert config.gateway.cluster_id == "12345"


# Secrets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [{}, {"value": INLINE_SECRET, "env": "PW"}, {"env": "PW", "file": "/run/pw"}],
)
def test_secret_reference_needs_exactly_one_source(password: dict[str, Any]) -> None:
    message = config_error(with_sasl(password))

    assert "clusters.primary.sasl.password" in message
    assert "exactly one of value, env, file" in message
    assert INLINE_SECRET not in message


def test_secret_from_env_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_TEST_PASSWORD", "from-env")

    assert SecretRef(env="GATEWAY_TEST_PASSWORD").resolve() == "from-env"


def test_secret_from_file_resolves_without_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-file\n", encoding="utf-8")

    config = parse(with_sasl({"file": str(secret)}))

    sasl = config.clusters.primary.sasl
    assert sasl is not None
    assert sasl.password.resolve() == "from-file"


def test_inline_secret_resolves() -> None:
    assert SecretRef(value=INLINE_SECRET).resolve() == INLINE_SECRET


def test_missing_env_variable_raises_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GATEWAY_TEST_MISSING", raising=False)

    with pytest.raises(ConfigError, match="GATEWAY_TEST_MISSING"):
        SecretRef(env="GATEWAY_TEST_MISSING").resolve()


def test_unreadable_secret_file_raises_config_error_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent"

    with pytest.raises(ConfigError, match="absent"):
        SecretRef(file=missing).resolve()


def test_repr_and_str_of_config_never_contain_an_inline_secret() -> None:
    config = parse(with_sasl({"value": INLINE_SECRET}))

    assert INLINE_SECRET not in repr(config)
    assert INLINE_SECRET not in str(config)
    assert INLINE_SECRET not in config.model_dump_json()
    sasl = config.clusters.primary.sasl
    assert sasl is not None
    assert sasl.password.resolve() == INLINE_SECRET


# Files --------------------------------------------------------------------------------

EXAMPLE = Path(gateway.__file__).parent / "examples" / "dev.yaml"


def test_shipped_dev_example_loads() -> None:
    config = load_config(EXAMPLE, environ={})

    assert [(item.name, item.security_protocol) for item in config.listeners] == [
        ("plaintext", "PLAINTEXT"),
        ("sasl", "SASL_PLAINTEXT"),
        ("sasl-ssl", "SASL_SSL"),
        ("mtls", "SSL"),
    ]
    assert config.clusters.secondary is not None
    sasl = config.clusters.primary.sasl
    assert sasl is not None
    assert sasl.password.file is not None
    assert sasl.password.value is None


def test_shipped_dev_example_users_have_the_documented_passwords() -> None:
    config = load_config(EXAMPLE, environ={})

    assert [u.name for u in config.users] == ["dev-client", "dev-admin", "dev-analyst"]
    for user in config.users:
        assert user.password_hash is not None
        assert verify_password(f"{user.name}-secret", user.password_hash)


def test_shipped_dev_example_enforces_the_shipped_policies() -> None:
    config = load_config(EXAMPLE, environ={})

    assert config.policy.dir == Path("policies")
    assert (Path(__file__).parents[2] / config.policy.dir / "anonymous.yaml").is_file()


def test_load_config_of_missing_file_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml", environ={})


def test_load_config_of_invalid_yaml_raises_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("listeners: [unclosed\n", encoding="utf-8")

    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path, environ={})


def test_load_config_of_empty_file_reports_missing_fields(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")

    with pytest.raises(ConfigError, match="listeners"):
        load_config(path, environ={})
