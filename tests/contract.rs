//! The contract run: schemathesis (every check, every phase) against `trailbook serve`'s own OpenAPI
//! document, once per role's token and once without one. It must report zero failures: every status the
//! API answers is documented, every request the document calls valid is accepted (or refused by a rule
//! that needs the aggregate's state, see `tests/contract/schemathesis.toml`), every request it calls
//! invalid is refused, and every body matches its schema.
//!
//! schemathesis comes from `$SCHEMATHESIS`, else `schemathesis` on the `PATH`, else it is installed
//! (pinned) into `target/contract-venv` with `python3 -m venv` and pip (`.ci/run` does that up front).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use domain::values::Role;
use support::Server;

/// The schemathesis release the contract is checked with (`.ci/run` installs the same file).
const REQUIREMENTS: &str = include_str!("contract/requirements.txt");

/// The seed of the generated cases (`TRAILBOOK_CONTRACT_SEED` overrides it, to explore further).
const SEED: &str = "20261207";

fn contract_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/contract")
}

/// The schemathesis command, installing it when it is nowhere to be found.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let on_path = Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if on_path {
        return PathBuf::from("schemathesis");
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/contract-venv");
    let installed = venv.join("bin/schemathesis");
    if !installed.exists() {
        let created = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 is needed to install schemathesis for the contract run");
        assert!(created.success(), "python3 -m venv failed");
        let pip = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet"])
            .args(REQUIREMENTS.split_whitespace())
            .status()
            .unwrap();
        assert!(pip.success(), "pip install {REQUIREMENTS} failed");
    }
    installed
}

/// Runs schemathesis against `server` with `token` (none: anonymous); returns its exit status and
/// output.
fn run(server: &Server, token: Option<&str>, label: &str) -> (bool, String) {
    let seed = std::env::var("TRAILBOOK_CONTRACT_SEED").unwrap_or_else(|_| SEED.to_string());
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("contract-{label}"));
    std::fs::create_dir_all(&work).unwrap();
    let mut cmd = Command::new(schemathesis());
    cmd.current_dir(&work)
        .env("PYTHONPATH", contract_dir())
        .arg("--config-file")
        .arg(contract_dir().join("schemathesis.toml"))
        .arg("run")
        .arg(server.url("/openapi.json"))
        .args(["--checks", "all", "--seed", &seed, "--no-color"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"]);
    if let Some(token) = token {
        cmd.args(["--header", &format!("Authorization: Bearer {token}")]);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Zero failures for every role and for no token at all.
#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_is_the_truth_for_every_role() {
    // The unauthenticated probes of five runs share one address: a budget that lets them reach the
    // routes (the limit itself has its own tests; its 429 is in the document either way).
    let server = Server::start_part("serve", &[("TRAILBOOK_ANONYMOUS_RATE_LIMIT", "500")]).await;
    let callers = [
        ("operator", Some(server.token(Role::Operator, "op-1"))),
        ("client", Some(server.client("ada"))),
        ("support", Some(server.token(Role::Support, "sam"))),
        ("partner", Some(server.token(Role::Partner, "acme-hotels"))),
        ("anonymous", None),
    ];
    let mut failed = Vec::new();
    for (label, token) in &callers {
        let (passed, output) = run(&server, token.as_deref(), label);
        let summary = output
            .lines()
            .rev()
            .find(|line| line.contains(" in ") && line.starts_with('='))
            .unwrap_or("(no summary line)")
            .to_string();
        eprintln!("contract run as {label}: {summary}");
        if !passed {
            eprintln!("{output}");
            failed.push(*label);
        }
    }
    assert!(
        failed.is_empty(),
        "schemathesis reported failures as {failed:?} (output above)"
    );
}
