"""`clip-api embed-dataset --backend batch-transform`: the dataset through SageMaker Batch Transform.

The job runs the approved model package itself (CreateModel with PrimaryContainer.ModelPackageName:
the same image and model.tar.gz that serve the stable URL). The shards of clip_api/bulk.py are
uploaded as S3 objects under s3://<bucket>/batch/<job>/input/; the job splits them by line
(SplitType=Line), packs records into mini-batches under MaxPayloadInMB (BatchStrategy=MultiRecord),
posts them to the container as application/jsonlines, and writes one `<shard>.out` per shard with
one answer per line (AssembleWith=Line). Those answers are merged with the items that were never
sent (prechecks) and assembled into the same Parquet file as a local run.

A restarted command finds its job in `<out>.parts/job.json` and waits for it (or assembles it)
instead of starting another.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from clip_api import bulk
from clip_api.embed_dataset import EmbedDatasetError, RunResult, check_space, describe_package
from clip_core.names import BUCKET_ENV, SERVING_STACK

CONTENT_TYPE = "application/jsonlines"
MAX_PAYLOAD_MB = 6  # the container accepts JSON Lines bodies up to 6 MiB (ServingLimits.max_jsonlines_bytes)
INVOCATION_TIMEOUT_S = 3600  # the container's batch deadline (3000 s) answers first
TERMINAL = ("Completed", "Failed", "Stopped")


def _name(*parts: str) -> str:
    from infra.stacks.serving_sagemaker_roles import BATCH_NAME_PREFIX

    name = BATCH_NAME_PREFIX + "-".join(parts)
    return name[:63].rstrip("-")


def create_model_request(model_name: str, package_arn: str, role_arn: str, model_id: str) -> dict:
    return {
        "ModelName": model_name,
        "PrimaryContainer": {"ModelPackageName": package_arn},  # the approved package's own image and model data
        "ExecutionRoleArn": role_arn,
        "Tags": [{"Key": "clip-api:model", "Value": model_id}, {"Key": "clip-api:purpose", "Value": "embed-dataset"}],
    }


def create_transform_job_request(job_name: str, model_name: str, input_uri: str, output_uri: str, instance_type: str, instances: int,
                                 model_id: str, concurrent: int = 2) -> dict:
    return {
        "TransformJobName": job_name,
        "ModelName": model_name,
        "MaxConcurrentTransforms": concurrent,  # per instance; the container queues (one worker, 16 admitted)
        "ModelClientConfig": {"InvocationsTimeoutInSeconds": INVOCATION_TIMEOUT_S, "InvocationsMaxRetries": 1},
        "MaxPayloadInMB": MAX_PAYLOAD_MB,
        "BatchStrategy": "MultiRecord",
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_uri}},
            "ContentType": CONTENT_TYPE,
            "CompressionType": "None",
            "SplitType": "Line",
        },
        "TransformOutput": {"S3OutputPath": output_uri, "Accept": CONTENT_TYPE, "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": instance_type, "InstanceCount": instances},
        "Tags": [{"Key": "clip-api:model", "Value": model_id}, {"Key": "clip-api:purpose", "Value": "embed-dataset"}],
    }


def split_s3_uri(uri: str) -> tuple[str, str]:
    from clip_core.s3_uri import split_s3_uri as split

    return split(uri)


def read_s3_items(s3, uri: str) -> list[bulk.Item]:
    """An s3:// prefix of images (ids: keys relative to the prefix; digests: ETags)."""
    bucket, prefix = split_s3_uri(uri)
    items = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            key = entry["Key"]
            if key.lower().endswith(bulk.IMAGE_SUFFIXES):
                items.append(bulk.Item(key[len(prefix):].lstrip("/"), "image", path=f"s3://{bucket}/{key}", size=entry["Size"],
                                       digest="etag:" + entry["ETag"].strip('"')))
    if not items:
        raise bulk.DatasetError(f"{uri} holds no images ({', '.join(bulk.IMAGE_SUFFIXES)})")
    return sorted(items, key=lambda item: item.id)


def _sized(s3, items: list[bulk.Item]) -> list[bulk.Item]:
    """Size and digest the s3:// images a manifest names (HeadObject; a missing one stays -1: file_not_found)."""
    from dataclasses import replace

    out = []
    for item in items:
        if item.modality == "image" and item.path.startswith("s3://") and item.size < 0:
            bucket, key = split_s3_uri(item.path)
            try:
                head = s3.head_object(Bucket=bucket, Key=key)
                item = replace(item, size=head["ContentLength"], digest="etag:" + head["ETag"].strip('"'))
            except s3.exceptions.ClientError:
                item = replace(item, digest="missing")
        out.append(item)
    return out


@dataclass
class JobState:
    job_name: str
    model_name: str
    input_uri: str
    output_uri: str


