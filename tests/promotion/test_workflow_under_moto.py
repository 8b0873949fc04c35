"""The committed ASL, executed by moto's Step Functions engine, end state asserted in moto."""

from __future__ import annotations

import pytest

V = "clip-tiny-v{}".format


def alarm_set(endpoint: str) -> set[str]:
    return {f"{endpoint}-{s}" for s in ("invocation-5xx", "invocation-4xx", "model-latency-p90", "model-setup-time", "throttles")}


def test_first_deployment(world):
    package = world.register_version()
    result = world.promote(package)
    assert result["status"] == "SUCCEEDED", result
    assert world.serving_endpoint() == V(1)
    assert world.endpoints() == {V(1)}
    assert world.alarms() == alarm_set(V(1))
    described = world.sagemaker.describe_model_package(ModelPackageName=package)
    assert described["CustomerMetadataProperties"]["promotion"] == "live"
    pointer = world.pointer()
    assert pointer.package_arn == package and pointer.version == 1
    env = world.lambda_client.get_function_configuration(FunctionName="clip-embedding-api-clip-tiny")["Environment"]["Variables"]
    assert env == {"MODEL_ID": "clip-tiny", "SERVING_POINTER_TABLE": "clip-embedding-api-serving-pointer"}  # the workflow never writes it
    notes = world.notifications()
    assert [n["subject"] for n in notes] == ["clip-embedding-api promotion succeeded"]
    assert "first deployment" in notes[0]["message"]
    assert "Bake" in result["history"] and "SmokeTest" in result["history"]


def test_new_versions_replace_old_ones_and_retire_beyond_what_is_kept(world):
    first, second, third = world.register_version(), world.register_version(), world.register_version()
    assert world.promote(first)["status"] == "SUCCEEDED"
    assert world.promote(second)["status"] == "SUCCEEDED"
    assert world.serving_endpoint() == V(2)
    assert world.endpoints() == {V(1), V(2)}  # one previous endpoint is kept for rollback
    assert world.alarms() == alarm_set(V(2))  # the replaced endpoint's alarms are removed
    assert world.promote(third)["status"] == "SUCCEEDED"
    assert world.serving_endpoint() == V(3)
    assert world.endpoints() == {V(2), V(3)}  # v1 retired: endpoint, config and model
    assert V(1) not in {m["ModelName"] for m in world.sagemaker.list_models()["Models"]}
    assert V(1) not in {c["EndpointConfigName"] for c in world.sagemaker.list_endpoint_configs()["EndpointConfigs"]}
    assert "replacing clip-tiny-v2" in world.notifications()[-1]["message"]


def assert_rolled_back_to(world, package, serving: str, remaining: set[str], error: str):
    assert world.serving_endpoint() == serving
    assert world.endpoints() == remaining
    described = world.sagemaker.describe_model_package(ModelPackageName=package)
    assert described["ModelApprovalStatus"] == "Rejected"
    assert described["CustomerMetadataProperties"]["promotion_error"] == error
    notes = world.notifications()
    assert notes[-1]["subject"] == "clip-embedding-api promotion rolled back" and error in notes[-1]["message"]


def test_endpoint_failed_rolls_back(world, endpoints_end_up):
    first = world.register_version()
    assert world.promote(first)["status"] == "SUCCEEDED"
    world.notifications()
    endpoints_end_up("Failed")
    second = world.register_version()
    result = world.promote(second)
    assert result["status"] == "FAILED" and result["error"] == "PromotionFailed"
    assert "SwitchTraffic" not in result["history"]
    assert_rolled_back_to(world, second, V(1), {V(1)}, "EndpointFailed")
    assert world.alarms() == alarm_set(V(1))


def test_endpoint_never_in_service_times_out(world, endpoints_end_up):
    endpoints_end_up("Creating")
    package = world.register_version()
    result = world.promote(package)
    assert result["status"] == "FAILED"
    assert result["history"].count("DescribeEndpoint") == 4  # bounded: MAX_POLLS=3 plus the first look
    assert_rolled_back_to(world, package, "", set(), "EndpointTimedOut")


def test_smoke_test_failing_rolls_back(world):
    first = world.register_version()
    assert world.promote(first)["status"] == "SUCCEEDED"
    second = world.register_version()
    result = world.promote(second, smoke={"passed": False, "reason": "min cosine 0.512 to the validated embeddings is under 0.999", "min_cosine": 0.512})
    assert result["status"] == "FAILED"
    assert_rolled_back_to(world, second, V(1), {V(1)}, "SmokeTestFailed")
    assert world.alarms() == alarm_set(V(1))


