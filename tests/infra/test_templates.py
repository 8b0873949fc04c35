"""Templates: generated files current, cfn-lint and checkov clean, least privilege, deployable into moto.
(What one stack's builder decides is tested beside it: test_serving_stack.py, test_stack_building_blocks.py.)"""

from __future__ import annotations

import json
import subprocess

import boto3
import pytest
import yaml

from infra.stacks import INFRA_DIR, render, templates

REPO_ROOT = INFRA_DIR.parent
CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"


class _CfnLoader(yaml.SafeLoader):
    pass


def load(name: str) -> dict:
    return yaml.load((INFRA_DIR / name).read_text(), Loader=_CfnLoader)


def test_committed_templates_are_generated_from_the_configs():
    for name, template in templates().items():
        assert (INFRA_DIR / name).read_text() == render(template), f"infra/{name} drifted: run `clip-api infra render`"


def test_cfn_lint_is_clean():
    result = subprocess.run(["cfn-lint", *map(str, sorted(INFRA_DIR.glob("*.yaml")))], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_is_clean_and_every_suppression_is_justified():
    assert CHECKOV.exists(), "checkov lives in .venv-checkov (its boto3 pin conflicts with sagemaker): run `make lint-tools`"
    result = subprocess.run([str(CHECKOV), "-d", str(INFRA_DIR), "--framework", "cloudformation", "--skip-download", "--quiet", "-o", "json"],
                            capture_output=True, text=True, timeout=600)
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [(c["check_id"], c["resource"]) for r in reports for c in r["results"]["failed_checks"]]
    assert failed == [], failed
    assert sum(r["summary"]["passed"] for r in reports) > 100
    for name in ("bootstrap.yaml", "serving.yaml", "cicd.yaml"):
        for resource_name, resource in load(name)["Resources"].items():
            for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
                assert len(skip.get("comment", "")) > 20, f"{name}:{resource_name} suppresses {skip['id']} without a reason"


def statements(template: dict):
    for name, resource in template["Resources"].items():
        for pol in resource.get("Properties", {}).get("Policies", []):
            for statement in pol["PolicyDocument"]["Statement"]:
                yield name, statement


@pytest.mark.parametrize("name", ["bootstrap.yaml", "serving.yaml", "cicd.yaml"])
def test_least_privilege(name):
    for resource, statement in statements(load(name)):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not any(a == "*" or a.endswith(":*") for a in actions), f"{resource}: wildcard action {actions}"
        if statement["Resource"] == "*" and statement["Effect"] == "Allow":  # a Deny on * only narrows
            assert statement.get("Sid", "").endswith("NoResourceLevelPermissions"), f"{resource}: {actions} on * without a reason"
            # the reason is checked, not only named: the Service Authorization Reference lists no resource type for the action
            # (infra/iam_policy.py's reference check skips actions allowed on "*")
            scoped = {a: types for a in actions if (types := resource_types(a))}
            assert scoped == {}, f"{resource}: {sorted(scoped)} allowed on * but can be scoped to {scoped}"


def resource_types(action: str) -> list[str]:
    """The resource types the Service Authorization Reference lets a policy scope `action` to."""
    from infra import iam_policy

    prefix, _, name = action.partition(":")
    data = iam_policy.service_data(prefix.lower())
    assert data, f"{action}: no such service in the Service Authorization Reference"
    privilege = data["privileges"].get(data["privileges_lower_name"].get(name.lower(), ""))
    assert privilege, f"{action}: no such action in the Service Authorization Reference"
    return sorted(t for t in privilege["resource_types"] if t)


def test_resource_types_reads_the_reference():
    assert resource_types("ecr:GetAuthorizationToken") == [] and resource_types("cloudwatch:PutMetricData") == []
    assert resource_types("sagemaker:DescribeEndpoint") == ["endpoint"]


def test_buckets_are_encrypted_and_private():
    for name in ("bootstrap.yaml", "cicd.yaml"):
        for resource in load(name)["Resources"].values():
            if resource["Type"] == "AWS::S3::Bucket":
                props = resource["Properties"]
                assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
                assert all(props["PublicAccessBlockConfiguration"].values())


def test_templates_deploy_into_moto_cloudformation(moto_aws):
    cloudformation = boto3.client("cloudformation")
    cloudformation.create_stack(StackName="boot", TemplateBody=(INFRA_DIR / "bootstrap.yaml").read_text())
    outputs = {o["OutputKey"]: o["OutputValue"] for o in cloudformation.describe_stacks(StackName="boot")["Stacks"][0]["Outputs"]}
    bucket = outputs["ArtifactBucketName"]
    s3 = boto3.client("s3")
    assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    s3.put_object(Bucket=bucket, Key="lambda/code.zip", Body=b"PK\x05\x06" + b"\0" * 18)
    cloudformation.create_stack(StackName="serving", TemplateBody=(INFRA_DIR / "serving.yaml").read_text(), Capabilities=["CAPABILITY_IAM"],
                                Parameters=[{"ParameterKey": "ArtifactBucket", "ParameterValue": bucket},
                                            {"ParameterKey": "KmsKeyArn", "ParameterValue": outputs["KmsKeyArn"]},
                                            {"ParameterKey": "LambdaCodeKey", "ParameterValue": "lambda/code.zip"},
                                            {"ParameterKey": "NotificationEmail", "ParameterValue": "ops@example.com"}])
    stack = cloudformation.describe_stacks(StackName="serving")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    functions = {f["FunctionName"] for f in boto3.client("lambda").list_functions()["Functions"]}
    assert {"clip-embedding-api-clip-vit-b-32", "clip-embedding-api-clip-vit-l-14"} <= functions
    assert len(functions) == 4
    machines = boto3.client("stepfunctions").list_state_machines()["stateMachines"]
    assert [m["name"] for m in machines] == ["clip-embedding-api-promotion"]
    definition = json.loads(boto3.client("stepfunctions").describe_state_machine(stateMachineArn=machines[0]["stateMachineArn"])["definition"])
    assert definition["States"]["Plan"]["Parameters"]["FunctionName"].startswith("arn:aws:lambda:")  # substitutions applied
    topics = boto3.client("sns").list_topics()["Topics"]
    assert any(t["TopicArn"].endswith(":clip-embedding-api-promotions") for t in topics)
    events = boto3.client("events")
    rules = events.list_rules()["Rules"]
    assert len(rules) == 1 and rules[0]["State"] == "ENABLED", rules
    assert json.loads(rules[0]["EventPattern"]) == load("serving.yaml")["Resources"]["ApprovalRule"]["Properties"]["EventPattern"]
    assert json.loads(rules[0]["EventPattern"])["detail"] == {"ModelPackageGroupName": ["clip-vit-b-32", "clip-vit-l-14"], "ModelApprovalStatus": ["Approved"]}
    targets = events.list_targets_by_rule(Rule=rules[0]["Name"])["Targets"]
    assert [t["Arn"] for t in targets] == [machines[0]["stateMachineArn"]]  # an approval starts the promotion workflow
    apis = boto3.client("apigateway").get_rest_apis()["items"]
    assert [a["name"] for a in apis] == ["clip-embedding-api"]
    paths = {r["path"] for r in boto3.client("apigateway").get_resources(restApiId=apis[0]["id"])["items"]}
    assert {"/b32", "/l14", "/v1/embeddings"} <= paths
    roles = {r["RoleName"] for r in boto3.client("iam").list_roles()["Roles"]}
    assert any("StateMachineRole" in name for name in roles) and any("ApiFunctionRole" in name for name in roles)


def test_registered_artifacts_never_expire():
    """Every registered model.tar.gz lives under <prefix>/pipelines/: a current-version expiration there breaks rollback."""
    bucket = load("bootstrap.yaml")["Resources"]["ArtifactBucket"]["Properties"]
    for rule in bucket["LifecycleConfiguration"]["Rules"]:
        prefix = rule.get("Prefix", rule.get("Filter", {}).get("Prefix", ""))
        covers_artifacts = "clip-embedding-api/pipelines/".startswith(prefix) or prefix.startswith("clip-embedding-api/pipelines/")
        assert not (covers_artifacts and ("ExpirationInDays" in rule or "ExpirationDate" in rule)), rule


def test_the_workflow_retries_errors_step_functions_really_raises():
    from promotion.workflow_asl import ASL_PATH

    asl = ASL_PATH.read_text()
    assert "SageMaker.ThrottlingException" not in asl  # never raised: unmodelled errors surface under the service's generic name
    states = json.loads(asl)["States"]

    def retried(state: str) -> set[str]:
        return {error for retry in states[state].get("Retry", []) for error in retry["ErrorEquals"]}

    for state in ("CreateModel", "CreateEndpointConfig", "CreateEndpoint"):
        assert "SageMaker.AmazonSageMakerException" in retried(state), state
    assert "SageMaker.SageMakerException" in retried("DescribeEndpoint")
    for state in ("Plan", "SmokeTest"):
        assert {"Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException", "Lambda.TooManyRequestsException"} <= retried(state)
    assert "DynamoDB.ConditionalCheckFailedException" not in retried("SwitchTraffic")  # a lost compare-and-set is final
    assert all(retry.get("JitterStrategy") == "FULL" for state in states.values() for retry in state.get("Retry", []))
