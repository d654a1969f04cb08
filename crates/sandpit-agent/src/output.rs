//! One process's output: a single `seq` over stdout and stderr, replayable from any point by any number
//! of readers, bounded in memory and on disk, and never blocking the writer.
//!
//! The newest chunks live in memory (a small tail, so live followers and short `exec`s never touch disk).
//! Older chunks spill to segment files in the process's log directory. The total kept (memory plus disk)
//! is capped; when the cap is exceeded the *oldest* segment is deleted, so a long-running process keeps
//! its most recent output, and a reader that asks for something deleted gets an explicit [`LostEvent`]
//! instead of a silent gap.
//!
//! Disk I/O never happens under the log's lock: a spill picks the chunks to write under the lock (they
//! stay in memory, readable, while in flight), writes them with positional writes outside it, and commits
//! the segment's new size under the lock again. One spill runs at a time (`spiller`); a panic anywhere
//! cannot poison the log for other threads ([`crate::sync::lock`]).
//!
//! A dropped segment's file is not unlinked but kept (at most [`SPARE_FILES`] of them) and overwritten
//! from the start by the next new segment: a long stream then writes into page-cache pages it already
//! has, instead of allocating a new file's pages and freeing the old one's (writing spill files was a
//! fifth of the agent's CPU on a fast stream, the page allocation and freeing part of it). A reused
//! file may be longer than its segment; readers stop at the segment's size. Spare files are deleted when the log closes or its files are removed.
//!
//! Segment record format: `seq u64 LE | offset u64 LE | stream u8 | len u32 LE | data`. Each segment keeps a sparse
//! in-memory index (one entry per [`INDEX_EVERY`] bytes) so that a replay from an old `seq` seeks instead
//! of scanning.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, IoSlice, Read};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, TryLockError};

use bytes::{BufMut as _, Bytes, BytesMut};
use sandpit_types::{Channel, Frame, HEADER_LEN, LostEvent};

use crate::flow::{Cursor, Flow};
use tokio::sync::watch;

/// Which stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout = 1,
    Stderr = 2,
}

impl Stream {
    /// Its channel in WebSocket frames.
    pub fn channel(self) -> Channel {
        match self {
            Self::Stdout => Channel::Stdout,
            Self::Stderr => Channel::Stderr,
        }
    }
}

/// One read's worth of output.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub seq: u64,
    pub stream: Stream,
    /// Bytes of output (both streams) before this chunk.
    pub offset: u64,
    pub data: Bytes,
    /// The chunk as a WebSocket binary frame ([`Frame`]): its header, then `data` (the same bytes, one
    /// allocation), so that a WebSocket session sends it without copying.
    pub frame: Bytes,
}

impl Chunk {
    /// Completes `frame` (its first [`HEADER_LEN`] bytes reserved, then the data) as this chunk's.
    fn new(seq: u64, stream: Stream, offset: u64, mut frame: BytesMut) -> Self {
        let header: &mut [u8; HEADER_LEN] = (&mut frame[..HEADER_LEN])
            .try_into()
            .expect("a frame starts with its header");
        Frame::write_header(stream.channel(), seq, header);
        let frame = frame.freeze();
        Self {
            seq,
            stream,
            offset,
            data: frame.slice(HEADER_LEN..),
            frame,
        }
    }
}

/// `data` behind [`HEADER_LEN`] reserved bytes: what [`OutputLog::append_frame`] takes (a copy).
pub fn framed(data: &[u8]) -> BytesMut {
    let mut f = BytesMut::with_capacity(HEADER_LEN + data.len());
    f.put_bytes(0, HEADER_LEN);
    f.extend_from_slice(data);
    f
}

/// Sizes that bound a log.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total bytes kept, memory plus disk.
    pub cap: u64,
    /// Bytes kept in memory before spilling.
    pub memory: usize,
}

const INDEX_EVERY: u64 = 256 * 1024;
/// Dropped segment files kept for reuse. Two cover a steady stream: a segment is dropped each time the
/// newest one grows by a segment's size, and a new one is started as often.
const SPARE_FILES: usize = 2;
const RECORD_HEADER: usize = 21;

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// Shared with an in-flight spill, which writes past `size` while readers read below it.
    file: Arc<File>,
    /// Its number in the directory (`NNNNNN.log`).
    number: u64,
    first_seq: u64,
    /// Seq after the last record in this segment.
    end_seq: u64,
    size: u64,
    data_bytes: u64,
    /// `(seq, file offset)` every `INDEX_EVERY` bytes.
    index: Vec<(u64, u64)>,
    last_indexed: u64,
}

