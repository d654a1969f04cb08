//! Flow control between a process's output and its live followers.
//!
//! The output log never blocks its writer on readers, and keeps at most its cap: a reader that falls more
//! than the cap behind loses the oldest output (reported as `lost`). A live follower (an SSE stream or a
//! WebSocket session, see `api::stream::follow`) that keeps reading but is slower than the process — any
//! client is slower than `head -c 1G /dev/zero` — used to fall behind that way and lose output it was
//! still going to read. So a follower registers a [`Cursor`] with its position, and the pump that reads
//! the process's pipe asks for [`Flow::room`] before each read: while a follower lags by the high-water
//! mark (an eighth of the cap and half the in-memory tail, at most 8 MiB: well inside what the cap keeps,
//! and in memory) the pump stops reading, the
//! pipe fills and the process blocks in `write` — exactly what a plain pipe to a slow reader does.
//!
//! A follower that stops moving holds the process back for at most [`STALL`]: it is then *released* (the
//! pump goes on without it, and it may later get `lost`) until it is back within the high-water mark. A
//! process with no live follower is never held back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a follower that does not move may hold its process back.
pub const STALL: Duration = Duration::from_secs(10);
/// The pump reads at least this much at a time while followers lag (no trickle of tiny reads).
const MIN_ROOM: u64 = 64 * 1024;

/// The followers of one process's output, and how far the output got.
#[derive(Debug)]
pub struct Flow {
    high_water: u64,
    stall: Duration,
    /// Bytes of output appended so far (both streams).
    written: AtomicU64,
    followers: Mutex<Vec<Weak<Cursor>>>,
    moved: Arc<Notify>,
    base: Instant,
}

/// A live follower's position: the output offset up to which it has taken output. Dropping it ends its
/// hold on the writer.
#[derive(Debug)]
pub struct Cursor {
    offset: AtomicU64,
    /// When it last moved, in milliseconds since `base`.
    moved_ms: AtomicU64,
    /// Left behind after stalling: it holds nobody back until it is within the high-water mark again.
    released: AtomicBool,
    moved: Arc<Notify>,
    base: Instant,
}

