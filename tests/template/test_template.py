"""The deployed shape of template.yaml, checked after the SAM transform.

The template is translated offline with the SAM translator (the same code `sam deploy` runs in
CloudFormation), then its conditions, Fn::If, Fn::FindInMap and parameter Refs are resolved for a
given set of parameter values, so every assertion reads the resources CloudFormation would create.
Run by `make template-test` with the SAM venv's python (it has samtranslator, PyYAML and boto3).
"""

from __future__ import annotations

import copy
import fnmatch
import os
import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import yaml_parse

# SAM_TEMPLATE points the tests at another template (how their power to fail is checked).
TEMPLATE = Path(os.environ.get("SAM_TEMPLATE") or Path(__file__).resolve().parents[2] / "template.yaml")
COGNITO_ACTIONS = {
    "cognito-idp:AdminGetUser",
    "cognito-idp:AdminListGroupsForUser",
    "cognito-idp:AdminResetUserPassword",
    "cognito-idp:AdminUserGlobalSignOut",
}
# Only with AllowInvitationResend=true (issue 17): IAM cannot limit it to MessageAction=RESEND.
RESEND_ACTION = "cognito-idp:AdminCreateUser"
# The guard's item actions (issue 8): conditional single-item writes, no Query, Scan or transactions.
GUARD_ACTIONS = {
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
}
# Managed policies the execution role may carry: none (X-Ray's two write actions are inline).
ALLOWED_MANAGED_POLICIES: set[str] = set()
# Tracing (issue 26): what Lambda's X-Ray daemon needs to send the function's segments, no more.
XRAY_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
NO_VALUE = object()


# ---- translation and resolution --------------------------------------------------------------


def raw_template() -> dict[str, Any]:
    return yaml_parse(TEMPLATE.read_text())


def translate(template: dict[str, Any]) -> dict[str, Any]:
    """SAM → CloudFormation, offline: the code is given an S3 location as `sam package` would."""
    template = copy.deepcopy(template)
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://bucket/key"
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name="us-east-1"))
    return translator.translate(template, parameter_values={}, get_managed_policy_map=lambda: {})


TRANSLATED = translate(raw_template())


class Stack:
    """The translated template as deployed with the given parameter values (defaults otherwise)."""

    def __init__(self, template: dict[str, Any], **overrides: Any) -> None:
        self.params = {name: p.get("Default") for name, p in template["Parameters"].items()}
        unknown = set(overrides) - set(self.params)
        assert not unknown, f"not parameters of the template: {unknown}"
        self.params.update(overrides)
        self.mappings = template.get("Mappings", {})
        self.condition_defs = template.get("Conditions", {})
        self.conditions = {name: self._condition(name) for name in self.condition_defs}
        self.resources = {
            name: self.resolve(resource)
            for name, resource in template["Resources"].items()
            if "Condition" not in resource or self.conditions[resource["Condition"]]
        }

    def _condition(self, name: str) -> bool:
        return bool(self._value(self.condition_defs[name]))

    def _value(self, node: Any) -> Any:
        """Evaluate a condition expression or a parameter-valued intrinsic."""
        if isinstance(node, dict) and len(node) == 1:
            (fn, arg), = node.items()
            if fn == "Fn::Equals":
                return self._value(arg[0]) == self._value(arg[1])
            if fn == "Fn::Not":
                return not self._value(arg[0])
            if fn == "Fn::And":
                return all(self._value(a) for a in arg)
            if fn == "Fn::Or":
                return any(self._value(a) for a in arg)
            if fn == "Condition":
                return self._condition(arg)
        return self.resolve(node)

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.resolve(n) for n in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (fn, arg), = node.items()
            if fn == "Ref" and arg == "AWS::NoValue":
                return NO_VALUE
            if fn == "Ref" and self.params.get(arg) is not None:
                return self.params[arg]
            if fn == "Fn::If":
                return self.resolve(arg[1] if self.conditions[arg[0]] else arg[2])
            if fn == "Fn::Join":
                values = self.resolve(arg[1])
                if isinstance(values, str):  # a CommaDelimitedList parameter given as its text
                    values = values.split(",")
                if isinstance(values, list) and all(isinstance(v, str) for v in values):
                    return arg[0].join(values)
            if fn == "Fn::FindInMap":
                top, second, third = (str(self.resolve(a)) for a in arg)
                return self.mappings[top][second][third]
        resolved = {k: self.resolve(v) for k, v in node.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}

    def of_type(self, type_: str) -> dict[str, dict[str, Any]]:
        return {n: r for n, r in self.resources.items() if r["Type"] == type_}

    def one(self, type_: str) -> tuple[str, dict[str, Any]]:
        found = self.of_type(type_)
        assert len(found) == 1, f"expected one {type_}, found {sorted(found)}"
        return next(iter(found.items()))


