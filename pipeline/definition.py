"""One SageMaker Pipeline per model config, built with the SDK v2 workflow API.

  Package (Processing)  clip-api package MODEL --out /opt/ml/processing/output/artifact
  Validate (Processing) clip-api validate .../model.tar.gz --report .../evaluation.json   (PropertyFile)
  CheckValidation (Condition) verdict.passed == true and parity_min_cosine >= its threshold
    if:   Register (ModelStep -> RegisterModel) into the config's model package group,
          approval status from a parameter (PendingManualApproval), model quality metrics from
          model_quality.json, customer metadata (model id, version, variant, weights, git commit)
    else: ValidationFailed (Fail) carrying the verdict's reasons

Both Processing steps run the processing image (torch + open_clip + this repository, built from
model_build/Dockerfile on AWS's PyTorch CPU image): the same `clip-api` entry point people run.
The registered container is the slim serving image from inference_code/Dockerfile.
"""

from __future__ import annotations

import json
import logging
import os

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
logging.getLogger("sagemaker.config").setLevel(logging.WARNING)

import boto3  # noqa: E402
from sagemaker.model import Model  # noqa: E402
from sagemaker.model_metrics import MetricsSource, ModelMetrics  # noqa: E402
from sagemaker.processing import ProcessingInput, ProcessingOutput, ScriptProcessor  # noqa: E402
from sagemaker.workflow.condition_step import ConditionStep  # noqa: E402
from sagemaker.workflow.conditions import ConditionEquals, ConditionGreaterThanOrEqualTo  # noqa: E402
from sagemaker.workflow.execution_variables import ExecutionVariables  # noqa: E402
from sagemaker.workflow.fail_step import FailStep  # noqa: E402
from sagemaker.workflow.functions import Join, JsonGet  # noqa: E402
from sagemaker.workflow.model_step import ModelStep  # noqa: E402
from sagemaker.workflow.parameters import ParameterString  # noqa: E402
from sagemaker.workflow.pipeline import Pipeline  # noqa: E402
from sagemaker.workflow.pipeline_context import PipelineSession  # noqa: E402
from sagemaker.workflow.properties import PropertyFile  # noqa: E402
from sagemaker.workflow.steps import ProcessingStep  # noqa: E402

from clip_core.model_config import ModelConfig  # noqa: E402
from clip_core.names import endpoint_stem, model_resource_name
from inference_code.manifest import VALIDATED_MANIFEST_ENV  # noqa: E402
from pipeline.settings import PipelineSettings  # noqa: E402

PROCESSING_ROOT = "/opt/ml/processing"
ARTIFACT_OUTPUT = f"{PROCESSING_ROOT}/output/artifact"
ARTIFACT_INPUT = f"{PROCESSING_ROOT}/input/artifact"
EVALUATION_OUTPUT = f"{PROCESSING_ROOT}/output/evaluation"
REPORT_NAME = "EvaluationReport"


def pipeline_name(config: ModelConfig) -> str:
    return model_resource_name(config.model_id)


def offline_session(settings: PipelineSettings) -> PipelineSession:
    """A session that builds definitions without credentials: nothing is uploaded or checked."""
    return PipelineSession(boto_session=boto3.Session(region_name=settings.region), default_bucket=settings.bucket)


