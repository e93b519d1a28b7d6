//! The model imports no port and no SDK: its modules name neither the AWS layer, nor an SDK or
//! runtime crate, nor the pipeline or the event sources (comments aside), so the layering cannot
//! quietly come back.

use std::path::{Path, PathBuf};

/// The model's modules.
const MODEL: &[&str] = &[
    "outcome.rs",
    "record.rs",
    "request.rs",
    "caller.rs",
    "failure.rs",
    "event.rs",
    "deadline.rs",
];

/// What the model must not name.
const FORBIDDEN: &[&str] = &[
    "crate::aws",
    "aws_sdk_",
    "aws_smithy_",
    "aws_config",
    "lambda_runtime",
    "crate::pipeline",
    "crate::sources",
];

fn model_files() -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<PathBuf> = MODEL.iter().map(|name| src.join(name)).collect();
    let mut policy: Vec<PathBuf> = std::fs::read_dir(src.join("policy"))
        .expect("src/policy")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .collect();
    policy.sort();
    files.extend(policy);
    files
}

#[test]
fn the_model_imports_no_port_and_no_sdk_crate() {
    let mut found = Vec::new();
    for path in model_files() {
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for (number, line) in text.lines().enumerate() {
            // Doc and line comments may name the layer they are kept apart from.
            let code = line.split("//").next().unwrap_or("");
            for name in FORBIDDEN.iter().filter(|name| code.contains(*name)) {
                found.push(format!(
                    "{}:{}: names {name}: {}",
                    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
                        .unwrap_or(&path)
                        .display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the model must import no port and no SDK crate:\n{}",
        found.join("\n")
    );
}
