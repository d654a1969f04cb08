//! Webhooks: lifecycle events ([`crate::events`]) delivered as signed HTTP `POST`s to URLs an admin
//! registered (`/v1/webhooks`).
//!
//! Owns the registry (the store's `webhooks` table, mirrored in memory), the delivery of each stored event
//! to every webhook that wants it, and the delivery log (`webhook_deliveries`: one row per attempt).
//! Deliveries run on their own tasks, never on a request's path: a slow or dead receiver costs the API
//! nothing but a sleeping task. A failed attempt is retried with exponential backoff up to
//! `webhook_max_attempts`; a delivery still being retried when the daemon stops is resumed at the next
//! start (its last logged attempt says `retrying`). Deliveries may arrive out of order: receivers order
//! by the event's `id`.
//!
//! Signature: `Sandpit-Signature: v1=<hex HMAC-SHA256(secret, "<Sandpit-Timestamp>.<body>")>`, so a
//! receiver checks both the body and its freshness (the timestamp is signed too).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use ring::hmac;
use sandpit_types::observe::{
    self, CreateWebhookRequest, DeliveryList, LifecycleEvent, Webhook, WebhookDelivery,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::store::{DeliveryRow, EventQuery, Store, StoreError, WebhookRow};
use crate::time::{now_ms, rfc3339};

/// Deliveries in flight at once, over every webhook.
const MAX_IN_FLIGHT: usize = 64;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// The longest error text kept in the delivery log.
const MAX_ERROR: usize = 512;

/// How deliveries are retried (the daemon's config).
#[derive(Debug, Clone, Copy)]
pub struct WebhookConfig {
    pub max_attempts: u32,
    /// The wait after the first failed attempt; doubled after each further one.
    pub backoff: Duration,
    /// One attempt's limit: connect, send, and the receiver's answer.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Invalid(String),
    #[error("no webhook {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Full(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
struct Hook {
    row: WebhookRow,
    events: Vec<String>,
}

impl Hook {
    fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e == "*" || e == kind)
    }

    fn info(&self) -> Webhook {
        Webhook {
            id: self.row.id.clone(),
            url: self.row.url.clone(),
            events: self.events.clone(),
            description: self.row.description.clone(),
            created_at: rfc3339(self.row.created_ms),
        }
    }
}

/// The registry and its deliveries.
#[derive(Debug)]
pub struct Webhooks {
    store: Store,
    cfg: WebhookConfig,
    hooks: RwLock<Vec<Hook>>,
    in_flight: Semaphore,
    tls: Arc<tokio_rustls::rustls::ClientConfig>,
}

