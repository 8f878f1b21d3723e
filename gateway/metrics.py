"""Every Prometheus metric the gateway exports, defined once.

Labels never carry secrets or unbounded values: API names and versions, listener
and cluster names, fixed outcome words.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS_OPEN = Gauge(
    "gateway_connections_open",
    "Client connections currently open.",
    ["listener", "security_protocol"],
)
CONNECTIONS_TOTAL = Counter(
    "gateway_connections_total",
    "Client connections accepted.",
    ["listener", "security_protocol"],
)
CONNECTIONS_CLOSED = Counter(
    "gateway_connections_closed_total",
    "Client connections closed, by reason.",
    ["listener", "reason"],
)
CONNECTIONS_REFUSED = Counter(
    "gateway_connections_refused_total",
    "Client connections refused at accept, by listener and reason (too many connections "
    "from one address).",
    ["listener", "reason"],
)
REQUEST_BYTES_RESERVED = Gauge(
    "gateway_request_bytes_reserved",
    "Bytes of client requests being read or handled, reserved from limits."
    "queued_max_request_bytes.",
)
REQUEST_BUDGET_WAITS = Counter(
    "gateway_request_budget_waits_total",
    "Times a connection stopped reading because the request byte budget was spent.",
)
TLS_HANDSHAKE_FAILURES = Counter(
    "gateway_tls_handshake_failures_total",
    "TLS handshakes on client listeners that failed, by listener and reason (timeout, "
    "not_tls, no_certificate, bad_certificate, unsupported_version, protocol, closed).",
    ["listener", "reason"],
)
TLS_RELOADS = Counter(
    "gateway_tls_reloads_total",
    "Certificate reloads of a TLS listener, by listener and result (ok, failed).",
    ["listener", "result"],
)
REQUESTS = Counter(
    "gateway_requests_total",
    "Client requests handled, by API, version and outcome.",
    ["api", "version", "outcome"],
)
REQUEST_LATENCY = Histogram(
    "gateway_request_duration_seconds",
    "Time from a request's arrival to its response being ready, by API.",
    ["api"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BYTES_IN = Counter("gateway_bytes_received_total", "Bytes received from clients.", ["listener"])
BYTES_OUT = Counter("gateway_bytes_sent_total", "Bytes sent to clients.", ["listener"])
AUTHENTICATIONS = Counter(
    "gateway_authentications_total",
    "Client authentications (not re-authentications), by listener, mechanism and result.",
    ["listener", "mechanism", "result"],
)
AUTHENTICATION_FAILURES = Counter(
    "gateway_authentication_failures_total",
    "Failed client authentications, by listener, mechanism and reason (a fixed word such "
    "as bad_password, unknown_user, expired, rate_limited).",
    ["listener", "mechanism", "reason"],
)
REAUTHENTICATIONS = Counter(
    "gateway_reauthentications_total",
    "Successful re-authentications on an open connection (KIP-368).",
    ["listener", "mechanism"],
)
SESSIONS_EXPIRED = Counter(
    "gateway_sessions_expired_total",
    "Connections closed because their session expired without re-authentication.",
    ["listener"],
)
JWKS_FETCHES = Counter(
    "gateway_jwks_fetches_total",
    "Reads of the OAUTHBEARER key set (JWKS URL or file), by result (ok, failed).",
    ["result"],
)
JWKS_KEYS = Gauge(
    "gateway_jwks_keys",
    "Signing keys in the OAUTHBEARER key set currently in force.",
)
IDENTITY_RELOADS = Counter(
    "gateway_identity_reloads_total",
    "Re-reads of a changed identity source (source: service_accounts), by result "
    "(success, or failure when the last good version stays in force).",
    ["source", "result"],
)
UPSTREAM_CONNECTIONS = Gauge(
    "gateway_upstream_connections_open", "Connections open to upstream brokers.", ["cluster"]
)
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors_total",
    "Upstream requests that failed (connection, timeout, bad response), by API key.",
    ["cluster", "api_key"],
)
UPSTREAM_RETRIES = Counter(
    "gateway_upstream_retries_total",
    "Partitions retried after a leader change or metadata refresh, by API.",
    ["cluster", "api"],
)
UPSTREAM_MALFORMED = Counter(
    "gateway_upstream_malformed_responses_total",
    "Upstream answers that did not decode (their connection is reset), by API key.",
    ["cluster", "api_key"],
)
UPSTREAM_UP = Gauge(
    "gateway_upstream_up",
    "1 when the cluster's last health check read its metadata (state up or degraded), else 0.",
    ["cluster"],
)
UPSTREAM_STATE = Gauge(
    "gateway_upstream_state",
    "1 for the cluster's current health state (up, degraded, down), 0 for the others.",
    ["cluster", "state"],
)
UPSTREAM_CHECK_SECONDS = Histogram(
    "gateway_upstream_check_seconds",
    "Duration of one health check of the cluster (login, metadata, every broker, canary).",
    ["cluster"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
UPSTREAM_CANARY_SECONDS = Histogram(
    "gateway_upstream_canary_seconds",
    "Round trip of the health check's canary record (produce with acks=all, fetch back).",
    ["cluster"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
UPSTREAM_RECOVERIES = Counter(
    "gateway_upstream_recoveries_total",
    "Times the cluster came back after its health checks found it down.",
    ["cluster"],
)
REPLICATION_PENDING = Gauge(
    "gateway_replication_pending_records",
    "Committed records of a mirrored topic on the primary that the secondary still lacks "
    "(exact up to clusters.replication.pending_read_limit per partition, above it the "
    "offset distance), as of gateway_replication_read_timestamp_seconds.",
    ["topic"],
)
REPLICATION_GROUP_UNSYNCED = Gauge(
    "gateway_replication_group_unsynced_partitions",
    "Partitions of a consumer group whose commit on the primary MirrorMaker has not "
    "checkpointed to the secondary yet (0: the group resumes on the secondary where it "
    "left off on the primary, as far as the data allows).",
    ["group"],
)
REPLICATION_CAUGHT_UP = Gauge(
    "gateway_replication_caught_up",
    "1 when the last measurement found every watched mirrored partition caught up, else 0.",
)
REPLICATION_READ_AT = Gauge(
    "gateway_replication_read_timestamp_seconds",
    "Unix time of the last successful replication lag measurement (0: none yet).",
)
REPLICATION_ROUNDS = Counter(
    "gateway_replication_rounds_total",
    "Replication lag measurements, by result (ok, error).",
    ["result"],
)
REPLICATION_ROUND_SECONDS = Histogram(
    "gateway_replication_round_seconds",
    "Duration of one replication lag measurement.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ADMIN_REQUESTS = Counter(
    "gateway_admin_requests_total",
    "Admin API requests, by route template (unmatched for no route) and result (ok, "
    "unauthorized, forbidden, rate_limited, not_found, not_allowed, conflict, invalid, "
    "too_large, client_error, error).",
    ["endpoint", "result"],
)

POLICY_DECISIONS = Counter(
    "gateway_policy_decisions_total",
    "Authorization decisions by API, decision (allow or deny) and the rule that made it "
    '("none" when no rule allowed it).',
    ["api", "decision", "rule"],
)
POLICY_INFO = Gauge(
    "gateway_policy_info",
    "1 for the version (content hash) of the policy in force; the label of a replaced "
    "version is removed.",
    ["version"],
)
POLICY_RELOADS = Counter(
    "gateway_policy_reloads_total",
    "Policy reloads (watcher, SIGHUP, admin API), by result: success (a new version took "
    "effect), unchanged (same contents), failure (refused; the version in force stays).",
    ["result"],
)
POLICY_RELOAD_FAILING = Gauge(
    "gateway_policy_reload_failing",
    "1 while the policy directory holds an invalid set that was refused, else 0.",
)
POLICY_RULES = Gauge("gateway_policy_rules", "Rules in the policy in force.")

SAFEGUARD_VIOLATIONS = Counter(
    "gateway_policy_safeguard_violations_total",
    "Request items refused with POLICY_VIOLATION, by API and safeguard id.",
    ["api", "rule"],
)

PIPELINE_STAGE_FAILURES = Counter(
    "gateway_pipeline_stage_failures_total",
    "Requests refused with a retriable error because a pipeline stage failed, by stage "
    "and phase (request or response).",
    ["stage", "phase"],
)

AUDIT_EVENTS = Counter(
    "gateway_audit_events_total",
    "Lines made durable in the audit log, by type (request, authentication, checkpoint, ...).",
    ["type"],
)
AUDIT_FSYNC_SECONDS = Histogram(
    "gateway_audit_fsync_seconds",
    "Time of one fsync of the audit log (one per group-committed batch).",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
AUDIT_BYTES = Counter("gateway_audit_bytes_total", "Bytes written to the audit log.")
AUDIT_CHECKPOINTS = Counter(
    "gateway_audit_checkpoints_total", "Signed checkpoints written to the audit log."
)
AUDIT_FAILURES = Counter(
    "gateway_audit_failures_total",
    "Audit log writes that failed, by reason (an errno name such as ENOSPC, EACCES, EIO).",
    ["reason"],
)
AUDIT_HEALTHY = Gauge(
    "gateway_audit_healthy",
    "1 while the audit log can make events durable, 0 while it cannot (requests are "
    "refused unless audit.fail_open).",
)

# The audit log's Kafka sink (audit.kafka).
AUDIT_SINK_LAG = Gauge(
    "gateway_audit_sink_lag_events",
    "Audit lines durable locally but not yet acknowledged by the audit topic.",
)
AUDIT_SINK_SENT = Counter(
    "gateway_audit_sink_sent_total", "Audit lines the audit topic acknowledged."
)
AUDIT_SINK_FAILURES = Counter(
    "gateway_audit_sink_failures_total",
    "Failed attempts to ship audit lines, by reason (connect, send, topic, read).",
    ["reason"],
)

# Masking (masking rules of the policy, gateway.pipeline.masking).
MASKED_RECORDS = Counter(
    "gateway_masking_records_total",
    "Records delivered with fields masked, by topic and masking rule.",
    ["topic", "rule"],
)
MASKING_FAILURES = Counter(
    "gateway_masking_failures_total",
    "Partitions refused because they could not be masked, by topic and cause "
    "(registry_unavailable, schema_not_found, not_wire_format, undecodable, bad_batch, "
    "unsupported_schema, not_configured).",
    ["topic", "cause"],
)
MASKING_BYTES_REWRITTEN = Counter(
    "gateway_masking_bytes_rewritten_total", "Bytes of record batches re-encoded by masking."
)
MASKER_CACHE = Counter(
    "gateway_masking_masker_cache_total",
    "Lookups of compiled maskers (per schema id and rule), by result (hit, miss).",
    ["result"],
)
MASKING_REFUSED_PRODUCE = Counter(
    "gateway_masking_refused_produce_total",
    "Produce partitions refused INVALID_RECORD because a topic requires registered schemas.",
)
REGISTRY_REQUESTS = Counter(
    "gateway_registry_requests_total",
    "Requests to the schema registry, by result (ok, not_found, unauthorized, error, unreachable).",
    ["result"],
)
REGISTRY_SECONDS = Histogram(
    "gateway_registry_request_seconds",
    "Time of one schema registry request.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REGISTRY_CACHE = Counter(
    "gateway_registry_cache_total",
    "Schema lookups (by id, and subject registrations), by result (hit: answered from "
    "the cache, miss: asked the registry).",
    ["result"],
)
