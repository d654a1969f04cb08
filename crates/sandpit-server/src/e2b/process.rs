//! envd's `process.Process` service, translated onto sandpit's process API (`/v1/sandboxes/{id}/processes`):
//! `Start` and `Connect` stream a process's events (sandpit's SSE stream, re-framed as Connect messages),
//! `List`, `SendInput`, `StreamInput`, `CloseStdin`, `SendSignal` and `Update` (a PTY's size) are one or
//! more sandpit calls each.
//!
//! A process is selected by its pid or by its tag, which is sandpit's process `id`. A PTY's output is
//! sandpit's stdout, sent as E2B's `pty` data. `SIGKILL` kills the process's whole tree (sandpit's
//! `DELETE /processes/{pid}`), not just the process.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::connect::{self, Code, RpcError};
use super::{E2b, EnvdCaller};
use sandpit_types::sse::RawEvent;
use sandpit_types::{
    OutputEvent, ProcessInfo, ProcessList, ProcessStatus, StartRequest, Stdin, TtySize,
};

/// `process.Process/{method}`.
pub async fn dispatch(
    State(e): State<E2b>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let streamed = matches!(method.as_str(), "Start" | "Connect" | "StreamInput");
    let caller = match EnvdCaller::from_headers(&headers).and_then(|c| match e.gone(&c) {
        Some(err) => Err(err),
        None => Ok(c),
    }) {
        Ok(c) => c,
        Err(err) if streamed => return connect::stream_error(&err),
        Err(err) => return err.into_response(),
    };
    if method == "StreamInput" {
        return match stream_input(&e, &caller, &headers, body).await {
            Ok(()) => connect::stream_response(Body::from(
                [connect::message(&json!({})), connect::end(None)].concat(),
            )),
            Err(err) => connect::stream_error(&err),
        };
    }
    let bytes = match axum::body::to_bytes(body, connect::MAX_MESSAGE_BYTES).await {
        Ok(b) => b,
        Err(err) => {
            return RpcError::invalid(format!("cannot read the request: {err}")).into_response();
        }
    };
    match method.as_str() {
        "Start" => streaming(start(&e, &caller, &headers, &bytes).await),
        "Connect" => streaming(attach(&e, &caller, &headers, &bytes).await),
        "List" => unary(list(&e, &caller, &headers, &bytes).await),
        "SendInput" => unary(send_input(&e, &caller, &headers, &bytes).await),
        "CloseStdin" => unary(close_stdin(&e, &caller, &headers, &bytes).await),
        "SendSignal" => unary(send_signal(&e, &caller, &headers, &bytes).await),
        "Update" => unary(update(&e, &caller, &headers, &bytes).await),
        other => RpcError::new(
            Code::Unimplemented,
            format!("process.Process/{other} does not exist"),
        )
        .into_response(),
    }
}

fn unary(r: Result<Value, RpcError>) -> Response {
    match r {
        Ok(v) => connect::unary_ok(&v),
        Err(e) => e.into_response(),
    }
}

