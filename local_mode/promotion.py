"""Running the promotion workflow on moto: the one driver local mode and the promotion tests share.

The committed state machine runs in moto's Step Functions engine. moto's Lambda cannot run code,
so the real planner and smoke-test handlers run here and their answers are queued for the
workflow's Lambda tasks, in the order it calls them (`PromotionDriver`). Local mode
(`LocalPromoter`) gives the planner its function's current configuration, starts the new version's
inference server before the smoke test, as SageMaker starts a container when it creates the
endpoint, and afterwards reconciles servers with the endpoints the control plane holds: endpoints
retired or rolled back lose their servers.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from clip_core.names import PLANNER_FUNCTION, REQUIRE_IMAGE_DIGEST_ENV
from local_mode.control_plane import ACCOUNT, REGION


@dataclass
class PromotionOutcome:
    package_arn: str
    status: str  # SUCCEEDED | FAILED
    action: str
    reason: str
    endpoint: str


@dataclass
class WorkflowRun:
    """How one execution of the workflow ended."""

    execution_arn: str
    status: str  # SUCCEEDED | FAILED | TIMED_OUT | ABORTED
    plan: dict
    output: object
    error: str | None


def set_approval(sagemaker, arn: str, status: str, metadata: dict | None = None) -> None:
    """Change a package's approval status (and its metadata, in the same call), as a person does in the Model Registry;
    a moment after its registration: the planner checks that the approval is a later change, and moto counts milliseconds."""
    time.sleep(0.01)
    sagemaker.update_model_package(ModelPackageArn=arn, ModelApprovalStatus=status, **({"CustomerMetadataProperties": metadata} if metadata else {}))


def approval_event(package: dict) -> dict:
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "SageMaker Model Package State Change", "source": "aws.sagemaker",
        "account": ACCOUNT, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "region": REGION, "resources": [package["ModelPackageArn"]],
        "detail": {"ModelPackageGroupName": package["ModelPackageGroupName"], "ModelPackageVersion": package["ModelPackageVersion"],
                   "ModelPackageArn": package["ModelPackageArn"], "ModelApprovalStatus": "Approved", "ModelPackageStatus": "Completed"},
    }


class PromotionDriver:
    """Plan with the real planner, queue the Lambda tasks' answers, run the workflow to its end.

    `queue_result(answer)`: queues the next answer of moto's Lambda (in-process or over the control plane's HTTP API);
    `planner_env()`: the planner function's environment, read at each plan."""

    def __init__(self, sagemaker, dynamodb, stepfunctions, state_machine_arn: str, queue_result: Callable[[dict], None],
                 planner_env: Callable[[], dict], log=lambda _line: None, poll_s: float = 0.2):
        self.sagemaker, self.dynamodb, self.sfn = sagemaker, dynamodb, stepfunctions
        self.state_machine_arn = state_machine_arn
        self.queue_result = queue_result
        self.planner_env = planner_env
        self.log = log
        self.poll_s = poll_s

    def execution_arn(self, name: str) -> str:
        return self.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"

    def plan(self, event: dict, execution_name: str) -> dict:
        from clip_lambdas.promotion_planner.app import ApprovalEvent, plan_for_event, settings_from_env

        return plan_for_event(ApprovalEvent.model_validate(event), self.sagemaker, self.dynamodb, settings_from_env(self.planner_env()),
                              self.execution_arn(execution_name), stepfunctions=self.sfn)

    def prepare(self, event: dict, name: str, smoke_test: Callable[[dict], dict], answer=lambda _task, result: result) -> dict:
        """Plan, and queue what the Lambda tasks answer: the plan, then (when the plan task's answer promotes) the smoke test's.
        `answer(task, result)` ("plan" or "smoke"): what the task answers instead of `result` (fault injection)."""
        plan = self.plan(event, name)
        self.log(f"  plan: {plan['action']}: {plan['reason']}")
        planned = answer("plan", plan)
        self.queue_result(planned)
        if planned.get("action") == "promote":
            smoke = smoke_test(plan)
            self.log(f"  smoke test: {'passed' if smoke.get('passed') else 'FAILED'}: {smoke.get('reason')}")
            self.queue_result(answer("smoke", smoke))
        return plan

    def run(self, event: dict, name: str, plan: dict, during=None, started=None, timeout_s: float = 300) -> WorkflowRun:
        """Start execution `name` (its answers already queued) and poll it to its end; `started()` runs once it is started,
        `during()` on every poll while it runs."""
        execution_arn = self.sfn.start_execution(stateMachineArn=self.state_machine_arn, name=name, input=json.dumps(event))["executionArn"]
        if started is not None:
            started()
        deadline = time.monotonic() + timeout_s
        while (described := self.sfn.describe_execution(executionArn=execution_arn))["status"] == "RUNNING":
            if during is not None:
                during()
            if time.monotonic() > deadline:
                raise TimeoutError("the promotion workflow did not finish")
            time.sleep(self.poll_s)
        return WorkflowRun(execution_arn, described["status"], plan, json.loads(described.get("output") or "null"), described.get("error"))

    def history(self, execution_arn: str) -> list[str]:
        """The names of the states the execution entered, in order."""
        events = self.sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
        return [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]