def allowed_values(name: str) -> list[Any]:
    return TRANSLATED["Parameters"][name]["AllowedValues"]


EVERY_VARIANT = [
    {"ApiAuth": auth, "QueueType": queue}
    for auth in allowed_values("ApiAuth")
    for queue in allowed_values("QueueType")
]


def variant_id(v: dict[str, Any]) -> str:
    return f"{v['ApiAuth']}-{v['QueueType']}"


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def policy_statements(stack: Stack) -> list[dict[str, Any]]:
    """Every identity-policy statement in the stack: inline role policies and policy resources."""
    statements = []
    for role in stack.of_type("AWS::IAM::Role").values():
        for policy in role["Properties"].get("Policies", []):
            statements += as_list(policy["PolicyDocument"]["Statement"])
    for type_ in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy"):
        for policy in stack.of_type(type_).values():
            statements += as_list(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements


# ---- IAM: the Cognito actions, only on the pool ARNs given -----------------------------------


@pytest.mark.parametrize("resend", ["false", "true"])
@pytest.mark.parametrize("variant", EVERY_VARIANT, ids=variant_id)
def test_cognito_access_is_the_listed_actions_on_the_pool_arn_parameter(variant, resend):
    stack = Stack(TRANSLATED, AllowInvitationResend=resend, **variant)
    expected = COGNITO_ACTIONS | ({RESEND_ACTION} if resend == "true" else set())

    cognito = [
        s
        for s in policy_statements(stack)
        if any(a == "*" or a.lower().startswith("cognito-idp:") for a in as_list(s["Action"]))
    ]

    assert cognito, "no statement grants the Cognito actions"
    granted = set()
    for statement in cognito:
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement and "NotResource" not in statement
        assert set(as_list(statement["Action"])) <= expected, statement["Action"]
        # UserPoolArns has no value here, so its Ref stays: the resource is exactly that list.
        assert statement["Resource"] == {"Ref": "UserPoolArns"}
        granted |= set(as_list(statement["Action"]))
    assert granted == expected


def test_the_create_user_grant_is_off_by_default_and_its_risk_is_written_beside_it():
    # Given the template as written, when reading the AllowInvitationResend parameter,
    # then it defaults to false and says that AdminCreateUser cannot be limited to RESEND.
    parameter = TRANSLATED["Parameters"]["AllowInvitationResend"]
    assert parameter["Default"] == "false"
    assert "cannot limit AdminCreateUser to RESEND" in parameter["Description"]
    assert "cannot limit AdminCreateUser to MessageAction=RESEND" in TEMPLATE.read_text()


def test_pool_arn_statement_resource_is_the_parameter_itself():
    # Given the translated role, when reading its Cognito statement unresolved,
    # then its Resource is a Ref to UserPoolArns (a list of ARNs), never a string or "*".
    statements = [
        s
        for s in policy_statements(Stack(TRANSLATED))
        if any(str(a).startswith("cognito-idp:") for a in as_list(s["Action"]))
    ]
    assert [s["Resource"] for s in statements] == [{"Ref": "UserPoolArns"}]
    with_resend = [
        s
        for s in policy_statements(Stack(TRANSLATED, AllowInvitationResend="true"))
        if any(str(a).startswith("cognito-idp:") for a in as_list(s["Action"]))
    ]
    assert [s["Resource"] for s in with_resend] == [{"Ref": "UserPoolArns"}] * 2
    assert TRANSLATED["Parameters"]["UserPoolArns"]["Type"] == "CommaDelimitedList"
    assert "Default" not in TRANSLATED["Parameters"]["UserPoolArns"]


@pytest.mark.parametrize(
    "arn, allowed",
    [
        ("arn:aws:cognito-idp:us-west-2:123456789012:userpool/us-west-2_aaaaaaaaa", True),
        ("arn:aws-us-gov:cognito-idp:us-gov-west-1:123456789012:userpool/us-gov-west-1_Abc123", True),
        ("*", False),
        ("arn:aws:cognito-idp:us-west-2:123456789012:userpool/*", False),
        ("arn:aws:cognito-idp:*:*:userpool/*", False),
        ("arn:aws:cognito-idp:us-west-2:123456789012:userpool/us-west-2_aaa*", False),
        ("us-west-2_aaaaaaaaa", False),
    ],
)
def test_pool_arn_parameter_admits_only_single_pool_arns(arn, allowed):
    pattern = TRANSLATED["Parameters"]["UserPoolArns"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, arn)) is allowed


