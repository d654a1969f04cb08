//! The egress firewall: one nftables table per daemon (`inet sandpit_<block>` and `arp
//! sandpit_<block>`), in the host's network namespace, where nothing a sandbox does can reach it.
//!
//! The rules are fixed when the daemon starts; everything per sandbox is a **set element** keyed by the
//! sandbox's address (the anti-spoofing rule guarantees that a packet's source address is its sandbox):
//!
//! * `antispoof` (`ifname . ipv4_addr`): a packet from veth `X` must carry `X`'s sandbox address (IPv4
//!   and ARP); IPv6 from a sandbox is dropped outright.
//! * `blocked4`: always denied, whatever a policy says (host-side ranges minus the operator's opt-ins).
//!   Traffic to any of the host's own addresses arrives on the `input` hook and is refused there, except
//!   DNS to the daemon's resolver.
//! * `allow4` / `deny4` (`sandbox . range`), `deny_default` (sandboxes with `egress: deny`) and
//!   `pin4` (`sandbox . address` the resolver answered for an allowed domain): the policy.
//! * `generation` / `current`: a policy generation per sandbox, stored in each connection's conntrack mark when
//!   it is admitted. Established traffic is accepted without a policy lookup only while its mark is the
//!   sandbox's current generation; a policy change bumps the generation, so every open connection is
//!   checked again on its next packet, and one the new policy forbids is reset (`tcp reset`).
//! * `conns`: `ct count` per sandbox address: at most `max_connections` at once.
//!
//! Changes are applied as one `nft -f -` transaction each (atomic: a failed change leaves the previous
//! policy whole). The defaults are written for every slot when the table is built, so creating a
//! sandbox with the daemon's default policy costs no nftables work at all.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sandpit_types::network::{Cidr, Egress, ParsedPolicy, Rule};

use crate::lease::Block;
use crate::ranges::{self, Range};

/// A failed nftables change.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error(
        "nftables is not usable: {0}; install it (`apt-get install nftables`) or start the daemon with \
         `--network off`"
    )]
    NoNft(String),
    #[error("nftables refused a change: {0}")]
    Nft(String),
}

/// Runs one nftables script as a single transaction.
pub fn nft(script: &str) -> Result<(), FirewallError> {
    let mut child = Command::new(nft_path())
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| FirewallError::NoNft(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| FirewallError::Nft(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        let msg = String::from_utf8_lossy(&out.stderr);
        let first: Vec<&str> = msg.lines().take(3).collect();
        Err(FirewallError::Nft(first.join(" / ")))
    }
}

/// `nft` from `PATH`, or `/usr/sbin/nft` (not on a non-login `PATH`).
fn nft_path() -> &'static str {
    if std::path::Path::new("/usr/sbin/nft").exists() {
        "/usr/sbin/nft"
    } else {
        "nft"
    }
}

/// The names of the host's nftables tables (`family name`).
pub fn tables() -> Vec<String> {
    Command::new(nft_path())
        .args(["list", "tables"])
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.strip_prefix("table "))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The firewall's fixed parameters.
#[derive(Debug, Clone)]
pub struct FirewallConfig {
    pub block: Block,
    /// The whole sandbox pool of every daemon (always denied: other sandboxes).
    pub pool: Cidr,
    /// Ranges the operator took out of the always-denied set.
    pub opt_in: Vec<Cidr>,
    pub max_connections: u32,
    pub default_egress: Egress,
}

/// What is applied for one sandbox slot.
#[derive(Debug, Clone, Default)]
struct Slot {
    generation: u32,
    deny_default: bool,
    allow: Vec<Range>,
    deny: Vec<Range>,
    /// Addresses the resolver answered for allowed names: address → (expiry, name).
    pins: HashMap<Ipv4Addr, (Instant, String)>,
    policy: Option<ParsedPolicy>,
}

/// One daemon's firewall table.
#[derive(Debug)]
pub struct Firewall {
    cfg: FirewallConfig,
    table: String,
    ifprefix: String,
    blocked: Vec<Range>,
    slots: Mutex<HashMap<u32, Slot>>,
}

