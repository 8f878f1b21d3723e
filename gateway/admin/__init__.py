"""The admin HTTP API: health, readiness and Prometheus metrics (open by default), and
the bearer-token endpoints (``/whoami``, ``/sessions``, ``/policy``; later approvals,
failover, audit) with roles from the caller's groups, over HTTP or HTTPS."""