def run_batch_transform(session, model_id: str, source: str, out: Path | str, version: str = "live", s3_prefix: str | None = None,
                        instance_type: str = "ml.c5.2xlarge", instances: int = 1, role_arn: str | None = None,
                        shard_records: int = bulk.DEFAULT_SHARD_RECORDS * 16, restart: bool = False, keep_parts: bool = False,
                        poll_s: float = 30.0, runner=None, log=None, space: str | None = None) -> RunResult:
    """`runner(session, job_request)`: called once after CreateTransformJob (tests: a stand-in for the
    service that runs the container on the inputs); in AWS, None. `space`: refuse, before any work, a
    package that registers another embedding space."""
    from clip_core.model_config import load_model_config

    log = log or (lambda message: print(message, file=sys.stderr))
    started = time.monotonic()
    out = Path(out)
    s3, sagemaker = session.client("s3"), session.client("sagemaker")
    package = describe_package(session, model_id, version)
    package_arn = package["ModelPackageArn"]
    metadata = package.get("CustomerMetadataProperties", {})
    check_space(space, metadata.get("space", ""), f"model package {package_arn} (version {package.get('ModelPackageVersion', '?')})")
    config = load_model_config(model_id)
    model_data = package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    bucket, key = split_s3_uri(model_data)
    artifact_etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')

    items = read_s3_items(s3, source) if str(source).startswith("s3://") else _sized(s3, bulk.read_items(source))
    limits = config.serving.limits
    plan = bulk.RunPlan(
        model_id=model_id, model_version=metadata.get("version", ""), artifact_sha256="s3-etag:" + artifact_etag,
        manifest_digest=bulk.manifest_digest(items), items=len(items),
        shards=bulk.plan_shards(items, limits, bulk.DEFAULT_SHARD_BYTES * 8, shard_records), package_arn=package_arn,
        package_version=int(package.get("ModelPackageVersion", 0)), variant=metadata.get("variant", ""), embedding_dim=config.embedding_dim,
        input=str(source), space=metadata.get("space", ""),  # registered from the validated manifest (pipeline/definition.py)
    )
    parts = bulk.Parts(out)
    done = parts.start(plan, restart=restart)
    state_file = parts.dir / "job.json"
    if state_file.exists() and not restart:
        state = JobState(**json.loads(state_file.read_text()))
        log(f"resuming: transform job {state.job_name}")
    else:
        state = _start_job(session, s3, sagemaker, items, limits, plan, model_id, s3_prefix, instance_type, instances, role_arn, runner, log)
        state_file.write_text(json.dumps(state.__dict__))
    job = _wait(sagemaker, state.job_name, poll_s)
    if job["TransformJobStatus"] != "Completed":
        raise EmbedDatasetError(f"transform job {state.job_name} {job['TransformJobStatus']}: {job.get('FailureReason', '')} "
                                "(--restart starts a new job)")
    out_bucket, out_prefix = split_s3_uri(state.output_uri)
    for index, (start, end) in enumerate(plan.shards):
        if index in done:
            continue
        known = [bulk.precheck(item, limits) for item in items[start:end]]
        answer = b""
        if any(a is None for a in known):
            answer = s3.get_object(Bucket=out_bucket, Key=f"{out_prefix.rstrip('/')}/{shard_key(index)}.out")["Body"].read()
        parts.write(index, bulk.merge_answers(known, answer))
    answers = [answer for index in range(len(plan.shards)) for answer in parts.read(index)]
    summary = bulk.assemble(items, answers, plan, out)
    if not keep_parts:
        parts.remove()
    return RunResult(out, summary, len(plan.shards), len(done), len(plan.shards) - len(done), time.monotonic() - started, len(items))


def shard_key(index: int) -> str:
    return f"shard-{index:06d}.jsonl"


def _default_role(session) -> str:
    role = os.environ.get("CLIP_API_TRANSFORM_ROLE_ARN")
    if role:
        return role

    outputs = session.client("cloudformation").describe_stacks(StackName=SERVING_STACK)["Stacks"][0].get("Outputs", [])
    for output in outputs:
        if output["OutputKey"] == "TransformRoleArn":
            return output["OutputValue"]
    raise EmbedDatasetError("no transform role: deploy the serving stack (TransformRoleArn) or pass --role-arn")


def _start_job(session, s3, sagemaker, items, limits, plan, model_id, s3_prefix, instance_type, instances, role_arn, runner, log) -> JobState:
    from infra.stacks.serving_sagemaker_roles import BATCH_PREFIX

    role_arn = role_arn or _default_role(session)
    run_id = hashlib.sha256(f"{plan.package_arn}\n{plan.manifest_digest}\n{time.time_ns()}".encode()).hexdigest()[:8]
    short_model = model_id.removeprefix("clip-")
    job_name = _name(short_model, f"v{plan.package_version}", run_id)
    model_name = job_name
    if not s3_prefix:
        bucket = os.environ.get(BUCKET_ENV)
        if not bucket:
            raise EmbedDatasetError("set CLIP_API_BUCKET (the artifact bucket) or pass --s3-prefix")
        s3_prefix = f"s3://{bucket}/{BATCH_PREFIX}"
    bucket, prefix = split_s3_uri(s3_prefix.rstrip("/") + "/")
    base = f"{prefix.rstrip('/')}/{job_name}" if prefix.strip("/") else job_name
    input_uri, output_uri = f"s3://{bucket}/{base}/input/", f"s3://{bucket}/{base}/output/"

    def read(path: str) -> bytes:
        if path.startswith("s3://"):
            b, k = split_s3_uri(path)
            return s3.get_object(Bucket=b, Key=k)["Body"].read()
        return Path(path).read_bytes()

    uploaded = 0
    for index, (start, end) in enumerate(plan.shards):
        body, _known = bulk.shard_body(items[start:end], limits, read)
        if body:
            s3.put_object(Bucket=bucket, Key=f"{base}/input/{shard_key(index)}", Body=body)
            uploaded += 1
    log(f"uploaded {uploaded} shards to {input_uri}")
    sagemaker.create_model(**create_model_request(model_name, plan.package_arn, role_arn, model_id))
    request = create_transform_job_request(job_name, model_name, input_uri, output_uri, instance_type, instances, model_id)
    sagemaker.create_transform_job(**request)
    log(f"transform job {job_name}: {instances} x {instance_type}")
    if runner:
        runner(session, request)
    return JobState(job_name, model_name, input_uri, output_uri)


def _wait(sagemaker, job_name: str, poll_s: float) -> dict:
    while True:
        job = sagemaker.describe_transform_job(TransformJobName=job_name)
        if job["TransformJobStatus"] in TERMINAL:
            return job
        time.sleep(poll_s)