def build_pipeline(config: ModelConfig, settings: PipelineSettings, session: PipelineSession | None = None) -> Pipeline:
    session = session or offline_session(settings)
    weights = ParameterString("WeightsSource", default_value="pretrained")
    variant = ParameterString("Variant", default_value=config.serving.variant)
    instance_type = ParameterString("ProcessingInstanceType", default_value=settings.processing_instance_type)
    git_commit = ParameterString("GitCommit", default_value="unknown")
    # Only with WeightsSource=random-init (or random; demos, tests): another seed is other weights, another embedding space.
    seed = ParameterString("RandomInitSeed", default_value="0")

    def run_uri(leaf: str) -> Join:
        """s3://bucket/prefix/pipelines/<model>/<execution id>/<leaf>: each execution writes its own prefix."""
        return Join(on="/", values=[settings.run_prefix(config.model_id), ExecutionVariables.PIPELINE_EXECUTION_ID, leaf])

    processor = ScriptProcessor(
        image_uri=settings.processing_image_uri,
        command=["python3"],
        instance_type=instance_type,
        instance_count=1,
        volume_size_in_gb=30,
        max_runtime_in_seconds=3600,
        role=settings.role_arn,
        sagemaker_session=session,
        base_job_name=endpoint_stem(config.model_id),
    )
    package = ProcessingStep(
        name="Package",
        step_args=processor.run(
            code=settings.code_uri,
            arguments=["package", config.model_id, "--out", ARTIFACT_OUTPUT, "--weights", weights, "--variant", variant, "--seed", seed,
                       "--tarball-only"],
            outputs=[
                ProcessingOutput(output_name="artifact", source=ARTIFACT_OUTPUT, destination=run_uri("artifact"))
            ],
        ),
    )
    artifact_uri = package.properties.ProcessingOutputConfig.Outputs["artifact"].S3Output.S3Uri
    report = PropertyFile(name=REPORT_NAME, output_name="evaluation", path="evaluation.json")
    validate = ProcessingStep(
        name="Validate",
        step_args=processor.run(
            code=settings.code_uri,
            arguments=["validate", f"{ARTIFACT_INPUT}/model.tar.gz", "--report", f"{EVALUATION_OUTPUT}/evaluation.json", "--model-id", config.model_id],
            inputs=[ProcessingInput(source=artifact_uri, destination=ARTIFACT_INPUT)],
            outputs=[
                ProcessingOutput(output_name="evaluation", source=EVALUATION_OUTPUT, destination=run_uri("evaluation"))
            ],
        ),
        property_files=[report],
    )
    evaluation_uri = validate.properties.ProcessingOutputConfig.Outputs["evaluation"].S3Output.S3Uri

    def from_report(path: str) -> JsonGet:
        return JsonGet(step_name=validate.name, property_file=report, json_path=path)

    model = Model(
        image_uri=settings.serving_image_uri,
        model_data=Join(on="/", values=[artifact_uri, "model.tar.gz"]),
        role=settings.role_arn,
        sagemaker_session=session,
        # The digest of the manifest the gate passed: the container refuses to serve any other artifact.
        env={VALIDATED_MANIFEST_ENV: from_report("artifact.manifest_sha256")},
    )
    register = ModelStep(
        name="Register",
        step_args=model.register(
            content_types=["application/json", "image/jpeg", "image/png"],
            response_types=["application/json"],
            model_package_group_name=config.registry.model_package_group,
            # Always pending: only an approval in the registry may promote (the pipeline role is denied anything else).
            approval_status="PendingManualApproval",
            description=config.description,
            model_metrics=ModelMetrics(
                model_statistics=MetricsSource(content_type="application/json", s3_uri=Join(on="/", values=[evaluation_uri, "model_quality.json"]))
            ),
            customer_metadata_properties={
                "model_id": config.model_id,
                "version": from_report("artifact.version"),
                "variant": from_report("artifact.variant"),
                "weights_source": from_report("artifact.weights_source"),
                "weights_sha256": from_report("artifact.weights_sha256"),
                # The embedding space (inference_code.manifest.embedding_space): the promotion compares it with the serving one.
                "space": from_report("artifact.space"),
                "git_commit": git_commit,
            },
        ),
    )
    failed = FailStep(name="ValidationFailed", error_message=Join(on=" ", values=["validation rejected the artifact:", from_report("verdict.summary")]))
    check = ConditionStep(
        name="CheckValidation",
        conditions=[
            ConditionEquals(left=from_report("verdict.passed"), right=True),
            ConditionGreaterThanOrEqualTo(left=from_report("metrics.parity_min_cosine"), right=from_report("thresholds.parity_min_cosine")),
        ],
        if_steps=[register],
        else_steps=[failed],
    )
    return Pipeline(
        name=pipeline_name(config),
        parameters=[weights, variant, instance_type, git_commit, seed],
        steps=[package, validate, check],
        sagemaker_session=session,
        # No SageMaker Experiments trial per run: it would need Experiments permissions for nothing we read.
        pipeline_experiment_config=None,
    )


def pipeline_definition(config: ModelConfig, settings: PipelineSettings) -> dict:
    return json.loads(build_pipeline(config, settings).definition())
