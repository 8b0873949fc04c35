"""s3://bucket/key URIs, parsed in one place (pipelines, weights, Lambdas and local mode use it)."""

from __future__ import annotations


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key