impl Webhooks {
    /// Loads the registry, resumes deliveries a stop interrupted, and delivers every event `events`
    /// stores from now on until `stop` turns true.
    pub async fn start(
        store: Store,
        cfg: WebhookConfig,
        events: &crate::events::Events,
        stop: watch::Receiver<bool>,
    ) -> Result<(Arc<Self>, tokio::task::JoinHandle<()>), StoreError> {
        let hooks = store
            .webhooks_all()
            .await?
            .into_iter()
            .map(|row| Hook {
                events: serde_json::from_str(&row.events).unwrap_or_default(),
                row,
            })
            .collect();
        let roots: tokio_rustls::rustls::RootCertStore =
            webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect();
        let tls = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Task(format!("TLS client set-up: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let this = Arc::new(Self {
            store,
            cfg,
            hooks: RwLock::new(hooks),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
            tls: Arc::new(tls),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        events.set_hooks(tx);
        this.resume_pending().await;
        let task = tokio::spawn(this.clone().dispatch(rx, stop));
        Ok((this, task))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Hook>> {
        self.hooks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn find(&self, id: &str) -> Option<Hook> {
        self.read().iter().find(|h| h.row.id == id).cloned()
    }

    pub async fn create(&self, req: CreateWebhookRequest) -> Result<Webhook, WebhookError> {
        req.validate().map_err(WebhookError::Invalid)?;
        if self.read().len() >= observe::MAX_WEBHOOKS {
            return Err(WebhookError::Full(format!(
                "this daemon has {} webhooks, the most it keeps: delete one first",
                observe::MAX_WEBHOOKS
            )));
        }
        let mut events = req.events;
        events.sort();
        events.dedup();
        let row = WebhookRow {
            id: format!("wh_{}", crate::auth::random_hex(8)),
            url: req.url,
            events: serde_json::to_string(&events).unwrap_or_default(),
            secret: req.secret,
            description: req.description,
            created_ms: now_ms(),
        };
        self.store.webhook_put(row.clone()).await?;
        let hook = Hook { row, events };
        let info = hook.info();
        self.hooks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(hook);
        tracing::info!(webhook = %info.id, url = %info.url, "webhook added");
        Ok(info)
    }

    pub fn list(&self) -> Vec<Webhook> {
        self.read().iter().map(Hook::info).collect()
    }

    pub fn get(&self, id: &str) -> Result<Webhook, WebhookError> {
        self.find(id)
            .map(|h| h.info())
            .ok_or_else(|| WebhookError::NotFound(id.to_owned()))
    }

    /// Forgets a webhook and its delivery log; its pending retries stop.
    pub async fn delete(&self, id: &str) -> Result<(), WebhookError> {
        if self.find(id).is_none() {
            return Err(WebhookError::NotFound(id.to_owned()));
        }
        self.hooks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|h| h.row.id != id);
        self.store.webhook_delete(id).await?;
        tracing::info!(webhook = %id, "webhook deleted");
        Ok(())
    }

    pub async fn deliveries(&self, id: &str, limit: usize) -> Result<DeliveryList, WebhookError> {
        if self.find(id).is_none() {
            return Err(WebhookError::NotFound(id.to_owned()));
        }
        let rows = self.store.deliveries(id, limit).await?;
        Ok(DeliveryList {
            deliveries: rows
                .into_iter()
                .map(|r| WebhookDelivery {
                    id: r.delivery,
                    event_id: u64::try_from(r.event_id).unwrap_or(0),
                    event_type: r.event_type,
                    attempt: r.attempt,
                    at: rfc3339(r.at_ms),
                    outcome: r.outcome,
                    status_code: r.status,
                    error: r.error,
                    duration_ms: u64::try_from(r.duration_ms).unwrap_or(0),
                })
                .collect(),
        })
    }

    async fn dispatch(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<Arc<LifecycleEvent>>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let event = tokio::select! {
                e = rx.recv() => e,
                _ = stop.wait_for(|s| *s) => None,
            };
            let Some(event) = event else { return };
            let wanted: Vec<Hook> = self
                .read()
                .iter()
                .filter(|h| h.wants(&event.kind))
                .cloned()
                .collect();
            for hook in wanted {
                let delivery = format!("whd_{}", crate::auth::random_hex(8));
                tokio::spawn(self.clone().deliver(hook, event.clone(), delivery, 1));
            }
        }
    }

    /// Picks up deliveries whose last attempt said another would follow (the daemon stopped meanwhile).
    async fn resume_pending(self: &Arc<Self>) {
        let pending = match self.store.deliveries_pending().await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the webhook deliveries to resume; they are not retried");
                return;
            }
        };
        for d in pending {
            let Some(hook) = self.find(&d.webhook) else {
                continue;
            };
            let q = EventQuery {
                after_id: Some(d.event_id - 1),
                limit: 1,
                ..EventQuery::default()
            };
            match self.store.events_read(q).await {
                Ok(rows) if rows.first().is_some_and(|r| r.id == d.event_id) => {
                    let event = Arc::new(crate::events::wire(
                        rows.into_iter().next().expect("checked"),
                    ));
                    tokio::spawn(self.clone().deliver(hook, event, d.delivery, d.attempt + 1));
                }
                _ => tracing::warn!(
                    webhook = %d.webhook, delivery = %d.delivery, event = d.event_id,
                    "a webhook delivery to resume names an event no longer kept; not retried"
                ),
            }
        }
    }

