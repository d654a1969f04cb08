//! Bad input against the real daemon (`sandpit serve --backend isolate`, spawned) and a real sandbox:
//! every case must be refused with a 4xx and the `{"error": {"code", "message"}}` body (or, on a
//! WebSocket, an `error` message or a close frame that says why), never a 5xx, a panic or a hang, and
//! afterwards the daemon must still answer `/health` and the sandbox must still run a command.
//!
//! The JSON bodies are not listed by hand: the cases are generated from the daemon's own
//! `/openapi.json` (every operation with an `application/json` body, every property the schema names,
//! nested ones included), so a new endpoint or field is covered without touching this file. Requests
//! go out through a small raw HTTP/1.1 and WebSocket client, because the cases need bytes no
//! well-behaved client sends (invalid UTF-8, `..` and `%00` in paths that `url` would normalise,
//! unmasked or oversized frames). The WebSocket cases run twice: through the daemon's proxy and
//! straight to the agent's socket.
//!
//! Needs root, a host the isolate backend accepts and `target/debug/sandpit` (`cargo build -p
//! sandpit-cli`); otherwise it prints a loud SKIPPED line and passes, like `tests/isolate.rs`. The
//! summary table (case, expected, got) goes to stderr: `cargo test -p sandpit-server --test bad_input
//! -- --nocapture`.

mod daemon;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use daemon::{KEY, Serve, client};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// No single exchange may take longer: past this it counts as a hang.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The daemon's default limit for the bodies it parses itself.
const DAEMON_BODY_LIMIT: usize = 1 << 20;
/// The agent's limit, which the daemon also applies to the bodies it proxies.
const AGENT_BODY_LIMIT: usize = sandpit_types::MAX_AGENT_BODY_BYTES;
/// The agent's WebSocket message and frame limit.
const WS_LIMIT: usize = 4 << 20;

/// The daemon with one running sandbox, and a long-lived process in it (`victim`: `cat` on a terminal,
/// stdin a pipe) for the calls that need a `{pid}`.
struct Fixture {
    // Field order is drop order: the daemon first, then its leftover sandboxes and the state directory
    // they are found in.
    serve: Serve,
    _fx: daemon::Fixture,
    state: PathBuf,
    http: reqwest::Client,
    id: String,
}

