//! The audit log: which key did what to which sandbox, when, and how it ended.
//!
//! Owns three things: the rule for which calls are recorded and what each records ([`classify`]: sandbox
//! lifecycle, exec and process starts with their command line, signals and kills, file writes and
//! changes with their path, keys, quotas and templates; reads are not recorded); the writer that keeps
//! rows in the store's `audit` table off the request path (a bounded queue drained in batches, each
//! written [`LINGER`] after its first row arrived; when the queue is full the count of rows that could
//! not be kept is itself recorded, as `audit.dropped`); and the retention that forgets rows older than
//! `audit_retention_days`.
//!
//! Never a secret: a key is named by its id; the query string (where a browser's `access_token` rides) is
//! never recorded, only the `path` value of file calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sandpit_types::audit::{AuditEntry, AuditList, outcome_of};
use tokio::sync::{mpsc, watch};

use crate::auth::Principal;
use crate::store::{AuditQuery, AuditRow, Store, StoreError};

/// Rows waiting for the writer; more are counted as dropped, never block a request.
const QUEUE: usize = 8192;
/// Most rows written in one transaction.
const BATCH: usize = 512;
/// How long the writer waits after a row for more before it writes them together.
const LINGER: Duration = Duration::from_millis(50);
/// How often old rows are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Largest request body read to find a command line or a path (exec, process start, `fs` calls).
const MAX_INSPECTED_BODY: usize = 1 << 20;
/// Longest `detail` kept.
const MAX_DETAIL: usize = 4096;

/// Put on a response by a handler to name the sandbox a call made (`POST /v1/sandboxes`) or to say what
/// it did (a key's id and scopes, a tenant's quotas).
#[derive(Debug, Clone, Default)]
pub struct Note {
    pub sandbox: Option<String>,
    pub detail: Option<String>,
}

/// The audit log's writer and reader.
#[derive(Debug)]
pub struct Audit {
    store: Store,
    queue: mpsc::Sender<AuditRow>,
    dropped: AtomicU64,
}

use crate::time::now_ms;

impl Audit {
    /// Starts the writer (which also forgets rows older than `retention`, at start and hourly); it
    /// writes what is queued and ends when `stop` turns true.
    pub fn start(
        store: Store,
        retention: Duration,
        stop: watch::Receiver<bool>,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let audit = Arc::new(Self {
            store,
            queue: tx,
            dropped: AtomicU64::new(0),
        });
        let timing = crate::batch::Timing {
            batch: BATCH,
            linger: LINGER,
            retention,
            prune_every: PRUNE_EVERY,
        };
        let task = tokio::spawn(crate::batch::run(audit.clone(), rx, timing, stop));
        (audit, task)
    }

    /// Queues a row; when the queue is full the row is counted, and the count recorded later.
    pub fn record(&self, row: AuditRow) {
        if self.queue.try_send(row).is_err() && self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                "the audit log cannot keep up: rows are being dropped (counted in an audit.dropped row)"
            );
        }
    }

    /// Rows matching `q`, oldest first, with the cursor of the next page.
    pub async fn read(&self, q: AuditQuery) -> Result<AuditList, StoreError> {
        let limit = q.limit;
        let mut rows = self.store.audit_read(q).await?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_after = more
            .then(|| rows.last().map(|r| u64::try_from(r.id).unwrap_or(0)))
            .flatten();
        Ok(AuditList {
            entries: rows.into_iter().map(entry).collect(),
            next_after,
        })
    }
}

impl crate::batch::Sink<AuditRow> for Audit {
    async fn write(&self, mut rows: Vec<AuditRow>) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            rows.push(AuditRow {
                id: 0,
                at_ms: now_ms(),
                key_id: "daemon".into(),
                tenant: String::new(),
                action: "audit.dropped".into(),
                sandbox: None,
                detail: Some(format!("{dropped} rows could not be kept (queue full)")),
                status: 500,
            });
        }
        if rows.is_empty() {
            return;
        }
        let n = rows.len();
        if let Err(e) = self.store.audit_append(rows).await {
            // Said once per failed batch, with the count: the rows are lost and this is the report.
            tracing::error!(rows = n, error = %e, "cannot write audit rows; they are lost");
        }
    }

    async fn prune(&self, before_ms: i64) {
        match self.store.audit_prune(before_ms).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "audit rows past their retention forgotten"),
            Err(e) => tracing::warn!(error = %e, "cannot forget old audit rows"),
        }
    }
}

fn entry(r: AuditRow) -> AuditEntry {
    AuditEntry {
        id: u64::try_from(r.id).unwrap_or(0),
        at: crate::time::rfc3339(r.at_ms),
        key_id: r.key_id,
        tenant: r.tenant,
        action: r.action,
        sandbox: r.sandbox,
        detail: r.detail,
        status: r.status,
        outcome: outcome_of(r.status).to_owned(),
    }
}