def test_no_statement_grants_wildcard_actions_or_admin_policies():
    stack = Stack(TRANSLATED)
    for statement in policy_statements(stack):
        for action in as_list(statement["Action"]):
            assert "*" not in action, statement
    for role in stack.of_type("AWS::IAM::Role").values():
        for arn in role["Properties"].get("ManagedPolicyArns", []):
            arn = arn["Fn::Sub"] if isinstance(arn, dict) else arn
            name = arn.rsplit("/", 1)[-1]
            assert name in ALLOWED_MANAGED_POLICIES, arn


def test_function_runs_as_the_least_privilege_role():
    _, function = Stack(TRANSLATED).one("AWS::Lambda::Function")
    assert function["Properties"]["Role"] == {"Fn::GetAtt": ["FunctionRole", "Arn"]}
    assert list(Stack(TRANSLATED).of_type("AWS::IAM::Role")) == ["FunctionRole"]


# ---- the guard: a DynamoDB table, its settings, and exactly four item actions on it -------------


def guard_table(stack: Stack) -> tuple[str, dict[str, Any]]:
    name, table = stack.one("AWS::DynamoDB::Table")
    return name, table["Properties"]


def grants_dynamodb(action: str) -> bool:
    """Whether an IAM action pattern (wildcards included) covers any DynamoDB action."""
    service, _, _ = action.partition(":")
    return action == "*" or fnmatch.fnmatchcase("dynamodb", service.lower())


def test_guard_table_has_the_contract_schema_on_demand_billing_ttl_pitr_and_sse():
    _, table = guard_table(Stack(TRANSLATED))

    # One String partition key `pk`, no sort key, no indexes: the function's item layout.
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "pk", "AttributeType": "S"}]
    assert "GlobalSecondaryIndexes" not in table and "LocalSecondaryIndexes" not in table
    # Expired claims, answers and cooldowns are removed by DynamoDB's TTL on `expiresAt`.
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiresAt", "Enabled": True}
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert "ProvisionedThroughput" not in table
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert table["SSESpecification"]["SSEType"] == "KMS"


@pytest.mark.parametrize("variant", EVERY_VARIANT, ids=variant_id)
def test_function_is_wired_to_the_guard_table_and_its_settings(variant):
    stack = Stack(TRANSLATED, **variant, ResetCooldownSeconds=45, IdempotencyTtlSeconds=3600)

    name, _ = guard_table(stack)
    _, function = stack.one("AWS::Lambda::Function")
    env = function["Properties"]["Environment"]["Variables"]

    assert env["GUARD_TABLE"] == {"Ref": name}
    assert env["RESET_COOLDOWN_SECONDS"] == 45
    assert env["IDEMPOTENCY_TTL_SECONDS"] == 3600


def test_guard_settings_default_to_the_functions_defaults():
    _, function = Stack(TRANSLATED).one("AWS::Lambda::Function")
    env = function["Properties"]["Environment"]["Variables"]
    assert (env["RESET_COOLDOWN_SECONDS"], env["IDEMPOTENCY_TTL_SECONDS"]) == (300, 86400)