fn streaming(r: Result<Response, RpcError>) -> Response {
    r.unwrap_or_else(|e| connect::stream_error(&e))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessConfig {
    #[serde(default)]
    cmd: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    envs: BTreeMap<String, String>,
    cwd: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pty {
    size: Option<PtySize>,
}

#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct PtySize {
    #[serde(default)]
    cols: u32,
    #[serde(default)]
    rows: u32,
}

impl PtySize {
    fn tty(self) -> Result<TtySize, RpcError> {
        let cols =
            u16::try_from(self.cols).map_err(|_| RpcError::invalid("pty cols over 65535"))?;
        let rows =
            u16::try_from(self.rows).map_err(|_| RpcError::invalid("pty rows over 65535"))?;
        let t = TtySize { cols, rows };
        t.validate().map_err(RpcError::invalid)?;
        Ok(t)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Start {
    process: Option<ProcessConfig>,
    pty: Option<Pty>,
    tag: Option<String>,
    stdin: Option<bool>,
}

/// `ProcessSelector`: a pid or a tag.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Selector {
    pid: Option<u32>,
    tag: Option<String>,
}

impl Selector {
    /// The `{pid}` path segment of sandpit's process routes.
    fn segment(sel: Option<&Self>) -> Result<String, RpcError> {
        match sel {
            Some(Self { pid: Some(p), .. }) => Ok(p.to_string()),
            Some(Self { tag: Some(t), .. }) if !t.is_empty() => Ok(super::enc(t)),
            _ => Err(RpcError::invalid("process selector: give a pid or a tag")),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Selected {
    process: Option<Selector>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    stdin: Option<String>,
    pty: Option<String>,
}

impl Input {
    fn bytes(&self) -> Result<Vec<u8>, RpcError> {
        let b64 = self
            .stdin
            .as_deref()
            .or(self.pty.as_deref())
            .unwrap_or_default();
        B64.decode(b64)
            .map_err(|e| RpcError::invalid(format!("input is not base64: {e}")))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendInput {
    process: Option<Selector>,
    input: Option<Input>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendSignal {
    process: Option<Selector>,
    #[serde(default)]
    signal: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    process: Option<Selector>,
    pty: Option<Pty>,
}

/// How often a quiet stream carries a keepalive: the client's `Keepalive-Ping-Interval` (seconds), else
/// 50 s (E2B's default).
pub fn keepalive(headers: &HeaderMap) -> Duration {
    headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(Duration::from_secs(50), |s| {
            Duration::from_secs(s.min(3600))
        })
}

async fn start(
    e: &E2b,
    caller: &EnvdCaller,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, RpcError> {
    let req: Start = connect::parse_stream_request(headers, body)?;
    let config = req
        .process
        .ok_or_else(|| RpcError::invalid("StartRequest.process is missing"))?;
    if config.cmd.is_empty() {
        return Err(RpcError::invalid("process.cmd is empty"));
    }
    let tty = match req.pty.and_then(|p| p.size) {
        Some(size) => Some(size.tty()?),
        None => None,
    };
    let mut argv = vec![config.cmd];
    argv.extend(config.args);
    let start = StartRequest {
        argv: Some(argv),
        cwd: config.cwd.filter(|c| !c.is_empty()),
        env: config.envs,
        user: caller.user.clone(),
        stdin: if req.stdin == Some(true) || tty.is_some() {
            Stdin::Pipe
        } else {
            Stdin::Null
        },
        tty,
        id: req.tag.filter(|t| !t.is_empty()),
        ..StartRequest::default()
    };
    let (_, info): (_, ProcessInfo) = e
        .json(
            Method::POST,
            &caller.path("processes"),
            &caller.bearer,
            Some(&start),
        )
        .await
        .map_err(RpcError::from)?;
    let events = format!("processes/{}/events?from_seq=1", super::enc(&info.id));
    open_stream(e, caller, headers, &events, info.is_pty).await
}

/// `Connect`: the process's events from now on (what E2B's envd sends a client that attaches).
async fn attach(
    e: &E2b,
    caller: &EnvdCaller,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, RpcError> {
    let req: Selected = connect::parse_stream_request(headers, body)?;
    let seg = Selector::segment(req.process.as_ref())?;
    let (_, info): (_, ProcessInfo) = e
        .json(
            Method::GET,
            &caller.path(&format!("processes/{seg}")),
            &caller.bearer,
            None::<&()>,
        )
        .await
        .map_err(RpcError::from)?;
    let events = format!(
        "processes/{}/events?from_seq={}",
        super::enc(&info.id),
        info.last_seq + 1
    );
    open_stream(e, caller, headers, &events, info.is_pty).await
}

/// Opens sandpit's event stream at `events` and answers with it re-framed as E2B's `ProcessEvent`s.
async fn open_stream(
    e: &E2b,
    caller: &EnvdCaller,
    headers: &HeaderMap,
    events: &str,
    pty: bool,
) -> Result<Response, RpcError> {
    let resp = e
        .call(E2b::request(
            Method::GET,
            &caller.path(events),
            &caller.bearer,
            None,
        ))
        .await;
    if !resp.status().is_success() {
        return Err(super::upstream_error(resp).await.into());
    }
    let translate = move |ev: &RawEvent| -> Step { process_event(ev, pty) };
    Ok(pump(
        resp.into_body(),
        translate,
        connect::timeout(headers),
        keepalive(headers),
        json!({"event": {"keepalive": {}}}),
    ))
}

/// What one sandpit SSE event becomes.
#[derive(Debug)]
pub enum Step {
    Send(Vec<Value>),
    Skip,
    End(Option<RpcError>),
}

fn process_event(ev: &RawEvent, pty: bool) -> Step {
    let bad = |what: &str| {
        Step::End(Some(RpcError::new(
            Code::Internal,
            format!(
                "sandpit sent a {what} event that does not decode: {}",
                ev.data
            ),
        )))
    };
    match ev.event.as_str() {
        "started" => match serde_json::from_str::<ProcessInfo>(&ev.data) {
            Ok(p) => Step::Send(vec![
                json!({"event": {"start": {"pid": p.pid.unwrap_or(0)}}}),
            ]),
            Err(_) => bad("started"),
        },
        "stdout" | "stderr" => match serde_json::from_str::<OutputEvent>(&ev.data) {
            Ok(o) => {
                let field = match (pty, ev.event.as_str()) {
                    (true, _) => "pty",
                    (false, "stdout") => "stdout",
                    _ => "stderr",
                };
                Step::Send(vec![
                    json!({"event": {"data": {field: B64.encode(o.bytes())}}}),
                ])
            }
            Err(_) => bad("output"),
        },
        "exited" => match serde_json::from_str::<ProcessInfo>(&ev.data) {
            Ok(p) => Step::Send(vec![json!({"event": {"end": end_event(&p)}})]),
            Err(_) => bad("exited"),
        },
        // E2B has no loss event: say so in the output, never drop it silently.
        "lost" => Step::Send(vec![json!({"event": {"data": {
            (if pty { "pty" } else { "stderr" }):
            B64.encode(format!("[sandpit: output lost: {}]\n", ev.data))
        }}})]),
        "error" => {
            let d: Option<sandpit_types::ErrorDetail> = serde_json::from_str(&ev.data).ok();
            Step::End(Some(d.map_or_else(
                || RpcError::new(Code::Unavailable, ev.data.clone()),
                |d| RpcError::new(Code::from_sandpit(d.code), d.message),
            )))
        }
        _ => Step::Skip,
    }
}

/// E2B's `EndEvent` for an ended process: `exitCode`, `exited` (false when a signal ended it), `status` as
/// Go's `ProcessState` words it, and `error` when sandpit says why it failed.
fn end_event(p: &ProcessInfo) -> Value {
    let mut end = serde_json::Map::new();
    match (p.status, p.exit_code, &p.signal) {
        (ProcessStatus::Exited, Some(code), _) => {
            end.insert("exitCode".into(), json!(code));
            end.insert("exited".into(), json!(true));
            end.insert("status".into(), json!(format!("exit status {code}")));
        }
        (_, _, signal) => {
            // Go's ExitCode() of a process a signal ended.
            end.insert("exitCode".into(), json!(-1));
            end.insert("exited".into(), json!(false));
            let word = match signal.as_deref().map(|s| s.trim_start_matches("SIG")) {
                Some("KILL") | None => "killed".to_owned(),
                Some("TERM") => "terminated".to_owned(),
                Some("INT") => "interrupt".to_owned(),
                Some(other) => other.to_ascii_lowercase(),
            };
            end.insert("status".into(), json!(format!("signal: {word}")));
        }
    }
    let error = match (p.status, &p.error) {
        (_, Some(e)) => Some(e.clone()),
        (ProcessStatus::TimedOut, None) => Some("the process timed out".to_owned()),
        _ => None,
    };
    if let Some(e) = error {
        end.insert("error".into(), json!(e));
    }
    Value::Object(end)
}

/// Re-frames a sandpit SSE body as a Connect stream: each event through `translate`, a `keepalive`
/// message after `every` of silence, the stream's end at `deadline` (`deadline_exceeded`) or when the
/// SSE body ends. Dropping the answer (the client went away) drops the SSE body, and with it sandpit's
/// stream.
pub fn pump(
    sse: Body,
    mut translate: impl FnMut(&RawEvent) -> Step + Send + 'static,
    deadline: Option<Duration>,
    every: Duration,
    keepalive: Value,
) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let mut parser = sandpit_types::sse::SseParser::default();
        let mut body = sse.into_data_stream();
        let until = deadline.map(|d| tokio::time::Instant::now() + d);
        let expired = async move {
            match until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expired);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let end = loop {
            tokio::select! {
                chunk = body.next() => match chunk {
                    Some(Ok(bytes)) => {
                        tick.reset();
                        let mut done = None;
                        for ev in parser.push(&bytes) {
                            match translate(&ev) {
                                Step::Send(list) => {
                                    for v in list {
                                        if tx.send(Ok(connect::message(&v))).await.is_err() {
                                            return;
                                        }
                                    }
                                }
                                Step::Skip => {}
                                Step::End(err) => {
                                    done = Some(err);
                                    break;
                                }
                            }
                        }
                        if let Some(err) = done {
                            break err;
                        }
                    }
                    Some(Err(err)) => {
                        break Some(RpcError::new(Code::Unavailable, format!("the stream from the sandbox broke off: {err}")));
                    }
                    None => break None,
                },
                _ = tick.tick() => {
                    if tx.send(Ok(connect::message(&keepalive))).await.is_err() {
                        return;
                    }
                }
                () = &mut expired => {
                    break Some(RpcError::new(Code::DeadlineExceeded, "the call's deadline (Connect-Timeout-Ms) passed"));
                }
                () = tx.closed() => return,
            }
        };
        let _ = tx.send(Ok(connect::end(end.as_ref()))).await;
    });
    connect::stream_response(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ))
}

/// `List`: the running processes.
async fn list(
    e: &E2b,
    caller: &EnvdCaller,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, RpcError> {
    let _: Value = connect::parse_unary(headers, body)?;
    let (_, list): (_, ProcessList) = e
        .json(
            Method::GET,
            &caller.path("processes?status=running&limit=1000"),
            &caller.bearer,
            None::<&()>,
        )
        .await
        .map_err(RpcError::from)?;
    let processes: Vec<Value> = list
        .processes
        .iter()
        .map(|p| {
            // sandpit's `args` is the whole argv; envd's config splits off the program.
            let (cmd, args) = p
                .args
                .split_first()
                .map_or((p.cmd.as_str(), &[][..]), |(c, a)| (c.as_str(), a));
            let mut v = json!({
                "config": {"cmd": cmd, "args": args, "envs": p.env, "cwd": p.cwd},
                "pid": p.pid.unwrap_or(0),
            });
            // sandpit names every process; only a name the caller chose is an E2B tag.
            if !is_auto_id(&p.id) {
                v["tag"] = json!(p.id);
            }
            v
        })
        .collect();
    Ok(json!({"processes": processes}))
}

/// Whether a process id is one the agent made up (`p12`, `p12.1`) rather than a caller's tag.
fn is_auto_id(id: &str) -> bool {
    id.strip_prefix('p').is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .split('.')
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    })
}

async fn write_stdin(
    e: &E2b,
    caller: &EnvdCaller,
    seg: &str,
    data: Vec<u8>,
    eof: bool,
) -> Result<(), RpcError> {
    let q = if eof { "?eof=true" } else { "" };
    let mut req = E2b::request(
        Method::POST,
        &caller.path(&format!("processes/{seg}/stdin{q}")),
        &caller.bearer,
        None,
    );
    *req.body_mut() = Body::from(data);
    req.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/octet-stream"),
    );
    let resp = e.call(req).await;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(super::upstream_error(resp).await.into())
    }
}

async fn send_input(
    e: &E2b,
    caller: &EnvdCaller,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, RpcError> {
    let req: SendInput = connect::parse_unary(headers, body)?;
    let seg = Selector::segment(req.process.as_ref())?;
    let data = req.input.unwrap_or_default().bytes()?;
    write_stdin(e, caller, &seg, data, false).await?;
    Ok(json!({}))
}

async fn close_stdin(
    e: &E2b,
    caller: &EnvdCaller,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, RpcError> {
    let req: Selected = connect::parse_unary(headers, body)?;
    let seg = Selector::segment(req.process.as_ref())?;
    write_stdin(e, caller, &seg, Vec::new(), true).await?;
    Ok(json!({}))
}

/// The signal of a `SendSignal` (`"SIGNAL_SIGKILL"`, `"SIGNAL_SIGTERM"` or their numbers).
fn signal_of(v: &Value) -> Result<&'static str, RpcError> {
    match v {
        Value::String(s) if s == "SIGNAL_SIGKILL" => Ok("KILL"),
        Value::String(s) if s == "SIGNAL_SIGTERM" => Ok("TERM"),
        Value::Number(n) if n.as_u64() == Some(9) => Ok("KILL"),
        Value::Number(n) if n.as_u64() == Some(15) => Ok("TERM"),
        other => Err(RpcError::invalid(format!(
            "signal {other}: expected SIGNAL_SIGKILL or SIGNAL_SIGTERM"
        ))),
    }
}

async fn send_signal(
    e: &E2b,
    caller: &EnvdCaller,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, RpcError> {
    let req: SendSignal = connect::parse_unary(headers, body)?;
    let seg = Selector::segment(req.process.as_ref())?;
    match signal_of(&req.signal)? {
        // SIGKILL ends the process's whole tree, escapers included.
        "KILL" => {
            let (_, killed): (_, sandpit_types::KillResponse) = e
                .json(
                    Method::DELETE,
                    &caller.path(&format!("processes/{seg}")),
                    &caller.bearer,
                    None::<&()>,
                )
                .await
                .map_err(RpcError::from)?;
            // envd knows only running processes: one that already ended is not found.
            if !killed.killed {
                return Err(RpcError::new(
                    Code::NotFound,
                    format!("process {seg} is not running"),
                ));
            }
        }
        sig => {
            e.status(
                Method::POST,
                &caller.path(&format!("processes/{seg}/signal")),
                &caller.bearer,
                Some(&json!({"signal": sig})),
            )
            .await
            .map_err(RpcError::from)?;
        }
    }
    Ok(json!({}))
}

async fn update(
    e: &E2b,
    caller: &EnvdCaller,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, RpcError> {
    let req: Update = connect::parse_unary(headers, body)?;
    let seg = Selector::segment(req.process.as_ref())?;
    let size = req
        .pty
        .and_then(|p| p.size)
        .ok_or_else(|| RpcError::invalid("UpdateRequest.pty.size is missing"))?
        .tty()?;
    e.status(
        Method::POST,
        &caller.path(&format!("processes/{seg}/resize")),
        &caller.bearer,
        Some(&size),
    )
    .await
    .map_err(RpcError::from)?;
    Ok(json!({}))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamInputMsg {
    start: Option<Selected>,
    data: Option<DataMsg>,
    keepalive: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataMsg {
    input: Option<Input>,
}

/// `StreamInput`: a client stream of `start` (which process), then `data` chunks, written to its stdin in
/// order as they arrive.
async fn stream_input(
    e: &E2b,
    caller: &EnvdCaller,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), RpcError> {
    connect::check_stream_codec(headers)?;
    let mut reader = connect::EnvelopeReader::default();
    let mut body = body.into_data_stream();
    let mut seg: Option<String> = None;
    loop {
        while let Some(env) = reader.next_envelope()? {
            let connect::Envelope::Message(m) = env else {
                return Ok(());
            };
            let msg: StreamInputMsg = serde_json::from_slice(&m)
                .map_err(|err| RpcError::invalid(format!("bad StreamInputRequest: {err}")))?;
            if let Some(start) = msg.start {
                seg = Some(Selector::segment(start.process.as_ref())?);
            }
            if let Some(data) = msg.data {
                let target = seg.as_deref().ok_or_else(|| {
                    RpcError::invalid("StreamInput: a data message came before the start message")
                })?;
                let bytes = data.input.unwrap_or_default().bytes()?;
                write_stdin(e, caller, target, bytes, false).await?;
            }
            let _ = msg.keepalive;
        }
        match body.next().await {
            Some(Ok(b)) => reader.push(&b),
            Some(Err(err)) => {
                return Err(RpcError::new(
                    Code::Canceled,
                    format!("the input stream broke off: {err}"),
                ));
            }
            None if reader.leftover() == 0 => return Ok(()),
            None => return Err(RpcError::invalid("the input stream ends inside a message")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(status: ProcessStatus, code: Option<i32>, signal: Option<&str>) -> ProcessInfo {
        ProcessInfo {
            id: "p".into(),
            pid: Some(7),
            cmd: "x".into(),
            args: vec![],
            cwd: "/".into(),
            user: "user".into(),
            env: BTreeMap::new(),
            is_pty: false,
            status,
            exit_code: code,
            signal: signal.map(str::to_owned),
            started_at: None,
            ended_at: None,
            error: None,
            stdout_bytes: 0,
            stderr_bytes: 0,
            lost_bytes: 0,
            last_seq: 0,
            resources: None,
        }
    }

    #[test]
    fn end_events_read_like_envd_s() {
        let v = end_event(&info(ProcessStatus::Exited, Some(3), None));
        assert_eq!(
            v,
            json!({"exitCode": 3, "exited": true, "status": "exit status 3"})
        );
        let v = end_event(&info(ProcessStatus::Killed, None, Some("KILL")));
        assert_eq!(
            v,
            json!({"exitCode": -1, "exited": false, "status": "signal: killed"})
        );
        let v = end_event(&info(ProcessStatus::TimedOut, None, Some("KILL")));
        assert_eq!(v["error"], json!("the process timed out"));
    }

    #[test]
    fn output_becomes_base64_data_and_pty_output_is_pty() {
        let ev = RawEvent {
            event: "stdout".into(),
            id: Some("1".into()),
            data: r#"{"seq":1,"data":"hi\n"}"#.into(),
        };
        let Step::Send(v) = process_event(&ev, false) else {
            panic!()
        };
        assert_eq!(v, vec![json!({"event": {"data": {"stdout": "aGkK"}}})]);
        let Step::Send(v) = process_event(&ev, true) else {
            panic!()
        };
        assert_eq!(v, vec![json!({"event": {"data": {"pty": "aGkK"}}})]);
    }

    #[test]
    fn only_chosen_ids_are_tags() {
        assert!(is_auto_id("p12") && is_auto_id("p3.1"));
        assert!(!is_auto_id("p") && !is_auto_id("server") && !is_auto_id("p1x"));
    }

    #[test]
    fn signals_are_the_two_envd_knows() {
        assert_eq!(signal_of(&json!("SIGNAL_SIGKILL")).unwrap(), "KILL");
        assert_eq!(signal_of(&json!(15)).unwrap(), "TERM");
        assert!(signal_of(&json!("SIGNAL_UNSPECIFIED")).is_err());
    }
}
