"""What local mode does after a kill: pure decisions over the journal (local_mode/journal.py), no I/O.

moto keeps the control plane in memory, so a killed up-loop loses the registry, the pointer and the
endpoints. The journal's events (registered, approval, promotion started/finished) are folded into
what the registry held; at start-up the registry is re-created from it in version order (same
versions, so the same ARNs and endpoint names) and every approved version is promoted again through
the normal workflow, in version order, which rebuilds the serving pointer and its embedding spaces as
they were. local_mode/restore.py acts on these decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clip_core.s3_uri import split_s3_uri

APPROVED, REJECTED, PENDING = "Approved", "Rejected", "PendingManualApproval"
# What CreateModelPackage accepts of what DescribeModelPackage answers (the rest is the registry's own bookkeeping).
CREATE_FIELDS = ("ModelPackageGroupName", "ModelPackageDescription", "InferenceSpecification", "ModelMetrics", "CustomerMetadataProperties",
                 "MetadataProperties", "Domain", "Task", "SamplePayloadUrl", "DriftCheckBaselines", "ValidationSpecification",
                 "SourceAlgorithmSpecification")


@dataclass
class PackageRecord:
    group: str
    version: int
    arn: str
    request: dict  # the CreateModelPackage request that re-creates it (no approval status)
    objects: list[dict]  # {"uri", "sha256"}: the S3 objects the package names, snapshotted in the journal
    status: str = PENDING
    how: str = ""  # who or what set the status: "--approve", "clip-api local approve", "the promotion workflow", ...
    metadata: dict = field(default_factory=dict)  # CustomerMetadataProperties as of the last status change


@dataclass
class PromotionRecord:
    arn: str
    started: int = 0
    finished: int = 0
    status: str = ""  # the last finished promotion's: SUCCEEDED | FAILED
    pointer: dict | None = None  # what the serving pointer became: {"endpoint_name", "version", "space"}

    @property
    def interrupted(self) -> bool:
        return self.started > self.finished


@dataclass
class JournalState:
    packages: dict[str, dict[int, PackageRecord]] = field(default_factory=dict)  # group -> version -> record
    promotions: dict[str, PromotionRecord] = field(default_factory=dict)  # package ARN -> record
    serving: dict[str, dict] = field(default_factory=dict)  # group -> the last recorded serving pointer

    def package(self, arn: str) -> PackageRecord | None:
        return next((p for versions in self.packages.values() for p in versions.values() if p.arn == arn), None)


def create_request(described: dict) -> dict:
    return {key: described[key] for key in CREATE_FIELDS if described.get(key) not in (None, {}, [], "")}


def s3_uris(node) -> list[str]:
    """Every s3:// string in a described package (artifact, quality report), in order, once."""
    found: list[str] = []
    if isinstance(node, dict):
        for value in node.values():
            found += [uri for uri in s3_uris(value) if uri not in found]
    elif isinstance(node, list):
        for value in node:
            found += [uri for uri in s3_uris(value) if uri not in found]
    elif isinstance(node, str) and node.startswith("s3://"):
        found.append(node)
    return found


def snapshot_prefix(uri: str) -> str:
    """The folder an object's siblings share: the smoke-test cases sit beside the quality report the package names."""
    bucket, key = split_s3_uri(uri)
    return f"s3://{bucket}/{key.rsplit('/', 1)[0]}/" if "/" in key else uri


def fold(events: list[dict]) -> JournalState:
    """The journal's events, in order, as one state."""
    state = JournalState()
    for event in events:
        kind = event["kind"]
        if kind == "registered":
            versions = state.packages.setdefault(event["group"], {})
            known = versions.get(event["version"])
            versions[event["version"]] = PackageRecord(event["group"], event["version"], event["arn"], event["request"], event["objects"],
                                                       known.status if known else event.get("status", PENDING),
                                                       known.how if known else event.get("how", ""),
                                                       known.metadata if known else event["request"].get("CustomerMetadataProperties", {}))
        elif kind == "approval":
            package = state.package(event["arn"])
            if package is not None:
                package.status, package.how, package.metadata = event["status"], event.get("how", ""), event.get("metadata", package.metadata)
        elif kind == "promotion_started":
            state.promotions.setdefault(event["arn"], PromotionRecord(event["arn"])).started += 1
        elif kind == "promotion_finished":
            record = state.promotions.setdefault(event["arn"], PromotionRecord(event["arn"]))
            record.finished, record.status, record.pointer = record.started, event["status"], event.get("pointer")
            if event.get("pointer") and event["pointer"].get("endpoint_name"):
                state.serving[event["group"]] = event["pointer"]
    return state


