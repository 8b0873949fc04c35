"""IAM as a real account evaluates it (moto does not): the evaluator itself, the Service Authorization
Reference, and every call of the workflow and the Lambdas against the rendered policy of the role
that makes it. See infra/iam_policy.py."""

from __future__ import annotations

import copy
import json
import re

import pytest

from infra import iam_policy as ip
from infra.iam_policy import ACCOUNT, REGION, Deployment, Request

ROLE = "arn:aws:iam::123456789012:role/svc"


def doc(*statements) -> list[dict]:
    return [{"Version": "2012-10-17", "Statement": list(statements)}]


# ------------------------------------------------------------------------------------------ evaluator


def test_evaluator_allow_implicit_deny_and_explicit_deny_wins():
    allow = {"Effect": "Allow", "Action": "sagemaker:DescribeEndpoint", "Resource": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/clip-*"}
    endpoint = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/clip-b32-v3"
    assert ip.evaluate(doc(allow), "sagemaker:DescribeEndpoint", endpoint) == "Allow"
    assert ip.evaluate(doc(allow), "SageMaker:describeendpoint", endpoint) == "Allow"  # actions are case-insensitive
    assert ip.evaluate(doc(allow), "sagemaker:DeleteEndpoint", endpoint) == "ImplicitDeny"
    assert ip.evaluate(doc(allow), "sagemaker:DescribeEndpoint", endpoint.replace("clip-", "other-")) == "ImplicitDeny"
    assert ip.evaluate(doc(allow), "sagemaker:DescribeEndpoint", endpoint.replace("us-east-1", "eu-west-1")) == "ImplicitDeny"
    deny = {"Effect": "Deny", "Action": "sagemaker:*", "Resource": "*"}
    assert ip.evaluate(doc(allow, deny), "sagemaker:DescribeEndpoint", endpoint) == "Deny"


def test_evaluator_wildcards_notaction_and_notresource():
    statement = {"Effect": "Allow", "Action": ["kms:GenerateDataKey*", "kms:Decrypt"], "Resource": "arn:aws:kms:us-east-1:123456789012:key/?bc*"}
    key = "arn:aws:kms:us-east-1:123456789012:key/abc-123"
    assert ip.evaluate(doc(statement), "kms:GenerateDataKeyWithoutPlaintext", key) == "Allow"
    assert ip.evaluate(doc(statement), "kms:Encrypt", key) == "ImplicitDeny"
    assert ip.evaluate(doc(statement), "kms:Decrypt", "arn:aws:kms:us-east-1:123456789012:key/bc-123") == "ImplicitDeny"  # ? is one char
    not_action = {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}
    assert ip.evaluate(doc(not_action), "s3:GetObject", "arn:aws:s3:::b/k") == "Allow"
    assert ip.evaluate(doc(not_action), "iam:PassRole", ROLE) == "ImplicitDeny"
    not_resource = {"Effect": "Deny", "Action": "s3:*", "NotResource": "arn:aws:s3:::mine/*"}
    allow_all = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}
    assert ip.evaluate(doc(allow_all, not_resource), "s3:GetObject", "arn:aws:s3:::mine/k") == "Allow"
    assert ip.evaluate(doc(allow_all, not_resource), "s3:GetObject", "arn:aws:s3:::theirs/k") == "Deny"


def test_wildcards_do_not_span_arn_parts():
    # The region part is its own segment: "*" there must not swallow the account's colon.
    assert ip.arn_matches("arn:aws:sagemaker:*:123456789012:endpoint/*", "arn:aws:sagemaker:us-east-1:123456789012:endpoint/x")
    assert not ip.arn_matches("arn:aws:sagemaker:*:endpoint/*", "arn:aws:sagemaker:us-east-1:123456789012:endpoint/x")
    # ... but inside the resource part a wildcard spans "/" and ":" (log streams of a log group).
    assert ip.arn_matches("arn:aws:logs:us-east-1:123456789012:log-group:/aws/*",
                          "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/f:log-stream:2026/01/01/x")
    assert not ip.arn_matches("arn:aws:s3:::bucket", "arn:aws:s3:::bucket/key")


