//! What one watches sandboxes by: lifecycle events (`/v1/events`, `/v1/sandboxes/{id}/events`, and their
//! SSE streams), per-sandbox metrics (`/v1/sandboxes/{id}/metrics` and its stream) and webhooks
//! (`/v1/webhooks`, admin keys: the check is in `api::check_scope`). The rules live in
//! [`crate::events`], [`crate::usage`] and [`crate::webhooks`]; these handlers parse and translate.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use sandpit_types::ErrorBody;
use sandpit_types::keys::Scope;
use sandpit_types::observe::{
    CreateWebhookRequest, DeliveryList, EVENTS_DEFAULT_LIMIT, EVENTS_MAX_LIMIT, EventList,
    EventType, LifecycleEvent, MetricSample, Webhook, WebhookList,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::AppState;
use super::audit::{parse_limit, parse_since};
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::auth::Principal;
use crate::store::EventQuery;
use crate::webhooks::WebhookError;

/// How often an idle stream sends a comment line, so that proxies and clients see it is alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often a per-sandbox stream checks that its sandbox still exists.
const EXISTS_CHECK: Duration = Duration::from_secs(2);

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Invalid(m) => Self::InvalidArgument(m),
            WebhookError::NotFound(_) => Self::NotFound(e.to_string()),
            WebhookError::Full(m) => Self::ResourceExhausted(m),
            WebhookError::Store(s) => s.into(),
        }
    }
}

fn bad(v: &str, name: &str, what: &str) -> ApiError {
    ApiError::InvalidArgument(format!("{name}={v:?} {what}"))
}

fn parse_after(v: &str) -> Result<i64, ApiError> {
    v.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| bad(v, "after", "is not an event id"))
}

/// Parses an event query. `per_sandbox`: the sandbox is the path's (no `sandbox` parameter); `stream`:
/// no `since` or `limit` (a stream reads on from `after`).
fn event_query(
    query: Vec<(String, String)>,
    per_sandbox: bool,
    stream: bool,
) -> Result<EventQuery, ApiError> {
    let mut q = EventQuery {
        limit: EVENTS_DEFAULT_LIMIT,
        ..EventQuery::default()
    };
    for (k, v) in query {
        match k.as_str() {
            "sandbox" if !per_sandbox => q.sandbox = Some(v),
            "type" => {
                for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    let t = t.parse::<EventType>().map_err(ApiError::InvalidArgument)?;
                    q.kinds.push(t.as_str().to_owned());
                }
            }
            "after" => q.after_id = Some(parse_after(&v)?),
            "since" if !stream => q.since_ms = Some(parse_since(&v)?),
            "limit" if !stream => {
                q.limit = parse_limit(&v, EVENTS_MAX_LIMIT)?;
            }
            other => {
                let known = match (per_sandbox, stream) {
                    (false, false) => "sandbox, type, since, after or limit",
                    (true, false) => "type, since, after or limit",
                    (false, true) => "sandbox, type or after",
                    (true, true) => "type or after",
                };
                return Err(ApiError::InvalidArgument(format!(
                    "unknown query parameter {other:?}: use {known}"
                )));
            }
        }
    }
    Ok(q)
}

/// An admin key sees every tenant's events; any other key its own tenant's.
fn tenant_filter(who: &Principal) -> Option<String> {
    (!who.has(Scope::Admin)).then(|| who.tenant.clone())
}

/// 404 for a sandbox the daemon does not know (the auth middleware already refused other tenants').
fn known(s: &AppState, id: &str) -> Result<(), ApiError> {
    match s.engine.tenant_of(id) {
        Some(_) => Ok(()),
        None => Err(crate::engine::EngineError::NotFound(id.to_owned()).into()),
    }
}