/// What a reader gets for one call of [`OutputLog::read`].
#[derive(Debug, Default)]
pub struct ReadBatch {
    /// Output in `[from_seq, next)` that no longer exists.
    pub lost: Option<LostEvent>,
    pub chunks: Vec<Chunk>,
    /// The seq to ask for next.
    pub next: u64,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    limits: Limits,
    /// Seq the next appended chunk gets (seqs start at 1).
    next_seq: u64,
    /// Oldest seq still available; everything before it was dropped.
    first_kept: u64,
    mem: VecDeque<Chunk>,
    mem_bytes: usize,
    segments: VecDeque<Segment>,
    disk_bytes: u64,
    segment_counter: u64,
    /// `(first seq of a dropped unit, bytes dropped before it)`, for sizing `lost` events.
    drops: Vec<(u64, u64)>,
    lost_bytes: u64,
    stdout_bytes: u64,
    stderr_bytes: u64,
    closed: bool,
    /// An I/O error writing the spill file; later chunks are then kept or dropped as memory allows.
    spill_error: Option<String>,
    /// While a spill is in flight: the seq after its last chunk (those chunks are the front of `mem`,
    /// and stay there until the write is committed). 0 when none is.
    in_flight_end: u64,
    /// The files were removed ([`OutputLog::remove_files`]): an in-flight spill must not add any.
    removed: bool,
    /// Dropped segments' files, kept to be overwritten by the next new segment (module docs).
    spare: Vec<(PathBuf, Arc<File>)>,
}

/// What a spill writes, chosen under the lock and written outside it.
struct SpillPlan {
    chunks: Vec<Chunk>,
    /// The segment to append to (its number, file, and size so far), or `None` for a new one.
    target: Option<(u64, Arc<File>, u64)>,
    /// A new segment's number and path (a spare file's path when `reuse` is set).
    new: (u64, PathBuf),
    /// A spare file to overwrite from the start instead of creating `new`'s path.
    reuse: Option<Arc<File>>,
    dir: PathBuf,
}

/// The log of one process. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct OutputLog {
    inner: Mutex<Inner>,
    /// Held by the one spill that writes to disk at a time.
    spiller: Mutex<()>,
    /// Carries `next_seq`, and flips to `u64::MAX` when closed, so readers can await news.
    tick: watch::Sender<u64>,
    /// Live followers' positions, which hold the writer back while they lag (`crate::flow`).
    flow: Flow,
}

impl OutputLog {
    /// A log that spills to files under `dir` (created on first spill).
    pub fn new(dir: PathBuf, limits: Limits) -> Self {
        let (tick, _) = watch::channel(1);
        Self {
            inner: Mutex::new(Inner {
                dir,
                limits,
                next_seq: 1,
                first_kept: 1,
                mem: VecDeque::new(),
                mem_bytes: 0,
                segments: VecDeque::new(),
                disk_bytes: 0,
                segment_counter: 0,
                drops: Vec::new(),
                lost_bytes: 0,
                stdout_bytes: 0,
                stderr_bytes: 0,
                closed: false,
                spill_error: None,
                in_flight_end: 0,
                removed: false,
                spare: Vec::new(),
            }),
            spiller: Mutex::new(()),
            tick,
            flow: Flow::new(limits.cap, limits.memory, crate::flow::STALL),
        }
    }

    /// Appends a copy of `data` as a chunk and returns its seq ([`OutputLog::append_frame`]).
    pub fn append(&self, stream: Stream, data: &[u8]) -> u64 {
        self.append_frame(stream, framed(data))
    }

