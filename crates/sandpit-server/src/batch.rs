//! The writer loop the audit log ([`crate::audit`]) and the lifecycle events ([`crate::events`]) share:
//! rows queued by the request path are stored in batches by one task, rows past their retention are
//! forgotten at start and every [`Timing::prune_every`], and what is queued when the daemon stops is
//! still stored.
//!
//! Owns the loop only: what a batch becomes and how old rows are forgotten (and how a failure of either
//! is reported) belong to the [`Sink`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// Where rows come from: the writers' channels (bounded for the audit log, unbounded for events).
pub(crate) trait Rows<T>: Send {
    /// The next row; `None` once every sender is gone.
    fn next(&mut self) -> impl Future<Output = Option<T>> + Send;
    /// A row already queued, without waiting.
    fn ready(&mut self) -> Option<T>;
}

impl<T: Send> Rows<T> for mpsc::Receiver<T> {
    fn next(&mut self) -> impl Future<Output = Option<T>> + Send {
        self.recv()
    }
    fn ready(&mut self) -> Option<T> {
        self.try_recv().ok()
    }
}

impl<T: Send> Rows<T> for mpsc::UnboundedReceiver<T> {
    fn next(&mut self) -> impl Future<Output = Option<T>> + Send {
        self.recv()
    }
    fn ready(&mut self) -> Option<T> {
        self.try_recv().ok()
    }
}

/// What the rows become. Both calls report their own failures (the writer goes on).
pub(crate) trait Sink<T>: Send + Sync + 'static {
    /// Stores one batch of at most [`Timing::batch`] rows; the last one, at the stop, may be empty (a
    /// sink may have something of its own to add then).
    fn write(&self, rows: Vec<T>) -> impl Future<Output = ()> + Send;
    /// Forgets rows older than `before_ms` (milliseconds since the epoch).
    fn prune(&self, before_ms: i64) -> impl Future<Output = ()> + Send;
}

/// How a writer batches and forgets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Most rows stored together.
    pub batch: usize,
    /// How long the writer waits after a row for more before it stores them: one transaction for a run
    /// of calls, and none in the moments right after a call, when its client's next one is most likely
    /// under way. Zero: at once.
    pub linger: Duration,
    /// How long rows are kept.
    pub retention: Duration,
    /// How often rows past `retention` are forgotten.
    pub prune_every: Duration,
}

/// Runs the writer until `stop` turns true (then stores what is queued) or every sender is gone.
pub(crate) async fn run<T: Send, R: Rows<T>, S: Sink<T>>(
    sink: Arc<S>,
    mut rows: R,
    timing: Timing,
    mut stop: watch::Receiver<bool>,
) {
    let retention_ms = i64::try_from(timing.retention.as_millis()).unwrap_or(i64::MAX);
    let mut next_prune = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_prune {
            sink.prune(crate::time::now_ms().saturating_sub(retention_ms))
                .await;
            next_prune = tokio::time::Instant::now() + timing.prune_every;
        }
        let first = tokio::select! {
            r = rows.next() => r,
            _ = stop.wait_for(|s| *s) => None,
            () = tokio::time::sleep_until(next_prune) => continue,
        };
        let Some(first) = first else {
            // Stopping (or no sender left): keep what is queued.
            let mut rest = Vec::new();
            while let Some(r) = rows.ready() {
                rest.push(r);
            }
            sink.write(rest).await;
            return;
        };
        if !timing.linger.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(timing.linger) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }
        let mut batch = vec![first];
        while batch.len() < timing.batch {
            match rows.ready() {
                Some(r) => batch.push(r),
                None => break,
            }
        }
        sink.write(batch).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder {
        batches: Mutex<Vec<Vec<u32>>>,
        prunes: Mutex<u32>,
    }

    impl Sink<u32> for Recorder {
        async fn write(&self, rows: Vec<u32>) {
            if !rows.is_empty() {
                self.batches.lock().unwrap().push(rows);
            }
        }
        async fn prune(&self, _before_ms: i64) {
            *self.prunes.lock().unwrap() += 1;
        }
    }

    const TIMING: Timing = Timing {
        batch: 3,
        linger: Duration::from_millis(50),
        retention: Duration::from_secs(60),
        prune_every: Duration::from_secs(3600),
    };

    #[tokio::test(start_paused = true)]
    async fn rows_that_come_within_the_linger_are_stored_together_and_batches_are_capped() {
        let sink = Arc::new(Recorder::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(run(sink.clone(), rx, TIMING, stop));
        tx.send(1).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        for n in 2..=5 {
            tx.send(n).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // 1..=5 within one linger: a batch of three, then the rest.
        assert_eq!(
            *sink.batches.lock().unwrap(),
            vec![vec![1, 2, 3], vec![4, 5]]
        );
        assert_eq!(*sink.prunes.lock().unwrap(), 1, "pruned once, at start");
        stop_tx.send_replace(true);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_stores_what_is_queued_without_waiting_out_the_linger() {
        let sink = Arc::new(Recorder::default());
        let (tx, rx) = mpsc::channel(16);
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(run(sink.clone(), rx, TIMING, stop));
        tx.send(7).await.unwrap();
        tokio::task::yield_now().await;
        tx.send(8).await.unwrap();
        stop_tx.send_replace(true);
        tokio::time::timeout(Duration::from_millis(10), task)
            .await
            .expect("the writer ended at once")
            .unwrap();
        let stored: Vec<u32> = sink.batches.lock().unwrap().concat();
        assert_eq!(stored, vec![7, 8]);
    }
}
