//! HTTP handlers of the files API (`/files`, `/files/tar`, `/fs/*`): translate requests into
//! [`crate::files`] calls and stream bodies between the connection and the blocking threads that do
//! the file work, never holding a whole file.
//!
//! Query strings are read as raw bytes ([`FsQuery`]) so that `path` may name a file whose name is not
//! UTF-8; unknown parameters are a 400, as everywhere in the API.

use std::convert::Infallible;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use sandpit_types::files::{
    SPLICE_LENGTH_HEADER, SPLICE_MIN_BYTES, SPLICE_PROTOCOL, SPLICE_STATUS_HEADER,
};
use sandpit_types::{
    ChmodRequest, ChownRequest, CreateWatcherRequest, EntryList, ErrorCode, FsEvent, MkdirRequest,
    MoveRequest, WatchEventList, WatcherInfo,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::error::{ApiError, Json, PathParam};
use crate::agent::Agent;
use crate::files::{self, BodyError, FsError, TarReader, TarSource, resolve};

type Result<T> = std::result::Result<T, ApiError>;

impl From<FsError> for ApiError {
    fn from(e: FsError) -> Self {
        Self::new(e.code, e.message)
    }
}

/// Chunk size of streamed reads.
const CHUNK: usize = 256 << 10;

/// A query string decoded to bytes, checked against the parameters an endpoint takes.
#[derive(Debug)]
pub struct FsQuery(Vec<(String, Vec<u8>)>);

impl FsQuery {
    fn parse(req_query: Option<&str>, allowed: &[&str]) -> Result<Self> {
        let mut out = Vec::new();
        for pair in req_query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| -> Vec<u8> {
                percent_encoding::percent_decode(s.replace('+', " ").as_bytes()).collect()
            };
            let key = String::from_utf8_lossy(&decode(k)).into_owned();
            if !allowed.contains(&key.as_str()) {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter {key:?}; this endpoint takes {}",
                    allowed.join(", ")
                )));
            }
            out.push((key, decode(v)));
        }
        Ok(Self(out))
    }

    fn get(&self, key: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    fn path(&self) -> Result<Vec<u8>> {
        self.get("path")
            .map(<[u8]>::to_vec)
            .ok_or_else(|| ApiError::invalid("missing query parameter \"path\""))
    }

    fn string(&self, key: &str) -> Result<Option<String>> {
        self.get(key)
            .map(|v| {
                String::from_utf8(v.to_vec())
                    .map_err(|_| ApiError::invalid(format!("query parameter {key:?} is not UTF-8")))
            })
            .transpose()
    }

    fn flag(&self, key: &str) -> Result<Option<bool>> {
        match self.string(key)?.as_deref() {
            None => Ok(None),
            Some("" | "true" | "1") => Ok(Some(true)),
            Some("false" | "0") => Ok(Some(false)),
            Some(v) => Err(ApiError::invalid(format!(
                "{key}={v:?}: expected true or false"
            ))),
        }
    }

    fn number(&self, key: &str) -> Result<Option<u64>> {
        self.string(key)?
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::invalid(format!("{key}={v:?}: expected a number")))
            })
            .transpose()
    }
}

fn query(req_query: Option<&str>, allowed: &[&str]) -> Result<FsQuery> {
    FsQuery::parse(req_query, allowed)
}

/// Which content coding a body uses: none or gzip.
fn gzipped(headers: &HeaderMap) -> Result<bool> {
    match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "identity") => Ok(false),
        Some("gzip" | "x-gzip") => Ok(true),
        Some(other) => Err(ApiError::invalid(format!(
            "unsupported Content-Encoding {other:?}: send the bytes as they are, or gzip"
        ))),
    }
}

