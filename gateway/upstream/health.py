"""The health of one upstream cluster, as the gateway's own checks see it.

Three states, exported as ``gateway_upstream_state{cluster,state}``:

- ``up``: the last check read the cluster's metadata and every broker it lists answered.
- ``degraded``: the last check read the metadata, but a listed broker did not answer
  (one broker of several is stopped or paused): requests to the others are served.
- ``down``: the last check found no broker that answers (or none has yet). The gateway
  is not ready; clients get retriable errors until a check succeeds again.

Each change of state is logged once, with the reason, not once per request; a return
to ``up`` from ``down`` counts in ``gateway_upstream_recoveries_total``. No I/O here:
the pool runs the checks and reports their outcome.
"""

from __future__ import annotations

import enum
import logging
import time

from gateway import metrics

log = logging.getLogger(__name__)


class ClusterState(enum.Enum):
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


class ClusterHealth:
    """The state machine of one cluster's health."""

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self.state = ClusterState.DOWN
        self.reason = "not checked yet"
        self.since = time.monotonic()
        self.last_success: float | None = None
        self.recoveries = 0
        self._export()

    @property
    def ready(self) -> bool:
        """Requests can be served now."""
        return self.state is not ClusterState.DOWN

    def checked(self, unreachable: dict[int, str]) -> None:
        """A check read the metadata; ``unreachable`` maps brokers that did not answer
        to why."""
        if unreachable:
            detail = ", ".join(f"broker {n}: {why}" for n, why in sorted(unreachable.items()))
            self._become(ClusterState.DEGRADED, detail)
        else:
            self._become(ClusterState.UP, "every broker answered")

    def failed(self, reason: str) -> None:
        """A check found no broker that answers."""
        self._become(ClusterState.DOWN, reason)

    def _become(self, state: ClusterState, reason: str) -> None:
        previous = self.state
        was_ready_before = self.last_success is not None
        if state is not ClusterState.DOWN:
            self.last_success = time.monotonic()
        if state is previous and (state is ClusterState.UP or reason == self.reason):
            return
        now = time.monotonic()
        self.reason = reason
        if state is previous:
            log.warning("cluster %s still %s: %s", self.cluster, state.value, reason)
            return
        was_for = now - self.since
        self.state, self.since = state, now
        self._export()
        if previous is ClusterState.DOWN and was_ready_before:
            self.recoveries += 1
            metrics.UPSTREAM_RECOVERIES.labels(self.cluster).inc()
            log.warning(
                "cluster %s is %s again after %.1fs down: %s",
                self.cluster,
                state.value,
                was_for,
                reason,
            )
        elif state is ClusterState.UP:
            log.info("cluster %s is up: %s", self.cluster, reason)
        else:
            log.warning("cluster %s is %s: %s", self.cluster, state.value, reason)

    def _export(self) -> None:
        for each in ClusterState:
            metrics.UPSTREAM_STATE.labels(self.cluster, each.value).set(each is self.state)
        metrics.UPSTREAM_UP.labels(self.cluster).set(self.state is not ClusterState.DOWN)
