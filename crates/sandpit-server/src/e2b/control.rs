//! E2B's control API (`E2B_API_URL`): create, connect, list, get, kill, set the timeout, pause and resume
//! sandboxes, and change their network policy, each translated onto `/v1/sandboxes`. Errors are E2B's
//! `{"code": <HTTP status>, "message"}` with sandpit's status, so the SDKs raise their own exceptions (404 →
//! `SandboxNotFoundException`/`NotFoundError`, 401 → `AuthenticationException`, 429 → rate limit, …).

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{E2b, ENVD_VERSION, Upstream, enc};
use sandpit_types::network::{Egress, NetworkPolicy};
use sandpit_types::sandbox::{
    CreateSandboxRequest, OnTimeout, SandboxInfo, SandboxList, SandboxState,
};

pub(super) fn routes() -> Router<E2b> {
    Router::new()
        .route("/sandboxes", post(create).get(list))
        .route("/v2/sandboxes", post(create).get(list))
        .route("/sandboxes/{id}", get(get_one).delete(kill))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/{id}/connect", post(connect))
        .route("/v2/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/network", put(network))
        .route("/sandboxes/{id}/metrics", get(unsupported))
        .route("/sandboxes/metrics", get(unsupported))
        .route("/sandboxes/{id}/logs", get(unsupported))
        .route("/v2/sandboxes/{id}/logs", get(unsupported))
        .route("/sandboxes/{id}/fork", post(unsupported))
        .route("/sandboxes/{id}/snapshots", post(unsupported))
        .route("/sandboxes/{id}/refreshes", post(unsupported))
        // E2B's snapshot listing and its template API (snapshots are deleted there).
        .route("/snapshots", get(unsupported))
        .route("/templates", any(unsupported))
        .route("/templates/{*rest}", any(unsupported))
        .route("/v2/templates", any(unsupported))
        .route("/v2/templates/{*rest}", any(unsupported))
}

/// An E2B API error: `{"code": status, "message"}`.
#[derive(Debug)]
pub struct ApiErr(StatusCode, String);

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({"code": self.0.as_u16(), "message": self.1})),
        )
            .into_response()
    }
}

impl From<Upstream> for ApiErr {
    fn from(u: Upstream) -> Self {
        Self(u.status, u.message)
    }
}

fn bad(message: impl Into<String>) -> ApiErr {
    ApiErr(StatusCode::BAD_REQUEST, message.into())
}

pub(super) async fn no_route(req: Request) -> Response {
    ApiErr(
        StatusCode::NOT_FOUND,
        format!(
            "{} {} is not part of E2B's API as sandpit serves it (see docs/e2b.md)",
            req.method(),
            req.uri().path()
        ),
    )
    .into_response()
}

/// Calls sandpit has no counterpart for yet: a clear 501, never a silent success.
async fn unsupported(req: Request) -> Response {
    let what = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    ApiErr(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "{} {}: sandpit's E2B surface does not support `{what}` (see docs/e2b.md for what is supported)",
            req.method(),
            req.uri().path()
        ),
    )
    .into_response()
}

/// The caller's API key: `X-API-Key` (what the E2B SDKs send) or `Authorization: Bearer`.
fn api_key(h: &HeaderMap) -> Result<String, ApiErr> {
    if let Some(k) = h.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Ok(k.trim().to_owned());
    }
    if let Some(k) = h
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Ok(k.trim().to_owned());
    }
    Err(ApiErr(
        StatusCode::UNAUTHORIZED,
        "missing API key: set E2B_API_KEY to a sandpit key (and E2B_VALIDATE_API_KEY=false)".into(),
    ))
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiErr> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        &body[..]
    };
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        if at == "." {
            bad(format!("bad request body: {}", e.inner()))
        } else {
            bad(format!("bad request body: {at}: {}", e.inner()))
        }
    })
}

