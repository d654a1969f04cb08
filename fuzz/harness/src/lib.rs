//! The bodies of sandpit's fuzz targets. Each feeds untrusted bytes to the decoders and validation the
//! daemon and the agent run on a request (the same `sandpit-types` functions, not copies), then checks
//! what the code after them relies on: a validated request has no NUL for `CString::new`, a signal
//! number is in range, a frame re-encodes to its bytes. A panic anywhere is a finding.
//!
//! They live in a plain library rather than in `fuzz_targets/` so that `src/bin/replay.rs` can run
//! them over the corpus on a stable toolchain, without libFuzzer (scripts/fuzz.sh falls back to that
//! when nightly is missing).

use std::ffi::CString;

use sandpit_types::sandbox::{
    CreateSandboxRequest, CreateTemplateRequest, SetTimeoutRequest, TemplateSource,
    valid_template_name,
};
use sandpit_types::signal::signal_name;
use sandpit_types::{
    ClientMessage, Frame, ListQuery, MAX_PROCESS_ID_LEN, SignalRequest, SignalSpec, StartRequest,
    StdinQuery, StreamQuery, TtySize, WaitQuery, decode_json_body,
};

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz_targets/` file and its `corpus/` directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("agent_request", agent_request),
    ("daemon_request", daemon_request),
    ("ws_client_frame", ws_client_frame),
    ("query_and_headers", query_and_headers),
    ("signal", signal),
];

/// The JSON bodies the agent parses (`POST /exec` and `/processes`, `/signal`, `/resize`), as its
/// `Json` extractor does (`serde_json` over the bytes), then the handlers' validation.
pub fn agent_request(data: &[u8]) {
    if let Ok(req) = serde_json::from_slice::<StartRequest>(data) {
        start_request(&req);
    }
    if let Ok(req) = serde_json::from_slice::<SignalRequest>(data) {
        signal_spec(&req.signal);
    }
    if let Ok(size) = serde_json::from_slice::<TtySize>(data) {
        if size.validate().is_ok() {
            assert!(size.cols >= 1 && size.rows >= 1, "{size:?}");
        }
    }
}

fn start_request(req: &StartRequest) {
    // The agent keys idempotent retries on the request's JSON: it must serialize and read back equal.
    let text = serde_json::to_string(req).expect("a decoded request serializes");
    let back: StartRequest = serde_json::from_str(&text).expect("a serialized request decodes");
    assert_eq!(&back, req, "{text}");
    if req.validate().is_err() {
        return;
    }
    // What the agent's process plan takes for granted once a request validated.
    assert!(req.cmd.is_some() != req.argv.is_some());
    if let Some(argv) = &req.argv {
        assert!(argv.first().is_some_and(|a| !a.is_empty()));
    }
    let strings = req
        .cmd
        .iter()
        .chain(req.argv.iter().flatten())
        .chain(req.cwd.iter())
        .chain(req.user.iter());
    for s in strings {
        assert!(CString::new(s.as_str()).is_ok(), "NUL in {s:?}");
    }
    for (k, v) in &req.env {
        assert!(!k.is_empty() && !k.contains('='), "env name {k:?}");
        assert!(
            CString::new(format!("{k}={v}")).is_ok(),
            "NUL in {k:?}={v:?}"
        );
    }
    if let Some(id) = &req.id {
        // It becomes part of a directory name under the agent's log dir.
        assert!(!id.is_empty() && id.len() <= MAX_PROCESS_ID_LEN && !id.contains(['/', '\0']));
    }
    if let Some(tty) = req.tty {
        assert!(tty.cols >= 1 && tty.rows >= 1);
    }
    for r in &req.rlimits {
        assert!(r.hard.is_none_or(|h| h >= r.soft));
    }
}

/// The JSON bodies the daemon parses itself (`POST /v1/sandboxes`, `/timeout`, `/v1/templates`), with
/// its body rule (`decode_json_body`: empty is `{}`, anything else must be an object) and validation.
pub fn daemon_request(data: &[u8]) {
    if decode_json_body::<serde_json::Value>(data).is_ok() {
        let first = data.iter().find(|b| !b.is_ascii_whitespace());
        assert!(
            first.is_none_or(|b| *b == b'{'),
            "a body that is not an object"
        );
    }
    if let Ok(req) = decode_json_body::<CreateSandboxRequest>(data) {
        create_sandbox(&req);
    }
    if let Ok(req) = decode_json_body::<SetTimeoutRequest>(data) {
        let text = serde_json::to_string(&req).expect("serializes");
        assert_eq!(
            serde_json::from_str::<SetTimeoutRequest>(&text).ok(),
            Some(req)
        );
    }
    if let Ok(req) = decode_json_body::<CreateTemplateRequest>(data) {
        create_template(&req);
    }
}

fn create_sandbox(req: &CreateSandboxRequest) {
    let text = serde_json::to_string(req).expect("a decoded request serializes");
    let mut back: CreateSandboxRequest = serde_json::from_str(&text).expect("and decodes");
    // `cpu` is left out: serde_json's float parsing is not exactly round-trip (off by an ulp at most),
    // and nothing keys on it.
    back.cpu = req.cpu;
    assert_eq!(&back, req, "{text}");
    if req.validate().is_err() {
        return;
    }
    // What the engine and the backends take for granted once a request validated.
    if let Some(t) = &req.template {
        assert!(valid_template_name(t) && !t.contains('/') && !t.starts_with('.'));
    }
    if let Some(cpu) = req.cpu {
        assert!(cpu.is_finite() && cpu > 0.0 && cpu <= 1024.0);
    }
    for (k, v) in &req.env {
        assert!(!k.is_empty() && !k.contains('='));
        assert!(
            CString::new(format!("{k}={v}")).is_ok(),
            "NUL in {k:?}={v:?}"
        );
    }
    for (k, v) in &req.metadata {
        assert!(!k.is_empty() && !k.contains('\0') && !v.contains('\0'));
    }
}

fn create_template(req: &CreateTemplateRequest) {
    let text = serde_json::to_string(req).expect("a decoded request serializes");
    let back: CreateTemplateRequest = serde_json::from_str(&text).expect("and decodes");
    assert_eq!(&back, req, "{text}");
    if req.validate().is_err() {
        return;
    }
    assert!(valid_template_name(&req.name) && req.name != "base");
    if let TemplateSource::Dir(p) | TemplateSource::Tar(p) | TemplateSource::Oci(p) = &req.source {
        assert!(p.starts_with('/') && !p.contains('\0'), "{p:?}");
    }
}

/// What a client sends on `GET /processes/{pid}/ws`: binary frames (`Frame`) and JSON text frames,
/// decoded and checked by `ClientMessage`, which is all the agent's session does before acting.
pub fn ws_client_frame(data: &[u8]) {
    match ClientMessage::from_binary(data) {
        Ok(ClientMessage::Stdin(bytes)) => assert_eq!(bytes, data[9..]),
        Ok(other) => panic!("a binary frame decoded to {other:?}"),
        Err(_) => {}
    }
    if let Ok(f) = Frame::decode(data) {
        assert_eq!(Frame::encode(f.channel, f.seq, &f.data), data);
    }
    // The WebSocket layer hands the session only valid UTF-8 text.
    if let Ok(text) = std::str::from_utf8(data) {
        match ClientMessage::from_text(text) {
            Ok(ClientMessage::Signal(n)) => assert!((1..=64).contains(&n), "signal {n}"),
            Ok(ClientMessage::Resize(s)) => assert!(s.cols >= 1 && s.rows >= 1),
            _ => {}
        }
    }
}

/// Query strings, as axum's `Query` extractor decodes them (`serde_urlencoded`), into every query type
/// of the API, and the `Last-Event-ID` header, which may hold any bytes.
pub fn query_and_headers(data: &[u8]) {
    // A request target is ASCII by the time it is parsed; lossy keeps every fuzzed byte useful.
    let q = String::from_utf8_lossy(data);
    if let Ok(s) = serde_urlencoded::from_str::<StreamQuery>(&q) {
        let from = s.start_seq(Some(data));
        assert!(from.is_err() || from.is_ok_and(|n| n >= 1));
    }
    let _ = serde_urlencoded::from_str::<WaitQuery>(&q);
    let _ = serde_urlencoded::from_str::<ListQuery>(&q);
    let _ = serde_urlencoded::from_str::<StdinQuery>(&q);
    // `GET /v1/sandboxes` takes its query as pairs and reads them itself.
    let _ = serde_urlencoded::from_str::<Vec<(String, String)>>(&q);
    if let Ok(n) = StreamQuery::default().start_seq(Some(data)) {
        assert!(n >= 1);
    }
}

/// Signal names and numbers as clients spell them (`"TERM"`, `"SIGRTMIN+3"`, `15`): whatever parses is
/// a real signal, and its conventional name parses back to it.
pub fn signal(data: &[u8]) {
    if let Ok(name) = std::str::from_utf8(data) {
        signal_spec(&SignalSpec::Name(name.to_owned()));
    }
    if let Some(n) = data.get(..4) {
        let n = i32::from_le_bytes(n.try_into().expect("4 bytes"));
        if let Ok(m) = SignalSpec::Number(n).number() {
            assert_eq!(m, n);
            signal_spec(&SignalSpec::Number(n));
        }
    }
    if let Ok(spec) = serde_json::from_slice::<SignalSpec>(data) {
        signal_spec(&spec);
    }
}

fn signal_spec(spec: &SignalSpec) {
    if let Ok(n) = spec.number() {
        assert!((1..=64).contains(&n), "{spec:?} is signal {n}");
        assert_eq!(SignalSpec::Name(signal_name(n)).number(), Ok(n));
    }
}
