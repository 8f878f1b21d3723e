"""Safeguards: the policy-file syntax, its errors (file:line: field), and what check()
refuses for each constraint, in every served version of the APIs it reads."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path, PurePath
from typing import Any

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.legacy_records import LegacyRecordBatchBuilder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import PolicyError
from gateway.identity import Identity
from gateway.policy import CLUSTER_NAME, ResourceType
from gateway.policy.loader import Policy, build_policy, load_policy_dir
from gateway.policy.operations import Scope, required_actions
from gateway.policy.safeguards import CHECKERS, CODECS, NEVER_CHECKED, Violation, check
from gateway.protocol import versions as api
from tests.unit.kafka_strategies import request_bodies
from tests.unit.test_authz_operations import part, request

REPO = Path(__file__).resolve().parents[2]
T, C = ResourceType.TOPIC, ResourceType.CLUSTER
APP = Identity(principal="app", mechanism="PLAIN", groups=("apps",))
ADMIN = Identity(principal="root", mechanism="PLAIN", groups=("admins",))
FILE = "policies/safeguards.yaml"

BOUNDS = """\
safeguards:
  - id: topic-bounds
    subjects: {groups: [apps]}
    topics: [{prefix: app-}, {literal: shared}, {glob: "team-*-events"}]
    create_topics:
      max_partitions: 12
      min_replication_factor: 2
      max_replication_factor: 3
      configs:
        retention.ms: {min: 3600000, max: 604800000}
        cleanup.policy: {allowed: [delete, compact]}
        preallocate: {forbidden: true}
    alter_configs:
      configs:
        retention.ms: {min: 3600000, max: 604800000}
        cleanup.policy: {allowed: [delete, compact]}
        preallocate: {forbidden: true}
  - id: naming
    subjects: {groups: [apps]}
    create_topics: {name_pattern: "(app|team)-[a-z0-9-]+|shared|other"}
  - id: payments
    topics: [{prefix: payments}]
    produce: {acks: all, max_batch_bytes: 4096, compression: [gzip, lz4, zstd]}