def test_conditions():
    pass_role = {"Effect": "Allow", "Action": "iam:PassRole", "Resource": ROLE,
                 "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}}
    assert ip.evaluate(doc(pass_role), "iam:PassRole", ROLE, {"iam:PassedToService": "sagemaker.amazonaws.com"}) == "Allow"
    assert ip.evaluate(doc(pass_role), "iam:PassRole", ROLE, {"iam:PassedToService": "lambda.amazonaws.com"}) == "ImplicitDeny"
    assert ip.evaluate(doc(pass_role), "iam:PassRole", ROLE, {}) == "ImplicitDeny"  # a missing key fails the condition
    if_exists = dict(pass_role, Condition={"StringEqualsIfExists": {"iam:PassedToService": "sagemaker.amazonaws.com"}})
    assert ip.evaluate(doc(if_exists), "iam:PassRole", ROLE, {}) == "Allow"
    arn_like = {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*",
                "Condition": {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": "arn:aws:logs:us-east-1:123456789012:log-group:*"}}}
    assert ip.evaluate(doc(arn_like), "kms:Decrypt", "k", {"kms:EncryptionContext:aws:logs:arn": "arn:aws:logs:us-east-1:123456789012:log-group:g"}) == "Allow"
    assert ip.evaluate(doc(arn_like), "kms:Decrypt", "k", {"kms:EncryptionContext:aws:logs:arn": "arn:aws:logs:us-east-1:999999999999:log-group:g"}) == "ImplicitDeny"
    insecure = {"Effect": "Deny", "Action": "s3:*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
    assert ip.evaluate(doc(insecure), "s3:GetObject", "arn:aws:s3:::b/k", {"aws:SecureTransport": False}) == "Deny"
    assert ip.evaluate(doc(insecure), "s3:GetObject", "arn:aws:s3:::b/k", {"aws:SecureTransport": True}) == "ImplicitDeny"
    not_equals = {"Effect": "Deny", "Action": "*", "Resource": "*", "Condition": {"StringNotEquals": {"aws:SourceAccount": ACCOUNT}}}
    assert ip.evaluate(doc(not_equals), "s3:GetObject", "*", {"aws:SourceAccount": "999999999999"}) == "Deny"
    assert ip.evaluate(doc(not_equals), "s3:GetObject", "*", {"aws:SourceAccount": ACCOUNT}) == "ImplicitDeny"


def test_resource_policy_principals():
    policy = {"Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*", "Resource": "*"},
                            {"Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"}, "Action": "kms:Decrypt", "Resource": "*",
                             "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}}}]}
    assert ip.resource_policy_allows(policy, {"AWS": ROLE}, "kms:Encrypt")
    assert not ip.resource_policy_allows(policy, {"AWS": "arn:aws:iam::999999999999:role/x"}, "kms:Encrypt")
    assert ip.resource_policy_allows(policy, {"Service": "sns.amazonaws.com"}, "kms:Decrypt", context={"aws:SourceAccount": ACCOUNT})
    assert not ip.resource_policy_allows(policy, {"Service": "sns.amazonaws.com"}, "kms:Decrypt")
    assert not ip.resource_policy_allows(policy, {"Service": "logs.us-east-1.amazonaws.com"}, "kms:Decrypt", context={"aws:SourceAccount": ACCOUNT})


def test_rendering_resolves_intrinsics_with_generated_physical_names():
    template = {
        "Parameters": {"Bucket": {"Type": "String"}},
        "Conditions": {"Prod": {"Fn::Equals": [{"Ref": "AWS::Region"}, "us-east-1"]}},
        "Resources": {
            "Fn": {"Type": "AWS::Lambda::Function", "Properties": {"Role": {"Fn::GetAtt": ["Role", "Arn"]}}},
            "Role": {"Type": "AWS::IAM::Role", "Properties": {"Policies": [{"PolicyName": "p", "PolicyDocument": {"Statement": [
                {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": {"Fn::GetAtt": ["Fn", "Arn"]}},
                {"Effect": "Allow", "Action": "s3:GetObject", "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${Bucket}/${!literal}"}},
                {"Effect": "Allow", "Action": "sns:Publish", "Resource": {"Fn::If": ["Prod", {"Ref": "Topic"}, {"Ref": "AWS::NoValue"}]}},
            ]}}]}},
            "Topic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": "t"}},
        },
    }
    deployment = Deployment({"serving.yaml": template}, {"serving.yaml": {"Bucket": "b"}})
    role = deployment.role("Role")
    assert re.fullmatch(r"arn:aws:iam::123456789012:role/clip-embedding-api-serving-Role-[0-9A-F]{12}", role.arn)
    function_arn = deployment.stacks["serving"].getatt("Fn", "Arn")
    assert re.fullmatch(r"arn:aws:lambda:us-east-1:123456789012:function:clip-embedding-api-serving-Fn-[0-9A-F]{12}", function_arn)
    assert deployment.allowed("Role", "lambda:InvokeFunction", function_arn)
    assert not deployment.allowed("Role", "lambda:InvokeFunction", function_arn + "x")
    assert deployment.allowed("Role", "s3:GetObject", "arn:aws:s3:::b/${literal}")
    assert deployment.allowed("Role", "sns:Publish", "arn:aws:sns:us-east-1:123456789012:t")


def test_reference_overlap_distinguishes_resource_types():
    endpoint = "arn:${Partition}:sagemaker:${Region}:${Account}:endpoint/${EndpointName}"
    config = "arn:${Partition}:sagemaker:${Region}:${Account}:endpoint-config/${EndpointConfigName}"
    assert ip.glob_overlaps_template("arn:aws:sagemaker:us-east-1:123456789012:endpoint/clip-*", endpoint)
    assert not ip.glob_overlaps_template("arn:aws:sagemaker:us-east-1:123456789012:endpoint/clip-*", config)
    assert ip.glob_overlaps_template("arn:aws:sagemaker:us-east-1:123456789012:endpoint*", config)
    assert ip.glob_overlaps_template("*", config)
    bucket, obj = "arn:${Partition}:s3:::${BucketName}", "arn:${Partition}:s3:::${BucketName}/${ObjectName}"
    assert not ip.glob_overlaps_template("arn:aws:s3:::b/*", bucket)
    assert ip.glob_overlaps_template("arn:aws:s3:::b/*", obj)
    assert not ip.glob_overlaps_template("arn:aws:s3:::b", obj)


# ------------------------------------------------------------------ Service Authorization Reference


def test_every_granted_action_exists_and_covers_its_required_resource_types(deployment):
    assert ip.deployment_reference_problems(deployment) == []


def test_reference_check_bites():
    problems = ip.reference_problems(doc(
        {"Effect": "Allow", "Action": ["sagemaker:CreateEndpoint"], "Resource": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/clip-*"},
        {"Effect": "Allow", "Action": ["sagemaker:DescribeEndpoints"], "Resource": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/clip-*"},
        {"Effect": "Allow", "Action": ["sagemaker:ListEndpoints"], "Resource": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/clip-*"},
        {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": "arn:aws:s3:::b/*"},
    ))
    text = "\n".join(problems)
    assert "sagemaker:CreateEndpoint is authorised against a endpoint-config" in text
    assert "sagemaker:DescribeEndpoints is no action" in text
    assert "sagemaker:ListEndpoints supports no resource-level permissions" in text
    assert "s3:ListBucket is allowed only on ['arn:aws:s3:::b/*'], none of the resource types" in text
    assert len(problems) == 4
    fixed = ip.reference_problems(doc({"Effect": "Allow", "Action": ["sagemaker:CreateEndpoint"], "Resource": [
        "arn:aws:sagemaker:us-east-1:123456789012:endpoint/clip-*", "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/clip-*"]}))
    assert fixed == []


def test_reference_check_finds_a_misspelt_action_in_the_rendered_templates(rendered):
    broken = copy.deepcopy(rendered)
    statement = broken["serving.yaml"]["Resources"]["SmokeTestRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]
    statement["Action"] = ["s3:GetObjects"]
    problems = ip.deployment_reference_problems(Deployment(broken))
    assert any("s3:GetObjects is no action" in p for p in problems), problems


# ------------------------------------------------------------- the promotion workflow's Task states


def _served_configs(deployment):
    from clip_core.model_config import load_all_model_configs

    groups = {r["Properties"]["ModelPackageGroupName"] for _, _, r in deployment.resources_of_type("AWS::SageMaker::ModelPackageGroup")}
    configs = [c for c in load_all_model_configs() if c.registry.model_package_group in groups]
    assert configs, "no served model in the rendered serving template"
    return configs


def _function(deployment, handler: str):
    for stack, logical, resource in deployment.resources_of_type("AWS::Lambda::Function"):
        if resource["Properties"]["Handler"] == handler:
            return stack, logical, resource
    raise LookupError(handler)


def _live_state(model_id: str, previous: str, version: int, package_arn: str, endpoints: tuple):
    from promotion.plan import LiveState

    fields = LiveState.__dataclass_fields__
    if "pointer" in fields:
        from promotion.pointer import ServingPointer

        return LiveState(pointer=ServingPointer(model_id, previous, version if previous else 0, package_arn if previous else ""), endpoints=endpoints)
    return LiveState(function_name=f"clip-embedding-api-{model_id}", environment={"SAGEMAKER_ENDPOINT_NAME": previous}, endpoints=endpoints)


def workflow_inputs(deployment) -> list[dict]:
    """State inputs of the promotion workflow, from the real planner logic with the rendered planner's settings:
    a first deployment and a replacement with retired endpoints, for every served model."""
    from promotion.lock import lock_key
    from promotion.plan import PackageInfo, plan_promotion, resource_name
    from clip_lambdas.promotion_planner.app import settings_from_env

    _, _, planner = _function(deployment, "clip_lambdas.promotion_planner.app.handler")
    settings = settings_from_env(planner["Properties"]["Environment"]["Variables"])
    bucket = deployment.stacks["bootstrap"].outputs.get("ArtifactBucketName", f"clip-embedding-api-{ACCOUNT}-{REGION}")
    inputs = []
    for config in _served_configs(deployment):
        group = config.registry.model_package_group
        for version, previous in ((1, 0), (5, 4)):
            package_arn = ip.arn("sagemaker", f"model-package/{group}/{version}")
            package = PackageInfo(package_arn, group, version, "Approved", f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/clip-embedding-api-serve@sha256:" + "ab" * 32,
                                  f"s3://{bucket}/clip-embedding-api/pipelines/{config.model_id}/run/model.tar.gz",
                                  f"s3://{bucket}/clip-embedding-api/pipelines/{config.model_id}/run/evaluation/model_quality.json",
                                  container_environment={"CLIP_API_MANIFEST_SHA256": "ab" * 32}, space="0123456789ab")
            existing = tuple(resource_name(config.model_id, v) for v in range(1, previous + 1))
            live = _live_state(config.model_id, existing[-1] if existing else "", previous, ip.arn("sagemaker", f"model-package/{group}/{previous}"), existing)
            plan = plan_promotion(config, package, live, settings, 1_800_000_000).to_dict()
            assert plan["action"] == "promote", plan
            plan.update(lock_key=lock_key(config.model_id), lock_owner_values={":me": {"S": "the-execution"}},
                        planned_at="2026-01-01T00:00:00+00:00")  # as the planner adds them
            event = {"detail": {"ModelPackageArn": package_arn, "ModelPackageGroupName": group, "ModelApprovalStatus": "Approved"}}
            inputs.append({**event, "plan": plan, "error": {"Error": "SmokeTestFailed", "Cause": "test"}, "polls": {"count": 0},
                           "endpoint": {"status": "InService"}, "bake": {"firing": False, "states": []}, "smoke": {"passed": True, "reason": "ok"}})
    return inputs


def _workflow(deployment):
    definition, role = ip.state_machine_definition(deployment)
    return definition, role, ip.workflow_requests(definition, workflow_inputs(deployment), deployment)


def test_every_task_of_the_workflow_is_covered_by_the_check(deployment):
    definition, _, requests = _workflow(deployment)
    tasks = {path.rsplit("/", 1)[-1] for path, _ in ip.task_states(definition)}
    checked = {state for state, _ in requests}
    assert tasks - checked == set(), "tasks whose parameters the sample inputs do not reach: extend workflow_inputs"


def test_the_state_machine_role_may_make_every_call_of_every_task(deployment):
    _, role, requests = _workflow(deployment)
    denied = sorted({f"{state}: {r}" for state, r in requests if not deployment.allowed(role, r.action, r.resource, r.context)})
    assert denied == []


def test_the_state_machine_role_may_log_and_trace(deployment):
    _, role, _ = _workflow(deployment)
    assert deployment.denied(role, ip.state_machine_requirements(deployment)) == []


def test_workflow_check_bites(rendered):
    """Take back one grant at a time: the check names the task that would fail in a real account."""
    def without(action: str) -> Deployment:
        broken = copy.deepcopy(rendered)
        for pol in broken["serving.yaml"]["Resources"]["StateMachineRole"]["Properties"]["Policies"]:
            for statement in pol["PolicyDocument"]["Statement"]:
                statement["Action"] = [a for a in ip._as_list(statement["Action"]) if a != action] or ["sagemaker:DescribeEndpoint"]
        return Deployment(broken)

    for action, state in (("sagemaker:ListTags", "CreateEndpoint"), ("iam:PassRole", "CreateModel"), ("sns:Publish", "NotifySuccess"),
                          ("sagemaker:DeleteEndpointConfig", "RetireEndpointConfig")):
        broken = without(action)
        _, role, requests = _workflow(broken)
        denied = {(s, r.action) for s, r in requests if not broken.allowed(role, r.action, r.resource, r.context)}
        assert (state, action) in denied, (action, sorted(denied))


def test_create_endpoint_needs_the_endpoint_config_arn():
    requests = ip.task_requests("arn:aws:states:::sagemaker:createEndpoint", {"EndpointName": "clip-a-v1", "EndpointConfigName": "clip-a-v1"})
    assert {(r.action, r.resource.rsplit(":", 1)[1]) for r in requests} == {
        ("sagemaker:CreateEndpoint", "endpoint/clip-a-v1"), ("sagemaker:CreateEndpoint", "endpoint-config/clip-a-v1"),
        ("sagemaker:ListTags", "endpoint/clip-a-v1")}
    with pytest.raises(LookupError):
        ip.task_requests("arn:aws:states:::sagemaker:createTrainingJob.sync", {})


# ---------------------------------------------------------------------------- keys and services


def _key_policy(deployment):
    policies = deployment.key_policies()
    assert len(policies) == 1
    return next(iter(policies.items()))


def test_cloudwatch_logs_may_use_the_key_for_every_encrypted_log_group(deployment):
    key_arn, policy = _key_policy(deployment)
    groups = [(stack, logical, r) for stack, logical, r in deployment.resources_of_type("AWS::Logs::LogGroup") if r["Properties"].get("KmsKeyId")]
    assert groups
    for stack, logical, _ in groups:
        group_arn = stack.physical[logical][1]["Arn"].removesuffix(":*")
        context = {"kms:EncryptionContext:aws:logs:arn": group_arn}
        for action in ("kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom", "kms:Describe" + "Key"):
            assert ip.resource_policy_allows(policy, {"Service": f"logs.{REGION}.amazonaws.com"}, action, key_arn, context), (logical, action)
        other = {"kms:EncryptionContext:aws:logs:arn": group_arn.replace(ACCOUNT, "999999999999")}
        assert not ip.resource_policy_allows(policy, {"Service": f"logs.{REGION}.amazonaws.com"}, "kms:Decrypt", key_arn, other)


def test_service_principals_in_the_key_policy_are_scoped_to_this_account(deployment):
    """Confused-deputy protection: a service acting for another account may not use the key."""
    _, policy = _key_policy(deployment)
    services = {s for st in policy["Statement"] for s in ip._as_list((st.get("Principal") or {}).get("Service"))}
    assert services
    for service in services:
        for action in ("kms:Decrypt", "kms:GenerateDataKey"):
            foreign = {"aws:SourceAccount": "999999999999", "aws:SourceArn": f"arn:aws:sns:{REGION}:999999999999:t",
                       "kms:EncryptionContext:aws:logs:arn": f"arn:aws:logs:{REGION}:999999999999:log-group:g", "kms:CallerAccount": "999999999999"}
            assert not ip.resource_policy_allows(policy, {"Service": service}, action, "*", foreign), (service, action)


def test_alarms_may_publish_to_the_encrypted_topic(deployment):
    key_arn, policy = _key_policy(deployment)
    topics = [(stack.physical[logical][0], r) for stack, logical, r in deployment.resources_of_type("AWS::SNS::Topic") if r["Properties"].get("KmsMasterKeyId")]
    assert topics
    for topic_arn, _ in topics:
        assert deployment.topic_key_arn(topic_arn) == key_arn
        context = {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": ip.arn("cloudwatch", "alarm:clip-x-v1-throttles")}
        for action in ("kms:Decrypt", "kms:GenerateDataKey"):
            assert ip.resource_policy_allows(policy, {"Service": "cloudwatch.amazonaws.com"}, action, key_arn, context), action


def test_no_hard_coded_partition(rendered):
    for name, template in rendered.items():
        text = json.dumps(template["Resources"])
        # the committed ASL inside DefinitionString may say arn:aws: only through ${Partition}
        assert not re.search(r"arn:aws[:-]", text.replace("arn:aws:iam::aws:policy", "")), f"{name}: arn:aws hard-coded, use ${{AWS::Partition}}"


# ------------------------------------------------------------------------------------ CI identity


def ci_requests(deployment) -> list[tuple[str, Request]]:
    """(role, request) for what CodeBuild does outside the AWS SDK: clone through the source connection
    (CODEBUILD_CLONE_REF), pull the base images the buildspec and Dockerfiles name from ECR registries."""
    from infra.stacks import INFRA_DIR

    repo = INFRA_DIR.parent
    out = []
    for stack, logical, pipeline in deployment.resources_of_type("AWS::CodePipeline::Pipeline"):
        stages = pipeline["Properties"]["Stages"]
        for stage in stages:
            for action in stage["Actions"]:
                config = action.get("Configuration", {})
                if config.get("OutputArtifactFormat") != "CODEBUILD_CLONE_REF":
                    continue
                outputs = {a["Name"] for a in action.get("OutputArtifacts", [])}
                for consumer in (a for s in stages for a in s["Actions"] if {i["Name"] for i in a.get("InputArtifacts", [])} & outputs):
                    project = next(r for st, lg, r in deployment.resources_of_type("AWS::CodeBuild::Project") if st.physical[lg][0] == consumer["Configuration"]["ProjectName"])
                    role = deployment.role_for_arn(project["Properties"]["ServiceRole"]).key
                    out.append((role, Request("codestar-connections:UseConnection", config["ConnectionArn"], why="CodeBuild clones with CODEBUILD_CLONE_REF")))
    build_role = deployment.role("cicd/BuildRole").key
    texts = [(repo / "buildspec.yml").read_text(), (repo / "infra" / "base-images.json").read_text()] + [p.read_text() for p in sorted(repo.glob("*/Dockerfile"))]
    images = {m for text in texts for m in re.findall(r"(\d{12})\.dkr\.ecr\.[^/\s]+/([a-z0-9._/-]+)[:@]", text)}
    assert images, "no ECR image found in buildspec.yml and the Dockerfiles"
    for account, repository in sorted(images):
        if repository.startswith("clip-embedding-api-"):
            continue  # our own repositories: pushed and pulled under the account's own grants
        for action in ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"):
            out.append((build_role, Request(action, ip.arn("ecr", f"repository/{repository}", account=account), why="docker pull of a base image")))
    out.append((build_role, Request("ecr:GetAuthorizationToken", "*", why="docker login")))
    return out


def test_the_codebuild_role_can_clone_and_pull_its_base_images(deployment):
    requests = ci_requests(deployment)
    assert any(r.action == "codestar-connections:UseConnection" for _, r in requests)
    assert any(":763104351884:" in r.resource for _, r in requests)
    assert [f"{role}: {r}" for role, r in requests if not deployment.allowed(role, r.action, r.resource, r.context)] == []


def test_ci_check_bites(rendered):
    broken = copy.deepcopy(rendered)
    statements = broken["cicd.yaml"]["Resources"]["BuildRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    statements[:] = [s for s in statements if "codestar-connections:UseConnection" not in ip._as_list(s["Action"])
                     and not any(":763104351884:" in str(r) for r in ip._as_list(s["Resource"]))]
    deployment = Deployment(broken)
    denied = {r.action for role, r in ci_requests(deployment) if not deployment.allowed(role, r.action, r.resource, r.context)}
    assert denied == {"codestar-connections:UseConnection", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"}


# ----------------------------------------------------------------------------- SageMaker Pipelines


def pipeline_checks(deployment):
    """Each served model's pipeline, defined with the serving stack's PipelineRole as `clip-api deploy` must pass it."""
    from pipeline.definition import pipeline_definition
    from pipeline.settings import PipelineSettings

    pipeline_role = deployment.role("serving/PipelineRole")
    bucket = deployment.stacks["bootstrap"].outputs["ArtifactBucketName"]
    settings = PipelineSettings.from_env({"CLIP_API_ACCOUNT_ID": ACCOUNT, "CLIP_API_REGION": REGION, "CLIP_API_BUCKET": bucket,
                                          "CLIP_API_PIPELINE_ROLE_ARN": pipeline_role.arn})
    out = []
    for config in _served_configs(deployment):
        for who, request in ip.pipeline_requests(pipeline_definition(config, settings), deployment):
            role = pipeline_role if who == "pipeline" else deployment.role_for_arn(who)
            assert role is not None, f"{config.model_id}: a job runs as {who}, which no template creates"
            out.append((config.model_id, role.key, request))
    return out


def test_the_pipeline_role_allows_every_step_of_every_pipeline(deployment):
    checks = pipeline_checks(deployment)
    assert {r.action for _, _, r in checks} >= {"sagemaker:CreateProcessingJob", "iam:PassRole", "s3:GetObject", "s3:PutObject", "sagemaker:CreateModelPackage"}
    denied = sorted({f"{model} {role}: {r}" for model, role, r in checks if not deployment.allowed(role, r.action, r.resource, r.context)})
    assert denied == [], "\n".join(denied)


def test_pipeline_check_bites(rendered):
    broken = copy.deepcopy(rendered)
    for statement in broken["serving.yaml"]["Resources"]["PipelineRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]:
        statement["Action"] = [a for a in ip._as_list(statement["Action"]) if a != "sagemaker:CreateModelPackage"] or ["sagemaker:ListTags"]
    deployment = Deployment(broken)
    denied = {r.action for _, role, r in pipeline_checks(deployment) if not deployment.allowed(role, r.action, r.resource, r.context)}
    assert denied == {"sagemaker:CreateModelPackage"}


def test_the_pipeline_role_may_register_only_for_approval(deployment):
    """Whoever starts a pipeline (or uses its role) must not be able to register a package as Approved."""
    _, role, request = next(check for check in pipeline_checks(deployment) if check[2].action == "sagemaker:CreateModelPackage")
    assert deployment.allowed(role, request.action, request.resource, {"sagemaker:ModelApprovalStatus": "PendingManualApproval"})
    for status in ("Approved", "Rejected"):
        assert not deployment.allowed(role, request.action, request.resource, {"sagemaker:ModelApprovalStatus": status})
    assert not deployment.allowed(role, request.action, request.resource, {})  # the status left out (defaults are not trusted)


def test_neither_a_build_nor_the_workflow_may_record_a_space_adoption_or_relabel_a_space(deployment):
    """adopt_space is a person's decision at approval (issue 17); the space is the gate's, written once at registration."""
    package = ip.arn("sagemaker", "model-package/clip-vit-b-32/3")
    pipeline, workflow = deployment.role("serving/PipelineRole").key, deployment.role("serving/StateMachineRole").key
    pending = {"sagemaker:ModelApprovalStatus": "PendingManualApproval"}
    assert deployment.allowed(pipeline, "sagemaker:CreateModelPackage", package, {**pending, "sagemaker:CustomerMetadataProperties/space": "ab"})
    assert not deployment.allowed(pipeline, "sagemaker:CreateModelPackage", package, {**pending, "sagemaker:CustomerMetadataProperties/adopt_space": "ab"})
    assert not deployment.allowed(pipeline, "sagemaker:UpdateModelPackage", package, {**pending, "sagemaker:CustomerMetadataProperties/space": "ab"})
    for key in ("space", "adopt_space"):
        assert not deployment.allowed(workflow, "sagemaker:UpdateModelPackage", package, {f"sagemaker:CustomerMetadataProperties/{key}": "ab"})
    assert deployment.allowed(workflow, "sagemaker:UpdateModelPackage", package, {"sagemaker:CustomerMetadataProperties/promotion": "live"})


def test_only_the_workflow_may_write_a_serving_pointer(deployment):
    """The planner takes and releases lock items; a serving pointer is written by the state machine alone."""
    table = ip.arn("dynamodb", "table/clip-embedding-api-serving-pointer")
    planner, workflow = deployment.role("serving/PlannerRole").key, deployment.role("serving/StateMachineRole").key
    for action in ("dynamodb:PutItem", "dynamodb:DeleteItem"):
        assert deployment.allowed(planner, action, table, {"dynamodb:LeadingKeys": ["lock:clip-vit-b-32"]})
        assert not deployment.allowed(planner, action, table, {"dynamodb:LeadingKeys": ["clip-vit-b-32"]})
    assert deployment.allowed(workflow, "dynamodb:PutItem", table, {"dynamodb:LeadingKeys": ["clip-vit-b-32"]})
    assert not deployment.allowed(workflow, "dynamodb:DeleteItem", table, {"dynamodb:LeadingKeys": ["clip-vit-b-32"]})  # a pointer is never deleted
    api = deployment.role("serving/ApiFunctionRole").key
    assert not deployment.allowed(api, "dynamodb:PutItem", table, {"dynamodb:LeadingKeys": ["clip-vit-b-32"]})


def test_builds_cannot_rewrite_what_cloudformation_and_codebuild_run(deployment):
    """A processing job's code (the build image, its dependencies) writes pipeline outputs only."""
    bucket = f"clip-embedding-api-{ACCOUNT}-{REGION}"
    pipeline = deployment.role("serving/PipelineRole").key
    assert deployment.allowed(pipeline, "s3:PutObject", f"arn:aws:s3:::{bucket}/clip-embedding-api/pipelines/clip-tiny/run/artifact/model.tar.gz", {})
    for key in ("clip-embedding-api/templates/serving-0123.yaml", "clip-embedding-api/lambda/0123.zip", "clip-embedding-api/deploy/last-deployed-commit",
                "clip-embedding-api/code/processing_entry-0123456789abcdef.py"):
        assert not deployment.allowed(pipeline, "s3:PutObject", f"arn:aws:s3:::{bucket}/{key}", {}), key


def test_the_workflow_records_outcomes_but_never_approves(deployment):
    workflow = deployment.role("serving/StateMachineRole").key
    package = ip.arn("sagemaker", "model-package/clip-vit-b-32/3")
    assert deployment.allowed(workflow, "sagemaker:UpdateModelPackage", package, {})  # RecordLive: metadata only
    assert deployment.allowed(workflow, "sagemaker:UpdateModelPackage", package, {"sagemaker:ModelApprovalStatus": "Rejected"})
    assert not deployment.allowed(workflow, "sagemaker:UpdateModelPackage", package, {"sagemaker:ModelApprovalStatus": "Approved"})
