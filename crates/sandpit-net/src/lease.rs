//! Host-wide leases of address blocks, so that any number of daemons on one machine (test threads,
//! several users' daemons) hand out disjoint sandbox addresses and use disjoint host-wide names.
//!
//! The pool (`--network-pool`, default `10.212.0.0/15`) is cut into aligned /22 blocks. A daemon holds
//! an exclusive `flock` on `/run/sandpit/net/<block>.lock` for as long as it runs; the kernel drops it
//! when the process dies, however it dies. Every host-wide name a daemon creates is derived from its
//! block (veths `sp<block-hex>-<slot>`, nftables tables `sandpit_<block-hex>`), so names cannot clash
//! either. The lock file records the owner's state directory: a restarted daemon takes its old block
//! back (its sandboxes kept running, with their links and firewall), and a new daemon prefers blocks
//! nobody left anything in.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use sandpit_types::network::Cidr;

/// Prefix length of one daemon's block: 1024 addresses, so up to [`Block::slots`] = 1021 sandboxes.
pub const BLOCK_PREFIX: u8 = 22;

/// Where the lock files live (tmpfs: nothing survives a reboot, and nothing needs to).
pub const DEFAULT_LEASE_DIR: &str = "/run/sandpit/net";

/// One daemon's address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub base: Ipv4Addr,
}

impl Block {
    /// The block's short name, used in every host-wide name derived from it.
    pub fn tag(&self) -> String {
        format!("{:08x}", u32::from(self.base))
    }

    /// The host side's address in every veth of the block: the sandboxes' gateway and DNS resolver.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }

    /// How many sandboxes the block holds.
    pub fn slots(&self) -> u32 {
        (1 << (32 - BLOCK_PREFIX)) - 3
    }

    /// The address of sandbox slot `slot`.
    pub fn addr(&self, slot: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 2 + slot)
    }

    /// The slot of `addr`, if it is one of this block's sandbox addresses.
    pub fn slot_of(&self, addr: Ipv4Addr) -> Option<u32> {
        let off = u32::from(addr).checked_sub(u32::from(self.base) + 2)?;
        (off < self.slots()).then_some(off)
    }

    pub fn cidr(&self) -> Cidr {
        Cidr::V4(self.base, BLOCK_PREFIX)
    }
}

/// Errors taking a lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("network pool {0}: must be an IPv4 CIDR of /{BLOCK_PREFIX} or larger")]
    BadPool(String),
    #[error(
        "every /{BLOCK_PREFIX} block of the network pool {0} is leased by another running daemon; \
         give this one another pool (--network-pool) or stop one"
    )]
    Exhausted(String),
    #[error("lease directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A held block; dropping it releases the lock (the lock file stays, naming the last owner).
#[derive(Debug)]
pub struct Lease {
    pub block: Block,
    /// Whether the block was last held by the same state directory (a restart).
    pub resumed: bool,
    _file: File,
}

fn blocks(pool: Cidr) -> Result<Vec<Block>, LeaseError> {
    match pool {
        Cidr::V4(_, len) if len <= BLOCK_PREFIX => {
            let (start, end) = pool.range_v4().unwrap_or_default();
            let step = 1u64 << (32 - BLOCK_PREFIX);
            Ok((u64::from(start)..=u64::from(end))
                .step_by(step as usize)
                .map(|b| Block {
                    base: Ipv4Addr::from(b as u32),
                })
                .collect())
        }
        _ => Err(LeaseError::BadPool(pool.to_string())),
    }
}

/// Takes the lock of one lease file if free (dropped: released).
pub(crate) fn try_lock_path(path: &Path) -> Result<Option<File>, LeaseError> {
    try_lock(path)
}

fn try_lock(path: &Path) -> Result<Option<File>, LeaseError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| LeaseError::Io {
            path: path.to_owned(),
            source,
        })?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    Ok((rc == 0).then_some(file))
}

