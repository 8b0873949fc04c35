"""The planner Lambda's reading of a model package (lambda/clip_lambdas/promotion_planner/app.py)."""

from __future__ import annotations

import datetime as dt

from clip_lambdas.promotion_planner.app import principal_of, read_package


def test_a_new_session_of_the_same_role_is_the_same_principal():
    one, other = "arn:aws:sts::1:assumed-role/clip-pipeline/job-1", "arn:aws:sts::1:assumed-role/clip-pipeline/job-2"
    assert principal_of(one) == principal_of(other) == "arn:aws:sts::1:assumed-role/clip-pipeline"
    assert principal_of("arn:aws:iam::1:user/alice") == "arn:aws:iam::1:user/alice"
    assert principal_of("") == ""


class OnePackage:
    def __init__(self, **fields):
        created = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.timezone.utc)
        self.package = {"ModelPackageArn": "arn:aws:sagemaker:us-east-1:1:model-package/clip-tiny/3", "ModelPackageGroupName": "clip-tiny",
                        "ModelPackageVersion": 3, "ModelApprovalStatus": "Approved", "CreationTime": created,
                        "InferenceSpecification": {"Containers": [{"Image": "1.dkr.ecr.us-east-1.amazonaws.com/clip-embedding-api-serve@sha256:" + "ab" * 32, "ModelDataUrl": "s3://b/m.tar.gz"}]}, **fields}

    def describe_model_package(self, ModelPackageName):  # noqa: N803 - boto3's parameter name
        return self.package


def test_an_approval_is_a_modification_after_registration_by_another_principal():
    created = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.timezone.utc)
    never_modified = read_package(OnePackage(), "arn")
    assert not never_modified.modified_after_registration
    same_instant = read_package(OnePackage(LastModifiedTime=created), "arn")
    assert not same_instant.modified_after_registration  # created Approved: the registry shows no later change
    approved = read_package(OnePackage(
        LastModifiedTime=created + dt.timedelta(minutes=5),
        CreatedBy={"IamIdentity": {"Arn": "arn:aws:sts::1:assumed-role/clip-pipeline/job-1"}},
        LastModifiedBy={"IamIdentity": {"Arn": "arn:aws:sts::1:assumed-role/clip-pipeline/console-session"}}), "arn")
    assert approved.modified_after_registration
    assert approved.registered_by == approved.approved_by == "arn:aws:sts::1:assumed-role/clip-pipeline"  # the same role approved itself


class Endpoints:
    """list_endpoints as SageMaker pages it: NameContains is a substring filter, so callers must check the names."""

    def __init__(self, *names):
        start = dt.datetime(2026, 11, 29, tzinfo=dt.timezone.utc)
        self.endpoints = [{"EndpointName": name, "CreationTime": start + dt.timedelta(hours=i)} for i, name in enumerate(names)]

    def get_paginator(self, operation):
        assert operation == "list_endpoints"
        return self

    def paginate(self, NameContains):  # noqa: N803 - boto3's parameter name
        return [{"Endpoints": [e for e in self.endpoints if NameContains in e["EndpointName"]]}]


def test_the_live_state_holds_the_models_endpoints_under_this_and_the_earlier_naming(monkeypatch):
    from clip_core.model_config import load_model_config
    from clip_lambdas.promotion_planner import app

    monkeypatch.setattr(app, "read_pointer", lambda *args, **kwargs: None)
    sagemaker = Endpoints("clip-clip-tiny-v1", "clip-tiny-v2", "clip-tiny-v2-v1", "clip-clip-tiny-v2-sb", "clip-tiny-v3")
    live = app.read_live_state(None, sagemaker, load_model_config("clip-tiny"), "table")
    assert live.endpoints == ("clip-clip-tiny-v1", "clip-tiny-v2", "clip-tiny-v3")  # oldest first; not model clip-tiny-v2's
