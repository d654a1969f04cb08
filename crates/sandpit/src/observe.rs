//! Watching sandboxes: lifecycle events (`client.events()`, [`Sandbox::events`]), resource samples
//! ([`Sandbox::metrics`]) and webhooks (`client.webhooks()`, admin keys), with [`verify_webhook`] for
//! the receiving end.
//!
//! The live streams ([`Events::stream`], [`Sandbox::events_stream`], [`Sandbox::metrics_stream`]) resume
//! by themselves after a dropped connection: event streams from the last event delivered (so none is
//! missed or repeated), the metrics stream with the next sample.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use reqwest::Method;
pub use sandpit_types::observe::{
    CreateWebhookRequest, DeliveryList, EventList, EventType, LifecycleEvent, MetricSample,
    Webhook, WebhookDelivery, WebhookList,
};
use sandpit_types::sse::SseParser;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::client::{Client, enc};
use crate::error::{Error, Result};
use crate::sandbox::Sandbox;
use crate::sse::{MAX_RETRIES, SILENCE, backoff};

/// Which events [`Events::list`] (or [`Sandbox::events`]) reads; all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Only this sandbox's (ignored by [`Sandbox::events`], which is its own sandbox's).
    pub sandbox: Option<String>,
    /// Only these types (`sandbox.paused`, …); all when empty.
    pub types: Vec<String>,
    /// At or after this time: RFC 3339 or milliseconds since the epoch.
    pub since: Option<String>,
    /// After this event id: the [`EventList::next_after`] of the previous page.
    pub after: Option<u64>,
    /// At most this many (the daemon's default 100, at most 1000).
    pub limit: Option<usize>,
}

impl EventQuery {
    fn params(&self, stream: bool) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if let Some(v) = &self.sandbox {
            p.push(("sandbox", v.clone()));
        }
        if !self.types.is_empty() {
            p.push(("type", self.types.join(",")));
        }
        if let Some(v) = self.after {
            p.push(("after", v.to_string()));
        }
        if !stream {
            if let Some(v) = &self.since {
                p.push(("since", v.clone()));
            }
            if let Some(v) = self.limit {
                p.push(("limit", v.to_string()));
            }
        }
        p
    }
}

/// `client.events()`.
#[derive(Debug, Clone)]
pub struct Events {
    client: Client,
}

/// `client.webhooks()` (admin keys).
#[derive(Debug, Clone)]
pub struct Webhooks {
    client: Client,
}

impl Client {
    /// Lifecycle events of this key's tenant's sandboxes (every tenant's with an admin key).
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// use futures_util::StreamExt;
    /// let mut live = client.events().stream(&sandpit::EventQuery::default());
    /// while let Some(e) = live.next().await {
    ///     let e = e?;
    ///     println!("{} {} {}", e.at, e.kind, e.sandbox_id);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> Events {
        Events {
            client: self.clone(),
        }
    }

    /// Webhooks: lifecycle events `POST`ed, signed, to a URL (needs an `admin` key).
    pub fn webhooks(&self) -> Webhooks {
        Webhooks {
            client: self.clone(),
        }
    }
}

impl Events {
    /// `GET /v1/events`: one page, oldest first; `next_after` is set when there are more.
    pub async fn list(&self, q: &EventQuery) -> Result<EventList> {
        let rb = self
            .client
            .request(Method::GET, "/v1/events")
            .query(&q.params(false));
        self.client.send_json(rb).await
    }

    /// `GET /v1/events/stream`: events as they happen (with `after`, the stored ones after it first).
    pub fn stream(&self, q: &EventQuery) -> SseStream<LifecycleEvent> {
        SseStream::open(
            self.client.clone(),
            "/v1/events/stream".into(),
            q.params(true),
            true,
        )
    }
}

impl Sandbox {
    /// `GET /v1/sandboxes/{id}/events`: this sandbox's lifecycle events, oldest first.
    pub async fn events(&self, q: &EventQuery) -> Result<EventList> {
        let q = EventQuery {
            sandbox: None,
            ..q.clone()
        };
        let path = format!("/v1/sandboxes/{}/events", enc(self.id()));
        let rb = self
            .client()
            .request(Method::GET, &path)
            .query(&q.params(false));
        self.client().send_json(rb).await
    }