/// Lifecycle events, oldest first: `sandbox.created`, `sandbox.paused`, `sandbox.resumed`,
/// `sandbox.timeout_extended`, `sandbox.timed_out`, `sandbox.killed`, `sandbox.failed`,
/// `sandbox.unhealthy`, `sandbox.snapshot_created`, `sandbox.forked`. A key sees its tenant's sandboxes'
/// events (an admin key every tenant's); deleted sandboxes' events stay for `events_retention_days`.
#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(
        ("sandbox" = Option<String>, Query, description = "Only this sandbox's events"),
        ("type" = Option<String>, Query, description = "Only events of this type (a comma-separated list for several)"),
        ("since" = Option<String>, Query, description = "RFC 3339 time or ms since the epoch: events at or after it"),
        ("after" = Option<u64>, Query, description = "Events with a larger id (the `next_after` of the previous page)"),
        ("limit" = Option<usize>, Query, description = "At most this many (default 100, at most 1000)")),
    responses(
        (status = 200, description = "The events, oldest first", body = EventList),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "A sandbox access token (it reads its own sandbox's events only)", body = ErrorBody)))]
pub async fn list_events(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    ApiQuery(query): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<EventList>, ApiError> {
    let mut q = event_query(query, false, false)?;
    q.tenant = tenant_filter(&who);
    Ok(Json(s.events.read(q).await?))
}

/// One sandbox's lifecycle events, oldest first (a sandbox's access token may read them). 404 once the
/// sandbox is deleted: its history stays readable with `GET /v1/events?sandbox=ID`.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/events", tag = "events",
    params(
        ("id" = String, Path, description = "Sandbox id"),
        ("type" = Option<String>, Query, description = "Only events of this type (a comma-separated list for several)"),
        ("since" = Option<String>, Query, description = "RFC 3339 time or ms since the epoch"),
        ("after" = Option<u64>, Query, description = "Events with a larger id"),
        ("limit" = Option<usize>, Query, description = "At most this many (default 100, at most 1000)")),
    responses(
        (status = 200, description = "The events, oldest first", body = EventList),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn sandbox_events(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<EventList>, ApiError> {
    known(&s, &id)?;
    let mut q = event_query(query, true, false)?;
    q.sandbox = Some(id);
    Ok(Json(s.events.read(q).await?))
}

/// The last event id given by `Last-Event-ID`, when a reconnecting `EventSource` sends one.
fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    headers
        .get("last-event-id")
        .map(|v| parse_after(v.to_str().unwrap_or("-")))
        .transpose()
}

fn sse_event(e: &LifecycleEvent) -> Event {
    Event::default()
        .id(e.id.to_string())
        .event(e.kind.clone())
        .data(serde_json::to_string(e).unwrap_or_default())
}

/// Lifecycle events as they happen (SSE: `id`, `event` = the type, `data` = the event). With `after`
/// (or `Last-Event-ID`) the stored events after that id come first, so a reconnecting client misses
/// nothing; without, only new events.
#[utoipa::path(get, path = "/v1/events/stream", tag = "events",
    params(
        ("sandbox" = Option<String>, Query, description = "Only this sandbox's events"),
        ("type" = Option<String>, Query, description = "Only events of this type (a comma-separated list for several)"),
        ("after" = Option<u64>, Query, description = "Replay stored events after this id first (or send `Last-Event-ID`)")),
    responses(
        (status = 200, description = "`text/event-stream` of events", content_type = "text/event-stream", body = String),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody)))]
pub async fn stream_events(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<Vec<(String, String)>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let mut q = event_query(query, false, true)?;
    q.tenant = tenant_filter(&who);
    if q.after_id.is_none() {
        q.after_id = last_event_id(&headers)?;
    }
    Ok(event_stream(s, q, None))
}