def test_alarm_during_bake_restores_the_previous_endpoint(world):
    first = world.register_version()
    assert world.promote(first)["status"] == "SUCCEEDED"
    second = world.register_version()
    alarm = world.alarm_fires_after_the_switch(V(2))
    result = world.promote(second, during=alarm)
    assert alarm.fired and result["status"] == "FAILED"
    assert "SwitchTraffic" in result["history"] and "RestorePrevious" in result["history"]
    assert_rolled_back_to(world, second, V(1), {V(1)}, "AlarmDuringBake")
    assert world.alarms() == alarm_set(V(1))  # the new alarms are gone, the old endpoint's stay


def test_duplicate_event_promotes_once_and_quietly(world):
    """A repeat of a handled event (RecordLive's own UpdateModelPackage emits one) mails nobody."""
    package = world.register_version()
    assert world.promote(package)["status"] == "SUCCEEDED"
    assert [n["subject"] for n in world.notifications()] == ["clip-embedding-api promotion succeeded"]
    again = world.promote(package)
    assert again["status"] == "SUCCEEDED" and again["history"][-1] == "AlreadyHandled"
    assert "already serving" in again["plan"]["reason"]
    assert world.endpoints() == {V(1)} and world.serving_endpoint() == V(1)
    assert world.notifications() == []


def test_an_older_approval_is_superseded_not_interleaved(world):
    older, newer = world.register_version(), world.register_version()
    assert world.promote(newer)["status"] == "SUCCEEDED"
    late = world.promote(older)
    assert late["history"][-1] == "Skipped" and "superseded" in late["plan"]["reason"]
    assert world.serving_endpoint() == V(2) and world.endpoints() == {V(2)}


def test_unapproved_package_is_not_promoted(world):
    package = world.register_version(approve=False)
    result = world.promote(package)
    assert result["history"][-1] == "Skipped" and "not Approved" in result["plan"]["reason"]
    assert world.endpoints() == set()


def test_the_switch_is_a_compare_and_set_on_what_the_plan_saw(world):
    """Another actor moved the pointer after this promotion was planned: it must neither switch nor restore over it."""
    from promotion.pointer import ServingPointer

    first = world.register_version()
    assert world.promote(first)["status"] == "SUCCEEDED"
    world.notifications()
    second = world.register_version()
    elsewhere = ServingPointer("clip-tiny", V(9), 9, "arn:elsewhere")
    result = world.promote(second, after_plan=lambda: world.set_pointer(elsewhere))
    assert result["status"] == "FAILED" and "SwitchTraffic" in result["history"] and "RestorePrevious" in result["history"]
    assert world.pointer() == elsewhere  # untouched by the switch and by the rollback
    assert world.endpoints() == {V(1)}  # our new endpoint is cleaned up: nothing names it
    assert world.notifications()[-1]["subject"] == "clip-embedding-api promotion rolled back"


def test_a_failed_restore_deletes_nothing_and_asks_for_a_person(world):
    first = world.register_version()
    assert world.promote(first)["status"] == "SUCCEEDED"
    world.notifications()
    second = world.register_version()
    # the restore's PutItem then fails
    alarm = world.alarm_fires_after_the_switch(V(2), then=lambda: world.dynamodb.delete_table(TableName="clip-embedding-api-serving-pointer"))
    result = world.promote(second, during=alarm)
    assert alarm.fired and result["status"] == "FAILED" and result["error"] == "RestoreFailed"
    assert "DeleteNewEndpoint" not in result["history"] and "RetireEndpoints" not in result["history"]
    assert world.endpoints() == {V(1), V(2)}  # both kept: the pointer may still name the new one
    notes = world.notifications()
    assert [n["subject"] for n in notes] == ["clip-embedding-api promotion needs a person"]
    assert V(2) in notes[0]["message"] and "Nothing was deleted" in notes[0]["message"]


@pytest.fixture
def provisioned_model(monkeypatch):
    """The tiny model's config with provisioned concurrency, as ViT-B/32's has."""
    import clip_lambdas.promotion_planner.app as planner

    original = planner.config_for_group

    def with_provisioned(group):
        config = original(group)
        return config.model_copy(update={"endpoint": config.endpoint.model_copy(update={"provisioned_concurrency": 1})})

    monkeypatch.setattr(planner, "config_for_group", with_provisioned)