fn millis(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Cursor {
    /// The follower has taken output up to `offset`.
    pub fn advance(&self, offset: u64) {
        self.offset.store(offset, Ordering::Release);
        self.moved_ms.store(millis(self.base), Ordering::Release);
        self.moved.notify_waiters();
    }
}

impl Flow {
    /// Flow control for a log that keeps `cap` bytes, `memory` of them in memory; followers that do not
    /// move for `stall` are released.
    ///
    /// The high-water mark is also at most half the memory tail: a follower within it reads from
    /// memory. (With 8 MiB against a 1 MiB tail, a fast stream's follower read most of its output back
    /// from the spill files, a copy from the page cache and an allocation per chunk.)
    pub fn new(cap: u64, memory: usize, stall: Duration) -> Self {
        Self {
            high_water: (cap / 8)
                .min(memory as u64 / 2)
                .clamp(2 * MIN_ROOM, 8 << 20),
            stall,
            written: AtomicU64::new(0),
            followers: Mutex::new(Vec::new()),
            moved: Arc::new(Notify::new()),
            base: Instant::now(),
        }
    }

    /// The output now totals `total` bytes.
    pub fn wrote(&self, total: u64) {
        self.written.store(total, Ordering::Release);
    }

    /// Registers a follower at output offset `offset` (`None` when it does not know it yet: it then
    /// counts as caught up until its first [`Cursor::advance`]).
    pub fn follow(&self, offset: Option<u64>) -> Arc<Cursor> {
        let c = Arc::new(Cursor {
            offset: AtomicU64::new(offset.unwrap_or_else(|| self.written.load(Ordering::Acquire))),
            moved_ms: AtomicU64::new(millis(self.base)),
            released: AtomicBool::new(false),
            moved: Arc::clone(&self.moved),
            base: self.base,
        });
        let mut l = crate::sync::lock(&self.followers);
        l.retain(|w| w.strong_count() > 0);
        l.push(Arc::downgrade(&c));
        c
    }

    /// Waits until no live follower lags by the high-water mark, and returns how many bytes the writer
    /// may take now (`usize::MAX` with no follower).
    pub async fn room(&self) -> usize {
        loop {
            let notified = self.moved.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (lag, wake) = self.lag();
            let Some(lag) = lag else {
                return usize::MAX;
            };
            if lag + MIN_ROOM <= self.high_water {
                return usize::try_from(self.high_water - lag).unwrap_or(usize::MAX);
            }
            // A follower moved, or the slowest one's stall deadline passed.
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(wake) => {}
            }
        }
    }

    /// The largest lag among followers that still hold the writer back (`None`: none does), and how
    /// long until the first of the lagging ones is released.
    fn lag(&self) -> (Option<u64>, Duration) {
        let written = self.written.load(Ordering::Acquire);
        let now = millis(self.base);
        let stall = u64::try_from(self.stall.as_millis()).unwrap_or(u64::MAX);
        let mut worst: Option<u64> = None;
        let mut wake = stall;
        let mut l = crate::sync::lock(&self.followers);
        l.retain(|w| w.strong_count() > 0);
        for c in l.iter().filter_map(Weak::upgrade) {
            let lag = written.saturating_sub(c.offset.load(Ordering::Acquire));
            if lag + MIN_ROOM <= self.high_water {
                c.released.store(false, Ordering::Release);
            } else if c.released.load(Ordering::Acquire) {
                continue;
            } else {
                let idle = now.saturating_sub(c.moved_ms.load(Ordering::Acquire));
                if idle >= stall {
                    tracing::debug!(
                        lag,
                        "a follower stopped reading: the process goes on without it"
                    );
                    c.released.store(true, Ordering::Release);
                    continue;
                }
                wake = wake.min(stall - idle);
            }
            worst = Some(worst.map_or(lag, |w| w.max(lag)));
        }
        (worst, Duration::from_millis(wake.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: u64 = 8 << 20; // high water 1 MiB

    /// Regression: the window was an eighth of the cap (8 MiB) against a 1 MiB memory tail, so a fast
    /// stream's follower read most of its output back from the spill files.
    #[tokio::test(start_paused = true)]
    async fn a_followers_window_fits_in_the_memory_tail() {
        let f = Flow::new(64 << 20, 1 << 20, STALL);
        let _c = f.follow(Some(0));
        assert_eq!(f.room().await, 512 << 10);
        let f = Flow::new(64 << 20, 64 << 20, STALL);
        let _c = f.follow(Some(0));
        assert_eq!(f.room().await, 8 << 20);
    }

    #[tokio::test(start_paused = true)]
    async fn no_follower_never_holds_the_writer() {
        let f = Flow::new(CAP, usize::MAX, STALL);
        f.wrote(100 << 20);
        assert_eq!(f.room().await, usize::MAX);
        drop(f.follow(Some(0)));
        assert_eq!(f.room().await, usize::MAX, "a dropped cursor holds nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lagging_follower_holds_the_writer_until_it_moves() {
        let f = Arc::new(Flow::new(CAP, usize::MAX, STALL));
        let c = f.follow(Some(0));
        f.wrote(100);
        assert_eq!(f.room().await, (1 << 20) - 100);
        f.wrote(1 << 20);
        let waiting = tokio::spawn({
            let f = Arc::clone(&f);
            async move { f.room().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "held while the follower lags 1 MiB");
        c.advance(1 << 19);
        assert_eq!(waiting.await.unwrap(), 1 << 19);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_follower_is_released_and_holds_again_once_caught_up() {
        let f = Flow::new(CAP, usize::MAX, STALL);
        let c = f.follow(None);
        f.wrote(4 << 20);
        let t = Instant::now();
        assert_eq!(
            f.room().await,
            usize::MAX,
            "released: nobody holds the writer"
        );
        assert!(t.elapsed() >= STALL, "{:?}", t.elapsed());
        c.advance(4 << 20);
        assert_eq!(f.room().await, 1 << 20, "caught up");
        f.wrote(5 << 20);
        let held = tokio::time::timeout(Duration::from_secs(1), f.room()).await;
        assert!(held.is_err(), "caught up, it holds the writer again");
    }
}
