//! `sandpit-net`: sandbox networking on the host side, where nothing a sandbox does can reach it.
//!
//! Each sandbox already has its own network namespace (made by `sandpit-isolate`). This crate gives it a
//! way out and the rules for that way:
//!
//! * [`lease`]: a host-wide lease of a /22 address block per daemon, so that concurrent daemons never
//!   hand out overlapping addresses or clashing host-wide names;
//! * [`netlink`]: the veth pair (host end `sp<block>-<slot>`, sandbox end `eth0`, created straight inside
//!   the sandbox's namespace) and its point-to-point addresses;
//! * [`firewall`]: the daemon's nftables table (anti-spoofing, always-denied ranges, per-sandbox policy
//!   as set elements, live policy changes that cut forbidden connections, a connection cap, NAT);
//! * [`dns`]: the resolver every sandbox uses, which enforces domain rules by pinning answers.
//!
//! [`Network`] ties them together for the daemon. See `docs/network.md` for the design and its limits.

pub mod dns;
pub mod firewall;
pub mod lease;
pub mod netlink;
pub mod ranges;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sandpit_types::network::{Cidr, Egress, ParsedPolicy};
use serde::{Deserialize, Serialize};

pub use firewall::{Firewall, FirewallError, NameVerdict};
pub use lease::{BLOCK_PREFIX, Block, DEFAULT_LEASE_DIR, Lease, LeaseError};

/// The default pool daemons lease their blocks from: 128 blocks of 1021 sandboxes.
pub const DEFAULT_POOL: &str = "10.212.0.0/15";
/// The default cap on a sandbox's concurrent outbound connections (E2B's figure).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 2500;
/// The sandbox's end of its veth.
pub const SANDBOX_IFNAME: &str = "eth0";

/// Removes what a daemon whose state directory was `owner` left on the host: its firewall tables and
/// veths, for every block whose lease names `owner` and is not held (the daemon is gone). For test
/// teardown and operators' clean-up; a daemon does the same for its own block when it starts.
pub fn remove_leftovers(lease_dir: &Path, owner: &Path) -> usize {
    let owner = owner.display().to_string();
    remove_where(lease_dir, &|o| o == owner)
}

/// Removes what daemons left on the host whose state directory no longer exists (killed, their state
/// removed): their firewall tables and veths, for every such block nobody holds. Every daemon does this
/// when it starts, so that abandoned tables cannot pile up: each makes every `nft` call slower (a host with
/// a hundred of them took 5 s to list its ruleset, and every daemon start waited for that).
pub fn remove_abandoned(lease_dir: &Path) -> usize {
    remove_where(lease_dir, &|o| !o.is_empty() && !Path::new(o).exists())
}

/// Removes the tables and veths of every unheld block whose lease's owner passes `gone`.
fn remove_where(lease_dir: &Path, gone: &dyn Fn(&str) -> bool) -> usize {
    let mut removed = 0;
    for e in std::fs::read_dir(lease_dir).into_iter().flatten().flatten() {
        let path = e.path();
        let Some(tag) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".lock"))
            .map(str::to_owned)
        else {
            continue;
        };
        if !gone(&std::fs::read_to_string(&path).unwrap_or_default()) {
            continue;
        }
        let Ok(base) = u32::from_str_radix(&tag, 16) else {
            continue;
        };
        let block = Block {
            base: Ipv4Addr::from(base),
        };
        // Only when nobody holds the lease: a live daemon keeps its block.
        let Ok(Some(_held)) = lease::try_lock_path(&path) else {
            continue;
        };
        for link in netlink::links_with_prefix(&firewall::ifprefix(&block)) {
            let _ = netlink::delete_link(&link);
        }
        Firewall::remove_tables(&firewall::table_name(&block));
        let _ = std::fs::write(&path, b"");
        removed += 1;
    }
    removed
}

/// What the operator configures.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub pool: Cidr,
    pub lease_dir: PathBuf,
    /// Ranges taken out of the always-denied set (private networks, link-local, the host's addresses).
    pub opt_in: Vec<Cidr>,
    pub max_connections: u32,
    pub default_egress: Egress,
    /// Where the resolver forwards; the host's `/etc/resolv.conf` when empty.
    pub dns_upstreams: Vec<SocketAddr>,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            pool: Cidr::parse(DEFAULT_POOL).unwrap_or(Cidr::V4(Ipv4Addr::new(10, 212, 0, 0), 15)),
            lease_dir: DEFAULT_LEASE_DIR.into(),
            opt_in: Vec::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            default_egress: Egress::Allow,
            dns_upstreams: Vec::new(),
        }
    }
}

/// Why networking could not start or a sandbox could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    #[error("every sandbox address of this daemon's block is in use ({0} sandboxes)")]
    Exhausted(u32),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the host has no IPv4 resolver to forward DNS to (no nameserver in /etc/resolv.conf)")]
    NoResolver,
}

