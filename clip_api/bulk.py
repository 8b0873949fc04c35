"""Bulk embedding of a dataset: items -> JSON Lines shards -> answers -> one Parquet file.

The record format is the container's `application/jsonlines` contract (inference_code/contract.py):
one JSON body per line ({"text": ...} or {"image": "<base64>"}), each answered on its line. The
same shards go to local inference servers (`run_local`) or, as S3 objects, to a SageMaker Batch
Transform job (clip_api/batch_transform.py); both end in `assemble`, so the two paths give the same
file for the same answers.

Resumability: every finished shard's answers are written atomically under `<out>.parts/` beside a
plan (input digest, artifact digest, shard boundaries). A restarted run with the same plan sends
only the shards without answers; a different input or model refuses the old parts.

Items that cannot be sent at all (a missing file, an image or text past the artifact's limits) get
their error here, with the code the container would answer; every other error comes from the
container. No item is ever dropped: the output has one row per input item, in input order.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clip_core.limits import ServingLimits

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
DEFAULT_SHARD_BYTES = 3_000_000  # under the container's 4 MB per request and Batch Transform's MaxPayloadInMB
DEFAULT_SHARD_RECORDS = 64  # keeps one request short (progress, resumption, the request deadline)
PARTS_SUFFIX = ".parts"
METADATA_KEY = b"clip_api"


class DatasetError(ValueError):
    """The input cannot be read as a dataset (the message says where and why)."""


@dataclass(frozen=True)
class Item:
    id: str
    modality: str  # "text" | "image"
    value: object = None  # the text (as given: a non-string is sent as is and answered invalid_type)
    path: str = ""  # image: a local path or an s3:// URI
    size: int = -1  # image bytes; -1: missing
    digest: str = ""  # sha256 of the content (S3: the ETag)


# ------------------------------------------------------------------------------------------------
# Reading the input


def read_items(source: str | Path) -> list[Item]:
    """A local folder of images, or a JSONL / CSV / Parquet manifest with `id` and `text` or `image`
    (a path relative to the manifest's folder) per row."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return [_image_item(p.relative_to(path).as_posix(), p) for p in files]
    if not path.is_file():
        raise DatasetError(f"{path} is neither a folder of images nor a manifest file")
    rows = _manifest_rows(path)
    items, seen = [], set()
    for number, row in rows:
        item = _row_item(row, number, path.parent)
        if item.id in seen:
            raise DatasetError(f"{path.name} row {number}: id {item.id!r} appears twice; ids must be unique")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise DatasetError(f"{path} holds no rows")
    return items


def _manifest_rows(path: Path) -> list[tuple[int, dict]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise DatasetError(f"{path.name} line {number}: not JSON ({exc})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{path.name} line {number}: a row must be a JSON object with id and text or image")
            rows.append((number, row))
        return rows
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            return [(number, {k: v for k, v in row.items() if v not in (None, "")}) for number, row in enumerate(csv.DictReader(handle), 2)]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return [(number, {k: v for k, v in row.items() if v is not None}) for number, row in enumerate(table.to_pylist(), 1)]
    raise DatasetError(f"{path.name}: a manifest is .jsonl, .csv or .parquet")


def _row_item(row: dict, number: int, base: Path) -> Item:
    if "id" not in row or row["id"] is None or str(row["id"]) == "":
        raise DatasetError(f"row {number}: no id")
    item_id = str(row["id"])
    present = [key for key in ("text", "image") if key in row]
    if len(present) != 1:
        raise DatasetError(f"row {number} (id {item_id!r}): needs exactly one of text or image, got {present or 'none'}")
    if present[0] == "text":
        text = row["text"]
        return Item(item_id, "text", value=text, digest=hashlib.sha256(json.dumps(text).encode()).hexdigest())
    location = str(row["image"])
    if location.startswith("s3://"):
        return Item(item_id, "image", path=location)  # sized and digested from the S3 listing
    return _image_item(item_id, base / location)


def _image_item(item_id: str, path: Path) -> Item:
    try:
        data = path.read_bytes()
    except OSError:
        return Item(item_id, "image", path=str(path), size=-1, digest="missing")
    return Item(item_id, "image", path=str(path), size=len(data), digest=hashlib.sha256(data).hexdigest())


def manifest_digest(items: list[Item]) -> str:
    """sha256 over every item's id, modality and content digest, in order: the same input, the same digest."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(f"{item.id}\t{item.modality}\t{item.digest}\n".encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------
# Records and shards


def error_answer(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def precheck(item: Item, limits: ServingLimits) -> bytes | None:
    """The error answer of an item that cannot be sent (the container's code where it has one)."""
    if item.modality == "image":
        if item.size < 0:
            return error_answer("file_not_found", f"the image {item.id!r} could not be read")
        if item.size > limits.max_image_bytes:
            return error_answer("image_too_large", f"'image' decodes to more than {limits.max_image_bytes} bytes")
    elif isinstance(item.value, str) and len(item.value) > limits.max_text_chars:
        return error_answer(
            "text_too_long",
            f"'text' has {len(item.value)} characters; at most {limits.max_text_chars} are accepted (texts past 77 tokens are truncated anyway)",
        )
    return None


def record_size(item: Item) -> int:
    if item.modality == "image":
        return 4 * ((max(item.size, 0) + 2) // 3) + 13
    return len(json.dumps({"text": item.value})) + 1


def plan_shards(items: list[Item], limits: ServingLimits, shard_bytes: int = DEFAULT_SHARD_BYTES,
                shard_records: int = DEFAULT_SHARD_RECORDS) -> list[tuple[int, int]]:
    """Contiguous [start, end) ranges of items, each under shard_bytes of records and shard_records items."""
    shards, start, size = [], 0, 0
    for index, item in enumerate(items):
        grow = 0 if precheck(item, limits) else record_size(item)
        if index > start and (size + grow > shard_bytes or index - start >= shard_records):
            shards.append((start, index))
            start, size = index, 0
        size += grow
    shards.append((start, len(items)))
    return shards


def record_line(item: Item, read=None) -> bytes:
    if item.modality == "text":
        return json.dumps({"text": item.value}).encode()
    data = (read or _read_local)(item.path)
    return b'{"image":"' + base64.b64encode(data) + b'"}'


def _read_local(path: str) -> bytes:
    return Path(path).read_bytes()


def shard_body(items: list[Item], limits: ServingLimits, read=None) -> tuple[bytes, list[bytes | None]]:
    """The JSON Lines body of a shard (items that can be sent) and each item's answer known without
    sending it (None: the container answers it)."""
    known = [precheck(item, limits) for item in items]
    lines = []
    for index, item in enumerate(items):
        if known[index] is None:
            try:
                lines.append(record_line(item, read))
            except OSError:  # gone since it was planned
                known[index] = error_answer("file_not_found", f"the image {item.id!r} could not be read")
    return b"".join(line + b"\n" for line in lines), known


def merge_answers(prechecked: list[bytes | None], answer_body: bytes) -> list[bytes]:
    """One answer per item: the precheck's, or the container's next line."""
    answers = answer_body.split(b"\n")
    if answers and answers[-1] == b"":
        answers.pop()
    sent = sum(1 for answer in prechecked if answer is None)
    if len(answers) != sent:
        raise RuntimeError(f"the container answered {len(answers)} lines for {sent} records")
    it = iter(answers)
    return [answer if answer is not None else next(it) for answer in prechecked]


# ------------------------------------------------------------------------------------------------
# The run's plan and its parts (resumability)


@dataclass
class RunPlan:
    model_id: str
    model_version: str  # the artifact's content version (what the API reports as X-Clip-Version)
    artifact_sha256: str
    manifest_digest: str
    items: int
    shards: list = field(default_factory=list)
    package_arn: str = ""
    package_version: int = 0
    variant: str = ""
    embedding_dim: int = 0
    input: str = ""
    space: str = ""  # the embedding space of the vectors (inference_code.manifest.embedding_space): store it with them

    def same_run(self, other: "RunPlan") -> bool:
        keys = ("model_id", "artifact_sha256", "manifest_digest", "items", "shards")
        return all(getattr(self, k) == getattr(other, k) for k in keys)


class Parts:
    """`<out>.parts/`: plan.json and shard-NNNNN.jsonl (one answer per item), each written atomically."""

    def __init__(self, out: Path):
        self.dir = Path(str(out) + PARTS_SUFFIX)

    def path(self, shard: int) -> Path:
        return self.dir / f"shard-{shard:06d}.jsonl"

    def start(self, plan: RunPlan, restart: bool = False) -> list[int]:
        """Record the plan (or check it against the one there); return the shards already answered."""
        self.dir.mkdir(parents=True, exist_ok=True)
        plan_file = self.dir / "plan.json"
        if plan_file.exists() and not restart:
            previous = RunPlan(**json.loads(plan_file.read_text()))
            previous.shards = [tuple(s) for s in previous.shards]
            if not previous.same_run(plan):
                raise DatasetError(
                    f"{self.dir} holds parts of a different run (the input, the model or the sharding changed); "
                    "delete it, or pass --restart to discard it"
                )
        elif plan_file.exists():
            for old in self.dir.glob("shard-*.jsonl"):
                old.unlink()
        _atomic_write(plan_file, json.dumps(asdict(plan), indent=1).encode())
        return [index for index, (start, end) in enumerate(plan.shards) if self._complete(index, end - start)]

    def _complete(self, shard: int, count: int) -> bool:
        path = self.path(shard)
        return path.exists() and path.read_bytes().count(b"\n") == count

    def write(self, shard: int, answers: list[bytes]) -> None:
        _atomic_write(self.path(shard), b"".join(a + b"\n" for a in answers))

    def read(self, shard: int) -> list[bytes]:
        return self.path(shard).read_bytes().split(b"\n")[:-1]

    def remove(self) -> None:
        for path in self.dir.iterdir():
            path.unlink()
        self.dir.rmdir()


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


# ------------------------------------------------------------------------------------------------
# The output


def output_schema(dim: int, metadata: dict | None = None):
    import pyarrow as pa

    schema = pa.schema([
        ("id", pa.string()),
        ("modality", pa.string()),
        ("embedding", pa.list_(pa.float32(), dim)),
        ("model_id", pa.string()),
        ("model_version", pa.string()),
        ("space", pa.string()),  # the embedding space, the same on every row: vectors of different spaces must not be compared
        ("error", pa.string()),  # the error code, null when the item was embedded
        ("error_message", pa.string()),
    ])
    return schema.with_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()}) if metadata else schema


def assemble(items: list[Item], answers: list[bytes], plan: RunPlan, out: Path) -> dict:
    """Write the Parquet file (atomically); return its summary (also stored as the file's metadata)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(answers) != len(items):
        raise RuntimeError(f"{len(answers)} answers for {len(items)} items")
    dim = plan.embedding_dim
    vectors = np.zeros((len(items), dim), dtype=np.float32)
    valid = np.zeros(len(items), dtype=bool)
    codes, messages = [None] * len(items), [None] * len(items)
    for index, answer in enumerate(answers):
        parsed = json.loads(answer)
        if isinstance(parsed, list) and len(parsed) == dim and all(isinstance(x, float) for x in parsed):
            vectors[index] = np.asarray(parsed, dtype=np.float32)  # float32 -> JSON -> float32 is exact
            valid[index] = True
        elif isinstance(parsed, dict) and "error" in parsed:
            codes[index], messages[index] = parsed["error"].get("code"), parsed["error"].get("message")
        else:
            codes[index], messages[index] = "unexpected_answer", "the container's answer was not one embedding"
    summary = {**asdict(plan), "errors": int((~valid).sum())}
    summary.pop("shards")
    embeddings = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), dim, mask=pa.array(~valid))
    table = pa.table(
        {
            "id": [item.id for item in items],
            "modality": [item.modality for item in items],
            "embedding": embeddings,
            "model_id": [plan.model_id] * len(items),
            "model_version": [plan.model_version] * len(items),
            "space": [plan.space or None] * len(items),
            "error": pa.array(codes, type=pa.string()),
            "error_message": pa.array(messages, type=pa.string()),
        },
        schema=output_schema(dim, summary),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(out.name + ".tmp")
    pq.write_table(table, temporary, compression="zstd")
    os.replace(temporary, out)
    return summary


def read_output(path: Path | str):
    """(table, metadata dict) of an embed-dataset output."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return table, json.loads(table.schema.metadata[METADATA_KEY])


# ------------------------------------------------------------------------------------------------
# The artifact


def artifact_manifest(artifact: Path) -> dict:
    """manifest.json of a model.tar.gz (or an extracted directory), without extracting the rest."""
    artifact = Path(artifact)
    if artifact.is_dir():
        return json.loads((artifact / "manifest.json").read_text())
    with tarfile.open(artifact) as archive:
        for member in archive.getmembers():
            if member.name.lstrip("./") == "manifest.json" and member.isfile():
                return json.loads(archive.extractfile(member).read())
    raise DatasetError(f"{artifact} holds no manifest.json: not a serving artifact")


def sha256_path(path: Path) -> str:
    digest = hashlib.sha256()
    if Path(path).is_dir():
        for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
            digest.update(file.relative_to(path).as_posix().encode() + b"\0" + hashlib.sha256(file.read_bytes()).digest())
        return digest.hexdigest()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