/// What a recorded call is: its action, its sandbox, and whether its JSON body holds the detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub action: &'static str,
    pub sandbox: Option<String>,
    pub detail: Option<String>,
    /// The detail is in the request's JSON body (a command line, a path): read it.
    pub body: Option<BodyDetail>,
}

/// Which part of a JSON body is the detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyDetail {
    /// `cmd` and `args` (a `StartRequest`).
    CommandLine,
    /// `path`, or `from` and `to`.
    Path,
}

/// The one rule for what is recorded: `None` for calls that only read (and for preview traffic).
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> Option<Classified> {
    // Reads (most requests, streams included) are never recorded: no parsing for them.
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let c = |action, sandbox: Option<&str>, detail: Option<String>, body| {
        Some(Classified {
            action,
            sandbox: sandbox.map(str::to_owned),
            detail,
            body,
        })
    };
    let query_path = || {
        query.and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "path")
                .map(|(_, v)| format!("path={v}"))
        })
    };
    let m = method.clone();
    match (m, segs.as_slice()) {
        (Method::POST, ["v1", "sandboxes"]) => c("sandbox.create", None, None, None),
        (Method::DELETE, ["v1", "sandboxes", id]) => c("sandbox.delete", Some(id), None, None),
        (Method::POST, ["v1", "sandboxes", id, verb]) => {
            let action = match *verb {
                "pause" => "sandbox.pause",
                "resume" => "sandbox.resume",
                "connect" => "sandbox.connect",
                "timeout" => "sandbox.timeout",
                "access-token" => "sandbox.access_token",
                "exec" => {
                    return c(
                        "process.exec",
                        Some(id),
                        None,
                        Some(BodyDetail::CommandLine),
                    );
                }
                "processes" => {
                    return c(
                        "process.start",
                        Some(id),
                        None,
                        Some(BodyDetail::CommandLine),
                    );
                }
                _ => return None,
            };
            c(action, Some(id), None, None)
        }
        (Method::PUT, ["v1", "sandboxes", id, "network"]) => {
            c("sandbox.network", Some(id), None, None)
        }
        (Method::POST, ["v1", "sandboxes", id, "ports", port]) => {
            c("port.expose", Some(id), Some(format!("port={port}")), None)
        }
        (Method::DELETE, ["v1", "sandboxes", id, "ports", port]) => {
            c("port.close", Some(id), Some(format!("port={port}")), None)
        }
        (Method::POST, ["v1", "sandboxes", id, "processes", pid, "signal"]) => {
            c("process.signal", Some(id), Some(format!("pid={pid}")), None)
        }
        (Method::DELETE, ["v1", "sandboxes", id, "processes", pid]) => {
            c("process.kill", Some(id), Some(format!("pid={pid}")), None)
        }
        (Method::PUT, ["v1", "sandboxes", id, "files"]) => {
            c("file.write", Some(id), query_path(), None)
        }
        (Method::POST, ["v1", "sandboxes", id, "files", "signed-url"]) => {
            c("file.sign", Some(id), None, None)
        }
        (Method::POST, ["v1", "sandboxes", id, "files", "tar"]) => {
            c("file.extract", Some(id), query_path(), None)
        }
        (Method::DELETE, ["v1", "sandboxes", id, "fs"]) => {
            c("file.remove", Some(id), query_path(), None)
        }
        (Method::POST, ["v1", "sandboxes", id, "fs", verb]) => {
            let action = match *verb {
                "mkdir" => "file.mkdir",
                "move" => "file.move",
                "chmod" => "file.chmod",
                "chown" => "file.chown",
                _ => return None,
            };
            c(action, Some(id), None, Some(BodyDetail::Path))
        }
        (Method::POST, ["v1", "keys"]) => c("key.create", None, None, None),
        (Method::DELETE, ["v1", "keys", id]) => {
            c("key.revoke", None, Some(format!("id={id}")), None)
        }
        (Method::PUT, ["v1", "tenants", name]) => {
            c("tenant.quotas", None, Some(format!("tenant={name}")), None)
        }
        (Method::POST, ["v1", "templates"]) => c("template.create", None, None, None),
        (Method::DELETE, ["v1", "templates", name]) => {
            c("template.delete", None, Some(format!("name={name}")), None)
        }
        _ => None,
    }
}

/// The detail a JSON body holds (`None` when it is not JSON or has no such field).
fn body_detail(kind: BodyDetail, bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    match kind {
        BodyDetail::CommandLine => {
            let start: sandpit_types::process::StartRequest = serde_json::from_value(v).ok()?;
            let mut line = match (start.cmd, start.argv) {
                (Some(cmd), _) => cmd,
                (None, Some(argv)) => argv
                    .iter()
                    .map(|a| shell_word(a))
                    .collect::<Vec<_>>()
                    .join(" "),
                (None, None) => return None,
            };
            if let Some(u) = start.user {
                line = format!("{line} (as {u})");
            }
            Some(line)
        }
        BodyDetail::Path => {
            if let (Some(f), Some(t)) = (
                v.get("from").and_then(serde_json::Value::as_str),
                v.get("to").and_then(serde_json::Value::as_str),
            ) {
                return Some(format!("from={f} to={t}"));
            }
            Some(format!("path={}", v.get("path")?.as_str()?))
        }
    }
}

