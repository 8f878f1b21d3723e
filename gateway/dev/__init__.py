"""Local primary and secondary Apache Kafka clusters for trying and testing the gateway.

`python -m gateway dev up | down | status [--json]` runs two single-node Kafka 4.1.1
clusters in KRaft mode on loopback, straight from the jars published on Maven Central
(resolved once with Maven into a cache). Each cluster has one SASL_PLAINTEXT listener
with SCRAM-SHA-256/512 and an admin user whose generated password lives in a 0600 file,
so the gateway's upstream credentials are real. Integration tests and `make run` use
the same functions: `up()`, `down()`, `status()`.

One module per component; this file only names the public API:

    jars.py         Maven resolution of the Kafka jars into a cache, the classpath
    java.py         finding Java 17+, the command line of a Kafka tool
    layout.py       ports and file paths of each cluster (pure)
    credentials.py  the admin SCRAM password and the 0600 files that carry it
    processes.py    spawning, liveness by pid + config file, stopping, log files
    state.py        state.json and the run dir lock
    kafka.py        broker configuration, storage format, start, readiness
    clusters.py     up / down / status across the clusters
    cli.py          `python -m gateway dev ...`

Layout of the run directory (`$GATEWAY_DEV_DIR`, default `~/.cache/soc2-gateway/dev`):

    state.json                 pids and addresses of what `up` started (no secrets)
    broker-log4j2.xml          broker logging: INFO to the cluster's log file
    <name>/server.properties   0600: holds the inter-broker SCRAM password
    <name>/client.properties   0600: ready-made config for Kafka's Java tools
    <name>/admin.password      0600: the admin password, no trailing newline
    <name>/kafka.log           broker output
    <name>/data/               log.dirs and KRaft metadata, kept across down/up

Linux only: liveness checks read /proc.
"""

from __future__ import annotations

from gateway.dev.cli import main
from gateway.dev.clusters import down, status, up
from gateway.dev.credentials import (
    ADMIN_USER,
    SASL_MECHANISM,
    SCRAM_MECHANISMS,
    SECURITY_PROTOCOL,
    client_config_file,
    read_password,
)
from gateway.dev.errors import DevError, ToolMissingError
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
    PORT_ENV,
    default_run_dir,
)
from gateway.dev.state import ClusterInfo

__all__ = [
    "ADMIN_USER",
    "CLUSTER_NAMES",
    "DEFAULT_PORTS",
    "HOST",
    "KAFKA_VERSION",
    "LOG4J_VERSION",
    "PORT_ENV",
    "SASL_MECHANISM",
    "SCALA_VERSION",
    "SCRAM_MECHANISMS",
    "SECURITY_PROTOCOL",
    "START_TIMEOUT_S",
    "ClusterInfo",
    "DevError",
    "ToolMissingError",
    "client_config_file",
    "default_lib_dir",
    "default_run_dir",
    "down",
    "java_executable",
    "java_tool_command",
    "kafka_classpath",
    "main",
    "read_password",
    "status",
    "up",
]
