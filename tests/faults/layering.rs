//! The model imports no port and no SDK: read from the module graph, not from text patterns.
//!
//! Each model file is lexed (comments, strings and character literals dropped), its `use`
//! declarations are parsed as trees (grouped, nested, `self`, `as`, globs, across lines), and
//! every path (imported or written out in code) is resolved the way the compiler resolves it:
//! `crate::`, `self::`, `super::` (from the file's module, and from its inline modules), a child
//! module, or a name an earlier `use` bound (`use crate::{self as root}; root::aws::X`), else an
//! external crate. A model module must reach no port (`crate::aws`, `crate::pipeline`,
//! `crate::sources`) and no SDK crate (`aws_*` but the Lambda event shapes, `lambda_runtime`).
//! The parser's own tests feed it the imports a text pattern misses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The model's modules (and every file of `src/policy/`).
const MODEL: &[&str] = &[
    "outcome.rs",
    "record.rs",
    "request.rs",
    "caller.rs",
    "failure.rs",
    "event.rs",
    "deadline.rs",
    "guard_logic.rs",
];

/// The ports: no model module may reach into them.
const PORTS: &[&str] = &["aws", "pipeline", "sources"];

/// Whether an external crate is an SDK or runtime crate. `aws_lambda_events` is the event
/// shapes (data, no client): the caller's identity is read from them.
fn sdk_crate(name: &str) -> bool {
    (name.starts_with("aws_") && name != "aws_lambda_events") || name == "lambda_runtime"
}

// ---- lexing ------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    Sep,
    /// `{`
    Open,
    /// `}`
    Close,
    Comma,
    Semi,
    Star,
    /// Anything else (punctuation, numbers, literals).
    Other,
}

/// The tokens of Rust source with their lines; comments, strings and chars are dropped.
fn lex(text: &str) -> Vec<(Tok, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let word_char = |i: usize| at(i).is_alphanumeric() || at(i) == '_';
    // The end of a string literal whose opening quote is at `i` (`hashes`: a raw string's).
    let string_end = |mut i: usize, hashes: Option<usize>| -> usize {
        i += 1;
        while i < chars.len() {
            match (chars[i], hashes) {
                ('\\', None) => i += 1,
                ('"', None) => return i + 1,
                ('"', Some(n)) if (1..=n).all(|k| at(i + k) == '#') => return i + 1 + n,
                _ => {}
            }
            i += 1;
        }
        i
    };
    // The end of a char literal whose content starts at `i` ('x', '\n', '\'', '\u{..}').
    let char_end = |mut i: usize| -> usize {
        i += if at(i) == '\\' { 2 } else { 1 };
        while i < chars.len() && chars[i] != '\'' {
            i += 1;
        }
        i + 1
    };
    let mut toks = Vec::new();
    let mut i = 0;
    // The line of `i`, counted as the lexer moves on.
    let (mut lines, mut counted) = (1, 0);
    let mut line_at = |to: usize| {
        let to = to.min(chars.len());
        lines += chars[counted.min(to)..to]
            .iter()
            .filter(|c| **c == '\n')
            .count();
        counted = counted.max(to);
        lines
    };
    while i < chars.len() {
        let c = chars[i];
        let line = line_at(i);
        let (tok, end) = match c {
            c if c.is_whitespace() => (None, i + 1),
            '/' if at(i + 1) == '/' => {
                let mut end = i;
                while end < chars.len() && chars[end] != '\n' {
                    end += 1;
                }
                (None, end)
            }
            '/' if at(i + 1) == '*' => {
                let (mut depth, mut end) = (0usize, i);
                while end < chars.len() {
                    if at(end) == '/' && at(end + 1) == '*' {
                        depth += 1;
                        end += 2;
                    } else if at(end) == '*' && at(end + 1) == '/' {
                        depth -= 1;
                        end += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        end += 1;
                    }
                }
                (None, end)
            }
            '"' => (Some(Tok::Other), string_end(i, None)),
            // A char literal, or a lifetime ('a: its name is only a word).
            '\'' if at(i + 1) == '\\' || at(i + 2) == '\'' => (Some(Tok::Other), char_end(i + 1)),
            '\'' => (None, i + 1),
            c if c.is_alphabetic() || c == '_' => {
                let mut end = i;
                while word_char(end) {
                    end += 1;
                }
                let word: String = chars[i..end].iter().collect();
                let raw = matches!(word.as_str(), "r" | "br" | "cr");
                let mut hashes = 0;
                while raw && at(end + hashes) == '#' {
                    hashes += 1;
                }
                if matches!(word.as_str(), "b" | "c") && at(end) == '"' {
                    (Some(Tok::Other), string_end(end, None))
                } else if raw && at(end + hashes) == '"' {
                    (Some(Tok::Other), string_end(end + hashes, Some(hashes)))
                } else if word == "b" && at(end) == '\'' {
                    (Some(Tok::Other), char_end(end + 1))
                } else if word == "r" && hashes == 1 && word_char(end + 1) {
                    // A raw identifier: r#type.
                    let mut stop = end + 1;
                    while word_char(stop) {
                        stop += 1;
                    }
                    (
                        Some(Tok::Ident(chars[end + 1..stop].iter().collect())),
                        stop,
                    )
                } else {
                    (Some(Tok::Ident(word)), end)
                }
            }
            c if c.is_ascii_digit() => {
                let mut end = i;
                while word_char(end) {
                    end += 1;
                }
                (Some(Tok::Other), end)
            }
            ':' if at(i + 1) == ':' => (Some(Tok::Sep), i + 2),
            '{' => (Some(Tok::Open), i + 1),
            '}' => (Some(Tok::Close), i + 1),
            ',' => (Some(Tok::Comma), i + 1),
            ';' => (Some(Tok::Semi), i + 1),
            '*' => (Some(Tok::Star), i + 1),
            _ => (Some(Tok::Other), i + 1),
        };
        if let Some(tok) = tok {
            toks.push((tok, line));
        }
        i = end;
    }
    toks
}

