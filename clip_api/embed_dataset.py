"""`clip-api embed-dataset`: a dataset through the approved model, locally or on Batch Transform.

The model comes from the Model Registry (the approved package that serves: `--version live`, or a
named version), in AWS or in local mode's control plane (`--local-mode`), or from a model.tar.gz
(`--artifact`, no registry). `--space ID` refuses, before any work, a model that embeds in
another space (the package's registered `space`, or the artifact manifest's); the output records the
space either way (a `space` column and the file metadata). Locally, `--workers K` inference servers are started from that same
model.tar.gz, as `clip-api serve` and local mode start them (`python -m inference_code serve`),
each with its share of the cores, and the shards (clip_api/bulk.py) are posted to them as
application/jsonlines.
"""

from __future__ import annotations

import http.client
import os
import queue
import random
import re
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from clip_api import bulk
from clip_core.limits import ServingLimits
from clip_core.names import POINTER_TABLE, SERVING_THREADS_ENV


class EmbedDatasetError(RuntimeError):
    pass


@dataclass(frozen=True)
class ResolvedModel:
    model_id: str
    artifact: Path  # a local model.tar.gz (or directory)
    package_arn: str = ""
    package_version: int = 0
    model_data_url: str = ""
    image: str = ""  # the package's container image (Batch Transform)
    space: str = ""  # the embedding space the package registers (or the artifact's manifest records)


# ------------------------------------------------------------------------------------------------
# The embedding space


def artifact_space(manifest: dict) -> str:
    """The embedding space of an artifact, from its manifest.json (computed for one packaged before spaces;
    a manifest whose recorded space does not follow from its fields is refused)."""
    from inference_code.manifest import ArtifactIntegrityError, Manifest

    try:
        return Manifest.from_dict(manifest).space
    except ArtifactIntegrityError as exc:
        raise EmbedDatasetError(f"the artifact's manifest is not trustworthy: {exc}") from None
    except (TypeError, ValueError, KeyError) as exc:
        raise EmbedDatasetError(f"the artifact's manifest cannot be read ({exc})") from None


def check_space(expected: str | None, found: str, what: str) -> None:
    """Refuse unless `what` embeds in the space `--space` asked for (nothing asked: anything goes)."""
    if not expected:
        return
    if not re.fullmatch(r"[0-9a-f]{12}", expected):
        raise EmbedDatasetError(f"--space {expected!r} is not a space id (12 lowercase hex characters, as X-Clip-Space says)")
    if not found:
        raise EmbedDatasetError(f"--space {expected}: {what} records no embedding space (registered before spaces); "
                                "use a package that does, or drop --space")
    if found != expected:
        raise EmbedDatasetError(f"--space {expected}: {what} embeds in space {found}, not {expected}; "
                                "vectors of different spaces must not be compared: name a package of that space, or drop --space")


# ------------------------------------------------------------------------------------------------
# The model: the registry's approved package


def describe_package(session, model_id: str, version: str) -> dict:
    """DescribeModelPackage of the approved package: the one serving (`live`) or version N."""
    from clip_core.model_config import load_model_config
    from promotion.pointer import read_pointer

    config = load_model_config(model_id)
    sagemaker = session.client("sagemaker")
    if version == "live":

        pointer = read_pointer(session.client("dynamodb"), POINTER_TABLE, model_id, consistent=True)
        if not pointer.package_arn:
            raise EmbedDatasetError(f"nothing serves {model_id} yet (no serving pointer): name a version with --version N")
        arn = pointer.package_arn
    else:
        if not str(version).isdigit():
            raise EmbedDatasetError(f"--version is 'live' or a package version number, not {version!r}")
        group = config.registry.model_package_group
        arn = ""
        for page in sagemaker.get_paginator("list_model_packages").paginate(ModelPackageGroupName=group):
            for summary in page["ModelPackageSummaryList"]:
                if summary.get("ModelPackageVersion") == int(version):
                    arn = summary["ModelPackageArn"]
        if not arn:
            raise EmbedDatasetError(f"{group} has no version {version}")
    package = sagemaker.describe_model_package(ModelPackageName=arn)
    if package.get("ModelApprovalStatus") != "Approved":
        raise EmbedDatasetError(f"model package {arn} is {package.get('ModelApprovalStatus')}, not Approved: only approved packages embed datasets")
    return package


