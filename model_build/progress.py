"""A progress display for the long build steps: one line per step on a terminal, silent otherwise."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator, TextIO


class Progress:
    def __init__(self, total_steps: int, stream: TextIO | None = None, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = total_steps
        self.done = 0

    @contextlib.contextmanager
    def step(self, description: str) -> Iterator[None]:
        self.done += 1
        prefix = f"[{self.done}/{self.total}] {description}"
        if self.enabled:
            self.stream.write(f"{prefix} ...")
            self.stream.flush()
        started = time.perf_counter()
        try:
            yield
        except BaseException:
            if self.enabled:
                self.stream.write(" failed\n")
            raise
        if self.enabled:
            self.stream.write(f"\r{prefix} done ({time.perf_counter() - started:.1f} s)\n")
            self.stream.flush()
