"""`clip-api pipeline run-local`: execute a pipeline *definition* on this machine.

It walks the steps of the real definition JSON (the same one `upsert` sends to SageMaker) and
evaluates its expressions (parameters, step properties, Std:Join, Std:JsonGet, execution
variables). Each step type has one handler (LocalPipelineRunner.STEP_HANDLERS). Processing steps
run their container entrypoint and arguments as subprocesses, with /opt/ml/processing/... mapped
under a work directory: inputs are downloaded from S3 into their LocalPath and outputs uploaded
from theirs, as SageMaker does. Condition steps choose a branch, RegisterModel calls
CreateModelPackage with the resolved request, Fail stops with its message.
S3 and SageMaker are whatever endpoint boto3 is pointed at (moto in tests and local mode).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from clip_core.s3_uri import split_s3_uri

PROCESSING_ROOT = "/opt/ml/processing"
_OUTPUT_REF = re.compile(r"^Steps\.(?P<step>[^.]+)\.ProcessingOutputConfig\.Outputs\['(?P<output>[^']+)'\]\.S3Output\.S3Uri$")
_PROPERTY_FILE_REF = re.compile(r"^Steps\.(?P<step>[^.]+)\.PropertyFiles\.(?P<file>.+)$")


class PipelineFailed(RuntimeError):
    def __init__(self, step: str, message: str):
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


@dataclass
class StepRecord:
    name: str
    type: str
    status: str
    detail: str = ""


@dataclass
class LocalRunResult:
    execution_id: str
    status: str  # Succeeded | Failed
    steps: list[StepRecord] = field(default_factory=list)
    model_package_arn: str | None = None
    failure_reason: str | None = None


def json_path(document, path: str):
    """The subset of JsonPath SageMaker's JsonGet uses: dotted keys and [index]."""
    node = document
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    return node


def _compare(kind: str, left, right) -> bool:
    operators = {
        "Equals": lambda a, b: a == b,
        "GreaterThan": lambda a, b: a > b,
        "GreaterThanOrEqualTo": lambda a, b: a >= b,
        "LessThan": lambda a, b: a < b,
        "LessThanOrEqualTo": lambda a, b: a <= b,
    }
    if kind not in operators:
        raise NotImplementedError(f"condition type {kind} is not supported by the local runner")
    return operators[kind](left, right)