/// A request body handed to a blocking thread as a [`Read`], chunk by chunk, with back-pressure.
struct BodyReader {
    rx: mpsc::Receiver<std::result::Result<Bytes, String>>,
    current: Bytes,
    /// A body error met while filling a buffer, reported by the next read.
    pending: Option<String>,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(e) = self.pending.take() {
            return Err(std::io::Error::other(BodyError(e)));
        }
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(std::io::Error::other(BodyError(e))),
            }
        }
        let mut n = 0;
        // Fill `buf` from every chunk already here (the body arrives in socket-read-sized pieces):
        // one write per 256 KiB on the other side instead of one per piece.
        loop {
            let take = (buf.len() - n).min(self.current.len());
            buf[n..n + take].copy_from_slice(&self.current[..take]);
            let _ = self.current.split_to(take);
            n += take;
            if n == buf.len() {
                break;
            }
            match self.rx.try_recv() {
                Ok(Ok(b)) => self.current = b,
                // An error or the end is reported by the next call, after these bytes.
                Ok(Err(e)) => {
                    self.pending = Some(e);
                    break;
                }
                Err(_) => break,
            }
        }
        Ok(n)
    }
}

/// Starts pumping `body` into a [`BodyReader`]. The pump reads the body to its end even when the
/// reader stops early (an error), so that the answer reaches a client still sending instead of a
/// reset; await the handle before answering.
fn pump(body: Body) -> (BodyReader, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(8);
    let handle = tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        let mut open = true;
        while let Some(chunk) = stream.next().await {
            let failed = chunk.is_err();
            if open && tx.send(chunk.map_err(|e| e.to_string())).await.is_err() {
                open = false;
            }
            if failed {
                break;
            }
        }
    });
    (
        BodyReader {
            rx,
            current: Bytes::new(),
            pending: None,
        },
        handle,
    )
}

/// Waits (bounded) for the rest of a body to be read after the blocking side finished.
async fn drained(handle: tokio::task::JoinHandle<()>) {
    let _ = tokio::time::timeout(Duration::from_secs(30), handle).await;
}

/// `GET /files?path=&user=`: the file's bytes, streamed; `Range` gives 206.
pub async fn read(State(agent): State<Arc<Agent>>, req: Request) -> Result<Response> {
    let (path, plan) = open_read(&agent, read_args(&req)?).await?;
    read_planned(&path, plan)
}

/// The ordinary answer to a read: the content as a streamed body.
fn read_planned(path: &std::path::Path, plan: files::ReadPlan) -> Result<Response> {
    let resp = content_head(
        path,
        &plan,
        if plan.partial {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        },
    )
    .header(header::CONTENT_LENGTH, plan.len);
    let body = if let Some(bytes) = plan.held {
        Body::from(bytes)
    } else {
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
        let (mut file, mut left) = (plan.file, plan.len);
        tokio::task::spawn_blocking(move || {
            while left > 0 {
                let mut buf = vec![0u8; CHUNK.min(left as usize)];
                match file.read(&mut buf) {
                    Ok(0) => {
                        // Shrank under us: cut the stream short rather than send a wrong length.
                        let _ = tx.blocking_send(Err(std::io::Error::other(
                            "the file shrank while it was read",
                        )));
                        return;
                    }
                    Ok(n) => {
                        buf.truncate(n);
                        left -= n as u64;
                        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        Body::from_stream(ReceiverStream::new(rx))
    };
    resp.body(body)
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
}

/// Opens the file a `GET /files` names, as its user, with the `Range` it asks for.
async fn open_read(
    agent: &Agent,
    (user, raw, range): ReadArgs,
) -> Result<(std::path::PathBuf, files::ReadPlan)> {
    Ok(agent
        .files
        .run(user.as_deref(), move |who| {
            let p = resolve(&who.home, &raw)?;
            let plan = files::open_for_read(&p, range.as_deref())?;
            Ok((p, plan))
        })
        .await?)
}

type ReadArgs = (Option<String>, Vec<u8>, Option<String>);

/// A read's user, path and `Range`.
fn read_args(req: &Request) -> Result<ReadArgs> {
    let q = query(req.uri().query(), &["path", "user"])?;
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((q.string("user")?, q.path()?, range))
}

/// The head of a file's content answer, all but its length.
fn content_head(
    path: &std::path::Path,
    plan: &files::ReadPlan,
    status: StatusCode,
) -> axum::http::response::Builder {
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(
            header::LAST_MODIFIED,
            httpdate::fmt_http_date(plan.modified),
        );
    if let Some(name) = path.file_name() {
        use std::os::unix::ffi::OsStrExt as _;
        let encoded =
            percent_encoding::percent_encode(name.as_bytes(), percent_encoding::NON_ALPHANUMERIC);
        resp = resp.header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename*=UTF-8''{encoded}"),
        );
    }
    if plan.partial {
        resp = resp.header(
            header::CONTENT_RANGE,
            format!(
                "bytes {}-{}/{}",
                plan.start,
                plan.start + plan.len - 1,
                plan.size
            ),
        );
    }
    resp
}

/// Whether a request asks for the daemon's fast path ([`SPLICE_PROTOCOL`]).
fn offers_splice(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(SPLICE_PROTOCOL))
}

/// A 101 into the daemon's fast path.
fn switch(resp: axum::http::response::Builder) -> axum::http::response::Builder {
    resp.status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, SPLICE_PROTOCOL)
}

/// `GET /_daemon/files` (the daemon's fast path, [`sandpit_types::files::SPLICE_PATH`]): as
/// [`read`], but content of [`SPLICE_MIN_BYTES`] or more goes raw on the upgraded connection,
/// spliced from the file.
pub async fn read_spliced(State(agent): State<Arc<Agent>>, mut req: Request) -> Result<Response> {
    if !offers_splice(req.headers()) {
        return read(State(agent), req).await;
    }
    let args = read_args(&req)?;
    let (path, plan) = open_read(&agent, args).await?;
    if plan.held.is_some() || plan.len < SPLICE_MIN_BYTES {
        return read_planned(&path, plan);
    }
    let status = if plan.partial { "206" } else { "200" };
    let resp = switch(content_head(&path, &plan, StatusCode::SWITCHING_PROTOCOLS))
        .header(SPLICE_STATUS_HEADER, status)
        .header(SPLICE_LENGTH_HEADER, plan.len);
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let sock = match crate::serve::upgraded_socket(upgraded) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "file fast path: no socket to send on");
                return;
            }
        };
        let sent = tokio::task::spawn_blocking(move || {
            files::splice::bound_waits(&sock)?;
            files::splice::file_to_socket(&plan.file, &sock, plan.len)
        })
        .await;
        if let Ok(Err(e)) = sent {
            // The daemon sees the content end short and fails its client's body.
            tracing::debug!(error = %e, path = %path.display(), "file fast path: read ended early");
        }
    });
    resp.body(Body::empty())
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
}

