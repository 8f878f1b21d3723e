"""Local primary and secondary Apache Kafka clusters for trying and testing the gateway.

`python -m gateway dev up | down | status [--json]` runs two Kafka 4.1.1 clusters in
KRaft mode on loopback, straight from the jars published on Maven Central (resolved once
with Maven into a cache): single-node by default, the primary optionally as three nodes
(`--primary-brokers 3` or `GATEWAY_DEV_PRIMARY_BROKERS=3`). Each cluster has one
SASL_PLAINTEXT listener with SCRAM-SHA-256/512 and an admin user whose generated password
lives in a 0600 file, so the gateway's upstream credentials are real. Integration tests
and `make run` use the same functions: `up()`, `down()`, `status()`, `nodes()`, and the
fault controls of `faults.py` (`dev node pause|resume|kill|stop|start|restart ID`).

One module per component; this file only names the public API:

    jars.py         Maven resolution of the Kafka jars into a cache, the classpath
    java.py         finding Java 17+, the command line of a Kafka tool
    layout.py       ports and file paths of each cluster (pure)
    credentials.py  the admin SCRAM password and the 0600 files that carry it
    processes.py    spawning, liveness by pid + config file, stopping, log files
    state.py        state.json, the run dir lock, ClusterInfo and NodeInfo
    kafka_config.py server.properties, JVM options and command lines of a node (pure)
    kafka.py        a node's storage format, start, readiness and stop
    clusters.py     up / down / status / nodes across the clusters
    certs.py        a local CA, the gateway's server certificate and a client one
    faults.py       pause, resume, kill, stop, start, restart one node (for tests)
    registry.py     Karapace, a Confluent-compatible schema registry, beside the clusters
    mirror.py       MirrorMaker 2, replicating the primary to the secondary
    cli.py          `python -m gateway dev ...`

Layout of the run directory (`$GATEWAY_DEV_DIR`, default `~/.cache/soc2-gateway/dev`):

    state.json                 pids and addresses of what `up` started (no secrets)
    broker-log4j2.xml          broker logging: INFO to the cluster's log file
    <name>/client.properties   0600: ready-made config for Kafka's Java tools
    <name>/admin.password      0600: the admin password, no trailing newline
    <name>/server.properties   0600: holds the inter-broker SCRAM password
    <name>/kafka.log           broker output
    <name>/data/               log.dirs and KRaft metadata, kept across down/up
    tls/                       the dev CA, server and client certificates (keys 0600)
    registry.json              the schema registry's pid and URL (no secrets)
    registry/karapace.log      its output
    mirror.json                MirrorMaker 2's pid and what it mirrors (no secrets)
    mirror/mm2.properties      0600: its settings, with both admin passwords
    mirror/mirrormaker.log     its output
    <name>/node-<id>/          a three-node cluster's server.properties, kafka.log and
                               data/ per node (kept apart from the single node's)

Linux only: liveness checks read /proc.
"""

from __future__ import annotations

from gateway.dev.certs import (
    DEV_CLIENT_SUBJECT,
    CertificateAuthority,
    DevCertificates,
    IssuedFiles,
    dev_certificates,
    ensure_dev_certificates,
)
from gateway.dev.cli import main
from gateway.dev.clusters import down, nodes, status, up
from gateway.dev.credentials import (
    ADMIN_USER,
    SASL_MECHANISM,
    SCRAM_MECHANISMS,
    SECURITY_PROTOCOL,
    client_config_file,
    read_password,
)
from gateway.dev.errors import DevError, ToolMissingError
from gateway.dev.faults import (
    kill_node,
    pause_node,
    restart_node,
    resume_node,
    start_node,
    stop_node,
)
from gateway.dev.jars import (
    KAFKA_VERSION,
    LOG4J_VERSION,
    SCALA_VERSION,
    default_lib_dir,
    kafka_classpath,
)
from gateway.dev.java import java_executable, java_tool_command
from gateway.dev.kafka import START_TIMEOUT_S
from gateway.dev.layout import (
    CLUSTER_NAMES,
    DEFAULT_PORTS,
    HOST,
    NODE_COUNTS,
    PORT_ENV,
    PRIMARY_BROKERS_ENV,
    default_run_dir,
    tls_dir,
)
from gateway.dev.mirror import GROUPS_ENV as MIRROR_GROUPS_ENV
from gateway.dev.mirror import TOPICS_ENV as MIRROR_TOPICS_ENV
from gateway.dev.mirror import MirrorInfo
from gateway.dev.mirror import start as start_mirror
from gateway.dev.mirror import status as mirror_status
from gateway.dev.mirror import stop as stop_mirror
from gateway.dev.registry import RegistryInfo, karapace_dir
from gateway.dev.registry import start as start_registry
from gateway.dev.registry import status as registry_status
from gateway.dev.registry import stop as stop_registry
from gateway.dev.state import ClusterInfo, NodeInfo

__all__ = [
    "DEV_CLIENT_SUBJECT",
    "CertificateAuthority",
    "DevCertificates",
    "IssuedFiles",
    "dev_certificates",
    "ensure_dev_certificates",
    "tls_dir",
    "ADMIN_USER",
    "CLUSTER_NAMES",
    "DEFAULT_PORTS",
    "HOST",
    "KAFKA_VERSION",
    "NODE_COUNTS",
    "LOG4J_VERSION",
    "PORT_ENV",
    "PRIMARY_BROKERS_ENV",
    "SASL_MECHANISM",
    "SCALA_VERSION",
    "SCRAM_MECHANISMS",
    "SECURITY_PROTOCOL",
    "START_TIMEOUT_S",
    "ClusterInfo",
    "NodeInfo",
    "RegistryInfo",
    "MIRROR_GROUPS_ENV",
    "MIRROR_TOPICS_ENV",
    "MirrorInfo",
    "mirror_status",
    "start_mirror",
    "stop_mirror",
    "karapace_dir",
    "registry_status",
    "start_registry",
    "stop_registry",
    "DevError",
    "ToolMissingError",
    "client_config_file",
    "default_lib_dir",
    "default_run_dir",
    "down",
    "java_executable",
    "java_tool_command",
    "kafka_classpath",
    "kill_node",
    "main",
    "nodes",
    "pause_node",
    "read_password",
    "restart_node",
    "resume_node",
    "start_node",
    "status",
    "stop_node",
    "up",
]
