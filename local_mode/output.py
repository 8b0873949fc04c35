"""What `clip-api local` prints: the stages, the URLs and the results; library noise only with --verbose.

Two sources of noise, two remedies:

- the libraries local mode drives (sagemaker, moto) warn and log about things a user of
  the demo cannot act on: deprecations, SDK config files not found, CloudFormation resources moto
  skips (local mode does their part itself), a PipelineSession that starts no jobs (local mode runs
  the steps). `quiet_libraries()` filters exactly those warnings, by module and category, and lowers
  those loggers; it must run before the libraries are imported (sagemaker logs and warns on import).
- the API Lambda runs in-process behind the local API Gateway, and a Lambda writes its log and its
  EMF metrics to stdout (CloudWatch Logs in AWS). `thread_stdout_to()` sends what the handler writes,
  from the gateway's thread only, to a log file in the workdir; the stages printed by the main
  thread meanwhile stay on the terminal. The deployed Lambda is unchanged.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from contextlib import contextmanager
from typing import IO, Iterator

# (module regex, category, message regex): the warnings `make demo` printed before, each with its source.
QUIET_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    # the "v2 is on path of deprecation" notice, in case SAGEMAKER_SUPPRESS_V2_WARNING is not honoured
    (r"sagemaker(\.|$)", Warning, r"You are using the SageMaker Python SDK v2"),
    # "Tried to parse AWS::... but it's not supported by moto's CloudFormation implementation"
    (r"moto\.cloudformation(\.|$)", UserWarning, r"Tried to parse AWS::"),
    # "Running within a PipelineSession, there will be No Wait, No Logs, and No Job being started."
    (r"sagemaker\.workflow(\.|$)", UserWarning, r"Running within a PipelineSession"),
)
# Loggers that narrate at INFO what is not the user's business: sagemaker.config ("Not applying SDK
# defaults from location ...") sets itself to INFO on import unless a level is already set.
QUIET_LOGGERS = {"sagemaker.config": logging.WARNING}
# Always lowered, --verbose or not (as before it existed): per-request access logs, the fallbacks moto
# narrates, the SDK's definition clean-ups.
BASE_LOGGERS = {"werkzeug": logging.WARNING, "botocore": logging.WARNING, "boto3": logging.WARNING, "urllib3": logging.WARNING,
                "moto": logging.ERROR, "sagemaker": logging.ERROR}


def quiet_libraries() -> None:
    """Silence the library noise listed above, and only that (any other warning still shows)."""
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")  # sagemaker.deprecations reads it when warning
    for module, category, message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


def configure(verbose: bool) -> None:
    """Local mode's output: the base logger levels always; the library noise too unless `verbose`."""
    for name, level in BASE_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    if not verbose:
        quiet_libraries()


class _ThreadRoutedStdout:
    """sys.stdout that sends a thread's writes to that thread's target, everyone else's to the terminal."""

    def __init__(self, default: IO[str]):
        self.default = default
        self.local = threading.local()

    def _stream(self) -> IO[str]:
        return getattr(self.local, "target", None) or self.default

    def write(self, text: str) -> int:
        return self._stream().write(text)

    def writelines(self, lines) -> None:
        self._stream().writelines(lines)

    def flush(self) -> None:
        self._stream().flush()

    def __getattr__(self, name: str):  # encoding, isatty, fileno...: the terminal's
        return getattr(self.default, name)


@contextmanager
def thread_stdout_to(target: IO[str] | None) -> Iterator[None]:
    """Within the block, what this thread writes to sys.stdout goes to `target` (None: unchanged)."""
    if target is None:
        yield
        return
    router = sys.stdout if isinstance(sys.stdout, _ThreadRoutedStdout) else _ThreadRoutedStdout(sys.stdout)
    sys.stdout = router
    router.local.target = target
    try:
        yield
    finally:
        router.local.target = None
        target.flush()