def resolve_model(model_id: str, version: str = "live", artifact: str | None = None, session=None, cache_dir: Path | None = None,
                  space: str | None = None) -> ResolvedModel:
    """The model to embed with; with `space`, refused (EmbedDatasetError) unless it embeds in that space,
    before anything is downloaded."""
    if artifact:
        found = artifact_space(bulk.artifact_manifest(Path(artifact)))
        check_space(space, found, f"the artifact {artifact}")
        return ResolvedModel(model_id, Path(artifact), space=found)
    from clip_core.s3_uri import split_s3_uri

    package = describe_package(session, model_id, version)
    found = package.get("CustomerMetadataProperties", {}).get("space", "")
    check_space(space, found, f"model package {package['ModelPackageArn']} (version {package.get('ModelPackageVersion', '?')})")
    container = package["InferenceSpecification"]["Containers"][0]
    url = container["ModelDataUrl"]
    cache_dir = Path(cache_dir or ".")
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"model-v{package.get('ModelPackageVersion', 0)}.tar.gz"
    if not target.exists():
        bucket, key = split_s3_uri(url)
        session.client("s3").download_file(bucket, key, str(target) + ".tmp")
        os.replace(str(target) + ".tmp", target)
    return ResolvedModel(model_id, target, package["ModelPackageArn"], int(package.get("ModelPackageVersion", 0)), url, container.get("Image", ""),
                         space=found)


# ------------------------------------------------------------------------------------------------
# Local inference servers