"""
POLICY = build_policy({FILE: BOUNDS.encode()})
SOURCE = {"topic-bounds": f"{FILE}:2", "naming": f"{FILE}:18", "payments": f"{FILE}:21"}


def problems(text: str, name: str = "policies/p.yaml") -> tuple[str, ...]:
    with pytest.raises(PolicyError) as caught:
        build_policy({name: text.encode()})
    return caught.value.problems


def violations(body: Any, identity: Identity = APP, policy: Policy = POLICY) -> list[Violation]:
    return list(check(policy, identity, int(body.__api_key__), body, "client"))


def refused(body: Any, identity: Identity = APP) -> dict[str, str]:
    """Refused topic -> message."""
    return {v.name: v.message for v in violations(body, identity)}


def message(rule_id: str, problem: str) -> str:
    # Clients read the message: it names the file and line, never the directory.
    return f"rule {rule_id} ({PurePath(SOURCE[rule_id]).name}): {problem}"


# -- the policy file -------------------------------------------------------------------


def test_safeguards_compile_with_their_source_line() -> None:
    assert [(s.id, s.source) for s in POLICY.safeguards] == list(SOURCE.items())
    assert POLICY.rules == ()


def test_a_file_may_hold_rules_and_safeguards() -> None:
    text = (
        "rules:\n  - id: r1\n    effect: allow\n    subjects: {principals: [a]}\n"
        "    resources: [{type: topic, literal: t}]\n    operations: [read]\n"
        "safeguards:\n  - id: s1\n    client_id_pattern: 'app-.*'\n"
    )
    policy = build_policy({"p.yaml": text.encode()})
    assert [r.id for r in policy.rules] == ["r1"]
    assert [(s.id, s.source) for s in policy.safeguards] == [("s1", "p.yaml:8")]


def test_shipped_safeguards_bound_the_app_and_protect_payments() -> None:
    policy = load_policy_dir(REPO / "policies")
    client = Identity(principal="dev-client", mechanism="SCRAM-SHA-256")
    admin = Identity(principal="dev-admin", mechanism="PLAIN", groups=("dev-admins",))
    big = _create(7, _topic(7, "demo-big", partitions=1000, replication=1))
    (found,) = check(policy, client, api.CREATE_TOPICS, big, "adminclient-1")
    assert found.rule_id == "demo-topic-bounds"
    assert "partitions=1000 is more than max_partitions 12" in found.message
    assert check(policy, admin, api.CREATE_TOPICS, big, "adminclient-1") == ()
    plain = _produce(9, {"name": "payments"}, records=_batch(codec=0), acks=-1)
    (found,) = check(policy, admin, api.PRODUCE, plain, "producer-1")
    assert found.rule_id == "payments-protected"


def test_ids_are_unique_across_rules_and_safeguards() -> None:
    rules = (
        "rules:\n  - id: shared-id\n    effect: allow\n    subjects: {principals: [a]}\n"
        "    resources: [{type: topic, literal: t}]\n    operations: [read]\n"
    )
    guards = "safeguards:\n  - id: other\n    client_id_pattern: x\n  - id: shared-id\n"
    guards += "    client_id_pattern: y\n"
    found = problems_of({"policies/a.yaml": rules, "policies/b.yaml": guards})
    assert found == (
        "policies/b.yaml:4: safeguards[1].id: safeguard id 'shared-id' is already used "
        "at policies/a.yaml:2",
    )


def test_ids_are_unique_among_safeguards_of_one_file() -> None:
    text = "safeguards:\n  - id: s\n    client_id_pattern: x\n  - id: s\n    client_id_pattern: y\n"
    assert problems(text) == (
        "policies/p.yaml:4: safeguards[1].id: safeguard id 's' is already used "
        "at policies/p.yaml:2",
    )


def problems_of(sources: dict[str, str]) -> tuple[str, ...]:
    with pytest.raises(PolicyError) as caught:
        build_policy({k: v.encode() for k, v in sources.items()})
    return caught.value.problems


GUARD = "safeguards:\n  - id: s\n"  # the safeguard's keys start on line 3


@pytest.mark.parametrize(
    ("body", "where", "says"),
    [
        (
            "    create_topics:\n      configs:\n        retention.ms: {min: 1, allowed: [2]}\n",
            "5: safeguards[0].create_topics.configs.retention.ms",
            "give exactly one of allowed, min/max, forbidden: true",
        ),
        (
            "    create_topics:\n      configs:\n        retention.ms: {min: 9, max: 1}\n",
            "5: safeguards[0].create_topics.configs.retention.ms",
            "min 9 is greater than max 1",
        ),
        (
            "    create_topics:\n      configs:\n        retention.ms: {allowed: []}\n",
            "5: safeguards[0].create_topics.configs.retention.ms",
            "allowed: list at least one value",
        ),
        (
            "    create_topics:\n      max_partitions: 0\n",
            "4: safeguards[0].create_topics.max_partitions",
            "greater than or equal to 1",
        ),
        (
            "    create_topics:\n      min_replication_factor: 3\n"
            "      max_replication_factor: 2\n",
            "3: safeguards[0].create_topics",
            "min_replication_factor 3 is greater than 2",
        ),
        (
            "    create_topics: {name_pattern: 'app-('}\n",
            "3: safeguards[0].create_topics.name_pattern",
            "not a regular expression",
        ),
        (
            "    client_id_pattern: '['\n",
            "3: safeguards[0].client_id_pattern",
            "not a regular expression",
        ),
        (
            "    produce:\n      compression: [gzip, brotli]\n",
            "4: safeguards[0].produce.compression[1]",
            "'none', 'gzip', 'snappy', 'lz4' or 'zstd'",
        ),
        ("    produce: {acks: 1}\n", "3: safeguards[0].produce.acks", "'all'"),
        ("    produce: {max_bytes: 1}\n", "3: safeguards[0].produce.max_bytes", "Extra inputs"),
        (
            "    topics: [{prefix: a, glob: 'b*'}]\n    produce: {acks: all}\n",
            "3: safeguards[0].topics[0]",
            "give exactly one of literal, prefix, glob",
        ),
        (
            "    topics: []\n    produce: {acks: all}\n",
            "3: safeguards[0].topics",
            "list at least one",
        ),
        (
            "    subjects: {}\n    produce: {acks: all}\n",
            "3: safeguards[0].subjects",
            "name at least one of principals",
        ),
        (
            "    description: nothing bounded\n",
            "2: safeguards[0]",
            "give at least one of create_topics, alter_configs, produce, client_id_pattern",
        ),
        ("    alter_configs: {}\n", "3: safeguards[0].alter_configs.configs", "Field required"),
    ],
)
def test_invalid_safeguards_name_file_line_and_field(body: str, where: str, says: str) -> None:
    (found,) = problems(GUARD + body)
    assert found.startswith(f"policies/p.yaml:{where}: "), found
    assert says in found


def test_allowed_values_may_be_written_as_yaml_numbers() -> None:
    text = GUARD + "    alter_configs:\n      configs:\n        min.insync.replicas: "
    policy = build_policy({"p.yaml": (text + "{allowed: [1, 2]}\n").encode()})
    ok = _alter(2, ("t", (("min.insync.replicas", "2"),)))
    bad = _alter(2, ("t", (("min.insync.replicas", "3"),)))
    assert violations(ok, policy=policy) == []
    assert violations(bad, policy=policy)[0].message.endswith(
        "min.insync.replicas=3 is not allowed (allowed: 1, 2)"
    )


# -- CreateTopics and CreatePartitions -------------------------------------------------

CREATE_VERSIONS = range(api.IMPLEMENTED[api.CREATE_TOPICS].min, 8)


def _topic(
    version: int,
    name: str,
    partitions: int = 3,
    replication: int = 2,
    configs: tuple[tuple[str, str | None], ...] = (),
    assignments: tuple[tuple[int, ...], ...] = (),
) -> Any:
    p = part(api.CREATE_TOPICS, version)
    return p.CreatableTopic(
        name=name,
        num_partitions=partitions,
        replication_factor=replication,
        configs=tuple(p.CreatableTopicConfig(name=k, value=v) for k, v in configs),
        assignments=tuple(
            p.CreatableReplicaAssignment(partition_index=n, broker_ids=ids)
            for n, ids in enumerate(assignments)
        ),
    )


def _create(version: int, *topics: Any, validate_only: bool = False) -> Any:
    return request(api.CREATE_TOPICS, version, topics=topics, validate_only=validate_only)


@pytest.mark.parametrize("version", CREATE_VERSIONS)
def test_create_topics_within_bounds_passes(version: int) -> None:
    configs = (("retention.ms", "86400000"), ("cleanup.policy", "compact,delete"))
    body = _create(version, _topic(version, "app-orders", 12, 3, configs))
    assert violations(body) == []


@pytest.mark.parametrize("version", CREATE_VERSIONS)
@pytest.mark.parametrize("validate_only", [False, True])
def test_create_topics_refuses_each_topic_out_of_bounds_alone(
    version: int, validate_only: bool
) -> None:
    body = _create(
        version,
        _topic(version, "app-ok"),
        _topic(version, "app-wide", partitions=1000),
        _topic(version, "app-forever", configs=(("retention.ms", "-1"),)),
        validate_only=validate_only,
    )
    found = violations(body)
    assert [(v.resource_type, v.name, v.scope, v.rule_id) for v in found] == [
        (T, "app-wide", Scope.ITEM, "topic-bounds"),
        (T, "app-forever", Scope.ITEM, "topic-bounds"),
    ]
    assert found[0].message == message(
        "topic-bounds", "partitions=1000 is more than max_partitions 12"
    )
    assert found[1].message == message(
        "topic-bounds", "retention.ms=-1 (-1 means no limit) is outside 3600000..604800000"
    )


@pytest.mark.parametrize(
    ("topic", "problem"),
    [
        (
            {"partitions": -1},
            "partitions=-1 (the broker's default) cannot be held to max_partitions 12",
        ),
        (
            {"replication": -1},
            "replication factor -1 (the broker's default) cannot be held to 2..3",
        ),
        ({"replication": 1}, "replication factor 1 is outside 2..3"),
        ({"replication": 4}, "replication factor 4 is outside 2..3"),
        (
            {"partitions": -1, "replication": -1, "assignments": ((1, 2),) * 13},
            "partitions=13 is more than max_partitions 12",
        ),
        (
            {"partitions": -1, "replication": -1, "assignments": ((1, 2), (1,))},
            "replication factor 1 is outside 2..3",
        ),
        (
            {"configs": (("retention.ms", "604800001"),)},
            "retention.ms=604800001 is outside 3600000..604800000",
        ),
        (
            {"configs": (("retention.ms", "1h"),)},
            "retention.ms='1h' is not an integer; the bound is 3600000..604800000",
        ),
        (
            {"configs": (("cleanup.policy", "compact,shred"),)},
            "cleanup.policy=compact,shred is not allowed (allowed: delete, compact)",
        ),
        ({"configs": (("preallocate", "true"),)}, "preallocate may not be set (forbidden)"),
        ({"configs": (("preallocate", None),)}, "preallocate may not be set (forbidden)"),
    ],
)
def test_create_topics_says_what_was_asked_and_the_bound(
    topic: dict[str, Any], problem: str
) -> None:
    for version in CREATE_VERSIONS:
        body = _create(version, _topic(version, "app-t", **topic))
        assert refused(body) == {"app-t": message("topic-bounds", problem)}


def test_create_topics_with_manual_assignments_within_bounds_passes() -> None:
    body = _create(7, _topic(7, "app-t", -1, -1, assignments=((1, 2), (2, 3, 1))))
    assert violations(body) == []


def test_create_topics_leaves_unbounded_and_null_configs_to_the_broker() -> None:
    configs = (("retention.ms", None), ("segment.ms", "-1"))
    assert violations(_create(7, _topic(7, "app-t", configs=configs))) == []


def test_create_topics_name_pattern_must_match_the_whole_name() -> None:
    body = _create(7, _topic(7, "other"), _topic(7, "app-x!"), _topic(7, "xshared"))
    assert refused(body) == {
        "app-x!": message(
            "naming", "topic name 'app-x!' does not match '(app|team)-[a-z0-9-]+|shared|other'"
        ),
        "xshared": message(
            "naming", "topic name 'xshared' does not match '(app|team)-[a-z0-9-]+|shared|other'"
        ),
    }


@pytest.mark.parametrize(
    ("name", "bounded"),
    [
        ("app-x", True),
        ("shared", True),
        ("team-a-events", True),
        ("team-a-logs", False),
        ("other", False),
        ("sharedx", False),
    ],
)
def test_topic_patterns_choose_which_topics_are_bounded(name: str, bounded: bool) -> None:
    body = _create(7, _topic(7, name, partitions=100))
    assert ("topic-bounds" in {v.rule_id for v in violations(body)}) is bounded


def test_safeguards_bound_only_their_subjects() -> None:
    body = _create(7, _topic(7, "app-x", partitions=100))
    assert violations(body, ADMIN) == []
    listener = build_policy(
        {
            "p.yaml": b"safeguards:\n  - id: s\n    subjects: {listeners: [plaintext]}\n"
            b"    create_topics: {max_partitions: 1}\n"
        }
    )
    outside = Identity(principal="anonymous", mechanism="none", listener="plaintext")
    assert [v.rule_id for v in check(listener, outside, 19, body, None)] == ["s"]
    assert check(listener, APP, 19, body, None) == ()


CREATE_PARTITIONS_VERSIONS = range(0, api.IMPLEMENTED[api.CREATE_PARTITIONS].max + 1)


@pytest.mark.parametrize("version", CREATE_PARTITIONS_VERSIONS)
def test_create_partitions_holds_the_new_count_to_max_partitions(version: int) -> None:
    p = part(api.CREATE_PARTITIONS, version)
    body = request(
        api.CREATE_PARTITIONS,
        version,
        topics=(
            p.CreatePartitionsTopic(name="app-a", count=12, assignments=None),
            p.CreatePartitionsTopic(name="app-b", count=13, assignments=None),
            p.CreatePartitionsTopic(name="elsewhere", count=500, assignments=None),
        ),
    )
    assert refused(body) == {
        "app-b": message("topic-bounds", "partitions=13 is more than max_partitions 12")
    }


@given(partitions=st.integers(-1, 2**31 - 1))
def test_partitions_are_refused_exactly_above_the_bound_or_left_to_the_broker(
    partitions: int,
) -> None:
    body = _create(7, _topic(7, "app-t", partitions=partitions))
    assert bool(violations(body)) is (partitions > 12 or partitions == -1)


# -- AlterConfigs and IncrementalAlterConfigs ------------------------------------------

TOPIC_RESOURCE, BROKER_RESOURCE = 2, 4


def _alter(version: int, *resources: tuple[str, tuple[tuple[str, str | None], ...]]) -> Any:
    p = part(api.ALTER_CONFIGS, version)
    return request(
        api.ALTER_CONFIGS,
        version,
        resources=tuple(
            p.AlterConfigsResource(
                resource_type=TOPIC_RESOURCE,
                resource_name=name,
                configs=tuple(p.AlterableConfig(name=k, value=v) for k, v in configs),
            )
            for name, configs in resources
        ),
    )


@pytest.mark.parametrize("version", range(0, api.IMPLEMENTED[api.ALTER_CONFIGS].max + 1))
def test_alter_configs_holds_topic_configs_to_their_bounds(version: int) -> None:
    body = _alter(
        version,
        ("app-ok", (("retention.ms", "3600000"), ("cleanup.policy", "delete"))),
        ("app-bad", (("cleanup.policy", "delete"), ("retention.ms", "60000"))),
        ("other", (("retention.ms", "-1"),)),
    )
    assert refused(body) == {
        "app-bad": message("topic-bounds", "retention.ms=60000 is outside 3600000..604800000")
    }


def test_alter_configs_leaves_broker_resources_alone() -> None:
    p = part(api.ALTER_CONFIGS, 2)
    broker = p.AlterConfigsResource(
        resource_type=BROKER_RESOURCE,
        resource_name="app-0",
        configs=(p.AlterableConfig(name="retention.ms", value="-1"),),
    )
    assert violations(request(api.ALTER_CONFIGS, 2, resources=(broker,))) == []


SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


def _incremental(version: int, name: str, *configs: tuple[str, int, str | None]) -> Any:
    p = part(api.INCREMENTAL_ALTER_CONFIGS, version)
    resource = p.AlterConfigsResource(
        resource_type=TOPIC_RESOURCE,
        resource_name=name,
        configs=tuple(
            p.AlterableConfig(name=k, config_operation=op, value=v) for k, op, v in configs
        ),
    )
    return request(api.INCREMENTAL_ALTER_CONFIGS, version, resources=(resource,))


INCREMENTAL_VERSIONS = range(0, api.IMPLEMENTED[api.INCREMENTAL_ALTER_CONFIGS].max + 1)


@pytest.mark.parametrize("version", INCREMENTAL_VERSIONS)
@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (("retention.ms", SET, "7200000"), None),
        (
            ("retention.ms", SET, "-1"),
            "retention.ms=-1 (-1 means no limit) is outside 3600000..604800000",
        ),
        (("retention.ms", DELETE, None), None),
        (("cleanup.policy", APPEND, "compact"), None),
        (
            ("cleanup.policy", APPEND, "shred"),
            "cleanup.policy=shred is not allowed (allowed: delete, compact)",
        ),
        (("cleanup.policy", SUBTRACT, "delete"), None),
        (("preallocate", SET, "true"), "preallocate may not be set (forbidden)"),
        (("preallocate", DELETE, None), "preallocate may not be changed (forbidden)"),
        (("preallocate", SUBTRACT, "x"), "preallocate may not be changed (forbidden)"),
        (("segment.ms", SET, "1"), None),
    ],
)
def test_incremental_alter_configs_checks_each_operation(
    version: int, config: tuple[str, int, str | None], problem: str | None
) -> None:
    found = refused(_incremental(version, "app-t", config))
    assert found == ({"app-t": message("topic-bounds", problem)} if problem else {})


# -- Produce ---------------------------------------------------------------------------

PRODUCE_VERSIONS = range(api.IMPLEMENTED[api.PRODUCE].min, api.IMPLEMENTED[api.PRODUCE].max + 1)


def _batch(codec: int, value: bytes = b"v" * 10) -> bytes:
    """A record batch whose header names ``codec``. Only gzip is compressed for real
    (the other codecs' libraries need not be installed); the checks read the header's
    codec bits and never the payload, so the other codecs are written into the header
    of an uncompressed batch."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec if codec in (0, 1) else 0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    builder.append(0, timestamp=None, key=None, value=value, headers=[])
    batch = bytearray(builder.build())
    batch[22] = (batch[22] & ~0x07) | codec  # attributes: int16 at 21, codec in bits 0-2
    return bytes(batch)


def _legacy(magic: int) -> bytes:
    builder = LegacyRecordBatchBuilder(magic=magic, compression_type=1, batch_size=1 << 20)
    builder.append(0, timestamp=None, key=None, value=b"v")
    return bytes(builder.build())


def _produce(version: int, *topics: dict[str, Any], records: bytes | None, acks: int) -> Any:
    p = part(api.PRODUCE, version)
    data = tuple(
        p.TopicProduceData(
            **topic, partition_data=(p.PartitionProduceData(index=0, records=records),)
        )
        for topic in topics
    )
    return request(api.PRODUCE, version, acks=acks, topic_data=data)


def _named(version: int, name: str) -> dict[str, Any]:
    return {"name": name} if version < 13 else {"topic_id": NAMED_IDS[name]}


NAMED_IDS = {
    "payments-eu": uuid.UUID(int=1),
    "orders": uuid.UUID(int=2),
    "payments": uuid.UUID(int=3),
}
NAMES = {v: k for k, v in NAMED_IDS.items()}


def produce_refused(body: Any, identity: Identity = ADMIN) -> dict[str, str]:
    found = check(POLICY, identity, api.PRODUCE, body, "producer", topic_names=NAMES)
    return {v.name: v.message for v in found}


@pytest.mark.parametrize("version", PRODUCE_VERSIONS)
def test_produce_to_protected_topic_needs_acks_all_even_for_admins(version: int) -> None:
    topics = (_named(version, "payments-eu"), _named(version, "orders"))
    ok = _produce(version, *topics, records=_batch(codec=1), acks=-1)
    leader_only = _produce(version, *topics, records=_batch(codec=1), acks=1)
    assert produce_refused(ok) == {}
    assert produce_refused(leader_only) == {
        "payments-eu": message("payments", "acks=1, but this topic needs acks=all (-1)")
    }


@pytest.mark.parametrize("version", PRODUCE_VERSIONS)
@pytest.mark.parametrize(
    ("records", "problem"),
    [
        (_batch(codec=1), None),
        (_batch(codec=4) + _batch(codec=3), None),
        (None, None),
        (
            _batch(codec=0),
            "partition 0: compression none is not allowed (allowed: gzip, lz4, zstd)",
        ),
        (
            _batch(codec=1) + _batch(codec=2),
            "partition 0: compression snappy is not allowed (allowed: gzip, lz4, zstd)",
        ),
        (
            _legacy(1),
            "partition 0: a magic 1 message set has no batch codec (allowed: gzip, lz4, zstd)",
        ),
        (
            _legacy(0),
            "partition 0: a magic 0 message set has no batch codec (allowed: gzip, lz4, zstd)",
        ),
        (_batch(codec=1)[:-1], "partition 0: records hold a batch whose length does not fit them"),
        (_batch(codec=1) + b"\0" * 20, "partition 0: records end inside a batch header"),
    ],
)
def test_produce_reads_each_batch_codec_without_decompressing(
    version: int, records: bytes | None, problem: str | None
) -> None:
    body = _produce(version, _named(version, "payments"), records=records, acks=-1)
    assert produce_refused(body) == ({"payments": message("payments", problem)} if problem else {})


@pytest.mark.parametrize("version", PRODUCE_VERSIONS)
def test_produce_bounds_each_partitions_records_bytes(version: int) -> None:
    small = _batch(codec=1, value=b"x" * 100)
    # Hash output does not compress: the gzip batch stays larger than the bound.
    big = _batch(codec=1, value=b"".join(hashlib.sha256(bytes([n])).digest() for n in range(200)))
    assert len(small) <= 4096 < len(big)
    assert (
        produce_refused(_produce(version, _named(version, "payments"), records=small, acks=-1))
        == {}
    )
    found = produce_refused(_produce(version, _named(version, "payments"), records=big, acks=-1))
    assert found == {
        "payments": message(
            "payments",
            f"partition 0: {len(big)} bytes of records is more than max_batch_bytes 4096",
        )
    }


def test_produce_by_unknown_topic_id_is_named_as_authorization_names_it() -> None:
    stranger = uuid.UUID(int=99)
    body = _produce(13, {"topic_id": stranger}, records=_batch(codec=0), acks=0)
    assert produce_refused(body) == {}
    (item,) = required_actions(api.PRODUCE, body, NAMES)
    assert item.name == str(stranger)


@given(codecs=st.lists(st.integers(0, 4), min_size=1, max_size=5))
def test_a_partition_is_refused_exactly_when_one_batch_codec_is_not_allowed(
    codecs: list[int],
) -> None:
    records = b"".join(_batch(codec=c) for c in codecs)
    body = _produce(9, {"name": "payments"}, records=records, acks=-1)
    wanted = {"gzip", "lz4", "zstd"}
    assert bool(produce_refused(body)) is any(CODECS[c] not in wanted for c in codecs)


# -- client ids, order, what is never checked ------------------------------------------

CLIENT_IDS = build_policy(
    {
        "ids.yaml": b"safeguards:\n  - id: ids\n    subjects: {groups: [apps]}\n"
        b"    client_id_pattern: 'app-[a-z]+'\n"
        b"  - id: bounds\n    create_topics: {max_partitions: 1}\n"
        b"  - id: bounds-again\n    create_topics: {max_partitions: 2}\n"
    }
)


def test_client_id_pattern_refuses_the_whole_request_of_its_subjects() -> None:
    body = _create(7, _topic(7, "t", partitions=1))
    (found,) = check(CLIENT_IDS, APP, api.CREATE_TOPICS, body, "rdkafka")
    assert (found.resource_type, found.name, found.scope) == (C, CLUSTER_NAME, Scope.REQUEST)
    assert found.message == "rule ids (ids.yaml:2): client id 'rdkafka' does not match 'app-[a-z]+'"
    assert check(CLIENT_IDS, APP, api.CREATE_TOPICS, body, "app-orders") == ()
    assert check(CLIENT_IDS, APP, api.CREATE_TOPICS, body, None)[0].scope is Scope.REQUEST
    assert check(CLIENT_IDS, ADMIN, api.CREATE_TOPICS, body, "rdkafka") == ()


@pytest.mark.parametrize("api_key", sorted(NEVER_CHECKED))
def test_connecting_and_logging_in_are_never_checked(api_key: int) -> None:
    assert api_key in (api.API_VERSIONS, api.SASL_HANDSHAKE, api.SASL_AUTHENTICATE)
    assert check(CLIENT_IDS, APP, api_key, None, "rdkafka") == ()


def test_one_violation_per_item_from_the_first_safeguard_and_the_request_first() -> None:
    body = _create(7, _topic(7, "t", partitions=5))
    found = check(CLIENT_IDS, APP, api.CREATE_TOPICS, body, "rdkafka")
    assert [(v.name, v.rule_id) for v in found] == [(CLUSTER_NAME, "ids"), ("t", "bounds")]


def test_a_policy_without_safeguards_refuses_nothing() -> None:
    empty = build_policy(
        {
            "p.yaml": b"rules:\n  - id: r\n    effect: allow\n    subjects: {principals: [a]}\n"
            b"    resources: [{type: topic, literal: t}]\n    operations: [all]\n"
        }
    )
    body = _create(7, _topic(7, "app-t", partitions=10_000))
    assert check(empty, APP, api.CREATE_TOPICS, body, "x") == ()


SERVED = sorted(
    (key, version)
    for key, served in api.IMPLEMENTED.items()
    if key not in NEVER_CHECKED
    for version in range(served.min, served.max + 1)
    if key in CHECKERS and not (key == api.PRODUCE and version >= 13)
)
EVERYTHING = build_policy(
    {
        "all.yaml": b"safeguards:\n  - id: all\n    create_topics:\n      max_partitions: 1\n"
        b"      min_replication_factor: 2\n      name_pattern: 'a'\n"
        b"      configs: {x: {min: 1}, y: {allowed: [a]}}\n"
        b"    alter_configs: {configs: {x: {forbidden: true}, y: {min: 1}}}\n"
        b"    produce: {acks: all, max_batch_bytes: 10, compression: [zstd]}\n"
    }
)


@pytest.mark.parametrize(("api_key", "version"), SERVED)
@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_violations_name_items_as_authorization_names_them(
    api_key: int, version: int, data: st.DataObject
) -> None:
    body = data.draw(request_bodies(api_key, version))
    items = {(i.resource_type, i.name) for i in required_actions(api_key, body, {})}
    for violation in check(EVERYTHING, APP, api_key, body, "x"):
        assert (violation.resource_type, violation.name) in items
        assert violation.message.startswith("rule all (all.yaml:2): ")