/// A write's path, mode and user.
fn write_args(req: &Request) -> Result<(Vec<u8>, Option<sandpit_types::FileMode>, Option<String>)> {
    let q = query(req.uri().query(), &["path", "user", "mode"])?;
    let mode = q
        .string("mode")?
        .map(|m| sandpit_types::FileMode::parse(&m).map_err(ApiError::invalid))
        .transpose()?;
    Ok((q.path()?, mode, q.string("user")?))
}

/// `PUT /files?path=&user=&mode=`: writes the body atomically; answers the entry.
pub async fn write(State(agent): State<Arc<Agent>>, req: Request) -> Result<Response> {
    let (raw, mode, user) = write_args(&req)?;
    let gzip = gzipped(req.headers())?;
    let (parts, body) = req.into_parts();
    drop(parts);
    let (reader, pumping) = pump(body);
    let names = agent.files.names();
    let r = agent
        .files
        .run(user.as_deref(), move |who| {
            let p = resolve(&who.home, &raw)?;
            let mut src: TarReader<BodyReader> = if gzip {
                TarReader::Gzip(flate2::read::GzDecoder::new(reader))
            } else {
                TarReader::Plain(reader)
            };
            files::write_atomic(&p, mode.map(|m| m.0), &mut src, &names)
        })
        .await;
    drained(pumping).await;
    Ok(Json(r?).into_response())
}

