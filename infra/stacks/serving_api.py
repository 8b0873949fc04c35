"""The serving stack's public API: one API Lambda per model with its alarms, and the REST API in front of them
(a route per model and the OpenAI-style /v1/embeddings, API keys, a usage plan, the stage and its alarms)."""

from __future__ import annotations

import hashlib
import json

from clip_core.model_config import ModelConfig
from clip_core.names import CORS_ALLOW_ORIGIN_ENV, MODEL_ID_ENV, POINTER_TABLE_ENV, PROJECT, SERVED_MODELS_ENV, model_resource_name
from infra.stacks.cfn import arn, checkov_skip, encrypted_log_group, getatt, model_logical_id, ref
from infra.stacks.iam import LOGS_STATEMENT, XRAY_STATEMENT, allow, policy, role
from infra.stacks.serving_arns import clip_endpoints_arn, pointer_table_arn, use_the_key
from infra.stacks.serving_lambda import lambda_function

STAGE = "prod"
API_KEYS_GUARD = "access is controlled by API keys with a usage plan (throttle and quota), as the public contract specifies"
NOT_CACHED = "embeddings of arbitrary inputs are not worth caching at the gateway: responses are large and rarely repeat"
ACCESS_LOG_FORMAT = ('{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","apiKeyId":"$context.identity.apiKeyId",'
                     '"path":"$context.path","status":"$context.status","latency":"$context.responseLatency"}')