/// A word as a shell would need it quoted to read back the same.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn clip(mut s: String) -> String {
    if s.len() > MAX_DETAIL {
        let mut end = MAX_DETAIL;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Middleware (inside authentication): records every call [`classify`] names, with the principal the
/// authentication put in the request, and the answer's status.
pub async fn record(State(audit): State<Arc<Audit>>, req: Request, next: Next) -> Response {
    let Some(mut what) = classify(req.method(), req.uri().path(), req.uri().query()) else {
        return next.run(req).await;
    };
    let Some(who) = req.extensions().get::<Principal>().cloned() else {
        return next.run(req).await;
    };
    let req = match what.body {
        Some(kind) => {
            let small = req
                .headers()
                .get(axum::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
                .is_some_and(|n| n <= MAX_INSPECTED_BODY);
            if small {
                let (parts, body) = req.into_parts();
                match axum::body::to_bytes(body, MAX_INSPECTED_BODY).await {
                    Ok(bytes) => {
                        what.detail = body_detail(kind, &bytes);
                        Request::from_parts(parts, Body::from(bytes))
                    }
                    Err(e) => {
                        // The body broke off while it was read: the call cannot be made either.
                        let row = row(&who, &what, 400);
                        audit.record(row);
                        return crate::api::error::ApiError::InvalidArgument(format!(
                            "cannot read the request body: {e}"
                        ))
                        .into_response();
                    }
                }
            } else {
                what.detail = Some("(body not inspected: no Content-Length, or over 1 MiB)".into());
                req
            }
        }
        None => req,
    };
    let resp = next.run(req).await;
    if let Some(note) = resp.extensions().get::<Note>() {
        if note.sandbox.is_some() {
            what.sandbox.clone_from(&note.sandbox);
        }
        if note.detail.is_some() {
            what.detail.clone_from(&note.detail);
        }
    }
    audit.record(row(&who, &what, resp.status().as_u16()));
    resp
}

/// Records a call the authentication refused (`status`: 403 for its scope, 404 for another tenant's
/// sandbox): the principal is known.
pub fn denied(audit: &Audit, who: &Principal, req: &Request, status: u16) {
    if let Some(what) = classify(req.method(), req.uri().path(), req.uri().query()) {
        audit.record(row(who, &what, status));
    }
}

fn row(who: &Principal, what: &Classified, status: u16) -> AuditRow {
    AuditRow {
        id: 0,
        at_ms: now_ms(),
        key_id: who.key_id.clone(),
        tenant: who.tenant.clone(),
        action: what.action.to_owned(),
        sandbox: what.sandbox.clone(),
        detail: what.detail.clone().map(clip),
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_classified_and_reads_are_not() {
        let id = Some("ab12".to_owned());
        let got = classify(&Method::POST, "/v1/sandboxes/ab12/exec", None).unwrap();
        assert_eq!(
            (got.action, got.sandbox, got.body),
            ("process.exec", id.clone(), Some(BodyDetail::CommandLine))
        );
        let got = classify(
            &Method::PUT,
            "/v1/sandboxes/ab12/files",
            Some("path=%2Ftmp%2Fa%20b&access_token=spa_secret"),
        )
        .unwrap();
        assert_eq!(got.action, "file.write");
        assert_eq!(got.detail.as_deref(), Some("path=/tmp/a b"));
        for (m, p) in [
            (Method::GET, "/v1/sandboxes"),
            (Method::GET, "/v1/sandboxes/ab12/files"),
            (Method::GET, "/v1/sandboxes/ab12/processes/p1/ws"),
            (Method::POST, "/v1/sandboxes/ab12/processes/p1/stdin"),
            (Method::GET, "/v1/audit"),
        ] {
            assert_eq!(classify(&m, p, None), None, "{m} {p}");
        }
        assert_eq!(
            classify(&Method::DELETE, "/v1/keys/k_1", None)
                .unwrap()
                .detail
                .as_deref(),
            Some("id=k_1")
        );
    }

    #[test]
    fn command_lines_read_back_as_a_shell_would() {
        let d = body_detail(
            BodyDetail::CommandLine,
            br#"{"argv":["python3","-c","print('hi there')"],"user":"root"}"#,
        );
        assert_eq!(
            d.as_deref(),
            Some(r"python3 -c 'print('\''hi there'\'')' (as root)")
        );
        let d = body_detail(BodyDetail::CommandLine, br#"{"cmd":"echo hi | wc -c"}"#);
        assert_eq!(d.as_deref(), Some("echo hi | wc -c"));
        let d = body_detail(BodyDetail::Path, br#"{"from":"/a","to":"/b"}"#);
        assert_eq!(d.as_deref(), Some("from=/a to=/b"));
        assert_eq!(body_detail(BodyDetail::Path, b"not json"), None);
        assert!(clip("x".repeat(5000)).len() < 4100);
    }
}