    /// Appends a chunk and returns its seq. Never blocks on readers. `frame` is the chunk's bytes
    /// behind [`HEADER_LEN`] reserved bytes, where its WebSocket frame header goes ([`Chunk::frame`]).
    pub fn append_frame(&self, stream: Stream, frame: BytesMut) -> u64 {
        let len = frame.len() - HEADER_LEN;
        let (seq, spill, unlink) = {
            let mut g = self.lock();
            let seq = g.next_seq;
            let offset = g.stdout_bytes + g.stderr_bytes;
            g.next_seq += 1;
            match stream {
                Stream::Stdout => g.stdout_bytes += len as u64,
                Stream::Stderr => g.stderr_bytes += len as u64,
            }
            g.mem_bytes += len;
            g.mem.push_back(Chunk::new(seq, stream, offset, frame));
            let unlink = g.enforce();
            self.flow.wrote(g.stdout_bytes + g.stderr_bytes);
            (seq, g.wants_spill(), unlink)
        };
        unlink_all(unlink);
        self.tick.send_replace(seq + 1);
        if spill {
            self.spill(false);
        }
        seq
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }

    /// Moves the oldest in-memory chunks to disk until memory is within its limit (all of them when
    /// `all`). Returns at once when another thread is spilling: that one keeps going until done.
    fn spill(&self, all: bool) {
        let _one = match self.spiller.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        loop {
            let Some(plan) = self.lock().plan_spill(all) else {
                return;
            };
            let written = write_spill(&plan);
            let unlink = self.lock().commit_spill(&plan, written);
            unlink_all(unlink);
        }
    }

    /// Marks the log complete: readers that reach the end stop waiting. Large in-memory tails of
    /// finished processes are spilled so that retained processes cost little memory.
    pub fn close(&self) {
        let big = {
            let mut g = self.lock();
            g.closed = true;
            g.mem_bytes > 64 * 1024
        };
        if big {
            self.spill(true);
        }
        // No new segment follows a close: the spare files are only disk now.
        let spare: Vec<PathBuf> = self.lock().spare.drain(..).map(|(p, _)| p).collect();
        unlink_all(spare);
        self.tick.send_replace(u64::MAX);
    }

    /// Registers a live follower at output offset `offset` (see [`Flow::follow`]): while it lags, the
    /// writer's [`OutputLog::room`] waits for it.
    pub fn follow(&self, offset: Option<u64>) -> Arc<Cursor> {
        self.flow.follow(offset)
    }

    /// How many bytes the writer may append now; waits while a live follower lags ([`Flow::room`]).
    pub async fn room(&self) -> usize {
        self.flow.room().await
    }

    /// A receiver that changes whenever a chunk is appended or the log closes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tick.subscribe()
    }

    /// Output totals: `(stdout bytes, stderr bytes, lost bytes, last seq)`.
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        let g = self.lock();
        (g.stdout_bytes, g.stderr_bytes, g.lost_bytes, g.next_seq - 1)
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Reads chunks with seq ≥ `from`, up to about `max_bytes` (at least one chunk when any exists).
    ///
    /// `from_offset` is the output offset at which seq `from` starts, when the reader knows it (it has
    /// read up to there); it makes the size of a `lost` report exact.
    pub fn read(&self, from: u64, from_offset: Option<u64>, max_bytes: usize) -> ReadBatch {
        let from = from.max(1);
        let g = self.lock();
        let mut batch = ReadBatch {
            next: from,
            ..ReadBatch::default()
        };
        if from < g.first_kept {
            // Drops are always the oldest output, so everything before `first_kept` is exactly the
            // first `lost_bytes` bytes of output.
            let start = if from == 1 {
                0
            } else {
                from_offset.unwrap_or_else(|| g.dropped_before(from))
            };
            batch.lost = Some(LostEvent {
                from_seq: from,
                to_seq: g.first_kept - 1,
                bytes: g.lost_bytes.saturating_sub(start),
            });
            batch.next = g.first_kept;
        }
        let mut budget = max_bytes;
        let mem_first = g.mem.front().map_or(g.next_seq, |c| c.seq);
        if batch.next < mem_first {
            // From disk. Reading under the lock keeps segments from being deleted mid-read; reads are
            // bounded by `max_bytes`, so the writer waits at most for one such read.
            if let Err(e) = g.read_disk(&mut batch, mem_first, &mut budget) {
                tracing::warn!(error = %e, "reading spilled output failed");
                // Report what cannot be read rather than pretend it does not exist.
                let to = mem_first - 1;
                batch.lost = Some(LostEvent {
                    from_seq: batch.next,
                    to_seq: to,
                    bytes: g.dropped_before(mem_first) - g.dropped_before(batch.next),
                });
                batch.next = mem_first;
            }
        }
        if batch.next >= mem_first {
            let start = (batch.next - mem_first) as usize;
            for c in g.mem.iter().skip(start) {
                if budget == 0 && !batch.chunks.is_empty() {
                    break;
                }
                budget = budget.saturating_sub(c.data.len());
                batch.next = c.seq + 1;
                batch.chunks.push(c.clone());
            }
        }
        batch
    }

    /// Deletes the spill files. Called when a retained process is forgotten.
    pub fn remove_files(&self) {
        let (paths, dir) = {
            let mut g = self.lock();
            g.removed = true;
            let mut paths: Vec<PathBuf> = g.segments.drain(..).map(|s| s.path).collect();
            paths.extend(g.spare.drain(..).map(|(p, _)| p));
            (paths, g.dir.clone())
        };
        unlink_all(paths);
        let _ = std::fs::remove_dir(&dir);
    }

    /// The spill error, if writing to disk ever failed.
    pub fn spill_error(&self) -> Option<String> {
        self.lock().spill_error.clone()
    }
}