// ---- use trees ---------------------------------------------------------------------------------

/// One path a `use` tree names, expanded (`use a::{b, c::{self, d}}` is `a::b`, `a::c`,
/// `a::c::d`), with the name it binds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UsePath {
    /// Starts with `::` (an external crate, whatever is in scope).
    absolute: bool,
    segments: Vec<String>,
    /// The name it binds (`as`, or its last segment); `None` for a glob or `as _`.
    binds: Option<String>,
    glob: bool,
    line: usize,
}

struct UseParser<'a> {
    toks: &'a [(Tok, usize)],
    i: usize,
}

impl UseParser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|(t, _)| t)
    }

    fn line(&self) -> usize {
        self.toks
            .get(self.i)
            .or(self.toks.last())
            .map_or(0, |(_, l)| *l)
    }

    fn bump(&mut self) -> Option<Tok> {
        let tok = self.peek().cloned();
        self.i += 1;
        tok
    }

    fn error(&self, what: &str) -> String {
        format!("line {}: {what} in a use declaration", self.line())
    }

    /// A tree after `prefix` (`absolute` if the whole path began with `::`).
    fn tree(
        &mut self,
        prefix: &[String],
        absolute: bool,
        out: &mut Vec<UsePath>,
    ) -> Result<(), String> {
        let mut absolute = absolute;
        if prefix.is_empty() && self.peek() == Some(&Tok::Sep) {
            self.bump();
            absolute = true;
        }
        let mut segments = prefix.to_vec();
        match self.peek() {
            Some(Tok::Open) => return self.group(&segments, absolute, out),
            Some(Tok::Star) => {
                let line = self.line();
                self.bump();
                out.push(UsePath {
                    absolute,
                    segments,
                    binds: None,
                    glob: true,
                    line,
                });
                return Ok(());
            }
            _ => {}
        }
        let line = self.line();
        loop {
            match self.bump() {
                Some(Tok::Ident(name)) => segments.push(name),
                _ => return Err(self.error("a name expected")),
            }
            if self.peek() != Some(&Tok::Sep) {
                break;
            }
            self.bump();
            match self.peek() {
                Some(Tok::Open) => return self.group(&segments, absolute, out),
                Some(Tok::Star) => {
                    self.bump();
                    out.push(UsePath {
                        absolute,
                        segments,
                        binds: None,
                        glob: true,
                        line,
                    });
                    return Ok(());
                }
                _ => {}
            }
        }
        // `a::b::{self}` names `a::b`.
        if segments.len() > 1 && segments.last().map(String::as_str) == Some("self") {
            segments.pop();
        }
        let mut binds = segments.last().cloned();
        if self.peek() == Some(&Tok::Ident("as".to_owned())) {
            self.bump();
            binds = match self.bump() {
                Some(Tok::Ident(name)) if name == "_" => None,
                Some(Tok::Ident(name)) => Some(name),
                _ => return Err(self.error("a name expected after `as`")),
            };
        }
        out.push(UsePath {
            absolute,
            segments,
            binds,
            glob: false,
            line,
        });
        Ok(())
    }

    /// `{ tree, tree, ... }` after `prefix`.
    fn group(
        &mut self,
        prefix: &[String],
        absolute: bool,
        out: &mut Vec<UsePath>,
    ) -> Result<(), String> {
        self.bump(); // {
        loop {
            match self.peek() {
                Some(Tok::Close) => {
                    self.bump();
                    return Ok(());
                }
                None => return Err(self.error("an unclosed `{`")),
                _ => {}
            }
            self.tree(prefix, absolute, out)?;
            match self.bump() {
                Some(Tok::Comma) => {}
                Some(Tok::Close) => return Ok(()),
                _ => return Err(self.error("`,` or `}` expected")),
            }
        }
    }
}