/// `POST /sandboxes` and `/v2/sandboxes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewSandbox {
    #[serde(rename = "templateID")]
    template_id: String,
    timeout: Option<u64>,
    auto_pause: Option<bool>,
    /// sandpit's pause keeps memory (the sandbox's processes are frozen): `false` cannot be honoured.
    auto_pause_memory: Option<bool>,
    auto_resume: Option<AutoResume>,
    /// Every sandpit sandbox is secured (envd calls need the access token).
    #[allow(dead_code)]
    secure: Option<bool>,
    #[serde(rename = "allow_internet_access")]
    allow_internet_access: Option<bool>,
    network: Option<NetworkConfig>,
    metadata: Option<BTreeMap<String, String>>,
    env_vars: Option<BTreeMap<String, String>>,
    mcp: Option<serde_json::Value>,
    iam: Option<serde_json::Value>,
    volume_mounts: Option<Vec<VolumeMount>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoResume {
    enabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeMount {
    name: String,
    path: String,
}

/// E2B's network options that sandpit's policy can express; the others are refused by name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NetworkConfig {
    allow_public_traffic: Option<bool>,
    allow_out: Option<Vec<String>>,
    deny_out: Option<Vec<String>>,
    mask_request_host: Option<serde_json::Value>,
    dns_servers: Option<serde_json::Value>,
    egress_proxy: Option<serde_json::Value>,
    https_ports: Option<serde_json::Value>,
    rules: Option<serde_json::Value>,
}

/// E2B's "every address" entries.
fn is_everything(entry: &str) -> bool {
    matches!(entry.trim(), "0.0.0.0/0" | "::/0")
}

impl NetworkConfig {
    fn refuse_unsupported(&self) -> Result<(), ApiErr> {
        let named = [
            ("maskRequestHost", self.mask_request_host.is_some()),
            ("dnsServers", self.dns_servers.is_some()),
            ("egressProxy", self.egress_proxy.is_some()),
            ("httpsPorts", self.https_ports.is_some()),
            ("rules", self.rules.is_some()),
        ];
        if let Some((name, _)) = named.iter().find(|(_, set)| *set) {
            return Err(bad(format!(
                "network.{name} is not supported by sandpit (supported: allowOut, denyOut)"
            )));
        }
        Ok(())
    }

    /// sandpit's policy: E2B's `denyOut: ["0.0.0.0/0"]` is `egress: deny`, the rest are rules.
    fn policy(&self, base: Option<Egress>) -> NetworkPolicy {
        let deny = self.deny_out.clone().unwrap_or_default();
        let deny_all = deny.iter().any(|d| is_everything(d));
        NetworkPolicy {
            egress: if deny_all { Some(Egress::Deny) } else { base },
            allow_out: self
                .allow_out
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|a| !is_everything(a))
                .collect(),
            deny_out: deny.into_iter().filter(|d| !is_everything(d)).collect(),
        }
    }
}

