"""The SageMaker Pipeline definition, built offline and asserted on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from inference_code.manifest import embedding_space
from pipeline.definition import pipeline_definition
from pipeline.local_runner import LocalPipelineRunner, json_path
from pipeline.settings import ENTRY_SCRIPT, PipelineSettings, entry_script_name

SETTINGS = PipelineSettings.from_env({"CLIP_API_REGION": "eu-west-1", "CLIP_API_ACCOUNT_ID": "111122223333"})


@pytest.fixture(scope="module")
def definition(b32_config):
    return pipeline_definition(b32_config, SETTINGS)


def steps_by_name(definition) -> dict:
    found = {}

    def walk(steps):
        for step in steps:
            found[step["Name"]] = step
            if step["Type"] == "Condition":
                walk(step["Arguments"]["IfSteps"])
                walk(step["Arguments"]["ElseSteps"])

    walk(definition["Steps"])
    return found


def test_parameters_an_operator_may_change(definition, b32_config):
    parameters = {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]}
    assert parameters == {
        "WeightsSource": "pretrained",
        "Variant": b32_config.serving.variant,
        "ProcessingInstanceType": "ml.m5.2xlarge",
        "GitCommit": "unknown",
        "RandomInitSeed": "0",  # read only with WeightsSource=random
    }  # no ModelApprovalStatus: whoever starts an execution must not be able to register a package as Approved


def test_steps_order_and_types(definition):
    assert [(s["Name"], s["Type"]) for s in definition["Steps"]] == [("Package", "Processing"), ("Validate", "Processing"), ("CheckValidation", "Condition")]
    steps = steps_by_name(definition)
    assert steps["Register-RegisterModel"]["Type"] == "RegisterModel"
    assert steps["ValidationFailed"]["Type"] == "Fail"
    assert [s["Name"] for s in definition["Steps"][2]["Arguments"]["IfSteps"]] == ["Register-RegisterModel"]
    assert [s["Name"] for s in definition["Steps"][2]["Arguments"]["ElseSteps"]] == ["ValidationFailed"]


def test_the_local_runner_has_a_handler_for_every_step_type_of_the_definition(definition):
    assert {step["Type"] for step in steps_by_name(definition).values()} <= set(LocalPipelineRunner.STEP_HANDLERS)


def test_the_local_runner_refuses_a_step_type_it_has_no_handler_for(tmp_path):
    runner = LocalPipelineRunner({"Steps": [{"Name": "Notify", "Type": "Lambda"}]}, s3=None, sagemaker=None, workdir=tmp_path, log=lambda _: None)
    with pytest.raises(NotImplementedError, match="step type Lambda is not supported"):
        runner.run()


def test_processing_steps_run_the_clip_api_entry_point(definition):
    package, validate = steps_by_name(definition)["Package"], steps_by_name(definition)["Validate"]
    for step in (package, validate):
        app = step["Arguments"]["AppSpecification"]
        assert app["ImageUri"] == "111122223333.dkr.ecr.eu-west-1.amazonaws.com/clip-embedding-api-build:latest"
        assert app["ContainerEntrypoint"] == ["python3", f"/opt/ml/processing/input/code/{entry_script_name()}"]
        assert step["Arguments"]["ProcessingResources"]["ClusterConfig"]["InstanceType"] == {"Get": "Parameters.ProcessingInstanceType"}
    arguments = package["Arguments"]["AppSpecification"]["ContainerArguments"]
    assert arguments[:2] == ["package", "clip-vit-b-32"]
    assert {"Get": "Parameters.WeightsSource"} in arguments and {"Get": "Parameters.Variant"} in arguments
    assert validate["Arguments"]["AppSpecification"]["ContainerArguments"][0] == "validate"
    inputs = {i["S3Input"]["LocalPath"]: i["S3Input"] for i in validate["Arguments"]["ProcessingInputs"]}
    assert inputs["/opt/ml/processing/input/code"]["S3Uri"].endswith(f"/code/{entry_script_name()}")
    artifact_input = inputs["/opt/ml/processing/input/artifact"]
    assert artifact_input["S3Uri"] == {"Get": "Steps.Package.ProcessingOutputConfig.Outputs['artifact'].S3Output.S3Uri"}
    output_uri = package["Arguments"]["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]["Std:Join"]["Values"]
    assert {"Get": "Execution.PipelineExecutionId"} in output_uri  # each execution writes its own prefix
    assert validate["PropertyFiles"] == [{"PropertyFileName": "EvaluationReport", "OutputName": "evaluation", "FilePath": "evaluation.json"}]


def json_get_paths(node) -> list[str]:
    if isinstance(node, dict):
        if "Std:JsonGet" in node:
            return [node["Std:JsonGet"]["Path"]]
        return [path for value in node.values() for path in json_get_paths(value)]
    if isinstance(node, list):
        return [path for value in node for path in json_get_paths(value)]
    return []


def test_every_json_get_path_exists_in_a_real_evaluation_report(definition, tiny_fp32, tiny_config):
    from model_validation.validate import validate_artifact

    report = validate_artifact(tiny_fp32.directory, tiny_config).report
    paths = json_get_paths(definition)
    assert {"verdict.passed", "metrics.parity_min_cosine", "thresholds.parity_min_cosine", "verdict.summary"} <= set(paths)
    for path in paths:
        json_path(report, path)  # raises KeyError if the report lacks it
    assert report["artifact"]["space"] == embedding_space(tiny_fp32.manifest)
    conditions = definition["Steps"][2]["Arguments"]["Conditions"]
    assert [c["Type"] for c in conditions] == ["Equals", "GreaterThanOrEqualTo"]
    assert conditions[0]["RightValue"] is True


def test_registration_request(definition, b32_config):
    register = steps_by_name(definition)["Register-RegisterModel"]["Arguments"]
    assert register["ModelPackageGroupName"] == b32_config.registry.model_package_group
    assert register["ModelApprovalStatus"] == "PendingManualApproval"
    container = register["InferenceSpecification"]["Containers"][0]
    assert container["Image"] == "111122223333.dkr.ecr.eu-west-1.amazonaws.com/clip-embedding-api-serve:latest"
    assert container["ModelDataUrl"]["Std:Join"]["Values"][-1] == "model.tar.gz"
    statistics = register["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert statistics["ContentType"] == "application/json"
    assert statistics["S3Uri"]["Std:Join"]["Values"][-1] == "model_quality.json"
    metadata = register["CustomerMetadataProperties"]
    assert set(metadata) == {"model_id", "version", "variant", "weights_source", "weights_sha256", "space", "git_commit"}
    assert metadata["model_id"] == "clip-vit-b-32" and metadata["git_commit"] == {"Get": "Parameters.GitCommit"}
    # The embedding space comes from the validation report, as the variant does: what was validated is what is registered.
    assert json_get_paths(metadata["space"]) == ["artifact.space"]
    assert {**metadata["space"]["Std:JsonGet"], "Path": "artifact.variant"} == metadata["variant"]["Std:JsonGet"]
    fail = steps_by_name(definition)["ValidationFailed"]["Arguments"]["ErrorMessage"]
    assert "verdict.summary" in json_get_paths(fail)


def test_definition_builds_without_credentials(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "HOME": str(tmp_path),
                "AWS_EC2_METADATA_DISABLED": "true"})
    out = subprocess.run([sys.executable, "-m", "clip_api.cli", "pipeline", "definition", "clip-tiny"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["Steps"][0]["Name"] == "Package"


def test_no_experiment_tracking_is_configured(definition):
    """A default PipelineExperimentConfig would create SageMaker Experiments trials, which the pipeline role may not do."""
    assert definition.get("PipelineExperimentConfig") is None


def test_the_entry_script_key_names_its_content(definition):
    """A deploy uploads the entry script beside the last one, never over it: executions already running keep the
    script their definition names, which matches the processing image they run."""
    import hashlib

    digest = hashlib.sha256(ENTRY_SCRIPT.read_bytes()).hexdigest()[:16]
    assert entry_script_name() == f"processing_entry-{digest}.py"
    code_inputs = [i["S3Input"]["S3Uri"] for step in definition["Steps"] if step["Type"] == "Processing"
                   for i in step["Arguments"]["ProcessingInputs"] if i["S3Input"]["LocalPath"] == "/opt/ml/processing/input/code"]
    assert code_inputs and all(uri.endswith(f"/code/processing_entry-{digest}.py") for uri in code_inputs)