impl Fixture {
    async fn start(fx: daemon::Fixture) -> Self {
        let state = fx.state.clone();
        let serve = daemon::serve(&fx.bin, &state).await;
        let http = client();
        let r = http
            .post(serve.url("/v1/sandboxes"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let sb: Value = r.json().await.unwrap();
        let id = sb["id"].as_str().unwrap().to_owned();
        eprintln!("fixture: sandbox {id}, state {}", state.display());
        let f = Self {
            serve,
            _fx: fx,
            state,
            http,
            id,
        };
        let r = f
            .http
            .post(f.root("/processes"))
            .json(&json!({"id": "victim", "cmd": "cat", "stdin": "pipe",
                          "tty": {"cols": 80, "rows": 24}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        // What the file operations' valid samples act on (see `Spec::samples`).
        let r = f
            .http
            .post(f.root("/exec"))
            .json(&json!({"cmd": "mkdir -p /tmp/bad-input && touch /tmp/bad-input/from", "user": "root"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        f
    }

    fn root(&self, rest: &str) -> String {
        self.serve.url(&format!("/v1/sandboxes/{}{rest}", self.id))
    }

    /// The agent's socket on the host (root-only), for talking to the agent without the daemon.
    fn agent_socket(&self) -> PathBuf {
        let handle = self
            .state
            .join(format!("isolate/sandboxes/{}/handle.json", self.id));
        let v: Value = serde_json::from_str(&std::fs::read_to_string(handle).unwrap()).unwrap();
        PathBuf::from(v["agent_socket"].as_str().unwrap())
    }

    /// `Err` with what is wrong when the daemon does not answer `/health` or the sandbox cannot run
    /// `echo`, or the victim process is gone.
    async fn alive(&self) -> Result<(), String> {
        let health = self.http.get(self.serve.url("/health")).send().await;
        if !health.is_ok_and(|r| r.status().is_success()) {
            return Err("the daemon stopped answering /health".into());
        }
        let r = self
            .http
            .post(self.root("/exec"))
            .json(&json!({"cmd": "echo alive", "timeout_ms": 10_000}))
            .send()
            .await
            .map_err(|e| format!("exec after the case: {e}"))?;
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if status != 200 || v["stdout"] != "alive\n" {
            return Err(format!(
                "the sandbox no longer runs a command: {status} {v}"
            ));
        }
        let r = self
            .http
            .get(self.root("/processes/victim"))
            .send()
            .await
            .map_err(|e| format!("victim: {e}"))?;
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if v["status"] != "running" {
            return Err(format!("the victim process is no longer running: {v}"));
        }
        Ok(())
    }

    /// Deletes every sandbox but the fixture's (a case that was wrongly accepted may have made one).
    async fn delete_strays(&self) -> usize {
        let list: Value = self
            .http
            .get(self.serve.url("/v1/sandboxes"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut n = 0;
        for sb in list["sandboxes"].as_array().unwrap() {
            let id = sb["id"].as_str().unwrap();
            if id != self.id {
                let _ = self
                    .http
                    .delete(self.serve.url(&format!("/v1/sandboxes/{id}")))
                    .send()
                    .await;
                n += 1;
            }
        }
        n
    }
}

// ---- a raw HTTP/1.1 client ----------------------------------------------------------------------------

/// What came back: the status and the (de-chunked) body; `status` 0 never occurs.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Vec<u8>,
}

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

async fn tcp(addr: &str) -> Result<(Reader, Writer), String> {
    let s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (r, w) = s.into_split();
    Ok((Box::new(r), Box::new(w)))
}

async fn unix(path: &Path) -> Result<(Reader, Writer), String> {
    let s = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (r, w) = s.into_split();
    Ok((Box::new(r), Box::new(w)))
}

/// A request head: `METHOD TARGET`, the API key, `Connection: close`, then `extra` header lines.
fn head(method: &str, target: &[u8], extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(method.as_bytes());
    h.push(b' ');
    h.extend_from_slice(target);
    h.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    h.extend_from_slice(format!("Authorization: Bearer {KEY}\r\n").as_bytes());
    for (k, v) in extra {
        h.extend_from_slice(k.as_bytes());
        h.extend_from_slice(b": ");
        h.extend_from_slice(v);
        h.extend_from_slice(b"\r\n");
    }
    h
}

/// A complete request with a `Content-Length` body.
fn request(method: &str, target: &[u8], content_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let len = body.len().to_string();
    let mut extra: Vec<(&str, &[u8])> = vec![("Content-Length", len.as_bytes())];
    if let Some(ct) = content_type {
        extra.push(("Content-Type", ct.as_bytes()));
    }
    let mut r = head(method, target, &extra);
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

/// A complete request with a chunked body (no `Content-Length`), in 64 KiB chunks.
fn chunked_request(method: &str, target: &[u8], content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut r = head(
        method,
        target,
        &[
            ("Transfer-Encoding", b"chunked"),
            ("Content-Type", content_type.as_bytes()),
        ],
    );
    r.extend_from_slice(b"\r\n");
    for c in body.chunks(64 << 10) {
        r.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        r.extend_from_slice(c);
        r.extend_from_slice(b"\r\n");
    }
    r.extend_from_slice(b"0\r\n\r\n");
    r
}

/// Sends `req` and reads the answer: the whole body (the server closes), or only the head when
/// `head_only` (a stream that would not end). Writing and reading overlap, so an answer that comes
/// before the server has read the whole request (a 413) is still seen.
async fn exchange(
    (mut rd, mut wr): (Reader, Writer),
    req: Vec<u8>,
    head_only: bool,
) -> Result<Answer, String> {
    let read = async move {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            // A stream's head is enough; a refusal is read whole (its JSON body is checked).
            if head_only
                && buf.windows(4).any(|w| w == b"\r\n\r\n")
                && buf.starts_with(b"HTTP/1.1 2")
            {
                break;
            }
            match rd.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                // A server that answered and hung up on a body it refused resets the connection;
                // what it sent before is in `buf`.
                Err(e) if buf.is_empty() => return Err(format!("read: {e}")),
                Err(_) => break,
            }
        }
        parse_answer(&buf, head_only)
    };
    let write = async move {
        let r = wr.write_all(&req).await;
        let _ = wr.flush().await;
        // Keep the write half open until the answer is in: dropping it would half-close the socket.
        std::future::pending::<()>().await;
        r
    };
    let both = async {
        tokio::select! {
            a = read => a,
            _ = write => unreachable!("the writer never finishes"),
        }
    };
    tokio::time::timeout(CALL_TIMEOUT, both)
        .await
        .map_err(|_| format!("no answer within {CALL_TIMEOUT:?} (hang)"))?
}

fn parse_answer(buf: &[u8], head_only: bool) -> Result<Answer, String> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            format!(
                "connection closed without an answer ({} bytes: {:?})",
                buf.len(),
                String::from_utf8_lossy(&buf[..buf.len().min(80)])
            )
        })?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    let rest = &buf[end + 4..];
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if head_only && (200..300).contains(&status) {
        Vec::new()
    } else if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Ok(Answer { status, body })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}

// ---- expectations and the report -----------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A 4xx with the JSON error body.
    Refused,
    /// This status with the JSON error body and this code.
    Exactly(u16, &'static str),
    /// Any answer but a 5xx; a 4xx has the JSON error body.
    No5xx,
    /// A 2xx (documented as accepted).
    Accepted,
    /// A 4xx that hyper writes itself before any handler runs (no JSON body: nothing of ours ran).
    HyperRefused,
}

impl Expect {
    fn describe(self) -> String {
        match self {
            Self::Refused => "4xx + JSON error".into(),
            Self::Exactly(s, c) => format!("{s} {c}"),
            Self::No5xx => "no 5xx".into(),
            Self::Accepted => "2xx".into(),
            Self::HyperRefused => "4xx (hyper)".into(),
        }
    }

    fn check(self, a: &Answer) -> bool {
        let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
        let shaped = v["error"]["code"].is_string()
            && v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty());
        let refused = (400..500).contains(&a.status);
        match self {
            Self::Refused => refused && shaped,
            Self::Exactly(s, c) => a.status == s && shaped && v["error"]["code"] == c,
            Self::No5xx => a.status < 500 && (!refused || shaped),
            Self::Accepted => (200..300).contains(&a.status),
            Self::HyperRefused => refused,
        }
    }
}

fn describe(a: &Answer) -> String {
    let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
    match v["error"]["code"].as_str() {
        Some(c) => format!("{} {c}", a.status),
        None if a.body.is_empty() => format!("{} (empty body)", a.status),
        None => format!("{}", a.status),
    }
}

struct Row {
    class: &'static str,
    case: String,
    expected: String,
    got: String,
    ok: bool,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    /// Wall time per class, in the order the classes ran.
    times: Vec<(&'static str, Duration)>,
}

impl Report {
    fn add(&mut self, class: &'static str, case: String, expected: String, got: String, ok: bool) {
        if !ok {
            eprintln!("FAILED: [{class}] {case}: expected {expected}, got {got}");
        }
        self.rows.push(Row {
            class,
            case,
            expected,
            got,
            ok,
        });
    }

    fn print(&self) {
        let mut out =
            String::from("\n| class | case | expected | got | ok |\n|---|---|---|---|---|\n");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                r.class,
                r.case.replace('|', "\\|"),
                r.expected,
                r.got.replace('|', "\\|"),
                if r.ok { "ok" } else { "FAILED" }
            );
        }
        out.push_str("\n| class | cases | passed | time |\n|---|---|---|---|\n");
        for (class, t) in &self.times {
            let rows: Vec<&Row> = self.rows.iter().filter(|r| r.class == *class).collect();
            let passed = rows.iter().filter(|r| r.ok).count();
            let _ = writeln!(
                out,
                "| {class} | {} | {passed} | {:.1} s |",
                rows.len(),
                t.as_secs_f64()
            );
        }
        let passed = self.rows.iter().filter(|r| r.ok).count();
        let _ = writeln!(
            out,
            "\nSUMMARY: {} cases, {passed} passed, {} failed",
            self.rows.len(),
            self.rows.len() - passed
        );
        eprintln!("{out}");
    }
}

/// Sends one HTTP case through the daemon, checks the answer against `expect`, then that the daemon and
/// the sandbox still work, and records the row.
async fn http_case(
    f: &Fixture,
    report: &mut Report,
    class: &'static str,
    case: String,
    req: Vec<u8>,
    expect: Expect,
    head_only: bool,
) -> Option<Answer> {
    let answer = match tcp(&f.serve.addr()).await {
        Ok(conn) => exchange(conn, req, head_only).await,
        Err(e) => Err(e),
    };
    let (got, ok) = match &answer {
        Ok(a) => (describe(a), expect.check(a)),
        Err(e) => (e.clone(), false),
    };
    let (got, ok) = match f.alive().await {
        Ok(()) => (got, ok),
        Err(e) => (format!("{got}; then {e}"), false),
    };
    report.add(class, case, expect.describe(), got, ok);
    answer.ok()
}

// ---- JSON bodies, from /openapi.json --------------------------------------------------------------------

/// One step into a JSON document.
#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index,
}

/// What the schema says a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    /// An object with named properties (or `stdin`'s free-form object).
    Object,
    /// An object of string values (`env`, `metadata`).
    Map,
    /// Several alternatives (`SignalSpec`, `TemplateSource`).
    Any,
}

/// A place in a request body: where it is, what it is, and the samples its parents need to exist.
#[derive(Debug, Clone)]
struct Slot {
    ptr: Vec<Seg>,
    kind: Kind,
    required: bool,
    /// Parent values to set first (outermost first): an array needs an element, an alternative its
    /// variant.
    fills: Vec<(Vec<Seg>, Value)>,
}

impl Slot {
    fn label(&self) -> String {
        self.ptr
            .iter()
            .map(|s| match s {
                Seg::Key(k) => k.clone(),
                Seg::Index => "0".into(),
            })
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// An operation that takes a JSON body.
struct BodyOp {
    method: String,
    path: String,
    /// The schema allows `null` (an empty body is `{}`, documented as accepted).
    nullable: bool,
    schema: Value,
    /// Served by the agent through the proxy (its body limit applies).
    proxied: bool,
}

struct Spec<'a> {
    doc: &'a Value,
    /// Valid samples by component name: a generated one would be refused for a reason other than the
    /// case's (a `StartRequest` needs a command, a template a source that exists).
    samples: BTreeMap<&'static str, Value>,
}

impl Spec<'_> {
    /// Follows a `$ref`; returns the schema and its component name.
    fn resolve<'s>(&'s self, schema: &'s Value) -> (&'s Value, Option<&'s str>) {
        match schema["$ref"].as_str() {
            Some(r) => {
                let name = r.rsplit('/').next().unwrap();
                (&self.doc["components"]["schemas"][name], Some(name))
            }
            None => (schema, None),
        }
    }

    /// The non-null alternatives of a `oneOf`/`anyOf`, if the schema has one.
    fn alternatives(schema: &Value) -> Option<Vec<&Value>> {
        let list = schema["oneOf"].as_array().or(schema["anyOf"].as_array())?;
        Some(list.iter().filter(|s| s["type"] != "null").collect())
    }

    fn kind(schema: &Value) -> Option<&str> {
        match &schema["type"] {
            Value::String(t) => Some(t),
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null"),
            _ => None,
        }
    }

    fn sample(&self, schema: &Value) -> Value {
        let (s, name) = self.resolve(schema);
        if let Some(v) = name.and_then(|n| self.samples.get(n)) {
            return v.clone();
        }
        if let Some(e) = s["enum"].as_array().and_then(|e| e.first()) {
            return e.clone();
        }
        if let Some(alts) = Self::alternatives(s) {
            return alts.first().map_or(Value::Null, |a| self.sample(a));
        }
        match Self::kind(s) {
            Some("object") => {
                let mut o = serde_json::Map::new();
                for r in s["required"].as_array().into_iter().flatten() {
                    let k = r.as_str().unwrap();
                    o.insert(k.into(), self.sample(&s["properties"][k]));
                }
                Value::Object(o)
            }
            Some("array") => json!([]),
            Some("string") => json!("x"),
            Some("integer") => json!(1),
            Some("number") => json!(1.0),
            Some("boolean") => json!(false),
            _ => Value::Null,
        }
    }