impl NewSandbox {
    fn to_sandpit(&self) -> Result<CreateSandboxRequest, ApiErr> {
        if self.auto_resume.as_ref().is_some_and(|a| a.enabled) {
            return Err(bad(
                "autoResume is not supported: a paused sandpit sandbox resumes on connect, or on its next \
                 preview request",
            ));
        }
        if self.auto_pause_memory == Some(false) {
            return Err(bad(
                "autoPauseMemory=false is not supported: a paused sandpit sandbox keeps its memory",
            ));
        }
        if self.mcp.as_ref().is_some_and(|m| !m.is_null()) {
            return Err(bad("mcp is not supported by sandpit"));
        }
        if self
            .iam
            .as_ref()
            .is_some_and(|i| !i.is_null() && i.as_object().is_none_or(|o| !o.is_empty()))
        {
            return Err(bad("iam is not supported by sandpit"));
        }
        let network = match (&self.network, self.allow_internet_access) {
            (None, None | Some(true)) => None,
            (None, Some(false)) => Some(NetworkPolicy {
                egress: Some(Egress::Deny),
                ..NetworkPolicy::default()
            }),
            (Some(n), internet) => {
                n.refuse_unsupported()?;
                Some(n.policy((internet == Some(false)).then_some(Egress::Deny)))
            }
        };
        let template = match self.template_id.as_str() {
            // E2B's default template is sandpit's default.
            "" | "base" => None,
            other => Some(other.to_owned()),
        };
        Ok(CreateSandboxRequest {
            template,
            env: self.env_vars.clone().unwrap_or_default(),
            metadata: self.metadata.clone().unwrap_or_default(),
            timeout: self.timeout,
            on_timeout: (self.auto_pause == Some(true)).then_some(OnTimeout::Pause),
            network,
            volumes: self
                .volume_mounts
                .iter()
                .flatten()
                .map(|v| sandpit_types::volumes::VolumeMount {
                    name: v.name.clone(),
                    path: v.path.clone(),
                    read_only: false,
                })
                .collect(),
            ..CreateSandboxRequest::default()
        })
    }
}

/// E2B's `Sandbox` (what create and connect answer).
#[derive(Debug, Serialize)]
#[allow(clippy::struct_field_names)] // E2B's wire names
#[serde(rename_all = "camelCase")]
struct Sandbox {
    #[serde(rename = "templateID")]
    template_id: String,
    #[serde(rename = "sandboxID")]
    sandbox_id: String,
    #[serde(rename = "clientID")]
    client_id: &'static str,
    alias: String,
    envd_version: &'static str,
    envd_access_token: String,
    traffic_access_token: Option<String>,
    domain: Option<String>,
}

fn sandbox(info: &SandboxInfo, token: String) -> Sandbox {
    Sandbox {
        template_id: info.template.clone(),
        sandbox_id: info.id.clone(),
        client_id: "sandpit",
        alias: info.template.clone(),
        envd_version: ENVD_VERSION,
        envd_access_token: token,
        traffic_access_token: None,
        domain: info.preview_domain.clone(),
    }
}

/// E2B's `state`: sandpit's running-like states are `running`; stopped and failed sandboxes do not exist
/// for E2B (a killed E2B sandbox is gone).
fn e2b_state(s: SandboxState) -> Option<&'static str> {
    match s {
        SandboxState::Paused => Some("paused"),
        SandboxState::Stopped | SandboxState::Failed => None,
        _ => Some("running"),
    }
}

/// How many CPUs and MiB a sandbox without limits may use: the host's (read once: a list asks per sandbox).
fn host_size() -> (u64, u64) {
    static SIZE: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    *SIZE.get_or_init(read_host_size)
}

fn read_host_size() -> (u64, u64) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    (cpus, mem_kib / 1024)
}

/// E2B's `ListedSandbox` / `SandboxDetail` (the detail adds the token and domain).
fn detail(info: &SandboxInfo, token: Option<String>) -> Option<serde_json::Value> {
    let state = e2b_state(info.state)?;
    let (cpus, mem) = host_size();
    let mut v = json!({
        "templateID": info.template,
        "sandboxID": info.id,
        "clientID": "sandpit",
        "alias": info.template,
        "startedAt": info.created_at,
        // No deadline: the far end of RFC 3339.
        "endAt": info.expires_at.clone().unwrap_or_else(|| "9999-12-31T23:59:59Z".into()),
        "cpuCount": info.cpu.map_or(cpus, |c| c.ceil() as u64),
        "memoryMB": info.memory_mb.unwrap_or(mem),
        "diskSizeMB": info.disk_mb.unwrap_or(0),
        "state": state,
        "envdVersion": ENVD_VERSION,
        "metadata": info.metadata,
        "volumeMounts": info.volumes.iter().map(|v| json!({"name": v.name, "path": v.path})).collect::<Vec<_>>(),
    });
    if let (Some(t), Some(o)) = (token, v.as_object_mut()) {
        o.insert("envdAccessToken".into(), json!(t));
        o.insert("domain".into(), json!(info.preview_domain));
        o.insert(
            "allowInternetAccess".into(),
            json!(
                info.network
                    .as_ref()
                    .is_none_or(|n| n.egress != Some(Egress::Deny))
            ),
        );
    }
    Some(v)
}

