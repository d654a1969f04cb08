//! The agent's HTTP API: thin handlers that translate requests into [`Agent`] calls.
//!
//! Paths are those of docs/api.md's per-sandbox API without the `/v1/sandboxes/{id}` prefix, which the
//! daemon strips when it proxies. `{pid}` accepts a process's string id or its numeric pid.

mod error;
mod files;
pub mod ports;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use sandpit_types::{
    AgentHealth, ErrorCode, ExecResult, KillResponse, LOGS_DEFAULT_TAIL, LOGS_MAX_TAIL, ListQuery,
    LogsQuery, PROTOCOL_VERSION, ProcessInfo, ProcessList, ProcessStatus, SignalRequest,
    StartRequest, Stdin, StdinQuery, TtySize, WaitQuery,
};

pub use error::ApiError;
use error::{Json, PathParam, Query};

use crate::agent::Agent;
use crate::output::Stream;
use crate::process::Process;

/// Largest request body accepted (exec stdin bytes, stdin writes).
pub const MAX_BODY: usize = sandpit_types::MAX_AGENT_BODY_BYTES;

/// The agent's router.
pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/health", get(health))
        // The daemon's (it proxies nothing under `/_daemon/`): a warm-pool sandbox gets its creator's
        // environment.
        .route("/_daemon/env", axum::routing::put(set_env))
        .route("/logs", get(logs))
        .route("/exec", post(exec))
        .route("/processes", post(start).get(list))
        .route("/processes/{pid}", get(info).delete(kill))
        .route("/processes/{pid}/events", get(stream::events))
        .route("/processes/{pid}/ws", get(stream::websocket))
        .route("/processes/{pid}/stdin", post(stdin))
        .route("/processes/{pid}/signal", post(signal))
        .route("/processes/{pid}/resize", post(resize))
        .route("/processes/{pid}/wait", get(wait))
        .route("/ports/{port}/connect", get(ports::connect))
        // Files: content routes stream bodies of any size, so no body limit applies to them.
        .route(
            "/files",
            get(files::read)
                .put(files::write)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/files/tar",
            get(files::archive)
                .post(files::extract)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/_daemon/files",
            get(files::read_spliced).put(files::write_spliced),
        )
        .route("/fs", delete(files::remove))
        .route("/fs/stat", get(files::stat))
        .route("/fs/list", get(files::list))
        .route("/fs/mkdir", post(files::mkdir))
        .route("/fs/move", post(files::move_path))
        .route("/fs/chmod", post(files::chmod))
        .route("/fs/chown", post(files::chown))
        .route("/fs/watch", get(files::watch))
        .route("/fs/watchers", post(files::create_watcher))
        .route("/fs/watchers/{id}", delete(files::delete_watcher))
        .route("/fs/watchers/{id}/events", get(files::watcher_events))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such endpoint") })
        .method_not_allowed_fallback(|req: axum::extract::Request| async move {
            let (status, body) = sandpit_types::ErrorBody::method_not_allowed(
                req.method().as_str(),
                req.uri().path(),
            );
            (
                axum::http::StatusCode::from_u16(status).expect("a valid status"),
                Json(body),
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(agent)
}

type Result<T> = std::result::Result<T, ApiError>;

/// `PUT /_daemon/env` `{"KEY": "VALUE", …}`: the sandbox-wide environment of processes started from now on.
async fn set_env(
    State(agent): State<Arc<Agent>>,
    Json(env): Json<std::collections::BTreeMap<String, String>>,
) -> axum::http::StatusCode {
    agent.set_env(env);
    axum::http::StatusCode::NO_CONTENT
}

async fn health(State(agent): State<Arc<Agent>>) -> Json<AgentHealth> {
    let all = agent.all();
    let running = all
        .iter()
        .filter(|p| p.status() == ProcessStatus::Running)
        .count();
    Json(AgentHealth {
        status: "ok".into(),
        protocol_version: PROTOCOL_VERSION,
        processes: all.len(),
        running,
    })
}

async fn exec(
    State(agent): State<Arc<Agent>>,
    Json(req): Json<StartRequest>,
) -> Result<Json<ExecResult>> {
    if req.stdin == Stdin::Pipe {
        return Err(ApiError::invalid(
            "exec waits for the process, so nothing could write to a stdin pipe: pass stdin bytes, or start \
             it with POST /processes",
        ));
    }
    let (proc, _) = agent.start(&req)?;
    let _ = proc.done().wait_for(|d| *d).await;
    Ok(Json(result(&proc)))
}

async fn start(State(agent): State<Arc<Agent>>, Json(req): Json<StartRequest>) -> Result<Response> {
    let (proc, created) = agent.start(&req)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(proc.info())).into_response())
}

