//! Host uid/gid ranges for sandboxes. Each sandbox maps its ids 0–65535 onto its own block of
//! 65536 host ids, so root inside is an unprivileged, otherwise unused uid outside, and two
//! sandboxes never share an owner for their files or processes.
//!
//! Reservations are directories `STATE/idranges/<slot>` created with `mkdir(2)`, which is atomic:
//! they survive daemon restarts and need no lock or database. The directory holds an `owner`
//! file with the sandbox id so a stale reservation can be traced back.

use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Ids per sandbox: the 16-bit id space most distributions assume.
pub const RANGE_SIZE: u32 = 65_536;

/// Errors reserving id ranges.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    #[error(
        "all {0} uid/gid ranges are reserved; destroy sandboxes, remove stale directories under \
         {1}, or raise IsolateConfig::id_range_slots"
    )]
    Exhausted(u32, PathBuf),
    #[error("id range reservation under {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One reserved host id block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub slot: u32,
    /// First host uid/gid; sandbox id `n` is host id `base + n`.
    pub base: u32,
    pub count: u32,
}

/// Allocates [`IdRange`]s from `first_base` upwards, `slots` of them.
///
/// Next fit: a reservation tries the slot after the last one taken first and wraps around, so a create
/// costs one `mkdir` however many sandboxes are live (a scan from slot 0 cost one failed `mkdir` per
/// live sandbox: 3.9 ms at 1,000), and a freed range is reused last rather than first. Clones share
/// the cursor. The directories stay the truth; the cursor is only where to look first.
#[derive(Debug, Clone)]
pub struct IdAllocator {
    dir: PathBuf,
    first_base: u32,
    slots: u32,
    next: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl IdAllocator {
    pub fn new(dir: PathBuf, first_base: u32, slots: u32) -> Result<Self, RangeError> {
        fs::create_dir_all(&dir).map_err(|source| RangeError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            dir,
            first_base,
            slots,
            next: std::sync::Arc::default(),
        })
    }

    fn range(&self, slot: u32) -> IdRange {
        IdRange {
            slot,
            base: self.first_base + slot * RANGE_SIZE,
            count: RANGE_SIZE,
        }
    }

    fn slot_dir(&self, slot: u32) -> PathBuf {
        self.dir.join(slot.to_string())
    }

    /// Reserves the first free slot at or after the cursor (wrapping) for `owner`.
    pub fn reserve(&self, owner: &str) -> Result<IdRange, RangeError> {
        use std::sync::atomic::Ordering;
        let start = self.next.load(Ordering::Relaxed) % self.slots.max(1);
        for i in 0..self.slots {
            let slot = (start + i) % self.slots;
            let d = self.slot_dir(slot);
            match fs::create_dir(&d) {
                Ok(()) => {
                    self.next.store(slot + 1, Ordering::Relaxed);
                    // The owner file is informative only; failing to write it keeps the slot.
                    let _ = fs::write(d.join("owner"), owner);
                    return Ok(self.range(slot));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(source) => return Err(RangeError::Io { path: d, source }),
            }
        }
        Err(RangeError::Exhausted(self.slots, self.dir.clone()))
    }

    /// Releases a slot; releasing a free slot is not an error (destroy is idempotent).
    pub fn release(&self, range: &IdRange) -> Result<(), RangeError> {
        let d = self.slot_dir(range.slot);
        match fs::remove_dir_all(&d) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(RangeError::Io { path: d, source }),
        }
    }

    /// The slot reserved for `owner`, if any (a scan: for recovery only).
    pub fn owned_by(&self, owner: &str) -> Option<IdRange> {
        (0..self.slots)
            .find(|&s| self.owner(s).as_deref() == Some(owner))
            .map(|s| self.range(s))
    }

    /// Owners of every reserved slot, by slot.
    pub fn reserved(&self) -> Vec<(IdRange, Option<String>)> {
        (0..self.slots)
            .filter(|&s| self.slot_dir(s).exists())
            .map(|s| (self.range(s), self.owner(s)))
            .collect()
    }

    /// The sandbox id recorded for `slot`, if reserved.
    pub fn owner(&self, slot: u32) -> Option<String> {
        fs::read_to_string(self.slot_dir(slot).join("owner")).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_disjoint_persistent_and_reusable() {
        let tmp = tempfile::tempdir().unwrap();
        let a = IdAllocator::new(tmp.path().join("r"), 1 << 30, 3).unwrap();
        let r0 = a.reserve("a").unwrap();
        let r1 = a.reserve("b").unwrap();
        assert_eq!(r0.base, 1 << 30);
        assert_eq!(r1.base, (1 << 30) + RANGE_SIZE);
        // A second allocator on the same directory (a restarted daemon) sees the reservations.
        let again = IdAllocator::new(tmp.path().join("r"), 1 << 30, 3).unwrap();
        assert_eq!(again.reserve("c").unwrap().slot, 2);
        assert!(matches!(
            again.reserve("d"),
            Err(RangeError::Exhausted(3, _))
        ));
        assert_eq!(again.owner(1).as_deref(), Some("b"));
        a.release(&r1).unwrap();
        a.release(&r1).unwrap();
        assert_eq!(again.reserve("e").unwrap().slot, 1);
    }

    #[test]
    fn a_freed_range_is_reused_after_the_free_ones_beyond_it() {
        let tmp = tempfile::tempdir().unwrap();
        let a = IdAllocator::new(tmp.path().join("r"), 1 << 30, 4).unwrap();
        let r0 = a.reserve("a").unwrap();
        assert_eq!(a.reserve("b").unwrap().slot, 1);
        a.release(&r0).unwrap();
        // Next fit: slots 2 and 3 first, then the wrap finds 0 again.
        assert_eq!(a.reserve("c").unwrap().slot, 2);
        assert_eq!(a.clone().reserve("d").unwrap().slot, 3);
        assert_eq!(a.reserve("e").unwrap().slot, 0);
        assert!(matches!(a.reserve("f"), Err(RangeError::Exhausted(4, _))));
    }
}