class LocalPipelineRunner:
    def __init__(self, definition: dict, s3, sagemaker, workdir: Path, parameters: dict | None = None,
                 pipeline_name: str = "local", execution_id: str | None = None, log=print):
        self.definition = definition
        self.s3 = s3
        self.sagemaker = sagemaker
        self.workdir = Path(workdir)
        self.pipeline_name = pipeline_name
        self.execution_id = execution_id or f"local-{time.strftime('%Y%m%d-%H%M%S')}"
        self.parameters = {p["Name"]: p.get("DefaultValue") for p in definition.get("Parameters", [])}
        unknown = set(parameters or {}) - set(self.parameters)
        if unknown:
            raise ValueError(f"unknown pipeline parameters: {sorted(unknown)}")
        self.parameters.update(parameters or {})
        self.outputs: dict[tuple[str, str], str] = {}
        self.property_files: dict[tuple[str, str], Path] = {}
        self.log = log

    # expressions ---------------------------------------------------------------------------
    def resolve(self, value):
        if isinstance(value, dict):
            if set(value) == {"Get"}:
                return self._get(value["Get"])
            if set(value) == {"Std:Join"}:
                spec = value["Std:Join"]
                return spec["On"].join(str(self.resolve(v)) for v in spec["Values"])
            if set(value) == {"Std:JsonGet"}:
                spec = value["Std:JsonGet"]
                path = self.resolve(spec["PropertyFile"])
                return json_path(json.loads(Path(path).read_text()), spec["Path"])
            return {key: self.resolve(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        return value

    def _get(self, reference: str):
        if reference.startswith("Parameters."):
            return self.parameters[reference.split(".", 1)[1]]
        if reference == "Execution.PipelineExecutionId":
            return self.execution_id
        if reference == "Execution.PipelineName":
            return self.pipeline_name
        if match := _OUTPUT_REF.match(reference):
            key = (match["step"], match["output"])
            if key not in self.outputs:
                raise RuntimeError(f"{reference} is referenced before step {match['step']} ran")
            return self.outputs[key]
        if match := _PROPERTY_FILE_REF.match(reference):
            return str(self.property_files[(match["step"], match["file"])])
        raise NotImplementedError(f"the local runner cannot resolve {reference}")

    # steps -----------------------------------------------------------------------------------
    def run(self) -> LocalRunResult:
        result = LocalRunResult(execution_id=self.execution_id, status="Executing")
        try:
            for step in self.definition["Steps"]:
                self._run_step(step, result)
            result.status = "Succeeded"
        except PipelineFailed as failure:
            result.status = "Failed"
            result.failure_reason = str(failure)
        return result

    def _run_step(self, step: dict, result: LocalRunResult) -> None:
        kind, name = step["Type"], step["Name"]
        self.log(f"  step {name} ({kind})")
        handler = self.STEP_HANDLERS.get(kind)
        if handler is None:
            raise NotImplementedError(f"step type {kind} is not supported by the local runner")
        handler(self, step, result)

    def _run_processing(self, step: dict, result: LocalRunResult) -> None:
        self._processing(step)
        result.steps.append(StepRecord(step["Name"], step["Type"], "Succeeded"))

    def _run_condition(self, step: dict, result: LocalRunResult) -> None:
        arguments = step["Arguments"]
        outcome = all(self._condition(condition) for condition in arguments["Conditions"])
        result.steps.append(StepRecord(step["Name"], step["Type"], "Succeeded", f"outcome={str(outcome).lower()}"))
        for branch_step in arguments["IfSteps" if outcome else "ElseSteps"]:
            self._run_step(branch_step, result)

    def _run_register_model(self, step: dict, result: LocalRunResult) -> None:
        request = self.resolve(step["Arguments"])
        arn = self.sagemaker.create_model_package(**request)["ModelPackageArn"]
        result.model_package_arn = arn
        result.steps.append(StepRecord(step["Name"], step["Type"], "Succeeded", arn))

    def _run_fail(self, step: dict, result: LocalRunResult) -> None:
        message = self.resolve(step["Arguments"]["ErrorMessage"])
        result.steps.append(StepRecord(step["Name"], step["Type"], "Failed", message))
        raise PipelineFailed(step["Name"], message)

    # One handler per step type: supporting another type is adding its handler here.
    STEP_HANDLERS: dict[str, Callable[[LocalPipelineRunner, dict, LocalRunResult], None]] = {
        "Processing": _run_processing,
        "Condition": _run_condition,
        "RegisterModel": _run_register_model,
        "Fail": _run_fail,
    }

    def _condition(self, condition: dict) -> bool:
        kind = condition["Type"]
        if kind == "Not":
            return not self._condition(condition["Expression"])
        if kind == "Or":
            return any(self._condition(c) for c in condition["Conditions"])
        return _compare(kind, self.resolve(condition["LeftValue"]), self.resolve(condition["RightValue"]))

    def _local(self, container_path: str, root: Path) -> Path:
        return root / container_path.lstrip("/")

    def _map_argument(self, value, root: Path):
        value = self.resolve(value)
        if isinstance(value, str) and value.startswith(PROCESSING_ROOT):
            return str(self._local(value, root))
        return str(value)

    def _processing(self, step: dict) -> None:
        name, arguments = step["Name"], step["Arguments"]
        root = self.workdir / self.execution_id / name
        for item in arguments.get("ProcessingInputs", []):
            s3_input = item["S3Input"]
            self._download(self.resolve(s3_input["S3Uri"]), self._local(s3_input["LocalPath"], root))
        outputs = arguments.get("ProcessingOutputConfig", {}).get("Outputs", [])
        for item in outputs:
            self._local(item["S3Output"]["LocalPath"], root).mkdir(parents=True, exist_ok=True)
        app = arguments["AppSpecification"]
        entrypoint = [sys.executable if part in ("python3", "python") else self._map_argument(part, root) for part in app["ContainerEntrypoint"]]
        command = entrypoint + [self._map_argument(part, root) for part in app.get("ContainerArguments", [])]
        completed = subprocess.run(command, capture_output=True, text=True)
        (root / "job.log").write_text(completed.stdout + completed.stderr)
        if completed.returncode != 0:
            raise PipelineFailed(name, f"processing job exited with {completed.returncode}: {completed.stderr.strip()[-800:]}")
        for item in outputs:
            s3_output = item["S3Output"]
            uri = self.resolve(s3_output["S3Uri"])
            self._upload(self._local(s3_output["LocalPath"], root), uri)
            self.outputs[(name, item["OutputName"])] = uri
        for property_file in step.get("PropertyFiles", []):
            output = next(o for o in outputs if o["OutputName"] == property_file["OutputName"])
            path = self._local(output["S3Output"]["LocalPath"], root) / property_file["FilePath"]
            self.property_files[(name, property_file["PropertyFileName"])] = path

    def _download(self, uri: str, target: Path) -> None:
        bucket, key = split_s3_uri(uri)
        target.mkdir(parents=True, exist_ok=True)
        found = False
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            for obj in page.get("Contents", []):
                relative = obj["Key"][len(key) :].lstrip("/") or Path(obj["Key"]).name
                destination = target / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(bucket, obj["Key"], str(destination))
                found = True
        if not found:
            raise PipelineFailed("input", f"nothing found at {uri}")

    def _upload(self, source: Path, uri: str) -> None:
        bucket, prefix = split_s3_uri(uri)
        for path in sorted(source.rglob("*")):
            if path.is_file():
                self.s3.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(source).as_posix()}")