class LocalServers:
    """K inference servers from one artifact, each with cores // K threads; stopped on exit."""

    def __init__(self, artifact: Path, workers: int, log_dir: Path, threads: int | None = None, timeout_s: float = 120):
        from local_mode.inference_servers import InferenceServers, free_port

        self.processes: list[subprocess.Popen] = []
        self.urls: list[str] = []
        self.logs: list[Path] = []
        threads = threads or max(1, (os.cpu_count() or 1) // workers)
        env = {**os.environ, SERVING_THREADS_ENV: str(threads)}
        try:
            for index in range(workers):
                port = free_port()
                log = Path(log_dir) / f"server-{index}.log"
                with open(log, "w") as handle:
                    process = subprocess.Popen(InferenceServers.command(Path(artifact).resolve(), port), stdout=handle, stderr=subprocess.STDOUT, env=env)
                self.processes.append(process)
                self.urls.append(f"http://127.0.0.1:{port}")
                self.logs.append(log)
            for process, url, log in zip(self.processes, self.urls, self.logs):
                self._wait(process, url, log, timeout_s)
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _wait(process, url, log, timeout_s) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise EmbedDatasetError(f"an inference server exited at start; see {log}")
            try:
                urllib.request.urlopen(url + "/ping", timeout=2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise EmbedDatasetError(f"an inference server did not answer /ping in {timeout_s:g} s; see {log}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> "LocalServers":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def post_jsonlines(connection_factory, body: bytes, attempts: int = 6, timeout_s: float = 600) -> bytes:
    """POST a shard; retry 503 (Retry-After, jittered) and lost connections; other statuses fail."""
    delay = 0.5
    for attempt in range(attempts):
        connection = connection_factory()
        try:
            connection.request("POST", "/invocations", body=body, headers={"Content-Type": "application/jsonlines"})
            response = connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            connection_factory(reset=True)
            if attempt == attempts - 1:
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 10)
            continue
        if response.status == 200:
            return payload
        if response.status == 503 and attempt < attempts - 1:
            wait = float(response.headers.get("Retry-After") or delay)
            time.sleep(wait * (1 + 0.25 * random.random()))
            delay = min(delay * 2, 10)
            continue
        raise EmbedDatasetError(f"the inference server answered {response.status}: {payload[:300].decode(errors='replace')}")
    raise EmbedDatasetError("no answer")


class _Connection:
    def __init__(self, url: str):
        from urllib.parse import urlparse

        parsed = urlparse(url)
        self.host, self.port = parsed.hostname, parsed.port
        self.connection: http.client.HTTPConnection | None = None

    def __call__(self, reset: bool = False) -> http.client.HTTPConnection:
        if reset or self.connection is None:
            if self.connection is not None:
                self.connection.close()
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=3600)
        return self.connection


# ------------------------------------------------------------------------------------------------
# The run


@dataclass
class RunResult:
    out: Path
    summary: dict
    shards_total: int
    shards_resumed: int
    shards_sent: int
    seconds: float
    items: int


def prepare(model: ResolvedModel, source: str, out: Path, shard_bytes: int, shard_records: int, restart: bool = False):
    manifest = bulk.artifact_manifest(model.artifact)
    if manifest["model_id"] != model.model_id:
        raise EmbedDatasetError(f"the artifact is {manifest['model_id']}'s, not {model.model_id}'s")
    space = artifact_space(manifest)
    if model.space and model.space != space:
        raise EmbedDatasetError(f"model package {model.package_arn} registers space {model.space}, but its artifact's manifest gives {space}")
    items = bulk.read_items(source)
    limits = ServingLimits.from_dict(manifest.get("limits", {}))
    plan = bulk.RunPlan(
        model_id=model.model_id, model_version=manifest["version"], artifact_sha256=bulk.sha256_path(model.artifact),
        manifest_digest=bulk.manifest_digest(items), items=len(items),
        shards=bulk.plan_shards(items, limits, shard_bytes, shard_records), package_arn=model.package_arn,
        package_version=model.package_version, variant=manifest.get("variant", ""), embedding_dim=int(manifest["embedding_dim"]),
        input=str(source), space=space,
    )
    parts = bulk.Parts(out)
    done = parts.start(plan, restart=restart)
    return items, limits, plan, parts, done


def run_local(model: ResolvedModel, source: str, out: Path | str, workers: int = 1, shard_bytes: int = bulk.DEFAULT_SHARD_BYTES,
              shard_records: int = bulk.DEFAULT_SHARD_RECORDS, progress: bool = True, restart: bool = False, keep_parts: bool = False,
              server_urls: list[str] | None = None, log=None) -> RunResult:
    log = log or (lambda message: print(message, file=sys.stderr))
    started = time.monotonic()
    out = Path(out)
    items, limits, plan, parts, done = prepare(model, source, out, shard_bytes, shard_records, restart)
    todo = [index for index in range(len(plan.shards)) if index not in set(done)]
    if done:
        log(f"resuming: {len(done)} of {len(plan.shards)} shards already answered in {parts.dir}")
    if todo:
        if server_urls:
            _send_shards(server_urls, items, limits, plan, parts, todo, done, progress)
        else:
            with LocalServers(model.artifact, workers, parts.dir) as servers:
                _send_shards(servers.urls, items, limits, plan, parts, todo, done, progress)
    answers = [answer for index in range(len(plan.shards)) for answer in parts.read(index)]
    summary = bulk.assemble(items, answers, plan, out)
    if not keep_parts:
        parts.remove()
    return RunResult(out, summary, len(plan.shards), len(done), len(todo), time.monotonic() - started, len(items))


def _send_shards(urls, items, limits, plan, parts, todo, done, progress: bool) -> None:
    from tqdm import tqdm

    work: queue.Queue = queue.Queue()
    for index in todo:
        work.put(index)
    stop = threading.Event()
    failures: list[BaseException] = []
    done_items = sum(plan.shards[i][1] - plan.shards[i][0] for i in done)
    bar = tqdm(total=len(items), initial=done_items, unit="item", disable=not progress, smoothing=0.1, dynamic_ncols=True)
    lock = threading.Lock()

    def worker(url: str) -> None:
        connection = _Connection(url)
        try:
            while not stop.is_set():
                try:
                    index = work.get_nowait()
                except queue.Empty:
                    return
                start, end = plan.shards[index]
                body, known = bulk.shard_body(items[start:end], limits)
                answer = post_jsonlines(connection, body) if body else b""
                parts.write(index, bulk.merge_answers(known, answer))
                with lock:
                    bar.update(end - start)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)
            stop.set()
        finally:
            if connection.connection is not None:
                connection.connection.close()

    threads = [threading.Thread(target=worker, args=(url,), name=f"embed-{i}", daemon=True) for i, url in enumerate(urls)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.2)
    except KeyboardInterrupt:
        stop.set()  # each worker finishes its shard in flight (written atomically), then stops
        for thread in threads:
            thread.join(timeout=60)
        raise
    finally:
        bar.close()
    if failures:
        raise failures[0]


def describe_result(result: RunResult) -> dict:
    s = result.summary
    return {
        "out": str(result.out), "items": result.items, "errors": s["errors"], "model_id": s["model_id"], "model_version": s["model_version"],
        "space": s.get("space", ""),
        "package_arn": s["package_arn"], "package_version": s["package_version"], "artifact_sha256": s["artifact_sha256"],
        "manifest_digest": s["manifest_digest"], "shards": result.shards_total, "shards_resumed": result.shards_resumed,
        "shards_sent": result.shards_sent, "seconds": round(result.seconds, 2),
        "items_per_s": round(result.items / result.seconds, 1) if result.seconds else None,
    }