/// A sandbox's place in the daemon's network; persisted with the sandbox so that a restarted daemon
/// finds it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub slot: u32,
    /// The host end of the veth.
    pub host_if: String,
    /// The sandbox's address (`eth0`, a /32).
    pub addr: Ipv4Addr,
    /// The host end's address: the sandbox's default gateway and DNS resolver.
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

impl Attachment {
    /// The sandbox's `/etc/resolv.conf`.
    pub fn resolv_conf(&self) -> String {
        format!("nameserver {}\noptions edns0\n", self.gateway)
    }

    /// Creates the veth pair with its sandbox end inside the network namespace of `pid` (the sandbox's
    /// first process, not yet past its setup) and addresses the host end. The sandbox end is addressed
    /// from inside, by the sandbox's first process.
    pub fn create_link(&self, pid: i32) -> std::io::Result<()> {
        // A veth left by a sandbox whose namespace the kernel is still tearing down.
        if netlink::link_exists(&self.host_if) {
            netlink::delete_link(&self.host_if)?;
        }
        netlink::create_veth(&self.host_if, SANDBOX_IFNAME, pid, self.mtu)?;
        let _ = netlink::disable_ipv6(&self.host_if);
        netlink::add_peer_address(&self.host_if, self.gateway, self.addr)
    }
}

/// A live sandbox to restore at start: its attachment, policy and policy generation.
#[derive(Debug, Clone)]
pub struct LiveSandbox {
    pub attachment: Attachment,
    pub policy: Option<ParsedPolicy>,
    pub generation: u32,
}

#[derive(Debug, Default)]
struct Slots {
    /// Slots of live sandboxes, and freed slots still waiting for their firewall reset.
    used: HashSet<u32>,
    next: u32,
    /// Freed slots whose firewall reset is due (see [`Network::release`]).
    resetting: Vec<u32>,
}

/// Freed slots reset in one `nft` run at most; reaching it resets them at once.
const RESET_BATCH: usize = 64;

/// One daemon's sandbox network.
#[derive(Debug)]
pub struct Network {
    cfg: NetConfig,
    lease: Lease,
    fw: Arc<Firewall>,
    mtu: u32,
    slots: Mutex<Slots>,
    resolver: Arc<dns::Resolver>,
}

/// The MTU of the interface the host's default route leaves by (1500 when unknown), so that sandbox
/// packets never need fragmenting on the way out.
fn uplink_mtu() -> u32 {
    let dev = std::fs::read_to_string("/proc/net/route")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[1] == "00000000").then(|| f[0].to_owned())
        });
    dev.and_then(|d| std::fs::read_to_string(format!("/sys/class/net/{d}/mtu")).ok())
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or(1500)
}

impl Network {
    /// Leases a block, (re)builds the firewall with `live` sandboxes restored, removes veths of this
    /// block that belong to no live sandbox, and turns on IPv4 forwarding.
    pub fn start(
        cfg: NetConfig,
        owner: &Path,
        live: &[LiveSandbox],
    ) -> Result<Arc<Self>, NetError> {
        let upstreams = if cfg.dns_upstreams.is_empty() {
            dns::host_resolvers()
        } else {
            cfg.dns_upstreams.clone()
        };
        if upstreams.is_empty() {
            return Err(NetError::NoResolver);
        }
        // Fail early, and with the install hint, when nft is missing.
        firewall::nft("")?;
        let abandoned = remove_abandoned(&cfg.lease_dir);
        if abandoned > 0 {
            tracing::info!(
                blocks = abandoned,
                "removed the firewall tables and links of daemons whose state directory is gone"
            );
        }
        let tables = firewall::tables();
        let lease = lease::acquire(&cfg.lease_dir, cfg.pool, owner, &|b: &Block| {
            tables.contains(&format!("inet {}", firewall::table_name(b)))
        })?;
        let block = lease.block;
        // A different block than the live sandboxes were given: their links belong to another daemon
        // now (or to nobody); they cannot be restored.
        let live: Vec<&LiveSandbox> = live
            .iter()
            .filter(|l| block.slot_of(l.attachment.addr) == Some(l.attachment.slot))
            .collect();
        let fw = Arc::new(Firewall::new(firewall::FirewallConfig {
            block,
            pool: cfg.pool,
            opt_in: cfg.opt_in.clone(),
            max_connections: cfg.max_connections,
            default_egress: cfg.default_egress,
        }));
        let restore: Vec<(u32, Option<ParsedPolicy>, u32)> = live
            .iter()
            .map(|l| (l.attachment.slot, l.policy.clone(), l.generation))
            .collect();
        fw.install(&restore)?;
        let keep: HashSet<&str> = live.iter().map(|l| l.attachment.host_if.as_str()).collect();
        for stale in netlink::links_with_prefix(&firewall::ifprefix(&block)) {
            if !keep.contains(stale.as_str()) {
                let _ = netlink::delete_link(&stale);
            }
        }
        std::fs::write("/proc/sys/net/ipv4/ip_forward", b"1").map_err(|source| NetError::Io {
            what: "turning on IPv4 forwarding (/proc/sys/net/ipv4/ip_forward)".into(),
            source,
        })?;
        let resolver = dns::Resolver::new(fw.clone(), block, upstreams);
        tracing::info!(
            block = %block.cidr(),
            table = fw.table(),
            resumed = lease.resumed,
            "sandbox network ready"
        );
        Ok(Arc::new(Self {
            slots: Mutex::new(Slots {
                used: live.iter().map(|l| l.attachment.slot).collect(),
                next: 0,
                resetting: Vec::new(),
            }),
            cfg,
            lease,
            fw,
            mtu: uplink_mtu(),
            resolver,
        }))
    }