/// `PUT /_daemon/files` (the daemon's fast path, [`sandpit_types::files::SPLICE_PATH`]): as
/// [`write`], but the content arrives raw on the upgraded connection, exactly
/// [`SPLICE_LENGTH_HEADER`] bytes, spliced into the file; the answer follows on the connection.
pub async fn write_spliced(State(agent): State<Arc<Agent>>, mut req: Request) -> Result<Response> {
    let (raw, mode, user) = write_args(&req)?;
    if !offers_splice(req.headers()) {
        return Err(ApiError::invalid(format!(
            "this path needs `Connection: upgrade` and `Upgrade: {SPLICE_PROTOCOL}`"
        )));
    }
    let len: u64 = req
        .headers()
        .get(SPLICE_LENGTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::invalid(format!("{SPLICE_LENGTH_HEADER} must be a byte count")))?;
    // A user that does not exist, and a path no file can have, are answered before the switch.
    agent.files.identity(user.as_deref())?;
    sandpit_types::files::validate_path(&raw).map_err(ApiError::invalid)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let names = agent.files.names();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let sock = match crate::serve::upgraded_socket(upgraded) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::warn!(error = %e, "file fast path: no socket to receive on");
                return;
            }
        };
        let from = sock.clone();
        let r = agent
            .files
            .run(user.as_deref(), move |who| {
                files::splice::bound_waits(&from)
                    .map_err(|e| FsError::new(ErrorCode::Internal, e.to_string()))?;
                let p = resolve(&who.home, &raw)?;
                let mut src = files::splice::FromSocket { sock: &from, len };
                files::write_atomic(&p, mode.map(|m| m.0), &mut src, &names)
            })
            .await;
        let resp = match r {
            Ok(entry) => Json(entry).into_response(),
            Err(e) => ApiError::from(e).into_response(),
        };
        let mut answer = format!("{:03}\n", resp.status().as_u16()).into_bytes();
        if let Ok(b) = axum::body::to_bytes(resp.into_body(), 1 << 20).await {
            answer.extend_from_slice(&b);
        }
        let _ = tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            std::fs::File::from(sock.try_clone()?).write_all(&answer)
        })
        .await;
    });
    switch(Response::builder())
        .body(Body::empty())
        .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
}

/// `POST /files/tar?path=DIR&user=`: extracts a (gzip) tar into DIR.
pub async fn extract(State(agent): State<Arc<Agent>>, req: Request) -> Result<Response> {
    let q = query(req.uri().query(), &["path", "user"])?;
    let raw = q.path()?;
    let gzip = gzipped(req.headers())?;
    let user = q.string("user")?;
    let (_, body) = req.into_parts();
    let (reader, pumping) = pump(body);
    let names = agent.files.names();
    let r = agent
        .files
        .run(user.as_deref(), move |who| {
            let p = resolve(&who.home, &raw)?;
            let mut src = if gzip {
                TarReader::Gzip(flate2::read::GzDecoder::new(reader))
            } else {
                TarReader::Plain(reader)
            };
            files::extract_tar(&p, &mut src, &names)
        })
        .await;
    drained(pumping).await;
    Ok(Json(r?).into_response())
}

/// A `Write` that hands 256 KiB chunks to the response body.
struct ChunkWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(Ok(Bytes::from(chunk))).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// `GET /files/tar?path=&user=`: a file or directory as a streamed tar.
pub async fn archive(State(agent): State<Arc<Agent>>, req: Request) -> Result<Response> {
    let q = query(req.uri().query(), &["path", "user"])?;
    let raw = q.path()?;
    let (who, switch) = agent.files.identity(q.string("user")?.as_deref())?;
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
    let (opened_tx, opened_rx) =
        tokio::sync::oneshot::channel::<std::result::Result<(), FsError>>();
    tokio::task::spawn_blocking(move || {
        let mut opened = Some(opened_tx);
        let r = files::run_as(&who, switch, |who| {
            let p = resolve(&who.home, &raw)?;
            let src = TarSource::open(&p)?;
            if let Some(o) = opened.take() {
                let _ = o.send(Ok(()));
            }
            let mut w = ChunkWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            src.write(&mut w)?;
            std::io::Write::flush(&mut w).map_err(|e| FsError::io(&e, "archive", &p))
        });
        match (r, opened) {
            (Err(e), Some(o)) => {
                let _ = o.send(Err(e));
            }
            (Err(e), None) => {
                tracing::warn!(error = %e, "an archive stream was cut short");
                let _ = tx.blocking_send(Err(std::io::Error::other(e)));
            }
            _ => {}
        }
    });
    match opened_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => return Err(ApiError::new(ErrorCode::Internal, "the archive task ended")),
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-tar"),
        )],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}

