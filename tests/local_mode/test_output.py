"""local_mode/output.py: `clip-api local` prints the stages and results; library noise and the in-process
Lambda's stdout (its EMF metrics) only with --verbose."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap
import threading
import types
import warnings

import pytest

from local_mode import output
from tests.conftest import REPO_ROOT

# What each library warned during `make demo`, attributed to the module that warned.
NOISE = [
    ("sagemaker", DeprecationWarning, "You are using the SageMaker Python SDK v2, which is on path of deprecation."),
    ("moto.cloudformation.parsing", UserWarning, "Tried to parse AWS::CloudWatch::Alarm but it's not supported by moto's CloudFormation"),
    ("sagemaker.workflow.pipeline_context", UserWarning, "Running within a PipelineSession, there will be No Wait, No Logs, and No Job"),
]
# Warnings that must still show: the same words from another module, another warning from the same module.
KEPT = [
    ("model_build.weights", UserWarning, "Tried to parse AWS::Thing but it's not supported by moto's CloudFormation implementation"),
    ("moto.cloudformation.parsing", UserWarning, "Something else went wrong"),
    ("sagemaker.workflow.steps", RuntimeWarning, "Running within a PipelineSession, there will be No Wait"),
]


@pytest.fixture
def restore_loggers(monkeypatch):
    monkeypatch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "")
    monkeypatch.delenv("SAGEMAKER_SUPPRESS_V2_WARNING")  # undone at teardown, whatever the code under test set
    levels = {name: logging.getLogger(name).level for name in [*output.QUIET_LOGGERS, *output.BASE_LOGGERS]}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _emit(cases) -> None:
    for module, category, message in cases:
        warnings.warn_explicit(message, category, filename=module.replace(".", "/") + ".py", lineno=1, module=module)


def test_quiet_filters_the_listed_noise_and_nothing_else(restore_loggers):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        output.configure(verbose=False)
        _emit(NOISE + KEPT)
    assert [str(w.message) for w in caught] == [message for _, _, message in KEPT]
    assert not logging.getLogger("sagemaker.config").isEnabledFor(logging.INFO)
    assert os.environ["SAGEMAKER_SUPPRESS_V2_WARNING"] == "1"


def test_verbose_filters_nothing(restore_loggers):
    config_level = logging.getLogger("sagemaker.config").level  # the SDK sets INFO on import unless a level is set
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        output.configure(verbose=True)
        _emit(NOISE)
    assert len(caught) == len(NOISE)
    assert "SAGEMAKER_SUPPRESS_V2_WARNING" not in os.environ
    assert logging.getLogger("sagemaker.config").level == config_level


SCRIPT = textwrap.dedent("""
    import json, sys
    from local_mode.output import configure
    configure(verbose=sys.argv[1] == "verbose")
    import sagemaker.workflow.pipeline_context  # warns and logs as it is imported
    import boto3
    from moto import mock_aws
    with mock_aws():
        template = {"Resources": {"Alarm": {"Type": "AWS::CloudWatch::Alarm", "Properties": {}}}}
        boto3.client("cloudformation", region_name="us-east-1").create_stack(StackName="s", TemplateBody=json.dumps(template))
    print("done")
""")


def test_the_real_libraries_are_quiet_unless_verbose():
    """The libraries as installed: quiet prints nothing of theirs; --verbose shows what they say."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAGEMAKER_", "PYTHONWARNINGS"))}
    env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})

    def run(mode: str) -> str:
        result = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout + result.stderr

    assert run("quiet") == "done\n"
    verbose = run("verbose")
    for noise in ("sagemaker.config INFO", "SDK v2", "AWS::CloudWatch::Alarm"):
        assert noise in verbose


def test_thread_stdout_goes_to_its_target_while_other_threads_print(capsys):
    target = io.StringIO()
    inside, printed = threading.Event(), threading.Event()

    def lambda_thread() -> None:
        with output.thread_stdout_to(target):
            print('{"_aws": "an EMF line"}')
            inside.set()
            printed.wait(10)
            print("the handler's log")
        print("after the block")

    thread = threading.Thread(target=lambda_thread)
    thread.start()
    inside.wait(10)
    print("6. example requests")  # the main thread, while the other is inside its block
    printed.set()
    thread.join(10)
    out = capsys.readouterr().out
    assert target.getvalue() == '{"_aws": "an EMF line"}\nthe handler\'s log\n'
    assert out == "6. example requests\nafter the block\n"


class _Functions:
    def get_function_configuration(self, FunctionName):  # noqa: N803 - boto3's spelling
        return {"Environment": {"Variables": {}}}


@pytest.mark.parametrize("verbose", [False, True])
def test_gateway_sends_the_lambdas_stdout_to_its_log(verbose, monkeypatch, tmp_path, capsys):
    from clip_core.model_config import load_model_config
    from local_mode.api_gateway import LocalApiGateway

    def handler(event, context):
        print('{"_aws":{"CloudWatchMetrics":[]},"Errors":[1.0]}')
        return {"statusCode": 400, "body": "{}"}

    monkeypatch.setitem(sys.modules, "clip_lambdas.api.app", types.SimpleNamespace(handler=handler))
    log = tmp_path / "api-lambda.log"
    gateway = LocalApiGateway([load_model_config("clip-tiny")], _Functions(), "fn-{model_id}", port=0,
                              lambda_log=None if verbose else log).start()
    try:
        assert gateway.invoke("POST", "/tiny", {}, '{"text": ""}')["statusCode"] == 400
        print("main thread")
    finally:
        gateway.stop()
    out = capsys.readouterr().out
    if verbose:
        assert out == '{"_aws":{"CloudWatchMetrics":[]},"Errors":[1.0]}\nmain thread\n' and not log.exists()
    else:
        assert out == "main thread\n"
        assert log.read_text() == '{"_aws":{"CloudWatchMetrics":[]},"Errors":[1.0]}\n'