@pytest.fixture
def update_endpoint_stand_in(monkeypatch):
    """moto 5.2.5 has no UpdateEndpoint: a stand-in that points the endpoint at its new config, as SageMaker does once updated."""
    from moto.core.responses import ActionResult
    from moto.sagemaker.responses import SageMakerResponse

    def update_endpoint(self):
        endpoint = self.sagemaker_backend.endpoints[self._get_param("EndpointName")]
        self.sagemaker_backend.describe_endpoint_config(self._get_param("EndpointConfigName"))  # must exist
        endpoint.endpoint_config_name = self._get_param("EndpointConfigName")
        return ActionResult({"EndpointArn": endpoint.arn})

    monkeypatch.setattr(SageMakerResponse, "update_endpoint", update_endpoint, raising=False)


def test_a_replaced_endpoint_is_kept_without_provisioned_concurrency_and_retired_whole(world, provisioned_model, update_endpoint_stand_in):
    first, second, third = world.register_version(), world.register_version(), world.register_version()
    assert world.promote(first)["status"] == "SUCCEEDED"
    assert world.sagemaker.describe_endpoint_config(EndpointConfigName=V(1))["ProductionVariants"][0]["ServerlessConfig"]["ProvisionedConcurrency"] == 1
    result = world.promote(second)
    assert result["status"] == "SUCCEEDED" and "ReleaseProvisionedConcurrency" in result["history"]
    kept = world.sagemaker.describe_endpoint(EndpointName=V(1))
    assert kept["EndpointConfigName"] == f"{V(1)}-sb"  # still there for rollback, on the standby config
    standby = world.sagemaker.describe_endpoint_config(EndpointConfigName=f"{V(1)}-sb")["ProductionVariants"][0]
    assert standby["ModelName"] == V(1) and "ProvisionedConcurrency" not in standby["ServerlessConfig"]
    assert world.sagemaker.describe_endpoint_config(EndpointConfigName=V(2))["ProductionVariants"][0]["ServerlessConfig"]["ProvisionedConcurrency"] == 1
    assert world.promote(third)["status"] == "SUCCEEDED"
    configs = {c["EndpointConfigName"] for c in world.sagemaker.list_endpoint_configs()["EndpointConfigs"]}
    assert V(1) not in configs and f"{V(1)}-sb" not in configs  # v1 retired with its standby config
    assert f"{V(2)}-sb" in configs and world.serving_endpoint() == V(3)


def test_a_failed_release_of_provisioned_concurrency_costs_money_not_the_promotion(world, provisioned_model):
    """Without UpdateEndpoint (moto has none) the release fails: the promotion still succeeds and the old endpoint is kept as it was."""
    first, second = world.register_version(), world.register_version()
    assert world.promote(first)["status"] == "SUCCEEDED"
    result = world.promote(second)
    assert result["status"] == "SUCCEEDED" and "ReleaseProvisionedConcurrency" in result["history"]
    assert world.serving_endpoint() == V(2) and world.endpoints() == {V(1), V(2)}
    assert world.sagemaker.describe_endpoint(EndpointName=V(1))["EndpointConfigName"] == V(1)


def test_a_package_registered_as_approved_is_not_promoted(world):
    """Whoever could call CreateModelPackage with Approved skipped the registry's approval: refused, and said so."""
    arn = world.sagemaker.create_model_package(
        ModelPackageGroupName="clip-tiny", ModelPackageDescription="registered approved",
        InferenceSpecification={"Containers": [{"Image": "img", "ModelDataUrl": "s3://clip-test-bucket/run/artifact/model.tar.gz"}],
                                "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]},
        ModelApprovalStatus="Approved")["ModelPackageArn"]
    result = world.promote(arn)
    assert result["history"][-1] == "Skipped" and "registered as Approved" in result["plan"]["reason"]
    assert world.endpoints() == set() and world.serving_endpoint() == ""
    assert world.notifications()[-1]["subject"] == "clip-embedding-api promotion skipped"


def test_a_bake_that_saw_no_invocations_is_unknown_not_good(world):
    """Alarms treat missing data as not breaching: with no invocation of the new endpoint reported, the bake proves nothing."""
    first = world.register_version()
    assert world.promote(first)["status"] == "SUCCEEDED"
    world.notifications()
    second = world.register_version()
    result = world.promote(second, traffic=False)
    assert result["status"] == "FAILED" and "BakeSawNoTraffic" in result["history"]
    assert_rolled_back_to(world, second, V(1), {V(1)}, "BakeSawNoTraffic")
