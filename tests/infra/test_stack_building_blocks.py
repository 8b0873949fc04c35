"""The building blocks the stacks share (infra/stacks/cfn.py, iam.py): ARNs, checkov's skips, trust policies."""

from __future__ import annotations

from pathlib import Path

import infra.stacks
from infra.stacks.cfn import arn, checkov_skip
from infra.stacks.iam import trust_policy

STACKS_DIR = Path(infra.stacks.__file__).parent


def test_an_arn_is_in_the_stacks_partition_region_and_account_unless_told_otherwise():
    endpoints = "arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:endpoint/clip-*"
    assert arn("sagemaker", "endpoint/clip-*") == {"Fn::Sub": endpoints}
    assert arn("s3", "${ArtifactBucket}/*", region="", account="") == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${ArtifactBucket}/*"}
    assert arn("iam", "root", region="") == {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}


def test_checkov_skips_carry_their_reasons_and_only_the_helper_writes_them():
    resource = checkov_skip({"Type": "AWS::S3::Bucket"}, ("CKV_AWS_18", "this is the access-log bucket itself"))
    assert resource["Metadata"] == {"checkov": {"skip": [{"id": "CKV_AWS_18", "comment": "this is the access-log bucket itself"}]}}
    hand_built = [path.name for path in STACKS_DIR.glob("*.py") if path.name != "cfn.py" and '"checkov"' in path.read_text()]
    assert hand_built == [], f"checkov metadata built beside checkov_skip in {hand_built}"


def test_a_trust_policy_can_hold_the_service_to_this_account():
    anyone = trust_policy("apigateway.amazonaws.com")["Statement"][0]
    assert anyone == {"Effect": "Allow", "Principal": {"Service": "apigateway.amazonaws.com"}, "Action": "sts:AssumeRole"}
    this_account = trust_policy("apigateway.amazonaws.com", this_account_only=True)["Statement"][0]
    assert this_account["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
