//! The SDKs' shared test vectors (`sdk/testdata/vectors.json`): error answers → error kinds, detach key
//! specs → bytes. The Python and TypeScript SDKs check the same file; no daemon is needed.

use sandpit::{Error, ErrorCode};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../sdk/testdata/vectors.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// This SDK's class of each kind: the variant's name.
fn variant_of(kind: &str) -> &'static str {
    match kind {
        "invalid_argument" => "InvalidArgument",
        "unauthenticated" => "Authentication",
        "permission_denied" => "PermissionDenied",
        "not_found" => "NotFound",
        "timeout" => "Timeout",
        // The file conflicts other than already_exists are Conflict with their own code.
        "conflict" | "not_empty" | "is_a_directory" | "not_a_directory" => "Conflict",
        "already_exists" => "AlreadyExists",
        "insufficient_storage" => "InsufficientStorage",
        "payload_too_large" | "resource_exhausted" | "unavailable" | "internal" | "other" => "Api",
        _ => panic!("vectors.json has a kind this test does not know: {kind}"),
    }
}

fn variant_name(e: &Error) -> &'static str {
    match e {
        Error::InvalidArgument(_) => "InvalidArgument",
        Error::Authentication(_) => "Authentication",
        Error::PermissionDenied(_) => "PermissionDenied",
        Error::NotFound(_) => "NotFound",
        Error::Timeout(_) => "Timeout",
        Error::Conflict(_) => "Conflict",
        Error::AlreadyExists(_) => "AlreadyExists",
        Error::InsufficientStorage(_) => "InsufficientStorage",
        Error::Api(_) => "Api",
        _ => "another variant",
    }
}

/// The code this SDK reports for a wire code: its `ErrorCode`, `Unknown` for one it does not know.
fn error_code(code: &str) -> ErrorCode {
    serde_json::from_value(Value::from(code)).expect("every string is an ErrorCode")
}

#[test]
fn error_answers_map_to_the_kinds() {
    let v = vectors();
    let cases = v["errors"].as_array().expect("errors");
    assert!(cases.len() > 50, "too few error vectors");
    let mut failures = Vec::new();
    for c in cases {
        let name = c["name"].as_str().expect("name");
        let status = u16::try_from(c["status"].as_u64().expect("status")).expect("a u16 status");
        let body = match (c.get("body"), c.get("json")) {
            (Some(b), None) => b.as_str().expect("body is text").as_bytes().to_vec(),
            (None, Some(j)) => serde_json::to_vec(j).expect("json"),
            _ => panic!("{name}: give exactly one of body and json"),
        };
        let e = Error::from_response(status, &body);
        let want = variant_of(c["expected"].as_str().expect("expected"));
        let got = variant_name(&e);
        let mut problems = Vec::new();
        if got != want {
            problems.push(format!("variant {got}, want {want}"));
        }
        let api = e.api().expect("a server error has ApiError details");
        let code = error_code(c["code"].as_str().expect("code"));
        if api.code != code {
            problems.push(format!("code {:?}, want {code:?}", api.code));
        }
        if api.status != status {
            problems.push(format!("status {}, want {status}", api.status));
        }
        match c.get("message").and_then(Value::as_str) {
            Some(m) if api.message != m => {
                problems.push(format!("message {:?}, want {m:?}", api.message));
            }
            _ => {}
        }
        for part in c
            .get("message_contains")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let part = part.as_str().expect("message_contains holds strings");
            if !api.message.contains(part) {
                problems.push(format!("message {:?} lacks {part:?}", api.message));
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{name}: {}", problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn detach_key_specs_parse_as_the_vectors_say() {
    let v = vectors();
    let cases = v["detach_keys"].as_array().expect("detach_keys");
    assert!(cases.len() > 20, "too few detach key vectors");
    let mut failures = Vec::new();
    for c in cases {
        let spec = c["spec"].as_str().expect("spec");
        let got = sandpit::parse_detach_keys(spec);
        if c.get("error").and_then(Value::as_bool) == Some(true) {
            match got {
                Err(Error::InvalidArgument(_)) => {}
                other => failures.push(format!("{spec:?}: {other:?}, want InvalidArgument")),
            }
        } else {
            let want: Vec<u8> = c["bytes"]
                .as_array()
                .expect("bytes")
                .iter()
                .map(|b| u8::try_from(b.as_u64().expect("a byte")).expect("a byte"))
                .collect();
            match got {
                Ok(bytes) if bytes == want => {}
                other => failures.push(format!("{spec:?}: {other:?}, want Ok({want:?})")),
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