    fn walk(
        &self,
        schema: &Value,
        ptr: &[Seg],
        required: bool,
        fills: &[(Vec<Seg>, Value)],
        out: &mut Vec<Slot>,
    ) {
        let (s, _) = self.resolve(schema);
        let slot = |kind| Slot {
            ptr: ptr.to_vec(),
            kind,
            required,
            fills: fills.to_vec(),
        };
        if let Some(alts) = Self::alternatives(s) {
            if let [one] = alts.as_slice() {
                return self.walk(one, ptr, required, fills, out);
            }
            out.push(slot(Kind::Any));
            // Each alternative that is an object: its fields, with the parent set to that variant.
            for alt in alts {
                let (a, _) = self.resolve(alt);
                if a["properties"].is_object() {
                    let mut f = fills.to_vec();
                    f.push((ptr.to_vec(), self.sample(alt)));
                    self.walk_props(a, ptr, &f, out);
                }
            }
            return;
        }
        match Self::kind(s) {
            Some("object") if s["properties"].is_object() => {
                if !ptr.is_empty() {
                    out.push(slot(Kind::Object));
                }
                let mut f = fills.to_vec();
                if !ptr.is_empty() {
                    f.push((ptr.to_vec(), self.sample(schema)));
                }
                self.walk_props(s, ptr, &f, out);
            }
            Some("object") if s["additionalProperties"].is_object() => out.push(slot(Kind::Map)),
            Some("object") => out.push(slot(Kind::Object)),
            Some("array") => {
                out.push(slot(Kind::Array));
                if s["items"].is_object() && ptr.len() < 4 {
                    let mut f = fills.to_vec();
                    f.push((ptr.to_vec(), json!([self.sample(&s["items"])])));
                    let mut p = ptr.to_vec();
                    p.push(Seg::Index);
                    self.walk(&s["items"], &p, true, &f, out);
                }
            }
            Some("string") => out.push(slot(Kind::String)),
            Some("integer") => out.push(slot(Kind::Integer)),
            Some("number") => out.push(slot(Kind::Number)),
            Some("boolean") => out.push(slot(Kind::Boolean)),
            _ => out.push(slot(Kind::Any)),
        }
    }

    fn walk_props(&self, s: &Value, ptr: &[Seg], fills: &[(Vec<Seg>, Value)], out: &mut Vec<Slot>) {
        if ptr.len() >= 4 {
            return;
        }
        let required: Vec<&str> = s["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for (k, v) in s["properties"].as_object().into_iter().flatten() {
            let mut p = ptr.to_vec();
            p.push(Seg::Key(k.clone()));
            self.walk(v, &p, required.contains(&k.as_str()), fills, out);
        }
    }

    /// Every operation with an `application/json` body; `{id}`, `{pid}` and `{name}` filled in.
    fn body_ops(&self) -> Vec<BodyOp> {
        let mut ops = Vec::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let Some(schema) =
                    op["requestBody"]["content"]["application/json"]["schema"].as_object()
                else {
                    continue;
                };
                let schema = Value::Object(schema.clone());
                let (nullable, schema) = match Self::alternatives(&schema) {
                    Some(alts) if alts.len() == 1 => (true, alts[0].clone()),
                    _ => (false, schema),
                };
                // Forwarded to the agent, whose body limit applies: processes and files.
                let proxied = op["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == "processes" || t == "files"));
                ops.push(BodyOp {
                    method: method.to_ascii_uppercase(),
                    path: path.clone(),
                    nullable,
                    schema,
                    proxied,
                });
            }
        }
        ops
    }
}

/// Sets `value` at `ptr`, creating the parents from the slot's fills.
fn set_at(body: &mut Value, slot: &Slot, value: Value) {
    for (p, v) in &slot.fills {
        put(body, p, v.clone());
    }
    put(body, &slot.ptr, value);
}

fn put(body: &mut Value, ptr: &[Seg], value: Value) {
    let Some((last, parents)) = ptr.split_last() else {
        *body = value;
        return;
    };
    let mut cur = body;
    for seg in parents {
        cur = match seg {
            Seg::Key(k) => &mut cur[k.as_str()],
            Seg::Index => &mut cur[0],
        };
    }
    match last {
        Seg::Key(k) => {
            if let Value::Object(o) = cur {
                o.insert(k.clone(), value);
            }
        }
        Seg::Index => {
            if let Value::Array(a) = cur {
                if a.is_empty() {
                    a.push(value);
                } else {
                    a[0] = value;
                }
            }
        }
    }
}

fn remove_at(body: &mut Value, slot: &Slot) {
    for (p, v) in &slot.fills {
        put(body, p, v.clone());
    }
    let Some((Seg::Key(k), parents)) = slot.ptr.split_last() else {
        return;
    };
    let mut cur = &mut *body;
    for seg in parents {
        cur = match seg {
            Seg::Key(k) => &mut cur[k.as_str()],
            Seg::Index => &mut cur[0],
        };
    }
    if let Value::Object(o) = cur {
        o.remove(k);
    }
}

/// A string the JSON text replaces with raw bytes: what `serde_json` would never write.
const PLACEHOLDER: &str = "__bad_bytes__";

fn replace_bytes(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// Bytes that are not a valid JSON string's content, or not a valid value for any string field.
const BAD_STRINGS: &[(&str, &[u8])] = &[
    ("raw invalid UTF-8 (FF FE)", b"\xff\xfe"),
    ("overlong UTF-8 (C0 AF)", b"\xc0\xaf"),
    ("UTF-8-encoded surrogate (ED B2 80)", b"\xed\xb2\x80"),
    ("lone surrogate escape \\udc80", b"a\\udc80"),
    ("unpaired high surrogate \\ud800", b"\\ud800x"),
    ("NUL escape \\u0000", b"a\\u0000b"),
];

/// Wrong values for a kind: each must be refused whatever the rest of the body says.
fn wrong_values(kind: Kind) -> Vec<(&'static str, &'static str)> {
    let mut v = match kind {
        Kind::String => vec![("a number", "12345"), ("a boolean", "true")],
        Kind::Integer => vec![
            ("a string", "\"12\""),
            ("a fraction", "1.5"),
            ("negative", "-1"),
            ("2^64", "18446744073709551616"),
            ("1e400", "1e400"),
        ],
        Kind::Number => vec![
            ("a string", "\"1.5\""),
            ("1e400", "1e400"),
            ("a boolean", "true"),
        ],
        Kind::Boolean => vec![("a string", "\"true\""), ("a number", "1")],
        Kind::Array => vec![("an object", "{\"k\":1}"), ("a string", "\"x\"")],
        Kind::Object => vec![("a number", "1"), ("a string", "\"zz\"")],
        Kind::Map => vec![("a string", "\"x\""), ("a non-string value", "{\"K\":1}")],
        Kind::Any => vec![("an unknown object", "{\"zz\":1}"), ("a boolean", "true")],
    };
    if kind != Kind::Array {
        v.push(("an array of arrays", "[[null]]"));
    }
    v
}

struct BodyCase {
    case: String,
    body: Vec<u8>,
    content_type: Option<&'static str>,
    expect: Expect,
}

/// Every case for one operation's body: the body as a whole, then field by field.
fn body_cases(spec: &Spec, op: &BodyOp) -> Vec<BodyCase> {
    let base = spec.sample(&op.schema);
    let mut slots = Vec::new();
    spec.walk_props(spec.resolve(&op.schema).0, &[], &[], &mut slots);
    // Deep nesting is parsed only where a field takes any JSON (`stdin`, a signal): elsewhere serde
    // refuses the first `[` of a string or a number at once.
    let top = |s: &&Slot| s.ptr.len() == 1;
    let deep_field = slots
        .iter()
        .filter(top)
        .find(|s| matches!(s.kind, Kind::Any | Kind::Object))
        .or_else(|| slots.iter().find(top))
        .map_or_else(|| "zz".to_owned(), Slot::label);
    let mut cases = whole_body_cases(op, &base, &deep_field);
    for slot in &slots {
        cases.extend(field_cases(slot, &base));
    }
    let text = |v: &Value| serde_json::to_vec(v).unwrap();
    // Last: the daemon and the agent both take a body without a content type (curl-friendly), so this
    // one is accepted; what it creates must not change the cases above. Regression: the agent used
    // axum's `Json`, which refused it (and read a JSON array as a struct). A template's sample source
    // path does not exist on this host, so that body is refused for its own reason.
    cases.push(BodyCase {
        case: "no content type, valid body".into(),
        body: text(&base),
        content_type: None,
        expect: if op.path.starts_with("/v1/templates") {
            Expect::No5xx
        } else {
            Expect::Accepted
        },
    });
    cases
}

/// Cases about the body as a whole: its syntax, its type, its content type.
fn whole_body_cases(op: &BodyOp, base: &Value, deep_field: &str) -> Vec<BodyCase> {
    let text = |v: &Value| serde_json::to_vec(v).unwrap();
    let refused = |case: String, body: Vec<u8>| BodyCase {
        case,
        body,
        content_type: Some("application/json"),
        expect: Expect::Refused,
    };
    let mut cases = Vec::new();

    let mut unknown = base.clone();
    unknown["zz_unknown_field"] = json!(1);
    cases.push(refused("unknown top-level field".into(), text(&unknown)));
    let full = text(base);
    cases.push(refused(
        "truncated JSON".into(),
        full[..full.len() / 2].to_vec(),
    ));
    cases.push(BodyCase {
        case: "empty body".into(),
        body: Vec::new(),
        content_type: Some("application/json"),
        expect: if op.nullable {
            Expect::Accepted
        } else {
            Expect::Refused
        },
    });
    for (what, body) in [
        ("a JSON array", &b"[]"[..]),
        ("JSON null", b"null"),
        ("a JSON string", b"\"{}\""),
        ("a number", b"0"),
        ("a UTF-8 BOM first", b"\xef\xbb\xbf{}"),
        ("raw FF between tokens", b"{\xff}"),
        ("trailing garbage", b"{} x"),
        ("two objects", b"{}{}"),
    ] {
        cases.push(refused(format!("body is {what}"), body.to_vec()));
    }
    // serde reads an array as a struct, its fields by position (`[80,24]` for a resize): a body is an
    // object. Regression: the agent took it (axum's `Json`).
    if let Some(o) = base.as_object().filter(|o| !o.is_empty()) {
        let positional = Value::Array(o.values().cloned().collect());
        cases.push(refused(
            "the fields as a positional array".into(),
            text(&positional),
        ));
    }
    if let Some((k, v)) = base.as_object().and_then(|o| o.iter().next()) {
        let mut dup = text(base);
        dup.pop();
        dup.extend_from_slice(format!(",{}:{v}}}", json!(k)).as_bytes());
        cases.push(refused(format!("duplicate key {k:?}"), dup));
    }
    let deep = format!(
        "{{\"{deep_field}\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    cases.push(refused(
        format!("100,000 nested arrays in {deep_field}"),
        deep.into_bytes(),
    ));
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        cases.push(BodyCase {
            case: format!("content type {ct}, valid body"),
            body: text(base),
            content_type: Some(ct),
            expect: Expect::Refused,
        });
    }
    cases
}