/// One sandbox's lifecycle events as they happen (SSE, as `/v1/events/stream`); the stream ends after
/// `sandbox.killed`, or when the sandbox is deleted.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/events/stream", tag = "events",
    params(
        ("id" = String, Path, description = "Sandbox id"),
        ("type" = Option<String>, Query, description = "Only events of this type (a comma-separated list for several)"),
        ("after" = Option<u64>, Query, description = "Replay stored events after this id first (or send `Last-Event-ID`)")),
    responses(
        (status = 200, description = "`text/event-stream` of events", content_type = "text/event-stream", body = String),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn stream_sandbox_events(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<Vec<(String, String)>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    known(&s, &id)?;
    let mut q = event_query(query, true, true)?;
    q.sandbox = Some(id.clone());
    if q.after_id.is_none() {
        q.after_id = last_event_id(&headers)?;
    }
    Ok(event_stream(s, q, Some(id)))
}

/// Replays stored events after `q.after_id` (when given), then follows live ones; reads the store
/// again whenever the live feed overflows, so nothing is skipped. `sandbox`: end with it.
fn event_stream(
    s: AppState,
    mut q: EventQuery,
    sandbox: Option<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(64);
    let mut live = s.events.subscribe();
    let replay = q.after_id.is_some();
    q.after_id = Some(q.after_id.unwrap_or_else(|| s.events.last_stored()));
    q.since_ms = None;
    q.limit = EVENTS_MAX_LIMIT;
    tokio::spawn(async move {
        // Sends `e` when it passes the filter; false when the stream is over (client gone, or the
        // sandbox's end reached).
        let filter = q.clone();
        let send = |e: &LifecycleEvent| {
            let tx = tx.clone();
            let wanted = crate::events::matches(e, &filter);
            let ends = sandbox.is_some() && e.kind == EventType::Killed.as_str();
            let ev = sse_event(e);
            async move {
                if wanted && tx.send(Ok(ev)).await.is_err() {
                    return false;
                }
                !ends
            }
        };
        let mut catch_up = replay;
        // One timer for the whole stream: a sleep made anew in each turn would never fire while other
        // sandboxes' events keep arriving (found by the Python SDK's tests for the metrics stream).
        let mut exists = tokio::time::interval(EXISTS_CHECK);
        exists.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if catch_up {
                // Read the store from the last id seen until it has nothing newer.
                loop {
                    let Ok(page) = s.events.read(q.clone()).await else {
                        return;
                    };
                    for e in &page.events {
                        q.after_id = Some(i64::try_from(e.id).unwrap_or(i64::MAX));
                        if !send(e).await {
                            return;
                        }
                    }
                    if page.next_after.is_none() {
                        break;
                    }
                }
                catch_up = false;
            }
            let next = tokio::select! {
                r = live.recv() => r,
                () = tx.closed() => return,
                _ = exists.tick(), if sandbox.is_some() => {
                    if sandbox.as_deref().is_some_and(|id| s.engine.tenant_of(id).is_none()) {
                        return;
                    }
                    continue;
                }
            };
            match next {
                Ok(e) => {
                    let id = i64::try_from(e.id).unwrap_or(i64::MAX);
                    if q.after_id.is_some_and(|a| id <= a) {
                        continue;
                    }
                    q.after_id = Some(id);
                    if !send(&e).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => catch_up = true,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
}

/// A time bound of `GET …/metrics`.
fn parse_bound(v: &str, name: &str) -> Result<i64, ApiError> {
    parse_since(v).map_err(|_| {
        bad(
            v,
            name,
            "is neither an RFC 3339 time (2026-12-04T10:00:00Z) nor milliseconds since the epoch",
        )
    })
}

/// The sandbox's resource samples, oldest first: taken every `metrics_interval_ms` while it runs, kept
/// for `metrics_window_secs` (in memory: a daemon restart starts a new series).
#[utoipa::path(get, path = "/v1/sandboxes/{id}/metrics", tag = "metrics",
    params(
        ("id" = String, Path, description = "Sandbox id"),
        ("start" = Option<String>, Query, description = "RFC 3339 time or ms since the epoch: samples at or after it"),
        ("end" = Option<String>, Query, description = "RFC 3339 time or ms since the epoch: samples at or before it")),
    responses(
        (status = 200, description = "The samples, oldest first", body = Vec<MetricSample>),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn sandbox_metrics(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<Vec<MetricSample>>, ApiError> {
    known(&s, &id)?;
    let (mut start, mut end) = (None, None);
    for (k, v) in query {
        match k.as_str() {
            "start" => start = Some(parse_bound(&v, "start")?),
            "end" => end = Some(parse_bound(&v, "end")?),
            other => {
                return Err(ApiError::InvalidArgument(format!(
                    "unknown query parameter {other:?}: use start or end"
                )));
            }
        }
    }
    if let (Some(a), Some(b)) = (start, end) {
        if a > b {
            return Err(ApiError::InvalidArgument(format!(
                "start ({a} ms) is after end ({b} ms)"
            )));
        }
    }
    Ok(Json(s.sampler.range(&id, start, end)))
}

/// The sandbox's resource samples as they are taken (SSE: `event: metrics`, `data` = a sample); the
/// latest one already taken comes first. Ends when the sandbox is deleted.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/metrics/stream", tag = "metrics",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "`text/event-stream` of samples", content_type = "text/event-stream", body = String),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn stream_sandbox_metrics(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<Vec<(String, String)>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    known(&s, &id)?;
    if let Some((k, _)) = query.first() {
        return Err(ApiError::InvalidArgument(format!(
            "unknown query parameter {k:?}: this stream takes none"
        )));
    }
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(16);
    let mut live = s.sampler.subscribe();
    let sample = |m: &MetricSample| {
        Ok(Event::default()
            .event("metrics")
            .data(serde_json::to_string(m).unwrap_or_default()))
    };
    if let Some(m) = s.sampler.latest(&id) {
        let _ = tx.try_send(sample(&m));
    }
    let check = (s.sampler.interval() * 2).max(EXISTS_CHECK);
    tokio::spawn(async move {
        // One timer for the whole stream: a sleep made anew in each turn never fired while other
        // sandboxes' samples kept arriving, and the stream outlived its deleted sandbox (regression:
        // the Python SDK's `test_the_stream_sends_samples_and_ends_with_the_sandbox`).
        let mut exists = tokio::time::interval_at(tokio::time::Instant::now() + check, check);
        exists.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = tokio::select! {
                r = live.recv() => r,
                () = tx.closed() => return,
                _ = exists.tick() => {
                    if s.engine.tenant_of(&id).is_none() {
                        return;
                    }
                    continue;
                }
            };
            match next {
                Ok((sb, m)) if *sb == *id => {
                    if tx.send(sample(&m)).await.is_err() {
                        return;
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")))
}

/// Registers a webhook: every event of the listed types (or `["*"]`) is `POST`ed to `url`, signed with
/// `secret` (`Sandpit-Signature: v1=<hex HMAC-SHA256(secret, "<Sandpit-Timestamp>.<body>")>`), retried
/// with backoff. Admin keys only: the daemon makes the requests.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhookRequest,
    responses(
        (status = 201, description = "Registered (the secret is never shown again)", body = Webhook),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "Not an `admin` key", body = ErrorBody),
        (status = 429, description = "The daemon holds the most webhooks it keeps (100)", body = ErrorBody)))]
pub async fn create_webhook(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<CreateWebhookRequest>,
) -> Result<(StatusCode, Json<Webhook>), ApiError> {
    Ok((StatusCode::CREATED, Json(s.webhooks.create(req).await?)))
}

/// Every webhook (admin keys only).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses(
        (status = 200, description = "The webhooks", body = WebhookList),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "Not an `admin` key", body = ErrorBody)))]
pub async fn list_webhooks(State(s): State<AppState>) -> Json<WebhookList> {
    Json(WebhookList {
        webhooks: s.webhooks.list(),
    })
}

/// One webhook (admin keys only).
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id (`wh_…`)")),
    responses(
        (status = 200, description = "The webhook", body = Webhook),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "Not an `admin` key", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody)))]
pub async fn get_webhook(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Webhook>, ApiError> {
    Ok(Json(s.webhooks.get(&id)?))
}

/// Deletes a webhook and its delivery log; its pending retries stop (admin keys only).
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id (`wh_…`)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "Not an `admin` key", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody)))]
pub async fn delete_webhook(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    s.webhooks.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A webhook's delivery attempts, newest first (one row per attempt; `id` names the delivery).
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(
        ("id" = String, Path, description = "Webhook id (`wh_…`)"),
        ("limit" = Option<usize>, Query, description = "At most this many (default 100, at most 1000)")),
    responses(
        (status = 200, description = "The attempts, newest first", body = DeliveryList),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "Not an `admin` key", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody)))]
pub async fn webhook_deliveries(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<DeliveryList>, ApiError> {
    let mut limit = EVENTS_DEFAULT_LIMIT;
    for (k, v) in query {
        match k.as_str() {
            "limit" => {
                limit = parse_limit(&v, EVENTS_MAX_LIMIT)?;
            }
            other => {
                return Err(ApiError::InvalidArgument(format!(
                    "unknown query parameter {other:?}: use limit"
                )));
            }
        }
    }
    Ok(Json(s.webhooks.deliveries(&id, limit).await?))
}