/// Takes a block of `pool` for the daemon whose state directory is `owner`. `taken_elsewhere(block)`
/// says whether a block has leftovers (a firewall table) of a daemon that is gone: those are taken
/// only when no clean block is free, since their daemon may come back for them.
pub fn acquire(
    dir: &Path,
    pool: Cidr,
    owner: &Path,
    has_leftovers: &dyn Fn(&Block) -> bool,
) -> Result<Lease, LeaseError> {
    fs::create_dir_all(dir).map_err(|source| LeaseError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let owner_text = owner.display().to_string();
    let all = blocks(pool)?;
    let lock_path = |b: &Block| dir.join(format!("{}.lock", b.tag()));
    let last_owner = |b: &Block| fs::read_to_string(lock_path(b)).unwrap_or_default();
    // 1. Ours from before (a restart): take it back if it is free.
    // 2. A block nobody left anything in. 3. A block whose previous owner's state dir is gone.
    // 4. Any free block.
    let ours: Vec<&Block> = all.iter().filter(|b| last_owner(b) == owner_text).collect();
    let clean: Vec<&Block> = all.iter().filter(|b| !has_leftovers(b)).collect();
    let abandoned: Vec<&Block> = all
        .iter()
        .filter(|b| {
            let o = last_owner(b);
            o.is_empty() || !Path::new(&o).exists()
        })
        .collect();
    for (resumed, candidates) in [
        (true, ours),
        (false, clean),
        (false, abandoned),
        (false, all.iter().collect()),
    ] {
        for b in candidates {
            let path = lock_path(b);
            if let Some(mut file) = try_lock(&path)? {
                let resumed = resumed && last_owner(b) == owner_text;
                file.set_len(0).ok();
                file.write_all(owner_text.as_bytes()).ok();
                return Ok(Lease {
                    block: *b,
                    resumed,
                    _file: file,
                });
            }
        }
    }
    Err(LeaseError::Exhausted(pool.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_daemons_get_disjoint_blocks_and_a_restart_gets_its_own_back() {
        let dir = tempfile::tempdir().unwrap();
        let owners = tempfile::tempdir().unwrap();
        let owner = |n: &str| {
            let p = owners.path().join(n);
            fs::create_dir_all(&p).unwrap();
            p
        };
        let pool = Cidr::parse("10.99.0.0/20").unwrap();
        let none = |_: &Block| false;
        let a = acquire(dir.path(), pool, &owner("a"), &none).unwrap();
        let b = acquire(dir.path(), pool, &owner("b"), &none).unwrap();
        assert_ne!(a.block, b.block);
        assert!(!a.resumed);
        let a_block = a.block;
        drop(a);
        // Another daemon comes first: it does not take a's block (a left its firewall behind).
        let c = acquire(dir.path(), pool, &owner("c"), &|b: &Block| *b == a_block).unwrap();
        assert_ne!(c.block, a_block);
        let a2 = acquire(dir.path(), pool, &owner("a"), &none).unwrap();
        assert_eq!(a2.block, a_block);
        assert!(a2.resumed);
        let d = acquire(dir.path(), pool, &owner("d"), &none).unwrap();
        // The pool (4 blocks) is now full.
        assert!(matches!(
            acquire(dir.path(), pool, &owner("e"), &none),
            Err(LeaseError::Exhausted(_))
        ));
        drop((b, c, d));
    }

    #[test]
    fn addresses_and_slots() {
        let b = Block {
            base: Ipv4Addr::new(10, 212, 4, 0),
        };
        assert_eq!(b.gateway(), Ipv4Addr::new(10, 212, 4, 1));
        assert_eq!(b.addr(0), Ipv4Addr::new(10, 212, 4, 2));
        assert_eq!(b.slot_of(Ipv4Addr::new(10, 212, 7, 254)), Some(1020));
        assert_eq!(b.slot_of(Ipv4Addr::new(10, 212, 7, 255)), None);
        assert_eq!(b.slot_of(b.gateway()), None);
        assert_eq!(b.tag(), "0ad40400");
    }
}
