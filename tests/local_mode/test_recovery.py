"""Local mode's recovery decisions (local_mode/recovery.py) as pure functions, and the journal and restore against moto in-process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from local_mode.recovery import (APPROVED, PENDING, REJECTED, control_plane_lost, create_request, fold, orphaned_servers, recovery_report,
                                 registry_changes, restore_steps, running_elsewhere, s3_uris, snapshot_prefix, to_promote)

GROUP = "clip-tiny"


def arn(version: int) -> str:
    return f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{GROUP}/{version}"


def registered(version: int, **extra) -> dict:
    return {"kind": "registered", "group": GROUP, "version": version, "arn": arn(version), "objects": [],
            "request": {"ModelPackageGroupName": GROUP, "CustomerMetadataProperties": {"space": "aaaaaaaaaaaa"}}, **extra}


def approval(version: int, status: str = APPROVED, how: str = "clip-api local approve", **extra) -> dict:
    return {"kind": "approval", "group": GROUP, "version": version, "arn": arn(version), "status": status, "how": how, **extra}


def started(version: int) -> dict:
    return {"kind": "promotion_started", "group": GROUP, "version": version, "arn": arn(version)}


def finished(version: int, status: str = "SUCCEEDED", serving: int | None = None) -> dict:
    serving = version if serving is None else serving
    return {"kind": "promotion_finished", "group": GROUP, "version": version, "arn": arn(version), "status": status,
            "pointer": {"endpoint_name": f"clip-tiny-v{serving}", "version": serving, "space": "aaaaaaaaaaaa"}}


def test_fold_keeps_the_last_status_and_what_served():
    events = [registered(1), approval(1, how="--approve"), started(1), finished(1), registered(2), approval(2), started(2)]
    state = fold(events)
    assert {v: p.status for v, p in state.packages[GROUP].items()} == {1: APPROVED, 2: APPROVED}
    assert state.packages[GROUP][1].how == "--approve"
    assert state.serving[GROUP]["version"] == 1
    assert not state.promotions[arn(1)].interrupted and state.promotions[arn(2)].interrupted


def test_a_registration_journaled_again_keeps_its_status():
    state = fold([registered(1), approval(1), registered(1)])
    assert state.packages[GROUP][1].status == APPROVED


def test_a_rejection_by_the_workflow_is_not_promoted_again():
    state = fold([registered(1), approval(1), started(1), finished(1), registered(2), approval(2), started(2),
                  finished(2, "FAILED", serving=1), approval(2, REJECTED, "the promotion workflow")])
    assert to_promote(state, GROUP) == [1]
    assert state.serving[GROUP]["version"] == 1


def test_approved_versions_are_promoted_again_in_version_order_and_pending_ones_wait():
    state = fold([registered(3), registered(1), approval(3), registered(2), approval(1)])
    assert to_promote(state, GROUP) == [1, 3]
    assert [(s.version, s.status) for s in restore_steps(state, GROUP)] == [(1, APPROVED), (2, PENDING), (3, APPROVED)]


def test_a_version_never_journaled_becomes_a_rejected_placeholder_so_later_versions_keep_their_arns():
    steps = restore_steps(fold([registered(1), approval(1), registered(3), approval(3)]), GROUP)
    assert [(s.version, s.record is None, s.status) for s in steps] == [(1, False, APPROVED), (2, True, REJECTED), (3, False, APPROVED)]
    assert any("never journaled" in line for line in recovery_report(fold([registered(1), registered(3)]), GROUP))


def test_the_report_says_what_served_and_which_promotion_was_interrupted():
    lines = recovery_report(fold([registered(1), approval(1), started(1), finished(1), registered(2), approval(2), started(2)]), GROUP)
    text = "\n".join(lines)
    assert "v1 Approved" in text and "v2 Approved (clip-api local approve)" in text
    assert "v1 served the stable URL (clip-tiny-v1)" in text
    assert "v2 approved, its promotion was interrupted: promoting it again" in text
    assert recovery_report(fold([]), GROUP) == []


def test_registry_changes_are_what_the_journal_lacks():
    state = fold([registered(1), approval(1), registered(2)])
    listed = [{"ModelPackageGroupName": GROUP, "ModelPackageVersion": v, "ModelPackageArn": arn(v), "ModelApprovalStatus": status}
              for v, status in [(1, APPROVED), (2, APPROVED), (3, PENDING)]]
    assert registry_changes(state, listed) == ([arn(3)], [(arn(2), APPROVED)])
    assert registry_changes(fold([registered(1), approval(1)]), listed[:1]) == ([], [])


def test_what_is_snapshotted_of_a_package():
    described = {"ModelPackageArn": arn(1), "CreationTime": "then", "ModelApprovalStatus": APPROVED, "ModelPackageGroupName": GROUP,
                 "InferenceSpecification": {"Containers": [{"ModelDataUrl": "s3://b/runs/x/Package/model.tar.gz"}]},
                 "ModelMetrics": {"ModelQuality": {"Statistics": {"S3Uri": "s3://b/runs/x/Validate/model_quality.json"}}},
                 "CustomerMetadataProperties": {"space": "a"}, "MetadataProperties": {}}
    assert s3_uris(described) == ["s3://b/runs/x/Package/model.tar.gz", "s3://b/runs/x/Validate/model_quality.json"]
    assert snapshot_prefix("s3://b/runs/x/Validate/model_quality.json") == "s3://b/runs/x/Validate/"  # the smoke-test cases beside it
    assert snapshot_prefix("s3://b/model.tar.gz") == "s3://b/model.tar.gz"
    assert set(create_request(described)) == {"ModelPackageGroupName", "InferenceSpecification", "ModelMetrics", "CustomerMetadataProperties"}


def test_only_live_servers_of_this_workdir_are_orphans():
    records = [("/w/endpoints/a/model.tar.gz", 11, "python -m inference_code serve --model-dir /w/endpoints/a/model.tar.gz"),
               ("/w/endpoints/b/model.tar.gz", 12, None),  # gone
               ("/w/endpoints/c/model.tar.gz", 13, "vim notes.txt")]  # the pid was reused
    assert orphaned_servers(records) == [11]


def test_a_live_up_loop_on_the_same_workdir_is_refused():
    assert "already running" in running_elsewhere({"pid": 42, "api": "http://127.0.0.1:8000"}, alive=True, own_pid=7)
    assert running_elsewhere({"pid": 42}, alive=False, own_pid=7) is None  # killed: recover
    assert running_elsewhere(None, alive=False, own_pid=7) is None


def test_a_lost_control_plane_says_how_to_recover():
    from local_mode.restore import require_control_plane
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RuntimeError) as raised:
        require_control_plane(url)
    assert str(raised.value).startswith(control_plane_lost(url, "")[:40]) and "clip-api local up" in str(raised.value)


def _register(sagemaker, s3, key: str, body: bytes) -> str:
    s3.put_object(Bucket="clip-test-bucket", Key=f"{key}/model.tar.gz", Body=body)
    s3.put_object(Bucket="clip-test-bucket", Key=f"{key}/eval/model_quality.json", Body=b"{}")
    s3.put_object(Bucket="clip-test-bucket", Key=f"{key}/eval/smoke_test.json", Body=b"[]")
    spec = {"Containers": [{"Image": "serve:latest", "ModelDataUrl": f"s3://clip-test-bucket/{key}/model.tar.gz", "Environment": {"A": "1"}}],
            "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]}
    return sagemaker.create_model_package(
        ModelPackageGroupName=GROUP, ModelApprovalStatus=PENDING, InferenceSpecification=spec, CustomerMetadataProperties={"space": "aaaaaaaaaaaa"},
        ModelMetrics={"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": f"s3://clip-test-bucket/{key}/eval/model_quality.json"}}},
    )["ModelPackageArn"]


def test_the_journal_restores_an_emptied_registry_with_its_artifacts(moto_aws, tmp_path):
    import boto3
    from moto.sagemaker.models import sagemaker_backends

    from clip_core.model_config import load_model_config
    from clip_core.names import POINTER_TABLE
    from local_mode.journal import finish_promotion, journal_for, record_promotion_started, record_status, sync_registry
    from local_mode.restore import restore_registry
    from promotion.pointer import ServingPointer

    sagemaker, s3 = boto3.client("sagemaker", region_name="us-east-1"), boto3.client("s3", region_name="us-east-1")
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    first, second, third = (_register(sagemaker, s3, f"runs/{n}", f"model {n}".encode()) for n in (1, 2, 3))
    time.sleep(0.01)
    sagemaker.update_model_package(ModelPackageArn=first, ModelApprovalStatus=APPROVED)
    journal = journal_for(tmp_path)
    assert sync_registry(journal, sagemaker, s3, [GROUP], "--approve") == [first, second, third]
    sagemaker.update_model_package(ModelPackageArn=second, ModelApprovalStatus=APPROVED, CustomerMetadataProperties={"adopt_space": "aaaaaaaaaaaa"})
    record_status(journal, sagemaker, second, "clip-api local approve")
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    dynamodb.create_table(TableName=POINTER_TABLE, KeySchema=[{"AttributeName": "model_id", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "model_id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    dynamodb.put_item(TableName=POINTER_TABLE, Item=ServingPointer("clip-tiny", "clip-tiny-v1", 1, first, "aaaaaaaaaaaa").to_item())
    record_promotion_started(journal, GROUP, 1, first)
    finish_promotion(journal, sagemaker, dynamodb, "clip-tiny", GROUP, 1,
                     SimpleNamespace(package_arn=first, status="SUCCEEDED", action="promote", endpoint="clip-tiny-v1"))
    record_promotion_started(journal, GROUP, 2, second)
    assert sync_registry(journal, sagemaker, s3, [GROUP], "seen in the registry") == []  # nothing new: no duplicate events

    sagemaker_backends["123456789012"]["us-east-1"].reset()  # the control plane's memory, as a killed up-loop loses it
    s3.delete_object(Bucket="clip-test-bucket", Key="runs/2/model.tar.gz")
    s3.delete_object(Bucket="clip-test-bucket", Key="runs/2/eval/smoke_test.json")
    assert sagemaker.list_model_package_groups()["ModelPackageGroupSummaryList"] == []

    lines: list[str] = []
    assert restore_registry(journal, sagemaker, s3, [load_model_config("clip-tiny")], lines.append) == {"clip-tiny"}
    listed = sagemaker.list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"]
    assert [(p["ModelPackageArn"], p["ModelApprovalStatus"]) for p in listed] == [(first, APPROVED), (second, APPROVED), (third, PENDING)]
    restored = sagemaker.describe_model_package(ModelPackageName=second)
    assert restored["CustomerMetadataProperties"]["adopt_space"] == "aaaaaaaaaaaa"  # the decision recorded with the approval
    assert restored["LastModifiedTime"] > restored["CreationTime"]  # the planner's check that an approval followed the registration
    assert s3.get_object(Bucket="clip-test-bucket", Key="runs/2/model.tar.gz")["Body"].read() == b"model 2"
    assert s3.get_object(Bucket="clip-test-bucket", Key="runs/2/eval/smoke_test.json")["Body"].read() == b"[]"
    assert any("v2 approved, its promotion was interrupted: promoting it again" in line for line in lines), lines
    assert any("v1 served the stable URL (clip-tiny-v1)" in line for line in lines), lines


def test_a_journal_copy_that_does_not_match_its_sha256_stops_the_restore(moto_aws, tmp_path):
    import boto3
    from moto.sagemaker.models import sagemaker_backends

    from clip_core.model_config import load_model_config
    from local_mode.journal import journal_for, sync_registry
    from local_mode.restore import restore_registry

    sagemaker, s3 = boto3.client("sagemaker", region_name="us-east-1"), boto3.client("s3", region_name="us-east-1")
    sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
    _register(sagemaker, s3, "runs/1", b"model 1")
    journal = journal_for(tmp_path)
    sync_registry(journal, sagemaker, s3, [GROUP], "seen in the registry")
    artifact = next(item for item in journal.state().packages[GROUP][1].objects if item["uri"].endswith("model.tar.gz"))
    journal.object_path(artifact["sha256"]).write_bytes(b"tampered")
    sagemaker_backends["123456789012"]["us-east-1"].reset()
    with pytest.raises(RuntimeError, match="does not match its recorded sha256"):
        restore_registry(journal, sagemaker, s3, [load_model_config("clip-tiny")], print)


def test_journal_events_are_whole_files_in_order(tmp_path):
    from local_mode.journal import Journal

    journal = Journal(tmp_path / "journal")
    assert not journal.exists()
    for version in (1, 2, 3):
        journal.append("promotion_started", group=GROUP, version=version, arn=arn(version))
    assert [e["version"] for e in journal.events()] == [1, 2, 3]
    assert not list(journal.events_dir.glob(".tmp-*"))


def test_servers_left_by_a_killed_up_loop_are_stopped(tmp_path):
    from local_mode.inference_servers import served_model, write_pid_file
    from local_mode.restore import stop_orphaned_servers

    endpoint = tmp_path / "endpoints" / "clip-tiny-v1"
    endpoint.mkdir(parents=True)
    model = str(served_model(endpoint))
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "inference_code", "--model-dir", model])
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    other = tmp_path / "endpoints" / "clip-tiny-v2"
    other.mkdir()
    write_pid_file(endpoint, orphan.pid)
    write_pid_file(other, stranger.pid)  # a pid file naming a process that is not this endpoint's server
    try:
        lines: list[str] = []
        assert stop_orphaned_servers(tmp_path, lines.append) == [orphan.pid]
        assert orphan.wait(timeout=20) == -signal.SIGTERM
        assert stranger.poll() is None
        assert not list((tmp_path / "endpoints").glob("*/server.pid")) and "stopped 1 inference server" in lines[0]
    finally:
        for process in (orphan, stranger):
            if process.poll() is None:
                process.kill()
                process.wait()