/// E2B's `metadata` list filter, `k=v&k2=v2` with each key and value escaped once more (as E2B's API
/// reads it: the whole value unescaped, split, then each part unescaped; `+` is a space).
fn metadata_filter(v: &str) -> Vec<(String, String)> {
    let unescape = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    unescape(v)
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

/// An RFC 3339 time with `Z` or a `±HH:MM` offset, as Unix milliseconds.
fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let n = s.len();
    let offset = (n > 6)
        .then(|| s.get(n - 6..))
        .flatten()
        .filter(|o| (o.starts_with('+') || o.starts_with('-')) && o.as_bytes()[3] == b':');
    let Some(o) = offset else {
        return crate::time::parse_rfc3339_ms(s);
    };
    let sign = if o.starts_with('-') { -1 } else { 1 };
    let off_ms = (o[1..3].parse::<i64>().ok()? * 60 + o[4..6].parse::<i64>().ok()?) * 60_000;
    Some(crate::time::parse_rfc3339_ms(&format!("{}Z", &s[..n - 6]))? - sign * off_ms)
}

fn sandbox_path(id: &str, rest: &str) -> String {
    if rest.is_empty() {
        format!("/v1/sandboxes/{id}")
    } else {
        format!("/v1/sandboxes/{id}/{rest}")
    }
}

/// The sandbox, or E2B's 404 for a stopped or failed one.
async fn fetch(e: &E2b, key: &str, id: &str) -> Result<SandboxInfo, ApiErr> {
    let (_, info): (_, SandboxInfo) = e
        .json(Method::GET, &sandbox_path(id, ""), key, None::<&()>)
        .await?;
    if e2b_state(info.state).is_none() {
        return Err(ApiErr(
            StatusCode::NOT_FOUND,
            format!("sandbox {id} is {}", info.state.as_str()),
        ));
    }
    Ok(info)
}

