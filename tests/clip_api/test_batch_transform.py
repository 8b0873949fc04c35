"""embed-dataset against the registry under moto: `--version live` resolution (the serving pointer),
the Batch Transform path (CreateModel from the approved package, CreateTransformJob as JSON Lines),
its requests against botocore's shapes, and every call it makes against the rendered IAM."""

from __future__ import annotations

import base64
import io
import json
import urllib.request

import boto3
import botocore.session
import numpy as np
import pytest
from botocore.validate import ParamValidator

from clip_api import bulk
from clip_api.batch_transform import MAX_PAYLOAD_MB, create_model_request, create_transform_job_request, run_batch_transform
from clip_api.embed_dataset import EmbedDatasetError, resolve_model, run_local
from infra import iam_policy as ip

pytest.importorskip("pyarrow")
REGION = "us-east-1"


@pytest.fixture(scope="module")
def deployment():
    """The rendered stacks with the tiny model's registry group, as local mode deploys them."""
    from clip_core.model_config import load_all_model_configs
    from infra.stacks import templates
    from infra.stacks.serving import serving_template

    rendered = templates()
    rendered["serving.yaml"] = serving_template(load_all_model_configs(), include_demo=True)
    return ip.Deployment(rendered)


@pytest.fixture
def registry(aws_env, monkeypatch, deployment, tiny_fp32):
    """moto with the deployment's artifact bucket, the tiny model registered (v1 pending, v2 approved and serving)."""
    from moto import mock_aws

    from clip_core.names import POINTER_TABLE
    from promotion.pointer import KEY, ServingPointer

    bucket = deployment.stacks["bootstrap"].outputs["ArtifactBucketName"]
    monkeypatch.setenv("CLIP_API_BUCKET", bucket)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=bucket)
        s3.upload_file(str(tiny_fp32.artifact), bucket, "models/clip-tiny/run-1/model.tar.gz")
        sagemaker = boto3.client("sagemaker", region_name=REGION)
        sagemaker.create_model_package_group(ModelPackageGroupName="clip-tiny")
        arns = []
        for status in ("PendingManualApproval", "PendingManualApproval"):
            arns.append(sagemaker.create_model_package(
                ModelPackageGroupName="clip-tiny",
                InferenceSpecification={"Containers": [{"Image": f"{ip.ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/clip-embedding-api-serve:latest",
                                                        "ModelDataUrl": f"s3://{bucket}/models/clip-tiny/run-1/model.tar.gz"}],
                                        "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]},
                CustomerMetadataProperties={"model_id": "clip-tiny", "version": tiny_fp32.manifest.version, "variant": "fp32",
                                            "space": tiny_fp32.manifest.space},
                ModelApprovalStatus=status,
            )["ModelPackageArn"])
        sagemaker.update_model_package(ModelPackageArn=arns[1], ModelApprovalStatus="Approved")
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(TableName=POINTER_TABLE, BillingMode="PAY_PER_REQUEST", AttributeDefinitions=[{"AttributeName": KEY, "AttributeType": "S"}],
                              KeySchema=[{"AttributeName": KEY, "KeyType": "HASH"}])
        dynamodb.put_item(TableName=POINTER_TABLE, Item=ServingPointer("clip-tiny", "clip-tiny-ep-2", 2, arns[1]).to_item())
        yield {"bucket": bucket, "arns": arns}


def texts_manifest(tmp_path):
    path = tmp_path / "texts.jsonl"
    rows = [{"id": f"t{i}", "text": f"caption {i}"} for i in range(20)] + [{"id": "bad", "text": ""}, {"id": "long", "text": "y" * 10_001}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_version_live_resolves_the_serving_package(registry, tmp_path, tiny_fp32):
    model = resolve_model("clip-tiny", "live", session=boto3.Session(region_name=REGION), cache_dir=tmp_path)
    assert model.package_arn == registry["arns"][1] and model.package_version == 2
    assert bulk.sha256_path(model.artifact) == bulk.sha256_path(tiny_fp32.artifact)
    result = run_local(model, str(texts_manifest(tmp_path)), tmp_path / "out.parquet", progress=False)
    _, meta = bulk.read_output(result.out)
    assert (meta["package_arn"], meta["package_version"], meta["model_version"]) == (registry["arns"][1], 2, tiny_fp32.manifest.version)
    assert model.space == meta["space"] == tiny_fp32.manifest.space
    with pytest.raises(EmbedDatasetError, match="not Approved"):
        resolve_model("clip-tiny", "1", session=boto3.Session(region_name=REGION), cache_dir=tmp_path)
    assert resolve_model("clip-tiny", "2", session=boto3.Session(region_name=REGION), cache_dir=tmp_path).package_arn == registry["arns"][1]


def test_a_package_of_another_space_is_refused_before_any_work(registry, tmp_path, tiny_fp32):
    """--space names the space the vectors must be in: the package's registered space decides, before any download or job."""
    session = boto3.Session(region_name=REGION)
    other = "0" * 12 if tiny_fp32.manifest.space != "0" * 12 else "1" * 12
    with pytest.raises(EmbedDatasetError, match=f"embeds in space {tiny_fp32.manifest.space}, not {other}"):
        resolve_model("clip-tiny", "live", session=session, cache_dir=tmp_path / "cache", space=other)
    assert not (tmp_path / "cache").exists()  # nothing downloaded
    with pytest.raises(EmbedDatasetError, match="embeds in space"):
        run_batch_transform(session, "clip-tiny", str(texts_manifest(tmp_path)), tmp_path / "bt.parquet", role_arn="arn:aws:iam::1:role/r",
                            poll_s=0, log=lambda m: None, space=other)
    assert not (tmp_path / "bt.parquet.parts").exists() and not (tmp_path / "bt.parquet").exists()
    assert session.client("sagemaker").list_transform_jobs()["TransformJobSummaries"] == []
    assert resolve_model("clip-tiny", "live", session=session, cache_dir=tmp_path / "cache", space=tiny_fp32.manifest.space).package_version == 2


@pytest.mark.parametrize("operation, request_of", [
    ("CreateModel", lambda: create_model_request("clip-bt-x", "arn:aws:sagemaker:us-east-1:1:model-package/clip-tiny/2", "arn:aws:iam::1:role/r", "clip-tiny")),
    ("CreateTransformJob", lambda: create_transform_job_request("clip-bt-x", "clip-bt-x", "s3://b/in/", "s3://b/out/", "ml.c5.2xlarge", 3, "clip-tiny")),
])
def test_requests_match_botocore_shapes(operation, request_of):
    shape = botocore.session.get_session().get_service_model("sagemaker").operation_model(operation).input_shape
    report = ParamValidator().validate(request_of(), shape)
    assert not report.has_errors(), report.generate_report()
    broken = {**request_of(), "NoSuchField": 1}
    assert ParamValidator().validate(broken, shape).has_errors()  # the check can fail


def sagemaker_stand_in(server_url: str):
    """What the service does with the job: every input object split by line into mini-batches under
    MaxPayloadInMB, each posted to the container as application/jsonlines, answers joined by line."""

    def run(_session, job: dict) -> None:
        assert (job["BatchStrategy"], job["TransformInput"]["SplitType"], job["TransformOutput"]["AssembleWith"]) == ("MultiRecord", "Line", "Line")
        s3 = boto3.Session(region_name=REGION).client("s3")  # the service's calls, not embed-dataset's
        bucket, prefix = job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"][5:].split("/", 1)
        out_bucket, out_prefix = job["TransformOutput"]["S3OutputPath"][5:].split("/", 1)
        limit = job["MaxPayloadInMB"] * 1024 * 1024
        for entry in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
            lines = s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read().splitlines(keepends=True)
            batches, current = [], []
            for line in lines:
                if current and sum(map(len, current)) + len(line) > limit:
                    batches.append(current)
                    current = []
                current.append(line)
            batches.append(current)
            answers = b""
            for batch in batches:
                request = urllib.request.Request(server_url + "/invocations", data=b"".join(batch), headers={"Content-Type": job["TransformInput"]["ContentType"]})
                with urllib.request.urlopen(request, timeout=120) as response:
                    answers += response.read()
            name = entry["Key"][len(prefix):]
            s3.put_object(Bucket=out_bucket, Key=out_prefix + name + ".out", Body=answers)

    return run


def _jpeg(seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (40 + seed, 60, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_batch_transform_job_from_the_approved_package(registry, tmp_path, tiny_server, deployment, tiny_fp32):
    bucket = registry["bucket"]
    s3 = boto3.client("s3", region_name=REGION)
    for i in range(12):
        s3.put_object(Bucket=bucket, Key=f"batch/catalogue/img{i:02d}.jpg", Body=_jpeg(i))
    s3.put_object(Bucket=bucket, Key="batch/catalogue/broken.png", Body=b"\x89PNG\r\n\x1a\nbroken")
    role_arn = deployment.role("serving/TransformRole").arn
    session = boto3.Session(region_name=REGION)
    recorder = ip.CallRecorder().attach(session.events)
    result = run_batch_transform(session, "clip-tiny", f"s3://{bucket}/batch/catalogue/", tmp_path / "catalogue.parquet", role_arn=role_arn,
                                 instances=2, shard_records=5, poll_s=0, runner=sagemaker_stand_in(tiny_server), log=lambda m: None)
    calls = list(recorder.calls)
    table, meta = bulk.read_output(result.out)
    assert table.column("id").to_pylist() == ["broken.png"] + [f"img{i:02d}.jpg" for i in range(12)]
    assert table.column("error").to_pylist() == ["not_an_image"] + [None] * 12  # a PNG signature, no PNG
    assert meta["package_arn"] == registry["arns"][1] and meta["artifact_sha256"].startswith("s3-etag:")
    assert meta["space"] == tiny_fp32.manifest.space and set(table.column("space").to_pylist()) == {tiny_fp32.manifest.space}
    for row, embedding in zip(table.to_pylist()[1:], table.column("embedding").to_pylist()[1:]):
        single = urllib.request.Request(tiny_server + "/invocations", data=json.dumps({"image": base64.b64encode(_jpeg(int(row["id"][3:5]))).decode()}).encode(),
                                        headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(single) as response:
            assert np.array_equal(np.asarray(embedding, dtype=np.float32), np.asarray(json.loads(response.read()), dtype=np.float32))

    sagemaker = session.client("sagemaker")
    job_name = sagemaker.list_transform_jobs()["TransformJobSummaries"][0]["TransformJobName"]
    job = sagemaker.describe_transform_job(TransformJobName=job_name)
    assert job["MaxPayloadInMB"] == MAX_PAYLOAD_MB and job["TransformResources"]["InstanceCount"] == 2
    model = sagemaker.describe_model(ModelName=job["ModelName"])
    assert model["PrimaryContainer"]["ModelPackageName"] == registry["arns"][1] and model["ExecutionRoleArn"] == role_arn

    # IAM: every call embed-dataset made (the stand-in uses a session of its own) is allowed by the
    # rendered EmbedDatasetPolicy, for the person or CI role that runs it
    policy = deployment.stacks["serving"].resolved_resources["EmbedDatasetPolicy"]["Properties"]["PolicyDocument"]
    made = {(c.service, c.operation) for c in calls}
    assert {("sagemaker", "CreateModel"), ("sagemaker", "CreateTransformJob"), ("sagemaker", "DescribeModelPackage"), ("sagemaker", "DescribeTransformJob"),
            ("dynamodb", "GetItem"), ("s3", "ListObjectsV2"), ("s3", "PutObject"), ("s3", "GetObject"), ("s3", "HeadObject")} <= made
    requests = [r for c in calls for r in ip.call_requests(c, deployment)]
    assert any(r.action == "iam:PassRole" for r in requests)
    denied = [str(r) for r in requests if ip.evaluate([policy], r.action, r.resource, r.context) != "Allow"]
    assert denied == []


def test_transform_role_least_privilege(deployment):
    role = "serving/TransformRole"
    bucket = deployment.stacks["bootstrap"].outputs["ArtifactBucketName"]
    obj = lambda key: f"arn:aws:s3:::{bucket}/{key}"  # noqa: E731
    assert deployment.allowed(role, "s3:GetObject", obj("models/clip-tiny/run-1/model.tar.gz"))
    assert deployment.allowed(role, "s3:GetObject", obj("batch/job/input/shard-000000.jsonl"))
    assert deployment.allowed(role, "s3:PutObject", obj("batch/job/output/shard-000000.jsonl.out"))
    assert deployment.allowed(role, "s3:ListBucket", f"arn:aws:s3:::{bucket}", {"s3:prefix": "batch/job/input/"})
    assert not deployment.allowed(role, "s3:PutObject", obj("models/clip-tiny/run-1/model.tar.gz"))  # cannot replace a model
    assert not deployment.allowed(role, "s3:ListBucket", f"arn:aws:s3:::{bucket}", {"s3:prefix": "models/"})
    assert not deployment.allowed(role, "sagemaker:CreateEndpoint", ip.arn("sagemaker", "endpoint/clip-x"))
    policy = deployment.stacks["serving"].resolved_resources["EmbedDatasetPolicy"]["Properties"]["PolicyDocument"]
    other_role = deployment.role("serving/ModelExecutionRole").arn
    passed = {"iam:PassedToService": "sagemaker.amazonaws.com"}
    assert ip.evaluate([policy], "iam:PassRole", deployment.role(role).arn, passed) == "Allow"
    assert ip.evaluate([policy], "iam:PassRole", other_role, passed) != "Allow"
    assert ip.evaluate([policy], "sagemaker:CreateTransformJob", ip.arn("sagemaker", "transform-job/other-job")) != "Allow"
    assert ip.reference_problems([policy], "EmbedDatasetPolicy") == []
