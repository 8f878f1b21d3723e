"""The dev MirrorMaker 2's settings and records, without starting it (the integration
test `test_mirror.py` runs the real one between the dev clusters)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gateway.dev import mirror
from gateway.dev.layout import cluster_layout
from gateway.dev.state import ClusterInfo, stopped_info


def _cluster(tmp_path: Path, name: str, port: int, size: int, password: str) -> ClusterInfo:
    layout = cluster_layout(name, port, tmp_path / name, size)
    layout.root.mkdir(parents=True)
    layout.password_file.write_text(password, encoding="utf-8")
    return stopped_info(layout)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[ClusterInfo, ClusterInfo]:
    return (
        _cluster(tmp_path, "primary", 31092, 3, "source-secret"),
        _cluster(tmp_path, "secondary", 31192, 1, "target-secret"),
    )


def test_the_flow_is_primary_to_secondary_with_names_kept_and_offsets_synced(
    pair: tuple[ClusterInfo, ClusterInfo],
) -> None:
    source, target = pair
    conf = mirror.settings(source, target, "mirror-.*", "g-.*")
    assert conf["primary->secondary.enabled"] == "true"
    assert conf["secondary->primary.enabled"] == "false"
    assert conf["primary->secondary.topics"] == "mirror-.*"
    assert conf["primary->secondary.groups"] == "g-.*"
    assert conf["replication.policy.class"].endswith(".IdentityReplicationPolicy")
    assert conf["primary.consumer.isolation.level"] == "read_committed"
    assert conf["sync.group.offsets.enabled"] == "true"
    assert conf["offset.lag.max"] == "0"
    assert int(conf["refresh.topics.interval.seconds"]) <= 10
    assert int(conf["refresh.groups.interval.seconds"]) <= 10
    assert conf["primary.bootstrap.servers"] == "127.0.0.1:31092,127.0.0.1:31094,127.0.0.1:31096"
    assert conf["secondary.bootstrap.servers"] == "127.0.0.1:31192"
    # Sized for each cluster: the secondary has one node, the offset syncs live on
    # the three-node primary.
    assert conf["replication.factor"] == "1"
    assert conf["offset-syncs.topic.replication.factor"] == "3"
    assert "source-secret" not in json.dumps(conf)


def test_the_properties_file_logs_in_to_each_cluster_with_its_own_password(
    pair: tuple[ClusterInfo, ClusterInfo],
) -> None:
    source, target = pair
    lines = dict(
        line.split(" = ", 1)
        for line in mirror.properties(source, target, ".*", ".*").splitlines()
        if " = " in line
    )
    assert lines["primary.security.protocol"] == "SASL_PLAINTEXT"
    assert lines["primary.sasl.mechanism"] == "SCRAM-SHA-256"
    assert 'password="source-secret"' in lines["primary.sasl.jaas.config"]
    assert 'password="target-secret"' in lines["secondary.sasl.jaas.config"]
    assert 'username="gateway-admin"' in lines["secondary.sasl.jaas.config"]


def test_topics_and_groups_come_from_the_environment_else_all() -> None:
    assert mirror.selection({}) == (".*", ".*")
    env = {mirror.TOPICS_ENV: "orders\\..*", mirror.GROUPS_ENV: "billing-.*"}
    assert mirror.selection(env) == ("orders\\..*", "billing-.*")
    assert mirror.selection({mirror.TOPICS_ENV: ""}) == (".*", ".*")


def test_a_recorded_pid_that_is_not_mirrormaker_counts_as_stopped(tmp_path: Path) -> None:
    assert mirror.status(tmp_path) is None
    config = tmp_path / "mirror" / "mm2.properties"
    recorded = {
        "source": "primary",
        "target": "secondary",
        "topics": ".*",
        "groups": ".*",
        # This test process: alive, but not MirrorMaker with that file.
        "pid": os.getpid(),
        "config_file": str(config),
        "log_file": str(tmp_path / "mirror" / "mirrormaker.log"),
    }
    (tmp_path / "mirror.json").write_text(json.dumps(recorded), encoding="utf-8")
    seen = mirror.status(tmp_path)
    assert seen is not None
    assert seen.pid is None and not seen.running
    assert seen.topics == ".*"
    # Stopping signals nothing that is not ours, and records it stopped.
    mirror.stop(tmp_path)
    assert json.loads((tmp_path / "mirror.json").read_text())["pid"] is None


def test_an_unreadable_record_means_never_started(tmp_path: Path) -> None:
    (tmp_path / "mirror.json").write_text("{not json", encoding="utf-8")
    assert mirror.status(tmp_path) is None
    (tmp_path / "mirror.json").write_text(json.dumps({"pid": 1}), encoding="utf-8")
    assert mirror.status(tmp_path) is None