impl Inner {
    /// Restores the total cap after an append, and the memory limit when spilling has failed. Returns
    /// the segment files to delete (after the lock is released).
    #[must_use]
    fn enforce(&mut self) -> Vec<PathBuf> {
        if self.spill_error.is_some() {
            while self.mem_bytes > self.limits.memory
                && self.mem.len() > 1
                && self.in_flight_end == 0
            {
                let c = self.mem.pop_front().expect("non-empty");
                self.mem_bytes -= c.data.len();
                self.drop_unit(c.seq, c.seq + 1, c.data.len() as u64);
            }
        }
        let mut unlink = Vec::new();
        let cap = self.limits.cap;
        while self.disk_data() + self.mem_bytes as u64 > cap {
            // An in-flight spill appends to the last segment and owns the front of `mem`: neither is
            // dropped until it commits (the cap is then restored).
            let in_flight = self.in_flight_end != 0;
            if self.segments.len() > usize::from(in_flight) {
                let seg = self.segments.pop_front().expect("non-empty");
                self.disk_bytes -= seg.size;
                // Nothing else holds a dropped segment's file: readers use it under the lock, and
                // an in-flight spill only ever targets the newest segment, never popped here.
                if self.spare.len() < SPARE_FILES && !self.removed && !self.closed {
                    self.spare.push((seg.path, seg.file));
                } else {
                    unlink.push(seg.path);
                }
                self.drop_unit(seg.first_seq, seg.end_seq, seg.data_bytes);
            } else if !in_flight && let Some(c) = self.mem.pop_front() {
                self.mem_bytes -= c.data.len();
                self.drop_unit(c.seq, c.seq + 1, c.data.len() as u64);
            } else {
                break;
            }
        }
        unlink
    }

    /// Whether memory is over its limit and a spill could help.
    fn wants_spill(&self) -> bool {
        self.mem_bytes > self.limits.memory
            && self.mem.len() > 1
            && self.spill_error.is_none()
            && self.in_flight_end == 0
            && !self.removed
    }

    /// Picks the oldest chunks to spill (at most about 1 MiB at a time) and marks them in flight.
    fn plan_spill(&mut self, all: bool) -> Option<SpillPlan> {
        if self.spill_error.is_some() || self.removed || self.in_flight_end != 0 {
            return None;
        }
        let limit = if all { 0 } else { self.limits.memory };
        let keep = usize::from(!all);
        let mut chunks = Vec::new();
        let mut bytes = 0usize;
        for c in &self.mem {
            if self.mem_bytes - bytes <= limit || self.mem.len() - chunks.len() <= keep {
                break;
            }
            bytes += c.data.len();
            chunks.push(c.clone());
            if bytes >= 1 << 20 {
                break;
            }
        }
        let last = chunks.last()?;
        self.in_flight_end = last.seq + 1;
        let seg_target = (self.limits.cap / 4).max(64 * 1024);
        let target = self
            .segments
            .back()
            .filter(|s| s.size < seg_target)
            .map(|s| (s.number, Arc::clone(&s.file), s.size));
        let number = self.segment_counter + 1;
        let (path, reuse) = match target {
            Some(_) => (PathBuf::new(), None),
            None => match self.spare.pop() {
                Some((path, file)) => (path, Some(file)),
                None => (self.dir.join(format!("{number:06}.log")), None),
            },
        };
        Some(SpillPlan {
            chunks,
            target,
            new: (number, path),
            reuse,
            dir: self.dir.clone(),
        })
    }

