"""The EventBridge pattern that starts a promotion: an approval in one of our model package groups."""

from __future__ import annotations


def approval_event_pattern(model_package_groups: list[str]) -> dict:
    return {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Model Package State Change"],
        "detail": {"ModelPackageGroupName": sorted(model_package_groups), "ModelApprovalStatus": ["Approved"]},
    }
