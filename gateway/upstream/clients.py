"""How the gateway's own Kafka clients reach a configured cluster: the TLS context and
aiokafka's connection keywords, with the cluster's secret read from its source at the
moment of the call (so a client created after a rotation uses the new one).
"""

from __future__ import annotations

import ssl
from typing import Any

from gateway.config import ClusterConfig


def cluster_ssl_context(config: ClusterConfig) -> ssl.SSLContext:
    """The TLS context of connections to ``config``'s brokers (also the audit sink's)."""
    tls = config.tls
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls and tls.ca_file else None)
    if tls is not None:
        context.check_hostname = tls.check_hostname
        if tls.cert_file is not None:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    return context


def client_settings(cluster: ClusterConfig) -> dict[str, Any]:
    """aiokafka connection keywords for ``cluster``, as the upstream pool connects."""
    sasl = cluster.sasl
    settings: dict[str, Any] = {
        "bootstrap_servers": list(cluster.bootstrap_servers),
        "security_protocol": cluster.security_protocol,
    }
    if cluster.security_protocol.endswith("SSL"):
        settings["ssl_context"] = cluster_ssl_context(cluster)
    if sasl is not None:
        settings["sasl_mechanism"] = sasl.mechanism
        settings["sasl_plain_username"] = sasl.username
        settings["sasl_plain_password"] = sasl.password.resolve()
    return settings
