"""samconfig.toml.example, read the way `sam deploy` reads a samconfig.toml.

Guards against the quiet failure of SAM's parameter overrides: an unquoted JSON value is cut at
its first space, so a policy must arrive at CloudFormation whole, as valid JSON, within bounds.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import click
from samcli.cli.cli_config_file import ConfigProvider
from samcli.cli.types import CfnParameterOverridesType
from samcli.commands.deploy.command import cli as sam_deploy
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parents[2]
PARAMETERS = yaml_parse((ROOT / "template.yaml").read_text())["Parameters"]


def deploy_parameters(tmp_path: Path) -> dict:
    config = tmp_path / "samconfig.toml"
    shutil.copy(ROOT / "samconfig.toml.example", config)
    with click.Context(sam_deploy):  # as when `sam deploy` runs
        resolved = ConfigProvider(section="parameters")(config, "default", ["deploy"])
        overrides = CfnParameterOverridesType().convert(resolved["parameter_overrides"], None, None)
    return {**resolved, "parameter_overrides": overrides}


def test_example_policy_reaches_the_stack_whole_and_within_the_environment_limit(tmp_path):
    overrides = deploy_parameters(tmp_path)["parameter_overrides"]

    policy = json.loads(overrides["Policy"])

    assert policy["version"] == 1
    assert {r["name"] for r in policy["rules"]} == {"helpdesk-portal", "ticket-queue"}
    assert len(overrides["Policy"].encode()) <= PARAMETERS["Policy"]["MaxLength"] < 4096


def test_example_values_are_valid_template_parameters(tmp_path):
    overrides = deploy_parameters(tmp_path)["parameter_overrides"]

    assert set(overrides) <= set(PARAMETERS)
    for name, value in overrides.items():
        spec = PARAMETERS[name]
        values = value.split(",") if spec["Type"] == "CommaDelimitedList" else [value]
        for v in values:
            if "AllowedValues" in spec:
                assert v in [str(a) for a in spec["AllowedValues"]], (name, v)
            if "AllowedPattern" in spec:
                assert re.fullmatch(spec["AllowedPattern"], v), (name, v)
            if "MinValue" in spec:
                assert spec["MinValue"] <= int(v) <= spec["MaxValue"], (name, v)
    assert len(overrides["UserPoolArns"].split(",")) == 2


def test_example_deploys_with_an_iam_capability_only(tmp_path):
    params = deploy_parameters(tmp_path)
    assert params["capabilities"] in ("CAPABILITY_IAM", ["CAPABILITY_IAM"])
    assert params["stack_name"] == "cognito-reset"