/// `GET /fs/stat?path=&user=`.
pub async fn stat(State(agent): State<Arc<Agent>>, req: Request) -> Result<Response> {
    let q = query(req.uri().query(), &["path", "user"])?;
    let raw = q.path()?;
    let names = agent.files.names();
    let e = agent
        .files
        .run(q.string("user")?.as_deref(), move |who| {
            files::stat(&resolve(&who.home, &raw)?, &names)
        })
        .await?;
    Ok(Json(e).into_response())
}

/// `GET /fs/list?path=&depth=&user=`.
pub async fn list(State(agent): State<Arc<Agent>>, req: Request) -> Result<Response> {
    let q = query(req.uri().query(), &["path", "depth", "user"])?;
    let raw = q.path()?;
    let depth = q.number("depth")?.unwrap_or(1);
    let names = agent.files.names();
    let entries = agent
        .files
        .run(q.string("user")?.as_deref(), move |who| {
            files::list(
                &resolve(&who.home, &raw)?,
                usize::try_from(depth).unwrap_or(usize::MAX),
                &names,
            )
        })
        .await?;
    Ok(Json(EntryList { entries }).into_response())
}

/// `POST /fs/mkdir`: 201 when created, 200 when it existed (with `parents`).
pub async fn mkdir(
    State(agent): State<Arc<Agent>>,
    Json(r): Json<MkdirRequest>,
) -> Result<Response> {
    let names = agent.files.names();
    let (entry, created) = agent
        .files
        .run(r.user.as_deref(), move |who| {
            let p = resolve(&who.home, r.path.as_bytes())?;
            files::mkdir(
                &p,
                r.mode.map_or(0o755, |m| m.0),
                r.parents.unwrap_or(true),
                &names,
            )
        })
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(entry)).into_response())
}

/// `POST /fs/move`.
pub async fn move_path(
    State(agent): State<Arc<Agent>>,
    Json(r): Json<MoveRequest>,
) -> Result<Response> {
    let names = agent.files.names();
    let e = agent
        .files
        .run(r.user.as_deref(), move |who| {
            let from = resolve(&who.home, r.from.as_bytes())?;
            let to = resolve(&who.home, r.to.as_bytes())?;
            files::move_path(&from, &to, r.overwrite, &names)
        })
        .await?;
    Ok(Json(e).into_response())
}