    /// Attempts a delivery from attempt `first` on, logging each attempt, until one succeeds, the
    /// attempts run out, or the webhook is deleted.
    async fn deliver(
        self: Arc<Self>,
        hook: Hook,
        event: Arc<LifecycleEvent>,
        delivery: String,
        first: u32,
    ) {
        let body = Bytes::from(serde_json::to_vec(&*event).unwrap_or_default());
        let max = self.cfg.max_attempts.max(1);
        for attempt in first..=max {
            if attempt > 1 {
                let wait = self
                    .cfg
                    .backoff
                    .saturating_mul(1 << (attempt.saturating_sub(2)).min(20))
                    .min(MAX_BACKOFF);
                tokio::time::sleep(wait).await;
            }
            // Deleted meanwhile: no more attempts (and no more log: it went with the webhook).
            if self.find(&hook.row.id).is_none() {
                return;
            }
            let started = Instant::now();
            let result = {
                let _permit = self.in_flight.acquire().await;
                tokio::time::timeout(
                    self.cfg.timeout,
                    self.send(&hook, &event, &delivery, body.clone()),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "no answer within {} ms",
                        self.cfg.timeout.as_millis()
                    ))
                })
            };
            let (status, error) = match result {
                Ok(s) if (200..300).contains(&s) => (Some(s), None),
                Ok(s) => (Some(s), Some(format!("the receiver answered HTTP {s}"))),
                Err(e) => (None, Some(e)),
            };
            let outcome = match (&error, attempt < max) {
                (None, _) => "delivered",
                (Some(_), true) => "retrying",
                (Some(_), false) => "failed",
            };
            if outcome == "failed" {
                tracing::warn!(webhook = %hook.row.id, delivery = %delivery, event = event.id,
                    error = ?error, "webhook delivery failed; no attempts left");
            }
            let row = DeliveryRow {
                webhook: hook.row.id.clone(),
                delivery: delivery.clone(),
                event_id: i64::try_from(event.id).unwrap_or(0),
                event_type: event.kind.clone(),
                attempt,
                at_ms: now_ms(),
                outcome: outcome.to_owned(),
                status,
                error: error.map(|e| e.chars().take(MAX_ERROR).collect()),
                duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
            };
            if let Err(e) = self.store.delivery_append(row).await {
                tracing::error!(webhook = %hook.row.id, delivery = %delivery, error = %e,
                    "cannot log a webhook delivery attempt");
            }
            if outcome != "retrying" {
                return;
            }
        }
    }

    /// One attempt: the receiver's HTTP status, or why there was none.
    async fn send(
        &self,
        hook: &Hook,
        event: &LifecycleEvent,
        delivery: &str,
        body: Bytes,
    ) -> Result<u16, String> {
        let uri: hyper::Uri = hook.row.url.parse().map_err(|e| format!("bad URL: {e}"))?;
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().ok_or("the URL has no host")?.to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let ts = now_ms() / 1000;
        let signature = sign(&hook.row.secret, ts, &body);
        let authority = uri.authority().map_or(host.clone(), ToString::to_string);
        let req = hyper::Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("sandpit-webhooks/", env!("CARGO_PKG_VERSION")),
            )
            .header(observe::HEADER_EVENT, &event.kind)
            .header(observe::HEADER_DELIVERY, delivery)
            .header(observe::HEADER_TIMESTAMP, ts.to_string())
            .header(observe::HEADER_SIGNATURE, signature)
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        if https {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("bad TLS server name {host:?}: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {host}: {e}"))?;
            exchange(tls, req).await
        } else {
            exchange(tcp, req).await
        }
    }
}

async fn exchange<S>(io: S, req: hyper::Request<Full<Bytes>>) -> Result<u16, String>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("sending: {e}"))?;
    let status = resp.status().as_u16();
    // Read (and drop) the answer so the exchange ends cleanly; what it says does not matter.
    let _ = resp.into_body().collect().await;
    conn.abort();
    Ok(status)
}

/// `v1=<hex HMAC-SHA256(secret, "<ts>.<body>")>`.
pub fn sign(secret: &str, ts: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(ts.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1={}", crate::tokens::hex(ctx.sign().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Python: hmac.new(b"s3cret-key", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        let sig = sign("s3cret-key", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            sig,
            "v1=8f205229f41e37cd3099c55f73d92a9a4d4c67bd7ae337b802d1723bd83a2a50"
        );
        assert_ne!(sig, sign("other-key!", 1_700_000_000, br#"{"a":1}"#));
        assert_ne!(sig, sign("s3cret-key", 1_700_000_001, br#"{"a":1}"#));
    }
}