async fn list(State(agent): State<Arc<Agent>>, Query(q): Query<ListQuery>) -> Json<ProcessList> {
    let processes = agent
        .list(q.status, q.limit)
        .iter()
        .map(|p| p.info())
        .collect();
    Json(ProcessList { processes })
}

async fn info(
    State(agent): State<Arc<Agent>>,
    PathParam(pid): PathParam<String>,
) -> Result<Json<ProcessInfo>> {
    Ok(Json(agent.get(&pid)?.info()))
}

async fn kill(
    State(agent): State<Arc<Agent>>,
    PathParam(pid): PathParam<String>,
) -> Result<Json<KillResponse>> {
    let proc = agent.get(&pid)?;
    let killed = proc.kill_tree();
    if killed {
        // Answer with the final state: the kill is certain, so this is short.
        let mut done = proc.done();
        let _ = tokio::time::timeout(Duration::from_secs(5), done.wait_for(|d| *d)).await;
    }
    Ok(Json(KillResponse {
        killed,
        process: proc.info(),
    }))
}

async fn stdin(
    State(agent): State<Arc<Agent>>,
    PathParam(pid): PathParam<String>,
    Query(q): Query<StdinQuery>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<StatusCode> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("stdin body larger than {MAX_BODY} bytes"),
            )
        } else {
            ApiError::invalid(r.body_text())
        }
    })?;
    let proc = agent.get(&pid)?;
    if !body.is_empty() {
        proc.write_stdin(&body).await?;
    }
    if q.eof {
        proc.close_stdin().await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn signal(
    State(agent): State<Arc<Agent>>,
    PathParam(pid): PathParam<String>,
    Json(req): Json<SignalRequest>,
) -> Result<StatusCode> {
    let sig = req.signal.number().map_err(ApiError::invalid)?;
    agent.get(&pid)?.signal(sig)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn resize(
    State(agent): State<Arc<Agent>>,
    PathParam(pid): PathParam<String>,
    Json(size): Json<TtySize>,
) -> Result<StatusCode> {
    size.validate().map_err(ApiError::invalid)?;
    agent.get(&pid)?.resize(size)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The agent's own log, the last `tail_bytes` of it, as text.
async fn logs(State(agent): State<Arc<Agent>>, Query(q): Query<LogsQuery>) -> Result<Response> {
    let tail = q.tail_bytes.unwrap_or(LOGS_DEFAULT_TAIL);
    if tail > LOGS_MAX_TAIL {
        return Err(ApiError::invalid(format!(
            "tail_bytes {tail} is over the limit of {LOGS_MAX_TAIL}"
        )));
    }
    let Some(path) = agent.config.log_file.clone() else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "this agent logs to its standard error, not to a file (started without --log-file)",
        ));
    };
    let text = tokio::task::spawn_blocking(move || crate::log::read_tail(&path, tail))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("cannot read the agent's log: {e}"),
            )
        })?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn wait(
    State(agent): State<Arc<Agent>>,
    PathParam(pid): PathParam<String>,
    Query(q): Query<WaitQuery>,
) -> Result<Json<ExecResult>> {
    let proc = agent.get(&pid)?;
    let mut done = proc.done();
    let finished = done.wait_for(|d| *d);
    match q.timeout_ms {
        Some(ms) => {
            if tokio::time::timeout(Duration::from_millis(ms), finished)
                .await
                .is_err()
            {
                return Err(ApiError::new(
                    ErrorCode::Timeout,
                    format!("process {} is still running after {ms} ms", proc.id),
                ));
            }
        }
        None => {
            let _ = finished.await;
        }
    }
    if q.output == Some(false) {
        return Ok(Json(ExecResult {
            process: proc.info(),
            stdout: None,
            stdout_b64: None,
            stderr: None,
            stderr_b64: None,
        }));
    }
    Ok(Json(result(&proc)))
}

/// The process's info with all the output it kept, per stream.
fn result(proc: &Process) -> ExecResult {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut at = 1;
    loop {
        let batch = proc.log.read(at, None, 4 << 20);
        if batch.chunks.is_empty() {
            break;
        }
        for c in batch.chunks {
            match c.stream {
                Stream::Stdout => out.extend_from_slice(&c.data),
                Stream::Stderr => err.extend_from_slice(&c.data),
            }
        }
        at = batch.next;
    }
    ExecResult::new(proc.info(), out, err)
}