def admits(parameter: str, value: int) -> bool:
    """Whether CloudFormation accepts `value` for a Number parameter with MinValue/MaxValue."""
    spec = TRANSLATED["Parameters"][parameter]
    assert spec["Type"] == "Number"
    return spec["MinValue"] <= value <= spec["MaxValue"]


@pytest.mark.parametrize(
    ("parameter", "value", "accepted"),
    [
        ("ResetCooldownSeconds", 0, True),  # 0 turns the cooldown off
        ("ResetCooldownSeconds", 300, True),
        ("ResetCooldownSeconds", 86400, True),
        ("ResetCooldownSeconds", -1, False),
        ("ResetCooldownSeconds", 86401, False),  # the function refuses more than a day
        ("IdempotencyTtlSeconds", 0, False),  # keys must be kept for some time
        ("IdempotencyTtlSeconds", 60, True),
        ("IdempotencyTtlSeconds", 86400, True),
        ("IdempotencyTtlSeconds", 604800, True),  # the function's limit, past the queue's retention
        ("IdempotencyTtlSeconds", 604801, False),  # the function would refuse to start
    ],
)
def test_guard_parameters_admit_only_values_the_function_accepts(parameter, value, accepted):
    assert admits(parameter, value) is accepted


@pytest.mark.parametrize("variant", EVERY_VARIANT, ids=variant_id)
def test_dynamodb_access_is_the_four_item_actions_on_the_guard_table_only(variant):
    stack = Stack(TRANSLATED, **variant)
    name, _ = guard_table(stack)
    statements = policy_statements(stack)

    # No Allow with NotAction or NotResource could grant DynamoDB by omission.
    for statement in statements:
        assert "NotAction" not in statement and "NotResource" not in statement, statement
    dynamodb = [s for s in statements if any(grants_dynamodb(a) for a in as_list(s["Action"]))]

    assert len(dynamodb) == 1, dynamodb
    (statement,) = dynamodb
    assert statement["Effect"] == "Allow"
    assert sorted(as_list(statement["Action"])) == sorted(GUARD_ACTIONS)
    # Exactly the table's ARN: not "*", not a name pattern, not its indexes or streams.
    assert statement["Resource"] == {"Fn::GetAtt": [name, "Arn"]}
    # Only the function's own role holds it.
    assert list(stack.of_type("AWS::IAM::Role")) == ["FunctionRole"]
    assert not stack.of_type("AWS::DynamoDB::GlobalTable")


@pytest.mark.parametrize("source", allowed_values("PolicySource"))
def test_the_environment_fits_lambdas_4_kb_with_the_largest_values(source):
    # Lambda refuses a function whose environment variables (names and values together) exceed
    # 4 KB. With the outcome events (EVENT_BUS, a 256-character bus name), METRICS_NAMESPACE and
    # MAX_RECEIVE_COUNT and the five quotas, the inline Policy's bound is 2,900 characters; a bigger policy goes to
    # Parameter Store (PolicySource=Parameter), whose name is at most 1,011 characters.
    numbers = {
        name: spec["MaxValue"]
        for name, spec in TRANSLATED["Parameters"].items()
        if spec["Type"] == "Number" and "MaxValue" in spec
    }
    # POOL_ROLES shares the 4 KB with the inline Policy (the PoolRoles parameter says so: past it,
    # the deployment fails); with the policy in Parameter Store both fit at their largest.
    longest = {
        "Policy": "x" * TRANSLATED["Parameters"]["Policy"]["MaxLength"],
        "PolicyParameterName": "",
        "PoolRoles": "",
    }
    if source == "Parameter":
        longest = {
            "Policy": "",
            "PolicyParameterName": "/" + "p" * (TRANSLATED["Parameters"]["PolicyParameterName"]["MaxLength"] - 1),
            "PoolRoles": "r" * TRANSLATED["Parameters"]["PoolRoles"]["MaxLength"],
        }
    stack = Stack(
        TRANSLATED,
        **numbers,
        **longest,
        PolicySource=source,
        EventBusName="b" * TRANSLATED["Parameters"]["EventBusName"]["MaxLength"],
        MetricsNamespace="n" * TRANSLATED["Parameters"]["MetricsNamespace"]["MaxLength"],
        DefaultUserPoolId="us-west-2_" + "a" * 45,  # the longest pool id: 55 characters
        DryRun="false",
    )
    name, _ = guard_table(stack)
    _, function = stack.one("AWS::Lambda::Function")
    env = function["Properties"]["Environment"]["Variables"]
    # The generated table name is at most 255 characters, DynamoDB's limit.
    values = {k: ("t" * 255 if v == {"Ref": name} else v) for k, v in env.items()}
    values["FUNCTION_ACCOUNT_ID"] = "1" * 12  # AWS::AccountId
    assert all(isinstance(v, (str, int)) for v in values.values()), values
    assert ("POLICY" in values) is (source == "Inline")
    assert "EVENT_BUS" in values and "METRICS_NAMESPACE" in values and "MAX_RECEIVE_COUNT" in values
    assert ("POOL_ROLES" in values) is (source == "Parameter")

    size = sum(len(k) + len(str(v)) for k, v in values.items())

    assert size <= 4096, size


