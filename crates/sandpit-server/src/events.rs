//! Lifecycle events: the record of what happened to each sandbox (`sandbox.created` … `sandbox.forked`,
//! [`EventType`]), kept in the store's `events` table for `events_retention_days`, readable in pages and
//! as a live stream, and handed to the webhooks.
//!
//! Owns the order of events and their delivery to readers. The engine calls [`Events::emit`] at each
//! transition (never blocking: ids are assigned at once, in order, and rows written in batches by one
//! writer task). An event reaches live streams and webhooks only once it is stored, so a stream that
//! replays from the store and then follows live ones never has a gap, and a reader never sees an event
//! that a restart would forget. A read waits (briefly) for the events emitted before it to be stored, so
//! that a client that paused a sandbox and then lists its events sees the pause.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sandpit_types::observe::{EventList, EventType, LifecycleEvent};
use tokio::sync::{broadcast, mpsc, watch};

use crate::store::{EventQuery, EventRow, Store, StoreError};
use crate::time::{now_ms, rfc3339};

/// Most rows written in one transaction.
const BATCH: usize = 512;
/// Events a live stream may fall behind by before it reads the rest back from the store.
const LIVE_BUFFER: usize = 1024;
/// How often old events are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How long a read waits for earlier events to be stored.
const READ_WAIT: Duration = Duration::from_secs(2);

/// The event log's writer, reader and live feed.
#[derive(Debug)]
pub struct Events {
    store: Store,
    /// Held while an id is assigned and its row queued, so that ids reach the writer in order.
    next: Mutex<(u64, mpsc::UnboundedSender<EventRow>)>,
    /// The last id assigned.
    assigned: AtomicU64,
    /// The last id stored.
    stored: watch::Sender<u64>,
    live: broadcast::Sender<Arc<LifecycleEvent>>,
    /// The webhooks' dispatcher, once it is running.
    hooks: OnceLock<mpsc::UnboundedSender<Arc<LifecycleEvent>>>,
}

impl Events {
    /// Starts the writer (which also forgets events older than `retention`, at start and hourly); it
    /// stores what is queued and ends when `stop` turns true.
    pub async fn start(
        store: Store,
        retention: Duration,
        stop: watch::Receiver<bool>,
    ) -> Result<(Arc<Self>, tokio::task::JoinHandle<()>), StoreError> {
        let last = u64::try_from(store.events_max_id().await?).unwrap_or(0);
        let (tx, rx) = mpsc::unbounded_channel();
        let events = Arc::new(Self {
            store,
            next: Mutex::new((last + 1, tx)),
            assigned: AtomicU64::new(last),
            stored: watch::Sender::new(last),
            live: broadcast::Sender::new(LIVE_BUFFER),
            hooks: OnceLock::new(),
        });
        let timing = crate::batch::Timing {
            batch: BATCH,
            // Stored at once: streams and webhooks get an event only once it is stored.
            linger: Duration::ZERO,
            retention,
            prune_every: PRUNE_EVERY,
        };
        let task = tokio::spawn(crate::batch::run(events.clone(), rx, timing, stop));
        Ok((events, task))
    }

    /// Records that `kind` happened to `sandbox` (of `tenant`), with `data`. Never blocks and never fails:
    /// a row that cannot be stored is reported in the log, with its content.
    // By value: every caller builds `data` in the call (`json!`).
    #[allow(clippy::needless_pass_by_value)]
    pub fn emit(&self, kind: EventType, sandbox: &str, tenant: &str, data: serde_json::Value) {
        let mut next = self
            .next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = next.0;
        next.0 += 1;
        self.assigned.store(id, Ordering::Release);
        let row = EventRow {
            id: i64::try_from(id).unwrap_or(i64::MAX),
            at_ms: now_ms(),
            kind: kind.as_str().to_owned(),
            sandbox: sandbox.to_owned(),
            tenant: tenant.to_owned(),
            data: data.to_string(),
        };
        if let Err(e) = next.1.send(row) {
            tracing::error!(event = ?e.0, "the event writer has stopped: this event is not recorded");
        }
    }

    /// Hands every stored event to `hooks` from now on (the webhooks' dispatcher).
    pub fn set_hooks(&self, hooks: mpsc::UnboundedSender<Arc<LifecycleEvent>>) {
        let _ = self.hooks.set(hooks);
    }

    /// The last id stored.
    pub fn last_stored(&self) -> i64 {
        i64::try_from(*self.stored.borrow()).unwrap_or(i64::MAX)
    }

    /// A receiver of every event stored from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LifecycleEvent>> {
        self.live.subscribe()
    }

    /// Events matching `q`, oldest first, with the cursor of the next page; first waits (up to 2 s) for
    /// the events emitted so far to be stored.
    pub async fn read(&self, q: EventQuery) -> Result<EventList, StoreError> {
        let want = self.assigned.load(Ordering::Acquire);
        let mut stored = self.stored.subscribe();
        let _ = tokio::time::timeout(READ_WAIT, stored.wait_for(|s| *s >= want)).await;
        let limit = q.limit;
        let mut rows = self.store.events_read(q).await?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_after = more
            .then(|| rows.last().map(|r| u64::try_from(r.id).unwrap_or(0)))
            .flatten();
        Ok(EventList {
            events: rows.into_iter().map(wire).collect(),
            next_after,
        })
    }
}