    /// `GET /v1/sandboxes/{id}/events/stream`: this sandbox's events as they happen; ends after
    /// `sandbox.killed` or when the sandbox is deleted.
    pub fn events_stream(&self, q: &EventQuery) -> SseStream<LifecycleEvent> {
        let q = EventQuery {
            sandbox: None,
            ..q.clone()
        };
        SseStream::open(
            self.client().clone(),
            format!("/v1/sandboxes/{}/events/stream", enc(self.id())),
            q.params(true),
            true,
        )
    }

    /// `GET /v1/sandboxes/{id}/metrics`: resource samples between `start` and `end` (RFC 3339 or ms
    /// since the epoch; both optional), oldest first.
    pub async fn metrics(
        &self,
        start: Option<&str>,
        end: Option<&str>,
    ) -> Result<Vec<MetricSample>> {
        let mut params = Vec::new();
        if let Some(v) = start {
            params.push(("start", v.to_owned()));
        }
        if let Some(v) = end {
            params.push(("end", v.to_owned()));
        }
        let path = format!("/v1/sandboxes/{}/metrics", enc(self.id()));
        let rb = self.client().request(Method::GET, &path).query(&params);
        self.client().send_json(rb).await
    }

    /// `GET /v1/sandboxes/{id}/metrics/stream`: each sample as it is taken (the latest one first); ends
    /// when the sandbox is deleted.
    pub fn metrics_stream(&self) -> SseStream<MetricSample> {
        SseStream::open(
            self.client().clone(),
            format!("/v1/sandboxes/{}/metrics/stream", enc(self.id())),
            Vec::new(),
            false,
        )
    }
}

impl Webhooks {
    /// `POST /v1/webhooks`: `events` are types (`sandbox.created`, …) or `["*"]`; `secret` (8-256
    /// characters) signs each delivery and is never shown again.
    pub async fn create(&self, req: &CreateWebhookRequest) -> Result<Webhook> {
        let rb = self.client.request(Method::POST, "/v1/webhooks").json(req);
        self.client.send_json(rb).await
    }

    pub async fn list(&self) -> Result<Vec<Webhook>> {
        let rb = self.client.request(Method::GET, "/v1/webhooks");
        Ok(self.client.send_json::<WebhookList>(rb).await?.webhooks)
    }

    pub async fn get(&self, id: &str) -> Result<Webhook> {
        let rb = self
            .client
            .request(Method::GET, &format!("/v1/webhooks/{}", enc(id)));
        self.client.send_json(rb).await
    }

    pub async fn delete(&self, id: &str) -> Result<()> {
        let rb = self
            .client
            .request(Method::DELETE, &format!("/v1/webhooks/{}", enc(id)));
        self.client.send_empty(rb).await
    }

    /// The delivery attempts, newest first (one per attempt; `id` names the delivery).
    pub async fn deliveries(&self, id: &str, limit: Option<usize>) -> Result<Vec<WebhookDelivery>> {
        let mut rb = self
            .client
            .request(Method::GET, &format!("/v1/webhooks/{}/deliveries", enc(id)));
        if let Some(n) = limit {
            rb = rb.query(&[("limit", n.to_string())]);
        }
        Ok(self.client.send_json::<DeliveryList>(rb).await?.deliveries)
    }
}

