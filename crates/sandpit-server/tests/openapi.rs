//! The served document is a valid `OpenAPI` 3.1 description, checked with the independent
//! `openapi-spec-validator` Python package when it is installed (SKIPPED otherwise).

use std::io::Write;
use std::process::{Command, Stdio};

const VALIDATE: &str = "import json, sys\n\
from openapi_spec_validator import validate\n\
doc = json.load(sys.stdin)\n\
validate(doc)\n\
print('valid', doc['openapi'], len(doc['paths']))\n";

#[test]
fn document_passes_an_independent_validator() {
    let doc = sandpit_server::openapi::spec_json();
    let probe = Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        sandpit_testkit::skip(format_args!(
            "python3 with openapi-spec-validator is not installed"
        ));
        return;
    }
    let mut child = Command::new("python3")
        .args(["-c", VALIDATE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "invalid OpenAPI document:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("valid 3.1"));
}

/// The API contract is reviewed like code: the served document must equal the checked-in snapshot
/// `docs/openapi.json`, so a change to a path, a field or a status shows up in the diff. After an
/// intended change, refresh it with `SANDPIT_UPDATE_SNAPSHOTS=1 cargo test -p sandpit-server --test openapi`
/// (and say what changed in docs/api.md).
#[test]
fn document_matches_the_checked_in_snapshot() {
    let snapshot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let doc = sandpit_server::openapi::spec_json() + "\n";
    if std::env::var_os("SANDPIT_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&snapshot, &doc).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&snapshot).unwrap_or_default();
    if want != doc {
        let first = want
            .lines()
            .zip(doc.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| want.lines().count().min(doc.lines().count()));
        panic!(
            "the OpenAPI document differs from {} (first at line {}: snapshot {:?}, served {:?}); \
             if the API change is intended, run SANDPIT_UPDATE_SNAPSHOTS=1 cargo test -p sandpit-server \
             --test openapi and commit the file",
            snapshot.display(),
            first + 1,
            want.lines().nth(first).unwrap_or("<end>"),
            doc.lines().nth(first).unwrap_or("<end>"),
        );
    }
}
