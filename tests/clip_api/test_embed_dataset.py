"""`clip-api embed-dataset` locally: a folder of a few hundred generated images and a text manifest
with bad items, through local inference servers started from the tiny model's model.tar.gz.

Every good item's embedding equals the single-request embedding bit for bit, every bad item is
present with its error code, and a run killed halfway resumes without recomputing its shards and
writes the same file.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from clip_api import bulk
from clip_core.limits import ServingLimits
from clip_api.embed_dataset import resolve_model, run_local
from tests.conftest import REPO_ROOT

pytest.importorskip("pyarrow")

N_IMAGES = 300


def _jpeg(rng, width, height, quality=85) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    rng = np.random.default_rng(7)
    folder = tmp_path_factory.mktemp("images")
    for index in range(N_IMAGES):
        sub = folder / f"part{index % 3}"
        sub.mkdir(exist_ok=True)
        (sub / f"img{index:04d}.jpg").write_bytes(_jpeg(rng, int(rng.integers(24, 120)), int(rng.integers(24, 120))))
    good = _jpeg(rng, 200, 150)
    (folder / "bad-corrupt.jpg").write_bytes(good[: len(good) // 2])
    (folder / "bad-empty.png").write_bytes(b"")
    (folder / "bad-oversized.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(3_100_000))
    (folder / "bad-not-an-image.gif").write_bytes(b"hello, I am text")
    (folder / "notes.txt").write_text("not an image suffix: not an item")
    return folder


EXPECTED_FOLDER_ERRORS = {"bad-corrupt.jpg": "corrupt_image", "bad-empty.png": "empty_image",
                          "bad-oversized.png": "image_too_large", "bad-not-an-image.gif": "not_an_image"}


@pytest.fixture(scope="module")
def text_manifest(tmp_path_factory, image_folder):
    folder = tmp_path_factory.mktemp("manifest")
    rows = [{"id": f"t{i}", "text": f"a photo of thing number {i}"} for i in range(40)]
    rows += [
        {"id": "bad-empty", "text": ""},
        {"id": "bad-blank", "text": "   "},
        {"id": "bad-long", "text": "x" * 10_001},
        {"id": "bad-type", "text": 42},
        {"id": "long-but-fine", "text": "word " * 300},  # truncated to 77 tokens, embedded
        {"id": "img-ok", "image": str(image_folder / "part0" / "img0000.jpg")},
        {"id": "img-missing", "image": "no/such/file.jpg"},
        {"id": 17, "text": "an integer id"},
    ]
    path = folder / "texts.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


EXPECTED_MANIFEST_ERRORS = {"bad-empty": "empty_text", "bad-blank": "empty_text", "bad-long": "text_too_long",
                            "bad-type": "invalid_type", "img-missing": "file_not_found"}


def single_request(base: str, payload: dict) -> tuple[int, object]:
    request = urllib.request.Request(base + "/invocations", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def check_against_single_requests(table, base: str, payload_of, expected_errors: dict) -> None:
    rows = table.to_pylist()
    assert [r["error"] for r in rows if r["id"] in expected_errors] == [expected_errors[r["id"]] for r in rows if r["id"] in expected_errors]
    good = [r for r in rows if r["id"] not in expected_errors]
    assert good and all(r["error"] is None and r["error_message"] is None for r in good)
    embeddings = table.column("embedding")
    for index, row in enumerate(rows):
        if row["id"] in expected_errors:
            assert row["embedding"] is None
            continue
        status, alone = single_request(base, payload_of(row["id"]))
        assert status == 200
        got = np.asarray(embeddings[index].values.to_numpy(zero_copy_only=False), dtype=np.float32)
        assert got.dtype == np.float32
        assert np.array_equal(got, np.asarray(alone, dtype=np.float32)), row["id"]  # bit for bit
        assert got.tobytes() == np.asarray(alone, dtype=np.float32).tobytes()


def test_folder_of_images_matches_single_requests_and_keeps_bad_items(tmp_path, tiny_fp32, tiny_server, image_folder):
    out = tmp_path / "images.parquet"
    model = resolve_model("clip-tiny", artifact=str(tiny_fp32.artifact))
    result = run_local(model, str(image_folder), out, workers=2, shard_records=32, progress=False)
    table, meta = bulk.read_output(out)
    assert table.num_rows == N_IMAGES + len(EXPECTED_FOLDER_ERRORS)  # nothing dropped, notes.txt not an item
    assert str(table.schema.field("embedding").type) == "fixed_size_list<element: float>[64]"
    assert set(table.column("modality").to_pylist()) == {"image"}
    assert set(table.column("model_version").to_pylist()) == {tiny_fp32.manifest.version}
    assert meta["artifact_sha256"] == bulk.sha256_path(tiny_fp32.artifact)
    assert meta["manifest_digest"] == bulk.manifest_digest(bulk.read_items(image_folder)) and meta["errors"] == len(EXPECTED_FOLDER_ERRORS)
    assert result.shards_sent == result.shards_total > 2 and not Path(str(out) + ".parts").exists()

    def payload_of(item_id: str) -> dict:
        return {"image": base64.b64encode((image_folder / item_id).read_bytes()).decode()}

    check_against_single_requests(table, tiny_server, payload_of, EXPECTED_FOLDER_ERRORS)


def test_text_manifest_with_bad_items(tmp_path, tiny_fp32, tiny_server, text_manifest, image_folder):
    out = tmp_path / "texts.parquet"
    model = resolve_model("clip-tiny", artifact=str(tiny_fp32.artifact))
    run_local(model, str(text_manifest), out, workers=1, shard_records=16, progress=False)
    table, meta = bulk.read_output(out)
    assert meta["space"] == tiny_fp32.manifest.space  # written without --space too: store it with the vectors
    assert set(table.column("space").to_pylist()) == {tiny_fp32.manifest.space}
    rows = {json.loads(line)["id"]: json.loads(line) for line in text_manifest.read_text().splitlines()}
    assert table.column("id").to_pylist() == [str(k) for k in rows]
    assert table.column("modality").to_pylist() == ["image" if "image" in r else "text" for r in rows.values()]
    by_id = {str(k): v for k, v in rows.items()}

    def payload_of(item_id: str) -> dict:
        row = by_id[item_id]
        return {"text": row["text"]} if "text" in row else {"image": base64.b64encode(Path(row["image"]).read_bytes()).decode()}

    check_against_single_requests(table, tiny_server, payload_of, EXPECTED_MANIFEST_ERRORS)
    messages = dict(zip(table.column("id").to_pylist(), table.column("error_message").to_pylist()))
    assert "10001 characters" in messages["bad-long"]


def test_csv_and_parquet_manifests_read_like_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8data")
    (tmp_path / "m.csv").write_text("id,text,image\n1,a dog,\n2,,a.jpg\n")
    pq.write_table(pa.table({"id": ["1", "2"], "text": ["a dog", None], "image": [None, "a.jpg"]}), tmp_path / "m.parquet")
    (tmp_path / "m.jsonl").write_text('{"id": "1", "text": "a dog"}\n{"id": "2", "image": "a.jpg"}\n')
    digests = {bulk.manifest_digest(bulk.read_items(tmp_path / name)) for name in ("m.csv", "m.parquet", "m.jsonl")}
    assert len(digests) == 1
    (tmp_path / "dup.jsonl").write_text('{"id": "1", "text": "a"}\n{"id": "1", "text": "b"}\n')
    with pytest.raises(bulk.DatasetError, match="appears twice"):
        bulk.read_items(tmp_path / "dup.jsonl")
    (tmp_path / "both.jsonl").write_text('{"id": "1", "text": "a", "image": "a.jpg"}\n')
    with pytest.raises(bulk.DatasetError, match="exactly one of text or image"):
        bulk.read_items(tmp_path / "both.jsonl")


def test_shards_stay_under_the_payload_and_record_limits():
    items = [bulk.Item(str(i), "image", path="x", size=400_000 + i, digest="d") for i in range(30)]
    items += [bulk.Item("big", "image", path="x", size=5_000_000, digest="d")]  # prechecked: sent never
    shards = bulk.plan_shards(items, ServingLimits(), shard_bytes=3_000_000, shard_records=64)
    assert [i for s, e in shards for i in range(s, e)] == list(range(len(items)))
    for start, end in shards:
        assert sum(bulk.record_size(it) for it in items[start:end] if not bulk.precheck(it, ServingLimits())) <= 3_000_000
    assert len(shards) == 6  # 5 images of ~533 kB base64 per 3 MB shard (a 6th would make 3.2 MB)


def _shard_files(parts: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in parts.glob("shard-*.jsonl")}


def test_a_run_killed_halfway_resumes_without_recomputing_and_writes_the_same_file(tmp_path, tiny_fp32, image_folder):
    command = [sys.executable, "-m", "clip_api.cli", "embed-dataset", "clip-tiny", str(image_folder), "--artifact", str(tiny_fp32.artifact),
               "--shard-records", "4", "--workers", "1", "--no-progress", "--keep-parts"]
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # a killed server cannot remove its extraction: keep it here
    killed_out = tmp_path / "killed.parquet"
    parts = Path(str(killed_out) + ".parts")
    process = subprocess.Popen([*command, "--out", str(killed_out)], cwd=REPO_ROOT, env=env, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        total = len(bulk.plan_shards(bulk.read_items(image_folder), ServingLimits(), shard_records=4))
        while len(_shard_files(parts)) < total // 3:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # a crash: the CLI and its servers, mid-shard
        process.wait()
        process.stdout.close()
        process.stderr.close()
    finished = _shard_files(parts)
    assert total // 3 <= len(finished) < total and not killed_out.exists()

    resumed = subprocess.run([*command, "--out", str(killed_out)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["shards_resumed"] == len(finished) and report["shards_sent"] == total - len(finished)
    after = _shard_files(parts)
    assert {name: after[name] for name in finished} == finished  # the finished shards were not rewritten

    clean_out = tmp_path / "clean.parquet"
    clean = subprocess.run([*command, "--out", str(clean_out)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr
    killed_table, killed_meta = bulk.read_output(killed_out)
    clean_table, clean_meta = bulk.read_output(clean_out)
    assert killed_table.equals(clean_table) and killed_meta == clean_meta
    assert killed_out.read_bytes() == clean_out.read_bytes()


def test_space_names_the_vectors_space_and_another_is_refused_before_any_work(tmp_path, tiny_fp32, tiny_int8, tiny_config,
                                                                              package_random, text_manifest, capsys):
    from clip_api.cli import main

    space = tiny_fp32.manifest.space
    assert resolve_model("clip-tiny", artifact=str(tiny_int8.artifact), space=space).space == space  # int8 of the same weights: same space
    other = package_random(tiny_config, "fp32", seed=1, name="clip-tiny-fp32-seed1")
    out = tmp_path / "o.parquet"
    code = main(["embed-dataset", "clip-tiny", str(text_manifest), "--out", str(out), "--artifact", str(other.artifact), "--space", space,
                 "--no-progress"])
    error = capsys.readouterr().err
    assert code == 2 and f"embeds in space {other.manifest.space}, not {space}" in error
    assert not out.exists() and not Path(str(out) + bulk.PARTS_SUFFIX).exists()  # refused before any work
    assert main(["embed-dataset", "clip-tiny", str(text_manifest), "--out", str(out), "--artifact", str(tiny_fp32.artifact),
                 "--space", "not-a-space"]) == 2
    assert "not a space id" in capsys.readouterr().err and not Path(str(out) + bulk.PARTS_SUFFIX).exists()


def test_parts_of_a_different_input_are_refused(tmp_path, tiny_fp32, text_manifest):
    out = tmp_path / "o.parquet"
    model = resolve_model("clip-tiny", artifact=str(tiny_fp32.artifact))
    items = bulk.read_items(text_manifest)
    manifest = bulk.artifact_manifest(tiny_fp32.artifact)
    plan = bulk.RunPlan("clip-tiny", manifest["version"], "other-artifact", bulk.manifest_digest(items), len(items), [(0, len(items))])
    bulk.Parts(out).start(plan)
    with pytest.raises(bulk.DatasetError, match="different run"):
        run_local(model, str(text_manifest), out, progress=False)