/// Checks a webhook delivery as its receiver gets it: `signature` is the `Sandpit-Signature` header,
/// `timestamp` the `Sandpit-Timestamp` header, `body` the raw body. True when the signature is the
/// daemon's with `secret` and the timestamp is within `tolerance_s` of `now_s` (Unix seconds).
pub fn verify_webhook(
    secret: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> bool {
    let Ok(ts) = timestamp.trim().parse::<i64>() else {
        return false;
    };
    if (now_s - ts).abs() > tolerance_s {
        return false;
    }
    let Some(want) = signature.trim().strip_prefix("v1=").and_then(decode_hex) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut msg = Vec::with_capacity(body.len() + 12);
    msg.extend_from_slice(timestamp.trim().as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(body);
    // Constant-time comparison.
    ring::hmac::verify(&key, &msg, &want).is_ok()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A live SSE stream of JSON items, reconnecting by itself; ends when the daemon ends it, or with one
/// error when reconnecting keeps failing. Dropping it closes the connection.
#[derive(Debug)]
pub struct SseStream<T> {
    rx: mpsc::Receiver<Result<T>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T> Drop for SseStream<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<T> Stream for SseStream<T> {
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl<T: DeserializeOwned + Send + 'static> SseStream<T> {
    /// `resume`: reconnect with `after` = the last event id delivered.
    fn open(
        client: Client,
        path: String,
        params: Vec<(&'static str, String)>,
        resume: bool,
    ) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(pump(client, path, params, resume, tx));
        Self { rx, task }
    }
}

async fn pump<T: DeserializeOwned>(
    client: Client,
    path: String,
    mut params: Vec<(&'static str, String)>,
    resume: bool,
    tx: mpsc::Sender<Result<T>>,
) {
    let mut failures = 0u32;
    let mut last_err: Option<Error> = None;
    loop {
        if failures > 0 {
            if failures > MAX_RETRIES {
                let why = last_err.map_or_else(String::new, |e| format!(": {e}"));
                let _ = tx
                    .send(Err(Error::cut(format!(
                        "the stream {path} was cut and could not be resumed after {MAX_RETRIES} attempts{why}"
                    ))))
                    .await;
                return;
            }
            tokio::time::sleep(backoff(failures - 1)).await;
        }
        let rb = client
            .request(Method::GET, &path)
            .query(&params)
            .header("accept", "text/event-stream");
        let resp = match client.send(rb).await {
            Ok(r) => r,
            Err(e) if e.is_transient() => {
                failures += 1;
                last_err = Some(e);
                continue;
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let mut body = resp.bytes_stream();
        let mut parser = SseParser::default();
        loop {
            let chunk = tokio::select! {
                c = tokio::time::timeout(SILENCE, body.next()) => c,
                () = tx.closed() => return,
            };
            let chunk = match chunk {
                Ok(Some(Ok(c))) => c,
                Ok(Some(Err(e))) => {
                    last_err = Some(e.into());
                    failures += 1;
                    break;
                }
                // The daemon ended the stream: it is over.
                Ok(None) => return,
                Err(_) => {
                    last_err = Some(Error::cut(format!(
                        "no data (not even a keepalive) for {} s",
                        SILENCE.as_secs()
                    )));
                    failures += 1;
                    break;
                }
            };
            for raw in parser.push(&chunk) {
                if raw.data.is_empty() {
                    continue;
                }
                let item = serde_json::from_str::<T>(&raw.data)
                    .map_err(|e| Error::Protocol(format!("{e} in {}", raw.data)));
                if resume {
                    if let Some(id) = raw.id.as_deref() {
                        params.retain(|(k, _)| *k != "after");
                        params.push(("after", id.to_owned()));
                    }
                }
                failures = 0;
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_verifies_with_its_secret_and_fresh_timestamp_only() {
        // Python: hmac.new(b"s3cret-key", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        let sig = "v1=8f205229f41e37cd3099c55f73d92a9a4d4c67bd7ae337b802d1723bd83a2a50";
        let body = br#"{"a":1}"#;
        assert!(verify_webhook(
            "s3cret-key",
            "1700000000",
            sig,
            body,
            1_700_000_100,
            300
        ));
        assert!(!verify_webhook(
            "other-key!",
            "1700000000",
            sig,
            body,
            1_700_000_100,
            300
        ));
        assert!(!verify_webhook(
            "s3cret-key",
            "1700000000",
            sig,
            br#"{"a":2}"#,
            1_700_000_100,
            300
        ));
        assert!(!verify_webhook(
            "s3cret-key",
            "1700000000",
            sig,
            body,
            1_700_001_000,
            300
        ));
        assert!(!verify_webhook(
            "s3cret-key",
            "1700000001",
            sig,
            body,
            1_700_000_100,
            300
        ));
        assert!(!verify_webhook(
            "s3cret-key",
            "1700000000",
            "v1=zz",
            body,
            1_700_000_100,
            300
        ));
    }
}
