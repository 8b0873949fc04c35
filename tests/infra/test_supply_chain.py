"""Pinned supply chain: base images by digest, dependencies by hash, pushed images registered by digest."""

from __future__ import annotations

import json
import re
from importlib.metadata import version

import boto3
import pytest
from packaging.requirements import Requirement

from infra import images
from infra.lambda_bundle import LAMBDA_LOCK, vendor_command
from infra.stacks.cicd import IMAGE_REPOSITORIES, cicd_template
from tests.conftest import REPO_ROOT

DIGEST_A, DIGEST_B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def parse_lock(path) -> dict[str, tuple[str, list[str]]]:
    """name -> (pinned version, hashes) of a pip-compile --generate-hashes file."""
    entries: dict[str, tuple[str, list[str]]] = {}
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert not line.startswith("-"), f"{path.name}: option line {line!r} (index URLs belong to pip's configuration)"
        requirement, *options = line.split(" --hash=")
        requirement = Requirement(requirement.strip())
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{path.name}: {requirement} is not pinned"
        entries[requirement.name.lower().replace("_", "-")] = (specifier.version, [o.strip() for o in options])
    return entries


@pytest.mark.parametrize("lock, bounds", [
    (REPO_ROOT / "inference_code" / "requirements.lock", REPO_ROOT / "inference_code" / "requirements.txt"),
    (LAMBDA_LOCK, REPO_ROOT / "lambda" / "requirements.txt"),
])
def test_dependency_locks_pin_every_package_with_hashes_within_the_bounds(lock, bounds):
    entries = parse_lock(lock)
    assert entries and all(hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes) for _, hashes in entries.values())
    for line in bounds.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            name = requirement.name.lower().replace("_", "-")
            assert name in entries and requirement.specifier.contains(entries[name][0]), f"{lock.name} does not satisfy {requirement}"


def test_the_serving_lock_is_what_the_tests_run():
    """The tests validate the versions the container installs: each pin is the version installed here."""
    for name, (pinned, _) in parse_lock(REPO_ROOT / "inference_code" / "requirements.lock").items():
        assert version(name) == pinned, f"{name}: the lock pins {pinned}, the tests run {version(name)}"


def test_the_serving_image_installs_the_lock_with_hashes_from_a_pinned_base():
    dockerfile = (REPO_ROOT / "inference_code" / "Dockerfile").read_text()
    install = next(part for part in dockerfile.split("RUN ")[1:] if "pip install" in part)
    assert "--require-hashes" in install and "requirements.lock" in install and "requirements.txt" not in install