/// `DELETE /fs?path=&recursive=&user=`.
pub async fn remove(State(agent): State<Arc<Agent>>, req: Request) -> Result<StatusCode> {
    let q = query(req.uri().query(), &["path", "recursive", "user"])?;
    let raw = q.path()?;
    let recursive = q.flag("recursive")?.unwrap_or(false);
    agent
        .files
        .run(q.string("user")?.as_deref(), move |who| {
            files::remove(&resolve(&who.home, &raw)?, recursive)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /fs/chmod`.
pub async fn chmod(
    State(agent): State<Arc<Agent>>,
    Json(r): Json<ChmodRequest>,
) -> Result<Response> {
    let names = agent.files.names();
    let e = agent
        .files
        .run(r.user.as_deref(), move |who| {
            files::chmod(&resolve(&who.home, r.path.as_bytes())?, r.mode, &names)
        })
        .await?;
    Ok(Json(e).into_response())
}

/// `POST /fs/chown`: as root unless `user` is given.
pub async fn chown(
    State(agent): State<Arc<Agent>>,
    Json(r): Json<ChownRequest>,
) -> Result<Response> {
    if r.owner.is_none() && r.group.is_none() {
        return Err(ApiError::invalid("give \"owner\", \"group\" or both"));
    }
    let names = agent.files.names();
    let uid = r
        .owner
        .as_deref()
        .map(|o| {
            names.uid_of(o).ok_or_else(|| {
                ApiError::invalid(format!("unknown user {o:?} in the sandbox's /etc/passwd"))
            })
        })
        .transpose()?;
    let gid = r
        .group
        .as_deref()
        .map(|g| {
            names.gid_of(g).ok_or_else(|| {
                ApiError::invalid(format!("unknown group {g:?} in the sandbox's /etc/group"))
            })
        })
        .transpose()?;
    let user = r.user.clone().unwrap_or_else(|| "0".into());
    let e = agent
        .files
        .run(Some(&user), move |who| {
            files::chown(&resolve(&who.home, r.path.as_bytes())?, uid, gid, &names)
        })
        .await?;
    Ok(Json(e).into_response())
}

/// `GET /fs/watch?path=&recursive=&from_seq=&user=`: SSE of changes; resumes by `from_seq` or
/// `Last-Event-ID`.
pub async fn watch(State(agent): State<Arc<Agent>>, req: Request) -> Result<Response> {
    let q = query(
        req.uri().query(),
        &["path", "recursive", "from_seq", "user"],
    )?;
    let raw = q.path()?;
    let recursive = q.flag("recursive")?.unwrap_or(false);
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::invalid("Last-Event-ID must be a seq number"))
        })
        .transpose()?;
    let resume = match q.number("from_seq")? {
        Some(n) => Some(n.max(1)),
        None => last_event_id.map(|id| id.saturating_add(1)),
    };
    let (who, switch) = agent.files.identity(q.string("user")?.as_deref())?;
    let home = who.home.clone();
    let path = resolve(&home, &raw)?;
    let files = agent.files.clone();
    let w =
        tokio::task::spawn_blocking(move || files.watches.shared(&path, recursive, &who, switch))
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))??;
    let (tx, rx) = mpsc::channel::<Event>(16);
    tokio::spawn(async move {
        let _reader = w.reader();
        let mut tick = w.subscribe();
        let start = resume.unwrap_or_else(|| files::watch::current_seq() + 1);
        let info = WatcherInfo {
            id: String::new(),
            path: crate::files::display_path(&w.path).0,
            recursive: w.recursive,
            seq: start - 1,
        };
        let started = Event::default()
            .id((start - 1).to_string())
            .event("started")
            .data(json(&info));
        if tx.send(started).await.is_err() {
            return;
        }
        let mut cursor = start;
        let mut resumed = resume.is_some();
        loop {
            tick.borrow_and_update();
            let batch = w.read(cursor, 256, resumed);
            resumed = false;
            cursor = batch.next;
            let empty = batch.events.is_empty();
            for ev in batch.events {
                if tx.send(sse(&ev)).await.is_err() {
                    return;
                }
            }
            if empty {
                if let Some(why) = batch.ended {
                    let _ = tx
                        .send(
                            Event::default()
                                .event("ended")
                                .data(json(&serde_json::json!({"reason": why}))),
                        )
                        .await;
                    return;
                }
                tokio::select! {
                    r = tick.changed() => if r.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        }
    });
    let keepalive = KeepAlive::new()
        .interval(Duration::from_secs(15))
        .event(Event::default().event("keepalive"));
    let stream = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Ok(Sse::new(stream).keep_alive(keepalive).into_response())
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("wire types serialize")
}

fn sse(ev: &FsEvent) -> Event {
    let name = serde_json::to_value(ev.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    Event::default()
        .id(ev.seq.to_string())
        .event(name)
        .data(json(ev))
}

/// `POST /fs/watchers`: a watch read by polling.
pub async fn create_watcher(
    State(agent): State<Arc<Agent>>,
    Json(r): Json<CreateWatcherRequest>,
) -> Result<Response> {
    let (who, switch) = agent.files.identity(r.user.as_deref())?;
    let path = resolve(&who.home, r.path.as_bytes())?;
    let files = agent.files.clone();
    let recursive = r.recursive;
    let (id, w) = tokio::task::spawn_blocking(move || {
        files.watches.create_poller(&path, recursive, &who, switch)
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))??;
    let info = WatcherInfo {
        id,
        path: crate::files::display_path(&w.path).0,
        recursive: w.recursive,
        seq: w.started_at_seq,
    };
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// `GET /fs/watchers/{id}/events?from_seq=`: what happened since the last poll (or since `from_seq`).
pub async fn watcher_events(
    State(agent): State<Arc<Agent>>,
    PathParam(id): PathParam<String>,
    req: Request,
) -> Result<Json<WatchEventList>> {
    let q = query(req.uri().query(), &["from_seq"])?;
    let from = q.number("from_seq")?.map(|n| n.max(1));
    Ok(Json(WatchEventList {
        events: agent.files.watches.poll(&id, from)?,
    }))
}

/// `DELETE /fs/watchers/{id}`.
pub async fn delete_watcher(
    State(agent): State<Arc<Agent>>,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode> {
    agent.files.watches.remove_poller(&id)?;
    Ok(StatusCode::NO_CONTENT)
}
