"""Running the promotion workflow on the local control plane.

The committed state machine runs in moto's Step Functions engine. moto's Lambda cannot run code,
so local mode runs the real planner and smoke-test handlers here, with their functions' current
configuration, and queues their answers for the workflow's Lambda tasks (in the order it calls
them). The new version's inference server is started before the smoke test, as SageMaker starts
a container when it creates the endpoint; afterwards servers are reconciled with the endpoints the
control plane holds: endpoints retired or rolled back lose their servers.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from clip_core.names import PLANNER_FUNCTION, REQUIRE_IMAGE_DIGEST_ENV
from local_mode.control_plane import ACCOUNT, REGION


@dataclass
class PromotionOutcome:
    package_arn: str
    status: str  # SUCCEEDED | FAILED
    action: str
    reason: str
    endpoint: str


def approval_event(package: dict) -> dict:
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "SageMaker Model Package State Change", "source": "aws.sagemaker",
        "account": ACCOUNT, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "region": REGION, "resources": [package["ModelPackageArn"]],
        "detail": {"ModelPackageGroupName": package["ModelPackageGroupName"], "ModelPackageVersion": package["ModelPackageVersion"],
                   "ModelPackageArn": package["ModelPackageArn"], "ModelApprovalStatus": "Approved", "ModelPackageStatus": "Completed"},
    }


class LocalPromoter:
    def __init__(self, session, control_plane, router, servers, state_machine_arn: str, log=print):
        self.session = session
        self.sagemaker = session.client("sagemaker")
        self.lambda_client = session.client("lambda")
        self.sfn = session.client("stepfunctions")
        self.s3 = session.client("s3")
        self.control_plane = control_plane
        self.router = router
        self.servers = servers
        self.state_machine_arn = state_machine_arn
        self.log = log

    def _function_env(self, name: str) -> dict:
        return self.lambda_client.get_function_configuration(FunctionName=name).get("Environment", {}).get("Variables", {})

    def promote(self, package_arn: str, timeout_s: float = 300) -> PromotionOutcome:
        from clip_lambdas.promotion_planner.app import ApprovalEvent, plan_for_event, settings_from_env
        from clip_lambdas.smoke_test.app import SmokeTestRequest, run_smoke_test

        package = self.sagemaker.describe_model_package(ModelPackageName=package_arn)
        event = approval_event(package)
        # Local mode serves the repository's code in-process: its packages name no pushed image, so no digest.
        planner_env = {**self._function_env(PLANNER_FUNCTION), REQUIRE_IMAGE_DIGEST_ENV: "false"}
        name = f"local-{uuid.uuid4().hex[:12]}"
        execution_arn = self.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"
        plan = plan_for_event(ApprovalEvent.model_validate(event), self.sagemaker, self.session.client("dynamodb"), settings_from_env(planner_env),
                              execution_arn, stepfunctions=self.sfn)
        self.log(f"  plan: {plan['action']}: {plan['reason']}")
        self.control_plane.queue_lambda_result(plan)
        if plan["action"] == "promote":
            try:
                server = self.servers.start(plan["endpoint_name"], plan["model_data_url"], environment=plan["container_environment"])
                self.router.routes.set(plan["endpoint_name"], server.port)
                smoke = run_smoke_test(SmokeTestRequest.from_plan(plan), self.s3, self.session.client("sagemaker-runtime")).to_dict()
            except (RuntimeError, TimeoutError) as error:
                smoke = {"passed": False, "reason": f"the endpoint's container did not start: {error}", "min_cosine": 0.0}
            self.log(f"  smoke test: {'passed' if smoke['passed'] else 'FAILED'}: {smoke['reason']}")
            self.control_plane.queue_lambda_result(smoke)
        execution = self.sfn.start_execution(stateMachineArn=self.state_machine_arn, name=name, input=json.dumps(event))
        deadline = time.monotonic() + timeout_s
        while (described := self.sfn.describe_execution(executionArn=execution["executionArn"]))["status"] == "RUNNING":
            if time.monotonic() > deadline:
                raise TimeoutError("the promotion workflow did not finish")
            time.sleep(0.25)
        self.reconcile()
        reason = plan["reason"]
        if described["status"] != "SUCCEEDED":
            failure = self.sagemaker.describe_model_package(ModelPackageName=package_arn).get("CustomerMetadataProperties", {})
            reason = f"rolled back ({failure.get('promotion_error', described.get('error', 'unknown'))}); the previous version keeps serving"
        return PromotionOutcome(package_arn, described["status"], plan["action"], reason, plan.get("endpoint_name", ""))

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