    pub fn block(&self) -> Block {
        self.lease.block
    }

    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    pub fn firewall(&self) -> &Arc<Firewall> {
        &self.fw
    }

    /// The resolver; run [`dns::Resolver::serve`] on the daemon's runtime.
    pub fn resolver(&self) -> Arc<dns::Resolver> {
        self.resolver.clone()
    }

    /// Takes a free slot and applies `policy` to it (no nftables work for the default policy). Returns
    /// the attachment and the policy generation.
    pub fn attach(&self, policy: Option<&ParsedPolicy>) -> Result<(Attachment, u32), NetError> {
        let block = self.lease.block;
        let slot = if let Some(slot) = self.take_slot() {
            slot
        } else {
            // Every slot is taken or waits for its reset: reset those now and look again.
            self.flush_resets();
            self.take_slot().ok_or(NetError::Exhausted(block.slots()))?
        };
        let att = Attachment {
            slot,
            host_if: firewall::ifname(&block, slot),
            addr: block.addr(slot),
            gateway: block.gateway(),
            mtu: self.mtu,
        };
        match self.fw.apply_new(slot, policy) {
            Ok(generation) => Ok((att, generation)),
            Err(e) => {
                self.free(slot);
                Err(e.into())
            }
        }
    }

    /// A free slot, now taken; round robin, so that a slot just freed (its conntrack entries, a veth the
    /// kernel is still tearing down) is the last to be reused.
    fn take_slot(&self) -> Option<u32> {
        let mut s = self.lock_slots();
        let n = self.lease.block.slots();
        let slot = (0..n)
            .map(|i| (s.next + i) % n)
            .find(|c| !s.used.contains(c))?;
        s.used.insert(slot);
        s.next = (slot + 1) % n;
        Some(slot)
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces a sandbox's policy; connections the new one forbids are cut. Returns the new generation.
    pub fn set_policy(&self, slot: u32, policy: Option<&ParsedPolicy>) -> Result<u32, NetError> {
        Ok(self.fw.apply(slot, policy)?)
    }

    /// Releases a sandbox's slot: its veth goes (if the kernel has not already taken it with the
    /// namespace), and the slot waits for its firewall reset — back to the default policy with a new
    /// generation, so that nothing of its conntrack state helps the next sandbox in it — before it is
    /// free again. Resets are batched ([`Network::flush_resets`]: by [`Network::housekeeping`], when
    /// [`RESET_BATCH`] are due, or when a create finds no free slot): each `nft` run costs a process
    /// start and a ruleset transaction, which one per delete made 4 % of the host's CPU in
    /// create/delete churn at 1,000 live sandboxes (docs/benchmarks.md, "Sandbox churn"). Until its
    /// reset a slot keeps its last policy, but no packet can carry its address: its veth is gone, and
    /// anti-spoofing ties the address to it.
    pub fn release(&self, att: &Attachment) {
        if let Err(e) = netlink::delete_link(&att.host_if) {
            tracing::warn!(link = %att.host_if, error = %e, "cannot delete a sandbox's veth");
        }
        let due = {
            let mut s = self.lock_slots();
            s.resetting.push(att.slot);
            s.resetting.len() >= RESET_BATCH
        };
        if due {
            self.flush_resets();
        }
    }

    /// Resets the firewall slots of released sandboxes (one `nft` transaction) and frees them. A
    /// failed reset is reported and the slots are freed all the same, as a failed reset of one slot
    /// always was: a sandbox must not hold a slot forever because nftables refused a change once.
    pub fn flush_resets(&self) {
        let due = std::mem::take(&mut self.lock_slots().resetting);
        if due.is_empty() {
            return;
        }
        if let Err(e) = self.fw.reset(&due) {
            tracing::warn!(slots = ?due, error = %e, "cannot reset freed firewall slots");
        }
        let mut s = self.lock_slots();
        for slot in due {
            s.used.remove(&slot);
        }
    }

    fn free(&self, slot: u32) {
        self.lock_slots().used.remove(&slot);
    }

    /// Called when the daemon stops: with no sandbox left, the firewall tables go too (a sandbox still
    /// running keeps its rules, so that it stays confined while no daemon runs).
    pub fn shutdown(&self) {
        self.flush_resets();
        let empty = self.lock_slots().used.is_empty();
        if empty {
            self.fw.uninstall();
        }
    }

    /// Removes expired DNS pins and resets released slots; call every few seconds.
    pub fn housekeeping(&self) {
        self.flush_resets();
        self.fw.expire_pins();
    }
}
