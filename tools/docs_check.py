#!/usr/bin/env python3
"""The docs check (`make docs-check`, part of `make test`): the documentation says what the code does.

    python3 tools/docs_check.py [--root DIR]

Over every Markdown page of the repository (README.md, SECURITY.md, docs/, and the READMEs beside
the code; not .tools/, target/ or any hidden directory):

- every relative link resolves: the file or directory exists, and a `#anchor` into a Markdown page
  names one of its headings (GitHub's heading ids) or an explicit `<a id="...">`;
- every `make` target named in inline code (`make demo`) or in a command of a code block exists in
  the Makefile;
- every environment variable the function reads has a row in the configuration table (CONFIG_PAGE,
  under CONFIG_HEADING), and every row of that table is a variable the function reads (or one of
  READ_BY_DEPENDENCIES). What the function reads: the configuration's list, `VARIABLES` in
  src/config.rs (which `Config::from_lookup` is held to in debug builds, and a unit test holds
  exact), and every `env::var("...")` under src/ outside src/bin/ and test modules. A variable a
  tool in src/bin/ reads is named on some page;
- every code in the outcome column of the outcome table (OUTCOME_PAGE, under OUTCOME_HEADING) is a
  code the function can end a record with, and the reverse: the codes are the string literals of
  the `code()` functions in CODE_SOURCES (`ResetError::code` and the two it delegates to).

Each problem is printed as `path:line: what is wrong`; the exit status is 1 if there is any.
Python standard library only, no build: it reads the Rust sources as text.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_PAGE = "docs/deploying.md"
CONFIG_HEADING = "configuration-environment-variables"
OUTCOME_PAGE = "docs/api.md"
OUTCOME_HEADING = "outcomes"
# (file, the type whose `fn code` returns the codes): ResetError::code, and the two it delegates to.
CODE_SOURCES = [
    ("src/outcome.rs", "ResetError"),
    ("src/policy/mod.rs", "DenyReason"),
    ("src/failure.rs", "CognitoError"),
]
# Documented as configuration, read by a dependency rather than by the function's own code.
READ_BY_DEPENDENCIES = {"AWS_ENDPOINT_URL": "the AWS SDK (aws-config)"}
SKIP_DIRS = {"target", "node_modules"}

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
EXPLICIT_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
MAKE_TARGET_LINE = re.compile(r"^([^\s#:=][^:=]*?)\s*::?(?!=)")
# The configuration's own list of the variables it reads (src/config.rs checks it is exact)...
CONFIG_SOURCE = "src/config.rs"
CONFIG_LIST = re.compile(r"pub\s+const\s+VARIABLES\s*:\s*&\[&str\]\s*=\s*&\[([^\]]*)\]")
# ...and any direct read of the environment elsewhere (logging.rs reads the log settings).
ENV_READ = re.compile(r"env::var(?:_os)?\(\s*\"([A-Z][A-Z0-9_]*)\"\s*\)")
TEST_MODULE = re.compile(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{")
VARIABLE = re.compile(r"^[A-Z][A-Z0-9_]*$")
CODE = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")


@dataclass
class Page:
    path: Path
    rel: str
    lines: list[str]
    # each line outside code blocks, with its inline code spans blanked out (for links)
    prose: list[tuple[int, str]] = field(default_factory=list)
    # lines inside fenced code blocks
    code: list[tuple[int, str]] = field(default_factory=list)
    # inline code spans of prose lines
    spans: list[tuple[int, str]] = field(default_factory=list)
    # (line, level, slug)
    headings: list[tuple[int, int, str]] = field(default_factory=list)
    anchors: set[str] = field(default_factory=set)


def slug(text: str) -> str:
    """GitHub's heading id: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def read_page(path: Path, root: Path) -> Page:
    page = Page(path, path.relative_to(root).as_posix(), path.read_text(encoding="utf-8").split("\n"))
    fence = None
    seen: dict[str, int] = {}
    for n, line in enumerate(page.lines, 1):
        m = FENCE.match(line)
        if m:
            if fence is None:
                fence = m.group(1)
                continue
            if line.strip().startswith(fence):
                fence = None
                continue
        if fence is not None:
            page.code.append((n, line))
            continue
        page.spans.extend((n, s.group(2).strip()) for s in CODE_SPAN.finditer(line))
        page.prose.append((n, CODE_SPAN.sub(lambda s: " " * len(s.group(0)), line)))
        page.anchors.update(EXPLICIT_ANCHOR.findall(line))
        h = HEADING.match(line)
        if h:
            base = slug(h.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            s = base if count == 0 else f"{base}-{count}"
            page.headings.append((n, len(h.group(1)), s))
            page.anchors.add(s)
    return page


def markdown_pages(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
        found += [Path(dirpath) / f for f in sorted(filenames) if f.endswith(".md")]
    return found


class Checker:
    def __init__(self, root: Path):
        self.root = root.resolve()
        self.problems: list[str] = []
        self.pages = {p.rel: p for p in (read_page(path, self.root) for path in markdown_pages(self.root))}

    def problem(self, where: str, line: int, message: str) -> None:
        self.problems.append(f"{where}:{line}: {message}")

    # ---- links --------------------------------------------------------------------------------

    def check_links(self) -> None:
        for page in self.pages.values():
            for n, line in page.prose:
                targets = [m.group(1) for m in LINK.finditer(line)]
                ref = REFERENCE.match(line)
                if ref:
                    targets.append(ref.group(1))
                for target in targets:
                    self.check_link(page, n, target)

    def check_link(self, page: Page, n: int, target: str) -> None:
        if SCHEME.match(target) or target.startswith("//"):
            return
        path_part, _, anchor = target.partition("#")
        if path_part:
            if path_part.startswith("/"):
                self.problem(page.rel, n, f"link {target!r}: use a path relative to the page, not from the root")
                return
            resolved = (page.path.parent / path_part).resolve()
            if self.root not in resolved.parents and resolved != self.root:
                self.problem(page.rel, n, f"link {target!r} leaves the repository")
                return
            if not resolved.exists():
                self.problem(page.rel, n, f"link {target!r}: {resolved.relative_to(self.root).as_posix()} does not exist")
                return
            linked = self.pages.get(resolved.relative_to(self.root).as_posix()) if resolved.is_file() else None
        else:
            linked = page
        if anchor and linked is not None and anchor not in linked.anchors:
            self.problem(page.rel, n, f"link {target!r}: {linked.rel} has no heading with the id #{anchor}")

    # ---- make targets -------------------------------------------------------------------------

    def makefile_targets(self) -> set[str]:
        makefile = self.root / "Makefile"
        targets: set[str] = set()
        if not makefile.exists():
            return targets
        for line in makefile.read_text(encoding="utf-8").splitlines():
            m = MAKE_TARGET_LINE.match(line)
            if m:
                targets.update(t for t in m.group(1).split() if not re.search(r"[$%]", t) and not t.startswith("."))
        return targets

    def check_make_targets(self) -> None:
        targets = self.makefile_targets()
        for page in self.pages.values():
            mentions = [(n, s) for n, s in page.spans if re.match(r"make(\s|$)", s)]
            for n, line in page.code:
                command = re.sub(r"^\s*\$\s+", "", line)
                for part in re.split(r"&&|\|\||;|\|", command.split(" #")[0]):
                    if re.match(r"\s*make(\s|$)", part):
                        mentions.append((n, part.strip()))
            for n, command in mentions:
                for word in command.split()[1:]:
                    if word.startswith("-") or "=" in word:
                        continue
                    if not re.match(r"^[A-Za-z0-9_.-]+$", word):
                        break
                    if word not in targets:
                        self.problem(page.rel, n, f"`make {word}`: the Makefile has no target {word!r}")

    # ---- environment variables ----------------------------------------------------------------

    def rust_sources(self) -> list[tuple[str, str]]:
        """(path, text without its test module) of every Rust source under src/."""
        out = []
        src = self.root / "src"
        for path in sorted(src.rglob("*.rs")) if src.exists() else []:
            text = path.read_text(encoding="utf-8")
            m = TEST_MODULE.search(text)
            out.append((path.relative_to(self.root).as_posix(), text[: m.start()] if m else text))
        return out

    def variables_read(self) -> tuple[dict[str, tuple[str, int]], dict[str, tuple[str, int]]]:
        """Variables the function reads and variables the tools in src/bin/ read: name -> (file, line)."""
        function: dict[str, tuple[str, int]] = {}
        tools: dict[str, tuple[str, int]] = {}
        for rel, text in self.rust_sources():
            if rel == CONFIG_SOURCE:
                listed = CONFIG_LIST.search(text)
                if listed is None:
                    self.problem(rel, 1, "no `pub const VARIABLES: &[&str]` here: the docs check reads the settings from it")
                else:
                    for m in re.finditer(r"\"([^\"]*)\"", listed.group(1)):
                        at = listed.start(1) + m.start(1)
                        function.setdefault(m.group(1), (rel, text.count("\n", 0, at) + 1))
            into = tools if rel.startswith("src/bin/") else function
            for m in ENV_READ.finditer(text):
                into.setdefault(m.group(1), (rel, text.count("\n", 0, m.start(1)) + 1))
        return function, tools

    def section_tables(self, rel: str, heading: str) -> tuple[Page | None, list[tuple[int, list[str]]]]:
        """The table rows (line, cells) under one heading of a page, up to the next heading of its level."""
        page = self.pages.get(rel)
        if page is None:
            return None, []
        start = next(((n, level) for n, level, s in page.headings if s == heading), None)
        if start is None:
            return page, []
        first, level = start
        end = next((n for n, lv, _ in page.headings if n > first and lv <= level), len(page.lines) + 1)
        rows = []
        for n, line in page.prose:
            if first < n < end and line.lstrip().startswith("|"):
                raw = page.lines[n - 1].strip().strip("|")
                cells = [c.strip() for c in re.split(r"(?<!\\)\|", raw)]
                if not all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
                    rows.append((n, cells))
        return page, rows

    def check_variables(self) -> None:
        function, tools = self.variables_read()
        page, rows = self.section_tables(CONFIG_PAGE, CONFIG_HEADING)
        where = f"{CONFIG_PAGE}#{CONFIG_HEADING}"
        if page is None or not rows:
            self.problem(CONFIG_PAGE, 1, f"no configuration table under the heading #{CONFIG_HEADING}")
            return
        documented: dict[str, int] = {}
        for n, cells in rows[1:]:  # rows[0] is the header
            for name in (s.group(2).strip() for s in CODE_SPAN.finditer(cells[0])):
                if VARIABLE.match(name):
                    documented.setdefault(name, n)
        for name, (rel, line) in sorted(function.items()):
            if name not in documented:
                self.problem(rel, line, f"the function reads {name}, which has no row in the configuration table ({where})")
        for name, n in sorted(documented.items(), key=lambda kv: kv[1]):
            if name not in function and name not in READ_BY_DEPENDENCIES:
                self.problem(CONFIG_PAGE, n, f"{name} is documented as configuration, but the function never reads it")
        named = set()
        for p in self.pages.values():
            named.update(s for _, s in p.spans)
            named.update(re.findall(r"[A-Z][A-Z0-9_]+", "\n".join(line for _, line in p.code)))
        for name, (rel, line) in sorted(tools.items()):
            if name not in named:
                self.problem(rel, line, f"{name} is read here but named on no page")

    # ---- outcome codes ------------------------------------------------------------------------

    def produced_codes(self) -> dict[str, tuple[str, int]]:
        codes: dict[str, tuple[str, int]] = {}
        for rel, type_name in CODE_SOURCES:
            path = self.root / rel
            text = path.read_text(encoding="utf-8") if path.exists() else ""
            body = None
            for impl in re.finditer(rf"impl\s+{type_name}\s*\{{", text):
                m = re.compile(r"fn\s+code\s*\([^)]*\)[^{]*\{").search(text, impl.end())
                if m and m.start() < block_end(text, impl.end() - 1):
                    body = (m.end(), block_end(text, m.end() - 1))
                    break
            if body is None:
                self.problem(rel, 1, f"no `fn code` in an `impl {type_name}` here: update CODE_SOURCES in tools/docs_check.py")
                continue
            for lit in re.finditer(r"\"([^\"\\]*)\"", text[body[0] : body[1]]):
                if CODE.match(lit.group(1)):
                    codes.setdefault(lit.group(1), (rel, text.count("\n", 0, body[0] + lit.start()) + 1))
        return codes

    def check_codes(self) -> None:
        produced = self.produced_codes()
        page, rows = self.section_tables(OUTCOME_PAGE, OUTCOME_HEADING)
        where = f"{OUTCOME_PAGE}#{OUTCOME_HEADING}"
        if page is None or not rows:
            self.problem(OUTCOME_PAGE, 1, f"no outcome table under the heading #{OUTCOME_HEADING}")
            return
        header = [c.lower() for c in rows[0][1]]
        if "outcome" not in header:
            self.problem(OUTCOME_PAGE, rows[0][0], "the outcome table has no `outcome` column")
            return
        column = header.index("outcome")
        documented: dict[str, int] = {}
        for n, cells in rows[1:]:
            if column < len(cells):
                for code in (s.group(2).strip() for s in CODE_SPAN.finditer(cells[column])):
                    if CODE.match(code):
                        documented.setdefault(code, n)
        for code, n in sorted(documented.items(), key=lambda kv: kv[1]):
            if code not in produced:
                self.problem(OUTCOME_PAGE, n, f"`{code}` is in the outcome table, but no code() in {', '.join(r for r, _ in CODE_SOURCES)} returns it")
        for code, (rel, line) in sorted(produced.items()):
            if code not in documented:
                self.problem(rel, line, f"the function can end a record with `{code}`, which has no row in the outcome table ({where})")

    def run(self) -> list[str]:
        self.check_links()
        self.check_make_targets()
        self.check_variables()
        self.check_codes()
        return self.problems


def block_end(text: str, open_brace: int) -> int:
    """The index of the brace closing the one at `open_brace` (Rust source; strings and chars skipped)."""
    depth = 0
    i = open_brace
    while i < len(text):
        c = text[i]
        if c == '"':
            i += 1
            while i < len(text) and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return len(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args(argv)
    checker = Checker(args.root)
    problems = checker.run()
    for p in problems:
        print(p)
    pages = len(checker.pages)
    if problems:
        print(f"docs check: {len(problems)} problem(s) in {pages} pages", file=sys.stderr)
        return 1
    print(f"docs check: {pages} pages; links, make targets, environment variables and outcome codes agree with the code")
    return 0


if __name__ == "__main__":
    sys.exit(main())
