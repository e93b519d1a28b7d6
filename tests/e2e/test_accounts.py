"""End to end: user pools in another AWS account, through a role there (issue 18, POOL_ROLES).

moto keeps accounts apart: the partner account's pool (tools/stack.py seeds it, with the
credentials of an AssumeRole of the partner role) is not found with the function's own
credentials. moto implements AssumeRole (the assumed access key is filed under the role's account)
but does not check the external id, so the test reads it from moto's request recording.

Each function here is the module's own and touches the partner pool in one test only: a reseed
drops the assumed access keys moto issued, and a function keeps its credentials for their hour.
"""

from __future__ import annotations

import copy
import json

import pytest

import stack as driver

HTTP_EVENT = "events/http-api-v2.json"


def request_for(pool: str, username: str) -> dict:
    """The sample HTTP request (caller helpdesk-portal/alice: the demo policy's helpdesk rule,
    which names the partner pool too) for `username` in `pool`."""
    event = copy.deepcopy(json.loads((driver.ROOT / HTTP_EVENT).read_text()))
    event["body"] = json.dumps({"UserPoolId": pool, "Username": username})
    return event


def _start(stack, label: str, **env):
    try:
        return stack.start_function(label=label, **env)
    except driver.StackError as e:
        pytest.fail(f"{label} did not start: {e}", pytrace=False)


@pytest.fixture(scope="module")
def mapped_function(stack):
    """The function as configured for the demo: POOL_ROLES maps the partner pool to its role."""
    return _start(stack, "function-pool-roles")


@pytest.fixture(scope="module")
def unmapped_function(stack):
    """The same function without POOL_ROLES."""
    return _start(stack, "function-no-pool-roles", POOL_ROLES=None)


def test_four_resets_in_another_account_go_through_one_assumed_role_with_its_external_id(
    stack, mapped_function, users
):
    # Given four users in the partner account's pool, which POOL_ROLES maps to its role
    assert mapped_function.env["POOL_ROLES"] == driver.POOL_ROLES
    before = driver.partner_user_states(stack.endpoint)
    assert {s.status for s in before.values()} == {"CONFIRMED"}

    # When the portal asks for each of them
    audit = []
    for email in driver.PARTNER_USERS:
        answer = mapped_function.invoke(request_for(driver.PARTNER_POOL, email))
        body = json.loads(answer["body"])
        assert (answer["statusCode"], body.get("outcome")) == (200, "RESET"), body
        audit += [e for e in mapped_function.log_since_invoke() if driver._find(e, "pool_account")]

    # Then each is reset in the partner account
    after = driver.partner_user_states(stack.endpoint)
    assert {e: s.status for e, s in after.items()} == {e: "RESET_REQUIRED" for e in driver.PARTNER_USERS}
    # through one AssumeRole of the mapped role, with its external id, as session cognito-reset
    assumed = driver.assume_role_calls(stack.endpoint)
    assert len(assumed) == 1, assumed
    assert assumed[0]["RoleArn"] == driver.PARTNER_ROLE
    assert assumed[0]["ExternalId"] == driver.PARTNER_EXTERNAL_ID
    assert assumed[0]["RoleSessionName"] == "cognito-reset"
    resets = stack.reset_calls()
    assert {pool for pool, _ in resets} == {driver.PARTNER_POOL}
    assert sum(resets.values()) == 4
    # And the audit lines and the outcome events name the pool's account; the events are on the
    # function's own account's bus (the results queue is read with the function's credentials)
    assert [driver._find(e, "pool_account") for e in audit] == [driver.PARTNER_ACCOUNT] * 4
    events = stack.take_events(count=4)
    assert [e["detail"].get("poolAccount") for e in events] == [driver.PARTNER_ACCOUNT] * 4, events


def test_the_same_pool_without_a_mapping_is_not_found_in_the_functions_own_account(
    stack, unmapped_function, users
):
    # Given the partner pool, and a function with no POOL_ROLES
    answer = unmapped_function.invoke(request_for(driver.PARTNER_POOL, driver.PARTNER_USERS[0]))
    body = json.loads(answer["body"])
    # Then the pool is looked up in the function's own account: no such pool, no role assumed
    assert (answer["statusCode"], body.get("error")) == (404, "pool-not-found"), body
    assert driver.assume_role_calls(stack.endpoint) == []
    assert driver.partner_user_states(stack.endpoint)[driver.PARTNER_USERS[0]].status == "CONFIRMED"
    assert stack.reset_calls() == {}
