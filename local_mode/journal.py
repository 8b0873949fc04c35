"""The durable record of local mode's control plane: WORKDIR/journal, what survives a killed up-loop.

moto holds the registry, the pointer and the endpoints in memory. Every step that matters is an
event file written atomically (a temporary file, then os.replace) under `events/`, one file per
event, so the up-loop and the `clip-api local approve|build` processes append without a lock and a
kill leaves either the whole event or none. Events, in name (time) order:

- registered: the package's CreateModelPackage request, and the S3 objects it names (artifact,
  quality report and their sibling files) copied under `objects/<sha256>`;
- approval: the status a package took (Approved, Rejected, ...), how, and its metadata then;
- promotion_started / promotion_finished: the workflow's outcome and what the serving pointer became.

local_mode/recovery.py folds them; local_mode/restore.py re-creates the control plane from them.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from clip_core.s3_uri import split_s3_uri
from inference_code.manifest import sha256_file
from local_mode.recovery import JournalState, create_request, fold, registry_changes, s3_uris, snapshot_prefix


class Journal:
    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.events_dir = self.directory / "events"
        self.objects_dir = self.directory / "objects"

    def exists(self) -> bool:
        return self.events_dir.is_dir() and any(self.events_dir.glob("*.json"))

    def append(self, kind: str, **fields) -> dict:
        event = {"kind": kind, "at": time.time(), "pid": os.getpid(), **fields}
        self.events_dir.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{kind}.json"
        write_atomically(self.events_dir / name, json.dumps(event, indent=1, default=str).encode())
        return event

    def events(self) -> list[dict]:
        return [json.loads(path.read_text()) for path in sorted(self.events_dir.glob("*.json"))] if self.events_dir.is_dir() else []

    def state(self) -> JournalState:
        return fold(self.events())

    def object_path(self, sha256: str) -> Path:
        return self.objects_dir / sha256

    def store_object(self, s3, uri: str) -> dict:
        """Copy one S3 object into the journal, content-addressed; return {"uri", "sha256"}."""
        bucket, key = split_s3_uri(uri)
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.objects_dir, delete=False) as handle:
            s3.download_fileobj(bucket, key, handle)
        digest = sha256_file(handle.name)
        os.replace(handle.name, self.object_path(digest))
        return {"uri": uri, "sha256": digest}


def write_atomically(path: Path, data: bytes) -> None:
    """The whole file or none of it, whoever reads it (another process, or after a kill)."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False) as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


def _snapshot(journal: Journal, s3, described: dict) -> list[dict]:
    objects: list[dict] = []
    for prefix in dict.fromkeys(snapshot_prefix(uri) for uri in s3_uris(described)):
        if not prefix.endswith("/"):
            objects.append(journal.store_object(s3, prefix))
            continue
        bucket, key = split_s3_uri(prefix)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            objects += [journal.store_object(s3, f"s3://{bucket}/{item['Key']}") for item in page.get("Contents", [])]
    return objects


def record_package(journal: Journal, sagemaker, s3, arn: str, how: str) -> dict:
    """Journal a registered package with copies of the objects it names; its status too if no longer pending."""
    described = sagemaker.describe_model_package(ModelPackageName=arn)
    event = journal.append("registered", group=described["ModelPackageGroupName"], version=int(described["ModelPackageVersion"]), arn=arn,
                           request=create_request(described), objects=_snapshot(journal, s3, described))
    status = described.get("ModelApprovalStatus", "PendingManualApproval")
    if status != "PendingManualApproval":
        record_status(journal, sagemaker, arn, how, described)
    return event


def record_status(journal: Journal, sagemaker, arn: str, how: str, described: dict | None = None) -> dict:
    """Journal a package's approval status as the registry holds it now (an approval, a rejection by the workflow)."""
    described = described or sagemaker.describe_model_package(ModelPackageName=arn)
    return journal.append("approval", group=described["ModelPackageGroupName"], version=int(described["ModelPackageVersion"]), arn=arn,
                          status=described.get("ModelApprovalStatus", "PendingManualApproval"), how=how,
                          metadata=described.get("CustomerMetadataProperties", {}))


def sync_registry(journal: Journal, sagemaker, s3, groups: list[str], how: str) -> list[str]:
    """Journal what the registry holds that the journal lacks (packages and approvals made by any client); return what was recorded."""
    listed = []
    for group in groups:
        for page in sagemaker.get_paginator("list_model_packages").paginate(ModelPackageGroupName=group):
            listed += page["ModelPackageSummaryList"]
    new, changed = registry_changes(journal.state(), listed)
    for arn in new:
        record_package(journal, sagemaker, s3, arn, how)
    for arn, _ in changed:
        record_status(journal, sagemaker, arn, how)
    return new + [arn for arn, _ in changed]


def record_promotion_started(journal: Journal, group: str, version: int, arn: str) -> dict:
    return journal.append("promotion_started", group=group, version=version, arn=arn)


def record_promotion_finished(journal: Journal, group: str, version: int, outcome, pointer) -> dict:
    """The workflow's outcome and what the serving pointer became (promotion.pointer.ServingPointer)."""
    return journal.append("promotion_finished", group=group, version=version, arn=outcome.package_arn, status=outcome.status,
                          action=outcome.action, endpoint=outcome.endpoint,
                          pointer={"endpoint_name": pointer.endpoint_name, "version": pointer.version, "space": pointer.space})


def journal_for(workdir: Path) -> Journal:
    return Journal(Path(workdir) / "journal")


def finish_promotion(journal: Journal, sagemaker, dynamodb, model_id: str, group: str, version: int, outcome) -> None:
    """Journal a promotion's outcome with the pointer it left, and the package's status if the workflow rejected it."""
    from clip_core.names import POINTER_TABLE
    from promotion.pointer import read_pointer

    record_promotion_finished(journal, group, version, outcome, read_pointer(dynamodb, POINTER_TABLE, model_id, consistent=True))
    if outcome.status != "SUCCEEDED":
        record_status(journal, sagemaker, outcome.package_arn, "the promotion workflow")
