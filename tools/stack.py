#!/usr/bin/env python3
"""The local stack: moto server as Cognito and DynamoDB, the real function under `cargo lambda watch`.

One driver for `make demo`, `make local`, `make invoke` and the end-to-end tests (tests/e2e/):

    python tools/stack.py demo                 # start, seed, send the sample events, print a table, stop
    python tools/stack.py local                # start, seed, stay in the foreground until Ctrl-C
    python tools/stack.py invoke EVENT.json    # send one event to the running `local` stack
    python tools/stack.py users                # print the demo users' status in the running stack
    python tools/stack.py events               # print (and take) the outcome events on the results queue
    python tools/stack.py put-policy FILE      # put FILE as a new version of the policy parameter

moto also serves the function's guard table (GUARD_TABLE, DynamoDB) and records every request it
receives, so tests and the demo can count the AdminResetUserPassword calls that reached "Cognito".
It serves the operations side too (issue 10): an EventBridge bus (EVENT_BUS) with a rule routing
the function's outcome events (source cognito-reset) to a results SQS queue, and the policy as an
SSM parameter (POLICY_PARAMETER), re-read by the function every few seconds.

Every process is started on a free loopback port, in its own process group; readiness is polled
with a bounded timeout; everything is stopped (the whole process tree) on exit, on failure, on
Ctrl-C and on SIGTERM, and the ports are checked to be free again. Nothing here talks to real
AWS: the function is pointed at moto with AWS_ENDPOINT_URL and dummy credentials.

Run it with the stack venv's python (`.tools/stack/bin/python`, made by `make tools`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STACK_BIN = ROOT / ".tools" / "stack" / "bin"
RUN_DIR = ROOT / ".run"
LOCAL_ENV = RUN_DIR / "local.env"

REGION = "us-west-2"
FUNCTION = "cognito-reset"
DUMMY_KEY = "testing"
LOOPBACK = "127.0.0.1"

# Pool ids are fixed by moto's HASH id strategy: the hash covers every create_user_pool
# parameter, so the pools must be created with exactly these arguments.
DEMO_POOL_NAME = "cognito-reset-demo"
OTHER_POOL_NAME = "cognito-reset-other"
DEMO_POOL = "us-west-2_1f950f4f389b723d0775ea6ef7e4b3c47b3100fa6981c"
OTHER_POOL = "us-west-2_2f998a3be4a521a9ccaf1f58b65d71c475bcf4bd57df8"
# A pool whose usernames are plain names (no UsernameAttributes), for the invited user (issue 17):
# moto's AdminCreateUser RESEND validates the Username against the pool's UsernameAttributes even
# when resending, so in an email-username pool it refuses the canonical (GUID) username that
# Cognito accepts; here the canonical username is the name itself.
PLAIN_POOL_NAME = "cognito-reset-plain"
PLAIN_POOL = "us-west-2_3cb16e0c4e06d6da7481c048fd3580f0c31baeba31c42"
# The caller whose rule has a budget in policy/demo.json (2 resets an hour).
TICKET_BOT = "arn:aws:sts::123456789012:assumed-role/ticket-bot/run-1"
# The caller whose rule in policy/demo.json requires a ticket (`INC` and seven digits) (issue 27).
HELPDESK_TICKETS = "arn:aws:sts::123456789012:assumed-role/helpdesk-tickets/agent-7"
DEMO_TICKET = "INC0012345"
SEED_PASSWORD = "Demo-Passw0rd!"

# A second AWS account (issue 18): its pool is reached through a role there, as POOL_ROLES maps it.
# moto keeps accounts apart (a pool created with that account's credentials is not found with the
# function's own), implements AssumeRole (the role need not exist; the assumed credentials' access
# key belongs to the role's account) and does not check the external id, so the tests check that
# it was sent. The function's own account is moto's default, 123456789012.
FUNCTION_ACCOUNT = "123456789012"
PARTNER_ACCOUNT = "222233334444"
PARTNER_ROLE = f"arn:aws:iam::{PARTNER_ACCOUNT}:role/cognito-reset-target"
PARTNER_EXTERNAL_ID = "cognito-reset-demo-7f3a"
PARTNER_POOL_NAME = "cognito-reset-partner"
# moto's HASH id of the pool (the same id in any account: the hash covers only its parameters).
PARTNER_POOL = "us-west-2_63881b4524b8e36d68db3284e8f9648d7bca78666badc"
PARTNER_USERS = ("paula@example.com", "pedro@example.com", "petra@example.com", "pia@example.com")
POOL_ROLES = json.dumps(
    {PARTNER_POOL: {"roleArn": PARTNER_ROLE, "externalId": PARTNER_EXTERNAL_ID}}, separators=(",", ":")
)

DEMO_POLICY = ROOT / "policy" / "demo.json"

# The guard's table (issue 8), created in moto after every reset with the schema the function
# expects: String partition key `pk`, TTL on the Number attribute `expiresAt`.
GUARD_TABLE = "cognito-reset-guard"
# The local stack's cooldown, short enough to watch it end; the function's own default is 300 s.
LOCAL_COOLDOWN_SECONDS = 30
# Outcome events (issue 10): the function puts one event per final outcome on this bus; a rule on
# it routes source "cognito-reset" to the results queue, as a ticketing system would subscribe.
EVENT_BUS = "cognito-reset-events"
EVENT_SOURCE = "cognito-reset"
EVENT_DETAIL_TYPE = "Password Reset Outcome"
RESULTS_QUEUE = "cognito-reset-results"
RESULTS_RULE = "cognito-reset-outcomes-to-results"
# The policy as live configuration: an SSM parameter holding policy/demo.json after every seed,
# re-read by a function started with policy="parameter" every LOCAL_POLICY_REFRESH_SECONDS
# (the function's default is 60).
POLICY_PARAMETER = "/cognito-reset/policy"
LOCAL_POLICY_REFRESH_SECONDS = 2
# The template's default redrive maxReceiveCount: a record on its 5th receive that still ends
# RETRY is reported as GAVE_UP.
LOCAL_MAX_RECEIVE_COUNT = 5
EVENT_WAIT_TIMEOUT_S = 10.0
# How the SDK names the Cognito operations in X-Amz-Target (what moto's recorder keeps).
COGNITO_TARGET = "AWSCognitoIdentityProviderService."

MOTO_READY_TIMEOUT_S = 30.0
# The first run compiles the function (and its dependencies): allow for a cold build on 2 cores.
FUNCTION_READY_TIMEOUT_S = 900.0
INVOKE_TIMEOUT_S = 120.0
STOP_GRACE_S = 5.0
PORT_FREE_TIMEOUT_S = 10.0


class StackError(RuntimeError):
    """Something in the stack did not come up or did not answer; the message says what to do."""


# ---- the demo users -------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoUser:
    """One seeded user: CONFIRMED with a verified email unless stated otherwise."""

    email: str
    groups: tuple[str, ...] = ("staff",)
    pool: str = DEMO_POOL
    enabled: bool = True
    email_verified: bool = True
    # Invited by AdminCreateUser and never signed in: FORCE_CHANGE_PASSWORD.
    invited: bool = False
    note: str = ""


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("diego@example.com", note="allowed"),
    DemoUser("erin@example.com", note="allowed"),
    DemoUser("admin@example.com", note="denied by name"),
    DemoUser("mallory@example.com", ("staff", "admins"), note="denied by group"),
    DemoUser("frank@example.com", ("staff", "contractors"), note="rule exception"),
    DemoUser("dora@example.com", enabled=False, note="disabled"),
    DemoUser("nemo@example.com", email_verified=False, note="no verified email"),
    DemoUser("olga@example.com", pool=OTHER_POOL, note="other pool"),
    DemoUser("paul@example.com", note="reset with sign-out"),
    DemoUser("bob@example.com", note="ticket-bot's"),
    DemoUser("carol@example.com", note="ticket-bot's"),
    DemoUser("gina@example.com", note="ticket-bot's"),
    DemoUser("tina@example.com", note="reset for a ticket"),
    DemoUser("ivy", pool=PLAIN_POOL, invited=True, note="invited, never signed in"),
)


def cognito_client(endpoint: str):
    """A boto3 Cognito client for moto at `endpoint` (dummy credentials, never real AWS)."""
    import boto3  # imported here so `--help` works without the stack venv

    return boto3.client(
        "cognito-idp",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=DUMMY_KEY,
        aws_secret_access_key=DUMMY_KEY,
    )


def dynamodb_client(endpoint: str):
    """A boto3 DynamoDB client for moto at `endpoint` (dummy credentials, never real AWS)."""
    import boto3

    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=DUMMY_KEY,
        aws_secret_access_key=DUMMY_KEY,
    )


def aws_client(service: str, endpoint: str):
    """A boto3 client of `service` for moto at `endpoint` (dummy credentials, never real AWS)."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=DUMMY_KEY,
        aws_secret_access_key=DUMMY_KEY,
    )


# The session name of this driver's own AssumeRole calls (seeding, reading the partner users),
# which assume_role_calls leaves out: it reports the function's.
DRIVER_SESSION = "stack-driver"


def partner_client(service: str, endpoint: str):
    """A boto3 client of `service` in the partner account: credentials from moto's AssumeRole of
    PARTNER_ROLE (moto files them under that account)."""
    import boto3

    credentials = aws_client("sts", endpoint).assume_role(
        RoleArn=PARTNER_ROLE, RoleSessionName=DRIVER_SESSION, ExternalId=PARTNER_EXTERNAL_ID
    )["Credentials"]
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def seed_partner_pool(endpoint: str) -> None:
    """The partner account's pool: PARTNER_USERS, CONFIRMED with verified emails, in group staff."""
    client = partner_client("cognito-idp", endpoint)
    got = client.create_user_pool(PoolName=PARTNER_POOL_NAME, UsernameAttributes=["email"])["UserPool"]["Id"]
    if got != PARTNER_POOL:
        raise StackError(f"the partner pool was created as {got}, expected {PARTNER_POOL}")
    client.create_group(UserPoolId=PARTNER_POOL, GroupName="staff")
    for email in PARTNER_USERS:
        client.admin_create_user(
            UserPoolId=PARTNER_POOL,
            Username=email,
            UserAttributes=[{"Name": "email", "Value": email}, {"Name": "email_verified", "Value": "true"}],
            MessageAction="SUPPRESS",
        )
        client.admin_set_user_password(UserPoolId=PARTNER_POOL, Username=email, Password=SEED_PASSWORD, Permanent=True)
        client.admin_add_user_to_group(UserPoolId=PARTNER_POOL, Username=email, GroupName="staff")


def partner_user_states(endpoint: str) -> dict[str, UserState]:
    """The partner users' state, read in the partner account."""
    client = partner_client("cognito-idp", endpoint)
    states = {}
    for email in PARTNER_USERS:
        got = client.admin_get_user(UserPoolId=PARTNER_POOL, Username=email)
        states[email] = UserState(got["Username"], got["UserStatus"], got["Enabled"])
    return states


def assume_role_calls(endpoint: str) -> list[dict[str, str]]:
    """The form parameters of every AssumeRole request moto received since the last seed, but this
    driver's own (session DRIVER_SESSION)."""
    from urllib.parse import parse_qs

    calls = []
    for line in _moto_api(endpoint, "recorder/download-recording", "GET").decode().splitlines():
        entry = json.loads(line)
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            import base64

            body = base64.b64decode(body).decode()
        if isinstance(body, str) and "Action=AssumeRole" in body:
            params = {k: v[0] for k, v in parse_qs(body).items()}
            if params.get("RoleSessionName") != DRIVER_SESSION:
                calls.append(params)
    return calls