def test_guard_table_name_is_an_output():
    assert TRANSLATED["Outputs"]["GuardTableName"]["Value"] == {"Ref": "GuardTable"}


# ---- HTTP API: POST /reset, IAM by default, JWT when selected, never open ---------------------


def reset_routes(stack: Stack) -> list[dict[str, Any]]:
    return [
        r["Properties"]
        for r in stack.of_type("AWS::ApiGatewayV2::Route").values()
        if r["Properties"]["RouteKey"] == "POST /reset"
    ]


def test_route_requires_aws_iam_by_default():
    stack = Stack(TRANSLATED)

    (route,) = reset_routes(stack)

    assert route["AuthorizationType"] == "AWS_IAM"
    assert "AuthorizerId" not in route
    assert not stack.of_type("AWS::ApiGatewayV2::Authorizer")


def test_route_uses_the_jwt_authorizer_when_selected():
    stack = Stack(TRANSLATED, ApiAuth="JWT", JwtIssuer="https://issuer.example.com", JwtAudience="client-1")

    (route,) = reset_routes(stack)
    name, authorizer = stack.one("AWS::ApiGatewayV2::Authorizer")

    assert route["AuthorizationType"] == "JWT"
    assert route["AuthorizerId"] == {"Ref": name}
    assert authorizer["Properties"]["AuthorizerType"] == "JWT"
    assert authorizer["Properties"]["JwtConfiguration"] == {
        "Issuer": "https://issuer.example.com",
        "Audience": "client-1",
    }


def test_jwt_requires_issuer_and_audience_by_rule():
    rule = TRANSLATED["Rules"]["JwtNeedsIssuerAndAudience"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "ApiAuth"}, "JWT"]}
    asserted = str(rule["Assertions"])
    assert "JwtIssuer" in asserted and "JwtAudience" in asserted


@pytest.mark.parametrize("variant", EVERY_VARIANT, ids=variant_id)
def test_no_route_is_ever_open(variant):
    stack = Stack(TRANSLATED, **variant)

    routes = [r["Properties"] for r in stack.of_type("AWS::ApiGatewayV2::Route").values()]

    assert sorted(r["RouteKey"] for r in routes) == [
        "GET /requests/{id}", "POST /approvals/{approvalId}", "POST /reset"]
    assert all(r["AuthorizationType"] in {"AWS_IAM", "JWT"} for r in routes)
    # No REST API or function URL on the side.
    assert not stack.of_type("AWS::ApiGateway::Method")
    assert not stack.of_type("AWS::Lambda::Url")


def test_only_the_routes_of_this_api_may_invoke_the_function():
    stack = Stack(TRANSLATED)
    permissions = [p["Properties"] for p in stack.of_type("AWS::Lambda::Permission").values()]
    assert {p["Principal"] for p in permissions} == {"apigateway.amazonaws.com"}
    # One permission per route (issue 27: the approval and status routes), each for its method.
    assert sorted(p["SourceArn"]["Fn::Sub"].rsplit(":${HttpApi}", 1)[1] for p in permissions) == [
        "/*/GET/requests/*", "/*/POST/approvals/*", "/*/POST/reset"]


