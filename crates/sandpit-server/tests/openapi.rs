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
