"""Pools in other accounts (issue 18): the central template's grant to assume the target roles
and its POOL_ROLES wiring, and deploy/target-account-role.yaml, the role each target account
creates (trust and permissions), checked after resolving their conditions.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from samtranslator.yaml_helper import yaml_parse

from test_template import COGNITO_ACTIONS, RESEND_ACTION, TRANSLATED, Stack, as_list, policy_statements

TARGET = Path(__file__).resolve().parents[2] / "deploy" / "target-account-role.yaml"
RAW_TARGET = yaml_parse(TARGET.read_text())
ROLE_A = "arn:aws:iam::222233334444:role/cognito-reset-target"
ROLE_B = "arn:aws:iam::333344445555:role/team/cognito-reset-target"
POOL_ROLES = '{"eu-west-1_abc": {"roleArn": "%s", "externalId": "ext-1"}}' % ROLE_A


def assume_statements(stack: Stack) -> list[dict]:
    return [
        s
        for s in policy_statements(stack)
        if any(str(a).lower().startswith("sts:") or a == "*" for a in as_list(s["Action"]))
    ]


def environment(stack: Stack) -> dict:
    _, function = stack.one("AWS::Lambda::Function")
    return function["Properties"]["Environment"]["Variables"]


def test_by_default_no_role_may_be_assumed_and_no_pool_is_mapped():
    stack = Stack(TRANSLATED)
    assert assume_statements(stack) == []
    env = environment(stack)
    assert "POOL_ROLES" not in env
    # The function learns its own account from the template, not from a call at start-up
    assert env["FUNCTION_ACCOUNT_ID"] == {"Ref": "AWS::AccountId"}


@pytest.mark.parametrize("external_id", ["", "ext-1"])
def test_the_grant_names_exactly_the_target_roles_with_the_external_id_when_given(external_id):
    stack = Stack(
        TRANSLATED,
        TargetRoleArns=[ROLE_A, ROLE_B],
        TargetRoleExternalId=external_id,
        PoolRoles=POOL_ROLES,
    )
    [statement] = assume_statements(stack)
    assert statement["Effect"] == "Allow"
    assert as_list(statement["Action"]) == ["sts:AssumeRole"]
    assert "NotResource" not in statement and "NotAction" not in statement
    assert statement["Resource"] == [ROLE_A, ROLE_B]
    if external_id:
        assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": external_id}}
    else:
        assert "Condition" not in statement
    assert environment(stack)["POOL_ROLES"] == POOL_ROLES


def test_pool_roles_without_target_roles_is_refused_by_a_rule():
    rule = TRANSLATED["Rules"]["PoolRolesNeedTargetRoles"]
    assert rule["RuleCondition"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "PoolRoles"}, ""]}]}
    [assertion] = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Not": [{"Fn::Contains": [{"Ref": "TargetRoleArns"}, ""]}]}


@pytest.mark.parametrize(
    "arn, allowed",
    [
        (ROLE_A, True),
        (ROLE_B, True),
        ("", True),  # the default: no role
        ("*", False),
        ("arn:aws:iam::222233334444:role/*", False),
        ("arn:aws:iam::*:role/cognito-reset-target", False),
        ("arn:aws:iam::222233334444:user/alice", False),
        ("arn:aws:sts::222233334444:assumed-role/r/s", False),
    ],
)
def test_target_role_parameter_admits_only_single_role_arns(arn, allowed):
    pattern = TRANSLATED["Parameters"]["TargetRoleArns"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, arn)) is allowed


def test_the_functions_role_arn_is_an_output_for_the_target_accounts():
    assert TRANSLATED["Outputs"]["FunctionRoleArn"]["Value"] == {"Fn::GetAtt": ["FunctionRole", "Arn"]}


# ---- deploy/target-account-role.yaml ------------------------------------------------------------


def target_role(**params) -> dict:
    stack = Stack(RAW_TARGET, FunctionRoleArn="arn:aws:iam::111122223333:role/central", ExternalId="ext-1", **params)
    [(_, role)] = stack.of_type("AWS::IAM::Role").items()
    assert set(stack.resources) == {"TargetRole"}
    return role["Properties"]


def test_the_target_role_trusts_only_the_functions_role_with_the_external_id():
    trust = as_list(target_role()["AssumeRolePolicyDocument"]["Statement"])
    assert trust == [
        {
            "Sid": "OnlyTheCognitoResetFunctionWithTheExternalId",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::111122223333:role/central"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": "ext-1"}},
        }
    ]
    # The external id has no default: no stack of this template trusts without one
    params = RAW_TARGET["Parameters"]
    assert "Default" not in params["ExternalId"] and params["ExternalId"]["MinLength"] == 2
    assert "Default" not in params["FunctionRoleArn"]


def cognito_grant(properties: dict) -> dict:
    statements = [s for p in properties["Policies"] for s in as_list(p["PolicyDocument"]["Statement"])]
    [statement] = statements
    return statement


def test_the_target_role_may_call_only_the_functions_cognito_actions_on_the_named_pools():
    pools = ["arn:aws:cognito-idp:eu-west-1:222233334444:userpool/eu-west-1_abc"]
    statement = cognito_grant(target_role(UserPoolArns=pools))
    assert statement["Effect"] == "Allow"
    # The same actions as the function's own grant: a new Cognito call needs both
    assert set(as_list(statement["Action"])) == COGNITO_ACTIONS
    assert statement["Resource"] == pools


def test_the_target_role_may_resend_invitations_only_when_asked():
    # AdminCreateUser cannot be limited to RESEND by IAM: off unless AllowInvitationResend=true,
    # like the central stack's grant, on the same pools.
    pools = ["arn:aws:cognito-idp:eu-west-1:222233334444:userpool/eu-west-1_abc"]
    properties = target_role(UserPoolArns=pools, AllowInvitationResend="true")
    statements = [s for p in properties["Policies"] for s in as_list(p["PolicyDocument"]["Statement"])]
    assert [as_list(s["Action"]) for s in statements][1] == [RESEND_ACTION]
    assert [s["Resource"] for s in statements] == [pools, pools]
    assert RAW_TARGET["Parameters"]["AllowInvitationResend"]["Default"] == "false"
    assert "cannot limit AdminCreateUser to RESEND" in RAW_TARGET["Parameters"]["AllowInvitationResend"]["Description"]


def test_without_named_pools_the_target_role_covers_every_pool_of_its_own_account_only():
    statement = cognito_grant(target_role())
    assert statement["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:cognito-idp:*:${AWS::AccountId}:userpool/*"
    }
    assert set(as_list(statement["Action"])) == COGNITO_ACTIONS