# ---- queue: SQS source with partial batch failures, DLQ, SSE, visibility ----------------------


@pytest.mark.parametrize("queue_type", allowed_values("QueueType"))
def test_event_source_mapping_reports_batch_item_failures(queue_type):
    stack = Stack(TRANSLATED, QueueType=queue_type, BatchSize=7, MaximumConcurrency=4)

    _, mapping = stack.one("AWS::Lambda::EventSourceMapping")
    props = mapping["Properties"]

    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["EventSourceArn"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    assert props["BatchSize"] == 7
    assert props["ScalingConfig"] == {"MaximumConcurrency": 4}


@pytest.mark.parametrize("queue_type", allowed_values("QueueType"))
def test_queue_redrives_to_the_dead_letter_queue(queue_type):
    stack = Stack(TRANSLATED, QueueType=queue_type, MaxReceiveCount=3)

    queue = stack.resources["Queue"]["Properties"]

    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
        "maxReceiveCount": 3,
    }
    assert stack.resources["DeadLetterQueue"]["Type"] == "AWS::SQS::Queue"
    assert "RedrivePolicy" not in stack.resources["DeadLetterQueue"]["Properties"]


@pytest.mark.parametrize("name", ["Queue", "DeadLetterQueue"])
def test_queues_are_encrypted_at_rest(name):
    props = Stack(TRANSLATED).resources[name]["Properties"]
    assert props.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in props


def test_fifo_selects_a_fifo_queue_and_a_fifo_dead_letter_queue():
    fifo = Stack(TRANSLATED, QueueType="Fifo")
    standard = Stack(TRANSLATED, QueueType="Standard")

    for name in ("Queue", "DeadLetterQueue"):
        assert fifo.resources[name]["Properties"]["FifoQueue"] is True
        assert fifo.resources[name]["Properties"]["QueueName"]["Fn::Sub"].endswith(".fifo")
        assert "FifoQueue" not in standard.resources[name]["Properties"]
        assert not standard.resources[name]["Properties"]["QueueName"]["Fn::Sub"].endswith(".fifo")
    assert fifo.resources["Queue"]["Properties"]["ContentBasedDeduplication"] is True


@pytest.mark.parametrize("timeout", allowed_values("FunctionTimeout"))
def test_visibility_timeout_is_at_least_six_times_the_function_timeout(timeout):
    stack = Stack(TRANSLATED, FunctionTimeout=timeout)

    _, function = stack.one("AWS::Lambda::Function")
    visibility = stack.resources["Queue"]["Properties"]["VisibilityTimeout"]

    assert function["Properties"]["Timeout"] == timeout
    assert 6 * int(timeout) <= int(visibility) <= 43200


# ---- function, logs, alarms, outputs ------------------------------------------------------------


def test_function_is_a_small_arm64_rust_function_with_json_logs():
    stack = Stack(TRANSLATED, LogLevel="DEBUG", Policy='{"version":1}', DryRun="true")

    _, function = stack.one("AWS::Lambda::Function")
    props = function["Properties"]

    assert props["Runtime"] == "provided.al2023"
    assert props["Architectures"] == ["arm64"]
    assert props["Handler"] == "bootstrap"
    assert props["MemorySize"] == 128
    assert props["LoggingConfig"] == {
        "LogFormat": "JSON",
        "ApplicationLogLevel": "DEBUG",
        "SystemLogLevel": "WARN",
        "LogGroup": {"Ref": "FunctionLogGroup"},
    }
    env = props["Environment"]["Variables"]
    assert env["POLICY"] == '{"version":1}'
    assert env["DRY_RUN"] == "true"
    assert "DEFAULT_USER_POOL_ID" not in env
    assert set(env) == {"POLICY", "MAX_CONCURRENCY", "DEADLINE_MARGIN_MS", "COGNITO_TIMEOUT_MS",
                        "COGNITO_MAX_ATTEMPTS", "DRY_RUN", "GUARD_TABLE", "RESET_COOLDOWN_SECONDS",
                        "IDEMPOTENCY_TTL_SECONDS", "MAX_INSTANCES", "COGNITO_RESET_QUOTA",
                        "COGNITO_READ_QUOTA", "COGNITO_RESOURCE_READ_QUOTA", "COGNITO_CREATION_QUOTA",
                        "COGNITO_UPDATE_QUOTA", "METRICS_NAMESPACE",
                        "MAX_RECEIVE_COUNT", "PACING", "PACING_LEASE_MS", "FUNCTION_ACCOUNT_ID"}


