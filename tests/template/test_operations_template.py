"""The template's operations wiring (issue 10), checked after the SAM transform.

The policy from SSM Parameter Store (PolicySource=Parameter), the outcome events on EventBridge
(EventBusName), the EMF metrics' alarms and the dashboard: each grant is exactly one resource and
exists only when its feature is on; the function's environment follows the parameters; the
CloudFormation Rules refuse the combinations the function would refuse at start-up.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from pathlib import Path

from test_template import TRANSLATED, Stack, as_list, policy_statements

ROOT = Path(__file__).resolve().parents[2]

PARTITION, REGION, ACCOUNT = "aws", "us-west-2", "123456789012"
PARAMETER = "/cognito-reset/policy"
PARAMETER_ARN = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{PARAMETER}"
BUS = "cognito-reset-events"
BUS_ARN = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{BUS}"
KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
TOPIC = f"arn:aws:sns:{REGION}:{ACCOUNT}:ops"
POLICY = '{"version":1,"rules":[]}'
FROM_PARAMETER = {"PolicySource": "Parameter", "PolicyParameterName": PARAMETER, "Policy": ""}


# ---- helpers -----------------------------------------------------------------------------------


def sub(stack: Stack, value: Any, attributes: dict[str, str] | None = None) -> Any:
    """Resolve an Fn::Sub as CloudFormation would in us-west-2 of account 123456789012."""
    if not (isinstance(value, dict) and set(value) == {"Fn::Sub"}):
        return value
    text = value["Fn::Sub"]
    assert isinstance(text, str), "only the one-argument form of Fn::Sub is used"
    known = {"AWS::Partition": PARTITION, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
             "AWS::StackName": "cognito-reset"}
    known |= {k: str(v) for k, v in stack.params.items() if v is not None}
    known |= attributes or {}

    def replace(m: re.Match) -> str:
        name = m.group(1)
        assert name in known, f"unresolved ${{{name}}} in {text!r}"
        return known[name]

    return re.sub(r"\$\{([^}!]+)\}", replace, text)


def statements_for(stack: Stack, service: str) -> list[dict[str, Any]]:
    """Statements whose actions touch `service` (or any service, through a wildcard)."""
    return [
        s for s in policy_statements(stack)
        if any(a == "*" or a.lower().startswith(service + ":") for a in as_list(s.get("Action", [])))
    ]


def env_of(stack: Stack) -> dict[str, Any]:
    _, function = stack.one("AWS::Lambda::Function")
    return function["Properties"]["Environment"]["Variables"]


def rules_hold(**params: Any) -> list[str]:
    """The AssertDescriptions of every CloudFormation Rule the parameter values break."""
    stack = Stack(TRANSLATED, **params)
    broken = []
    for rule in TRANSLATED["Rules"].values():
        if "RuleCondition" in rule and not stack._value(rule["RuleCondition"]):
            continue
        for assertion in rule["Assertions"]:
            if not stack._value(assertion["Assert"]):
                broken.append(assertion["AssertDescription"])
    return broken


def alarms(stack: Stack) -> dict[str, dict[str, Any]]:
    return {n: a["Properties"] for n, a in stack.of_type("AWS::CloudWatch::Alarm").items()}


def emf_alarm(stack: Stack, metric: str) -> dict[str, Any]:
    found = [a for a in alarms(stack).values() if a.get("MetricName") == metric]
    assert len(found) == 1, f"expected one alarm on {metric}, found {len(found)}"
    return found[0]


# ---- the policy parameter: env wiring, the ssm:GetParameter grant, kms:Decrypt ------------------


def test_inline_policy_is_the_policy_variable_and_reads_no_parameter():
    stack = Stack(TRANSLATED, Policy=POLICY)

    env = env_of(stack)

    assert env["POLICY"] == POLICY
    assert "POLICY_PARAMETER" not in env and "POLICY_REFRESH_SECONDS" not in env
    assert statements_for(stack, "ssm") == []
    assert statements_for(stack, "kms") == []


def test_parameter_policy_is_the_parameter_variable_with_its_refresh_and_no_inline_policy():
    stack = Stack(TRANSLATED, **FROM_PARAMETER, PolicyRefreshSeconds=15)

    env = env_of(stack)

    # exactly one policy source, as the function requires
    assert "POLICY" not in env and "POLICY_FILE" not in env
    assert env["POLICY_PARAMETER"] == PARAMETER
    assert env["POLICY_REFRESH_SECONDS"] == 15


def test_refresh_defaults_to_the_functions_default_and_admits_only_its_range():
    assert env_of(Stack(TRANSLATED, **FROM_PARAMETER))["POLICY_REFRESH_SECONDS"] == 60
    spec = TRANSLATED["Parameters"]["PolicyRefreshSeconds"]
    assert (spec["MinValue"], spec["MaxValue"]) == (1, 3600)


def test_the_role_may_read_exactly_the_one_policy_parameter():
    stack = Stack(TRANSLATED, **FROM_PARAMETER)

    (statement,) = statements_for(stack, "ssm")

    assert statement["Effect"] == "Allow"
    assert as_list(statement["Action"]) == ["ssm:GetParameter"]
    assert "NotResource" not in statement
    assert sub(stack, statement["Resource"]) == PARAMETER_ARN


def test_a_string_or_aws_managed_key_parameter_gets_no_kms_grant():
    # aws/ssm's key policy already lets the account's principals decrypt through SSM; the role
    # needs (and gets) nothing from KMS.
    assert statements_for(Stack(TRANSLATED, **FROM_PARAMETER), "kms") == []


def test_a_customer_managed_key_may_decrypt_only_that_parameter_through_ssm():
    stack = Stack(TRANSLATED, **FROM_PARAMETER, PolicyParameterKmsKeyArn=KEY_ARN)

    (statement,) = statements_for(stack, "kms")

    assert statement["Effect"] == "Allow"
    assert as_list(statement["Action"]) == ["kms:Decrypt"]
    assert statement["Resource"] == KEY_ARN
    conditions = statement["Condition"]["StringEquals"]
    assert sub(stack, conditions["kms:ViaService"]) == f"ssm.{REGION}.amazonaws.com"
    assert sub(stack, conditions["kms:EncryptionContext:PARAMETER_ARN"]) == PARAMETER_ARN


def test_an_inline_policy_gets_no_kms_grant_even_with_a_key_given():
    stack = Stack(TRANSLATED, Policy=POLICY, PolicyParameterKmsKeyArn=KEY_ARN)
    assert statements_for(stack, "kms") == [] and statements_for(stack, "ssm") == []


@pytest.mark.parametrize(
    "name, admitted",
    [
        ("", True),
        ("/cognito-reset/policy", True),
        ("/prod/cognito-reset/policy.v2", True),
        ("cognito-reset/policy", False),  # no leading /: the granted ARN would name another parameter
        ("/cognito-reset/*", False),
        ("*", False),
        ("/cognito-reset/", False),
        (PARAMETER_ARN, False),
    ],
)
def test_the_parameter_name_admits_only_one_hierarchical_name(name, admitted):
    pattern = TRANSLATED["Parameters"]["PolicyParameterName"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, name)) is admitted


@pytest.mark.parametrize(
    "params, broken",
    [
        ({"Policy": POLICY}, []),
        (FROM_PARAMETER, []),
        ({"Policy": ""}, ["PolicySource=Inline needs the Policy document"]),
        ({"PolicySource": "Parameter", "Policy": ""}, ["PolicySource=Parameter needs PolicyParameterName"]),
        ({**FROM_PARAMETER, "Policy": POLICY}, ["PolicySource=Parameter ignores Policy"]),
        ({"Policy": POLICY, "PolicyParameterName": PARAMETER}, ["PolicySource=Inline reads no parameter"]),
    ],
)
def test_rules_refuse_a_policy_source_without_its_policy_or_with_both(params, broken):
    got = rules_hold(**params)
    assert len(got) == len(broken), got
    for description, expected in zip(got, broken):
        assert description.startswith(expected), got


# ---- outcome events: EVENT_BUS and events:PutEvents on the one bus ------------------------------


def test_without_a_bus_there_are_no_events_and_no_events_grant():
    stack = Stack(TRANSLATED, Policy=POLICY)

    assert "EVENT_BUS" not in env_of(stack)
    assert statements_for(stack, "events") == []
    assert not [a for a in alarms(stack).values() if a.get("MetricName") == "EventsNotDelivered"]


def test_the_role_may_put_only_this_functions_events_on_exactly_the_one_bus():
    stack = Stack(TRANSLATED, Policy=POLICY, EventBusName=BUS)

    (statement,) = statements_for(stack, "events")

    assert env_of(stack)["EVENT_BUS"] == BUS
    assert statement["Effect"] == "Allow"
    assert as_list(statement["Action"]) == ["events:PutEvents"]
    assert sub(stack, statement["Resource"]) == BUS_ARN
    # the function's Source and DetailType: the one source the template passes as EVENT_SOURCE
    assert statement["Condition"] == {
        "StringEquals": {"events:source": "cognito-reset", "events:detail-type": "Password Reset Outcome"}
    }
    assert env_of(stack)["EVENT_SOURCE"] == "cognito-reset"


def test_the_event_source_is_passed_and_is_the_one_the_grant_names():
    stack = Stack(TRANSLATED, Policy=POLICY, EventBusName=BUS, EventSource="acme.helpdesk")
    (statement,) = statements_for(stack, "events")
    assert env_of(stack)["EVENT_SOURCE"] == "acme.helpdesk"
    assert statement["Condition"]["StringEquals"]["events:source"] == "acme.helpdesk"
    # and none without a bus
    assert "EVENT_SOURCE" not in env_of(Stack(TRANSLATED, Policy=POLICY))


@pytest.mark.parametrize(
    "source, admitted",
    [("cognito-reset", True), ("acme.helpdesk", True), ("aws.cognito", False), ("a b", False), ("", False)],
)
def test_the_event_source_parameter_admits_what_eventbridge_and_the_function_admit(source, admitted):
    pattern = TRANSLATED["Parameters"]["EventSource"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, source)) is admitted


@pytest.mark.parametrize(
    "name, admitted",
    [("", True), (BUS, True), ("default", True), ("*", False), (BUS_ARN, False), ("a b", False)],
)
def test_the_bus_parameter_admits_only_one_bus_name(name, admitted):
    pattern = TRANSLATED["Parameters"]["EventBusName"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, name)) is admitted


def test_the_function_knows_the_queues_max_receive_count_and_its_metrics_namespace():
    stack = Stack(TRANSLATED, Policy=POLICY, MaxReceiveCount=7, MetricsNamespace="Ops/Resets")

    env = env_of(stack)

    assert env["MAX_RECEIVE_COUNT"] == 7
    assert stack.resources["Queue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"] == 7
    assert env["METRICS_NAMESPACE"] == "Ops/Resets"
    assert env_of(Stack(TRANSLATED, Policy=POLICY))["METRICS_NAMESPACE"] == "CognitoReset"


@pytest.mark.parametrize(
    "namespace, admitted",
    [("CognitoReset", True), ("Ops/Cognito-Reset", True), ("AWS/Lambda", False), ("", False), ("a\"b", False)],
)
def test_the_namespace_parameter_admits_custom_namespaces_only(namespace, admitted):
    spec = TRANSLATED["Parameters"]["MetricsNamespace"]
    ok = re.fullmatch(spec["AllowedPattern"], namespace) is not None and len(namespace) >= spec["MinLength"]
    assert ok is admitted


# ---- alarms on the EMF metrics -------------------------------------------------------------------


@pytest.mark.parametrize("topic", ["", TOPIC])
def test_any_misconfigured_record_pages_within_a_minute(topic):
    stack = Stack(TRANSLATED, Policy=POLICY, MetricsNamespace="Ops", AlarmTopicArn=topic)

    alarm = emf_alarm(stack, "Records.RETRY.misconfigured")

    assert alarm["Namespace"] == "Ops"
    assert (alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"]) == ("Sum", 60, 1)
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    assert alarm["TreatMissingData"] == "notBreaching"
    assert alarm.get("AlarmActions", []) == ([topic] if topic else [])


def failure_rate_alarm(stack: Stack) -> dict[str, Any]:
    found = [a for a in alarms(stack).values() if "Metrics" in a]
    assert len(found) == 1, found
    return found[0]


def evaluate(alarm: dict[str, Any], sums: dict[str, float | None]) -> bool:
    """Whether the metric-math alarm fires for one 5-minute period with these metric sums
    (None: the metric has no data point, as a code that did not happen)."""
    by_metric = {q["MetricStat"]["Metric"]["MetricName"]: q["Id"] for q in alarm["Metrics"] if "MetricStat" in q}
    values = {by_metric[name]: value for name, value in sums.items()}
    (expression,) = [q["Expression"] for q in alarm["Metrics"] if q.get("ReturnData")]
    functions = {
        "IF": lambda condition, then, otherwise: then() if condition else otherwise(),
        "FILL": lambda value, default: default if value is None else value,
    }
    # IF's branches are evaluated lazily here (CloudWatch gives no value for a division by zero)
    lazy = re.sub(r"IF\((.*?),\s*(.*),\s*([^,]+)\)$", r"IF(\1, lambda: \2, lambda: \3)", expression)
    value = eval(lazy, {"__builtins__": {}} | functions | values)  # noqa: S307 - our own template
    comparison = {"GreaterThanThreshold": float.__gt__, "GreaterThanOrEqualToThreshold": float.__ge__}
    return comparison[alarm["ComparisonOperator"]](float(value), float(alarm["Threshold"]))


@pytest.mark.parametrize(
    "records, upstream, throttled, fires",
    [
        (1, 1, None, False),  # one failure in a quiet period is not a rate
        (9, 9, None, False),  # below 10 records: no alarm
        (100, 5, 4, False),  # 9%: Cognito's background noise, retried anyway
        (100, 6, 5, True),  # 11%
        (20, None, 3, True),  # throttling alone: 15%
        (20, 3, None, True),  # upstream errors alone: 15%
        (1000, None, None, False),
    ],
)
def test_cognito_failures_alarm_on_more_than_a_tenth_of_at_least_ten_records_in_five_minutes(
    records, upstream, throttled, fires
):
    stack = Stack(TRANSLATED, Policy=POLICY, MetricsNamespace="Ops", AlarmTopicArn=TOPIC)
    alarm = failure_rate_alarm(stack)

    for query in alarm["Metrics"]:
        if "MetricStat" in query:
            assert query["MetricStat"]["Metric"]["Namespace"] == "Ops"
            assert "Dimensions" not in query["MetricStat"]["Metric"]
            assert (query["MetricStat"]["Stat"], query["MetricStat"]["Period"]) == ("Sum", 300)
    assert evaluate(alarm, {
        "Records": records,
        "Records.RETRY.upstream-error": upstream,
        "Records.RETRY.throttled": throttled,
    }) is fires
    assert alarm["AlarmActions"] == [TOPIC]


@pytest.mark.parametrize("topic", ["", TOPIC])
def test_undelivered_events_alarm_when_events_are_on(topic):
    stack = Stack(TRANSLATED, Policy=POLICY, EventBusName=BUS, AlarmTopicArn=topic)

    alarm = emf_alarm(stack, "EventsNotDelivered")

    assert alarm["Namespace"] == "CognitoReset"
    assert (alarm["Statistic"], alarm["Threshold"], alarm["ComparisonOperator"]) == ("Sum", 0, "GreaterThanThreshold")
    assert alarm.get("AlarmActions", []) == ([topic] if topic else [])


@pytest.mark.parametrize("topic", ["", TOPIC])
def test_a_refused_policy_version_alarms_when_the_policy_is_a_parameter(topic):
    stack = Stack(TRANSLATED, **FROM_PARAMETER, AlarmTopicArn=topic)

    alarm = emf_alarm(stack, "PolicyRefusals")

    assert (alarm["Statistic"], alarm["Threshold"], alarm["ComparisonOperator"]) == ("Sum", 0, "GreaterThanThreshold")
    assert alarm.get("AlarmActions", []) == ([topic] if topic else [])
    # an inline policy is never refreshed, so it can never be refused
    assert not [a for a in alarms(Stack(TRANSLATED, Policy=POLICY)).values() if a.get("MetricName") == "PolicyRefusals"]


def test_every_alarm_notifies_the_topic_when_set_with_everything_on():
    stack = Stack(TRANSLATED, **FROM_PARAMETER, EventBusName=BUS, AlarmTopicArn=TOPIC)

    every = alarms(stack)

    # DLQ, errors, throttles, misconfigured, failure rate, guard-unavailable, reset-unconfirmed,
    # caller budget, delivery limit, events, refusals (PolicyMaxAgeSeconds is off: no
    # policy-stale alarm)
    assert len(every) == 11
    for name, alarm in every.items():
        assert alarm["AlarmActions"] == [TOPIC], name
        assert alarm["OKActions"] == [TOPIC], name


# ---- the dashboard -------------------------------------------------------------------------------


def dashboard(namespace: str = "CognitoReset") -> list[dict[str, Any]]:
    stack = Stack(TRANSLATED, Policy=POLICY, MetricsNamespace=namespace)
    _, resource = stack.one("AWS::CloudWatch::Dashboard")
    body = sub(stack, resource["Properties"]["DashboardBody"], {
        "Queue.QueueName": "cognito-reset-resets",
        "DeadLetterQueue.QueueName": "cognito-reset-resets-dlq",
        "Function": "cognito-reset-Function-abc",
    })
    return json.loads(body)["widgets"]


def metrics_of(widget: dict[str, Any]) -> list[list[Any]]:
    return widget["properties"]["metrics"]


def widget(title_word: str, namespace: str = "CognitoReset") -> dict[str, Any]:
    found = [w for w in dashboard(namespace) if title_word.lower() in w["properties"]["title"].lower()]
    assert len(found) == 1, [w["properties"]["title"] for w in dashboard(namespace)]
    return found[0]


def test_the_dashboard_shows_every_outcome_in_the_namespace():
    outcomes = widget("by outcome", "Ops/Resets")
    names = {m[1] for m in metrics_of(outcomes) if m[0] == "Ops/Resets"}
    assert names == {f"Records.{o}" for o in ("RESET", "WOULD_RESET", "REJECTED", "RETRY")}
    assert outcomes["properties"]["region"] == REGION


@pytest.mark.parametrize("title, word", [("REJECTED by code", "REJECTED"), ("RETRY by code", "RETRY")])
def test_the_dashboard_shows_the_codes_of_refusals_and_retries(title, word):
    (query,) = metrics_of(widget(title, "Ops/Resets"))
    expression = query[0]["expression"]
    assert expression.startswith("SEARCH('{\"Ops/Resets\"} ") and word in expression


def test_the_dashboard_shows_cognito_and_guard_latencies():
    (cognito,) = metrics_of(widget("Cognito latency"))
    assert "CognitoLatency" in cognito[0]["expression"] and '{"CognitoReset"}' in cognito[0]["expression"]
    guard = metrics_of(widget("Guard"))
    assert {(m[0], m[1]) for m in guard} == {("CognitoReset", "GuardLatency")}


def test_the_dashboard_shows_the_depth_of_the_queue_and_the_dead_letter_queue():
    depth = metrics_of(widget("Queue depth"))
    queues = {(m[1], m[3]) for m in depth if m[0] == "AWS/SQS"}
    assert ("ApproximateNumberOfMessagesVisible", "cognito-reset-resets") in queues
    assert ("ApproximateNumberOfMessagesVisible", "cognito-reset-resets-dlq") in queues


def test_the_dashboard_shows_undelivered_events_and_policy_reloads_and_refusals():
    names = {m[1] for m in metrics_of(widget("Events not delivered"))}
    assert names == {"GaveUp", "EventsNotDelivered", "PolicyReloads", "PolicyRefusals"}


def test_a_reset_whose_answer_was_lost_raises_an_alarm():
    # A reset-unconfirmed record is final (nothing sends a second code), so a person must look.
    alarm = emf_alarm(Stack(TRANSLATED), "Records.REJECTED.reset-unconfirmed")
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    assert alarm["TreatMissingData"] == "notBreaching"
    assert "reset-unconfirmed" in alarm["AlarmDescription"]


def test_a_caller_running_into_its_budget_raises_an_alarm():
    # A caller at its rule's budget is a security signal (issue 17): any refusal alarms.
    alarm = emf_alarm(Stack(TRANSLATED), "BudgetRefusals")
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    assert (alarm["Statistic"], alarm["Period"]) == ("Sum", 300)
    assert "caller-budget-exhausted" in alarm["AlarmDescription"]


def test_a_pool_past_its_daily_delivery_limit_raises_an_alarm_with_its_runbook():
    # Issue 25: every further reset of the pool is refused until it sends with SES.
    alarm = emf_alarm(Stack(TRANSLATED), "DeliveryLimit")
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    assert alarm["TreatMissingData"] == "notBreaching"
    assert "configure ses for the pool, then re-drive from the report" in " ".join(alarm["AlarmDescription"].lower().split())
    limits = {m[1] for m in metrics_of(widget("Cognito limits"))}
    assert limits == {"DeliveryLimit", "Records.REJECTED.attempt-limit"}


def alarm_fires(alarm: dict[str, Any], minutes: list[float | None]) -> bool:
    """Whether a one-metric alarm goes to ALARM over these per-minute Sums (None: no datapoint),
    evaluated as CloudWatch does after each period: the last EvaluationPeriods periods, missing
    ones per TreatMissingData, ALARM when at least DatapointsToAlarm of them breach."""
    assert alarm["Period"] == 60 and alarm["Statistic"] == "Sum", "the model has one-minute Sums"
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    n = alarm["EvaluationPeriods"]
    m = alarm.get("DatapointsToAlarm", n)
    treat = alarm.get("TreatMissingData", "missing")
    assert treat in ("notBreaching", "breaching"), "the model covers these two"
    for end in range(1, len(minutes) + 1):
        window = minutes[max(0, end - n):end]
        breaching = sum(
            (treat == "breaching") if v is None else v > alarm["Threshold"] for v in window
        )
        if breaching >= m:
            return True
    return False


@pytest.mark.parametrize("minutes", [
    [1],  # one HTTP request met the outage, then nobody asked for a while
    [1, None, None, None, None],
    [2, None, 1, None, 1, None],  # a request every other minute, each answered 503
    [5, 5, 5],  # a queue retrying through the outage
], ids=["one-request", "one-request-then-quiet", "every-other-minute", "three-minutes"])
def test_a_broken_guard_table_pages_on_one_failing_minute(minutes):
    alarm = emf_alarm(Stack(TRANSLATED), "Records.RETRY.guard-unavailable")

    assert alarm_fires(alarm, minutes), (alarm["EvaluationPeriods"], alarm.get("DatapointsToAlarm"))
    assert not alarm_fires(alarm, [None, 0, None, 0]), "fires with no failure"
    assert alarm["TreatMissingData"] == "notBreaching"
    assert alarm["AlarmDescription"].startswith("PAGE")


def test_a_stale_policy_has_its_variable_and_its_alarm_only_when_asked_for():
    off = Stack(TRANSLATED, **FROM_PARAMETER)
    assert "POLICY_MAX_AGE_SECONDS" not in env_of(off)
    assert not [a for a in alarms(off).values() if a.get("MetricName") == "Records.RETRY.policy-stale"]
    on = Stack(TRANSLATED, **FROM_PARAMETER, PolicyMaxAgeSeconds=900)
    assert env_of(on)["POLICY_MAX_AGE_SECONDS"] == 900
    alarm = emf_alarm(on, "Records.RETRY.policy-stale")
    assert alarm["TreatMissingData"] == "notBreaching"
    # an inline policy never goes stale: no variable even if the parameter is set
    assert "POLICY_MAX_AGE_SECONDS" not in env_of(Stack(TRANSLATED, Policy=POLICY, PolicyMaxAgeSeconds=900))


def test_the_template_offers_only_log_levels_that_keep_the_audit_trail():
    assert TRANSLATED["Parameters"]["LogLevel"]["AllowedValues"] == ["TRACE", "DEBUG", "INFO"]


def test_every_alarm_has_a_runbook_row_with_its_missing_data_choice():
    # The runbook table of docs/operations.md: | `AlarmName` | ... | missing data: notBreaching | ...
    runbook = (ROOT / "docs" / "operations.md").read_text()
    stack = Stack(TRANSLATED, **FROM_PARAMETER, EventBusName=BUS, PolicyMaxAgeSeconds=900)
    for name, alarm in stack.of_type("AWS::CloudWatch::Alarm").items():
        rows = [line for line in runbook.splitlines() if line.startswith(f"| `{name}`")]
        assert len(rows) == 1, f"{name}: no runbook row in docs/operations.md"
        treat = alarm["Properties"]["TreatMissingData"]
        assert treat in rows[0], f"{name}: the row does not state TreatMissingData {treat}"