def _moto_api(endpoint: str, path: str, method: str = "POST") -> bytes:
    request = urllib.request.Request(f"{endpoint}/moto-api/{path}", method=method)
    with urllib.request.urlopen(request, timeout=10) as r:
        return r.read()


def create_guard_table(endpoint: str) -> None:
    """The guard table as the template creates it: `pk` (S) hash key, on demand, TTL `expiresAt`."""
    client = dynamodb_client(endpoint)
    client.create_table(
        TableName=GUARD_TABLE,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(
        TableName=GUARD_TABLE, WaiterConfig={"Delay": 1, "MaxAttempts": 10}
    )
    client.update_time_to_live(
        TableName=GUARD_TABLE,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiresAt"},
    )


def create_event_routing(endpoint: str) -> str:
    """The bus, the results queue and the rule between them; returns the results queue's URL.

    The rule matches the function's source only, as a ticketing system's rule would; moto delivers
    PutEvents entries that match a rule to its SQS targets (the whole EventBridge event as the body).
    """
    events, sqs = aws_client("events", endpoint), aws_client("sqs", endpoint)
    events.create_event_bus(Name=EVENT_BUS)
    url = sqs.create_queue(QueueName=RESULTS_QUEUE)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(
        Name=RESULTS_RULE,
        EventBusName=EVENT_BUS,
        EventPattern=json.dumps({"source": [EVENT_SOURCE]}),
        Description="cognito-reset outcomes to the results queue",
    )
    events.put_targets(Rule=RESULTS_RULE, EventBusName=EVENT_BUS, Targets=[{"Id": "results", "Arn": arn}])
    return url


def results_queue_url(endpoint: str) -> str:
    return aws_client("sqs", endpoint).get_queue_url(QueueName=RESULTS_QUEUE)["QueueUrl"]


def take_events(endpoint: str, count: int | None = None, timeout: float = EVENT_WAIT_TIMEOUT_S) -> list[dict]:
    """Receive and delete the EventBridge events on the results queue, in arrival order.

    With `count`, polls until that many arrived (or `timeout` passed: fewer are returned, and the
    caller's assertion says what is missing); without it, until the queue answers empty once.
    Events are deleted as they are read, so each call sees only what arrived since the last one.
    """
    sqs = aws_client("sqs", endpoint)
    url = results_queue_url(endpoint)
    found: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=30)
        messages = got.get("Messages", [])
        for message in messages:
            found.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        if count is None and not messages:
            break
        if count is not None and len(found) >= count:
            break
        if not messages:
            time.sleep(0.1)
    return found


def put_policy(endpoint: str, document: dict | str) -> int:
    """Put a new version of the policy parameter (a dict as JSON, or text as it is); its version."""
    text = document if isinstance(document, str) else json.dumps(document, indent=2)
    return aws_client("ssm", endpoint).put_parameter(
        Name=POLICY_PARAMETER, Value=text, Type="String", Overwrite=True, Tier="Standard"
    )["Version"]


def policy_parameter(endpoint: str) -> dict:
    """The policy parameter as SSM has it now (Value, Version, ...)."""
    return aws_client("ssm", endpoint).get_parameter(Name=POLICY_PARAMETER)["Parameter"]


def guard_items(endpoint: str) -> list[dict]:
    """Every item in the guard table, as plain Python values (numbers as Decimal)."""
    from boto3.dynamodb.types import TypeDeserializer

    client = dynamodb_client(endpoint)
    plain = TypeDeserializer().deserialize
    items = []
    for page in client.get_paginator("scan").paginate(TableName=GUARD_TABLE, ConsistentRead=True):
        items += [{k: plain(v) for k, v in item.items()} for item in page["Items"]]
    return items


def cognito_calls(endpoint: str, operation: str) -> list[dict]:
    """The JSON bodies of the `operation` requests moto received since the last seed, in order.

    Read from moto's request recorder: what reached "Cognito", whatever the function says.
    """
    calls = []
    for line in _moto_api(endpoint, "recorder/download-recording", "GET").decode().splitlines():
        entry = json.loads(line)
        headers = {k.lower(): v for k, v in entry.get("headers", {}).items()}
        if headers.get("x-amz-target") != COGNITO_TARGET + operation:
            continue
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            import base64

            body = base64.b64decode(body).decode()
        calls.append(json.loads(body or "{}"))
    return calls


def reset_calls(endpoint: str) -> dict[tuple[str, str], int]:
    """(pool id, username) -> AdminResetUserPassword calls moto received since the last seed."""
    counts: dict[tuple[str, str], int] = {}
    for call in cognito_calls(endpoint, "AdminResetUserPassword"):
        key = (call.get("UserPoolId", ""), call.get("Username", ""))
        counts[key] = counts.get(key, 0) + 1
    return counts


def seed(endpoint: str) -> None:
    """Reset moto; create the two pools, the demo users, the partner account's pool and users, an
    empty guard table, the event bus with
    its rule to an empty results queue, and the policy parameter holding policy/demo.json (version 1).

    Pool ids come out fixed. moto's reset also drops the table, the bus, the queue and the
    parameter (with its versions), so they are created again here, and the request recording
    starts afresh. A function reading the parameter sees version 1 again after a reseed.
    """
    _moto_api(endpoint, "reset")
    client = cognito_client(endpoint)
    pools = (
        (DEMO_POOL_NAME, DEMO_POOL, {"UsernameAttributes": ["email"]}),
        (OTHER_POOL_NAME, OTHER_POOL, {"UsernameAttributes": ["email"]}),
        (PLAIN_POOL_NAME, PLAIN_POOL, {}),
    )
    for name, expected, settings in pools:
        got = client.create_user_pool(PoolName=name, **settings)["UserPool"]["Id"]
        if got != expected:
            raise StackError(
                f"pool {name} was created as {got}, expected {expected}: is moto running with "
                "MOTO_COGNITO_IDP_USER_POOL_ID_STRATEGY=HASH and the pinned version?"
            )
    for pool in {u.pool for u in DEMO_USERS}:
        for group in sorted({g for u in DEMO_USERS if u.pool == pool for g in u.groups}):
            client.create_group(UserPoolId=pool, GroupName=group)
    for user in DEMO_USERS:
        attributes = [
            {"Name": "email", "Value": user.email},
            {"Name": "email_verified", "Value": "true" if user.email_verified else "false"},
        ]
        client.admin_create_user(
            UserPoolId=user.pool,
            Username=user.email,
            UserAttributes=attributes,
            MessageAction="SUPPRESS",
        )
        if not user.invited:
            client.admin_set_user_password(
                UserPoolId=user.pool, Username=user.email, Password=SEED_PASSWORD, Permanent=True
            )
        for group in user.groups:
            client.admin_add_user_to_group(UserPoolId=user.pool, Username=user.email, GroupName=group)
        if not user.enabled:
            client.admin_disable_user(UserPoolId=user.pool, Username=user.email)
    seed_partner_pool(endpoint)
    create_guard_table(endpoint)
    create_event_routing(endpoint)
    put_policy(endpoint, DEMO_POLICY.read_text())
    _moto_api(endpoint, "recorder/reset-recording")


@dataclass(frozen=True)
class UserState:
    """What moto says about one user: canonical username, status, enabled."""

    username: str
    status: str
    enabled: bool

    def label(self) -> str:
        return self.status if self.enabled else f"{self.status} (disabled)"


def seeded_status(email: str) -> str:
    """A demo user's status right after the seed: FORCE_CHANGE_PASSWORD if invited, else CONFIRMED."""
    user = next(u for u in DEMO_USERS if u.email == email)
    return "FORCE_CHANGE_PASSWORD" if user.invited else "CONFIRMED"


def user_states(endpoint: str) -> dict[str, UserState]:
    """The current state of every demo user, keyed by email."""
    client = cognito_client(endpoint)
    states = {}
    for user in DEMO_USERS:
        got = client.admin_get_user(UserPoolId=user.pool, Username=user.email)
        states[user.email] = UserState(got["Username"], got["UserStatus"], got["Enabled"])
    return states


# ---- processes ------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, port)) == 0