async fn create(State(e): State<E2b>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiErr> {
    let key = api_key(&headers)?;
    let req: NewSandbox = parse(&body)?;
    let create = req.to_sandpit()?;
    let (_, info): (_, SandboxInfo) = e
        .json(Method::POST, "/v1/sandboxes", &key, Some(&create))
        .await?;
    // E2B's ports are public unless `allowPublicTraffic: false`, which makes them need the traffic token.
    let public = req
        .network
        .as_ref()
        .and_then(|n| n.allow_public_traffic)
        .unwrap_or(true);
    let made = async {
        let traffic = e
            .app()
            .ports
            .expose(&info.id, crate::tokens::EVERY_PORT, public, None)
            .await
            .map_err(|err| Upstream::internal(format!("cannot open the sandbox's ports: {err}")))?;
        Ok::<_, Upstream>((e.ensure_envd_token(&info.id).await?, traffic.0))
    };
    let (token, traffic) = match made.await {
        Ok(t) => t,
        Err(err) => {
            // No sandbox the caller cannot reach is left behind.
            let _ = e
                .status(
                    Method::DELETE,
                    &sandbox_path(&info.id, ""),
                    &key,
                    None::<&()>,
                )
                .await;
            return Err(err.into());
        }
    };
    let mut answer = sandbox(&info, token);
    if !public {
        answer.traffic_access_token = Some(traffic);
    }
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `GET /v2/sandboxes?metadata=k%3Dv&state=running,paused&limit=&nextToken=` (and the older `/sandboxes`).
async fn list(
    State(e): State<E2b>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiErr> {
    let key = api_key(&headers)?;
    let mut sandpit_q = Vec::new();
    let mut states: Option<Vec<String>> = None;
    let mut limit: Option<usize> = None;
    let mut offset = 0usize;
    let mut template = None;
    let mut started_after = None;
    let mut desc = false;
    for (k, v) in form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
        match &*k {
            "metadata" => {
                for (mk, mv) in metadata_filter(&v) {
                    sandpit_q.push(format!("metadata={}", enc(&format!("{mk}={mv}"))));
                }
            }
            "state" => {
                let s = states.get_or_insert_with(Vec::new);
                for part in v.split(',').filter(|p| !p.is_empty()) {
                    if !["running", "paused"].contains(&part) {
                        return Err(bad(format!("state {part:?}: expected running or paused")));
                    }
                    s.push(part.to_owned());
                }
            }
            "limit" => {
                let n: usize = v
                    .parse()
                    .map_err(|_| bad(format!("limit {v:?} is not a number")))?;
                if n == 0 || n > 1000 {
                    return Err(bad("limit must be 1-1000"));
                }
                limit = Some(n);
            }
            "nextToken" => {
                offset = v
                    .parse()
                    .map_err(|_| bad(format!("nextToken {v:?} is not one this API gave out")))?;
            }
            "template" => template = Some(v.into_owned()),
            "startedAfter" => {
                started_after =
                    Some(parse_time(&v).ok_or_else(|| {
                        bad(format!("startedAfter {v:?} is not an RFC 3339 time"))
                    })?);
            }
            "order" => match &*v {
                "asc" => desc = false,
                "desc" => desc = true,
                other => return Err(bad(format!("order {other:?}: expected asc or desc"))),
            },
            "query" => {
                return Err(bad(
                    "the `query` parameter is not supported: use `metadata`",
                ));
            }
            other => return Err(bad(format!("unknown query parameter {other:?}"))),
        }
    }
    let uri = if sandpit_q.is_empty() {
        "/v1/sandboxes".to_owned()
    } else {
        format!("/v1/sandboxes?{}", sandpit_q.join("&"))
    };
    let (_, list): (_, SandboxList) = e.json(Method::GET, &uri, &key, None::<&()>).await?;
    let mut all: Vec<SandboxInfo> = list
        .sandboxes
        .into_iter()
        .filter(|s| {
            e2b_state(s.state).is_some_and(|st| {
                states
                    .as_ref()
                    .is_none_or(|want| want.iter().any(|w| w == st))
            })
        })
        .filter(|s| template.as_ref().is_none_or(|t| &s.template == t))
        .filter(|s| {
            started_after.is_none_or(|after| {
                crate::time::parse_rfc3339_ms(&s.created_at).is_some_and(|t| t > after)
            })
        })
        .collect();
    all.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    if desc {
        all.reverse();
    }
    let limit = limit.unwrap_or(100);
    let page: Vec<_> = all
        .iter()
        .skip(offset)
        .take(limit)
        .filter_map(|s| detail(s, None))
        .collect();
    let mut resp = Json(page).into_response();
    if offset + limit < all.len() {
        if let Ok(v) = HeaderValue::from_str(&(offset + limit).to_string()) {
            resp.headers_mut().insert("x-next-token", v);
        }
    }
    Ok(resp)
}

/// Whether `key` may be handed a sandbox's access token: a key that may use sandboxes (not a read key, not
/// a sandbox's own token, which the hand-over would replace).
fn may_hold_tokens(e: &E2b, key: &str) -> bool {
    e.app().keys.resolve(key.as_bytes()).is_some_and(|p| {
        p.sandbox.is_none()
            && (p.has(sandpit_types::keys::Scope::Admin)
                || p.has(sandpit_types::keys::Scope::Sandboxes))
    })
}

async fn get_one(
    State(e): State<E2b>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiErr> {
    let key = api_key(&headers)?;
    let info = fetch(&e, &key, &id).await?;
    // A read key sees the sandbox, not the token that would let it run commands there.
    let token = if may_hold_tokens(&e, &key) {
        Some(e.ensure_envd_token(&id).await?)
    } else {
        None
    };
    Ok(Json(detail(&info, token)).into_response())
}

async fn kill(
    State(e): State<E2b>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiErr> {
    let key = api_key(&headers)?;
    e.status(Method::DELETE, &sandbox_path(&id, ""), &key, None::<&()>)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Timeout {
    timeout: u64,
}

async fn set_timeout(
    State(e): State<E2b>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiErr> {
    let key = api_key(&headers)?;
    let t: Timeout = parse(&body)?;
    e.status(
        Method::POST,
        &sandbox_path(&id, "timeout"),
        &key,
        Some(&json!({"timeout": t.timeout})),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PauseRequest {
    memory: Option<serde_json::Value>,
    #[allow(dead_code)]
    require_healthy_guest: Option<bool>,
}

async fn pause(
    State(e): State<E2b>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiErr> {
    let key = api_key(&headers)?;
    let req: PauseRequest = parse(&body)?;
    refuse_memoryless(req.memory.as_ref())?;
    let info = fetch(&e, &key, &id).await?;
    if info.state == SandboxState::Paused {
        return Err(ApiErr(
            StatusCode::CONFLICT,
            format!("sandbox {id} is already paused"),
        ));
    }
    e.status(Method::POST, &sandbox_path(&id, "pause"), &key, None::<&()>)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// sandpit's pause always keeps memory; a request to drop it is refused.
fn refuse_memoryless(memory: Option<&serde_json::Value>) -> Result<(), ApiErr> {
    match memory {
        None | Some(serde_json::Value::Null | serde_json::Value::Bool(true)) => Ok(()),
        Some(serde_json::Value::String(s)) if s != "discard" && s != "none" => Ok(()),
        Some(other) => Err(bad(format!(
            "memory {other}: sandpit's pause always keeps the sandbox's memory"
        ))),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConnectRequest {
    timeout: Option<u64>,
    memory: Option<serde_json::Value>,
    #[allow(dead_code)]
    auto_pause: Option<bool>,
}

/// Connect (and the older resume): resumes a paused sandbox, sets its timeout when one is given, and
/// answers its `Sandbox` with the access token: 200 when it was running, 201 when it was resumed.
async fn connect(
    State(e): State<E2b>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiErr> {
    let key = api_key(&headers)?;
    if !may_hold_tokens(&e, &key) {
        return Err(ApiErr(
            StatusCode::FORBIDDEN,
            "connect hands out the sandbox's access token: it needs a key with the `sandboxes` or `admin` scope"
                .into(),
        ));
    }
    let req: ConnectRequest = parse(&body)?;
    refuse_memoryless(req.memory.as_ref())?;
    let before = fetch(&e, &key, &id).await?;
    let (_, mut info): (_, SandboxInfo) = e
        .json(
            Method::POST,
            &sandbox_path(&id, "connect"),
            &key,
            None::<&()>,
        )
        .await?;
    // A running sandbox's deadline only moves later (what the SDKs document); a resumed one gets the timeout.
    let later = |t: u64| {
        before.state == SandboxState::Paused
            || before.expires_at.as_deref().is_some_and(|end| {
                crate::time::parse_rfc3339_ms(end).is_some_and(|end| {
                    crate::time::now_ms()
                        + i64::try_from(t.saturating_mul(1000)).unwrap_or(i64::MAX)
                        > end
                })
            })
    };
    if let Some(t) = req.timeout.filter(|t| later(*t)) {
        let (_, i): (_, SandboxInfo) = e
            .json(
                Method::POST,
                &sandbox_path(&id, "timeout"),
                &key,
                Some(&json!({"timeout": t})),
            )
            .await?;
        info = i;
    }
    let token = e.ensure_envd_token(&id).await?;
    let status = if before.state == SandboxState::Paused {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(sandbox(&info, token))).into_response())
}

async fn resume(
    state: State<E2b>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiErr> {
    let key = api_key(&headers)?;
    let info = fetch(&state.0, &key, &id).await?;
    if info.state != SandboxState::Paused {
        return Err(ApiErr(
            StatusCode::CONFLICT,
            format!("sandbox {id} is not paused"),
        ));
    }
    connect(state, headers, Path(id), body).await
}

/// `PUT /sandboxes/{id}/network`: the new egress policy.
async fn network(
    State(e): State<E2b>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiErr> {
    let key = api_key(&headers)?;
    let n: NetworkConfig = parse(&body)?;
    n.refuse_unsupported()?;
    let policy = n.policy(Some(Egress::Allow));
    e.status(
        Method::PUT,
        &sandbox_path(&id, "network"),
        &key,
        Some(&policy),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(v: serde_json::Value) -> Result<CreateSandboxRequest, String> {
        let n: NewSandbox = serde_json::from_value(v).map_err(|e| e.to_string())?;
        n.to_sandpit().map_err(|e| e.1)
    }

    #[test]
    fn create_maps_onto_sandpit() {
        let c = new(
            json!({"templateID": "base", "timeout": 60, "autoPause": true,
            "metadata": {"a": "b"}, "envVars": {"X": "1"}, "allow_internet_access": false}),
        )
        .unwrap();
        assert_eq!(c.template, None);
        assert_eq!(c.timeout, Some(60));
        assert_eq!(c.on_timeout, Some(OnTimeout::Pause));
        assert_eq!(c.env.get("X").map(String::as_str), Some("1"));
        assert_eq!(c.network.unwrap().egress, Some(Egress::Deny));
        let c = new(json!({"templateID": "py", "network": {"denyOut": ["0.0.0.0/0"], "allowOut": ["10.0.0.1"]}}))
            .unwrap();
        assert_eq!(c.template.as_deref(), Some("py"));
        let n = c.network.unwrap();
        assert_eq!(
            (n.egress, n.allow_out),
            (Some(Egress::Deny), vec!["10.0.0.1".to_owned()])
        );
    }

    #[test]
    fn metadata_filters_are_unescaped_as_e2b_does() {
        // Python: urlencode({"userId": "ada@example.com"}); JS: each part encoded, then the whole.
        assert_eq!(
            metadata_filter("userId=ada%40example.com"),
            vec![("userId".into(), "ada@example.com".into())]
        );
        assert_eq!(
            metadata_filter("userId%3Dada%2540example.com%26n%3D1"),
            vec![
                ("userId".into(), "ada@example.com".into()),
                ("n".into(), "1".into())
            ]
        );
        assert_eq!(metadata_filter("k=a+b"), vec![("k".into(), "a b".into())]);
    }

    #[test]
    fn times_with_offsets_parse() {
        let z = parse_time("2026-12-04T10:00:00Z").unwrap();
        assert_eq!(parse_time("2026-12-04T10:00:00+00:00"), Some(z));
        assert_eq!(parse_time("2026-12-04T11:00:00.000+01:00"), Some(z));
        assert_eq!(parse_time("2026-12-04T09:00:00-01:00"), Some(z));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn what_sandpit_lacks_is_refused_by_name() {
        for (body, word) in [
            (
                json!({"templateID": "base", "autoResume": {"enabled": true}}),
                "autoResume",
            ),
            (
                json!({"templateID": "base", "network": {"dnsServers": ["1.1.1.1"]}}),
                "dnsServers",
            ),
            (json!({"templateID": "base", "mcp": {"x": {}}}), "mcp"),
            (json!({"templateID": "base", "surprise": 1}), "surprise"),
        ] {
            let e = new(body).unwrap_err();
            assert!(e.contains(word), "{e}");
        }
    }
}
