//! schemathesis against the OpenAPI document of a running broker with a token:
//! every operation fuzzed from its schema, no answer a 5xx, every answer as its
//! schema says. The schemathesis CLI comes from the compat-tests venv
//! (compat-tests/python/requirements.txt), found beside `KASCADE_PYTHON`.

mod http;
mod spawn;

use std::path::PathBuf;
use std::process::Command;

use http::Http;
use serde_json::json;

/// The `schemathesis` executable of the venv whose python `KASCADE_PYTHON` names.
fn schemathesis() -> PathBuf {
    let python = std::env::var("KASCADE_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/kascade-venv/bin/python")
    });
    PathBuf::from(python).with_file_name("schemathesis")
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_unlike_its_schema() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = spawn::serve(
        "127.0.0.1:0",
        &dir.path().join("data"),
        &["--admin-token", "s3cret"],
    );
    let addr = served.admin_addr();
    let api = Http::new(&addr, Some("s3cret"));
    // A root pool, so that K/V operations on generated keys reach the engine.
    let root = api.json(
        "POST",
        "/v1/pools",
        &json!({"prefix": "/", "storage": "volatile"}),
    );
    assert_eq!(root.status, 201, "{root:?}");

    let work = dir.path().join("schemathesis");
    std::fs::create_dir_all(&work).unwrap();
    let out = Command::new(schemathesis())
        .current_dir(&work)
        .args([
            "run",
            &format!("http://{addr}/openapi.json"),
            "--header",
            "Authorization: Bearer s3cret",
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--max-examples",
            "40",
            "--seed",
            "20261126",
            "--generation-database",
            "none",
            "--suppress-health-check",
            "filter_too_much,too_slow",
            "--request-timeout",
            "30",
            "--no-color",
        ])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", schemathesis().display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It tested every operation, and all passed.
    assert!(stdout.contains("Selected: 28/28"), "{stdout}");
    assert!(stdout.contains("Tested: 28"), "{stdout}");
    let summary = stdout
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    let (generated, passed) = summary
        .trim()
        .split_once(" generated, ")
        .and_then(|(g, rest)| {
            Some((
                g.parse::<u64>().ok()?,
                rest.split(' ').next()?.parse::<u64>().ok()?,
            ))
        })
        .unwrap_or_else(|| panic!("unreadable summary {summary:?}"));
    assert!(generated > 500, "{summary}");
    assert_eq!(generated, passed, "{summary}");

    // The broker still serves, and stops cleanly.
    assert_eq!(api.get("/v1/pools").status, 200);
    spawn::stop(&mut served.child);
}