impl crate::batch::Sink<EventRow> for Events {
    async fn write(&self, rows: Vec<EventRow>) {
        let Some(last) = rows.last().map(|r| u64::try_from(r.id).unwrap_or(0)) else {
            return;
        };
        if let Err(e) = self.store.events_append(rows.clone()).await {
            // Said once per failed batch, with what was lost: the report is this line.
            tracing::error!(events = ?rows, error = %e, "cannot store lifecycle events; they are lost");
        } else {
            for r in rows {
                let e = Arc::new(wire(r));
                let _ = self.live.send(e.clone());
                if let Some(h) = self.hooks.get() {
                    let _ = h.send(e);
                }
            }
        }
        self.stored.send_replace(last);
    }

    async fn prune(&self, before_ms: i64) {
        match self.store.events_prune(before_ms).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "events past their retention forgotten"),
            Err(e) => tracing::warn!(error = %e, "cannot forget old events"),
        }
    }
}

/// A stored row as the API shows it.
pub fn wire(r: EventRow) -> LifecycleEvent {
    LifecycleEvent {
        id: u64::try_from(r.id).unwrap_or(0),
        kind: r.kind,
        sandbox_id: r.sandbox,
        tenant: r.tenant,
        at: rfc3339(r.at_ms),
        data: serde_json::from_str(&r.data).unwrap_or(serde_json::Value::Null),
    }
}

/// Whether `e` passes a stream's filter.
pub fn matches(e: &LifecycleEvent, q: &EventQuery) -> bool {
    q.tenant.as_ref().is_none_or(|t| *t == e.tenant)
        && q.sandbox.as_ref().is_none_or(|s| *s == e.sandbox_id)
        && (q.kinds.is_empty() || q.kinds.contains(&e.kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn hub() -> (Arc<Events>, watch::Sender<bool>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let (events, _) = Events::start(store, Duration::from_secs(3600), stop)
            .await
            .unwrap();
        (events, stop_tx, dir)
    }

    #[tokio::test]
    async fn a_read_sees_every_event_emitted_before_it_in_order() {
        let (ev, _stop, _dir) = hub().await;
        for i in 0..50 {
            ev.emit(
                EventType::Paused,
                &format!("sb_{}", i % 3),
                "t",
                json!({"i": i}),
            );
        }
        let q = EventQuery {
            limit: 1000,
            ..EventQuery::default()
        };
        let all = ev.read(q.clone()).await.unwrap();
        assert_eq!(all.events.len(), 50);
        assert!(all.events.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(all.events[7].data, json!({"i": 7}));
        let one = ev
            .read(EventQuery {
                sandbox: Some("sb_1".into()),
                limit: 5,
                ..q.clone()
            })
            .await
            .unwrap();
        assert_eq!(one.events.len(), 5);
        assert!(one.events.iter().all(|e| e.sandbox_id == "sb_1"));
        let next = ev
            .read(EventQuery {
                sandbox: Some("sb_1".into()),
                after_id: one.next_after.map(|n| n as i64),
                limit: 1000,
                ..q
            })
            .await
            .unwrap();
        assert_eq!(one.events.len() + next.events.len(), 17);
        assert_eq!(next.next_after, None);
    }

    #[tokio::test]
    async fn live_subscribers_get_events_once_stored_and_ids_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let (stop_tx, stop) = watch::channel(false);
            let (ev, task) =
                Events::start(Store::open(&path).unwrap(), Duration::from_secs(3600), stop)
                    .await
                    .unwrap();
            let mut rx = ev.subscribe();
            ev.emit(EventType::Created, "sb_a", "t", json!({}));
            let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!((got.id, got.kind.as_str()), (1, "sandbox.created"));
            ev.emit(EventType::Killed, "sb_a", "t", json!({}));
            stop_tx.send_replace(true);
            task.await.unwrap();
        }
        let (_stop_tx, stop) = watch::channel(false);
        let (ev, _) = Events::start(Store::open(&path).unwrap(), Duration::from_secs(3600), stop)
            .await
            .unwrap();
        ev.emit(EventType::Created, "sb_b", "t", json!({}));
        let all = ev
            .read(EventQuery {
                limit: 10,
                ..EventQuery::default()
            })
            .await
            .unwrap();
        let ids: Vec<_> = all.events.iter().map(|e| (e.id, e.kind.as_str())).collect();
        assert_eq!(
            ids,
            [
                (1, "sandbox.created"),
                (2, "sandbox.killed"),
                (3, "sandbox.created")
            ]
        );
    }
}
