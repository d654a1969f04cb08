//! envd's `filesystem.Filesystem` service and its HTTP file API (`GET/POST /files`, `GET /health`),
//! translated onto sandpit's files API (`/v1/sandboxes/{id}/files`, `/fs/…`).
//!
//! Watches: `WatchDir` re-frames sandpit's SSE watch; the polled watchers (`CreateWatcher`,
//! `GetWatcherEvents`, `RemoveWatcher`) are sandpit's watchers, their E2B id carrying the watched path so
//! that event names can be made relative to it as envd makes them. A sandpit `lost` event has no E2B
//! counterpart: it ends the watch with an error instead of being dropped.
//!
//! E2B's signed file URLs (`signature=v1_…`, SHA-256 of `path:operation:user:token[:expiration]`) are
//! checked against the token [`E2b::envd_token`] derives; such a URL names no sandbox, so the one whose
//! token signed it is found by trying each.

use axum::body::Body;
use axum::extract::{Multipart, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::connect::{self, Code, RpcError};
use super::process::{Step, keepalive, pump};
use super::{E2b, EnvdCaller, enc};
use sandpit_types::sse::RawEvent;
use sandpit_types::{
    Entry, EntryList, EntryType, FsEvent, FsEventType, WatchEventList, WatcherInfo,
};

impl E2b {
    /// For a caller holding the E2B token of a sandbox that no longer exists: envd's "was not found"
    /// (which the SDKs raise as "sandbox not running"). Anyone else learns nothing about the id.
    pub fn gone(&self, caller: &EnvdCaller) -> Option<RpcError> {
        let own_token = bool::from(subtle::ConstantTimeEq::ct_eq(
            caller.bearer.as_bytes(),
            self.envd_token(&caller.sandbox).as_bytes(),
        ));
        (own_token && self.app.engine.tenant_of(&caller.sandbox).is_none()).then(|| {
            RpcError::new(
                Code::Unavailable,
                format!("sandbox {} was not found", caller.sandbox),
            )
        })
    }
}

/// `filesystem.Filesystem/{method}`.
pub async fn dispatch(
    State(e): State<E2b>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let streamed = method == "WatchDir";
    let fail = |err: RpcError| {
        if streamed {
            connect::stream_error(&err)
        } else {
            err.into_response()
        }
    };
    let caller = match EnvdCaller::from_headers(&headers) {
        Ok(c) => c,
        Err(err) => return fail(err),
    };
    if let Some(err) = e.gone(&caller) {
        return fail(err);
    }
    let bytes = match axum::body::to_bytes(body, connect::MAX_MESSAGE_BYTES).await {
        Ok(b) => b,
        Err(err) => return fail(RpcError::invalid(format!("cannot read the request: {err}"))),
    };
    let r = match method.as_str() {
        "WatchDir" => {
            return watch_dir(&e, &caller, &headers, &bytes)
                .await
                .unwrap_or_else(fail);
        }
        "Stat" => stat(&e, &caller, &headers, &bytes).await,
        "MakeDir" => make_dir(&e, &caller, &headers, &bytes).await,
        "Move" => move_entry(&e, &caller, &headers, &bytes).await,
        "ListDir" => list_dir(&e, &caller, &headers, &bytes).await,
        "Remove" => remove(&e, &caller, &headers, &bytes).await,
        "CreateWatcher" => create_watcher(&e, &caller, &headers, &bytes).await,
        "GetWatcherEvents" => watcher_events(&e, &caller, &headers, &bytes).await,
        "RemoveWatcher" => remove_watcher(&e, &caller, &headers, &bytes).await,
        other => Err(RpcError::new(
            Code::Unimplemented,
            format!("filesystem.Filesystem/{other} does not exist"),
        )),
    };
    match r {
        Ok(v) => connect::unary_ok(&v),
        Err(err) => err.into_response(),
    }
}

/// Go's `FileMode.String()` of an entry: the type letter, then the permission bits.
fn e2b_entry(en: &Entry) -> Value {
    let (kind, letter) = match en.kind {
        EntryType::File => ("FILE_TYPE_FILE", '-'),
        EntryType::Dir => ("FILE_TYPE_DIRECTORY", 'd'),
        EntryType::Symlink => ("FILE_TYPE_SYMLINK", 'L'),
        EntryType::Other => ("FILE_TYPE_UNSPECIFIED", '?'),
    };
    let mode = u32::from_str_radix(&en.mode, 8).unwrap_or(0) & 0o777;
    let mut v = json!({
        "name": en.name,
        "type": kind,
        "path": en.path,
        "size": en.size.to_string(),
        "mode": mode,
        "permissions": format!("{letter}{}", en.permissions),
        "owner": en.owner,
        "group": en.group,
        "modifiedTime": en.modified_at,
    });
    if let Some(t) = &en.symlink_target {
        v["symlinkTarget"] = json!(t);
    }
    if en.kind == EntryType::Symlink {
        v["isSymlink"] = json!(true);
    }
    v
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathReq {
    #[serde(default)]
    path: String,
    #[serde(default)]
    depth: Option<u32>,
}

fn need_path(p: &str) -> Result<&str, RpcError> {
    if p.is_empty() {
        Err(RpcError::invalid("path is empty"))
    } else {
        Ok(p)
    }
}

async fn stat(e: &E2b, c: &EnvdCaller, h: &HeaderMap, body: &[u8]) -> Result<Value, RpcError> {
    let r: PathReq = connect::parse_unary(h, body)?;
    let path = need_path(&r.path)?;
    let (_, en): (_, Entry) = e
        .json(
            Method::GET,
            &c.path(&format!("fs/stat?path={}{}", enc(path), c.user_param())),
            &c.bearer,
            None::<&()>,
        )
        .await
        .map_err(RpcError::from)?;
    Ok(json!({"entry": e2b_entry(&en)}))
}

async fn make_dir(e: &E2b, c: &EnvdCaller, h: &HeaderMap, body: &[u8]) -> Result<Value, RpcError> {
    let r: PathReq = connect::parse_unary(h, body)?;
    let path = need_path(&r.path)?;
    let (status, en): (_, Entry) = e
        .json(
            Method::POST,
            &c.path("fs/mkdir"),
            &c.bearer,
            Some(&json!({"path": path, "user": c.user, "parents": true})),
        )
        .await
        .map_err(RpcError::from)?;
    // envd's MakeDir says so when the directory was already there.
    if status == StatusCode::OK {
        return Err(RpcError::new(
            Code::AlreadyExists,
            format!("directory {path} already exists"),
        ));
    }
    Ok(json!({"entry": e2b_entry(&en)}))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveReq {
    #[serde(default)]
    source: String,
    #[serde(default)]
    destination: String,
}

async fn move_entry(
    e: &E2b,
    c: &EnvdCaller,
    h: &HeaderMap,
    body: &[u8],
) -> Result<Value, RpcError> {
    let r: MoveReq = connect::parse_unary(h, body)?;
    let (_, en): (_, Entry) = e
        .json(
            Method::POST,
            &c.path("fs/move"),
            &c.bearer,
            Some(
                &json!({"from": need_path(&r.source)?, "to": need_path(&r.destination)?,
                "overwrite": true, "user": c.user}),
            ),
        )
        .await
        .map_err(RpcError::from)?;
    Ok(json!({"entry": e2b_entry(&en)}))
}

async fn list_dir(e: &E2b, c: &EnvdCaller, h: &HeaderMap, body: &[u8]) -> Result<Value, RpcError> {
    let r: PathReq = connect::parse_unary(h, body)?;
    let path = need_path(&r.path)?;
    let depth = r.depth.unwrap_or(1).max(1);
    let (_, list): (_, EntryList) = e
        .json(
            Method::GET,
            &c.path(&format!(
                "fs/list?path={}&depth={depth}{}",
                enc(path),
                c.user_param()
            )),
            &c.bearer,
            None::<&()>,
        )
        .await
        .map_err(RpcError::from)?;
    Ok(json!({"entries": list.entries.iter().map(e2b_entry).collect::<Vec<_>>()}))
}

async fn remove(e: &E2b, c: &EnvdCaller, h: &HeaderMap, body: &[u8]) -> Result<Value, RpcError> {
    let r: PathReq = connect::parse_unary(h, body)?;
    let path = need_path(&r.path)?;
    e.status(
        Method::DELETE,
        &c.path(&format!(
            "fs?path={}&recursive=true{}",
            enc(path),
            c.user_param()
        )),
        &c.bearer,
        None::<&()>,
    )
    .await
    .map_err(RpcError::from)?;
    Ok(json!({}))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WatchReq {
    #[serde(default)]
    path: String,
    #[serde(default)]
    recursive: bool,
    #[serde(default, alias = "include_entry")]
    include_entry: bool,
    #[serde(default, alias = "allow_network_mounts")]
    #[allow(dead_code)]
    allow_network_mounts: bool,
}

impl WatchReq {
    fn check(&self) -> Result<&str, RpcError> {
        if self.include_entry {
            return Err(RpcError::invalid(
                "includeEntry is not supported (sandpit answers as envd 0.5.7): stat the path instead",
            ));
        }
        need_path(&self.path)
    }
}

/// E2B's name of a watched path: relative to the watched directory.
fn relative(root: &str, path: &str) -> String {
    let root = root.trim_end_matches('/');
    path.strip_prefix(root)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(path)
        .to_owned()
}

fn event_type(k: FsEventType) -> Option<&'static str> {
    Some(match k {
        FsEventType::Create => "EVENT_TYPE_CREATE",
        FsEventType::Write => "EVENT_TYPE_WRITE",
        FsEventType::Remove => "EVENT_TYPE_REMOVE",
        FsEventType::Rename => "EVENT_TYPE_RENAME",
        FsEventType::Chmod => "EVENT_TYPE_CHMOD",
        FsEventType::Lost | FsEventType::Unknown => return None,
    })
}

/// One sandpit event as E2B's: a rename is envd's pair, `RENAME` of the old name and `CREATE` of the new.
fn e2b_events(root: &str, ev: &FsEvent) -> Result<Vec<Value>, RpcError> {
    if ev.kind == FsEventType::Lost {
        return Err(RpcError::new(
            Code::Unavailable,
            format!(
                "watch events were lost ({}): read the directory again and watch anew",
                ev.reason.as_deref().unwrap_or("unknown reason")
            ),
        ));
    }
    let Some(kind) = event_type(ev.kind) else {
        return Ok(Vec::new());
    };
    if ev.kind == FsEventType::Rename {
        let mut out = Vec::new();
        if let Some(from) = &ev.from {
            out.push(json!({"name": relative(root, from), "type": "EVENT_TYPE_RENAME"}));
        }
        if let Some(to) = ev.to.as_ref().or(ev.path.as_ref()) {
            out.push(json!({"name": relative(root, to), "type": "EVENT_TYPE_CREATE"}));
        }
        return Ok(out);
    }
    Ok(ev
        .path
        .iter()
        .map(|p| json!({"name": relative(root, p), "type": kind}))
        .collect())
}

async fn watch_dir(
    e: &E2b,
    c: &EnvdCaller,
    h: &HeaderMap,
    body: &[u8],
) -> Result<Response, RpcError> {
    let r: WatchReq = connect::parse_stream_request(h, body)?;
    let path = r.check()?.to_owned();
    let uri = c.path(&format!(
        "fs/watch?path={}&recursive={}{}",
        enc(&path),
        r.recursive,
        c.user_param()
    ));
    let resp = e
        .call(E2b::request(Method::GET, &uri, &c.bearer, None))
        .await;
    if !resp.status().is_success() {
        return Err(super::upstream_error(resp).await.into());
    }
    let translate = move |ev: &RawEvent| -> Step {
        match ev.event.as_str() {
            "started" => Step::Send(vec![json!({"start": {}})]),
            "keepalive" | "" => Step::Skip,
            "ended" => Step::End(Some(RpcError::new(
                Code::NotFound,
                format!("the watch ended: {}", ev.data),
            ))),
            "error" => Step::End(Some(
                serde_json::from_str::<sandpit_types::ErrorDetail>(&ev.data).map_or_else(
                    |_| RpcError::new(Code::Unavailable, ev.data.clone()),
                    |d| RpcError::new(Code::from_sandpit(d.code), d.message),
                ),
            )),
            _ => match serde_json::from_str::<FsEvent>(&ev.data) {
                Ok(fe) => match e2b_events(&path, &fe) {
                    Ok(list) => {
                        Step::Send(list.into_iter().map(|v| json!({"filesystem": v})).collect())
                    }
                    Err(err) => Step::End(Some(err)),
                },
                Err(_) => Step::Skip,
            },
        }
    };
    Ok(pump(
        resp.into_body(),
        translate,
        connect::timeout(h),
        keepalive(h),
        json!({"keepalive": {}}),
    ))
}

/// An E2B watcher id: sandpit's watcher id and the watched path (base64url), so that events can be named
/// relative to it without the daemon keeping anything.
fn watcher_id(id: &str, root: &str) -> String {
    format!(
        "{id}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(root)
    )
}

fn parse_watcher_id(w: &str) -> Result<(String, String), RpcError> {
    let bad = || RpcError::new(Code::NotFound, format!("watcher {w:?} does not exist"));
    let (id, root) = w.split_once('.').ok_or_else(bad)?;
    let root = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(root)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad());
    }
    Ok((id.to_owned(), root))
}

async fn create_watcher(
    e: &E2b,
    c: &EnvdCaller,
    h: &HeaderMap,
    body: &[u8],
) -> Result<Value, RpcError> {
    let r: WatchReq = connect::parse_unary(h, body)?;
    let path = r.check()?;
    let (_, w): (_, WatcherInfo) = e
        .json(
            Method::POST,
            &c.path("fs/watchers"),
            &c.bearer,
            Some(&json!({"path": path, "recursive": r.recursive, "user": c.user})),
        )
        .await
        .map_err(RpcError::from)?;
    Ok(json!({"watcherId": watcher_id(&w.id, &w.path)}))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WatcherReq {
    #[serde(default, rename = "watcherId", alias = "watcher_id")]
    watcher_id: String,
}

async fn watcher_events(
    e: &E2b,
    c: &EnvdCaller,
    h: &HeaderMap,
    body: &[u8],
) -> Result<Value, RpcError> {
    let r: WatcherReq = connect::parse_unary(h, body)?;
    let (id, root) = parse_watcher_id(&r.watcher_id)?;
    let (_, list): (_, WatchEventList) = e
        .json(
            Method::GET,
            &c.path(&format!("fs/watchers/{id}/events")),
            &c.bearer,
            None::<&()>,
        )
        .await
        .map_err(RpcError::from)?;
    let mut events = Vec::new();
    for ev in &list.events {
        events.extend(e2b_events(&root, ev)?);
    }
    Ok(json!({"events": events}))
}

async fn remove_watcher(
    e: &E2b,
    c: &EnvdCaller,
    h: &HeaderMap,
    body: &[u8],
) -> Result<Value, RpcError> {
    let r: WatcherReq = connect::parse_unary(h, body)?;
    let (id, _) = parse_watcher_id(&r.watcher_id)?;
    e.status(
        Method::DELETE,
        &c.path(&format!("fs/watchers/{id}")),
        &c.bearer,
        None::<&()>,
    )
    .await
    .map_err(RpcError::from)?;
    Ok(json!({}))
}

// ---- the HTTP file API ----

/// An envd HTTP error: `{"code": status, "message"}`. A sandbox that is gone is envd's proxy's 502.
fn http_error(status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    (
        status,
        axum::Json(json!({"code": status.as_u16(), "message": message})),
    )
        .into_response()
}

fn http_from_rpc(err: &RpcError) -> Response {
    let status = match err.code {
        Code::Unavailable => StatusCode::BAD_GATEWAY,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Internal | Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    http_error(status, err.message.clone())
}

fn http_from_upstream(u: super::Upstream) -> Response {
    use sandpit_types::ErrorCode as E;
    let status = match u.code {
        // envd answers a directory or a bad path with 400.
        E::IsADirectory | E::NotADirectory | E::Conflict => StatusCode::BAD_REQUEST,
        E::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        E::Unavailable => StatusCode::BAD_GATEWAY,
        _ => u.status,
    };
    http_error(status, u.message)
}

/// The query of a `/files` call.
#[derive(Debug, Default)]
struct FilesQuery {
    path: Option<String>,
    username: Option<String>,
    signature: Option<String>,
    expiration: Option<i64>,
}

fn files_query(q: Option<&str>) -> Result<FilesQuery, Box<Response>> {
    let mut out = FilesQuery::default();
    for (k, v) in form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
        match &*k {
            "path" => out.path = Some(v.into_owned()),
            "username" => out.username = Some(v.into_owned()).filter(|u| !u.is_empty()),
            "signature" => out.signature = Some(v.into_owned()),
            "signature_expiration" => {
                out.expiration = Some(v.parse().map_err(|_| {
                    Box::new(http_error(
                        StatusCode::BAD_REQUEST,
                        format!("signature_expiration {v:?} is not a number"),
                    ))
                })?);
            }
            other => {
                return Err(Box::new(http_error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown query parameter {other:?} (expected path, username, signature, signature_expiration)"
                    ),
                )));
            }
        }
    }
    Ok(out)
}

