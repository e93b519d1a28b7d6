"""Checks HTTP answers of the function against openapi.yaml (run with the schemathesis venv).

    python tests/openapi/openapi_check.py ANSWERS.json

ANSWERS.json is a list of recorded answers, `{"name", "statusCode", "headers", "body"}` each, as
the Lambda function returned them (the integration response object: `body` is the JSON text).
Every answer must have a documented status, the documented content type and required headers,
and a body valid against the schema documented for that status. Prints one line per problem and
exits 1 if there is any.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from openapi_spec_validator import validate as validate_spec

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "openapi.yaml"


def load_document(path: Path = DOCUMENT) -> dict:
    """The OpenAPI document, checked against the OpenAPI 3.1 specification."""
    document = yaml.safe_load(path.read_text())
    validate_spec(document)
    return document


def schema_validator(document: dict, schema: dict) -> Draft202012Validator:
    """A validator for `schema`, whose `#/components/...` references point into `document`."""
    rooted = dict(schema)
    rooted["components"] = document["components"]
    return Draft202012Validator(rooted, format_checker=FormatChecker())


def resolve(document: dict, item: dict) -> dict:
    """Follows one local `$ref`."""
    ref = item.get("$ref")
    if ref is None:
        return item
    node = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def operation(document: dict) -> dict:
    return document["paths"]["/reset"]["post"]


def check_answer(document: dict, status: int, headers: dict[str, str], body: str) -> list[str]:
    """Problems of one answer against the document (empty when it conforms)."""
    responses = operation(document)["responses"]
    documented = responses.get(str(status))
    if documented is None:
        return [f"status {status} is not documented (documented: {', '.join(sorted(responses))})"]
    problems = []
    lower = {k.lower(): v for k, v in headers.items()}
    content_type = lower.get("content-type", "")
    if content_type.split(";")[0].strip() != "application/json":
        problems.append(f"content-type {content_type!r}, documented application/json")
    for name, header in documented.get("headers", {}).items():
        header = resolve(document, header)
        value = lower.get(name.lower())
        if value is None:
            if header.get("required"):
                problems.append(f"required header {name} is missing")
            continue
        errors = list(schema_validator(document, header["schema"]).iter_errors(value))
        problems.extend(f"header {name}: {e.message}" for e in errors)
    try:
        parsed = json.loads(body)
    except (TypeError, ValueError) as e:
        return problems + [f"body is not JSON ({e}): {body!r:.200}"]
    schema = documented["content"]["application/json"]["schema"]
    for error in schema_validator(document, schema).iter_errors(parsed):
        where = "/".join(str(p) for p in error.absolute_path) or "(body)"
        problems.append(f"body {where}: {error.message}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    document = load_document()
    answers = json.loads(Path(argv[1]).read_text())
    failures = 0
    for answer in answers:
        problems = check_answer(
            document, answer["statusCode"], answer.get("headers") or {}, answer.get("body")
        )
        for problem in problems:
            print(f"{answer['name']}: {answer['statusCode']}: {problem}")
        failures += bool(problems)
    print(f"{len(answers) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