    /// Records a spill's outcome: the chunks leave memory for the segment, or spilling stops for good
    /// (later output is kept or dropped as memory allows). Returns files to delete.
    #[must_use]
    fn commit_spill(
        &mut self,
        plan: &SpillPlan,
        written: std::io::Result<Option<Arc<File>>>,
    ) -> Vec<PathBuf> {
        self.in_flight_end = 0;
        let new_file = match written {
            Err(e) => {
                tracing::warn!(error = %e, dir = %self.dir.display(), "cannot spill output to disk; dropping");
                self.spill_error = Some(e.to_string());
                return self.enforce();
            }
            Ok(f) => f,
        };
        if self.removed {
            return if new_file.is_some() {
                vec![plan.new.1.clone()]
            } else {
                Vec::new()
            };
        }
        let first = plan.chunks[0].seq;
        if let Some(file) = new_file {
            self.segment_counter = plan.new.0;
            self.segments.push_back(Segment {
                path: plan.new.1.clone(),
                file,
                number: plan.new.0,
                first_seq: first,
                end_seq: first,
                size: 0,
                data_bytes: 0,
                index: vec![(first, 0)],
                last_indexed: 0,
            });
        }
        let seg = self.segments.back_mut().expect("the spill's segment");
        debug_assert!(plan.target.as_ref().is_none_or(|t| t.0 == seg.number));
        for c in &plan.chunks {
            if seg.size - seg.last_indexed >= INDEX_EVERY {
                seg.index.push((c.seq, seg.size));
                seg.last_indexed = seg.size;
            }
            let n = (RECORD_HEADER + c.data.len()) as u64;
            seg.size += n;
            seg.data_bytes += c.data.len() as u64;
            seg.end_seq = c.seq + 1;
            self.disk_bytes += n;
        }
        let end = seg.end_seq;
        while self.mem.front().is_some_and(|c| c.seq < end) {
            let c = self.mem.pop_front().expect("non-empty");
            self.mem_bytes -= c.data.len();
        }
        self.enforce()
    }

    fn disk_data(&self) -> u64 {
        self.segments.iter().map(|s| s.data_bytes).sum()
    }

    fn drop_unit(&mut self, first: u64, end: u64, bytes: u64) {
        // Merge neighbours once the history grows, trading exactness of old `lost` sizes for memory.
        if self.drops.len() >= 1024 {
            self.drops.remove(1);
        }
        self.drops.push((first, self.lost_bytes));
        self.lost_bytes += bytes;
        self.first_kept = self.first_kept.max(end);
    }

    /// Bytes dropped before seq `s` (exact at the start of each dropped unit).
    fn dropped_before(&self, s: u64) -> u64 {
        if s >= self.first_kept {
            return self.lost_bytes;
        }
        match self.drops.partition_point(|&(first, _)| first <= s) {
            0 => 0,
            i => self.drops[i - 1].1,
        }
    }

