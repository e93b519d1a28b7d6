"""Tests of the docs check itself (tools/docs_check.py), on small fixture repositories in a temporary
directory: it passes a consistent one and names the page and line of each kind of break.

    python3 -m unittest discover -s tests/docs      (part of `make docs-check`)
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

import docs_check  # noqa: E402

FIXTURE = {
    "Makefile": """\
        .PHONY: demo test
        demo: ## run the demo
        \techo demo
        test: demo ## every test
        \techo test
        """,
    "src/config.rs": """\
        pub const VARIABLES: &[&str] = &[
            "POLICY",
            "DRY_RUN",
        ];
        #[cfg(test)]
        mod tests {
            fn f() { std::env::var("ONLY_IN_A_TEST"); }
        }
        """,
    "src/logging.rs": """\
        fn level() -> Option<String> {
            std::env::var("RUST_LOG").ok()
        }
        """,
    "src/outcome.rs": """\
        impl ResetError {
            pub fn message(&self) -> String { "not-a-code-source".into() }
            pub fn code(&self) -> &'static str {
                match self {
                    ResetError::InvalidRequest(_) => "invalid-request",
                    ResetError::Denied(reason) => reason.code(),
                    ResetError::Cognito(e) => e.code(),
                }
            }
        }
        """,
    "src/policy/mod.rs": """\
        impl DenyReason {
            pub fn code(self) -> &'static str {
                match self { DenyReason::DeniedUser => "denied-user" }
            }
        }
        """,
    "src/failure.rs": """\
        impl CognitoErrorKind {
            pub fn code(self) -> &'static str { "kind-only" }
        }
        impl CognitoError {
            pub fn code(&self) -> &'static str {
                match self.kind { CognitoErrorKind::UserNotFound => "user-not-found" }
            }
        }
        """,
    "README.md": """\
        # fixture

        Run `make demo`, then `make test`. See [the outcomes](docs/api.md#outcomes) and
        [settings](docs/deploying.md#configuration-environment-variables).

        Not links: `[x](nowhere.md)`; not a target: make nothing-here in prose.

        ```text
        [y](nowhere-either.md) is inside a code block
        ```
        """,
    "docs/deploying.md": """\
        # Deploying

        ## Configuration (environment variables)

        | variable | default | meaning |
        |---|---|---|
        | `POLICY` | — | the policy |
        | `DRY_RUN` | `false` | decide, never reset |
        | `RUST_LOG` | `INFO` | log level |
        | `AWS_ENDPOINT_URL` | AWS | the SDK's endpoint override |

        ## After the table

        | not | configuration |
        |---|---|
        | `ELSEWHERE` | a table under another heading is not the configuration table |
        """,
    "docs/api.md": """\
        # API

        ## Outcomes

        | cause | outcome | HTTP |
        |---|---|---|
        | invalid request (`POLICY` is not a code) | REJECTED `invalid-request` | 400 |
        | policy DENY | REJECTED `denied-user` | 403 |
        | no such user | REJECTED `user-not-found` | 404 |
        | a repeated key | the earlier answer, `"replayed": true` | the earlier status |

        ## Outcomes

        A second heading of the same text is `#outcomes-1`; back to [the first](#outcomes).
        """,
}


class DocsCheckTest(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.root = Path(self.tmp.name)
        for rel, text in FIXTURE.items():
            self.write(rel, textwrap.dedent(text))

    def tearDown(self) -> None:
        self.tmp.cleanup()

    def write(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def edit(self, rel: str, old: str, new: str) -> None:
        text = (self.root / rel).read_text()
        self.assertIn(old, text)
        self.write(rel, text.replace(old, new, 1))

    def problems(self) -> list[str]:
        return docs_check.Checker(self.root).run()

    def assert_only(self, *expected: str) -> None:
        """Exactly these problems, each given as `path:line: start of the message`."""
        found = self.problems()
        self.assertEqual(len(found), len(expected), found)
        for want, got in zip(expected, found):
            self.assertTrue(got.startswith(want), f"{got!r} does not start with {want!r}")

    def test_a_consistent_repository_passes(self):
        self.assertEqual(self.problems(), [])
        with contextlib.redirect_stdout(io.StringIO()) as out:
            self.assertEqual(docs_check.main(["--root", str(self.root)]), 0)
        self.assertIn("docs check: 3 pages", out.getvalue())

    def test_a_link_to_a_missing_page_fails_with_its_page_and_line(self):
        self.edit("docs/api.md", "back to [the first](#outcomes)", "back to [the first](../docs/gone.md)")
        self.assert_only("docs/api.md:14: link '../docs/gone.md': docs/gone.md does not exist")

    def test_a_link_to_a_missing_anchor_fails(self):
        self.edit("README.md", "docs/api.md#outcomes", "docs/api.md#outcome")
        self.assert_only("README.md:3: link 'docs/api.md#outcome': docs/api.md has no heading with the id #outcome")

    def test_a_link_to_a_missing_anchor_on_the_same_page_fails(self):
        self.edit("docs/api.md", "(#outcomes)", "(#outcomes-2)")
        self.assert_only("docs/api.md:14: link '#outcomes-2'")

    def test_a_link_leaving_the_repository_fails(self):
        self.edit("README.md", "(docs/api.md#outcomes)", "(../elsewhere.md)")
        self.assert_only("README.md:3: link '../elsewhere.md' leaves the repository")

    def test_an_unknown_make_target_fails_in_prose_and_in_a_code_block(self):
        self.edit("README.md", "then `make test`", "then `make tests`")
        self.edit("README.md", "is inside a code block", "is inside a code block\n$ make lint && make demo  # lint: unknown")
        self.assert_only(
            "README.md:3: `make tests`: the Makefile has no target 'tests'",
            "README.md:10: `make lint`: the Makefile has no target 'lint'",
        )

    def test_a_variable_the_function_reads_but_no_row_documents_fails_at_the_read(self):
        self.edit("src/config.rs", '"DRY_RUN",', '"DRY_RUN",\n    "GUARD_TABLE",')
        self.write("src/main.rs", 'fn main() {\n    let _ = std::env::var("UNDOCUMENTED_TOO");\n}\n')
        self.assert_only(
            "src/config.rs:4: the function reads GUARD_TABLE, which has no row in the configuration table",
            "src/main.rs:2: the function reads UNDOCUMENTED_TOO, which has no row",
        )

    def test_a_documented_variable_the_function_does_not_read_fails_at_its_row(self):
        self.edit("src/config.rs", '    "DRY_RUN",\n', "")
        self.assert_only("docs/deploying.md:8: DRY_RUN is documented as configuration, but the function never reads it")

    def test_a_tool_variable_need_only_be_named_on_some_page(self):
        self.write("src/bin/tool.rs", 'fn main() {\n    std::env::var("TOOL_SETTING");\n}\n')
        self.assert_only("src/bin/tool.rs:2: TOOL_SETTING is read here but named on no page")
        self.edit("README.md", "# fixture\n", "# fixture\n\n`TOOL_SETTING` sets the tool.\n")
        self.assert_only()

    def test_without_the_configuration_list_the_check_fails_rather_than_passes(self):
        self.write("src/config.rs", 'fn read() { get("POLICY"); }\n')
        found = self.problems()
        self.assertTrue(found[0].startswith("src/config.rs:1: no `pub const VARIABLES"), found)

    def test_a_code_in_the_outcome_table_that_no_code_path_returns_fails_at_its_row(self):
        self.edit("docs/api.md", "REJECTED `denied-user`", "REJECTED `denied-user`, `denied-everyone`")
        self.assert_only("docs/api.md:8: `denied-everyone` is in the outcome table, but no code() in")

    def test_a_code_the_function_returns_without_a_row_fails_at_the_code(self):
        self.edit("src/outcome.rs", '=> "invalid-request",', '=> "invalid-request",\n            ResetError::Gone => "user-gone",')
        self.assert_only("src/outcome.rs:6: the function can end a record with `user-gone`, which has no row in the outcome table")

    def test_a_delegated_code_without_a_row_fails_too(self):
        self.edit("src/policy/mod.rs", '=> "denied-user" }', '=> "denied-user", DenyReason::G => "denied-group" }')
        self.assert_only("src/policy/mod.rs:3: the function can end a record with `denied-group`")

    def test_a_moved_code_function_fails_rather_than_passes(self):
        self.edit("src/failure.rs", "impl CognitoError {", "impl CognitoFailure {")
        found = self.problems()
        self.assertTrue(found[0].startswith("src/failure.rs:1: no `fn code` in an `impl CognitoError`"), found)

    def test_the_exit_status_and_output_name_each_problem(self):
        self.edit("README.md", "then `make test`", "then `make tests`")
        with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()):
            self.assertEqual(docs_check.main(["--root", str(self.root)]), 1)
        self.assertTrue(out.getvalue().startswith("README.md:3: `make tests`"), out.getvalue())


class SlugTest(unittest.TestCase):
    def test_headings_get_githubs_ids(self):
        self.assertEqual(docs_check.slug("`reset-policy`: check and explain a policy"), "reset-policy-check-and-explain-a-policy")
        self.assertEqual(docs_check.slug("Regions and Cognito's quotas"), "regions-and-cognitos-quotas")
        self.assertEqual(docs_check.slug("Configuration (environment variables)"), "configuration-environment-variables")
        self.assertEqual(docs_check.slug("Measured: `make bench-drain`"), "measured-make-bench-drain")
        self.assertEqual(docs_check.slug("1. What the function trusts: its event"), "1-what-the-function-trusts-its-event")
        self.assertEqual(docs_check.slug("`PACING_LEASE_MS` and [a link](x.md)"), "pacing_lease_ms-and-a-link")


if __name__ == "__main__":
    unittest.main()