class LocalPromoter:
    def __init__(self, session, control_plane, router, servers, state_machine_arn: str, log=print):
        self.session = session
        self.sagemaker = session.client("sagemaker")
        self.lambda_client = session.client("lambda")
        self.s3 = session.client("s3")
        self.router = router
        self.servers = servers
        self.log = log
        self.driver = PromotionDriver(self.sagemaker, session.client("dynamodb"), session.client("stepfunctions"), state_machine_arn,
                                      control_plane.queue_lambda_result, self._planner_env, log, poll_s=0.25)

    def _planner_env(self) -> dict:
        variables = self.lambda_client.get_function_configuration(FunctionName=PLANNER_FUNCTION).get("Environment", {}).get("Variables", {})
        # Local mode serves the repository's code in-process: its packages name no pushed image, so no digest.
        return {**variables, REQUIRE_IMAGE_DIGEST_ENV: "false"}

    def _smoke_test(self, plan: dict) -> dict:
        """Start the new endpoint's server (SageMaker starts its container), then the real smoke test through the runtime router."""
        from clip_lambdas.smoke_test.app import SmokeTestRequest, run_smoke_test

        try:
            server = self.servers.start(plan["endpoint_name"], plan["model_data_url"], environment=plan["container_environment"])
            self.router.routes.set(plan["endpoint_name"], server.port)
            return run_smoke_test(SmokeTestRequest.from_plan(plan), self.s3, self.session.client("sagemaker-runtime")).to_dict()
        except (RuntimeError, TimeoutError) as error:
            return {"passed": False, "reason": f"the endpoint's container did not start: {error}", "min_cosine": 0.0}

    def promote(self, package_arn: str, timeout_s: float = 300) -> PromotionOutcome:
        event = approval_event(self.sagemaker.describe_model_package(ModelPackageName=package_arn))
        name = f"local-{uuid.uuid4().hex[:12]}"
        plan = self.driver.prepare(event, name, self._smoke_test)
        run = self.driver.run(event, name, plan, timeout_s=timeout_s)
        self.reconcile()
        reason = plan["reason"]
        if run.status != "SUCCEEDED":
            failure = self.sagemaker.describe_model_package(ModelPackageName=package_arn).get("CustomerMetadataProperties", {})
            reason = f"rolled back ({failure.get('promotion_error', run.error or 'unknown')}); the previous version keeps serving"
        return PromotionOutcome(package_arn, run.status, plan["action"], reason, plan.get("endpoint_name", ""))

    def reconcile(self) -> None:
        """Inference servers for exactly the endpoints the control plane holds InService."""
        live = {e["EndpointName"] for e in self.sagemaker.list_endpoints()["Endpoints"] if e["EndpointStatus"] == "InService"}
        for endpoint in live - set(self.servers.servers):
            config = self.sagemaker.describe_endpoint_config(EndpointConfigName=self.sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"])
            model = self.sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
            container = model["PrimaryContainer"]
            self.router.routes.set(endpoint, self.servers.start(endpoint, container["ModelDataUrl"], environment=container.get("Environment", {})).port)
        for endpoint in set(self.servers.servers) - live:
            self.router.routes.remove(endpoint)
            self.servers.stop(endpoint)