    fn read_disk(
        &self,
        batch: &mut ReadBatch,
        mem_first: u64,
        budget: &mut usize,
    ) -> std::io::Result<()> {
        for seg in &self.segments {
            if seg.end_seq <= batch.next {
                continue;
            }
            let pos = seg.index.partition_point(|&(s, _)| s <= batch.next);
            let offset = if pos == 0 { 0 } else { seg.index[pos - 1].1 };
            let mut r = BufReader::new(ReadAt {
                file: &seg.file,
                pos: offset,
            });
            let mut at = offset;
            while at < seg.size {
                let mut h = [0u8; RECORD_HEADER];
                r.read_exact(&mut h)?;
                let seq = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
                let len = u32::from_le_bytes(h[17..].try_into().expect("4 bytes")) as usize;
                at += (RECORD_HEADER + len) as u64;
                if seq < batch.next {
                    std::io::copy(&mut (&mut r).take(len as u64), &mut std::io::sink())?;
                    continue;
                }
                if *budget == 0 && !batch.chunks.is_empty() {
                    return Ok(());
                }
                let mut frame = BytesMut::zeroed(HEADER_LEN + len);
                r.read_exact(&mut frame[HEADER_LEN..])?;
                let offset = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
                let stream = if h[16] == 2 {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                };
                *budget = budget.saturating_sub(len);
                batch.next = seq + 1;
                batch.chunks.push(Chunk::new(seq, stream, offset, frame));
                if batch.next >= mem_first {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// Writes a spill's records (outside the log's lock): appended to its target segment, or to a new file.
/// Returns the new file, if one was made.
fn write_spill(plan: &SpillPlan) -> std::io::Result<Option<Arc<File>>> {
    if let Some((_, file, at)) = &plan.target {
        write_records_at(file, &plan.chunks, *at)?;
        return Ok(None);
    }
    if let Some(file) = &plan.reuse {
        if let Err(e) = write_records_at(file, &plan.chunks, 0) {
            let _ = std::fs::remove_file(&plan.new.1);
            return Err(e);
        }
        return Ok(Some(Arc::clone(file)));
    }
    // Output may hold secrets: only the agent's user may read it.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&plan.dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&plan.new.1)?;
    if let Err(e) = write_records_at(&file, &plan.chunks, 0) {
        let _ = std::fs::remove_file(&plan.new.1);
        return Err(e);
    }
    Ok(Some(Arc::new(file)))
}

/// Writes `chunks` as records at `at`: each a header and the chunk's bytes, gathered by `pwritev`
/// straight from the chunks (no staging copy: every byte of a long stream passes here once).
fn write_records_at(file: &File, chunks: &[Chunk], mut at: u64) -> std::io::Result<()> {
    let headers: Vec<[u8; RECORD_HEADER]> = chunks
        .iter()
        .map(|c| {
            let mut h = [0u8; RECORD_HEADER];
            h[..8].copy_from_slice(&c.seq.to_le_bytes());
            h[8..16].copy_from_slice(&c.offset.to_le_bytes());
            h[16] = c.stream as u8;
            h[17..].copy_from_slice(&(c.data.len() as u32).to_le_bytes());
            h
        })
        .collect();
    let mut slices: Vec<IoSlice<'_>> = headers
        .iter()
        .zip(chunks)
        .flat_map(|(h, c)| [IoSlice::new(h), IoSlice::new(&c.data)])
        .collect();
    let mut rest = &mut slices[..];
    // At most IOV_MAX (1024) slices per call; a spill is about 1 MiB of chunks, so rarely more.
    while !rest.is_empty() {
        let n = rest.len().min(1024);
        let wrote = match nix::sys::uio::pwritev(file, &rest[..n], at as i64) {
            Ok(w) => w,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        if wrote == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        at += wrote as u64;
        IoSlice::advance_slices(&mut rest, wrote);
    }
    Ok(())
}

fn unlink_all(paths: Vec<PathBuf>) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

/// Positional reads, so that readers never move the writer's file cursor.
struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Splits `buf` at the last UTF-8 character boundary, so that a multi-byte character is never cut
/// between two chunks. Returns the length to emit now; the rest (at most 3 bytes) waits for more input.
pub fn utf8_cut(buf: &[u8]) -> usize {
    let n = buf.len();
    for back in 1..=3.min(n) {
        let b = buf[n - back];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte: keep looking for the lead byte
        }
        let need = if b & 0xE0 == 0xC0 {
            2
        } else if b & 0xF0 == 0xE0 {
            3
        } else if b & 0xF8 == 0xF0 {
            4
        } else {
            return n; // ASCII or invalid: nothing to wait for
        };
        return if back < need { n - back } else { n };
    }
    n
}

/// The directory for a process's spill files.
pub fn log_dir(root: &Path, id: &str) -> PathBuf {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    root.join(format!("{safe}-{:x}", fxhash(id)))
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(cap: u64, memory: usize) -> (tempfile::TempDir, OutputLog) {
        let d = tempfile::tempdir().unwrap();
        let l = OutputLog::new(d.path().join("p"), Limits { cap, memory });
        (d, l)
    }

    fn all(l: &OutputLog, from: u64) -> (Option<LostEvent>, Vec<u8>) {
        let mut out = Vec::new();
        let mut lost = None;
        let mut at = from;
        loop {
            let b = l.read(at, None, 1000);
            if b.lost.is_some() && lost.is_none() {
                lost = b.lost;
            }
            if b.chunks.is_empty() {
                return (lost, out);
            }
            for c in b.chunks {
                out.extend_from_slice(&c.data);
            }
            at = b.next;
        }
    }

    #[test]
    fn replays_from_memory_and_disk_in_order() {
        let (_d, l) = log(1 << 20, 100);
        let mut expect = Vec::new();
        for i in 0..500u32 {
            let s = format!("line {i}\n");
            expect.extend_from_slice(s.as_bytes());
            l.append(
                if i % 3 == 0 {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                },
                s.as_bytes(),
            );
        }
        let (lost, got) = all(&l, 1);
        assert!(lost.is_none());
        assert_eq!(got, expect);
        // From the middle, which is on disk.
        let b = l.read(250, None, 10);
        assert_eq!(b.chunks[0].seq, 250);
        assert_eq!(b.chunks[0].data, Bytes::from("line 249\n"));
        // Line 249 went to stderr (every third line does), line 250 to stdout.
        assert_eq!(b.chunks[0].stream, Stream::Stderr);
        assert_eq!(b.chunks[1].stream, Stream::Stdout);
    }

    #[test]
    fn a_failing_spill_keeps_the_log_answering_and_reports_what_it_dropped() {
        // The spill directory cannot be made (a regular file is in the way), as on a full disk: the log
        // keeps what memory allows, says what it dropped, and every call still answers.
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("blocker"), b"").unwrap();
        let l = OutputLog::new(
            d.path().join("blocker/p"),
            Limits {
                cap: 1 << 20,
                memory: 4096,
            },
        );
        let chunk = Bytes::from(vec![b'z'; 1000]);
        for _ in 0..100 {
            l.append(Stream::Stdout, &chunk);
        }
        assert!(l.spill_error().is_some());
        let (out, _, lost_total, last) = l.totals();
        assert_eq!((out, last), (100_000, 100));
        let (lost, got) = all(&l, 1);
        let lost = lost.expect("a lost event for what could not be spilled");
        assert_eq!(lost.bytes, lost_total);
        assert_eq!(got.len() as u64 + lost_total, 100_000);
        assert!(
            got.len() <= 4096 + 1000,
            "memory stays bounded: {}",
            got.len()
        );
        l.close();
        assert!(l.is_closed());
    }

    #[test]
    fn readers_see_every_chunk_while_spills_run_on_another_thread() {
        let (_d, l) = log(64 << 20, 8 * 1024);
        let l = Arc::new(l);
        let writer = {
            let l = l.clone();
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    l.append(Stream::Stdout, format!("{i:08}\n").as_bytes());
                }
                l.close();
            })
        };
        // Follow the log as it grows: every seq, in order, none missing, while spills move chunks to
        // disk underneath.
        let mut at = 1;
        let mut n = 0u32;
        loop {
            let b = l.read(at, None, 64 * 1024);
            assert!(b.lost.is_none(), "{:?}", b.lost);
            for c in &b.chunks {
                assert_eq!(c.data, Bytes::from(format!("{n:08}\n")));
                n += 1;
            }
            at = b.next;
            if b.chunks.is_empty() {
                if l.is_closed() && l.read(at, None, 1).chunks.is_empty() {
                    break;
                }
                std::thread::yield_now();
            }
        }
        writer.join().unwrap();
        assert_eq!(n, 20_000);
        let g = l.lock();
        assert!(!g.segments.is_empty(), "nothing was spilled");
        assert_eq!(g.in_flight_end, 0);
    }

    #[test]
    fn cap_drops_oldest_and_reports_it_as_lost() {
        let (_d, l) = log(300 * 1024, 4096);
        let chunk = Bytes::from(vec![b'x'; 1024]);
        for _ in 0..1000 {
            l.append(Stream::Stdout, &chunk);
        }
        let (out, _, lost_total, last) = l.totals();
        assert_eq!((out, last), (1_024_000, 1000));
        assert!(lost_total > 0 && lost_total < 1_024_000);
        let (lost, got) = all(&l, 1);
        let lost = lost.expect("a lost event");
        assert_eq!(lost.from_seq, 1);
        assert_eq!(lost.bytes, lost_total);
        assert_eq!(got.len() as u64 + lost.bytes, 1_024_000);
        assert!(got.len() as u64 <= 300 * 1024);
    }

    #[test]
    fn lost_is_exact_for_a_reader_whose_segment_was_dropped_mid_read() {
        let (_d, l) = log(300 * 1024, 4096);
        let chunk = Bytes::from(vec![b'y'; 1000]);
        for _ in 0..100 {
            l.append(Stream::Stdout, &chunk);
        }
        // A reader takes 10 chunks, then falls behind while 1000 more arrive.
        let b = l.read(1, Some(0), 10_000);
        let got: u64 = b.chunks.iter().map(|c| c.data.len() as u64).sum();
        let last = b.chunks.last().unwrap();
        let (next, pos) = (b.next, last.offset + last.data.len() as u64);
        for _ in 0..1000 {
            l.append(Stream::Stdout, &chunk);
        }
        let mut total = got;
        let mut at = (next, Some(pos));
        loop {
            let b = l.read(at.0, at.1, 50_000);
            if let Some(lost) = b.lost {
                total += lost.bytes;
            }
            if b.chunks.is_empty() {
                break;
            }
            for c in &b.chunks {
                total += c.data.len() as u64;
            }
            let c = b.chunks.last().unwrap();
            at = (b.next, Some(c.offset + c.data.len() as u64));
        }
        assert_eq!(total, 1_100_000, "received + reported lost = written");
    }

    #[test]
    fn close_spills_big_tails_and_readers_still_see_everything() {
        let (_d, l) = log(64 << 20, 1 << 20);
        for i in 0..200u32 {
            l.append(Stream::Stdout, &[(i % 250) as u8; 1000]);
        }
        l.close();
        let (lost, got) = all(&l, 1);
        assert!(lost.is_none());
        assert_eq!(got.len(), 200_000);
        assert!(l.is_closed());
    }

    #[test]
    fn dropped_segment_files_are_reused_and_replays_stay_exact() {
        // 10 MB through a 256 KiB cap: about 150 segments are made and dropped. With reuse the
        // directory only ever holds the first few file names, and a reused file's stale tail (it was
        // a longer segment before) never shows in a replay.
        let (d, l) = log(256 * 1024, 4096);
        let chunk = |i: u32| Bytes::from(format!("{i:09}|").repeat(100));
        for i in 0..10_000u32 {
            l.append(Stream::Stdout, &chunk(i));
        }
        let names = |dir: &Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let dir = d.path().join("p");
        let live = names(&dir);
        let segments = l.lock().segments.len();
        assert!(
            live.len() <= segments + SPARE_FILES,
            "{live:?}: {segments} segments"
        );
        assert!(
            live.iter().all(|n| n.as_str() <= "000008.log"),
            "new files were made instead of reusing dropped ones: {live:?}"
        );
        let first = l.lock().first_kept;
        let mut at = first;
        loop {
            let b = l.read(at, None, 64 * 1024);
            assert!(b.lost.is_none());
            if b.chunks.is_empty() {
                break;
            }
            for c in &b.chunks {
                assert_eq!(
                    c.data,
                    chunk(u32::try_from(c.seq - 1).unwrap()),
                    "seq {}",
                    c.seq
                );
            }
            at = b.next;
        }
        assert_eq!(at, 10_001);
        l.close();
        assert_eq!(
            names(&dir).len(),
            l.lock().segments.len(),
            "spare files outlived the close"
        );
        l.remove_files();
        assert!(!dir.exists());
    }

    #[test]
    fn utf8_cut_keeps_characters_whole() {
        let s = "aé€😀".as_bytes();
        assert_eq!(utf8_cut(s), s.len());
        assert_eq!(utf8_cut(&s[..s.len() - 1]), s.len() - 4);
        assert_eq!(utf8_cut(&s[..2]), 1);
        assert_eq!(utf8_cut(b"plain"), 5);
        assert_eq!(utf8_cut(&[0xff, 0xfe]), 2);
    }
}