@pytest.mark.parametrize("dockerfile", ["inference_code/Dockerfile", "model_build/Dockerfile"])
def test_dockerfiles_build_only_from_the_base_image_argument(dockerfile):
    """No FROM a bare tag, and no tag default: the build must be given the lock's digest reference."""
    lines = [line.strip() for line in (REPO_ROOT / dockerfile).read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert [line for line in lines if line.startswith("FROM ")] == ["FROM ${BASE_IMAGE}"]
    assert "ARG BASE_IMAGE" in lines  # declared without a default
    locked = {entry["dockerfile"] for entry in images.load_lock().values()}
    assert dockerfile in locked


def test_the_processing_image_installs_under_the_serving_lock():
    dockerfile = (REPO_ROOT / "model_build" / "Dockerfile").read_text()
    install = next(part for part in dockerfile.split("RUN ")[1:] if '".[build]"' in part)
    assert "inference_code/requirements.lock" in install and "--constraint /tmp/serving-constraints.txt" in install


def test_the_lambda_zip_vendors_exactly_the_lock():
    command = vendor_command("/tmp/target")
    assert command[command.index("-r") + 1] == str(LAMBDA_LOCK)
    assert {"--require-hashes", "--no-deps", "--only-binary=:all:"} <= set(command)
    assert not any(re.search(r"[<>]=", word) for word in command)  # nothing resolved afresh


def test_a_base_image_without_a_recorded_digest_cannot_be_referenced():
    lock = {"serving": {"dockerfile": "inference_code/Dockerfile", "image": "public.ecr.aws/docker/library/python:3.12-slim", "digest": None}}
    with pytest.raises(images.ImageLockError, match="no digest"):
        images.pinned_reference("serving", lock=lock)
    lock["serving"]["digest"] = DIGEST_A
    assert images.pinned_reference("serving", lock=lock) == f"public.ecr.aws/docker/library/python:3.12-slim@{DIGEST_A}"
    assert images.is_pinned(images.pinned_reference("serving", lock=lock))


def test_the_check_fails_when_a_tag_moved_or_a_digest_is_missing():
    lock = {"processing": {"dockerfile": "model_build/Dockerfile", "digest": DIGEST_A,
                           "image": "763104351884.dkr.ecr.{region}.amazonaws.com/pytorch-training:2.6.0-cpu-py312-ubuntu22.04-sagemaker"}}
    asked = []

    def registry(digest):
        def run(command):
            asked.append(command)
            return json.dumps({"schemaVersion": 2, "digest": digest})
        return run

    assert images.check("eu-west-1", registry(DIGEST_A), lock) == []
    assert asked[0][:4] == ["docker", "buildx", "imagetools", "inspect"] and "763104351884.dkr.ecr.eu-west-1.amazonaws.com/" in asked[0][4]
    (problem,) = images.check("eu-west-1", registry(DIGEST_B), lock)
    assert "now points at " + DIGEST_B in problem
    lock["processing"]["digest"] = None
    (problem,) = images.check("eu-west-1", registry(DIGEST_A), lock)
    assert "no digest" in problem


def test_lock_records_what_the_registry_answers(tmp_path):
    path = tmp_path / "base-images.json"
    path.write_text(json.dumps({"images": {"serving": {"dockerfile": "inference_code/Dockerfile", "image": "example/python:3.12-slim", "digest": None}}}))
    images.lock("us-east-1", lambda command: json.dumps({"digest": DIGEST_B}), path)
    assert json.loads(path.read_text())["images"]["serving"]["digest"] == DIGEST_B


def test_committed_digests_are_real_digests_or_not_yet_recorded():
    for name, entry in images.load_lock().items():
        assert entry["digest"] is None or re.fullmatch(r"sha256:[0-9a-f]{64}", entry["digest"]), name
        assert "@" not in entry["image"], name


def test_the_pushed_image_is_referenced_by_digest(aws_env, moto_aws):
    ecr = boto3.client("ecr", region_name="us-east-1")
    ecr.create_repository(repositoryName="clip-embedding-api-serve", imageTagMutability="IMMUTABLE")
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                           "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1, "digest": DIGEST_A}, "layers": []})
    ecr.put_image(repositoryName="clip-embedding-api-serve", imageManifest=manifest, imageTag="abc1234")
    reference = images.pushed_reference(ecr, "clip-embedding-api-serve", "abc1234")
    assert images.is_pinned(reference) and reference.startswith("123456789012.dkr.ecr.us-east-1.amazonaws.com/clip-embedding-api-serve@sha256:")


def test_image_repositories_have_immutable_tags_and_the_build_role_cannot_create_others():
    template = cicd_template()
    resources = template["Resources"]
    for logical_id, name in IMAGE_REPOSITORIES.items():
        properties = resources[logical_id]["Properties"]
        assert resources[logical_id]["Type"] == "AWS::ECR::Repository" and properties["RepositoryName"] == name
        assert properties["ImageTagMutability"] == "IMMUTABLE" and properties["ImageScanningConfiguration"] == {"ScanOnPush": True}
    actions = {a for s in resources["BuildRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"] for a in s["Action"]}
    assert "ecr:CreateRepository" not in actions and "ecr:DescribeImages" in actions


def test_the_buildspec_builds_from_locked_digests_and_registers_pushed_digests():
    build = "\n".join(__import__("yaml").safe_load((REPO_ROOT / "buildspec.yml").read_text())["phases"]["build"]["commands"])
    assert "create-repository" not in build
    assert build.index("infra.images check") < build.index("docker build")
    for dockerfile, name in (("inference_code/Dockerfile", "SERVING_BASE"), ("model_build/Dockerfile", "PROCESSING_BASE")):
        assert re.search(rf"docker build -f {dockerfile} --build-arg BASE_IMAGE=\${name} ", build)
        assert re.search(rf"export {name}=\$\(\.venv/bin/python -m infra\.images ref ", build)
    for variable, repository in (("CLIP_API_SERVING_IMAGE", "clip-embedding-api-serve"), ("CLIP_API_PROCESSING_IMAGE", "clip-embedding-api-build")):
        assert re.search(rf"export {variable}=\$\(\.venv/bin/python -m infra\.images pushed {repository} \$GIT_COMMIT\) && test -n", build)
        assert build.index(f"export {variable}=") < build.index("clip-api deploy\n")
    assert "$GIT_COMMIT" in build and ":latest" not in build


def test_the_build_context_leaves_out_environments_and_the_configs_link():
    """`docker build .` sends the context: virtual environments and .git would make it gigabytes, and
    clip_core/configs is a link to ../configs that the processing image replaces with a copy."""
    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", ".venv-*", "clip_core/configs"} <= ignored
    assert "COPY configs ./clip_core/configs" in (REPO_ROOT / "model_build" / "Dockerfile").read_text()


def test_the_serving_image_copies_the_foundation_modules_the_artifacts_carry():
    """The image and every artifact's code/ hold the same clip_core modules; the tests simulate the image from the list."""
    from model_build.package import SERVING_FOUNDATION_FILES

    dockerfile = (REPO_ROOT / "inference_code" / "Dockerfile").read_text()
    line = next(line for line in dockerfile.splitlines() if line.startswith("COPY clip_core/"))
    assert line.split()[1:-1] == [f"clip_core/{name}" for name in SERVING_FOUNDATION_FILES]