/// The prefix of every host-side veth name of `block`.
pub fn ifprefix(block: &Block) -> String {
    format!("sp{}-", block.tag())
}

/// The host-side veth name of `slot`.
pub fn ifname(block: &Block, slot: u32) -> String {
    format!("{}{slot:x}", ifprefix(block))
}

/// The nftables table name of `block`.
pub fn table_name(block: &Block) -> String {
    format!("sandpit_{}", block.tag())
}

fn fmt_range(r: Range) -> String {
    if r.0 == r.1 {
        Ipv4Addr::from(r.0).to_string()
    } else {
        format!("{}-{}", Ipv4Addr::from(r.0), Ipv4Addr::from(r.1))
    }
}

/// The decision of the resolver for one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameVerdict {
    /// Resolve and pin the answers for this sandbox.
    AllowPinned,
    /// Resolve; nothing to pin.
    Resolve,
    /// Answer NXDOMAIN.
    Deny,
}

impl Firewall {
    pub fn new(cfg: FirewallConfig) -> Self {
        let mut always: Vec<Range> = ranges::ALWAYS_DENIED_V4
            .iter()
            .filter_map(|c| Cidr::parse(c).ok()?.range_v4())
            .collect();
        always.extend(cfg.pool.range_v4());
        let opt_in: Vec<Range> = cfg.opt_in.iter().filter_map(Cidr::range_v4).collect();
        let blocked = ranges::subtract(&ranges::merge(always), &ranges::merge(opt_in));
        Self {
            table: table_name(&cfg.block),
            ifprefix: ifprefix(&cfg.block),
            blocked,
            cfg,
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Whether `addr` is in the always-denied set (answers in it are dropped by the resolver: DNS
    /// rebinding protection).
    pub fn is_blocked(&self, addr: Ipv4Addr) -> bool {
        let a = u32::from(addr);
        self.blocked.iter().any(|&(s, e)| s <= a && a <= e)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// (Re)builds the table: every slot at the default policy, then `live` sandboxes' policies and
    /// generations restored. Atomic: the old table (a restart's, or a dead daemon's leftovers) is
    /// replaced in the same transaction.
    #[allow(clippy::too_many_lines, clippy::many_single_char_names)] // one ruleset, read top to bottom
    pub fn install(&self, live: &[(u32, Option<ParsedPolicy>, u32)]) -> Result<(), FirewallError> {
        let b = self.cfg.block;
        let t = &self.table;
        let p = &self.ifprefix;
        let g = b.gateway();
        let n = b.slots();
        let mut slots = self.lock();
        slots.clear();
        let live_gen: HashMap<u32, u32> = live.iter().map(|(s, _, g)| (*s, (*g).max(1))).collect();
        let gen_of = |s: u32| live_gen.get(&s).copied().unwrap_or(1);
        let join = |f: &dyn Fn(u32) -> String| (0..n).map(f).collect::<Vec<_>>().join(", ");
        let antispoof = join(&|s| format!("\"{}\" . {}", ifname(&b, s), b.addr(s)));
        let current = join(&|s| format!("{} . {}", b.addr(s), gen_of(s)));
        let gens = join(&|s| format!("{} : {}", b.addr(s), gen_of(s)));
        let deny_default = self.cfg.default_egress == Egress::Deny;
        let blocked: Vec<String> = self.blocked.iter().map(|r| fmt_range(*r)).collect();
        let opt_in: Vec<String> = self
            .cfg
            .opt_in
            .iter()
            .filter(|c| matches!(c, Cidr::V4(..)))
            .map(ToString::to_string)
            .collect();
        let mut s = String::new();
        let _ = write!(
            s,
            "table inet {t} {{}}\ndelete table inet {t}\ntable arp {t} {{}}\ndelete table arp {t}\n\
             table inet {t} {{\n\
             set blocked4 {{ type ipv4_addr; flags interval; {blocked_elems} }}\n\
             set optin4 {{ type ipv4_addr; flags interval; {optin_elems} }}\n\
             set allow4 {{ type ipv4_addr . ipv4_addr; flags interval; }}\n\
             set deny4 {{ type ipv4_addr . ipv4_addr; flags interval; }}\n\
             set pin4 {{ type ipv4_addr . ipv4_addr; }}\n\
             set deny_default {{ type ipv4_addr; {deny_elems} }}\n\
             set current {{ type ipv4_addr . mark; elements = {{ {current} }} }}\n\
             map generation {{ type ipv4_addr : mark; elements = {{ {gens} }} }}\n\
             set antispoof {{ type ifname . ipv4_addr; elements = {{ {antispoof} }} }}\n\
             set conns {{ type ipv4_addr; size 65535; flags dynamic; }}\n\
             chain prerouting {{ type filter hook prerouting priority -150; policy accept;\n\
               iifname \"{p}*\" meta nfproto ipv6 drop\n\
               iifname \"{p}*\" iifname . ip saddr != @antispoof drop\n\
             }}\n\
             chain input {{ type filter hook input priority 0; policy accept;\n\
               iifname \"{p}*\" jump to_host\n\
             }}\n\
             chain to_host {{\n\
               ip daddr {g} udp dport 53 accept\n\
               ip daddr {g} tcp dport 53 accept\n\
               ip daddr @optin4 goto from_sandbox\n\
               goto refuse\n\
             }}\n\
             chain forward {{ type filter hook forward priority 0; policy accept;\n\
               iifname \"{p}*\" jump from_sandbox\n\
               oifname \"{p}*\" ct state established,related accept\n\
               oifname \"{p}*\" drop\n\
             }}\n\
             chain from_sandbox {{\n\
               ct state established ip saddr . ct mark @current accept\n\
               ct state related accept\n\
               ip daddr @blocked4 goto refuse\n\
               ip saddr . ip daddr @allow4 goto admit\n\
               ip saddr . ip daddr @pin4 goto admit\n\
               ip saddr . ip daddr @deny4 goto refuse\n\
               ip saddr @deny_default goto refuse\n\
               goto admit\n\
             }}\n\
             chain admit {{\n\
               ct state new add @conns {{ ip saddr ct count over {max} }} goto refuse\n\
               ct mark set ip saddr map @generation\n\
               accept\n\
             }}\n\
             chain refuse {{\n\
               meta l4proto tcp reject with tcp reset\n\
               reject with icmpx admin-prohibited\n\
             }}\n\
             chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n\
               ip saddr {block} oifname != \"{p}*\" masquerade\n\
             }}\n\
             }}\n\
             table arp {t} {{\n\
             set antispoof {{ type ifname . ipv4_addr; elements = {{ {antispoof} }} }}\n\
             chain input {{ type filter hook input priority 0; policy accept;\n\
               iifname \"{p}*\" iifname . arp saddr ip != @antispoof drop\n\
             }}\n\
             }}\n",
            blocked_elems = elems(&blocked),
            optin_elems = elems(&opt_in),
            deny_elems = if deny_default {
                format!("elements = {{ {} }}", join(&|s| b.addr(s).to_string()))
            } else {
                String::new()
            },
            max = self.cfg.max_connections,
            block = b.cidr(),
        );
        nft(&s)?;
        for s in 0..n {
            slots.insert(
                s,
                Slot {
                    generation: gen_of(s),
                    deny_default,
                    ..Slot::default()
                },
            );
        }
        drop(slots);
        for (slot, policy, _) in live {
            if let Some(p) = policy {
                self.apply_inner(*slot, Some(p), false)?;
            }
        }
        Ok(())
    }

    /// Removes the daemon's tables.
    pub fn uninstall(&self) {
        Self::remove_tables(&self.table);
    }

    /// Removes the `inet` and `arp` tables called `t`, if they exist.
    pub fn remove_tables(t: &str) {
        let _ = nft(&format!(
            "table inet {t} {{}}\ndelete table inet {t}\ntable arp {t} {{}}\ndelete table arp {t}\n"
        ));
    }

    /// Applies `policy` (`None`: the daemon's default) to `slot` and cuts every connection the new
    /// policy forbids. Returns the slot's new generation (persist it to restore after a restart).
    pub fn apply(&self, slot: u32, policy: Option<&ParsedPolicy>) -> Result<u32, FirewallError> {
        self.apply_inner(slot, policy, true)
    }

    /// Applies a policy without re-checking open connections: a new sandbox has none.
    pub fn apply_new(
        &self,
        slot: u32,
        policy: Option<&ParsedPolicy>,
    ) -> Result<u32, FirewallError> {
        self.apply_inner(slot, policy, false)
    }

    fn apply_inner(
        &self,
        slot: u32,
        policy: Option<&ParsedPolicy>,
        bump: bool,
    ) -> Result<u32, FirewallError> {
        let mut slots = self.lock();
        let cur = slots.get(&slot).cloned().unwrap_or_default();
        let mut script = String::new();
        let next = self.change(&mut script, slot, &cur, policy, bump);
        if !script.is_empty() {
            nft(&script)?;
        }
        let generation = next.generation;
        slots.insert(slot, next);
        Ok(generation)
    }

    /// Puts `slots` (freed by sandboxes that are gone) back to the default policy with a new generation
    /// each, in one transaction: what [`Firewall::apply`] with `None` does for one slot, for many at
    /// the cost of one `nft` run.
    pub fn reset(&self, slots: &[u32]) -> Result<(), FirewallError> {
        let mut table = self.lock();
        let mut script = String::new();
        let next: Vec<(u32, Slot)> = slots
            .iter()
            .map(|&slot| {
                let cur = table.get(&slot).cloned().unwrap_or_default();
                (slot, self.change(&mut script, slot, &cur, None, true))
            })
            .collect();
        if !script.is_empty() {
            nft(&script)?;
        }
        table.extend(next);
        Ok(())
    }

    /// Appends to `s` the nftables commands that take `slot` from `cur` to `policy` (`None`: the
    /// daemon's default), with a new generation when `bump`; returns the slot's new state.
    fn change(
        &self,
        s: &mut String,
        slot: u32,
        cur: &Slot,
        policy: Option<&ParsedPolicy>,
        bump: bool,
    ) -> Slot {
        let addr = self.cfg.block.addr(slot);
        let t = &self.table;
        let egress = policy.map_or(self.cfg.default_egress, |p| p.egress);
        let v4 = |rules: &[Rule]| {
            ranges::merge(
                ParsedPolicy::cidrs(rules)
                    .filter_map(|c| c.range_v4())
                    .collect(),
            )
        };
        let (allow, deny) =
            policy.map_or((Vec::new(), Vec::new()), |p| (v4(&p.allow), v4(&p.deny)));
        let keep_pin = |name: &str| policy.is_some_and(|p| ParsedPolicy::names(&p.allow, name));
        let next = Slot {
            generation: if bump {
                cur.generation.wrapping_add(1).max(1)
            } else {
                cur.generation.max(1)
            },
            deny_default: egress == Egress::Deny,
            allow,
            deny,
            pins: cur
                .pins
                .iter()
                .filter(|(_, (_, name))| keep_pin(name))
                .map(|(a, v)| (*a, v.clone()))
                .collect(),
            policy: policy.cloned(),
        };
        diff(s, t, "allow4", addr, &cur.allow, &next.allow);
        diff(s, t, "deny4", addr, &cur.deny, &next.deny);
        let gone: Vec<String> = cur
            .pins
            .keys()
            .filter(|a| !next.pins.contains_key(a))
            .map(|a| format!("{addr} . {a}"))
            .collect();
        if !gone.is_empty() {
            let _ = writeln!(s, "delete element inet {t} pin4 {{ {} }}", gone.join(", "));
        }
        if cur.deny_default != next.deny_default {
            let verb = if next.deny_default { "add" } else { "delete" };
            let _ = writeln!(s, "{verb} element inet {t} deny_default {{ {addr} }}");
        }
        if next.generation != cur.generation {
            let _ = writeln!(
                s,
                "delete element inet {t} current {{ {addr} . {old} }}\n\
                 add element inet {t} current {{ {addr} . {new} }}\n\
                 delete element inet {t} generation {{ {addr} }}\n\
                 add element inet {t} generation {{ {addr} : {new} }}",
                old = cur.generation,
                new = next.generation
            );
        }
        next
    }

    /// What the resolver does with a query for `name` from `slot`.
    pub fn verdict(&self, slot: u32, name: &str) -> NameVerdict {
        let slots = self.lock();
        let Some(s) = slots.get(&slot) else {
            return NameVerdict::Deny;
        };
        let Some(p) = &s.policy else {
            return if self.cfg.default_egress == Egress::Deny {
                NameVerdict::Deny
            } else {
                NameVerdict::Resolve
            };
        };
        if ParsedPolicy::names(&p.allow, name) {
            NameVerdict::AllowPinned
        } else if ParsedPolicy::names(&p.deny, name) || p.egress == Egress::Deny {
            NameVerdict::Deny
        } else {
            NameVerdict::Resolve
        }
    }

    /// Lets `slot` reach `addrs` (answers for the allowed `name`) for `ttl`.
    pub fn pin(
        &self,
        slot: u32,
        name: &str,
        addrs: &[Ipv4Addr],
        ttl: Duration,
    ) -> Result<(), FirewallError> {
        let addr = self.cfg.block.addr(slot);
        let t = &self.table;
        let mut slots = self.lock();
        let Some(s) = slots.get_mut(&slot) else {
            return Ok(());
        };
        let until = Instant::now() + ttl;
        let fresh: BTreeSet<Ipv4Addr> = addrs
            .iter()
            .filter(|a| !s.pins.contains_key(a))
            .copied()
            .collect();
        if !fresh.is_empty() {
            let el: Vec<String> = fresh.iter().map(|a| format!("{addr} . {a}")).collect();
            nft(&format!(
                "add element inet {t} pin4 {{ {} }}\n",
                el.join(", ")
            ))?;
        }
        for a in addrs {
            let e = s.pins.entry(*a).or_insert((until, name.to_owned()));
            if e.0 < until {
                *e = (until, name.to_owned());
            }
        }
        Ok(())
    }

    /// Removes pins past their time (connections already open stay open).
    pub fn expire_pins(&self) {
        let now = Instant::now();
        let t = &self.table;
        let mut slots = self.lock();
        let mut gone = Vec::new();
        for (slot, s) in slots.iter_mut() {
            let addr = self.cfg.block.addr(*slot);
            s.pins.retain(|a, (until, _)| {
                let keep = *until > now;
                if !keep {
                    gone.push(format!("{addr} . {a}"));
                }
                keep
            });
        }
        if !gone.is_empty() {
            if let Err(e) = nft(&format!(
                "delete element inet {t} pin4 {{ {} }}\n",
                gone.join(", ")
            )) {
                tracing::warn!(error = %e, "cannot remove expired DNS pins");
            }
        }
    }
}

fn elems(v: &[String]) -> String {
    if v.is_empty() {
        String::new()
    } else {
        format!("elements = {{ {} }}", v.join(", "))
    }
}

fn diff(s: &mut String, t: &str, set: &str, addr: Ipv4Addr, old: &[Range], new: &[Range]) {
    let gone: Vec<String> = old
        .iter()
        .filter(|r| !new.contains(r))
        .map(|r| format!("{addr} . {}", fmt_range(*r)))
        .collect();
    let added: Vec<String> = new
        .iter()
        .filter(|r| !old.contains(r))
        .map(|r| format!("{addr} . {}", fmt_range(*r)))
        .collect();
    if !gone.is_empty() {
        let _ = writeln!(s, "delete element inet {t} {set} {{ {} }}", gone.join(", "));
    }
    if !added.is_empty() {
        let _ = writeln!(s, "add element inet {t} {set} {{ {} }}", added.join(", "));
    }
}
