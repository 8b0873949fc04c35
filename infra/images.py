"""Container images by digest: the base images' lock, and the digests of the images CodeBuild pushes.

  infra/base-images.json  each Dockerfile's base image: `image` (a tag, for people) and `digest`
                          (what is built from). A digest is recorded by `lock`, run where the
                          registries answer (CodeBuild, or a machine logged in to them); nobody types one.

  python -m infra.images lock [--region R]     resolve each tag's digest and write it into the lock
  python -m infra.images check [--region R]    fail if an entry has no digest, or its tag now points elsewhere
  python -m infra.images ref NAME [--region R] print `image@sha256:...` for `docker build --build-arg BASE_IMAGE=`
  python -m infra.images pushed REPOSITORY TAG print `registry/repository@sha256:...` of a pushed image (ECR)

The Dockerfiles take BASE_IMAGE without a default, so an image cannot be built from a bare tag by
accident; the model package registers the pushed image by digest, and the promotion planner refuses
a package whose image is a tag (promotion/plan.py). The ECR repositories have immutable tags (cicd.yaml).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

LOCK_PATH = Path(__file__).with_name("base-images.json")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
PINNED_REFERENCE = re.compile(r"[^@\s]+@sha256:[0-9a-f]{64}")


class ImageLockError(RuntimeError):
    pass


def load_lock(path: Path = LOCK_PATH) -> dict[str, dict]:
    return json.loads(path.read_text())["images"]


def write_lock(images: dict[str, dict], path: Path = LOCK_PATH) -> None:
    data = json.loads(path.read_text())
    data["images"] = images
    path.write_text(json.dumps(data, indent=2) + "\n")


def image_for(entry: dict, region: str) -> str:
    """The entry's tag reference, its `{region}` filled in (AWS's DLC registry is regional; its digests are not)."""
    return entry["image"].replace("{region}", region)


def pinned_reference(name: str, region: str = "us-east-1", lock: dict | None = None) -> str:
    entry = (load_lock() if lock is None else lock)[name]
    digest = entry.get("digest") or ""
    if not DIGEST.fullmatch(digest):
        raise ImageLockError(f"base image {name!r} ({entry['image']}) has no digest in {LOCK_PATH.name}: run `python -m infra.images lock` "
                             "where the registry answers, review and commit the lock")
    return f"{image_for(entry, region).split('@')[0]}@{digest}"


def is_pinned(reference: str) -> bool:
    return bool(PINNED_REFERENCE.fullmatch(reference))


Run = Callable[[list[str]], str]


def _run(command: list[str]) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def resolve_digest(reference: str, run: Run = _run) -> str:
    """The digest the tag points at now (the index's digest for a multi-platform image), without pulling it."""
    out = run(["docker", "buildx", "imagetools", "inspect", reference, "--format", "{{json .Manifest}}"])
    digest = json.loads(out).get("digest", "")
    if not DIGEST.fullmatch(digest):
        raise ImageLockError(f"no digest for {reference} in `docker buildx imagetools inspect`'s answer: {out[:200]!r}")
    return digest


def check(region: str, run: Run = _run, lock: dict | None = None) -> list[str]:
    """Problems: entries without a digest, and tags that moved away from the locked digest."""
    lock = load_lock() if lock is None else lock
    problems = []
    for name, entry in sorted(lock.items()):
        try:
            pinned_reference(name, region, lock)
        except ImageLockError as error:
            problems.append(str(error))
            continue
        found = resolve_digest(image_for(entry, region), run)
        if found != entry["digest"]:
            problems.append(f"base image {name!r}: {image_for(entry, region)} now points at {found}, the lock at {entry['digest']}: "
                            "review the new image, then `python -m infra.images lock` and commit")
    return problems


def lock(region: str, run: Run = _run, path: Path = LOCK_PATH) -> dict[str, dict]:
    images = load_lock(path)
    for entry in images.values():
        entry["digest"] = resolve_digest(image_for(entry, region), run)
    write_lock(images, path)
    return images


def pushed_reference(ecr, repository: str, tag: str) -> str:
    """`registry/repository@sha256:...` of the image pushed under `tag` (what the model package registers)."""
    repo = ecr.describe_repositories(repositoryNames=[repository])["repositories"][0]
    details = ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])["imageDetails"]
    digest = details[0]["imageDigest"] if details else ""
    if not DIGEST.fullmatch(digest):
        raise ImageLockError(f"{repository}:{tag} has no digest in ECR")
    return f"{repo['repositoryUri']}@{digest}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.images", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("lock", "check", "ref"):
        command = sub.add_parser(name)
        command.add_argument("--region", default="us-east-1")
        if name == "ref":
            command.add_argument("name")
    pushed = sub.add_parser("pushed")
    pushed.add_argument("repository")
    pushed.add_argument("tag")
    args = parser.parse_args(argv)
    try:
        if args.command == "ref":
            print(pinned_reference(args.name, args.region))
        elif args.command == "check":
            if problems := check(args.region):
                print("\n".join(problems), file=sys.stderr)
                return 1
            print("base images: every tag still points at its locked digest")
        elif args.command == "lock":
            for name, entry in lock(args.region).items():
                print(f"{name}: {entry['image']}@{entry['digest']}")
        else:
            import boto3

            print(pushed_reference(boto3.client("ecr"), args.repository, args.tag))
    except ImageLockError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