/// E2B's v1 signature of a file URL.
fn e2b_signature(path: &str, op: &str, user: &str, token: &str, expiration: Option<i64>) -> String {
    let raw = match expiration {
        Some(exp) => format!("{path}:{op}:{user}:{token}:{exp}"),
        None => format!("{path}:{op}:{user}:{token}"),
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, raw.as_bytes());
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest.as_ref())
    )
}

/// Who a `/files` call acts as: the caller's headers, or the sandbox whose token signed the URL.
fn files_caller(
    e: &E2b,
    h: &HeaderMap,
    q: &FilesQuery,
    op: &str,
) -> Result<EnvdCaller, Box<Response>> {
    if h.contains_key("x-access-token") {
        let mut c = EnvdCaller::from_headers(h).map_err(|err| Box::new(http_from_rpc(&err)))?;
        if let Some(u) = &q.username {
            c.user = Some(u.clone());
        }
        if let Some(err) = e.gone(&c) {
            return Err(Box::new(http_from_rpc(&err)));
        }
        return Ok(c);
    }
    let Some(sig) = &q.signature else {
        return Err(Box::new(http_error(
            StatusCode::UNAUTHORIZED,
            "missing X-Access-Token (or a signed URL's signature)",
        )));
    };
    if q.expiration
        .is_some_and(|exp| exp * 1000 < crate::time::now_ms())
    {
        return Err(Box::new(http_error(
            StatusCode::UNAUTHORIZED,
            "this signed URL has expired",
        )));
    }
    let path = q.path.as_deref().unwrap_or_default();
    let user = q.username.as_deref().unwrap_or_default();
    let signed_by = e.app.engine.sandbox_ids().into_iter().find(|id| {
        let token = e.envd_token(id);
        let want = e2b_signature(path, op, user, &token, q.expiration);
        bool::from(subtle::ConstantTimeEq::ct_eq(
            want.as_bytes(),
            sig.as_bytes(),
        )) && e.app.keys.sandbox_token_is(id, &token)
    });
    let Some(id) = signed_by else {
        return Err(Box::new(http_error(
            StatusCode::UNAUTHORIZED,
            format!(
                "the signature does not match a {op} of this path by a live sandbox's access token"
            ),
        )));
    };
    Ok(EnvdCaller {
        bearer: e.envd_token(&id),
        sandbox: id,
        user: q.username.clone(),
    })
}

