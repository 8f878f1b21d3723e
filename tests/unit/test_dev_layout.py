"""The dev clusters' pure parts: port layout, node configuration, shape decisions."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from gateway.dev.clusters import cluster_sizes, restart_port
from gateway.dev.errors import DevError
from gateway.dev.kafka_config import broker_argv, format_argv, server_properties
from gateway.dev.layout import cluster_layout, layouts, requested_primary_brokers
from gateway.dev.state import ClusterInfo, node_info, read_state, stopped_info

RUN = Path("/run/dev")
ENV = {"GATEWAY_DEV_PRIMARY_PORT": "31092", "GATEWAY_DEV_SECONDARY_PORT": "32092"}


def _props(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_single_node_keeps_its_ports_and_files_in_the_cluster_dir() -> None:
    (node,) = cluster_layout("primary", 19092, RUN / "primary").nodes
    assert (node.node_id, node.port, node.controller_port, node.spare_port) == (
        1,
        19092,
        19093,
        19094,
    )
    assert node.config == RUN / "primary" / "server.properties"
    assert node.data_dir == RUN / "primary" / "data"


def test_three_nodes_take_consecutive_port_pairs_then_spares() -> None:
    cluster = cluster_layout("primary", 31092, RUN / "primary", 3)
    ports = [(n.node_id, n.port, n.controller_port, n.spare_port) for n in cluster.nodes]
    assert ports == [(1, 31092, 31093, 31098), (2, 31094, 31095, 31099), (3, 31096, 31097, 31100)]
    assert [n.root for n in cluster.nodes] == [RUN / "primary" / f"node-{i}" for i in (1, 2, 3)]
    assert len(set(cluster.ports)) == 9


def test_cluster_sizes_other_than_one_or_three_are_refused() -> None:
    with pytest.raises(DevError, match="1 or 3 nodes"):
        cluster_layout("primary", 31092, RUN, 2)


def test_overlapping_ports_name_both_ranges() -> None:
    env = {"GATEWAY_DEV_PRIMARY_PORT": "31092", "GATEWAY_DEV_SECONDARY_PORT": "31098"}
    assert layouts(RUN, {"primary": 1}, env)  # 31092..31094 and 31098..31100 are apart
    with pytest.raises(DevError, match=r"overlap \(primary 31092-31100, secondary 31098-31100\)"):
        layouts(RUN, {"primary": 3}, env)


def test_primary_brokers_env_accepts_only_one_or_three() -> None:
    assert requested_primary_brokers({}) is None
    assert requested_primary_brokers({"GATEWAY_DEV_PRIMARY_BROKERS": "3"}) == 3
    with pytest.raises(DevError, match="GATEWAY_DEV_PRIMARY_BROKERS='2' must be 1 or 3"):
        requested_primary_brokers({"GATEWAY_DEV_PRIMARY_BROKERS": "2"})


def test_three_node_config_is_a_static_three_voter_quorum_with_replicated_topics() -> None:
    cluster = cluster_layout("primary", 31092, RUN / "primary", 3)
    props = _props(server_properties(cluster, cluster.nodes[1], 31094, "pw"))
    assert props["node.id"] == "2"
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:31093,2@127.0.0.1:31095,3@127.0.0.1:31097"
    )
    assert "controller.quorum.bootstrap.servers" not in props
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "default.replication.factor",
        "share.coordinator.state.topic.replication.factor",
    ):
        assert props[key] == "3", key
    assert props["min.insync.replicas"] == "2"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["advertised.listeners"] == "SASL_PLAINTEXT://127.0.0.1:31094"


def test_single_node_config_is_a_standalone_quorum_with_one_replica() -> None:
    cluster = cluster_layout("primary", 19092, RUN / "primary")
    props = _props(server_properties(cluster, cluster.nodes[0], 19092, "pw"))
    assert props["node.id"] == "1"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert "controller.quorum.voters" not in props
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["min.insync.replicas"] == "1"
    assert props["listeners"] == ("SASL_PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093")


def test_a_moved_node_advertises_its_new_port_and_keeps_its_controller() -> None:
    cluster = cluster_layout("primary", 31092, RUN / "primary", 3)
    node = cluster.nodes[2]
    props = _props(server_properties(cluster, node, node.spare_port, "pw"))
    assert props["advertised.listeners"] == "SASL_PLAINTEXT://127.0.0.1:31100"
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:31100,CONTROLLER://127.0.0.1:31097"
    assert props["node.id"] == "3"


def test_quorum_nodes_get_small_heaps_and_a_lone_node_keeps_its_own() -> None:
    three = cluster_layout("primary", 31092, RUN / "primary", 3)
    one = cluster_layout("primary", 19092, RUN / "primary")
    assert "-Xmx384m" in broker_argv("java", "cp", three.nodes[0], 3, RUN / "l.xml")
    assert "-Xmx1g" in broker_argv("java", "cp", one.nodes[0], 1, RUN / "l.xml")


def test_only_a_lone_node_formats_as_standalone() -> None:
    three = cluster_layout("primary", 31092, RUN / "primary", 3)
    one = cluster_layout("primary", 19092, RUN / "primary")
    assert "--standalone" in format_argv("java", "cp", one.nodes[0], 1, "id", "pw")
    cmd = format_argv("java", "cp", three.nodes[0], 3, "id", "pw")
    assert "--standalone" not in cmd
    assert cmd[cmd.index("-t") + 1] == "id"


def test_clusters_are_formatted_with_eligible_leader_replicas_off() -> None:
    for size in (1, 3):
        layout = cluster_layout("primary", 31092, RUN / "primary", size)
        cmd = format_argv("java", "cp", layout.nodes[0], size, "id", "pw")
        assert cmd[cmd.index("--feature") + 1] == "eligible.leader.replicas.version=0"


def _running(size: int) -> dict[str, ClusterInfo]:
    cluster = cluster_layout("primary", 31092, RUN / "primary", size)
    nodes = [node_info(n, 4242 + n.node_id) for n in cluster.nodes]
    info = dataclasses.replace(stopped_info(cluster), nodes=tuple(nodes), pid=4243)
    return {"primary": info}


def test_without_a_request_a_running_primary_keeps_its_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GATEWAY_DEV_PRIMARY_BROKERS", raising=False)
    assert cluster_sizes({}, None) == {"primary": 1}
    assert cluster_sizes(_running(3), None) == {"primary": 3}
    assert cluster_sizes(_running(3), 3) == {"primary": 3}


def test_asking_for_another_shape_than_the_running_one_says_to_run_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_DEV_PRIMARY_BROKERS", "3")
    with pytest.raises(
        DevError, match=r"runs 1 node\(s\), not 3; run `python -m gateway dev down`"
    ):
        cluster_sizes(_running(1), None)
    # status only reports: it shows the running shape instead of failing.
    assert cluster_sizes(_running(1), None, strict=False) == {"primary": 1}


def test_a_restarted_node_keeps_its_moved_address_only_while_others_run() -> None:
    node = cluster_layout("primary", 31092, RUN / "primary", 3).nodes[2]
    moved = node_info(node, None, node.spare_port)
    assert restart_port(node, moved, others_live=True) == node.spare_port
    assert restart_port(node, moved, others_live=False) == node.port
    assert restart_port(node, None, others_live=True) == node.port


def test_state_written_before_clusters_had_nodes_reads_as_one_node(tmp_path: Path) -> None:
    old = {
        "clusters": {
            "primary": {
                "name": "primary",
                "bootstrap": "127.0.0.1:19092",
                "controller": "127.0.0.1:19093",
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "SCRAM-SHA-256",
                "username": "gateway-admin",
                "password_file": str(tmp_path / "primary" / "admin.password"),
                "pid": None,
                "log_file": str(tmp_path / "primary" / "kafka.log"),
                "data_dir": str(tmp_path / "primary" / "data"),
            }
        }
    }
    (tmp_path / "state.json").write_text(json.dumps(old))
    info = read_state(tmp_path)["primary"]
    assert info.bootstrap_servers == "127.0.0.1:19092"
    (node,) = info.nodes
    assert (node.node_id, node.bootstrap, node.state) == (1, "127.0.0.1:19092", "stopped")
    assert node.config_file == str(tmp_path / "primary" / "server.properties")


def test_without_a_request_a_primary_whose_nodes_all_died_restarts_in_its_last_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GATEWAY_DEV_PRIMARY_BROKERS", raising=False)
    dead = _running(3)["primary"]
    dead = dataclasses.replace(
        dead, pid=None, nodes=tuple(dataclasses.replace(n, pid=None) for n in dead.nodes)
    )
    assert cluster_sizes({"primary": dead}, None) == {"primary": 3}
