"""End to end: one function resets users in user pools of two regions (issue 11).

moto keeps regions apart, as Cognito does: a pool created in eu-west-1 is not found through a
us-west-2 client. The function (in us-west-2) must call each pool through its own region's client.
"""

from __future__ import annotations

import copy
import json

import boto3
import pytest

import stack as driver

HTTP_EVENT = "events/http-api-v2.json"
PASSWORD = "Demo-Passw0rd!"
ANYONE_IN_THE_PORTAL = {
    "version": 1,
    "rules": [
        {
            "name": "portal-any-region",
            "callers": ["arn:aws:sts::123456789012:assumed-role/helpdesk-portal/*"],
            "userPools": ["us-west-2_*", "eu-west-1_*"],
            "users": ["*@example.com"],
        }
    ],
}


def cognito_in(stack, region: str):
    return boto3.client(
        "cognito-idp",
        endpoint_url=stack.endpoint,
        region_name=region,
        aws_access_key_id=driver.DUMMY_KEY,
        aws_secret_access_key=driver.DUMMY_KEY,
    )


def pool_with_user(client, name: str, email: str) -> str:
    pool = client.create_user_pool(PoolName=name, UsernameAttributes=["email"])["UserPool"]["Id"]
    client.admin_create_user(
        UserPoolId=pool,
        Username=email,
        UserAttributes=[{"Name": "email", "Value": email}, {"Name": "email_verified", "Value": "true"}],
        MessageAction="SUPPRESS",
    )
    client.admin_set_user_password(UserPoolId=pool, Username=email, Password=PASSWORD, Permanent=True)
    return pool


def request_for(pool: str, username: str) -> dict:
    event = copy.deepcopy(json.loads((driver.ROOT / HTTP_EVENT).read_text()))
    event["body"] = json.dumps({"UserPoolId": pool, "Username": username})
    return event


@pytest.fixture(scope="module")
def multi_region_function(stack, tmp_path_factory):
    policy = tmp_path_factory.mktemp("regions") / "policy.json"
    policy.write_text(json.dumps(ANYONE_IN_THE_PORTAL))
    try:
        return stack.start_function(
            label="function-regions", POLICY_FILE=str(policy), DEFAULT_USER_POOL_ID=None
        )
    except driver.StackError as e:
        pytest.fail(f"the multi-region function did not start: {e}", pytrace=False)


def test_one_function_resets_users_in_pools_of_two_regions(stack, multi_region_function, users):
    # Given a pool in eu-west-1 (moto: invisible from us-west-2) and one in us-west-2
    eu = cognito_in(stack, "eu-west-1")
    us = cognito_in(stack, "us-west-2")
    eu_pool = pool_with_user(eu, "regions-eu", "ines@example.com")
    us_pool = pool_with_user(us, "regions-us", "uma@example.com")
    assert eu_pool.startswith("eu-west-1_") and us_pool.startswith("us-west-2_")
    with pytest.raises(us.exceptions.ResourceNotFoundException):
        us.admin_get_user(UserPoolId=eu_pool, Username="ines@example.com")

    # When the portal asks the one function for both
    for pool, email in ((eu_pool, "ines@example.com"), (us_pool, "uma@example.com")):
        answer = multi_region_function.invoke(request_for(pool, email))
        body = json.loads(answer["body"])
        assert answer["statusCode"] == 200, body
        assert body["outcome"] == "RESET"

    # Then each user is reset in its own region
    assert eu.admin_get_user(UserPoolId=eu_pool, Username="ines@example.com")["UserStatus"] == "RESET_REQUIRED"
    assert us.admin_get_user(UserPoolId=us_pool, Username="uma@example.com")["UserStatus"] == "RESET_REQUIRED"


def test_a_pool_naming_no_aws_region_is_refused_without_a_call(multi_region_function, users):
    answer = multi_region_function.invoke(request_for("mars-east-1_abcdef", "ines@example.com"))
    body = json.loads(answer["body"])
    assert answer["statusCode"] == 400, body
    assert body["error"] == "invalid-request"
    assert "UserPoolId" in body["message"]
