"""End to end (issue 17): an invited user's invitation resent, a reset with sign-out, and a caller
running into its budget, through the real binary against moto's Cognito and DynamoDB.

What reached "Cognito" is read from moto's request recorder (`driver.cognito_calls`), and the
sign-out is proven by moto itself: a refresh token issued before it no longer works after it.

Two moto quirks shape the set-up (checked in moto 5's cognitoidp/models.py):
- `AdminCreateUser` with `MessageAction=RESEND` validates the Username against the pool's
  `UsernameAttributes` even when resending, so in the email-username demo pool it refuses the
  canonical (GUID) username that Cognito accepts: the invited user lives in the plain-username pool
  (`driver.PLAIN_POOL`).
- `AdminUserGlobalSignOut` revokes the refresh tokens whose recorded user is the exact name it is
  given, and a login records the name it was given: the test logs in with the canonical username,
  which is what the function signs out.
"""

from __future__ import annotations

import copy
import json

import pytest

import stack as driver

HTTP_EVENT = "events/http-api-v2.json"
DIEGO = "diego@example.com"


def load(path: str) -> dict:
    return json.loads((driver.ROOT / path).read_text())


def http_request(body, caller: str | None = None) -> dict:
    """The sample HTTP API request (caller: helpdesk-portal/alice, or `caller`) with `body`."""
    event = copy.deepcopy(load(HTTP_EVENT))
    event["body"] = json.dumps(body)
    if caller is not None:
        event["requestContext"]["authorizer"]["iam"]["userArn"] = caller
    return event


def http_answer(answer: dict) -> tuple[int, dict]:
    assert "statusCode" in answer, f"expected an HTTP response, got {answer}"
    return answer["statusCode"], json.loads(answer["body"])


def test_an_invited_user_gets_the_invitation_again(function, users, stack):
    # Given ivy, invited and never signed in, in a pool whose rule resends invitations
    assert users()["ivy"].status == "FORCE_CHANGE_PASSWORD"
    # when the portal asks for her
    status, body = http_answer(
        function.invoke(http_request({"UserPoolId": driver.PLAIN_POOL, "Username": "ivy",
                                      "ClientMetadata": {"ticket": "INC-17"}}))
    )
    # then the invitation is resent (AdminCreateUser RESEND, with the metadata), not a reset
    assert (status, body["outcome"], body["action"]) == (200, "RESET", "resend-invitation"), body
    resends = driver.cognito_calls(stack.endpoint, "AdminCreateUser")
    assert [(c["Username"], c["MessageAction"], c.get("ClientMetadata")) for c in resends] == [
        ("ivy", "RESEND", {"ticket": "INC-17"})
    ]
    assert driver.cognito_calls(stack.endpoint, "AdminResetUserPassword") == []
    assert driver.cognito_calls(stack.endpoint, "AdminUserGlobalSignOut") == []
    # and the audit line says which action it was
    audit = [e for e in function.log_since_invoke() if driver._find(e, "outcome")]
    assert [driver._find(e, "action") for e in audit] == ["resend-invitation"], audit


def test_a_reset_with_sign_out_ends_the_users_sessions(function, users, stack):
    # Given diego signed in (a refresh token that works)
    cognito = stack.cognito()
    canonical = users()[DIEGO].username
    client_id = cognito.create_user_pool_client(
        UserPoolId=driver.DEMO_POOL, ClientName="e2e-sign-in", ExplicitAuthFlows=["ADMIN_NO_SRP_AUTH"]
    )["UserPoolClient"]["ClientId"]
    tokens = cognito.admin_initiate_auth(
        UserPoolId=driver.DEMO_POOL, ClientId=client_id, AuthFlow="ADMIN_NO_SRP_AUTH",
        AuthParameters={"USERNAME": canonical, "PASSWORD": driver.SEED_PASSWORD},
    )["AuthenticationResult"]

    def refresh():
        return cognito.admin_initiate_auth(
            UserPoolId=driver.DEMO_POOL, ClientId=client_id, AuthFlow="REFRESH_TOKEN_AUTH",
            AuthParameters={"REFRESH_TOKEN": tokens["RefreshToken"]},
        )

    assert refresh()["AuthenticationResult"]["AccessToken"]
    # when the portal resets him and asks for a sign-out
    status, body = http_answer(
        function.invoke(http_request({"UserPoolId": driver.DEMO_POOL, "Username": DIEGO, "SignOut": True}))
    )
    # then he is reset, signed out everywhere, and his refresh token no longer works
    assert (status, body["action"], body["signedOut"]) == (200, "reset-password", True), body
    assert users()[DIEGO].status == "RESET_REQUIRED"
    assert [c["Username"] for c in driver.cognito_calls(stack.endpoint, "AdminUserGlobalSignOut")] == [canonical]
    with pytest.raises(cognito.exceptions.NotAuthorizedException):
        refresh()


def test_a_caller_runs_into_its_budget_inside_one_batch(function, users, stack):
    # Given the ticket bot, whose rule admits 2 resets an hour
    bot = driver.TICKET_BOT
    batch = [{"UserPoolId": driver.DEMO_POOL, "Username": u}
             for u in ("diego@example.com", "erin@example.com", "frank@example.com", "olga@example.com")]
    # (olga is in the other pool: the rule refuses her, and a refusal spends nothing)
    batch[3]["UserPoolId"] = driver.OTHER_POOL
    # when it sends four requests in one batch (run concurrently by the function)
    status, body = http_answer(function.invoke(http_request(batch, caller=bot)))
    # then exactly two are reset and the third allowed one is refused with Retry-After
    assert status == 207, body
    statuses = sorted(r["status"] for r in body["results"][:3])
    assert statuses == [200, 200, 429], body
    refused = next(r for r in body["results"] if r["status"] == 429)
    assert refused["error"] == "caller-budget-exhausted", refused
    assert body["results"][3]["error"] == "pool-not-allowed", body
    assert sum(driver.reset_calls(stack.endpoint).values()) == 2
    # and the next request, alone, is refused without a Cognito call, with a Retry-After that
    # ends no later than two budget windows (2 × 3600 s) from now
    calls_before = len(driver.cognito_calls(stack.endpoint, "AdminResetUserPassword"))
    answer = function.invoke(http_request({"UserPoolId": driver.DEMO_POOL, "Username": "nemo@example.com"}, caller=bot))
    status, body = http_answer(answer)
    assert (status, body["error"]) == (429, "caller-budget-exhausted"), body
    retry_after = int(driver.header(answer, "retry-after"))
    assert 1 <= retry_after <= 7200, retry_after
    assert len(driver.cognito_calls(stack.endpoint, "AdminResetUserPassword")) == calls_before
    # and the guard table holds the budget item, counting 2
    budgets = [i for i in stack.guard_items() if str(i["pk"]).startswith("budget#")]
    assert [int(b["total"]) for b in budgets] == [2], budgets
