"""The admin HTTP API: health, readiness and Prometheus metrics."""
