"""The gateway's own chain of stages, in order."""

from __future__ import annotations

from gateway.pipeline import Pipeline
from gateway.pipeline.authorize import PolicyStage
from gateway.session import Services


def standard(services: Services) -> Pipeline:
    """Policy first: nothing an identity may not do reaches a later stage or upstream."""
    return Pipeline([PolicyStage(services.policies)])