def _children_of() -> dict[int, list[int]]:
    """Parent pid → child pids, from /proc (Linux)."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the command name is in parentheses and may contain spaces: split after the last ')'
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, whatever process group or session it moved to."""
    tree, found, todo = _children_of(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the driver itself is killed (best effort)."""
    with contextlib.suppress(Exception):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Service:
    """One started process tree on one loopback port."""

    name: str
    proc: subprocess.Popen
    port: int
    log: Path | None
    _log_file: object = None

    def log_tail(self, lines: int = 40) -> str:
        if self.log is None or not self.log.exists():
            return "(output went to the terminal)"
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        """Stop the whole tree: SIGTERM the group, then SIGKILL what is left; wait for the port."""
        pids = [self.proc.pid, *descendants(self.proc.pid)]
        groups = {self.proc.pid}
        for pid in pids:
            with contextlib.suppress(OSError):
                groups.add(os.getpgid(pid))
        for group in groups:
            with contextlib.suppress(OSError):
                os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=0.1)
            pids += [d for p in list(pids) for d in descendants(p) if d not in pids]
        for pid in pids:
            if _alive(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        for group in groups:
            with contextlib.suppress(OSError):
                os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=STOP_GRACE_S)
        if self._log_file is not None:
            self._log_file.close()
        deadline = time.monotonic() + PORT_FREE_TIMEOUT_S
        while port_open(self.port):
            if time.monotonic() > deadline:
                raise StackError(f"{self.name}: port {self.port} is still bound after stopping")
            time.sleep(0.1)
        leftover = [p for p in pids if _alive(p)]
        if leftover:
            raise StackError(f"{self.name}: processes {leftover} are still running after SIGKILL")


def _spawn(name: str, argv: list[str], env: dict[str, str], port: int, log: Path | None) -> Service:
    log_file = None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log, "wb")  # noqa: SIM115 - closed in Service.stop
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT if log_file else None,
        start_new_session=True,  # own process group: the terminal's Ctrl-C reaches only us
        preexec_fn=_die_with_parent,
    )
    return Service(name, proc, port, log, log_file)


def _wait_until(what: str, service: Service, timeout: float, probe) -> None:
    """Poll `probe()` until it returns true; fail early if the process exits; bounded by timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if probe():
            return
        code = service.proc.poll()
        if code is not None:
            raise StackError(
                f"{service.name} exited with status {code} before {what}; its output:\n"
                f"{service.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise StackError(
                f"{service.name}: no {what} within {timeout:.0f}s; its output:\n{service.log_tail()}"
            )
        time.sleep(0.2)


def tool(name: str) -> str:
    """The path of a tool installed in the stack venv, or a StackError saying how to get it."""
    path = STACK_BIN / name
    if not path.exists():
        raise StackError(f"{path} is missing: run `make test` (or `make tools`) to install the stack tools")
    return str(path)


def check_tools() -> None:
    """Fail with a clear message when a tool of the stack is missing."""
    tool("cargo-lambda")
    tool("moto_server")
    if shutil.which("cargo") is None:
        raise StackError("cargo is not on PATH: install the Rust toolchain (rustup)")
    try:
        import boto3  # noqa: F401
        import moto  # noqa: F401
    except ImportError as e:
        raise StackError(
            f"{e.name} is not importable by {sys.executable}: run `make test`, which installs the "
            "stack venv and runs the tests with .tools/stack/bin/python"
        ) from None


def base_env() -> dict[str, str]:
    """Our environment without anything that could reach real AWS, plus the stack venv on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "MOTO_")) and k not in ("CARGO_LAMBDA_CONTEXT",)
    }
    env["PATH"] = f"{STACK_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def start_moto(log: Path | None, recording: Path, atomic: bool = True,
               switch_interval_us: float | None = None) -> tuple[Service, str]:
    """moto server on a free loopback port, with reproducible pool ids; returns (service, url).

    Every request it receives is appended to `recording` (read back with `cognito_calls`). With
    `atomic` (always, but in the test that shows why), it is tools/moto_atomic.py: moto whose
    DynamoDB serves one request at a time, so a conditional write is atomic as in DynamoDB.
    `switch_interval_us` sets the server's thread switch interval (to make races likely).
    """
    port = free_port()
    recording.parent.mkdir(parents=True, exist_ok=True)
    recording.write_text("")
    env = base_env() | {
        "MOTO_COGNITO_IDP_USER_POOL_ID_STRATEGY": "HASH",
        "MOTO_ENABLE_RECORDING": "true",
        "MOTO_RECORDER_FILEPATH": str(recording),
    }
    argv = [tool("python"), str(ROOT / "tools" / "moto_atomic.py")]
    if not atomic:
        argv.append("--unlocked")
    if switch_interval_us is not None:
        argv.append(f"--switch-interval-us={switch_interval_us}")
    service = _spawn("moto", [*argv, "-H", LOOPBACK, "-p", str(port)], env, port, log)
    url = f"http://{LOOPBACK}:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    try:
        _wait_until("answering on /moto-api", service, MOTO_READY_TIMEOUT_S, ready)
    except BaseException:
        service.stop()
        raise
    return service, url


def function_env(endpoint: str, policy: str = "file", **overrides: str) -> dict[str, str]:
    """The function's configuration: demo policy, moto endpoint, dummy credentials, the guard,
    the outcome events.

    The guard table is moto's (same endpoint); the cooldown is the local stack's short one. The
    outcome events go to moto's bus (EVENT_BUS), and MAX_RECEIVE_COUNT is the template's default.
    `policy` "file" reads policy/demo.json (POLICY_FILE); "parameter" reads the SSM parameter
    (POLICY_PARAMETER, the same document after a seed) and re-reads it every
    LOCAL_POLICY_REFRESH_SECONDS. An override of None removes a variable (e.g. GUARD_TABLE=None:
    no guard, EVENT_BUS=None: no events).
    """
    if policy == "file":
        source = {"POLICY_FILE": str(DEMO_POLICY)}
    elif policy == "parameter":
        source = {"POLICY_PARAMETER": POLICY_PARAMETER, "POLICY_REFRESH_SECONDS": str(LOCAL_POLICY_REFRESH_SECONDS)}
    else:
        raise ValueError(f"policy must be 'file' or 'parameter', not {policy!r}")
    env = {
        **source,
        "DEFAULT_USER_POOL_ID": DEMO_POOL,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": DUMMY_KEY,
        "AWS_SECRET_ACCESS_KEY": DUMMY_KEY,
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "DRY_RUN": "false",
        "GUARD_TABLE": GUARD_TABLE,
        "RESET_COOLDOWN_SECONDS": str(LOCAL_COOLDOWN_SECONDS),
        "EVENT_BUS": EVENT_BUS,
        "MAX_RECEIVE_COUNT": str(LOCAL_MAX_RECEIVE_COUNT),
        # As the template sets them: the function's own account, and the partner account's pool
        # reached through its role.
        "FUNCTION_ACCOUNT_ID": FUNCTION_ACCOUNT,
        "POOL_ROLES": POOL_ROLES,
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


@dataclass
class Function:
    """The real `cognito-reset` binary behind cargo-lambda's Runtime API emulator."""

    service: Service
    env: dict[str, str]
    log_offset: int = 0
    env_file: Path | None = None

    @property
    def port(self) -> int:
        return self.service.port

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/2015-03-31/functions/{FUNCTION}/invocations"

    def invoke(self, event, timeout: float = INVOKE_TIMEOUT_S) -> dict:
        """Send one event (a dict, or a path to a JSON file) and return the function's answer.

        A function error (the runtime's `{"errorType", "errorMessage"}`) is returned as it is.
        The emulator never answers when the function process dies (a start-up failure, a panic),
        so the request runs in a thread while this one watches the process and the log.
        """
        if isinstance(event, (str, Path)):
            event = json.loads((ROOT / event).read_text())
        status, body = self.post(event, timeout)
        try:
            return json.loads(body)
        except ValueError:
            raise StackError(f"{FUNCTION} answered {status} with non-JSON: {body[:500]!r}") from None

    def post(self, event, timeout: float) -> tuple[int, bytes]:
        """POST one event to the emulator; (HTTP status, body), bounded by `timeout`."""
        self.log_offset = self._log_size()
        request = urllib.request.Request(
            self.url,
            data=json.dumps(event).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        result: dict = {}

        def send() -> None:
            try:
                with urllib.request.urlopen(request, timeout=timeout) as r:
                    result["answer"] = (r.status, r.read())
            except urllib.error.HTTPError as e:
                result["answer"] = (e.code, e.read())
            except (urllib.error.URLError, OSError) as e:
                result["error"] = e

        sender = threading.Thread(target=send, name="invoke", daemon=True)
        sender.start()
        deadline = time.monotonic() + timeout
        while sender.is_alive():
            sender.join(0.2)
            if not sender.is_alive():
                break
            if self.service.proc.poll() is not None:
                raise StackError(f"cargo lambda watch exited during an invoke:\n{self.service.log_tail()}")
            if FUNCTION_EXITED in self._log_since(self.log_offset):
                raise StackError(
                    f"{FUNCTION} exited instead of answering (a start-up error or a crash); "
                    f"emulator output:\n{self.service.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise StackError(f"{FUNCTION} did not answer within {timeout:.0f}s:\n{self.service.log_tail()}")
        if "error" in result:
            raise StackError(
                f"invoking {FUNCTION} on port {self.port} failed: {result['error']}; emulator output:\n"
                f"{self.service.log_tail()}"
            )
        return result["answer"]

    def _log_since(self, offset: int) -> str:
        log = self.service.log
        if log is None or not log.exists():
            return ""
        with open(log, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def _log_size(self) -> int:
        log = self.service.log
        return log.stat().st_size if log is not None and log.exists() else 0

    def log_mark(self) -> int:
        """A position in the function's log, for log_since(): what is written from now on."""
        return self._log_size()

    def log_since_invoke(self) -> list[dict]:
        """JSON log lines written by the function since the last invoke (the audit trail)."""
        return self.log_since(self.log_offset)

    def log_since(self, mark: int) -> list[dict]:
        """JSON log lines written by the function since `mark` (from log_mark())."""
        text = self._log_since(mark)
        entries = []
        for line in text.splitlines():
            start = line.find("{")
            if start < 0:
                continue
            with contextlib.suppress(ValueError):
                entry = json.loads(line[start:])
                if isinstance(entry, dict):
                    entries.append(entry)
        return entries

    def emf_since_invoke(self) -> list[dict]:
        """The EMF documents (CloudWatch embedded metric format) written since the last invoke."""
        return [e for e in self.log_since_invoke() if isinstance(e.get("_aws"), dict)]

    def wait_for_log(self, predicate, timeout: float = 5.0) -> list[dict]:
        """Poll the log since the last invoke until `predicate(entries)` holds; the entries.

        The function writes its lines as it goes; the emulator copies them to the log a moment
        later, so a line written last (the EMF document) may land just after the answer.
        """
        deadline = time.monotonic() + timeout
        while True:
            entries = self.log_since_invoke()
            if predicate(entries) or time.monotonic() > deadline:
                return entries
            time.sleep(0.1)

    def stop(self) -> None:
        try:
            self.service.stop()
        finally:
            _remove_env_file(self.env_file)


WARM_UP_EVENT = {"cognito-reset-stack": "warm-up"}
# What cargo-lambda's watch prints when the function process ends (it then never answers).
FUNCTION_EXITED = "command exited"


def _env_value(value: str) -> str:
    """A value for cargo-lambda's --env-file (dotenv): single-quoted (literal) unless plain."""
    if all(c.isalnum() or c in "_-./:,@=+" for c in value):
        return value
    if "'" in value or "\n" in value:
        raise StackError(f"cannot pass {value!r} through an env file")
    return f"'{value}'"


def start_function(
    env: dict[str, str],
    log: Path | None,
    *,
    reload: bool = False,
    concurrency: int = 1,
    timeout: float = FUNCTION_READY_TIMEOUT_S,
) -> Function:
    """`cargo lambda watch` on a free loopback port, ready once the function answers an invoke.

    The function's configuration goes in through an --env-file; watch's own environment is ours
    minus every AWS_* variable. Without `reload`, source edits (by someone else in the same
    checkout) do not restart the function under a running demo or test. `concurrency` > 1 lets the
    emulator run that many function processes at once (as Lambda runs execution environments).
    """
    port = free_port()
    run_dir = log.parent if log is not None else Path(tempfile.mkdtemp(dir=_run_dir(), prefix="fn-"))
    env_file = run_dir / f"function-{port}.env"
    env_file.write_text("".join(f"{k}={_env_value(v)}\n" for k, v in env.items()))
    argv = [
        tool("cargo-lambda"),
        "lambda",
        "watch",
        "--bin",
        FUNCTION,
        "--locked",
        # the features the Makefile builds with: another feature set would recompile the SDK
        "--features",
        "enqueue",
        "--invoke-address",
        LOOPBACK,
        "--invoke-port",
        str(port),
        "--env-file",
        str(env_file),
    ]
    if not reload:
        argv.append("--ignore-changes")
    if concurrency > 1:
        argv += ["--concurrency", str(concurrency)]
    watch_env = base_env() | {"CARGO_TERM_COLOR": "never", "NO_COLOR": "1"}
    service = _spawn("cargo lambda watch", argv, watch_env, port, log)
    function = Function(service, env, env_file=env_file)
    try:
        _wait_until("the emulator's port to open", service, 60, lambda: port_open(port))
        # The first invoke waits for the compile and the function's start-up; any answer, even a
        # function error for this unknown event, means the function is up.
        function.post(WARM_UP_EVENT, timeout)
        return function
    except BaseException:
        function.stop()
        raise


def _remove_env_file(env_file: Path | None) -> None:
    """Remove a function's --env-file (and the temporary directory it was put in, if any)."""
    if env_file is None:
        return
    env_file.unlink(missing_ok=True)
    if env_file.parent.name.startswith("fn-"):
        with contextlib.suppress(OSError):
            env_file.parent.rmdir()


def _run_dir() -> Path:
    RUN_DIR.mkdir(exist_ok=True)
    return RUN_DIR


@dataclass
class Stack:
    """moto + the function; a context manager that always stops both."""

    name: str = "stack"
    quiet: bool = True
    moto: Service | None = None
    endpoint: str = ""
    functions: list[Function] = field(default_factory=list)

    def log_path(self, what: str) -> Path | None:
        return _run_dir() / self.name / f"{what}.log" if self.quiet else None

    def __enter__(self) -> Stack:
        check_tools()
        try:
            self.moto, self.endpoint = start_moto(self.log_path("moto"), _run_dir() / self.name / "moto-recording.jsonl")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def seed(self) -> None:
        seed(self.endpoint)

    def cognito(self):
        return cognito_client(self.endpoint)

    def user_states(self) -> dict[str, UserState]:
        return user_states(self.endpoint)

    def guard_items(self) -> list[dict]:
        return guard_items(self.endpoint)

    def reset_calls(self) -> dict[tuple[str, str], int]:
        return reset_calls(self.endpoint)

    def resets_of(self, email: str) -> int:
        """AdminResetUserPassword calls moto received for a demo user since the last seed.

        The function resets by canonical username, so both it and the email are counted.
        """
        user = next(u for u in DEMO_USERS if u.email == email)
        canonical = self.user_states()[email].username
        calls = self.reset_calls()
        by_email = calls.get((user.pool, email), 0) if canonical != email else 0
        return calls.get((user.pool, canonical), 0) + by_email

    def take_events(self, count: int | None = None, timeout: float = EVENT_WAIT_TIMEOUT_S) -> list[dict]:
        return take_events(self.endpoint, count, timeout)

    def put_policy(self, document: dict | str) -> int:
        return put_policy(self.endpoint, document)

    def start_function(
        self,
        *,
        label: str = "function",
        reload: bool = False,
        concurrency: int = 1,
        policy: str = "file",
        **env: str,
    ) -> Function:
        """Start one more function instance; `policy` "file" or "parameter" (see function_env);
        `env` overrides the default configuration."""
        merged = function_env(self.endpoint, policy, **env)
        function = start_function(merged, self.log_path(label), reload=reload, concurrency=concurrency)
        self.functions.append(function)
        return function

    def stop_function(self, function: Function) -> None:
        self.functions.remove(function)
        function.stop()

    def stop(self) -> None:
        """Stop every process; raise only after trying them all. A second Ctrl-C waits for it."""
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            self._stop_all()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    def _stop_all(self) -> None:
        errors = []
        for function in reversed(self.functions):
            try:
                function.stop()
            except Exception as e:  # noqa: BLE001 - keep stopping the rest
                errors.append(e)
        self.functions.clear()
        if self.moto is not None:
            try:
                self.moto.stop()
            except Exception as e:  # noqa: BLE001
                errors.append(e)
            self.moto = None
        if errors:
            raise StackError("; ".join(str(e) for e in errors))


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_on_signals():
    """Turn SIGINT, SIGTERM and SIGHUP into KeyboardInterrupt so every `finally` runs.

    SIGINT is set explicitly: a shell starts background jobs with SIGINT ignored, and Python then
    keeps it ignored.
    """

    def handler(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# ---- the demo -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoStep:
    """One invoke of the demo: a sample event, optionally with an Idempotency-Key header added or
    cut down to one of its SQS records (to deliver that message again)."""

    name: str
    path: str
    idempotency_key: str | None = None
    record: int | None = None
    # An HTTP sample with this body (JSON) instead of its own, and this caller's role ARN.
    body: object = None
    caller: str | None = None

    def event(self) -> dict:
        event = json.loads((ROOT / self.path).read_text())
        if self.body is not None:
            event["body"] = json.dumps(self.body)
        if self.caller is not None:
            event["requestContext"]["authorizer"]["iam"]["userArn"] = self.caller
        if self.idempotency_key is not None:
            event = with_idempotency_key(event, self.idempotency_key)
        if self.record is not None:
            event = {**event, "Records": [event["Records"][self.record]]}
        return event


# The sample events in order, with the guard's three cases woven in: a portal retrying with the
# same Idempotency-Key, a second request for a user reset a moment ago, and an SQS message
# delivered twice. One function, one guard table: later requests for diego and erin meet the cooldown.
DEMO_STEPS = (
    DemoStep("http-api-v2 +key", "events/http-api-v2.json", idempotency_key="portal-INC-1234"),
    DemoStep("http-api-v2 +key (retried)", "events/http-api-v2.json", idempotency_key="portal-INC-1234"),
    DemoStep("http-api-v2 (again)", "events/http-api-v2.json"),
    DemoStep("http-api-v2-batch", "events/http-api-v2-batch.json"),
    DemoStep("sqs-standard", "events/sqs-standard.json"),
    DemoStep("sqs-standard (redelivered)", "events/sqs-standard.json", record=0),
    DemoStep("sqs-fifo", "events/sqs-fifo.json"),
    DemoStep("sns-in-sqs", "events/sns-in-sqs.json"),
    DemoStep("alb", "events/alb.json"),
    # A pool in a second account (POOL_ROLES): reset through the role the function assumes there.
    DemoStep("http-api-v2 (2nd account)", "events/http-api-v2.json", body={"UserPoolId": PARTNER_POOL, "Username": PARTNER_USERS[0]}),
    # Issue 17: an invited user's invitation resent, a reset with sign-out, a caller's budget.
    DemoStep("invited (resend)", "events/http-api-v2.json", body={"UserPoolId": PLAIN_POOL, "Username": "ivy"}),
    DemoStep("SignOut: true", "events/http-api-v2.json",
             body={"UserPoolId": DEMO_POOL, "Username": "paul@example.com", "SignOut": True}),
    DemoStep("ticket-bot batch", "events/http-api-v2.json", caller=TICKET_BOT,
             body=[{"UserPoolId": DEMO_POOL, "Username": u}
                   for u in ("bob@example.com", "carol@example.com", "gina@example.com")]),
    # Issue 27: a rule that binds resets to a helpdesk ticket (INC and seven digits).
    DemoStep("no Ticket", "events/http-api-v2.json", caller=HELPDESK_TICKETS,
             body={"UserPoolId": DEMO_POOL, "Username": "tina@example.com"}),
    DemoStep("Ticket: INC-42", "events/http-api-v2.json", caller=HELPDESK_TICKETS,
             body={"UserPoolId": DEMO_POOL, "Username": "tina@example.com", "Ticket": "INC-42"}),
    DemoStep(f"Ticket: {DEMO_TICKET}", "events/http-api-v2.json", caller=HELPDESK_TICKETS,
             body={"UserPoolId": DEMO_POOL, "Username": "tina@example.com", "Ticket": DEMO_TICKET}),
)


def with_idempotency_key(event: dict, key: str) -> dict:
    """A copy of an HTTP event with the `Idempotency-Key` header set (as API Gateway passes it)."""
    event = json.loads(json.dumps(event))
    headers = {k: v for k, v in (event.get("headers") or {}).items() if k.lower() != "idempotency-key"}
    event["headers"] = headers | {"idempotency-key": key}
    if "multiValueHeaders" in event:  # REST API v1 and ALB events carry both forms
        multi = {k: v for k, v in event["multiValueHeaders"].items() if k.lower() != "idempotency-key"}
        event["multiValueHeaders"] = multi | {"idempotency-key": [key]}
    return event


def header(answer: dict, name: str) -> str | None:
    """A response header of an HTTP answer, by case-insensitive name (single or multi-value form)."""
    for key, value in (answer.get("headers") or {}).items():
        if key.lower() == name.lower():
            return value
    for key, values in (answer.get("multiValueHeaders") or {}).items():
        if key.lower() == name.lower() and values:
            return values[0]
    return None


def caller_of(event: dict) -> str:
    """A short label for who is asking, as the event tells it."""
    if "Records" in event:
        arn = event["Records"][0].get("eventSourceARN", "")
        return "sqs:" + arn.rsplit(":", 1)[-1]
    context = event.get("requestContext", {})
    iam = context.get("authorizer", {}).get("iam") or context.get("identity") or {}
    if iam.get("userArn"):
        return "role " + iam["userArn"].split(":assumed-role/", 1)[-1]
    claims = context.get("authorizer", {}).get("jwt", {}).get("claims")
    if claims:
        return "jwt client " + claims.get("client_id", "?")
    return "anonymous"


def _request_items(event: dict) -> list[tuple[str, str]]:
    """(id, user) for each request in the event: HTTP body items or SQS records."""
    items = []
    if "Records" in event:
        for record in event["Records"]:
            items.append((record["messageId"], _user_in_body(record.get("body", ""))))
        return items
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        import base64

        body = base64.b64decode(body).decode()
    try:
        parsed = json.loads(body)
    except ValueError:
        return [("0", "?")]
    for i, item in enumerate(parsed if isinstance(parsed, list) else [parsed]):
        items.append((str(i), _who(item)))
    return items


def _user_in_body(body: str) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        return f"(not JSON: {body[:24]!r})"
    if isinstance(parsed, dict) and parsed.get("Type") == "Notification":
        return _user_in_body(parsed.get("Message", "")) + " via SNS"
    return _who(parsed)


def _who(item) -> str:
    if not isinstance(item, dict):
        return "?"
    user = item.get("Username", "?")
    pool = item.get("UserPoolId")
    if pool == PLAIN_POOL:
        return f"{user} (plain pool)"
    if pool == PARTNER_POOL:
        return f"{user} (account {PARTNER_ACCOUNT})"
    return user if pool in (None, DEMO_POOL) else f"{user} (other pool)"


def _find(entry, key: str):
    """The first value of `key` anywhere in a nested log entry."""
    if isinstance(entry, dict):
        if key in entry and not isinstance(entry[key], (dict, list)):
            return entry[key]
        for value in entry.values():
            found = _find(value, key)
            if found is not None:
                return found
    elif isinstance(entry, list):
        for value in entry:
            found = _find(value, key)
            if found is not None:
                return found
    return None


def _mentions(entry, needle: str) -> bool:
    if isinstance(entry, dict):
        return any(_mentions(v, needle) for v in entry.values())
    if isinstance(entry, list):
        return any(_mentions(v, needle) for v in entry)
    return entry == needle


def _replayed(outcome: str, replayed) -> str:
    return f"{outcome} (replayed)" if replayed is True else outcome


def rows_for(name: str, event: dict, answer: dict, audit: list[dict]) -> list[list[str]]:
    """Table rows (request, caller, user, outcome, code) for one event and its answer."""
    caller = caller_of(event)
    rows = []
    if "Records" in event:
        retried = {f.get("itemIdentifier") for f in answer.get("batchItemFailures", [])}
        for message_id, user in _request_items(event):
            lines = [e for e in audit if _mentions(e, message_id)]
            outcome = next((_find(e, "outcome") for e in lines if _find(e, "outcome")), None)
            code = next((_find(e, "code") for e in lines if _find(e, "code")), None)
            replayed = any(_find(e, "replayed") is True for e in lines)
            if message_id in retried:
                verdict = "RETRY (batchItemFailures)"
            else:
                verdict = _replayed(f"{outcome or 'acknowledged'}", replayed)
            base, _, note = name.partition(" ")  # "sqs-standard (redelivered)" -> "sqs-standard #01 (redelivered)"
            label = f"{base} #{message_id[-2:]} {note}".rstrip()
            rows.append([label, caller, user, verdict, str(code or "")])
        return rows
    status = answer.get("statusCode")
    try:
        body = json.loads(answer.get("body") or "{}")
    except ValueError:
        body = {"error": "(non-JSON body)"}
    items = _request_items(event)
    if isinstance(body, dict) and "results" in body:
        for result, (_, user) in zip(body["results"], items + [("?", "?")] * len(body["results"])):
            outcome = _replayed(_with_action(result) or "REJECTED", result.get("replayed"))
            rows.append([
                f"{name} [{result.get('index')}]",
                caller,
                user,
                outcome,
                f"{result.get('status')} {result.get('error', '')}".strip(),
            ])
        return rows
    if "statusCode" not in answer:  # a function error, not an HTTP response
        return [[name, caller, items[0][1], "FUNCTION ERROR", str(answer)[:60]]]
    replayed = body.get("replayed") is True or header(answer, "Idempotent-Replayed") == "true"
    outcome = _replayed(_with_action(body) or "REJECTED", replayed)
    code = f"{status} {body.get('error', '')}".strip()
    retry_after = header(answer, "Retry-After")
    if retry_after is not None:
        code += f" (Retry-After {retry_after})"
    rows.append([name, caller, items[0][1], outcome, code])
    return rows


def _with_action(body: dict) -> str | None:
    """`RESET`, with what was done when it was not a plain password reset: `RESET
    resend-invitation`, `RESET +signed out` (or `+sign-out failed: <code>`)."""
    outcome = body.get("outcome")
    if not outcome:
        return None
    if body.get("action") not in (None, "reset-password"):
        outcome += f" {body['action']}"
    if body.get("signedOut") is True:
        outcome += " +signed out"
    elif body.get("signedOut") is False:
        outcome += f" +sign-out failed: {body.get('signOutError', '?')}"
    return outcome


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


ERIN = "erin@example.com"
# How long the demo waits for the function to pick up a new parameter version: a few refresh
# intervals plus an invoke's worth of slack (the refresh runs between invocations).
POLICY_TAKES_EFFECT_TIMEOUT_S = 3 * LOCAL_POLICY_REFRESH_SECONDS + 15.0
PROBE_INTERVAL_S = 0.5


def _event_order(events: list[dict]) -> list[dict]:
    """Events grouped by request in arrival order; an HTTP batch's items (`<requestId>#<i>`) by index."""
    first_seen: dict[str, int] = {}
    for n, event in enumerate(events):
        first_seen.setdefault(str((event.get("detail") or {}).get("id", "")).split("#")[0], n)

    def key(item: tuple[int, dict]) -> tuple[int, int, int]:
        n, event = item
        request, _, index = str((event.get("detail") or {}).get("id", "")).partition("#")
        return first_seen[request], int(index) if index.isdigit() else -1, n

    return [event for _, event in sorted(enumerate(events), key=key)]


def event_rows(events: list[dict]) -> list[list[str]]:
    """Table rows (outcome, code, source, user, id, replayed / ticket) for EventBridge events from the
    results queue. A replay's event (a repeated idempotency key or SQS message) says so: count it
    once. An event of a request with a `Ticket` shows it."""
    rows = []
    for event in _event_order(events):
        detail = event.get("detail") or {}
        rows.append([
            str(detail.get("outcome", "?")),
            str(detail.get("code") or ""),
            str(detail.get("source", "")),
            str(detail.get("requestedUsername") or "(none)"),
            str(detail.get("id", "")),
            " ".join(filter(None, [
                "replayed" if detail.get("replayed") else "",
                f"ticket {detail['ticket']}" if detail.get("ticket") else "",
            ])),
        ])
    return rows


def _reset_ticket(endpoint: str, username: str) -> str:
    """The `ticket` of the ClientMetadata of the last AdminResetUserPassword moto received for
    `username` (the canonical one: the function resets by it), or `(none)`."""
    canonical = cognito_client(endpoint).admin_get_user(UserPoolId=DEMO_POOL, Username=username)["Username"]
    calls = [c for c in cognito_calls(endpoint, "AdminResetUserPassword") if c.get("Username") == canonical]
    return ((calls[-1].get("ClientMetadata") or {}).get("ticket") or "(none)") if calls else "(none)"


def http_request_for(username: str) -> dict:
    """The sample HTTP API request (caller: helpdesk-portal/alice) for `username` in the demo pool."""
    event = json.loads((ROOT / "events" / "http-api-v2.json").read_text())
    event["body"] = json.dumps({"UserPoolId": DEMO_POOL, "Username": username})
    return event


@dataclass
class Probe:
    """One request's answer as the demo shows it, with the policy version its audit line names."""

    answer: str
    policy_version: str
    log: list[dict]


def probe(function: Function, username: str) -> Probe:
    answer = function.invoke(http_request_for(username))
    body = json.loads(answer.get("body") or "{}") if "statusCode" in answer else {}
    text = f"{answer.get('statusCode')} {body.get('outcome') or body.get('error') or answer}".strip()
    log = function.wait_for_log(lambda entries: any(_find(e, "policy_version") is not None for e in entries))
    version = next((_find(e, "policy_version") for e in log if _find(e, "policy_version") is not None), None)
    return Probe(text, "?" if version is None else str(version), log)


def probe_until(function: Function, username: str, done, timeout: float) -> tuple[Probe, float, int]:
    """Send requests for `username` until `done(probe)` (bounded); (last probe, seconds, requests)."""
    started = time.monotonic()
    requests = 0
    while True:
        result = probe(function, username)
        requests += 1
        if done(result):
            return result, time.monotonic() - started, requests
        if time.monotonic() - started > timeout:
            raise StackError(
                f"the function did not take up the new policy version within {timeout:.0f}s "
                f"(last answer for {username}: {result.answer}, policy_version {result.policy_version}); "
                f"its output:\n{function.service.log_tail()}"
            )
        time.sleep(PROBE_INTERVAL_S)


def _refusal_lines(log: list[dict]) -> list[dict]:
    """The function's log lines about a refused policy version (not EMF documents)."""
    return [
        e for e in log
        if "_aws" not in e and "refus" in json.dumps(e).lower() and "polic" in json.dumps(e).lower()
    ]


def _refused(log: list[dict]) -> bool:
    """Whether the log shows a refused policy version: a refusal line, or PolicyRefusals counted."""
    emf = [e for e in log if isinstance(e.get("_aws"), dict)]
    return any((e.get("PolicyRefusals") or 0) > 0 for e in emf) or bool(_refusal_lines(log))


def _refusal_text(entry: dict) -> list[str]:
    """A refusal log line as a few readable lines: the message, the versions, every error."""
    fields = entry.get("fields") if isinstance(entry.get("fields"), dict) else entry
    head = f"{entry.get('level', '')} {fields.get('message', '')}".strip()
    versions = ", ".join(
        f"{k} {fields[k]}" for k in ("refused_version", "kept_version", "error_count") if k in fields
    )
    lines = [head + (f" ({versions})" if versions else "")]
    cause = fields.get("error.cause_chain") or fields.get("error") or ""
    lines += [f"    {line}" for line in str(cause).splitlines()]
    return lines


def live_policy_demo(stack: Stack, function: Function) -> None:
    """Put a policy version that denies erin, wait until it is in force, show erin refused; then put
    an invalid version and show it refused while the last good policy holds."""
    print(
        f"\nLive policy: the function reads {POLICY_PARAMETER} (SSM) and re-reads it every "
        f"{LOCAL_POLICY_REFRESH_SECONDS} s (POLICY_REFRESH_SECONDS; the default is 60).\n",
        flush=True,
    )
    rows = []
    before = probe(function, ERIN)
    rows.append([f"version {policy_parameter(stack.endpoint)['Version']} (policy/demo.json)",
                 "", ERIN, before.answer, before.policy_version])

    document = json.loads(DEMO_POLICY.read_text())
    document["deny"]["users"].append(ERIN)
    version = stack.put_policy(document)
    denied, waited, requests = probe_until(
        function, ERIN, lambda p: "denied-user" in p.answer, POLICY_TAKES_EFFECT_TIMEOUT_S
    )
    rows.append([f"version {version}: deny.users += {ERIN}", f"in force after {waited:.1f}s ({requests} requests)",
                 ERIN, denied.answer, denied.policy_version])

    # A typo that would widen access if it were taken: "user" for "users" drops erin's deny.
    invalid = json.loads(json.dumps(document))
    invalid["deny"]["user"] = invalid["deny"].pop("users")
    mark = function.log_mark()
    bad_version = stack.put_policy(invalid)
    refused, waited, requests = probe_until(
        function, ERIN, lambda _: _refused(function.log_since(mark)), POLICY_TAKES_EFFECT_TIMEOUT_S
    )
    refusal_log = function.log_since(mark)
    rows.append([f"version {bad_version}: deny.user (a typo), invalid", f"refused after {waited:.1f}s ({requests} requests)",
                 ERIN, refused.answer, refused.policy_version])
    print(table(["parameter", "refresh", "user", "answer", "policy_version"], rows))
    lines = _refusal_lines(refusal_log)
    print("\nthe function's log on the invalid version:")
    if not lines:
        print("  (no log line found; the EMF document counted PolicyRefusals)")
    for entry in lines[:1]:
        for line in _refusal_text(entry):
            print("  " + line)
    print(
        f"\npolicy_version: the parameter version in force, from the audit line. erin was reset above and\n"
        f"is in the cooldown (409 recently-reset) until version {version} denies her (403 denied-user);\n"
        f"version {bad_version} is refused and version {version} stays in force.",
        flush=True,
    )
    stack.take_events()  # the probes' events: not part of the table above


def demo() -> int:
    started = time.monotonic()
    with Stack(name="demo") as stack:
        print(f"moto (local Cognito, DynamoDB, EventBridge, SQS and SSM) on {stack.endpoint}; seeding the demo pools, the guard table, the event bus and the policy parameter", flush=True)
        stack.seed()
        before = stack.user_states()
        print("starting cognito-reset under `cargo lambda watch` (the first run compiles it)", flush=True)
        function = stack.start_function(policy="parameter")
        print(
            f"function ready on 127.0.0.1:{function.port} after {time.monotonic() - started:.1f}s; "
            f"policy {DEMO_POLICY.relative_to(ROOT)} from the SSM parameter {POLICY_PARAMETER}; "
            f"outcome events on the bus {EVENT_BUS}; guard table {GUARD_TABLE} with a "
            f"{LOCAL_COOLDOWN_SECONDS} s cooldown for the demo\n"
            f"(RESET_COOLDOWN_SECONDS={LOCAL_COOLDOWN_SECONDS}; the function's defaults stand otherwise: "
            "a 300 s cooldown, idempotency keys kept 86400 s)\n",
            flush=True,
        )
        rows = []
        for step in DEMO_STEPS:
            event = step.event()
            answer = function.invoke(event)
            rows += rows_for(step.name, event, answer, function.log_since_invoke())
        after = stack.user_states()
        resets = {u.email: stack.resets_of(u.email) for u in DEMO_USERS}
        print(table(["request", "caller", "user", "outcome", "code"], rows))
        print(
            "\nHTTP rows: the response's status and error code. SQS rows: outcome and code from the\n"
            "function's audit log; REJECTED records are acknowledged, RETRY ones are handed back in\n"
            "batchItemFailures. +key: sent with an Idempotency-Key header; (replayed): the earlier answer\n"
            "given again from the guard table (HTTP: Idempotent-Replayed: true), without a Cognito call;\n"
            "recently-reset: the user was reset less than the cooldown ago (Retry-After: seconds left).\n"
            "reset calls: AdminResetUserPassword calls moto received for the user (nemo's fail: no\n"
            "verified email). ivy was invited and never signed in, so her rule resends the\n"
            "invitation (AdminCreateUser RESEND) instead; paul's reset is followed by a sign-out\n"
            "everywhere (AdminUserGlobalSignOut); the ticket bot's rule admits 2 resets an hour, so the\n"
            "third of its batch is refused (429 caller-budget-exhausted, Retry-After: until the budget\n"
            "admits one more), without a Cognito call. The helpdesk-tickets rule requires a ticket\n"
            f"matching INC[0-9]{{7}}: without one, 400 ticket-required; INC-42, 400 ticket-invalid (both\n"
            f"before any write or Cognito call); {DEMO_TICKET} resets tina, and Cognito's ClientMetadata\n"
            f"carried ticket={_reset_ticket(stack.endpoint, 'tina@example.com')} for the custom message trigger to quote.\n"
        )
        user_rows = [
            [
                u.email,
                {DEMO_POOL: "demo", PLAIN_POOL: "plain"}.get(u.pool, "other"),
                ",".join(u.groups),
                u.note,
                before[u.email].label(),
                after[u.email].label(),
                str(resets[u.email]),
            ]
            for u in DEMO_USERS
        ]
        print(table(["user", "pool", "groups", "seeded as", "before", "after", "reset calls"], user_rows))
        partner = partner_user_states(stack.endpoint)
        assumed = assume_role_calls(stack.endpoint)
        print(
            f"\nA second account ({PARTNER_ACCOUNT}): its pool {PARTNER_POOL_NAME} is mapped in POOL_ROLES to "
            f"{PARTNER_ROLE}\n(external id set). {PARTNER_USERS[0]} there is now {partner[PARTNER_USERS[0]].label()}; "
            f"AssumeRole calls moto received: {len(assumed)} "
            f"(RoleSessionName {', '.join(sorted({c.get('RoleSessionName', '?') for c in assumed})) or '-'}, "
            f"ExternalId {'sent' if assumed and all(c.get('ExternalId') == PARTNER_EXTERNAL_ID for c in assumed) else 'MISSING'})."
        )
        events = stack.take_events()
        print(
            f"\nOutcome events on the results queue {RESULTS_QUEUE} (bus {EVENT_BUS}, rule {RESULTS_RULE}: "
            f"source [\"{EVENT_SOURCE}\"]), in arrival order (an HTTP batch's items by index):\n"
        )
        print(table(["outcome", "code", "source", "user", "id", ""], event_rows(events)) if events else "(none arrived)")
        print(
            "\nOne event per record with a final outcome (RESET, WOULD_RESET, REJECTED; GAVE_UP for an SQS\n"
            "record's last receive); HTTP RETRY answers and SQS RETRY records that will be redelivered emit none.",
            flush=True,
        )
        live_policy_demo(stack, function)
        mass_reset_demo(stack, function)
        approvals_demo(stack)
        limits_demo(stack)
        resolved_demo(stack)
        tracing_demo(stack)
    print(f"\nstack stopped; demo took {time.monotonic() - started:.1f}s")
    return 0


# ---- tracing: X-Ray segments over UDP (issue 26) ----------------------------------------------
# The function sends its spans as X-Ray segment documents to AWS_XRAY_DAEMON_ADDRESS, one UDP
# datagram each (`{"format": "json", "version": 1}` then the document, as the Lambda daemon reads
# them), each subsegment nested in its parent's document when both went in the same datagram.
# XrayDaemon stands in for the daemon on a loopback port (and takes nested subsegments out again);
# trace_tree prints what it got.

XRAY_WAIT_TIMEOUT_S = 10.0


def new_trace_id() -> str:
    """A fresh X-Ray trace id (`1-<epoch seconds, hex>-<96 random bits>`)."""
    import uuid

    return f"1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}"


def trace_header(trace_id: str, sampled: bool = True) -> str:
    """A Lambda-Runtime-Trace-Id value: the trace, a parent segment (Lambda's own), sampled or not."""
    import uuid

    return f"Root={trace_id};Parent={uuid.uuid4().hex[:16]};Sampled={1 if sampled else 0}"


class XrayDaemon:
    """A UDP listener on a free loopback port collecting segment documents (and the raw bytes)."""

    def __init__(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((LOOPBACK, 0))
        self._sock.settimeout(0.2)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.datagrams: list[bytes] = []
        self._thread = threading.Thread(target=self._receive, name="xray-daemon", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """The AWS_XRAY_DAEMON_ADDRESS value for the function."""
        return f"{LOOPBACK}:{self._sock.getsockname()[1]}"

    def _receive(self) -> None:
        while not self._stopping.is_set():
            try:
                data = self._sock.recv(65535)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            with self._lock:
                self.datagrams.append(data)

    def documents(self) -> list[dict]:
        """Every segment document received so far (the header line checked and dropped), each
        subsegment nested in another's `subsegments` taken out as a document of its own, with the
        `trace_id` and `parent_id` X-Ray gives it (those of the document it is nested in), as X-Ray
        itself stores them; one marked `"nested": true`."""
        with self._lock:
            datagrams = list(self.datagrams)
        documents = []
        for data in datagrams:
            header, _, body = data.partition(b"\n")
            if json.loads(header) != {"format": "json", "version": 1}:
                raise StackError(f"not an X-Ray daemon datagram: {data[:200]!r}")
            documents.extend(_unnest(json.loads(body)))
        return documents

    def trace(self, trace_id: str, timeout: float = XRAY_WAIT_TIMEOUT_S) -> list[dict]:
        """The documents of `trace_id`, once its invocation subsegment (the last span to end) came."""
        limit = time.monotonic() + timeout
        while True:
            found = [d for d in self.documents() if d.get("trace_id") == trace_id]
            if any(d.get("name") == "invocation" for d in found):
                return found
            if time.monotonic() > limit:
                raise StackError(f"no invocation segment of trace {trace_id} within {timeout:.0f}s "
                                 f"({len(found)} documents of it, {len(self.documents())} in all)")
            time.sleep(0.02)

    def stop(self) -> None:
        self._stopping.set()
        self._sock.close()
        self._thread.join(timeout=5)


def _unnest(document: dict) -> list[dict]:
    """`document` and, depth first, every subsegment nested in it, each without `subsegments`."""
    nested = document.pop("subsegments", [])
    found = [document]
    for child in nested:
        child.setdefault("trace_id", document.get("trace_id"))
        child.setdefault("parent_id", document.get("id"))
        child["nested"] = True
        found.extend(_unnest(child))
    return found


def _segment_label(document: dict) -> str:
    """`name [operation]  duration  key=value ...` for one segment document."""
    name = document.get("name", "?")
    operation = (document.get("aws") or {}).get("operation")
    if operation:
        name = f"{name} {operation}"
    duration_ms = (document.get("end_time", 0) - document.get("start_time", 0)) * 1000
    fields = dict(document.get("annotations") or {})
    for key, value in (document.get("metadata") or {}).items():
        if isinstance(value, dict):  # a namespace of metadata
            fields.update(value)
        else:
            fields[key] = value
    request_id = (document.get("aws") or {}).get("request_id")
    if request_id:
        fields["request_id"] = request_id
    shown = " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                     for k, v in fields.items() if v not in ("", None))
    return f"{name}  {duration_ms:.1f} ms  {shown}".rstrip()


def trace_tree(documents: list[dict]) -> list[str]:
    """The documents as a tree (children under their parent_id, in start order)."""
    ids = {d.get("id") for d in documents}
    children: dict[str | None, list[dict]] = {}
    for document in documents:
        parent = document.get("parent_id")
        children.setdefault(parent if parent in ids else None, []).append(document)
    lines: list[str] = []

    def walk(document: dict, prefix: str, last: bool, root: bool) -> None:
        lines.append(("" if root else prefix + ("└─ " if last else "├─ ")) + _segment_label(document))
        kids = sorted(children.get(document.get("id"), []), key=lambda d: d.get("start_time", 0))
        for i, kid in enumerate(kids):
            walk(kid, "" if root else prefix + ("   " if last else "│  "), i == len(kids) - 1, False)

    for root in sorted(children.get(None, []), key=lambda d: d.get("start_time", 0)):
        walk(root, "", True, True)
    return lines


def function_binary() -> Path:
    """The function's debug binary, as `cargo lambda watch` built it for the stack."""
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / FUNCTION


def tracing_demo(stack: Stack) -> None:
    """One reset, traced: the real binary behind a Runtime API that hands it a sampled trace header,
    AWS_XRAY_DAEMON_ADDRESS at an XrayDaemon; prints the trace tree the daemon received."""
    import asyncio

    sys.path.insert(0, str(ROOT / "tools" / "drain"))
    from runtime_api import Instance  # noqa: PLC0415  (tools/drain, standard library only)

    stack.seed()  # the demo's resets above put diego in his cooldown
    daemon = XrayDaemon()
    trace_id = new_trace_id()
    env = base_env() | function_env(stack.endpoint) | {
        "AWS_XRAY_DAEMON_ADDRESS": daemon.address,
        "AWS_LAMBDA_FUNCTION_NAME": FUNCTION,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{FUNCTION}",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    arn = f"arn:aws:lambda:{REGION}:123456789012:function:{FUNCTION}"
    event = json.dumps(http_request_for("diego@example.com")).encode()

    async def run():
        instance = Instance("tracing", [str(function_binary())], env, stack.log_path("function-tracing"), arn)
        instance.trace_header = trace_header(trace_id)
        try:
            await instance.start(60)
            return await instance.invoke(event, 30)
        finally:
            await instance.close()

    try:
        result = asyncio.run(run())
        if result.kind != "ok":
            raise StackError(f"the traced invocation ended {result.kind}: {result.body[:300]!r}")
        documents = daemon.trace(trace_id)
    finally:
        daemon.stop()
    print(
        f"\nTracing (issue 26): one reset of diego@example.com with AWS_XRAY_DAEMON_ADDRESS set and a sampled\n"
        f"trace header (Root={trace_id}). The function's spans, as the X-Ray daemon received them\n"
        f"({len(documents)} segments and subsegments in {len(daemon.datagrams)} UDP datagram(s), each subsegment\n"
        f"nested in its parent's document, sent before the answer):\n"
    )
    print("\n".join(trace_tree(documents)))
    print(
        "\nannotations (indexed: ColdStart, Service, outcome, code, pool, rule); the rest is metadata. No\n"
        "username, email or ClientMetadata value is in any segment (tests/e2e/test_tracing.py reads them all).",
        flush=True,
    )


# ---- mass resets: reset-enqueue (issue 19) ---------------------------------------------------
# The operator CLI puts a CSV's users on the function's request queue; here a small poller stands
# in for Lambda's event source mapping (receive up to 10, invoke the function with an SQS event,
# delete what succeeded, leave batchItemFailures for redelivery), and the outcome events reach the
# results queue through the bus's rule, where `reset-enqueue --wait` reads them.

# The demo policy's ticket-queue rule admits this queue's ARN (moto's account, REGION).
REQUEST_QUEUE = "password-resets"
ENQUEUE_TIMEOUT_S = 300.0


def enqueue_binary() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug" / "reset-enqueue"


def enqueue_env(endpoint: str) -> dict[str, str]:
    """reset-enqueue's environment: moto's endpoint and dummy credentials, no profile, no IMDS."""
    return base_env() | {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": DUMMY_KEY,
        "AWS_SECRET_ACCESS_KEY": DUMMY_KEY,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def run_enqueue(endpoint: str, args: list[str], stdin: str | None = None,
                timeout: float = ENQUEUE_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run reset-enqueue (built by `make e2e`/`make demo`) against moto; its output captured."""
    binary = enqueue_binary()
    if not binary.exists():
        raise StackError(f"{binary} is missing: cargo build --features enqueue --bin reset-enqueue")
    return subprocess.run([str(binary), *args], input=stdin, capture_output=True, text=True,
                          env=enqueue_env(endpoint), timeout=timeout, check=False)


def create_request_queue(endpoint: str, name: str = REQUEST_QUEUE) -> str:
    """A request queue (FIFO when `name` ends in .fifo, deduplicating by id only); its URL."""
    attributes = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if name.endswith(".fifo") else {}
    return aws_client("sqs", endpoint).create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]


def seed_mass_users(endpoint: str, count: int, prefix: str = "mass") -> list[str]:
    """`count` CONFIRMED users with verified emails in the demo pool (no groups); their emails."""
    client = cognito_client(endpoint)
    emails = [f"{prefix}{i:04d}@example.com" for i in range(count)]
    for email in emails:
        client.admin_create_user(
            UserPoolId=DEMO_POOL, Username=email, MessageAction="SUPPRESS",
            UserAttributes=[{"Name": "email", "Value": email}, {"Name": "email_verified", "Value": "true"}],
        )
        client.admin_set_user_password(UserPoolId=DEMO_POOL, Username=email, Password=SEED_PASSWORD, Permanent=True)
    return emails


class Drainer(threading.Thread):
    """Lambda's event source mapping, in small: receive up to 10 messages, invoke the function with
    them as one SQS event, delete those not in batchItemFailures; until stopped."""

    def __init__(self, endpoint: str, function: Function, queue_url: str):
        super().__init__(name="drainer", daemon=True)
        self.sqs = aws_client("sqs", endpoint)
        self.function, self.url = function, queue_url
        self.arn = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.stopping = threading.Event()
        self.invocations = self.deleted = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                self.drain_once()
        except BaseException as e:  # reported by stop()
            self.error = e

    def drain_once(self) -> int:
        got = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                       VisibilityTimeout=30, AttributeNames=["All"])
        messages = got.get("Messages", [])
        if not messages:
            return 0
        records = [{
            "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
            "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
            "eventSource": "aws:sqs", "eventSourceARN": self.arn, "awsRegion": REGION,
        } for m in messages]
        answer = self.function.invoke({"Records": records})
        self.invocations += 1
        if "batchItemFailures" not in answer:
            return 0  # a function error: every message comes back after its visibility timeout
        failed = {f.get("itemIdentifier") for f in answer["batchItemFailures"]}
        done = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(messages) if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(QueueUrl=self.url, Entries=done)
            self.deleted += len(done)
        return len(messages)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=INVOKE_TIMEOUT_S)
        if self.error is not None:
            raise StackError(f"the drainer failed: {self.error!r}") from self.error


MASS_DEMO_USERS = 50


def mass_reset_demo(stack: Stack, function: Function) -> None:
    """reset-enqueue: 50 users from a CSV onto the request queue, drained by the function; the
    --wait table of their outcomes."""
    print(f"\nMass reset: reset-enqueue puts {MASS_DEMO_USERS} users from a CSV on the queue "
          f"{REQUEST_QUEUE}; a poller standing in for the event source mapping feeds them to the "
          f"function, and --wait reads the outcome events from {RESULTS_QUEUE}.\n", flush=True)
    started = time.monotonic()
    emails = seed_mass_users(stack.endpoint, MASS_DEMO_USERS - 2)
    url = create_request_queue(stack.endpoint)
    stack.take_events()
    with tempfile.TemporaryDirectory(prefix="mass-reset-") as tmp:
        csv_path = Path(tmp) / "users.csv"
        # Two users the function will not reset: one the policy denies, one that does not exist.
        rows = ["username,reason"] + [f"{e}," for e in emails] + ["admin@example.com,", "ghost@example.com,"]
        csv_path.write_text("\n".join(rows) + "\n")
        drainer = Drainer(stack.endpoint, function, url)
        drainer.start()
        try:
            result = run_enqueue(stack.endpoint, [
                "--queue-url", url, "--user-pool-id", DEMO_POOL, "--reason", "INC-9000 credential leak",
                "--wait", "--results-queue", results_queue_url(stack.endpoint), "--timeout", "120",
                "--report", str(Path(tmp) / "report.csv"), str(csv_path),
            ])
        finally:
            drainer.stop()
    print(f"$ reset-enqueue --queue-url .../{REQUEST_QUEUE} --user-pool-id {DEMO_POOL} --reason ... "
          f"--wait --results-queue .../{RESULTS_QUEUE} users.csv")
    print(result.stdout.rstrip())
    if result.returncode not in (0, 1):
        print(result.stderr.rstrip())
    print(f"(exit {result.returncode}: 0 only when every user ended RESET; {drainer.invocations} "
          f"invocations of the function; scene took {time.monotonic() - started:.1f}s)", flush=True)


# ---- what real Cognito does that moto does not model (issue 25) ------------------------------

PREFLIGHT_DEMO_USERS = 60


# ---- a second person's approval and a request's status (issue 27) ------------------------------

HELPDESK_LEAD = "arn:aws:sts::123456789012:assumed-role/helpdesk-lead/lena"
HELPDESK_ALICE = "arn:aws:sts::123456789012:assumed-role/helpdesk-portal/alice"


def _http(method: str, path: str, body, caller: str, caller_id: str | None = None) -> dict:
    """The HTTP API sample event, sent to `path` with `method`, as `caller` (and, when given,
    with `caller_id` as the IAM principal id API Gateway puts beside the ARN)."""
    event = json.loads((ROOT / "events/http-api-v2.json").read_text())
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["routeKey"] = f"{method} {path}"
    event["requestContext"]["http"]["method"] = method
    event["body"] = None if body is None else json.dumps(body)
    iam = event["requestContext"]["authorizer"]["iam"]
    iam["userArn"] = caller
    if caller_id is not None:
        iam["callerId"] = iam["userId"] = caller_id
    return event


def approvals_demo(stack: Stack) -> None:
    """Scenes: a privileged user's reset waiting for approval, a self-approval refused, an approval\n    that performs it, and the request's status looked up."""
    [vip] = seed_mass_users(stack.endpoint, 1, prefix="vip")
    resets_before = len(cognito_calls(stack.endpoint, "AdminResetUserPassword"))
    policy = json.loads(DEMO_POLICY.read_text())
    policy["rules"].insert(0, {
        "name": "vip-approval", "callers": ["arn:aws:sts::123456789012:assumed-role/helpdesk-portal/*"],
        "userPools": [DEMO_POOL], "users": [vip],
        "approval": {"approvers": ["arn:aws:sts::123456789012:assumed-role/helpdesk-lead/*",
                                   "arn:aws:sts::123456789012:assumed-role/helpdesk-portal/*"],
                     "ttlSeconds": 3600},
    })
    print(f"\nA second person for privileged targets: a rule in front of the demo policy says the portal's "
          f"resets of {vip} need\nthe approval of a helpdesk lead (approval.ttlSeconds 3600):\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="approvals-") as tmp:
        path = Path(tmp) / "policy.json"
        path.write_text(json.dumps(policy))
        function = stack.start_function(label="function-approvals", POLICY_FILE=str(path))
        rows = []

        def step(name: str, event: dict, caller: str) -> dict:
            answer = function.invoke(event)
            body = json.loads(answer.get("body") or "{}")
            outcome = body.get("outcome") or "REJECTED"
            if body.get("replayed") is True:
                outcome += " (replayed)"
            detail = body.get("error") or body.get("approvalId", "") and f"approvalId {body['approvalId'][:8]}…"
            rows.append([name, caller.rsplit(":", 1)[-1], outcome, f"{answer.get('statusCode')} {detail}".strip()])
            return body

        pending = step("POST /reset", _http("POST", "/reset", {"UserPoolId": DEMO_POOL, "Username": vip}, HELPDESK_ALICE), HELPDESK_ALICE)
        approval = pending.get("approvalId", "unknown")
        step("GET /requests/{requestId}", _http("GET", f"/requests/{pending.get('requestId')}", None, HELPDESK_ALICE), HELPDESK_ALICE)
        step("POST /approvals/{id} (own)", _http("POST", f"/approvals/{approval}", {"Decision": "approve"}, HELPDESK_ALICE), HELPDESK_ALICE)
        step("POST /approvals/{id}", _http("POST", f"/approvals/{approval}", {"Decision": "approve", "Reason": "called back"}, HELPDESK_LEAD), HELPDESK_LEAD)
        step("POST /approvals/{id} (again)", _http("POST", f"/approvals/{approval}", {"Decision": "deny"}, HELPDESK_LEAD), HELPDESK_LEAD)
        step("GET /requests/{requestId}", _http("GET", f"/requests/{pending.get('requestId')}", None, HELPDESK_ALICE), HELPDESK_ALICE)
        step("GET /requests/{requestId} (other)", _http("GET", f"/requests/{pending.get('requestId')}", None, TICKET_BOT), TICKET_BOT)
        approved_resets = len(cognito_calls(stack.endpoint, "AdminResetUserPassword")) - resets_before
        # A queued request's status: read over HTTP by the role that sent the message
        [queued] = seed_mass_users(stack.endpoint, 1, prefix="queued")
        sample = json.loads((ROOT / "events/sqs-standard.json").read_text())["Records"][0]
        message_id = "demo-status-" + uuid.uuid4().hex[:8]
        sender, sender_arn = "AROAEXAMPLETICKETING", "arn:aws:sts::123456789012:assumed-role/ticketing"
        record = {**sample, "messageId": message_id,
                  "attributes": {**sample["attributes"], "SenderId": f"{sender}:ticket-4711"},
                  "body": json.dumps({"UserPoolId": DEMO_POOL, "Username": queued})}
        acked = function.invoke({"Records": [record]}).get("batchItemFailures") == []
        rows.append(["SQS message (sent by ticketing/ticket-4711)", "the queue", "",
                     "acknowledged" if acked else "handed back"])
        step("GET /requests/{messageId}", _http("GET", f"/requests/{message_id}", None,
                                                f"{sender_arn}/status-page", f"{sender}:status-page"),
             f"{sender_arn}/status-page")
        step("GET /requests/{messageId} (other)", _http("GET", f"/requests/{message_id}", None,
                                                        HELPDESK_ALICE, "AROAEXAMPLEPORTAL:alice"),
             HELPDESK_ALICE)
        print(table(["request", "caller", "outcome", "code"], rows))
        print(f"\nThe reset waited (202 PENDING, event PENDING_APPROVAL) until a lead approved it; the requester's own\n"
              f"approval was refused (403 self-approval); the approval ran the reset as requested "
              f"({approved_resets} reset call), a second decision got the same answer again, and the status\n"
              f"lookup tells the requester what became of its request (anyone else: the 404 of an unknown id).\n"
              f"A queued request's answer is read by the role that sent the message (SQS SenderId = API Gateway's\n"
              f"caller id, any session of the role); another role gets the 404.",
              flush=True)


def limits_demo(stack: Stack) -> None:
    """Two scenes: reset-enqueue's preflight refusing a mass reset on a pool with Cognito's default
    email sender, and a reset refused as delivery-limit when the pool's daily email limit is used
    (injected with its real message by the e2e tests' fault proxy: moto models no such limit)."""
    print(f"\nCognito's daily email limit: reset-enqueue describes every pool of the file first. "
          f"{PREFLIGHT_DEMO_USERS} users of the demo pool, which sends email with Cognito's default "
          "sender (about 50 emails a day):\n", flush=True)
    url = create_request_queue(stack.endpoint, "password-resets-preflight")
    with tempfile.TemporaryDirectory(prefix="preflight-") as tmp:
        csv_path = Path(tmp) / "users.csv"
        csv_path.write_text("username\n" + "".join(f"big{i:03d}@example.com\n" for i in range(PREFLIGHT_DEMO_USERS)))
        result = run_enqueue(stack.endpoint, ["--queue-url", url, "--user-pool-id", DEMO_POOL, str(csv_path)])
    print(f"$ reset-enqueue --queue-url .../password-resets-preflight --user-pool-id {DEMO_POOL} users.csv")
    print(result.stdout.rstrip())
    print(result.stderr.rstrip())
    print(f"(exit {result.returncode}: nothing was sent; --allow-default-email would send anyway)", flush=True)

    # The fault proxy lives with the e2e tests; it imports this module as `stack`.
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    import faultproxy

    print("\nA reset when the pool's daily email limit is used: Cognito answers LimitExceededException "
          f"\"{faultproxy.DAILY_EMAIL_LIMIT}\" (injected by a proxy in front of moto):\n", flush=True)
    # Two fresh staff users (the earlier scenes' users may be inside their cooldown).
    erin2, paul2 = seed_mass_users(stack.endpoint, 2, prefix="quota")
    for email in (erin2, paul2):
        cognito_client(stack.endpoint).admin_add_user_to_group(UserPoolId=DEMO_POOL, Username=email, GroupName="staff")
    with faultproxy.FaultProxy(stack.endpoint) as proxy:
        function = stack.start_function(label="function-limits", AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER=proxy.url)
        proxy.set_rule("AdminResetUserPassword", faultproxy.limit_exceeded(faultproxy.DAILY_EMAIL_LIMIT))
        rows = []
        http = http_request_for(erin2)
        answer = function.invoke(http)
        rows += rows_for("limit (HTTP)", http, answer, function.log_since_invoke())
        sqs = {"Records": [{
            "messageId": "limits-demo-01", "receiptHandle": "r", "body": json.dumps(
                {"UserPoolId": DEMO_POOL, "Username": paul2}),
            "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "md5OfBody": "",
            "eventSource": "aws:sqs", "eventSourceARN": f"arn:aws:sqs:{REGION}:{FUNCTION_ACCOUNT}:{REQUEST_QUEUE}",
            "awsRegion": REGION,
        }]}
        answer = function.invoke(sqs)
        rows += rows_for("limit-sqs", sqs, answer, function.log_since_invoke())
        print(table(["request", "caller", "user", "outcome", "code"], rows))
        print(f"\nAdminResetUserPassword calls the proxy answered: {proxy.count('AdminResetUserPassword')} "
              "(a limit is never retried, and the SQS record is acknowledged: a redelivery cannot pass\n"
              "today). The DeliveryLimit metric and DeliveryLimitAlarm say: configure SES for the pool, then "
              "re-drive from the report\n(reset-enqueue --retry-from REPORT sends exactly the delivery-limit, "
              "attempt-limit and GAVE_UP users again).", flush=True)
        stack.stop_function(function)


RESOLVED_DEMO_INVOCATION_MS = 6000


def resolved_demo(stack: Stack) -> None:
    """An ambiguous reset resolved by the user's status: Cognito performs the reset and its answer
    is lost (a proxy answers 500 after forwarding); the SQS record is handed back, and its
    redelivery, after the first invocation's deadline, reads the user (RESET_REQUIRED) and answers
    RESET without a second call. Then the same with the reset lost before it reached Cognito: the
    redelivery finds the user still CONFIRMED and sends the reset. The function runs behind a
    Runtime API with real deadlines (a user claim's lease is its invocation's deadline)."""
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    import faultproxy

    print("\nAn ambiguous reset, resolved by the user's status (no second code, no lost request):", flush=True)
    binary = faultproxy.build_function()
    users = seed_mass_users(stack.endpoint, 2, prefix="resolved")
    for email in users:
        cognito_client(stack.endpoint).admin_add_user_to_group(UserPoolId=DEMO_POOL, Username=email, GroupName="staff")
    scenes = [
        ("answer lost after the reset", faultproxy.internal_error_after_forwarding()),
        ("lost before Cognito", faultproxy.Rule(forward=False, status=500, error=("InternalErrorException", "boom"))),
    ]
    rows = []
    with faultproxy.FaultProxy(stack.endpoint) as proxy:
        env = function_env(stack.endpoint, COGNITO_MAX_ATTEMPTS="1",
                           AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER=proxy.url)
        function = faultproxy.DirectFunction(binary, env, stack.log_path("function-resolved"))
        try:
            for (label, rule), email in zip(scenes, users):
                proxy.reset()
                proxy.add_rule("AdminResetUserPassword", rule, times=1)
                message_id = f"resolved-demo-{len(rows):02d}"
                for receive in (1, 2):
                    deadline = int(time.time() * 1000) + RESOLVED_DEMO_INVOCATION_MS
                    record = {"Records": [{
                        "messageId": message_id, "receiptHandle": f"{message_id}-{receive}",
                        "body": json.dumps({"UserPoolId": DEMO_POOL, "Username": email}),
                        "attributes": {"ApproximateReceiveCount": str(receive)}, "messageAttributes": {},
                        "md5OfBody": "", "eventSource": "aws:sqs",
                        "eventSourceARN": f"arn:aws:sqs:{REGION}:{FUNCTION_ACCOUNT}:{REQUEST_QUEUE}",
                        "awsRegion": REGION,
                    }]}
                    answer = function.invoke(record, deadline)
                    handed_back = any(f.get("itemIdentifier") == message_id for f in answer.get("batchItemFailures", []))
                    status = cognito_client(stack.endpoint).admin_get_user(
                        UserPoolId=DEMO_POOL, Username=email)["UserStatus"]
                    resets = sum(1 for call in proxy.seen("AdminResetUserPassword") if call.forwarded)
                    rows.append([label, f"receive {receive}", email,
                                 "handed back (RETRY reset-unresolved)" if handed_back else "acknowledged (RESET)",
                                 status, str(resets)])
                    if not handed_back:
                        break
                    # The queue redelivers after the visibility timeout; here: once the first
                    # invocation's deadline (the claim's lease) has passed.
                    while int(time.time() * 1000) <= deadline:
                        time.sleep(0.05)
        finally:
            function.stop()
    print(table(["scene", "delivery", "user", "answer", "UserStatus", "resets that reached Cognito"], rows))
    print("\nThe first: Cognito reset the user and the answer was lost; the redelivery found RESET_REQUIRED\n"
          "and answered RESET with no second call. The second: the reset never reached Cognito; the\n"
          "redelivery found the user still CONFIRMED, so it sent the reset (the user had no code).", flush=True)


def bench_enqueue(users: int, runs: int) -> int:
    """Messages enqueued per second by reset-enqueue into moto's SQS (standard and FIFO queues):
    `users` users per run, the best and the median of `runs` runs (a fresh queue and state each)."""
    import statistics

    with Stack(name="bench-enqueue") as stack:
        stack.seed()
        with tempfile.TemporaryDirectory(prefix="bench-enqueue-") as tmp:
            csv_path = Path(tmp) / "users.csv"
            csv_path.write_text("username\n" + "\n".join(f"user{i:06d}@example.com" for i in range(users)) + "\n")
            for kind in ("standard", "fifo"):
                rates = []
                for run in range(runs):
                    name = f"bench-{kind}-{run}" + (".fifo" if kind == "fifo" else "")
                    url = create_request_queue(stack.endpoint, name)
                    started = time.monotonic()
                    result = run_enqueue(stack.endpoint, ["--queue-url", url, "--user-pool-id", DEMO_POOL,
                                                          "--allow-default-email",
                                                          "--state", str(Path(tmp) / f"{name}.state"), str(csv_path)])
                    elapsed = time.monotonic() - started
                    if result.returncode != 0:
                        raise StackError(f"reset-enqueue failed ({result.returncode}): {result.stderr[-2000:]}")
                    rates.append(users / elapsed)
                print(f"{kind:8} queue: {users} messages per run, {runs} runs: median {statistics.median(rates):.0f} "
                      f"messages/s, best {max(rates):.0f} (whole process: start, validation, queue check, sending)",
                      flush=True)
    return 0


# ---- make local / make invoke ---------------------------------------------------------------


def local() -> int:
    with Stack(name="local") as stack:
        stack.seed()
        print(f"moto (local Cognito, DynamoDB, EventBridge, SQS and SSM) on {stack.endpoint}, seeded; starting the function...", flush=True)
        function = stack.start_function(label="function", reload=True, policy="parameter")
        LOCAL_ENV.write_text(
            f"INVOKE_PORT={function.port}\nAWS_ENDPOINT_URL={stack.endpoint}\nDRIVER_PID={os.getpid()}\n"
        )
        try:
            print(
                f"""
cognito-reset is running under `cargo lambda watch` on 127.0.0.1:{function.port} (reloads on edits),
against moto on {stack.endpoint} with policy/demo.json, read from the SSM parameter {POLICY_PARAMETER}
(re-read every {LOCAL_POLICY_REFRESH_SECONDS} s). Function logs: {function.service.log}
Outcome events: bus {EVENT_BUS}, rule {RESULTS_RULE} -> queue {RESULTS_QUEUE}.
Guard: table {GUARD_TABLE} in moto, RESET_COOLDOWN_SECONDS={LOCAL_COOLDOWN_SECONDS} (the function's default is 300),
IDEMPOTENCY_TTL_SECONDS at the function's default (86400).

Send an event:
    make invoke EVENT=events/http-api-v2.json
    PATH="$PWD/.tools/stack/bin:$PATH" cargo lambda invoke {FUNCTION} -A 127.0.0.1 -P {function.port} --data-file events/http-api-v2.json
See the demo users' status:   .tools/stack/bin/python tools/stack.py users
Take the outcome events:      .tools/stack/bin/python tools/stack.py events
Change the policy live:       .tools/stack/bin/python tools/stack.py put-policy policy/demo.json
Reseed (undo every reset, empty the guard table):    .tools/stack/bin/python tools/stack.py reseed

Ctrl-C stops everything.""",
                flush=True,
            )
            while True:
                if function.service.proc.poll() is not None:
                    raise StackError(f"cargo lambda watch exited:\n{function.service.log_tail()}")
                if stack.moto.proc.poll() is not None:
                    raise StackError(f"moto exited:\n{stack.moto.log_tail()}")
                time.sleep(1)
        finally:
            LOCAL_ENV.unlink(missing_ok=True)


def _local_settings() -> dict[str, str]:
    if not LOCAL_ENV.exists():
        raise StackError("no local stack is running: start one with `make local` in another terminal")
    settings = dict(line.split("=", 1) for line in LOCAL_ENV.read_text().splitlines() if "=" in line)
    if not port_open(int(settings["INVOKE_PORT"])):
        raise StackError(
            f"{LOCAL_ENV} names port {settings['INVOKE_PORT']} but nothing answers there: "
            "start the stack again with `make local`"
        )
    return settings


def invoke(event_path: str) -> int:
    settings = _local_settings()
    path = Path(event_path)
    if not path.is_file():
        raise StackError(f"{event_path}: no such event file (try one of events/*.json)")
    argv = [
        tool("cargo-lambda"), "lambda", "invoke", FUNCTION,
        "--invoke-address", LOOPBACK, "--invoke-port", settings["INVOKE_PORT"],
        "--data-file", str(path),
    ]
    print("$ cargo lambda invoke " + " ".join(argv[3:]), flush=True)
    code = subprocess.call(argv, env=base_env())
    print()
    print_users(settings["AWS_ENDPOINT_URL"])
    return code


def print_users(endpoint: str) -> None:
    states = user_states(endpoint)
    print(table(["user", "status"], [[email, s.label()] for email, s in states.items()]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="start the stack, send the sample events, print the table, stop")
    sub.add_parser("local", help="start the stack and keep it running until Ctrl-C")
    p = sub.add_parser("invoke", help="send one event to the running local stack")
    p.add_argument("event", help="an event file, e.g. events/http-api-v2.json")
    sub.add_parser("users", help="print the demo users' status in the running local stack")
    sub.add_parser("events", help="print and take the outcome events on the running local stack's results queue")
    p = sub.add_parser("put-policy", help="put a file as a new version of the running local stack's policy parameter")
    p.add_argument("file", help="a policy document, e.g. policy/demo.json (not checked here: the function decides)")
    sub.add_parser("reseed", help="reset the running local stack's users to their seeded state, empty the guard table")
    p = sub.add_parser("bench-enqueue", help="messages per second reset-enqueue puts on moto's SQS")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        with stop_on_signals():
            if args.command == "demo":
                return demo()
            if args.command == "local":
                return local()
            if args.command == "invoke":
                return invoke(args.event)
            if args.command == "users":
                print_users(_local_settings()["AWS_ENDPOINT_URL"])
                return 0
            if args.command == "events":
                events = take_events(_local_settings()["AWS_ENDPOINT_URL"])
                print(table(["outcome", "code", "source", "user", "id", ""], event_rows(events)) if events else "(no events)")
                return 0
            if args.command == "put-policy":
                version = put_policy(_local_settings()["AWS_ENDPOINT_URL"], Path(args.file).read_text())
                print(f"{POLICY_PARAMETER} version {version}; the function takes it up within {LOCAL_POLICY_REFRESH_SECONDS} s if valid")
                return 0
            if args.command == "bench-enqueue":
                return bench_enqueue(args.users, args.runs)
            if args.command == "reseed":
                seed(_local_settings()["AWS_ENDPOINT_URL"])
                print("reseeded")
                return 0
    except StackError as e:
        print(f"stack: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.command == "local":  # Ctrl-C is how `make local` is meant to end
            print("\nstack: stopped", file=sys.stderr)
            return 0
        print("\nstack: interrupted; everything stopped", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