/// Cases about one field: wrong types, null or missing when required, unknown nested fields, strings
/// that are not UTF-8 or carry NUL, maps with very many entries.
fn field_cases(slot: &Slot, base: &Value) -> Vec<BodyCase> {
    let text = |v: &Value| serde_json::to_vec(v).unwrap();
    let refused = |case: String, body: Vec<u8>| BodyCase {
        case,
        body,
        content_type: Some("application/json"),
        expect: Expect::Refused,
    };
    let mut cases = Vec::new();
    let label = slot.label();
    for (what, raw) in wrong_values(slot.kind) {
        let mut b = base.clone();
        set_at(&mut b, slot, json!(PLACEHOLDER));
        let body = replace_bytes(
            &text(&b),
            format!("\"{PLACEHOLDER}\"").as_bytes(),
            raw.as_bytes(),
        );
        cases.push(refused(format!("{label}: {what}"), body));
    }
    if slot.required {
        let mut b = base.clone();
        set_at(&mut b, slot, Value::Null);
        cases.push(refused(format!("{label}: null (required)"), text(&b)));
        // (An array element cannot be missing: an empty array is a valid array.)
        if matches!(slot.ptr.last(), Some(Seg::Key(_))) {
            let mut b = base.clone();
            remove_at(&mut b, slot);
            cases.push(refused(format!("{label}: missing (required)"), text(&b)));
        }
    }
    if slot.kind == Kind::Object {
        let mut b = base.clone();
        let mut inner = spec_sample_at(&b, slot);
        if let Value::Object(o) = &mut inner {
            o.insert("zz_unknown_field".into(), json!(1));
            set_at(&mut b, slot, inner);
            cases.push(refused(format!("{label}: unknown nested field"), text(&b)));
        }
    }
    let bad_places: Vec<(&str, Value)> = match slot.kind {
        Kind::String => vec![("", json!(PLACEHOLDER))],
        Kind::Map => vec![
            (" (key)", json!({PLACEHOLDER: "v"})),
            (" (value)", json!({"K": PLACEHOLDER})),
        ],
        _ => vec![],
    };
    for (place, v) in bad_places {
        for (what, raw) in BAD_STRINGS {
            let mut b = base.clone();
            set_at(&mut b, slot, v.clone());
            let body = replace_bytes(&text(&b), PLACEHOLDER.as_bytes(), raw);
            cases.push(refused(format!("{label}{place}: {what}"), body));
        }
    }
    if slot.kind == Kind::Map {
        let mut b = base.clone();
        let many: serde_json::Map<String, Value> =
            (0..20_000).map(|i| (format!("K{i}"), json!("v"))).collect();
        set_at(&mut b, slot, Value::Object(many));
        cases.push(BodyCase {
            case: format!("{label}: 20,000 entries"),
            body: text(&b),
            content_type: Some("application/json"),
            expect: Expect::No5xx,
        });
    }
    cases
}

/// The value the slot's fills give it (its sample), or an empty object.
fn spec_sample_at(body: &Value, slot: &Slot) -> Value {
    let mut b = body.clone();
    for (p, v) in &slot.fills {
        put(&mut b, p, v.clone());
    }
    let mut cur = &b;
    for seg in &slot.ptr {
        cur = match seg {
            Seg::Key(k) => &cur[k.as_str()],
            Seg::Index => &cur[0],
        };
    }
    if cur.is_object() {
        cur.clone()
    } else {
        json!({})
    }
}

/// `{id}`, `{pid}` and `{name}` of a path template, filled with the fixture's values.
fn fill_path(f: &Fixture, path: &str) -> String {
    path.replace("{id}", &f.id)
        .replace("{pid}", "victim")
        .replace("{name}", "base")
        .replace("{port}", "8080")
}

async fn json_bodies(f: &Fixture, spec: &Spec<'_>, report: &mut Report) {
    for op in spec.body_ops() {
        let target = fill_path(f, &op.path);
        for c in body_cases(spec, &op) {
            let req = request(&op.method, target.as_bytes(), c.content_type, &c.body);
            let case = format!("{} {}: {}", op.method, op.path, c.case);
            http_case(f, report, "JSON bodies", case, req, c.expect, false).await;
            // An empty body creates a sandbox (documented); anything else that did is a failure already.
            f.delete_strays().await;
        }
    }
}

/// Bodies over the limits: declared and sent, declared and not sent, chunked with no length.
async fn oversized_bodies(f: &Fixture, spec: &Spec<'_>, report: &mut Report) {
    let mut ops: Vec<(String, String, bool, &str)> = spec
        .body_ops()
        .iter()
        .map(|o| {
            (
                o.method.clone(),
                o.path.clone(),
                o.proxied,
                "application/json",
            )
        })
        .collect();
    ops.push((
        "POST".into(),
        "/v1/sandboxes/{id}/processes/{pid}/stdin".into(),
        true,
        "application/octet-stream",
    ));
    for (method, path, proxied, ct) in ops {
        let target = fill_path(f, &path);
        let limit = if proxied {
            AGENT_BODY_LIMIT
        } else {
            DAEMON_BODY_LIMIT
        };
        // A valid JSON object one byte over the limit: only its size is wrong.
        let mut body = b"{\"zz\":\"".to_vec();
        body.resize(limit - 1, b'x');
        body.extend_from_slice(b"\"}");
        let expect = Expect::Exactly(413, "payload_too_large");
        let mb = f64::from(u32::try_from(body.len()).unwrap()) / f64::from(1 << 20);
        let case = format!("{method} {path}: {mb:.2} MiB, Content-Length");
        let req = request(&method, target.as_bytes(), Some(ct), &body);
        http_case(f, report, "oversized bodies", case, req, expect, false).await;
        let case = format!("{method} {path}: {mb:.2} MiB, chunked (no length)");
        let req = chunked_request(&method, target.as_bytes(), ct, &body);
        http_case(f, report, "oversized bodies", case, req, expect, false).await;
        let case = format!("{method} {path}: Content-Length 10^12, no body sent");
        let mut req = head(
            &method,
            target.as_bytes(),
            &[
                ("Content-Length", b"1000000000000"),
                ("Content-Type", ct.as_bytes()),
            ],
        );
        req.extend_from_slice(b"\r\n{");
        http_case(f, report, "oversized bodies", case, req, expect, false).await;
    }
}