/// `GET /files?path=&username=`: the file's bytes, streamed.
pub async fn download(State(e): State<E2b>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let q = match files_query(q.as_deref()) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let c = match files_caller(&e, &headers, &q, "read") {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let Some(path) = q.path.as_deref().filter(|p| !p.is_empty()) else {
        return http_error(StatusCode::BAD_REQUEST, "missing path");
    };
    let uri = c.path(&format!("files?path={}{}", enc(path), c.user_param()));
    let resp = e
        .call(E2b::request(Method::GET, &uri, &c.bearer, None))
        .await;
    if !resp.status().is_success() {
        return http_from_upstream(super::upstream_error(resp).await);
    }
    let (mut parts, body) = resp.into_parts();
    let filename = path.rsplit('/').next().unwrap_or(path).replace('"', "");
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        parts.headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Response::from_parts(parts, body)
}

/// Writes one file; E2B's `WriteInfo` of it.
async fn put_file(
    e: &E2b,
    c: &EnvdCaller,
    path: &str,
    body: Body,
    gzip: bool,
) -> Result<Value, Response> {
    let uri = c.path(&format!("files?path={}{}", enc(path), c.user_param()));
    let mut req = E2b::request(Method::PUT, &uri, &c.bearer, None);
    *req.body_mut() = body;
    req.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if gzip {
        req.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    let resp = e.call(req).await;
    if !resp.status().is_success() {
        return Err(http_from_upstream(super::upstream_error(resp).await));
    }
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .map_err(|err| http_error(StatusCode::BAD_GATEWAY, err.to_string()))?;
    let en: Entry = serde_json::from_slice(&bytes)
        .map_err(|err| http_error(StatusCode::BAD_GATEWAY, err.to_string()))?;
    Ok(
        json!({"name": en.name, "type": if en.kind == EntryType::Dir { "dir" } else { "file" }, "path": en.path}),
    )
}

/// `POST /files?path=&username=`: one file (`application/octet-stream`, gzip allowed) or several
/// (`multipart/form-data`, each part's file name its path when `path` is not given), streamed to the
/// sandbox. Answers `[WriteInfo]`.
pub async fn upload(
    State(e): State<E2b>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    req: axum::extract::Request,
) -> Response {
    let q = match files_query(q.as_deref()) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let c = match files_caller(&e, &headers, &q, "write") {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if headers
        .keys()
        .any(|k| k.as_str().starts_with("x-metadata-"))
    {
        return http_error(
            StatusCode::BAD_REQUEST,
            "file metadata (X-Metadata-* headers) is not supported by sandpit",
        );
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if ct.starts_with("multipart/form-data") {
        let mut mp =
            match <Multipart as axum::extract::FromRequest<()>>::from_request(req, &()).await {
                Ok(m) => m,
                Err(err) => return http_error(StatusCode::BAD_REQUEST, err.body_text()),
            };
        let mut written = Vec::new();
        loop {
            let mut field = match mp.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(err) => return http_error(StatusCode::BAD_REQUEST, err.body_text()),
            };
            let path = match (&q.path, field.file_name()) {
                (Some(p), _) if !p.is_empty() => p.clone(),
                (_, Some(name)) if !name.is_empty() => name.to_owned(),
                _ => {
                    return http_error(
                        StatusCode::BAD_REQUEST,
                        "a multipart part names no file: give ?path= or a file name",
                    );
                }
            };
            // The part is streamed to the sandbox as it is read, never held whole.
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
            let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
            // Ends (dropping `tx`, which ends the body) when the part does.
            let feed = async move {
                loop {
                    match field.chunk().await {
                        Ok(Some(chunk)) => {
                            if tx.send(Ok(chunk)).await.is_err() {
                                return Ok(());
                            }
                        }
                        Ok(None) => return Ok(()),
                        Err(err) => {
                            let msg = err.body_text();
                            let _ = tx.send(Err(std::io::Error::other(msg.clone()))).await;
                            return Err(msg);
                        }
                    }
                }
            };
            let (put, fed) = tokio::join!(put_file(&e, &c, &path, body, false), feed);
            if let Err(msg) = fed {
                return http_error(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the upload: {msg}"),
                );
            }
            match put {
                Ok(w) => written.push(w),
                Err(r) => return r,
            }
        }
        if written.is_empty() {
            return http_error(StatusCode::BAD_REQUEST, "the multipart body holds no file");
        }
        return axum::Json(written).into_response();
    }
    let Some(path) = q.path.clone().filter(|p| !p.is_empty()) else {
        return http_error(StatusCode::BAD_REQUEST, "missing path");
    };
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
    let body = Body::from_stream(
        req.into_body()
            .into_data_stream()
            .map(|r| r.map_err(std::io::Error::other)),
    );
    match put_file(&e, &c, &path, body, gzip).await {
        Ok(w) => axum::Json(vec![w]).into_response(),
        Err(r) => r,
    }
}

/// `GET /health`: 204 while the caller's sandbox runs; envd's proxy's 502 ("… was not found") once it is
/// gone, which the SDKs' `is_running()` reads as false.
pub async fn health(State(e): State<E2b>, headers: HeaderMap) -> Response {
    let c = match EnvdCaller::from_headers(&headers) {
        Ok(c) => c,
        Err(err) => return http_from_rpc(&err),
    };
    if let Some(err) = e.gone(&c) {
        return http_from_rpc(&err);
    }
    match e
        .json::<sandpit_types::sandbox::SandboxInfo>(
            Method::GET,
            &format!("/v1/sandboxes/{}", c.sandbox),
            &c.bearer,
            None::<&()>,
        )
        .await
    {
        Ok((_, info)) if matches!(info.state, sandpit_types::sandbox::SandboxState::Running) => {
            StatusCode::NO_CONTENT.into_response()
        }
        Ok((_, info)) => http_error(
            StatusCode::BAD_GATEWAY,
            format!("sandbox {} is {}", c.sandbox, info.state.as_str()),
        ),
        Err(u) => http_from_upstream(u),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_relative_to_the_watched_directory() {
        assert_eq!(relative("/home/user/w", "/home/user/w/a/b.txt"), "a/b.txt");
        assert_eq!(relative("/home/user/w/", "/home/user/w/x"), "x");
        assert_eq!(relative("/w", "/elsewhere"), "/elsewhere");
    }

    #[test]
    fn watcher_ids_carry_their_path() {
        let w = watcher_id("w12", "/home/user/dir with space");
        assert_eq!(
            parse_watcher_id(&w).unwrap(),
            ("w12".into(), "/home/user/dir with space".into())
        );
        assert_eq!(
            parse_watcher_id("nonsense").unwrap_err().code,
            Code::NotFound
        );
        assert_eq!(
            parse_watcher_id("../x.Lw").unwrap_err().code,
            Code::NotFound
        );
    }

    #[test]
    fn signatures_match_e2b_s_formula() {
        // sha256("/a:read::tok") in unpadded base64, prefixed.
        let s = e2b_signature("/a", "read", "", "tok", None);
        assert!(s.starts_with("v1_") && !s.ends_with('='));
        assert_ne!(s, e2b_signature("/a", "write", "", "tok", None));
        assert_ne!(s, e2b_signature("/a", "read", "", "tok", Some(1)));
    }

    #[test]
    fn renames_are_envd_s_pair_and_losses_end_the_watch() {
        let ev: FsEvent = serde_json::from_value(json!({"seq": 1, "type": "rename",
            "path": "/w/b", "from": "/w/a", "to": "/w/b", "at": "x"}))
        .unwrap();
        assert_eq!(
            e2b_events("/w", &ev).unwrap(),
            vec![
                json!({"name": "a", "type": "EVENT_TYPE_RENAME"}),
                json!({"name": "b", "type": "EVENT_TYPE_CREATE"})
            ]
        );
        let lost: FsEvent = serde_json::from_value(json!({"seq": 2, "type": "lost",
            "reason": "buffer_overflow", "at": "x"}))
        .unwrap();
        assert!(
            e2b_events("/w", &lost)
                .unwrap_err()
                .message
                .contains("buffer_overflow")
        );
    }
}