// ---- the module graph of one file ---------------------------------------------------------------

/// Where a path leads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A module path inside the crate (`[]` is the crate root).
    Crate(Vec<String>),
    /// An external crate (or the prelude, a type in scope: anything not in the crate).
    External(String),
}

/// One path of a file that leads out of the model.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Finding {
    line: usize,
    path: String,
    reaches: String,
}

/// The paths of one file (module `module`: `["policy", "engine"]` for src/policy/engine.rs)
/// that reach a port or an SDK crate.
fn findings(module: &[&str], text: &str) -> Result<Vec<Finding>, String> {
    let toks = lex(text);
    let file_module: Vec<String> = module.iter().map(|s| (*s).to_owned()).collect();
    // The module each token is in (inline `mod x { ... }` included), and each module's children.
    let mut scopes: Vec<(Vec<String>, usize)> = vec![(file_module.clone(), 0)];
    let mut in_module = Vec::with_capacity(toks.len());
    let mut children: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
    let mut depth = 0usize;
    for (i, (tok, _)) in toks.iter().enumerate() {
        let current = scopes.last().map(|s| s.0.clone()).unwrap_or_default();
        in_module.push(current.clone());
        match tok {
            Tok::Open => {
                depth += 1;
                let named = match (
                    i.checked_sub(2).map(|j| &toks[j].0),
                    i.checked_sub(1).map(|j| &toks[j].0),
                ) {
                    (Some(Tok::Ident(kw)), Some(Tok::Ident(name))) if kw == "mod" => {
                        Some(name.clone())
                    }
                    _ => None,
                };
                if let Some(name) = named {
                    children
                        .entry(current.clone())
                        .or_default()
                        .insert(name.clone());
                    let mut inner = current;
                    inner.push(name);
                    scopes.push((inner, depth));
                }
            }
            Tok::Close => {
                if scopes.len() > 1 && scopes.last().is_some_and(|s| s.1 == depth) {
                    scopes.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Semi => {
                if let (Some((Tok::Ident(kw), _)), Some((Tok::Ident(name), _))) = (
                    i.checked_sub(2).map(|j| &toks[j]),
                    i.checked_sub(1).map(|j| &toks[j]),
                ) && kw == "mod"
                {
                    children.entry(current).or_default().insert(name.clone());
                }
            }
            _ => {}
        }
    }

    // Every `use`, expanded; and the names they bind, per module.
    let mut uses: Vec<(Vec<String>, UsePath)> = Vec::new();
    // The tokens of the declarations (their paths are read as trees, not again as code).
    let mut in_use = vec![false; toks.len()];
    let mut i = 0;
    while i < toks.len() {
        // (`use<'a>` is a precise capture in a bound, not a declaration.)
        let is_use = toks[i].0 == Tok::Ident("use".to_owned())
            && (i == 0 || toks[i - 1].0 != Tok::Sep)
            && matches!(
                toks.get(i + 1),
                Some((Tok::Ident(_) | Tok::Sep | Tok::Open | Tok::Star, _))
            );
        if !is_use {
            i += 1;
            continue;
        }
        let mut parser = UseParser {
            toks: &toks,
            i: i + 1,
        };
        let mut out = Vec::new();
        parser.tree(&[], false, &mut out)?;
        if parser.peek() != Some(&Tok::Semi) {
            return Err(parser.error("`;` expected"));
        }
        uses.extend(out.into_iter().map(|u| (in_module[i].clone(), u)));
        in_use[i..=parser.i].iter_mut().for_each(|t| *t = true);
        i = parser.i + 1;
    }
    let empty = BTreeSet::new();
    // Where a path written in `module` leads: its first segment resolved, then the rest.
    let resolve = |module: &[String],
                   absolute: bool,
                   segments: &[String],
                   bound: &BTreeMap<(Vec<String>, String), Target>|
     -> Option<Target> {
        let (first, mut rest) = segments.split_first()?;
        let base = if absolute {
            Target::External(first.clone())
        } else {
            match first.as_str() {
                "crate" => Target::Crate(Vec::new()),
                "self" => Target::Crate(module.to_vec()),
                "super" => {
                    let mut up = module.to_vec();
                    up.pop();
                    while rest.first().map(String::as_str) == Some("super") {
                        up.pop();
                        rest = &rest[1..];
                    }
                    Target::Crate(up)
                }
                name => match bound.get(&(module.to_vec(), name.to_owned())) {
                    Some(target) => target.clone(),
                    None if children.get(module).unwrap_or(&empty).contains(name) => {
                        let mut path = module.to_vec();
                        path.push(name.to_owned());
                        Target::Crate(path)
                    }
                    None => Target::External(name.to_owned()),
                },
            }
        };
        Some(match base {
            Target::Crate(mut path) => {
                path.extend(rest.iter().cloned());
                Target::Crate(path)
            }
            external => external,
        })
    };
    let mut bound: BTreeMap<(Vec<String>, String), Target> = BTreeMap::new();
    let mut found = BTreeSet::new();
    let mut check = |line: usize, written: String, target: &Target| {
        let reaches = match target {
            Target::Crate(path) if path.first().is_some_and(|m| PORTS.contains(&m.as_str())) => {
                format!("crate::{}", path.join("::"))
            }
            Target::External(name) if sdk_crate(name) => format!("the crate {name}"),
            _ => return,
        };
        found.insert(Finding {
            line,
            path: written,
            reaches,
        });
    };
    // The names the `use`s bind, in any order (a name may be used above its `use`): resolved
    // again until nothing changes.
    for _ in 0..=uses.len() {
        let before = bound.clone();
        for (module, u) in &uses {
            if let (Some(name), Some(target)) =
                (&u.binds, resolve(module, u.absolute, &u.segments, &bound))
            {
                bound.insert((module.clone(), name.clone()), target);
            }
        }
        if bound == before {
            break;
        }
    }
    for (module, u) in &uses {
        let Some(target) = resolve(module, u.absolute, &u.segments, &bound) else {
            continue;
        };
        let written = format!(
            "use {}{}{}",
            if u.absolute { "::" } else { "" },
            u.segments.join("::"),
            if u.glob { "::*" } else { "" }
        );
        check(u.line, written, &target);
    }
    // Every path written out in code: `a::b::c` (a leading `::` too), and `extern crate`.
    let mut i = 0;
    while i < toks.len() {
        if let [
            (Tok::Ident(kw), _),
            (Tok::Ident(krate), _),
            (Tok::Ident(name), line),
            ..,
        ] = &toks[i..]
            && kw == "extern"
            && krate == "crate"
        {
            check(
                *line,
                format!("extern crate {name}"),
                &Target::External(name.clone()),
            );
        }
        let starts = !in_use[i]
            && match &toks[i].0 {
                Tok::Ident(_) => i == 0 || toks[i - 1].0 != Tok::Sep,
                Tok::Sep => {
                    matches!(toks.get(i + 1), Some((Tok::Ident(_), _)))
                        && (i == 0 || !matches!(toks[i - 1].0, Tok::Ident(_)))
                }
                _ => false,
            };
        if !starts {
            i += 1;
            continue;
        }
        let absolute = toks[i].0 == Tok::Sep;
        let line = toks[i].1;
        let module = in_module[i].clone();
        let mut j = if absolute { i + 1 } else { i };
        let mut segments = Vec::new();
        while let Some((Tok::Ident(name), _)) = toks.get(j) {
            segments.push(name.clone());
            if toks.get(j + 1).map(|t| &t.0) == Some(&Tok::Sep)
                && matches!(toks.get(j + 2), Some((Tok::Ident(_), _)))
            {
                j += 2;
            } else {
                break;
            }
        }
        // A single name leads nowhere new (its `use` was checked); a path does.
        if (segments.len() > 1 || absolute)
            && let Some(target) = resolve(&module, absolute, &segments, &bound)
        {
            let written = format!(
                "{}{}",
                if absolute { "::" } else { "" },
                segments.join("::")
            );
            check(line, written, &target);
        }
        i = j + 1;
    }
    Ok(found.into_iter().collect())
}

// ---- the model ---------------------------------------------------------------------------------

/// Each model file with its module path.
fn model_files() -> Vec<(PathBuf, Vec<String>)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<(PathBuf, Vec<String>)> = MODEL
        .iter()
        .map(|name| {
            let module = name.trim_end_matches(".rs").to_owned();
            (src.join(name), vec![module])
        })
        .collect();
    let mut policy: Vec<PathBuf> = std::fs::read_dir(src.join("policy"))
        .expect("src/policy")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .collect();
    policy.sort();
    for path in policy {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let module = if stem == "mod" {
            vec!["policy".to_owned()]
        } else {
            vec!["policy".to_owned(), stem]
        };
        files.push((path, module));
    }
    files
}

#[test]
fn the_model_imports_no_port_and_no_sdk_crate() {
    let mut problems = Vec::new();
    let files = model_files();
    for (path, module) in &files {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let module: Vec<&str> = module.iter().map(String::as_str).collect();
        let shown = path
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(path)
            .display()
            .to_string();
        match findings(&module, &text) {
            Ok(found) => problems.extend(
                found
                    .into_iter()
                    .map(|f| format!("{shown}:{}: `{}` reaches {}", f.line, f.path, f.reaches)),
            ),
            Err(e) => problems.push(format!("{shown}: cannot read its imports: {e}")),
        }
    }
    assert!(
        files.len() > MODEL.len(),
        "the policy's files were not found"
    );
    assert!(
        problems.is_empty(),
        "the model must import no port and no SDK crate:\n{}",
        problems.join("\n")
    );
}

// ---- the parser's own tests --------------------------------------------------------------------

/// What a fixture reaches: `(line, reaches)`.
fn reached(module: &[&str], text: &str) -> Vec<(usize, String)> {
    findings(module, text)
        .expect("the fixture parses")
        .into_iter()
        .map(|f| (f.line, f.reaches))
        .collect()
}

#[test]
fn a_grouped_import_of_a_port_is_found() {
    assert_eq!(
        reached(&["outcome"], "use crate::{aws, outcome};\n"),
        vec![(1, "crate::aws".to_owned())]
    );
    assert_eq!(
        reached(&["outcome"], "use crate::aws::{self};\n"),
        vec![(1, "crate::aws".to_owned())]
    );
}

#[test]
fn a_nested_import_over_several_lines_is_found() {
    let text = "\
use std::fmt;
use crate::{
    outcome::Outcome,
    pipeline::{
        self,
        Step as Pipe,
    },
};
";
    assert_eq!(
        reached(&["record"], text),
        // Each path at the line of its last group (`self` names `pipeline` on line 5).
        vec![
            (5, "crate::pipeline".to_owned()),
            (6, "crate::pipeline::Step".to_owned()),
        ]
    );
}

#[test]
fn super_paths_that_climb_into_a_port_are_found() {
    // From src/policy/engine.rs, super::super is the crate root.
    let text = "use super::super::sources::http;\nuse super::document::Policy;\n";
    assert_eq!(
        reached(&["policy", "engine"], text),
        vec![(1, "crate::sources::http".to_owned())]
    );
    // From src/outcome.rs, super is the crate root; in its inline tests module, super is
    // outcome itself.
    let text = "use super::aws::guard;\nmod tests {\n    use super::aws::Local;\n}\n";
    assert_eq!(
        reached(&["outcome"], text),
        vec![(1, "crate::aws::guard".to_owned())]
    );
}

#[test]
fn paths_in_code_and_renamed_roots_are_found() {
    let text = "\
use crate::{self as root};
fn f() -> crate::sources::Answer {
    let client: ::aws_sdk_dynamodb::Client = todo!();
    root::aws::guard::call();
    aws_smithy_types::Blob::new(vec![]);
}
";
    assert_eq!(
        reached(&["event"], text),
        vec![
            (2, "crate::sources::Answer".to_owned()),
            (3, "the crate aws_sdk_dynamodb".to_owned()),
            (4, "crate::aws::guard::call".to_owned()),
            (5, "the crate aws_smithy_types".to_owned()),
        ]
    );
}

#[test]
fn a_name_used_above_its_use_is_resolved() {
    let text = "use root::pipeline::Step;\nuse crate::{self as root};\n";
    assert_eq!(
        reached(&["caller"], text),
        vec![(1, "crate::pipeline::Step".to_owned())]
    );
}

#[test]
fn comments_strings_and_the_model_itself_are_not_findings() {
    let text = r###"
//! Kept apart from crate::aws and aws_sdk_dynamodb.
/* crate::pipeline::run /* nested: crate::sources */ */
use crate::outcome::{self, Outcome};
use crate::failure::*;
use aws_lambda_events::apigw::ApiGatewayProxyRequestContext;
const A: &str = "crate::aws::guard";
const B: &str = r#"use crate::{aws};"#;
const C: char = '"';
fn f<'a>(x: &'a str) -> outcome::Code { let _ = b'"'; crate::deadline::wall_now(); todo!() }
"###;
    assert_eq!(reached(&["request"], text), Vec::new());
}

#[test]
fn every_source_file_parses_and_the_pipeline_is_seen_reaching_its_ports() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut todo = vec![src.clone()];
    let mut files = Vec::new();
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("a source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    assert!(files.len() > 20, "the sources were not found");
    let mut pipeline = Vec::new();
    for path in &files {
        let relative = path.strip_prefix(&src).expect("under src");
        let mut module: Vec<String> = relative
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(
            module.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            module.pop();
        }
        let module: Vec<&str> = module.iter().map(String::as_str).collect();
        let text = std::fs::read_to_string(path).expect("a source file");
        let found = findings(&module, &text)
            .unwrap_or_else(|e| panic!("{}: the parser cannot read it: {e}", path.display()));
        if module == ["pipeline"] {
            pipeline = found;
        }
    }
    // The pipeline drives the ports: what the model must not do, the parser sees it do.
    assert!(
        pipeline.iter().any(|f| f.reaches.starts_with("crate::aws")),
        "src/pipeline.rs reaches crate::aws, and the parser did not see it: {pipeline:?}"
    );
}