// ---- paths, queries, headers, HTTP itself ---------------------------------------------------------------

/// Path parameters that are not valid UTF-8, climb, carry NUL or are very long.
async fn paths(f: &Fixture, spec: &Spec<'_>, report: &mut Report) {
    let long = "a".repeat(8 << 10);
    let bad: Vec<(&str, String)> = vec![
        ("%FF (invalid UTF-8)", "%FF".into()),
        ("%C0%AF (overlong UTF-8)", "%C0%AF".into()),
        ("%00 (NUL)", "%00".into()),
        ("..", "..".into()),
        ("%2e%2e", "%2e%2e".into()),
        ("..%2F..%2Fhealth", "..%2F..%2Fhealth".into()),
        ("% (bad escape)", "%".into()),
        ("%ZZ (bad escape)", "%ZZ".into()),
        ("8 KiB", long),
    ];
    let samples: BTreeMap<String, Value> = spec
        .body_ops()
        .iter()
        .map(|o| (format!("{} {}", o.method, o.path), spec.sample(&o.schema)))
        .collect();
    for (path, item) in spec.doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let method = method.to_ascii_uppercase();
            for param in ["{id}", "{pid}", "{name}"] {
                if !path.contains(param) {
                    continue;
                }
                for (what, value) in &bad {
                    let target = fill_path(f, &path.replace(param, value));
                    // A valid body where one is expected: only the path is wrong.
                    let body = samples
                        .get(&format!("{method} {path}"))
                        .map(|v| serde_json::to_vec(v).unwrap())
                        .unwrap_or_default();
                    let req = request(&method, target.as_bytes(), Some("application/json"), &body);
                    let case = format!("{method} {path}: {param} = {what}");
                    // `/events` and `/ws` of a process that does not exist: refused before streaming.
                    http_case(f, report, "paths", case, req, Expect::Refused, false).await;
                }
            }
        }
    }
}

/// Query parameters and the one header the API reads (`Last-Event-ID`).
async fn queries_and_headers(f: &Fixture, report: &mut Report) {
    let mut cases: Vec<(String, Expect)> = Vec::new();
    // On a process that does not exist, so that an accepted query is a 404, never a stream.
    let p = "/v1/sandboxes/{id}/processes/no-such-process";
    for (q, expect) in [
        ("from_seq=-1", Expect::Refused),
        ("from_seq=%FF", Expect::Refused),
        ("from_seq=18446744073709551616", Expect::Refused),
        ("from_seq=1&from_seq=2", Expect::Refused),
        ("from_seq=1e3", Expect::Refused),
        ("zz=1", Expect::Refused),
    ] {
        cases.push((format!("{p}/events?{q}"), expect));
        cases.push((format!("{p}/ws?{q}"), expect));
    }
    for (q, expect) in [
        ("timeout_ms=-1", Expect::Refused),
        ("timeout_ms=18446744073709551616", Expect::Refused),
        ("output=maybe", Expect::Refused),
        ("timeout_ms=%00", Expect::Refused),
    ] {
        cases.push((format!("{p}/wait?{q}"), expect));
    }
    for (q, expect) in [
        ("status=%FF", Expect::Refused),
        ("status=sleeping", Expect::Refused),
        ("limit=-1", Expect::Refused),
        ("limit=99999999999999999999999", Expect::Refused),
        ("limit=18446744073709551615", Expect::No5xx),
    ] {
        cases.push((format!("/v1/sandboxes/{{id}}/processes?{q}"), expect));
    }
    for (q, expect) in [
        ("state=%FF", Expect::Refused),
        ("state=,,,", Expect::No5xx),
        ("metadata=%FF", Expect::Refused),
        ("metadata=%FF%FE=%00", Expect::No5xx),
        ("%FF=1", Expect::Refused),
        ("a=%", Expect::Refused),
    ] {
        cases.push((format!("/v1/sandboxes?{q}"), expect));
    }
    for (target, expect) in cases {
        let target = fill_path(f, &target);
        let req = request("GET", target.as_bytes(), None, b"");
        http_case(
            f,
            report,
            "queries and headers",
            format!("GET {target}"),
            req,
            expect,
            false,
        )
        .await;
    }
    // `Last-Event-ID` on a live process: a number resumes the stream (only its head is read).
    let events = fill_path(f, "/v1/sandboxes/{id}/processes/{pid}/events");
    for (what, value, expect) in [
        (
            "18446744073709551615 (u64::MAX)",
            &b"18446744073709551615"[..],
            Expect::No5xx,
        ),
        (
            "18446744073709551616 (2^64)",
            b"18446744073709551616",
            Expect::Refused,
        ),
        ("-1", b"-1", Expect::Refused),
        ("raw bytes FF FE", b"\xff\xfe", Expect::Refused),
        ("1e3", b"1e3", Expect::Refused),
    ] {
        let mut req = head("GET", events.as_bytes(), &[("Last-Event-ID", value)]);
        req.extend_from_slice(b"\r\n");
        let case = format!("GET .../events, Last-Event-ID: {what}");
        http_case(f, report, "queries and headers", case, req, expect, true).await;
    }
}

/// What hyper refuses before a handler runs, and request framing that is wrong.
async fn http_level(f: &Fixture, report: &mut Report) {
    let exec = fill_path(f, "/v1/sandboxes/{id}/exec");
    let mut cases: Vec<(&str, Vec<u8>, Expect)> = Vec::new();
    let long = format!("/health?{}", "a".repeat(100 << 10));
    cases.push((
        "100 KiB request target",
        request("GET", long.as_bytes(), None, b""),
        Expect::HyperRefused,
    ));
    let big = "a".repeat(1 << 20);
    let mut r = head("GET", b"/health", &[("X-Big", big.as_bytes())]);
    r.extend_from_slice(b"\r\n");
    cases.push(("1 MiB header", r, Expect::HyperRefused));
    let mut r = head("GET", b"/health", &[("X-Bad", b"a\x7fb")]);
    r.extend_from_slice(b"\r\n");
    cases.push((
        "control character (DEL) in a header value",
        r,
        Expect::HyperRefused,
    ));
    let mut r = head("POST", b"/v1/sandboxes", &[("Content-Length", b"zz")]);
    r.extend_from_slice(b"\r\n{}");
    cases.push(("Content-Length not a number", r, Expect::HyperRefused));
    let mut r = head(
        "POST",
        b"/v1/sandboxes",
        &[("Content-Length", b"2"), ("Content-Length", b"3")],
    );
    r.extend_from_slice(b"\r\n{}");
    cases.push(("two different Content-Lengths", r, Expect::HyperRefused));
    let mut r = head(
        "POST",
        exec.as_bytes(),
        &[
            ("Transfer-Encoding", b"chunked"),
            ("Content-Type", b"application/json"),
        ],
    );
    r.extend_from_slice(b"\r\nzz\r\n{}\r\n0\r\n\r\n");
    cases.push(("bad chunk size, proxied", r, Expect::Refused));
    let mut r = head(
        "POST",
        b"/v1/sandboxes",
        &[
            ("Transfer-Encoding", b"chunked"),
            ("Content-Type", b"application/json"),
        ],
    );
    r.extend_from_slice(b"\r\nzz\r\n{}\r\n0\r\n\r\n");
    cases.push(("bad chunk size, daemon", r, Expect::Refused));
    cases.push((
        "unknown method",
        request("BREW", b"/v1/sandboxes", None, b""),
        Expect::Refused,
    ));
    cases.push((
        "method not allowed",
        request("PUT", b"/v1/sandboxes", None, b""),
        Expect::Exactly(405, "invalid_argument"),
    ));
    cases.push((
        "no such route",
        request("GET", b"/v2/nothing", None, b""),
        Expect::Exactly(404, "not_found"),
    ));
    let mut r = b"POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
    r.extend_from_slice(b"Authorization: Bearer \xff\xfe\r\nContent-Length: 2\r\n\r\n{}");
    cases.push((
        "API key with invalid UTF-8",
        r,
        Expect::Exactly(401, "unauthenticated"),
    ));
    for (case, req, expect) in cases {
        http_case(
            f,
            report,
            "HTTP framing",
            case.to_owned(),
            req,
            expect,
            false,
        )
        .await;
    }
}

