"""moto's UpdateModelPackage made to merge metadata as SageMaker does (local_mode/moto_fixes.py)."""

from __future__ import annotations

import boto3


def test_an_approval_keeps_the_metadata_and_new_keys_merge(moto_aws):
    sagemaker = boto3.client("sagemaker", region_name="us-east-1")
    sagemaker.create_model_package_group(ModelPackageGroupName="g")
    arn = sagemaker.create_model_package(
        ModelPackageGroupName="g", InferenceSpecification={"Containers": [{"Image": "i"}], "SupportedContentTypes": ["application/json"],
                                                           "SupportedResponseMIMETypes": ["application/json"]},
        ModelApprovalStatus="PendingManualApproval", CustomerMetadataProperties={"space": "aaaaaaaaaaaa", "variant": "int8"})["ModelPackageArn"]
    sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    assert sagemaker.describe_model_package(ModelPackageName=arn)["CustomerMetadataProperties"] == {"space": "aaaaaaaaaaaa", "variant": "int8"}
    sagemaker.update_model_package(ModelPackageArn=arn, CustomerMetadataProperties={"adopt_space": "aaaaaaaaaaaa"},
                                   CustomerMetadataPropertiesToRemove=["variant"])
    described = sagemaker.describe_model_package(ModelPackageName=arn)
    assert described["CustomerMetadataProperties"] == {"space": "aaaaaaaaaaaa", "adopt_space": "aaaaaaaaaaaa"}
    assert described["ModelApprovalStatus"] == "Approved"  # a metadata-only update keeps the status
