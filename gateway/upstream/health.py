"""The health of one upstream cluster, as the gateway's own checks see it.

Three states, exported as ``gateway_upstream_state{cluster,state}``:

- ``up``: the last check read the cluster's metadata and every broker it lists answered.
- ``degraded``: the last check read the metadata, but a listed broker did not answer
  (one broker of several is stopped or paused): requests to the others are served.
- ``down``: the last check found no broker that answers (or none has yet). The gateway
  is not ready; clients get retriable errors until a check succeeds again.

Thresholds keep one lost check from flapping the state: an up (or degraded) cluster
is marked down after ``down_after`` failed checks in a row, and a cluster that was down
comes back after ``up_after`` passed checks in a row (before the first success there is
nothing to flap: the first passed check marks it up). Until the state settles the pool
checks again soon (``settling``). A failed canary round trip (see :mod:`.canary`) with
metadata read marks the cluster degraded, never down: it still serves.

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

    def __init__(self, cluster: str, down_after: int = 1, up_after: int = 1) -> None:
        self.cluster = cluster
        self.down_after, self.up_after = down_after, up_after
        self.state = ClusterState.DOWN
        self.reason = "not checked yet"
        self.since = time.monotonic()
        self.last_success: float | None = None
        self.recoveries = 0
        # Checks in a row that failed, and that passed.
        self.failures = 0
        self.successes = 0
        # The last check: when it ended (wall clock), how long it and its canary took.
        self.checked_at: float | None = None
        self.check_seconds: float | None = None
        self.canary_seconds: float | None = None
        self._export()

    @property
    def ready(self) -> bool:
        """Requests can be served now."""
        return self.state is not ClusterState.DOWN

    @property
    def settling(self) -> bool:
        """A threshold is being counted: the next check should come soon."""
        if self.state is ClusterState.DOWN:
            return self.successes > 0
        return self.failures > 0

    def timed(self, seconds: float, canary_seconds: float | None) -> None:
        """How long the check that just ended took (and its canary, if it got that far)."""
        self.checked_at = time.time()
        self.check_seconds = seconds
        self.canary_seconds = canary_seconds
        metrics.UPSTREAM_CHECK_SECONDS.labels(self.cluster).observe(seconds)
        if canary_seconds is not None:
            metrics.UPSTREAM_CANARY_SECONDS.labels(self.cluster).observe(canary_seconds)

    def checked(self, unreachable: dict[int, str], canary_failure: str | None = None) -> None:
        """A check read the metadata; ``unreachable`` maps brokers that did not answer
        to why, ``canary_failure`` says why the canary round trip failed."""
        self.failures = 0
        self.successes += 1
        if (
            self.state is ClusterState.DOWN
            and self.last_success is not None
            and self.successes < self.up_after
        ):
            self.reason = f"answering again ({self.successes} of {self.up_after} checks)"
            return
        problems = [f"broker {n}: {why}" for n, why in sorted(unreachable.items())]
        problems += [f"canary: {canary_failure}"] if canary_failure is not None else []
        if problems:
            self._become(ClusterState.DEGRADED, ", ".join(problems))
        else:
            self._become(ClusterState.UP, "every broker answered")

    def failed(self, reason: str) -> None:
        """A check found no broker that answers."""
        self.successes = 0
        self.failures += 1
        if self.state is not ClusterState.DOWN and self.failures < self.down_after:
            log.warning(
                "cluster %s: check failed (%d of %d before down): %s",
                self.cluster,
                self.failures,
                self.down_after,
                reason,
            )
            self.reason = reason
            return
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