def test_sam_builds_the_cognito_reset_binary_with_cargo_lambda():
    metadata = raw_template()["Resources"]["Function"]["Metadata"]
    assert metadata["BuildMethod"] == "rust-cargolambda"
    assert metadata["BuildProperties"] == {"Binary": "cognito-reset"}


def test_log_group_retention_is_the_parameter():
    stack = Stack(TRANSLATED, LogRetentionDays=90)
    for group in stack.of_type("AWS::Logs::LogGroup").values():
        assert group["Properties"]["RetentionInDays"] == 90


@pytest.mark.parametrize("topic", ["", "arn:aws:sns:us-west-2:123456789012:ops"])
def test_alarms_watch_dlq_errors_and_throttles(topic):
    stack = Stack(TRANSLATED, AlarmTopicArn=topic)

    alarms = {
        (a["Properties"]["Namespace"], a["Properties"]["MetricName"]): a["Properties"]
        for a in stack.of_type("AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("Namespace", "").startswith("AWS/")
    }

    assert set(alarms) == {
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Throttles"),
    }
    dlq = alarms[("AWS/SQS", "ApproximateNumberOfMessagesVisible")]
    assert dlq["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}}]
    for alarm in alarms.values():
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
        assert alarm.get("AlarmActions", []) == ([topic] if topic else [])


def test_outputs_name_the_endpoint_queues_and_function():
    outputs = TRANSLATED["Outputs"]
    assert {"ApiEndpoint", "QueueUrl", "QueueArn", "DeadLetterQueueUrl", "FunctionName"} <= set(outputs)
    assert outputs["QueueUrl"]["Value"] == {"Ref": "Queue"}
    assert outputs["QueueArn"]["Value"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    assert outputs["DeadLetterQueueUrl"]["Value"] == {"Ref": "DeadLetterQueue"}
    assert outputs["FunctionName"]["Value"] == {"Ref": "Function"}


def test_instances_are_bounded_so_their_paced_calls_stay_inside_cognitos_quotas():
    # Given the defaults: the function divides each quota among at most MaxInstances instances
    _, function = Stack(TRANSLATED).one("AWS::Lambda::Function")
    props = function["Properties"]
    env = props["Environment"]["Variables"]
    instances = props["ReservedConcurrentExecutions"]
    assert instances == env["MAX_INSTANCES"] == 5
    # Cognito's default quotas: UserAccountRecovery, UserRead, UserResourceRead
    assert (
        env["COGNITO_RESET_QUOTA"],
        env["COGNITO_READ_QUOTA"],
        env["COGNITO_RESOURCE_READ_QUOTA"],
    ) == (30, 120, 50)
    # Then instances x per-instance rate never exceeds the quota
    for quota in (env["COGNITO_RESET_QUOTA"], env["COGNITO_READ_QUOTA"], env["COGNITO_RESOURCE_READ_QUOTA"]):
        assert instances * (quota / instances) <= quota
    # and the queue alone cannot start more instances than are reserved
    assert TRANSLATED["Parameters"]["MaximumConcurrency"]["Default"] <= instances


def test_pacing_is_shared_in_the_guard_table_by_default_and_its_items_are_in_the_grant():
    # Given the defaults: the fleet's buckets in the guard table, leased 200 ms at a time
    stack = Stack(TRANSLATED)
    _, function = stack.one("AWS::Lambda::Function")
    env = function["Properties"]["Environment"]["Variables"]
    assert (env["PACING"], env["PACING_LEASE_MS"]) == ("shared", 200)
    name, _ = guard_table(stack)
    assert env["GUARD_TABLE"] == {"Ref": name}
    # Then the role may update any item of the guard table (the bucket items included: no
    # dynamodb:LeadingKeys condition keeps them out), and nothing else of DynamoDB
    _, role = stack.one("AWS::IAM::Role")
    statements = [
        st
        for policy in role["Properties"]["Policies"]
        for st in policy["PolicyDocument"]["Statement"]
        if isinstance(st, dict) and any(str(a).startswith("dynamodb:") for a in st.get("Action", []))
    ]
    assert len(statements) == 1
    (grant,) = statements
    assert "dynamodb:UpdateItem" in grant["Action"]
    assert grant["Resource"] == {"Fn::GetAtt": [name, "Arn"]}
    assert "Condition" not in grant
    # And the settings follow their parameters
    stack = Stack(TRANSLATED, Pacing="instance", PacingLeaseMs=100)
    _, function = stack.one("AWS::Lambda::Function")
    env = function["Properties"]["Environment"]["Variables"]
    assert (env["PACING"], env["PACING_LEASE_MS"]) == ("instance", 100)
    assert TRANSLATED["Parameters"]["Pacing"]["AllowedValues"] == ["shared", "instance"]
    lease = TRANSLATED["Parameters"]["PacingLeaseMs"]
    assert (lease["MinValue"], lease["MaxValue"]) == (100, 250)


def test_instance_bound_and_quotas_follow_their_parameters():
    stack = Stack(
        TRANSLATED, MaxInstances=8, CognitoResetQuota=50, CognitoReadQuota=200, CognitoResourceReadQuota=70
    )
    _, function = stack.one("AWS::Lambda::Function")
    props = function["Properties"]
    env = props["Environment"]["Variables"]
    assert props["ReservedConcurrentExecutions"] == 8
    assert (env["MAX_INSTANCES"], env["COGNITO_RESET_QUOTA"], env["COGNITO_READ_QUOTA"]) == (8, 50, 200)
    assert env["COGNITO_RESOURCE_READ_QUOTA"] == 70


def test_the_pacing_description_names_the_bucket_key_as_the_code_writes_it():
    # src/pacing.rs writes `bucket#<account>#<region>#<category>` (the template always sets
    # FUNCTION_ACCOUNT_ID, so the account is always in it).
    pacing = (Path(__file__).resolve().parents[2] / "src" / "pacing.rs").read_text()
    assert 'format!("bucket#{account}#{}#{}", scope.region, category.as_str())' in pacing
    env = Stack(TRANSLATED).one("AWS::Lambda::Function")[1]["Properties"]["Environment"]["Variables"]
    assert "FUNCTION_ACCOUNT_ID" in env
    description = " ".join(TRANSLATED["Parameters"]["Pacing"]["Description"].split())
    assert "bucket#<account>#<region>#<category>" in description, description


# ---- tracing (issue 26): the Tracing parameter and X-Ray's two write actions --------------------


def test_tracing_is_active_by_default_and_pass_through_is_the_other_choice():
    parameter = TRANSLATED["Parameters"]["Tracing"]
    assert parameter["Default"] == "Active"
    assert parameter["AllowedValues"] == ["Active", "PassThrough"]
    for value in parameter["AllowedValues"]:
        _, function = Stack(TRANSLATED, Tracing=value).one("AWS::Lambda::Function")
        assert function["Properties"]["TracingConfig"] == {"Mode": value}


@pytest.mark.parametrize("tracing", ["Active", "PassThrough"])
def test_the_xray_grant_is_the_two_write_actions_and_nothing_else_xray(tracing):
    stack = Stack(TRANSLATED, Tracing=tracing)
    xray = [s for s in policy_statements(stack)
            if any(a.startswith("xray:") for a in as_list(s["Action"]))]
    assert len(xray) == 1, xray
    [statement] = xray
    assert statement["Effect"] == "Allow"
    assert set(as_list(statement["Action"])) == XRAY_ACTIONS
    # X-Ray has no resource-level permissions: "*" is the only Resource it takes.
    assert statement["Resource"] == "*"
    assert "Condition" not in statement
    for role in stack.of_type("AWS::IAM::Role").values():
        assert not role["Properties"].get("ManagedPolicyArns"), role