/// Values that reached code past the decoders and broke it once (see the regression tests in
/// sandpit-types and sandpit-agent): each is a 4xx now, or a `failed` process, never a 5xx.
async fn known_breakers(f: &Fixture, report: &mut Report) {
    let signal = fill_path(f, "/v1/sandboxes/{id}/processes/{pid}/signal");
    for name in [
        "RTMIN+2147483647",
        "RTMAX-2147483647",
        "RTMAX--5",
        "RTMIN+-1",
        "RTMIN++1",
        "RTMIN+",
        "SIG",
        "",
        "\\u0000",
        "99999999999999999999",
    ] {
        let body = format!("{{\"signal\":\"{name}\"}}");
        let req = request(
            "POST",
            signal.as_bytes(),
            Some("application/json"),
            body.as_bytes(),
        );
        let case = format!("signal {name:?}");
        http_case(
            f,
            report,
            "known breakers",
            case,
            req,
            Expect::Refused,
            false,
        )
        .await;
    }
    // Root inside may write anything into the sandbox's /etc/passwd, a NUL included: the agent used to
    // panic turning that account's home into a C string.
    let exec = |cmd: &str, user: &str| {
        f.http
            .post(f.root("/exec"))
            .json(&json!({"cmd": cmd, "user": user, "timeout_ms": 10_000}))
            .send()
    };
    let planted = exec(
        r"printf 'evil:x:2000:2000::/home/e\000vil:/bin/sh\n' >> /etc/passwd",
        "root",
    )
    .await
    .unwrap()
    .status();
    assert_eq!(planted.as_u16(), 200);
    let req = request(
        "POST",
        fill_path(f, "/v1/sandboxes/{id}/exec").as_bytes(),
        Some("application/json"),
        br#"{"cmd":"true","user":"evil"}"#,
    );
    let case = "exec as a user whose /etc/passwd line has a NUL".to_owned();
    let a = http_case(f, report, "known breakers", case, req, Expect::No5xx, false).await;
    if let Some(a) = a {
        let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
        assert_eq!(v["status"], "failed", "{v}");
    }
    exec("sed -i '/^evil:/d' /etc/passwd", "root")
        .await
        .unwrap();
}

// ---- WebSocket ---------------------------------------------------------------------------------------------

/// Where a WebSocket session is opened.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Daemon,
    Agent,
}

/// A raw client WebSocket: frames are written as given, so they can break every rule.
struct Ws {
    rd: Reader,
    wr: Writer,
    buf: Vec<u8>,
}

/// A frame from the client: masked unless `masked` is false.
fn frame(opcode: u8, payload: &[u8], fin: bool, masked: bool, rsv: u8) -> Vec<u8> {
    let mut f = vec![(if fin { 0x80 } else { 0 }) | (rsv << 4) | opcode];
    let m = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n < 65_536 => {
            f.push(m | 0x7e);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 0x7f);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x12, 0x34, 0x56, 0x78];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

fn text(payload: &[u8]) -> Vec<u8> {
    frame(1, payload, true, true, 0)
}

fn binary(payload: &[u8]) -> Vec<u8> {
    frame(2, payload, true, true, 0)
}

fn close(payload: &[u8]) -> Vec<u8> {
    frame(8, payload, true, true, 0)
}

/// A masked binary frame header that announces `len` bytes, and four bytes of it.
fn announce(len: u64) -> Vec<u8> {
    let mut f = vec![0x82, 0x80 | 127];
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&[1, 2, 3, 4, 0, 0, 0, 0]);
    f
}

impl Ws {
    async fn open(f: &Fixture, via: Via, pid: &str) -> Result<Self, String> {
        let (mut rd, mut wr, path) = match via {
            Via::Daemon => {
                let (r, w) = tcp(&f.serve.addr()).await?;
                (r, w, format!("/v1/sandboxes/{}/processes/{pid}/ws", f.id))
            }
            Via::Agent => {
                let (r, w) = unix(&f.agent_socket()).await?;
                (r, w, format!("/processes/{pid}/ws"))
            }
        };
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        wr.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = tokio::time::timeout(CALL_TIMEOUT, rd.read(&mut chunk))
                .await
                .map_err(|_| "no upgrade answer".to_owned())?
                .map_err(|e| format!("upgrade: {e}"))?;
            if n == 0 {
                return Err("closed during the upgrade".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            return Err(format!("no upgrade: {}", head.lines().next().unwrap_or("")));
        }
        let buf = buf[end + 4..].to_vec();
        Ok(Self { rd, wr, buf })
    }

    /// Writes raw bytes. A failure is returned, not fatal: a server that refused a frame may hang up
    /// while the rest of it is still being written.
    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.wr
            .write_all(bytes)
            .await
            .map_err(|e| format!("write: {e}"))
    }