def registry_changes(state: JournalState, listed: list[dict]) -> tuple[list[str], list[tuple[str, str]]]:
    """What the registry holds that the journal lacks: (ARNs to record, [(ARN, new status)])."""
    new, changed = [], []
    for summary in sorted(listed, key=lambda s: (s["ModelPackageGroupName"], s["ModelPackageVersion"])):
        recorded = state.packages.get(summary["ModelPackageGroupName"], {}).get(summary["ModelPackageVersion"])
        if recorded is None:
            new.append(summary["ModelPackageArn"])
        elif recorded.status != summary.get("ModelApprovalStatus", PENDING):
            changed.append((summary["ModelPackageArn"], summary["ModelApprovalStatus"]))
    return new, changed


@dataclass(frozen=True)
class RestoreStep:
    group: str
    version: int
    record: PackageRecord | None  # None: a version the journal never saw (registered in the instant before a kill)
    status: str  # the approval status to give it


def restore_steps(state: JournalState, group: str) -> list[RestoreStep]:
    """CreateModelPackage calls in version order, gaps filled with rejected placeholders so versions (and ARNs) match."""
    versions = state.packages.get(group, {})
    return [RestoreStep(group, version, versions.get(version), versions[version].status if version in versions else REJECTED)
            for version in range(1, max(versions, default=0) + 1)]


def to_promote(state: JournalState, group: str) -> list[int]:
    """Approved versions in version order: promoting them again, as they were, rebuilds the pointer and its spaces."""
    return sorted(v for v, record in state.packages.get(group, {}).items() if record.status == APPROVED)


def recovery_report(state: JournalState, group: str) -> list[str]:
    """What was recovered, for the output: versions and statuses, what served, interrupted promotions."""
    versions = state.packages.get(group, {})
    if not versions:
        return []
    statuses = ", ".join(f"v{v} {r.status}" + (f" ({r.how})" if r.how else "") for v, r in sorted(versions.items()))
    lines = [f"{group}: restored {len(versions)} registered version(s) from the journal: {statuses}"]
    gaps = [step.version for step in restore_steps(state, group) if step.record is None]
    if gaps:
        lines.append(f"{group}: version(s) {gaps} were registered but never journaled (a kill in between): re-created as Rejected placeholders")
    serving = state.serving.get(group)
    if serving:
        lines.append(f"{group}: before the stop, v{serving.get('version')} served the stable URL ({serving.get('endpoint_name')})")
    for version in to_promote(state, group):
        promotion = state.promotions.get(versions[version].arn)
        if promotion is None or promotion.started == 0:
            note = "approved, never promoted: promoting it"
        elif promotion.interrupted:
            note = "approved, its promotion was interrupted: promoting it again"
        else:
            note = f"promoted before ({promotion.status}): promoting it again to rebuild the serving state"
        lines.append(f"{group}: v{version} {note}")
    return lines


def orphaned_servers(pid_files: list[tuple[str, int, str | None]]) -> list[int]:
    """Inference servers a killed up-loop left running: (model path, pid, that pid's command line or None if gone).

    Only a live process whose command line serves that model path is one (a reused pid is someone else's).
    """
    return [pid for model_path, pid, cmdline in pid_files if cmdline is not None and "inference_code" in cmdline and model_path in cmdline]


def running_elsewhere(state: dict | None, alive: bool, own_pid: int) -> str | None:
    """A message if another up-loop still runs on this workdir (its state file names a live pid other than ours)."""
    if not state or not alive or state.get("pid") == own_pid:
        return None
    return (f"local mode is already running on this workdir (pid {state['pid']}, API {state.get('api', '?')}): "
            "stop it first (clip-api local down) or use another --workdir")


def control_plane_lost(url: str, why: str) -> str:
    return (f"the control plane at {url} stopped answering ({why}); its state was in memory. Run `clip-api local up` again on this "
            "workdir: it restores the registry and the serving state from the journal")
