"""Worst-case tokenisation time for texts the request limits admit (issue 13), ours vs the reference.

    .venv/bin/python tests/inference_code/bench_tokenizer.py [--reference]

Target: the worst single text under 50 ms and a full worst batch (32 texts of 10,000 characters)
under 2 s on one core, so one hostile request cannot hold the inference thread for long. With
--reference it runs open_clip's quadratic BPE without early stopping (what served before).
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from inference_code.tokenizer import ClipTokenizer  # noqa: E402
from tests.inference_code.test_tokenizer import worst_case_texts  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reference", action="store_true", help="quadratic BPE, no early stop (before the fix)")
    args = parser.parse_args()
    tokenizer = ClipTokenizer()
    if args.reference:
        tokenizer.heap_bpe_exact = False
        encode = tokenizer.encode
        tokenizer.encode = lambda text, max_tokens=None: encode(text)
    worst = 0.0
    for name, text in worst_case_texts().items():
        started = time.perf_counter()
        tokenizer([text])
        elapsed = time.perf_counter() - started
        worst = max(worst, elapsed)
        print(f"{name:32s} {elapsed * 1000:9.1f} ms", flush=True)
    rng = random.Random(5)
    batch = ["".join(rng.choice(string.ascii_lowercase) for _ in range(10_000)) for _ in range(32)]
    started = time.perf_counter()
    tokenizer(batch)
    batch_s = time.perf_counter() - started
    print(f"worst single text {worst * 1000:.1f} ms (target < 50 ms); batch of 32 random 10,000-letter words {batch_s:.2f} s (target < 2 s)")


if __name__ == "__main__":
    main()