    /// The next frame (opcode, payload), or `None` at the end of the connection.
    async fn next(&mut self) -> Result<Option<(u8, Vec<u8>)>, String> {
        let read = async {
            loop {
                if let Some((frame, used)) = parse_server_frame(&self.buf) {
                    self.buf.drain(..used);
                    return Ok(Some(frame));
                }
                let mut chunk = vec![0u8; 64 << 10];
                match self.rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => return Ok(None),
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .map_err(|_| "no frame and no close within 10 s (hang)".to_owned())?
    }

    /// Reads until a text frame with `"type": "started"`.
    async fn started(&mut self) -> Result<(), String> {
        loop {
            match self.next().await? {
                Some((1, t)) if t.starts_with(br#"{"type":"started""#) => return Ok(()),
                Some(_) => {}
                None => return Err("closed before `started`".into()),
            }
        }
    }
}

/// One frame from the server: `(opcode, payload)` and the bytes it took, or `None` if incomplete.
fn parse_server_frame(b: &[u8]) -> Option<((u8, Vec<u8>), usize)> {
    if b.len() < 2 {
        return None;
    }
    let (mut at, mut len) = (2, u64::from(b[1] & 0x7f));
    if len == 126 {
        len = u64::from(u16::from_be_bytes(b.get(2..4)?.try_into().ok()?));
        at = 4;
    } else if len == 127 {
        len = u64::from_be_bytes(b.get(2..10)?.try_into().ok()?);
        at = 10;
    }
    let masked = b[1] & 0x80 != 0;
    let key: Option<[u8; 4]> = if masked {
        let k = b.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(k)
    } else {
        None
    };
    let end = at + usize::try_from(len).ok()?;
    let mut payload = b.get(at..end)?.to_vec();
    if let Some(k) = key {
        for (i, p) in payload.iter_mut().enumerate() {
            *p ^= k[i % 4];
        }
    }
    Some(((b[0] & 0x0f, payload), end))
}

/// What a bad frame must lead to.
#[derive(Clone, Copy)]
enum WsExpect {
    /// An `{"type": "error", "code": "invalid_argument"}` message; the session goes on (stdin still
    /// reaches the process) and closes cleanly.
    ErrorReply,
    /// A close frame with one of these codes (and a reason, unless 1000), then the end of the
    /// connection; the process is untouched.
    Close(&'static [u16]),
}

impl WsExpect {
    fn describe(self) -> String {
        match self {
            Self::ErrorReply => "error message, session goes on".into(),
            Self::Close(codes) => format!("close {codes:?} + reason"),
        }
    }
}

/// The WebSocket cases: what to send, what must follow.
fn ws_cases() -> Vec<(&'static str, Vec<u8>, WsExpect)> {
    let mut cases = ws_message_cases();
    cases.extend(ws_protocol_cases());
    cases
}

/// Frames the WebSocket layer takes and the session refuses: an `error` message, and the session goes
/// on.
fn ws_message_cases() -> Vec<(&'static str, Vec<u8>, WsExpect)> {
    use WsExpect::ErrorReply;
    let deep = format!(
        "{{\"type\":\"signal\",\"signal\":{}{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    vec![
        (
            "binary: unknown channel 9",
            binary(b"\x09\0\0\0\0\0\0\0\0x"),
            ErrorReply,
        ),
        ("binary: 1 byte (header is 9)", binary(b"\0"), ErrorReply),
        ("binary: empty", binary(b""), ErrorReply),
        (
            "binary: channel 1 (stdout) from a client",
            binary(b"\x01\0\0\0\0\0\0\0\0x"),
            ErrorReply,
        ),
        ("text: not JSON", text(b"hello"), ErrorReply),
        ("text: empty", text(b""), ErrorReply),
        ("text: a JSON array", text(b"[1,2,3]"), ErrorReply),
        ("text: JSON null", text(b"null"), ErrorReply),
        (
            "text: unknown type",
            text(br#"{"type":"explode"}"#),
            ErrorReply,
        ),
        ("text: no type", text(br#"{"data":"x"}"#), ErrorReply),
        (
            "text: unknown field",
            text(br#"{"type":"stdin","data":"x","zz":1}"#),
            ErrorReply,
        ),
        (
            "text: wrong field type",
            text(br#"{"type":"resize","cols":"80","rows":24}"#),
            ErrorReply,
        ),
        (
            "text: resize 0x0",
            text(br#"{"type":"resize","cols":0,"rows":0}"#),
            ErrorReply,
        ),
        (
            "text: resize 65536 columns",
            text(br#"{"type":"resize","cols":65536,"rows":1}"#),
            ErrorReply,
        ),
        (
            "text: unknown signal",
            text(br#"{"type":"signal","signal":"NOPE"}"#),
            ErrorReply,
        ),
        (
            "text: signal RTMIN+2147483647",
            text(br#"{"type":"signal","signal":"RTMIN+2147483647"}"#),
            ErrorReply,
        ),
        (
            "text: signal RTMAX--5",
            text(br#"{"type":"signal","signal":"RTMAX--5"}"#),
            ErrorReply,
        ),
        (
            "text: signal 2^31",
            text(br#"{"type":"signal","signal":2147483648}"#),
            ErrorReply,
        ),
        (
            "text: lone surrogate \\udc80 in stdin data",
            text(br#"{"type":"stdin","data":"\udc80"}"#),
            ErrorReply,
        ),
        (
            "text: 10,000 nested arrays",
            text(deep.as_bytes()),
            ErrorReply,
        ),
    ]
}

/// Frames the WebSocket layer itself refuses (RFC 6455 violations, sizes over the limit): a close
/// frame that says why, then the end of the connection.
fn ws_protocol_cases() -> Vec<(&'static str, Vec<u8>, WsExpect)> {
    use WsExpect::Close;
    let oversized = {
        let mut p = vec![0u8; 9];
        p.resize(WS_LIMIT + 1024, b'x');
        binary(&p)
    };
    let fragmented = {
        let piece = vec![b'x'; 1 << 20];
        let mut f = frame(1, &piece, false, true, 0);
        for i in 0..4 {
            f.extend(frame(0, &piece, i == 3, true, 0));
        }
        f
    };
    let mut after_close = close(&1000u16.to_be_bytes());
    after_close.extend(text(br#"{"type":"stdin","data":"late\n"}"#));
    vec![
        (
            "text frame: invalid UTF-8",
            text(b"{\"type\":\"stdin\",\"data\":\"\xff\xfe\"}"),
            Close(&[1007]),
        ),
        (
            "text frame: overlong UTF-8",
            text(b"\xc0\xaf"),
            Close(&[1007]),
        ),
        (
            "unmasked frame",
            frame(1, br#"{"type":"stdin_eof"}"#, true, false, 0),
            Close(&[1002]),
        ),
        (
            "RSV bits set",
            frame(1, b"{}", true, true, 4),
            Close(&[1002]),
        ),
        (
            "reserved data opcode 3",
            frame(3, b"x", true, true, 0),
            Close(&[1002]),
        ),
        (
            "reserved control opcode 11",
            frame(11, b"x", true, true, 0),
            Close(&[1002]),
        ),
        (
            "fragmented ping",
            frame(9, b"x", false, true, 0),
            Close(&[1002]),
        ),
        (
            "continuation without a start",
            frame(0, b"x", true, true, 0),
            Close(&[1002]),
        ),
        (
            "ping of 200 bytes (max 125)",
            frame(9, &[b'x'; 200], true, true, 0),
            Close(&[1002]),
        ),
        (
            "close with code 999",
            close(&999u16.to_be_bytes()),
            Close(&[1002]),
        ),
        ("close with a 1-byte body", close(b"\x03"), Close(&[1002])),
        (
            "close reason not UTF-8",
            close(b"\x03\xe8\xff\xfe"),
            Close(&[1007]),
        ),
        (
            "HTTP text instead of a frame",
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            Close(&[1002]),
        ),
        (
            "frame announcing 2^62 bytes",
            announce(1 << 62),
            Close(&[1009]),
        ),
        (
            "frame announcing 2^64-1 bytes",
            announce(u64::MAX),
            Close(&[1002, 1009]),
        ),
        (
            "one 4 MiB + 1 KiB binary frame (limit 4 MiB)",
            oversized,
            Close(&[1009]),
        ),
        (
            "5 MiB text message in 1 MiB fragments",
            fragmented,
            Close(&[1009]),
        ),
        ("close, then a frame after it", after_close, Close(&[1000])),
    ]
}

/// Runs one WebSocket case on a fresh process (`cat` on a terminal); `Ok` with what happened.
async fn ws_case(f: &Fixture, via: Via, bytes: &[u8], expect: WsExpect) -> Result<String, String> {
    let r = f
        .http
        .post(f.root("/processes"))
        .json(&json!({"cmd": "cat", "stdin": "pipe", "tty": {"cols": 80, "rows": 24}}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let p: Value = r.json().await.map_err(|e| e.to_string())?;
    let pid = p["id"].as_str().ok_or("no process")?.to_owned();
    let mut ws = Ws::open(f, via, &pid).await?;
    ws.started().await?;
    let write = ws.send(bytes).await;
    let got = match expect {
        WsExpect::ErrorReply => {
            write?;
            error_then_usable(&mut ws).await?
        }
        WsExpect::Close(codes) => {
            let (code, reason) = closed(&mut ws).await?;
            if !codes.contains(&code) || (code != 1000 && reason.is_empty()) {
                return Err(format!("close {code} {reason:?}"));
            }
            let mut r = reason;
            r.truncate(60);
            format!("close {code} {r:?}")
        }
    };
    // The session never affects the process: it still runs, and nothing sent after a close reached it.
    let info: Value = f
        .http
        .get(f.root(&format!("/processes/{pid}")))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    if info["status"] != "running" {
        return Err(format!("{got}, but the process is {}", info["status"]));
    }
    if matches!(expect, WsExpect::Close(_)) && info["stdout_bytes"] != 0 {
        return Err(format!("{got}, but the process got input: {info}"));
    }
    let _ = f
        .http
        .delete(f.root(&format!("/processes/{pid}")))
        .send()
        .await;
    Ok(got)
}

/// An `error` message, then stdin still reaches the process, then a clean close.
async fn error_then_usable(ws: &mut Ws) -> Result<String, String> {
    let code = loop {
        match ws.next().await? {
            Some((1, t)) => {
                let v: Value = serde_json::from_slice(&t).map_err(|e| e.to_string())?;
                if v["type"] == "error" {
                    break v["code"].as_str().unwrap_or_default().to_owned();
                }
            }
            Some((8, p)) => {
                return Err(format!("closed instead: {:?}", String::from_utf8_lossy(&p)));
            }
            Some(_) => {}
            None => return Err("connection ended instead of an error message".into()),
        }
    };
    if code != "invalid_argument" {
        return Err(format!("error code {code}"));
    }
    ws.send(&text(br#"{"type":"stdin","data":"still-alive\n"}"#))
        .await?;
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains("still-alive") {
        match ws.next().await? {
            Some((2, b)) if b.len() >= 9 => out.extend_from_slice(&b[9..]),
            Some((8, _)) | None => return Err("the session ended after the error".into()),
            Some(_) => {}
        }
    }
    ws.send(&close(&1000u16.to_be_bytes())).await?;
    let (c, _) = closed(ws).await?;
    Ok(format!("error {code}, stdin still works, close {c}"))
}

/// Reads up to a close frame and then the end of the connection: (code, reason).
async fn closed(ws: &mut Ws) -> Result<(u16, String), String> {
    let (code, reason) = loop {
        match ws.next().await? {
            Some((8, p)) if p.len() >= 2 => {
                break (
                    u16::from_be_bytes([p[0], p[1]]),
                    String::from_utf8_lossy(&p[2..]).into_owned(),
                );
            }
            Some((8, _)) => break (1005, String::new()),
            Some(_) => {}
            None => return Err("the connection ended without a close frame".into()),
        }
    };
    while ws.next().await?.is_some() {}
    Ok((code, reason))
}

async fn websocket(f: &Fixture, via: Via, report: &mut Report) {
    let class = match via {
        Via::Daemon => "WebSocket via the daemon",
        Via::Agent => "WebSocket to the agent",
    };
    for (case, bytes, expect) in ws_cases() {
        let r = ws_case(f, via, &bytes, expect).await;
        let (got, ok) = match (r, f.alive().await) {
            (Ok(g), Ok(())) => (g, true),
            (Ok(g), Err(e)) => (format!("{g}; then {e}"), false),
            (Err(e), Ok(())) => (e, false),
            (Err(e), Err(a)) => (format!("{e}; then {a}"), false),
        };
        report.add(class, case.to_owned(), expect.describe(), got, ok);
    }
}

// ---- the tests ---------------------------------------------------------------------------------------------

/// Every class of bad input, one table. Fails listing every case that got a 5xx, no JSON error, a hang
/// or left the daemon or the sandbox broken.
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_with_a_4xx_and_breaks_nothing() {
    let Some(fx) = daemon::Fixture::new() else {
        return;
    };
    let t0 = Instant::now();
    let f = Fixture::start(fx).await;
    let doc: Value = f
        .http
        .get(f.serve.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let template_dir = tempfile::tempdir().unwrap();
    let dir = template_dir.path().display().to_string();
    let spec = Spec {
        doc: &doc,
        samples: BTreeMap::from([
            ("StartRequest", json!({"cmd": "true"})),
            ("TtySize", json!({"cols": 80, "rows": 24})),
            ("SignalSpec", json!("CONT")),
            ("SetTimeoutRequest", json!({"timeout": 600})),
            (
                "CreateKeyRequest",
                json!({"name": "bad-input", "scopes": ["read"]}),
            ),
            // `{name}` is `base`: a tenant nothing else uses.
            (
                "TenantQuotas",
                json!({"max_sandboxes": 1000, "max_creates_per_second": 1000.0,
                       "max_memory_mb": 1_000_000, "max_disk_mb": 1_000_000}),
            ),
            (
                "SignedUrlRequest",
                json!({"path": "/tmp/bad-input", "op": "read"}),
            ),
            ("Rlimit", json!({"resource": "nofile", "soft": 1024})),
            // File operations on what the fixture made; the move overwrites its own earlier result.
            (
                "MkdirRequest",
                json!({"path": "/tmp/bad-input/dir", "user": "root"}),
            ),
            (
                "MoveRequest",
                json!({"from": "/tmp/bad-input/from", "to": "/tmp/bad-input/to",
                       "overwrite": true, "user": "root"}),
            ),
            (
                "ChmodRequest",
                json!({"path": "/tmp/bad-input", "mode": "755", "user": "root"}),
            ),
            (
                "ChownRequest",
                json!({"path": "/tmp/bad-input", "owner": "root", "user": "root"}),
            ),
            (
                "CreateWatcherRequest",
                json!({"path": "/tmp/bad-input", "user": "root"}),
            ),
            ("TemplateSource", json!({"dir": dir})),
            ("CreateSnapshotRequest", json!({"name": "bad-input-snap"})),
            ("ForkRequest", json!({"count": 1})),
            ("SetPoolRequest", json!({"size": 0})),
            (
                "CreateVolumeRequest",
                json!({"name": "bad-input-vol", "size_mb": 16}),
            ),
            // A receiver on loopback's discard port: deliveries are refused there and never leave the host.
            (
                "CreateWebhookRequest",
                json!({"url": "http://127.0.0.1:9/bad-input", "events": ["sandbox.created"],
                       "secret": "bad-input-secret"}),
            ),
            (
                "CreateTemplateRequest",
                json!({"name": "bad-input", "source": {"dir": dir}}),
            ),
        ]),
    };
    let mut report = Report::default();
    macro_rules! class {
        ($name:expr, $run:expr) => {{
            let t = Instant::now();
            $run;
            report.times.push(($name, t.elapsed()));
        }};
    }
    class!("JSON bodies", json_bodies(&f, &spec, &mut report).await);
    class!(
        "oversized bodies",
        oversized_bodies(&f, &spec, &mut report).await
    );
    class!("paths", paths(&f, &spec, &mut report).await);
    class!(
        "queries and headers",
        queries_and_headers(&f, &mut report).await
    );
    class!("HTTP framing", http_level(&f, &mut report).await);
    class!("known breakers", known_breakers(&f, &mut report).await);
    class!(
        "WebSocket via the daemon",
        websocket(&f, Via::Daemon, &mut report).await
    );
    class!(
        "WebSocket to the agent",
        websocket(&f, Via::Agent, &mut report).await
    );

    let strays = f.delete_strays().await;
    report.add(
        "end",
        "no sandbox made by a refused request".into(),
        "0".into(),
        strays.to_string(),
        strays == 0,
    );
    let log = std::fs::read_to_string(&f.serve.log).unwrap_or_default();
    let panics = log.lines().filter(|l| l.contains("panicked")).count();
    report.add(
        "end",
        "daemon log: panics".into(),
        "0".into(),
        panics.to_string(),
        panics == 0,
    );
    report.print();
    eprintln!(
        "bad input: {} cases in {:.1} s",
        report.rows.len(),
        t0.elapsed().as_secs_f64()
    );
    let failed: Vec<String> = report
        .rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| {
            format!(
                "[{}] {}: expected {}, got {}",
                r.class, r.case, r.expected, r.got
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// Regression: two kinds of bad body through the proxy were answered 503 "agent not answering", a 5xx
/// for bad input. An oversized body raced the agent's refusal: the agent answered 413 and hung up while
/// the daemon was still writing, and about one time in five the daemon noticed the broken write first.
/// A malformed chunked body failed the forwarding, which was taken for the agent's failure.
#[tokio::test(flavor = "multi_thread")]
async fn proxied_bodies_too_big_or_malformed_are_4xx_not_503() {
    let Some(fx) = daemon::Fixture::new() else {
        return;
    };
    let f = Fixture::start(fx).await;
    let body = vec![b'x'; AGENT_BODY_LIMIT + 1];
    for i in 0..10 {
        for target in ["/exec", "/processes/victim/stdin"] {
            let target = format!("/v1/sandboxes/{}{target}", f.id);
            for chunked in [false, true] {
                let req = if chunked {
                    chunked_request("POST", target.as_bytes(), "application/json", &body)
                } else {
                    request("POST", target.as_bytes(), Some("application/json"), &body)
                };
                let a = exchange(tcp(&f.serve.addr()).await.unwrap(), req, false)
                    .await
                    .unwrap();
                assert!(
                    Expect::Exactly(413, "payload_too_large").check(&a),
                    "try {i}, {target}, chunked {chunked}: {}",
                    describe(&a)
                );
            }
        }
    }
    let target = format!("/v1/sandboxes/{}/exec", f.id);
    let mut req = head(
        "POST",
        target.as_bytes(),
        &[
            ("Transfer-Encoding", b"chunked"),
            ("Content-Type", b"application/json"),
        ],
    );
    req.extend_from_slice(b"\r\n2\r\n{}\r\nzz\r\n");
    for i in 0..10 {
        let a = exchange(tcp(&f.serve.addr()).await.unwrap(), req.clone(), false)
            .await
            .unwrap();
        assert!(
            Expect::Exactly(400, "invalid_argument").check(&a),
            "try {i}, bad chunk: {}",
            describe(&a)
        );
    }
    f.alive().await.unwrap();
}

/// Regression: a frame the WebSocket layer refused (over 4 MiB, text that is not UTF-8, a protocol
/// violation) ended the session without a close frame, and through the daemon's proxy even the close
/// the agent did send was lost (`copy_bidirectional` dropped both directions on the write error).
#[tokio::test(flavor = "multi_thread")]
async fn refused_websocket_frames_get_a_close_frame_with_a_reason_through_the_proxy() {
    let Some(fx) = daemon::Fixture::new() else {
        return;
    };
    let f = Fixture::start(fx).await;
    let mut big = vec![0u8; 9];
    big.resize(WS_LIMIT + 1024, b'x');
    for (bytes, code) in [
        (binary(&big), 1009),
        (text(b"\xff"), 1007),
        (frame(1, b"{}", true, false, 0), 1002),
    ] {
        for via in [Via::Daemon, Via::Agent] {
            let got = ws_case(&f, via, &bytes, WsExpect::Close(&[1002, 1007, 1009]))
                .await
                .unwrap();
            assert!(got.starts_with(&format!("close {code} ")), "{got}");
        }
    }
    f.alive().await.unwrap();
}
