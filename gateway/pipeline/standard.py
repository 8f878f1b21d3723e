"""The gateway's own chain of stages, in order."""

from __future__ import annotations

from gateway.pipeline import Pipeline, Stage
from gateway.pipeline.audit import audit_stage
from gateway.pipeline.authorize import PolicyStage
from gateway.pipeline.masking import MaskingStage
from gateway.session import Services


def standard(services: Services) -> Pipeline:
    """Audit outermost, so that its way back runs last and records the answer the client
    gets (denials included, masking done); then policy, so that nothing an identity may
    not do reaches a later stage or upstream; then masking, innermost, so that its way
    back is the first to see what the cluster answered."""
    stages: list[Stage] = []
    audit = audit_stage(services)
    if audit is not None:
        stages.append(audit)
    stages.append(PolicyStage(services.policies))
    stages.append(MaskingStage(services.policies, services.masking))
    return Pipeline(stages)
