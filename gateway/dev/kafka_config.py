"""What a dev Kafka node is started with: server.properties, JVM options, command lines.

Pure: builds text and argument lists from a layout, touches no file or process.

A single node is a standalone KRaft quorum (dynamic, `controller.quorum.bootstrap.servers`)
with replication factors of 1, as the dev clusters have always been. Three nodes run in
combined mode (each a broker and a controller) with a static quorum of three voters, so
any one node can stop; internal topics and new topics get three replicas and
`min.insync.replicas=2`, so a leader move loses no write acknowledged with acks=all.
"""

from __future__ import annotations

from pathlib import Path

from gateway.dev.credentials import ADMIN_USER, SASL_MECHANISM, SCRAM_MECHANISMS, jaas
from gateway.dev.java import TOOL_JVM_OPTS
from gateway.dev.layout import HOST, ClusterLayout, NodeLayout

MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"

# A lone node may use more memory; three nodes share a small machine with the secondary
# cluster, Java tools and clients.
SINGLE_NODE_HEAP = ("-Xms256m", "-Xmx1g")
QUORUM_NODE_HEAP = ("-Xms128m", "-Xmx384m")
BROKER_JVM_OPTS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)


def _replication(size: int) -> dict[str, str]:
    replicas = str(size)
    min_isr = str(max(1, size - 1))
    return {
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
    }


def _quorum(cluster: ClusterLayout) -> dict[str, str]:
    if len(cluster.nodes) == 1:
        return {"controller.quorum.bootstrap.servers": f"{HOST}:{cluster.nodes[0].controller_port}"}
    voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in cluster.nodes)
    return {"controller.quorum.voters": voters}


def server_properties(cluster: ClusterLayout, node: NodeLayout, port: int, password: str) -> str:
    """server.properties of `node`, its client listener on `port` (home or spare)."""
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "listeners": f"SASL_PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{node.controller_port}",
        "advertised.listeners": f"SASL_PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "sasl.mechanism.inter.broker.protocol": SASL_MECHANISM,
        "sasl.enabled.mechanisms": ",".join(SCRAM_MECHANISMS),
        **_quorum(cluster),
        "log.dirs": str(node.data_dir),
        "num.partitions": "1",
        **_replication(len(cluster.nodes)),
        "group.initial.rebalance.delay.ms": "0",
        # Kafka's own default: clients written against a stock broker expect it.
        "auto.create.topics.enable": "true",
    }
    for mechanism in SCRAM_MECHANISMS:
        key = f"listener.name.sasl_plaintext.{mechanism.lower()}.sasl.jaas.config"
        props[key] = jaas(password)
    body = "\n".join(f"{key}={value}" for key, value in props.items())
    return f"# Written by `python -m gateway dev up`; rewritten on every start.\n{body}\n"


def broker_argv(java: str, classpath: str, node: NodeLayout, size: int, log4j: Path) -> list[str]:
    heap = SINGLE_NODE_HEAP if size == 1 else QUORUM_NODE_HEAP
    return [
        java,
        *heap,
        *BROKER_JVM_OPTS,
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        classpath,
        MAIN_CLASS,
        str(node.config),
    ]


ELR_FEATURE = "eligible.leader.replicas.version"


def format_argv(
    java: str, classpath: str, node: NodeLayout, size: int, cluster_id: str, password: str
) -> list[str]:
    """StorageTool format for one node; the admin SCRAM user is created with the metadata."""
    cmd = [java, "-Xmx256m", *TOOL_JVM_OPTS, "-cp", classpath, STORAGE_TOOL, "format"]
    # A lone node bootstraps its own dynamic quorum; three nodes name their static voters
    # in server.properties and need no flag.
    cmd += ["--standalone"] if size == 1 else []
    # Eligible leader replicas (KIP-966) stay off. Kafka 4.1.1's controller, with ELR on,
    # flips a partition whose replication factor is below min.insync.replicas (the tests'
    # one-replica topics on the three-node primary, min ISR 2) between ISR [n] and ISR []
    # every few milliseconds once its broker restarts: a million metadata records in a
    # minute, and brokers that give up registering and exit after the whole cluster was
    # killed and started again.
    cmd += ["--feature", f"{ELR_FEATURE}=0"]
    cmd += ["-t", cluster_id, "-c", str(node.config)]
    for mechanism in SCRAM_MECHANISMS:
        cmd += ["--add-scram", f"{mechanism}=[name={ADMIN_USER},password={password}]"]
    return cmd