def api_functions(served: list[ModelConfig]) -> dict:
    """The resources, by logical id: the API Lambdas' role, and each served model's function with its alarms."""
    resources = {"ApiFunctionRole": role("lambda.amazonaws.com", [policy("invoke-endpoints", [
        allow(["sagemaker:InvokeEndpoint"], clip_endpoints_arn()),
        allow(["dynamodb:GetItem"], pointer_table_arn()),
        use_the_key(), LOGS_STATEMENT, XRAY_STATEMENT,
    ])], "API Lambdas: invoke the clip endpoints")}
    for model in served:
        name, function = model_resource_name(model.model_id), f"{model_logical_id(model)}ApiFunction"
        environment = {MODEL_ID_ENV: model.model_id, POINTER_TABLE_ENV: ref("ServingPointerTable"),
                       SERVED_MODELS_ENV: ",".join(m.model_id for m in served), CORS_ALLOW_ORIGIN_ENV: ref("CorsAllowOrigin"),
                       "POWERTOOLS_SERVICE_NAME": name}
        resources[function] = lambda_function(name, f"{model.description}: public API", "clip_lambdas.api.app.handler", "ApiFunctionRole",
                                              environment, concurrency=model.api.reserved_concurrency)
        for metric in ("Errors", "Throttles"):
            resources[f"{function}{metric}"] = {
                "Type": "AWS::CloudWatch::Alarm",
                "Properties": {"AlarmDescription": f"{name}: Lambda {metric.lower()}", "Namespace": "AWS/Lambda", "MetricName": metric,
                               "Dimensions": [{"Name": "FunctionName", "Value": ref(function)}], "Statistic": "Sum",
                               "Period": 60, "EvaluationPeriods": 1, "Threshold": 1, "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                               "TreatMissingData": "notBreaching", "AlarmActions": [ref("Topic")]},
            }
    return resources


def rest_api(served: list[ModelConfig]) -> dict:
    """The resources, by logical id, of the REST API over the served models' API Lambdas."""
    resources = {
        "Api": {"Type": "AWS::ApiGateway::RestApi", "Properties": {
            "Name": PROJECT, "Description": "CLIP embeddings at stable URLs", "EndpointConfiguration": {"Types": ["REGIONAL"]},
            "ApiKeySourceType": "HEADER", "MinimumCompressionSize": 1024}},
        "V1Resource": {"Type": "AWS::ApiGateway::Resource",
                       "Properties": {"RestApiId": ref("Api"), "ParentId": getatt("Api", "RootResourceId"), "PathPart": "v1"}},
    }
    routes = [(f"{model_logical_id(m)}Route", m.route, f"{model_logical_id(m)}ApiFunction", getatt("Api", "RootResourceId"))
              for m in served]
    routes.append(("OpenAiRoute", "embeddings", f"{model_logical_id(served[0])}ApiFunction", ref("V1Resource")))
    for name, path, function, parent in routes:
        resources.update(_route(name, path, function, parent))
    deployments = _deployments(resources, [name for name, *_ in routes])
    resources.update(deployments)
    resources["ApiAccessLogs"] = encrypted_log_group(ref("KmsKeyArn"))
    resources["ApiStage"] = _stage(*deployments)
    resources.update(_keys_and_usage_plan())
    for metric, threshold, statistic in (("5XXError", 1, "Sum"), ("Latency", 10000, "Average")):
        resources[f"Api{metric}Alarm"] = {"Type": "AWS::CloudWatch::Alarm", "Properties": {
            "AlarmDescription": f"{PROJECT} API {metric}", "Namespace": "AWS/ApiGateway", "MetricName": metric,
            "Dimensions": [{"Name": "ApiName", "Value": PROJECT}, {"Name": "Stage", "Value": STAGE}], "Statistic": statistic, "Period": 60,
            "EvaluationPeriods": 5, "Threshold": threshold, "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching", "AlarmActions": [ref("Topic")]}}
    return resources


def _route(name: str, path: str, function: str, parent: dict) -> dict:
    """The path `path` under `parent`, its POST (API key required) and CORS preflight methods, proxied to `function`."""
    resources = {f"{name}Resource": {"Type": "AWS::ApiGateway::Resource",
                                     "Properties": {"RestApiId": ref("Api"), "ParentId": parent, "PathPart": path}}}
    # The integration's ARN names the integrated service where an ARN names the account.
    invocations = arn("apigateway", f"path/2015-03-31/functions/${{{function}.Arn}}/invocations", account="lambda")
    for verb, key_required in (("POST", True), ("OPTIONS", False)):  # OPTIONS: CORS preflight carries no API key
        proxy = {"Type": "AWS_PROXY", "IntegrationHttpMethod": "POST", "TimeoutInMillis": 29000, "Uri": invocations}
        properties = {"RestApiId": ref("Api"), "ResourceId": ref(f"{name}Resource"), "HttpMethod": verb, "ApiKeyRequired": key_required,
                      "AuthorizationType": "NONE", "Integration": proxy}
        method = checkov_skip({"Type": "AWS::ApiGateway::Method", "Properties": properties}, ("CKV_AWS_59", API_KEYS_GUARD))
        if verb == "OPTIONS":
            # Without CORS (CorsAllowOrigin empty) there is no OPTIONS method: an unauthenticated request never reaches the function.
            method["Condition"] = "HasCors"
        resources[f"{name}{verb.capitalize()}"] = method
    resources[f"{name}Permission"] = {"Type": "AWS::Lambda::Permission", "Properties": {
        "Action": "lambda:InvokeFunction", "FunctionName": ref(function), "Principal": "apigateway.amazonaws.com",
        "SourceArn": arn("execute-api", "${Api}/*/*/*")}}
    return resources


def _deployments(resources: dict, routes: list[str]) -> dict:
    """A Deployment is a snapshot: CloudFormation makes a new one only for a new logical id. Naming it after
    the routes and methods it snapshots makes every change to them reach the stage.
    One Deployment per CORS setting, since the OPTIONS methods exist only with CORS: the one without CORS first."""
    snapshotted = ("AWS::ApiGateway::Resource", "AWS::ApiGateway::Method")
    snapshot = {name: resources[name] for name in sorted(resources) if resources[name]["Type"] in snapshotted}
    digest = hashlib.sha256(json.dumps(snapshot, sort_keys=True).encode()).hexdigest()[:12]
    posts, preflights = [f"{route}Post" for route in routes], [f"{route}Options" for route in routes]
    return {
        f"ApiDeployment{digest}": {"Type": "AWS::ApiGateway::Deployment", "Condition": "NoCors", "DependsOn": posts,
                                   "Properties": {"RestApiId": ref("Api")}},
        f"ApiDeploymentWithCors{digest}": {"Type": "AWS::ApiGateway::Deployment", "Condition": "HasCors", "DependsOn": posts + preflights,
                                           "Properties": {"RestApiId": ref("Api")}},
    }


def _stage(deployment: str, cors_deployment: str) -> dict:
    """The stage serves the Deployment of the CORS setting."""
    every_method = {"ResourcePath": "/*", "HttpMethod": "*", "MetricsEnabled": True, "LoggingLevel": "ERROR", "DataTraceEnabled": False,
                    "ThrottlingRateLimit": ref("ApiRateLimit"), "ThrottlingBurstLimit": ref("ApiBurstLimit")}
    return checkov_skip({"Type": "AWS::ApiGateway::Stage", "Properties": {
        "RestApiId": ref("Api"), "DeploymentId": {"Fn::If": ["HasCors", ref(cors_deployment), ref(deployment)]}, "StageName": STAGE,
        "TracingEnabled": True,
        "AccessLogSetting": {"DestinationArn": getatt("ApiAccessLogs", "Arn"), "Format": ACCESS_LOG_FORMAT},
        "MethodSettings": [every_method],
    }}, ("CKV_AWS_120", NOT_CACHED))


def _keys_and_usage_plan() -> dict:
    return {
        "ApiKey": {"Type": "AWS::ApiGateway::ApiKey", "DependsOn": ["ApiStage"], "Properties": {
            "Enabled": True, "Description": "default consumer key (create one per consumer)",
            "StageKeys": [{"RestApiId": ref("Api"), "StageName": STAGE}]}},
        "UsagePlan": {"Type": "AWS::ApiGateway::UsagePlan", "DependsOn": ["ApiStage"], "Properties": {
            "UsagePlanName": f"{PROJECT}-default", "ApiStages": [{"ApiId": ref("Api"), "Stage": STAGE}],
            "Throttle": {"RateLimit": ref("ApiRateLimit"), "BurstLimit": ref("ApiBurstLimit")},
            "Quota": {"Limit": ref("ApiDailyQuota"), "Period": "DAY"}}},
        "UsagePlanKey": {"Type": "AWS::ApiGateway::UsagePlanKey",
                         "Properties": {"KeyId": ref("ApiKey"), "KeyType": "API_KEY", "UsagePlanId": ref("UsagePlan")}},
    }
