//! The network attempts (issue 16): what root (and `user`) inside a sandbox with a network link can try
//! against the host-side policy — raw sockets with forged sources, raw SYNs to denied addresses, ARP and
//! IPv6 neighbour-discovery spoofing of the host end of the veth, IPv6 egress, changing routes,
//! addresses and firewall rules inside, another DNS server, `/etc/hosts` and IP literals against a
//! domain rule, and DNS rebinding.
//!
//! The test hands in the addresses it set up (`--net-*`, see [`NetCtx`]): test hosts in network
//! namespaces on the host (nothing here is sent off the machine), the sandbox's own address and gateway,
//! and the neighbour sandbox's server. Every verdict that can be judged from inside has a positive
//! control first (the allowed test host answers, the gateway answers an honest ARP request, the name
//! the policy allows is reachable): an attempt whose control fails is "not blocked" (could not be
//! judged), never a pass. Packets whose fate only the receiver knows (a datagram with a forged source
//! address) carry `--net-tag`; the test looks for them in the test hosts' log.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Ctx, Outcome, denied, err_str, errno};

const TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for answers to raw packets.
const LISTEN: Duration = Duration::from_millis(1500);
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;

/// The network facts the test hands in.
#[derive(Debug, Default)]
pub struct NetCtx {
    /// The sandbox's own address, as the daemon assigned it (`--net-addr`).
    addr: Option<Ipv4Addr>,
    /// Its gateway: the host end of the veth, also its DNS resolver (`--net-gateway`).
    gateway: Option<Ipv4Addr>,
    /// A server in the neighbour sandbox (`--net-other=IP:PORT`).
    other: Option<SocketAddrV4>,
    /// A test host the policy allows by CIDR, with an echo on 9, a UDP log on 9 and a DNS server on 53
    /// that answers every name with [`Self::denied`] (`--net-allowed`).
    allowed: Option<Ipv4Addr>,
    /// A public test host the policy does not allow (`--net-denied`).
    denied: Option<Ipv4Addr>,
    /// Test hosts in always-denied ranges: private, shared, link-local (`--net-private`, repeatable).
    private: Vec<Ipv4Addr>,
    /// IPv6 test hosts (`--net-v6`, repeatable).
    v6: Vec<Ipv6Addr>,
    /// A name the policy allows (`--net-name`).
    name: Option<String>,
    /// A name the policy allows whose answers alternate between a public and a private address
    /// (`--net-rebind`).
    rebind: Option<String>,
    /// Marks the datagrams the host checks look for (`--net-tag`).
    tag: String,
}

impl NetCtx {
    /// Takes `--KEY=VALUE` when it is one of ours.
    pub fn set(&mut self, key: &str, v: &str) -> bool {
        match key {
            "net-addr" => self.addr = v.parse().ok(),
            "net-gateway" => self.gateway = v.parse().ok(),
            "net-other" => self.other = v.parse().ok(),
            "net-allowed" => self.allowed = v.parse().ok(),
            "net-denied" => self.denied = v.parse().ok(),
            "net-private" => self.private.extend(v.parse::<Ipv4Addr>().ok()),
            "net-v6" => self.v6.extend(v.parse::<Ipv6Addr>().ok()),
            "net-name" => self.name = Some(v.to_owned()),
            "net-rebind" => self.rebind = Some(v.to_owned()),
            "net-tag" => v.clone_into(&mut self.tag),
            _ => return false,
        }
        true
    }
}

fn missing(what: &str) -> Outcome {
    (false, format!("no --net-{what} given: cannot judge"))
}

fn v4(a: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((a, port))
}

/// Connects, sends `ping`, expects it back.
fn echo(addr: SocketAddr) -> Result<(), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(TIMEOUT));
    s.write_all(b"ping")
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut b = [0u8; 4];
    s.read_exact(&mut b)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    if &b == b"ping" {
        Ok(())
    } else {
        Err(format!("{addr} answered {b:?}"))
    }
}

/// Blocked when none of `targets` answers an echo.
fn none_reachable(targets: &[SocketAddr]) -> (bool, Vec<String>) {
    let mut notes = Vec::new();
    let mut blocked = true;
    for t in targets {
        match echo(*t) {
            Ok(()) => {
                blocked = false;
                notes.push(format!("REACHED {t}"));
            }
            Err(e) => notes.push(e),
        }
    }
    (blocked, notes)
}

/// The IPv4 addresses `name` resolves to through the sandbox's resolver configuration.
fn resolve(name: &str) -> Result<Vec<Ipv4Addr>, String> {
    let addrs = (name, 0u16)
        .to_socket_addrs()
        .map_err(|e| format!("resolve {name}: {e}"))?;
    let mut v: Vec<Ipv4Addr> = addrs
        .filter_map(|a| match a {
            SocketAddr::V4(a) => Some(*a.ip()),
            SocketAddr::V6(_) => None,
        })
        .collect();
    v.dedup();
    Ok(v)
}

/// A control that must hold before an attempt can be judged: the allowed test host answers.
fn control_allowed(n: &NetCtx) -> Result<Ipv4Addr, Outcome> {
    let a = n.allowed.ok_or_else(|| missing("allowed"))?;
    echo(v4(a, 9)).map_err(|e| {
        (
            false,
            format!("control: the allowed test host did not answer ({e}): cannot judge"),
        )
    })?;
    Ok(a)
}

// ---------------------------------------------------------------------------------------------------
// raw sockets and packets

fn socket(domain: i32, ty: i32, proto: i32) -> Result<OwnedFd, i32> {
    // SAFETY: socket(2) with plain arguments; the descriptor is owned at once.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        Err(errno())
    } else {
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// A raw socket, or the verdict on why not: refused for privilege is blocked (`user`), anything else
/// could not be judged.
fn raw_socket(domain: i32, ty: i32, proto: i32, what: &str) -> Result<OwnedFd, Outcome> {
    socket(domain, ty, proto).map_err(|e| {
        (
            denied(e),
            format!(
                "{what}: {}{}",
                err_str(e),
                if denied(e) { "" } else { " (not a refusal)" }
            ),
        )
    })
}

fn sockaddr_in(a: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    // SAFETY: plain data; all-zero is valid.
    let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = port.to_be();
    s.sin_addr.s_addr = u32::from(a).to_be();
    s
}

fn send_v4(fd: &OwnedFd, buf: &[u8], to: Ipv4Addr) -> Result<(), String> {
    let sa = sockaddr_in(to, 0);
    // SAFETY: `buf` and `sa` are valid for the given lengths.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            0,
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if n < 0 { Err(err_str(errno())) } else { Ok(()) }
}

fn sockaddr_in6(a: Ipv6Addr, scope: u32) -> libc::sockaddr_in6 {
    // SAFETY: plain data; all-zero is valid.
    let mut s: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    s.sin6_addr.s6_addr = a.octets();
    s.sin6_scope_id = scope;
    s
}

fn send_v6(fd: &OwnedFd, buf: &[u8], to: Ipv6Addr, scope: u32) -> Result<(), String> {
    let sa = sockaddr_in6(to, scope);
    // SAFETY: `buf` and `sa` are valid for the given lengths.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            0,
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    if n < 0 { Err(err_str(errno())) } else { Ok(()) }
}

/// Receives one packet within `left`, with the sender's address bytes (`sockaddr_*` as raw bytes).
fn recv_within(fd: &OwnedFd, buf: &mut [u8], left: Duration) -> Option<(usize, [u8; 128])> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&raw mut pfd, 1, ms) } <= 0 {
        return None;
    }
    let mut from = [0u8; 128];
    let mut len = from.len() as libc::socklen_t;
    // SAFETY: `buf` and `from` are valid for their lengths.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            from.as_mut_ptr().cast(),
            &raw mut len,
        )
    };
    usize::try_from(n).ok().map(|n| (n, from))
}

/// The Internet checksum of `data` after `init` (a pseudo-header's sum).
fn checksum(init: u32, data: &[u8]) -> u16 {
    let mut sum = init;
    for c in data.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sum_words(b: &[u8]) -> u32 {
    b.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// An IPv4 header followed by a UDP datagram.
fn udp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let ulen = 8 + payload.len();
    let mut udp = Vec::with_capacity(ulen);
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&(ulen as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(ulen as u16).to_be_bytes());
    let c = checksum(sum_words(&pseudo), &udp);
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + ulen) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(0, &ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&udp);
    ip
}

/// An IPv6 header followed by a UDP datagram.
fn udp6(src: Ipv6Addr, dst: Ipv6Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let ulen = 8 + payload.len();
    let mut udp = Vec::with_capacity(ulen);
    udp.extend_from_slice(&40_002u16.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&(ulen as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(ulen as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 17]);
    let c = checksum(sum_words(&pseudo), &udp);
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(ulen as u16).to_be_bytes());
    ip.extend_from_slice(&[17, 64]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(&udp);
    ip
}

/// A TCP SYN header (no options) from `src:sport` to `dst:dport`, checksummed.
fn tcp_syn(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&0x5a5a_0001u32.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&[0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0]);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    let c = checksum(sum_words(&pseudo), &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// `eth0`'s index, MAC address and IPv4 address.
fn eth0() -> Result<(i32, [u8; 6], Option<Ipv4Addr>), String> {
    let s = socket(libc::AF_INET, libc::SOCK_DGRAM, 0).map_err(err_str)?;
    // SAFETY: plain data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in ifr.ifr_name.iter_mut().zip(b"eth0") {
        *d = *b as libc::c_char;
    }
    // SAFETY: ioctls on a valid socket with a valid ifreq; the union member read is the one the
    // request fills.
    unsafe {
        if libc::ioctl(s.as_raw_fd(), libc::SIOCGIFINDEX, &raw mut ifr) < 0 {
            return Err(format!("SIOCGIFINDEX eth0: {}", err_str(errno())));
        }
        let index = ifr.ifr_ifru.ifru_ifindex;
        if libc::ioctl(s.as_raw_fd(), libc::SIOCGIFHWADDR, &raw mut ifr) < 0 {
            return Err(format!("SIOCGIFHWADDR eth0: {}", err_str(errno())));
        }
        let mut mac = [0u8; 6];
        for (m, b) in mac.iter_mut().zip(ifr.ifr_ifru.ifru_hwaddr.sa_data) {
            *m = b as u8;
        }
        let addr = if libc::ioctl(s.as_raw_fd(), libc::SIOCGIFADDR, &raw mut ifr) < 0 {
            None
        } else {
            // A sockaddr_in in a sockaddr: the port, then the address.
            let d = ifr.ifr_ifru.ifru_addr.sa_data;
            Some(Ipv4Addr::new(
                d[2] as u8, d[3] as u8, d[4] as u8, d[5] as u8,
            ))
        };
        Ok((index, mac, addr))
    }
}

/// The MAC address of the gateway, from the sandbox's ARP cache (filled by a datagram to its resolver).
fn gateway_mac(gw: Ipv4Addr) -> Option<[u8; 6]> {
    if let Ok(s) = UdpSocket::bind("0.0.0.0:0") {
        let _ = s.send_to(b"\0", (gw, 53));
    }
    for _ in 0..20 {
        let arp = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
        for l in arp.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() > 3 && f[0] == gw.to_string() && f[3] != "00:00:00:00:00:00" {
                let mut mac = [0u8; 6];
                for (m, h) in mac.iter_mut().zip(f[3].split(':')) {
                    *m = u8::from_str_radix(h, 16).ok()?;
                }
                return Some(mac);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// An `AF_PACKET` socket on `eth0` for `proto` frames.
fn packet_socket(proto: u16, index: i32) -> Result<OwnedFd, Outcome> {
    let fd = raw_socket(
        libc::AF_PACKET,
        libc::SOCK_RAW,
        i32::from(proto.to_be()),
        "socket(AF_PACKET)",
    )?;
    // SAFETY: plain data; all-zero is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto.to_be();
    sll.sll_ifindex = index;
    // SAFETY: binds our socket to a valid sockaddr_ll.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err((
            false,
            format!("bind(AF_PACKET, eth0): {}", err_str(errno())),
        ));
    }
    Ok(fd)
}

fn send_frame(fd: &OwnedFd, frame: &[u8]) -> Result<(), String> {
    // SAFETY: `frame` is valid for its length; the socket is bound to an interface.
    let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    if n < 0 { Err(err_str(errno())) } else { Ok(()) }
}

fn ether(dst: [u8; 6], src: [u8; 6], ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ty.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An ARP packet (Ethernet/IPv4): `op` 1 request, 2 reply.
fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa.octets());
    a
}

// ---------------------------------------------------------------------------------------------------
// attempts

/// The sandbox's namespace holds loopback and its own end of the veth, with the address the daemon gave
/// it: no host interface.
pub fn interfaces(ctx: &Ctx) -> Outcome {
    let dev = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    let expected: &[&str] = if ctx.net.addr.is_some() {
        &["lo", "eth0"]
    } else {
        &["lo"]
    };
    let only = !ifaces.is_empty() && ifaces.iter().all(|i| expected.contains(i));
    let addr = eth0().ok().and_then(|(_, _, a)| a);
    let addr_ok = ctx.net.addr.is_none() || addr == ctx.net.addr;
    (
        only && addr_ok,
        format!(
            "interfaces: {ifaces:?}; eth0 address {} (the daemon assigned {})",
            addr.map_or("none".into(), |a| a.to_string()),
            ctx.net.addr.map_or("none".into(), |a| a.to_string())
        ),
    )
}

/// Private, shared and link-local test hosts, the neighbour sandbox's server and the host's ports on the
/// gateway address: all refused, while the allowed test host answers.
pub fn always_denied(ctx: &Ctx) -> Outcome {
    let n = &ctx.net;
    let allowed = match control_allowed(n) {
        Ok(a) => a,
        Err(o) => return o,
    };
    let mut targets: Vec<SocketAddr> = n.private.iter().map(|a| v4(*a, 9)).collect();
    targets.extend(n.other.map(SocketAddr::V4));
    if let Some(g) = n.gateway {
        for p in [ctx.daemon_port, ctx.listener_port, Some(22)]
            .into_iter()
            .flatten()
        {
            targets.push(v4(g, p));
        }
    }
    if targets.len() < 3 {
        return missing("private / --net-other / --net-gateway");
    }
    let (blocked, notes) = none_reachable(&targets);
    (
        blocked,
        format!("control {allowed}:9 answered; {}", notes.join("; ")),
    )
}

/// UDP datagrams with forged source addresses (another sandbox, the gateway, a public host), as IP
/// packets on a raw socket and as Ethernet frames on a packet socket, beside a control datagram from
/// the sandbox's own address. Root may send them (`CAP_NET_RAW` is kept); the host's anti-spoofing
/// rule must drop the forged ones: the test checks what reached the test host.
pub fn forged_source(ctx: &Ctx) -> Outcome {
    let n = &ctx.net;
    let (Some(own), Some(allowed), Some(gw), Some(other), Some(public)) =
        (n.addr, n.allowed, n.gateway, n.other, n.denied)
    else {
        return missing("addr / allowed / gateway / other / denied");
    };
    let raw = match raw_socket(
        libc::AF_INET,
        libc::SOCK_RAW,
        libc::IPPROTO_RAW,
        "socket(AF_INET, SOCK_RAW)",
    ) {
        Ok(fd) => fd,
        Err(o) => return o,
    };
    let tag = &n.tag;
    let mut notes = Vec::new();
    let ctl = udp4(own, allowed, 40_000, 9, format!("ctl-{tag}").as_bytes());
    if let Err(e) = send_v4(&raw, &ctl, allowed) {
        return (false, format!("the control datagram was not sent: {e}"));
    }
    let forged = [
        (*other.ip(), "sandbox"),
        (gw, "gateway"),
        (public, "public"),
    ];
    for (src, label) in forged {
        let p = udp4(
            src,
            allowed,
            40_001,
            9,
            format!("spoof-{tag}-{label}").as_bytes(),
        );
        notes.push(match send_v4(&raw, &p, allowed) {
            Ok(()) => format!("sent from {src}"),
            Err(e) => format!("from {src}: {e}"),
        });
    }
    // The same at the link layer.
    match (eth0(), gateway_mac(gw)) {
        (Ok((index, mac, _)), Some(gmac)) => match packet_socket(ETH_P_IP, index) {
            Ok(fd) => {
                let p = udp4(
                    *other.ip(),
                    allowed,
                    40_001,
                    9,
                    format!("spoof-{tag}-frame").as_bytes(),
                );
                notes.push(match send_frame(&fd, &ether(gmac, mac, ETH_P_IP, &p)) {
                    Ok(()) => "sent an Ethernet frame from the neighbour's address".into(),
                    Err(e) => format!("frame: {e}"),
                });
            }
            Err((_, d)) => notes.push(d),
        },
        (Err(e), _) => notes.push(e),
        (_, None) => notes.push("no gateway MAC in the ARP cache".into()),
    }
    (
        true,
        format!(
            "raw sockets are root's by design; control ctl-{tag} and forged datagrams sent ({}): the \
             host checks decide",
            notes.join("; ")
        ),
    )
}

/// Hand-made TCP SYNs on a raw socket (past the sandbox's own connect path) to a private test host and
/// a public one the policy does not allow: the host must reset or drop them, while a SYN to the allowed
/// test host gets its SYN-ACK.
pub fn raw_syn(ctx: &Ctx) -> Outcome {
    let n = &ctx.net;
    let (Some(own), Some(allowed), Some(public)) = (n.addr, n.allowed, n.denied) else {
        return missing("addr / allowed / denied");
    };
    let fd = match raw_socket(
        libc::AF_INET,
        libc::SOCK_RAW,
        libc::IPPROTO_TCP,
        "socket(AF_INET, SOCK_RAW, TCP)",
    ) {
        Ok(fd) => fd,
        Err(o) => return o,
    };
    let mut targets = vec![allowed, public];
    targets.extend(n.private.iter().copied());
    let mut notes = Vec::new();
    let mut blocked = true;
    for (i, dst) in targets.iter().enumerate() {
        let sport = 41_000 + i as u16;
        if let Err(e) = send_v4(&fd, &tcp_syn(own, *dst, sport, 9), *dst) {
            return (false, format!("SYN to {dst}: {e}"));
        }
        let mut answer = "nothing";
        let deadline = Instant::now() + LISTEN;
        let mut buf = [0u8; 2048];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some((len, _)) = recv_within(&fd, &mut buf, left) else {
                break;
            };
            let p = &buf[..len];
            let ihl = usize::from(p.first().copied().unwrap_or(0) & 0x0f) * 4;
            if len < ihl + 14 || p[12..16] != dst.octets() {
                continue;
            }
            let t = &p[ihl..];
            let (from, to) = (
                u16::from_be_bytes([t[0], t[1]]),
                u16::from_be_bytes([t[2], t[3]]),
            );
            if from != 9 || to != sport {
                continue;
            }
            answer = match t[13] & 0x16 {
                0x12 => "SYN-ACK",
                f if f & 0x04 != 0 => "RST",
                _ => "other",
            };
            break;
        }
        let reached = answer == "SYN-ACK";
        if i == 0 && !reached {
            return (
                false,
                format!("control: a SYN to the allowed {dst}:9 got {answer}: cannot judge"),
            );
        }
        if i > 0 && reached {
            blocked = false;
        }
        notes.push(format!("{dst}:9 -> {answer}"));
    }
    (blocked, notes.join("; "))
}

/// ARP requests to the gateway with a forged sender address (the neighbour sandbox's, a public host's),
/// and gratuitous ARP replies claiming them: the host must neither answer nor learn them (the test
/// checks the host's neighbour table), while an honest request is answered.
pub fn arp_spoof(ctx: &Ctx) -> Outcome {
    let n = &ctx.net;
    let (Some(own), Some(gw), Some(other), Some(public)) = (n.addr, n.gateway, n.other, n.denied)
    else {
        return missing("addr / gateway / other / denied");
    };
    let (index, mac, _) = match eth0() {
        Ok(x) => x,
        Err(e) => return (false, e),
    };
    let fd = match packet_socket(ETH_P_ARP, index) {
        Ok(fd) => fd,
        Err(o) => return o,
    };
    let bcast = [0xff; 6];
    // Which request got an answer: the host's reply names the asker as its target.
    let ask = |spa: Ipv4Addr| -> Result<bool, String> {
        let req = ether(bcast, mac, ETH_P_ARP, &arp(1, mac, spa, [0; 6], gw));
        send_frame(&fd, &req)?;
        let deadline = Instant::now() + LISTEN;
        let mut buf = [0u8; 256];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some((len, _)) = recv_within(&fd, &mut buf, left) else {
                break;
            };
            let a = &buf[14..len.max(14)];
            if a.len() >= 28
                && a[6..8] == [0, 2]
                && a[8..14] != mac
                && a[14..18] == gw.octets()
                && a[24..28] == spa.octets()
            {
                return Ok(true);
            }
        }
        Ok(false)
    };
    match ask(own) {
        Ok(true) => {}
        Ok(false) => {
            return (
                false,
                "control: the gateway did not answer an honest ARP request: cannot judge".into(),
            );
        }
        Err(e) => return (false, format!("control request: {e}")),
    }
    let mut notes = vec!["control answered".to_owned()];
    let mut blocked = true;
    for spa in [*other.ip(), public] {
        match ask(spa) {
            Ok(true) => {
                blocked = false;
                notes.push(format!("ANSWERED a request from forged {spa}"));
            }
            Ok(false) => notes.push(format!("request from forged {spa}: no answer")),
            Err(e) => notes.push(format!("request from forged {spa}: {e}")),
        }
        // Gratuitous: "spa is at my MAC".
        let claim = ether(bcast, mac, ETH_P_ARP, &arp(2, mac, spa, bcast, spa));
        if let Err(e) = send_frame(&fd, &claim) {
            notes.push(format!("gratuitous reply for {spa}: {e}"));
        }
    }
    (blocked, notes.join("; "))
}

/// `ICMPv6` neighbour discovery aimed at the host end: a router advertisement with a prefix, unsolicited
/// neighbour advertisements claiming addresses, a neighbour solicitation and echo requests to all
/// nodes and routers. The host end has no IPv6 and drops IPv6 from sandboxes: nothing may answer, and
/// the test checks that the host learnt nothing.
pub fn nd_spoof(ctx: &Ctx) -> Outcome {
    let (index, mac, _) = match eth0() {
        Ok(x) => x,
        Err(e) => return (false, e),
    };
    let fd = match raw_socket(
        libc::AF_INET6,
        libc::SOCK_RAW,
        libc::IPPROTO_ICMPV6,
        "socket(AF_INET6, SOCK_RAW, ICMPV6)",
    ) {
        Ok(fd) => fd,
        Err(o) => return o,
    };
    let set = |opt: i32, v: i32| {
        // SAFETY: setsockopt with an int value on our socket.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_IPV6,
                opt,
                (&raw const v).cast(),
                size_of::<i32>() as libc::socklen_t,
            )
        }
    };
    set(libc::IPV6_MULTICAST_HOPS, 255);
    set(libc::IPV6_UNICAST_HOPS, 255);
    set(libc::IPV6_MULTICAST_LOOP, 0);
    set(libc::IPV6_MULTICAST_IF, index);
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap_or(Ipv6Addr::UNSPECIFIED);
    let all_routers: Ipv6Addr = "ff02::2".parse().unwrap_or(Ipv6Addr::UNSPECIFIED);
    let claimed: Ipv6Addr = "fe80::1".parse().unwrap_or(Ipv6Addr::UNSPECIFIED);
    // Source and target link-layer address options: "this is my MAC".
    let mut lla = vec![1, 1];
    lla.extend_from_slice(&mac);
    let mut tla = vec![2, 1];
    tla.extend_from_slice(&mac);
    let mut sent = Vec::new();
    // Router advertisement: router lifetime 1800 s, prefix fd99::/64 on-link and autonomous.
    let mut ra = vec![134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    ra.extend_from_slice(&[3, 4, 64, 0xc0]);
    ra.extend_from_slice(&[0, 0, 0x0e, 0x10, 0, 0, 0x0e, 0x10, 0, 0, 0, 0]);
    ra.extend_from_slice(&"fd99::".parse::<Ipv6Addr>().map_or([0; 16], |a| a.octets()));
    ra.extend_from_slice(&lla);
    sent.push(("RA", ra, all_nodes));
    // Unsolicited neighbour advertisements (override) for fe80::1 and the IPv6 test hosts.
    let mut targets = vec![claimed];
    targets.extend(ctx.net.v6.iter().copied());
    for t in targets {
        let mut na = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
        na.extend_from_slice(&t.octets());
        na.extend_from_slice(&tla);
        sent.push(("NA", na, all_nodes));
    }
    // A solicitation for fe80::1 and echo requests to every node and router on the link.
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&claimed.octets());
    ns.extend_from_slice(&lla);
    let solicited: Ipv6Addr = "ff02::1:ff00:1".parse().unwrap_or(all_nodes);
    sent.push(("NS", ns, solicited));
    sent.push(("echo", vec![128, 0, 0, 0, 0x12, 0x34, 0, 1], all_nodes));
    sent.push(("echo", vec![128, 0, 0, 0, 0x12, 0x34, 0, 2], all_routers));
    let mut notes = Vec::new();
    for (what, msg, to) in &sent {
        if let Err(e) = send_v6(&fd, msg, *to, index as u32) {
            notes.push(format!("{what} to {to}: {e}"));
        }
    }
    let deadline = Instant::now() + LISTEN;
    let mut buf = [0u8; 2048];
    let mut answers = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some((len, from)) = recv_within(&fd, &mut buf, left) else {
            break;
        };
        // sockaddr_in6: family (2), port (2), flowinfo (4), address (16).
        let mut a = [0u8; 16];
        a.copy_from_slice(&from[8..24]);
        let src = Ipv6Addr::from(a);
        if len > 0 {
            answers.push(format!("ICMPv6 type {} from {src}", buf[0]));
        }
    }
    let blocked = answers.is_empty();
    (
        blocked,
        format!(
            "sent {} ND/ICMPv6 messages ({}); answers: {:?}",
            sent.len() - notes.len(),
            if notes.is_empty() {
                "all sent".to_owned()
            } else {
                notes.join("; ")
            },
            answers
        ),
    )
}

/// IPv6 goes nowhere: TCP and UDP to the IPv6 test hosts fail, the resolver gives no IPv6 answers, and
/// (root) IPv6 frames sent straight to the gateway's MAC never reach the test hosts (the test checks).
pub fn ipv6_egress(ctx: &Ctx) -> Outcome {
    let n = &ctx.net;
    if n.v6.is_empty() {
        return missing("v6");
    }
    let mut notes = Vec::new();
    let mut blocked = true;
    for a in &n.v6 {
        let t = SocketAddr::from((*a, 9));
        match echo(t) {
            Ok(()) => {
                blocked = false;
                notes.push(format!("REACHED {t}"));
            }
            Err(e) => notes.push(e),
        }
        if let Ok(u) = UdpSocket::bind("[::]:0") {
            notes.push(match u.send_to(format!("v6-{}", n.tag).as_bytes(), t) {
                Ok(_) => format!("udp to {t}: sent"),
                Err(e) => format!("udp to {t}: {e}"),
            });
        }
    }
    if let Some(name) = &n.name {
        let v6: Vec<SocketAddr> = (name.as_str(), 9u16)
            .to_socket_addrs()
            .map(|i| i.filter(SocketAddr::is_ipv6).collect())
            .unwrap_or_default();
        if !v6.is_empty() {
            blocked = false;
        }
        notes.push(format!("IPv6 answers for {name}: {v6:?}"));
    }
    // The link layer, past the sandbox's routing table.
    match (eth0(), n.gateway.and_then(gateway_mac)) {
        (Ok((index, mac, _)), Some(gmac)) => match packet_socket(ETH_P_IPV6, index) {
            Ok(fd) => {
                let src: Ipv6Addr = "fd99::2".parse().unwrap_or(Ipv6Addr::UNSPECIFIED);
                for a in &n.v6 {
                    let p = udp6(src, *a, 9, format!("v6frame-{}", n.tag).as_bytes());
                    notes.push(match send_frame(&fd, &ether(gmac, mac, ETH_P_IPV6, &p)) {
                        Ok(()) => format!("frame to {a}: sent (the host checks decide)"),
                        Err(e) => format!("frame to {a}: {e}"),
                    });
                }
            }
            Err((_, d)) => notes.push(d),
        },
        (Err(e), _) => notes.push(e),
        (_, None) => notes.push("no gateway MAC".into()),
    }
    (blocked, notes.join("; "))
}

/// `ip` (iproute2) from the sandbox's own filesystem.
fn ip_cmd(args: &[&str]) -> (bool, String) {
    let bin = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let Some(bin) = bin else {
        return (false, "no ip binary".into());
    };
    match Command::new(bin).args(args).output() {
        Ok(o) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        ),
        Err(e) => (false, e.to_string()),
    }
}

/// Root inside changes its own network set-up: a route to a private test host through the gateway, the
/// neighbour sandbox's address on `eth0`, an IPv6 address, a firewall table of its own. Whatever of it
/// the kernel accepts, the private host stays unreachable; what was changed is undone.
pub fn change_config(ctx: &Ctx) -> Outcome {
    let n = &ctx.net;
    let (Some(gw), Some(other), Some(private)) = (n.gateway, n.other, n.private.first().copied())
    else {
        return missing("gateway / other / private");
    };
    let route = format!("{private}/32");
    let addr = format!("{}/32", other.ip());
    let gw = gw.to_string();
    let changes: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "route to a private host via the gateway",
            vec!["route", "add", &route, "via", &gw, "dev", "eth0"],
            vec!["route", "del", &route],
        ),
        (
            "the neighbour's address on eth0",
            vec!["addr", "add", &addr, "dev", "eth0"],
            vec!["addr", "del", &addr, "dev", "eth0"],
        ),
        (
            "an IPv6 address and default route",
            vec!["-6", "addr", "add", "fd99::2/64", "dev", "eth0"],
            vec!["-6", "addr", "del", "fd99::2/64", "dev", "eth0"],
        ),
    ];
    let mut notes = Vec::new();
    let mut undo = Vec::new();
    for (what, args, back) in &changes {
        let (ok, err) = ip_cmd(args);
        if ok {
            undo.push(back.clone());
            notes.push(format!("{what}: ACCEPTED"));
        } else {
            notes.push(format!("{what}: refused ({err})"));
        }
    }
    let nft = ["/usr/sbin/nft", "/sbin/nft"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let mut nft_added = false;
    if let Some(nft) = nft {
        match Command::new(nft)
            .args(["add", "table", "inet", "sandpit_probe"])
            .output()
        {
            Ok(o) if o.status.success() => {
                nft_added = true;
                notes.push("nft table: ACCEPTED".into());
            }
            Ok(o) => notes.push(format!(
                "nft table: refused ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => notes.push(format!("nft: {e}")),
        }
    }
    let (blocked, reach) = none_reachable(&[v4(private, 9)]);
    notes.extend(reach);
    for back in undo {
        let _ = ip_cmd(&back);
    }
    if let (true, Some(nft)) = (nft_added, nft) {
        let _ = Command::new(nft)
            .args(["delete", "table", "inet", "sandpit_probe"])
            .output();
    }
    (blocked, notes.join("; "))
}

/// A DNS query for `name` (type A) to `server`; the IPv4 answers.
fn dns_query(server: SocketAddr, name: &str) -> Result<Vec<Ipv4Addr>, String> {
    let mut q = vec![0x5a, 0x17, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    let _ = s.set_read_timeout(Some(TIMEOUT));
    s.send_to(&q, server)
        .map_err(|e| format!("query to {server}: {e}"))?;
    let mut r = [0u8; 1500];
    let (len, _) = s
        .recv_from(&mut r)
        .map_err(|e| format!("answer from {server}: {e}"))?;
    let r = &r[..len];
    if len < 12 || r[..2] != q[..2] {
        return Err(format!("bad answer from {server}"));
    }
    let count = u16::from_be_bytes([r[6], r[7]]);
    let mut at = q.len();
    let mut out = Vec::new();
    for _ in 0..count {
        // The answer's name: a pointer, or labels.
        if r.get(at).is_some_and(|b| b & 0xc0 == 0xc0) {
            at += 2;
        } else {
            while let Some(&l) = r.get(at) {
                at += 1 + usize::from(l);
                if l == 0 {
                    break;
                }
            }
        }
        let Some(h) = r.get(at..at + 10) else { break };
        let (ty, rdlen) = (
            u16::from_be_bytes([h[0], h[1]]),
            usize::from(u16::from_be_bytes([h[8], h[9]])),
        );
        at += 10;
        if ty == 1 && rdlen == 4 {
            if let Some(a) = r.get(at..at + 4) {
                out.push(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
            }
        }
        at += rdlen;
    }
    Ok(out)
}

/// Rewrites `path` for the duration of `f` (root only), then restores it.
fn with_file<T>(path: &str, content: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    let old = std::fs::read(path).map_err(|e| format!("read {path}: {e}"))?;
    std::fs::write(path, content).map_err(|e| format!("write {path}: {e}"))?;
    let r = f();
    let _ = std::fs::write(path, old);
    Ok(r)
}

/// Another DNS server (a test host the policy allows, answering every name with an address the policy
/// does not allow): asked directly, and (root) named in `/etc/resolv.conf`. Its answer is an address the
/// sandbox's resolver never pinned: refused.
pub fn other_dns_server(ctx: &Ctx) -> Outcome {
    let n = &ctx.net;
    let (Some(allowed), Some(name)) = (n.allowed, n.name.as_deref()) else {
        return missing("allowed / name");
    };
    let answers = match dns_query(v4(allowed, 53), name) {
        Ok(a) if !a.is_empty() => a,
        Ok(_) => {
            return (
                false,
                "control: the other DNS server gave no answer: cannot judge".into(),
            );
        }
        Err(e) => return (false, format!("control: {e}: cannot judge")),
    };
    let targets: Vec<SocketAddr> = answers.iter().map(|a| v4(*a, 9)).collect();
    let (mut blocked, mut notes) = none_reachable(&targets);
    notes.insert(0, format!("{allowed}:53 says {name} is {answers:?}"));
    if ctx.root {
        let conf = format!("nameserver {allowed}\n");
        match with_file("/etc/resolv.conf", &conf, || resolve(name)) {
            Ok(Ok(addrs)) => {
                let t: Vec<SocketAddr> = addrs.iter().map(|a| v4(*a, 9)).collect();
                let (b, more) = none_reachable(&t);
                blocked &= b;
                notes.push(format!("with resolv.conf rewritten, {name} is {addrs:?}"));
                notes.extend(more);
            }
            Ok(Err(e)) => notes.push(format!("with resolv.conf rewritten: {e}")),
            Err(e) => notes.push(e),
        }
    } else {
        notes.push(
            match std::fs::OpenOptions::new()
                .append(true)
                .open("/etc/resolv.conf")
            {
                Ok(_) => "/etc/resolv.conf is writable".into(),
                Err(e) => format!("/etc/resolv.conf: {e}"),
            },
        );
    }
    (blocked, notes.join("; "))
}

/// The allowed name pointed at another address in `/etc/hosts` (root), and that address as an IP
/// literal: refused, while the name through the sandbox's resolver answers.
pub fn hosts_and_literal(ctx: &Ctx) -> Outcome {
    let n = &ctx.net;
    let (Some(name), Some(public)) = (n.name.as_deref(), n.denied) else {
        return missing("name / denied");
    };
    let pinned = match resolve(name) {
        Ok(a) if !a.is_empty() => a,
        Ok(_) => {
            return (
                false,
                format!("control: {name} has no address: cannot judge"),
            );
        }
        Err(e) => return (false, format!("control: {e}: cannot judge")),
    };
    if let Err(e) = echo(v4(pinned[0], 9)) {
        return (
            false,
            format!("control: the allowed name did not answer ({e}): cannot judge"),
        );
    }
    let (mut blocked, mut notes) = none_reachable(&[v4(public, 9)]);
    notes.insert(0, format!("control {name} ({}) answered", pinned[0]));
    if ctx.root {
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let forged = format!("{hosts}{public} {name}\n");
        match with_file("/etc/hosts", &forged, || resolve(name)) {
            Ok(Ok(addrs)) => {
                let t: Vec<SocketAddr> = addrs.iter().map(|a| v4(*a, 9)).collect();
                let (b, more) = none_reachable(&t);
                blocked &= b;
                notes.push(format!("with /etc/hosts forged, {name} is {addrs:?}"));
                notes.extend(more);
            }
            Ok(Err(e)) => notes.push(format!("with /etc/hosts forged: {e}")),
            Err(e) => notes.push(e),
        }
    } else {
        notes.push(
            match std::fs::OpenOptions::new().append(true).open("/etc/hosts") {
                Ok(_) => "/etc/hosts is writable".into(),
                Err(e) => format!("/etc/hosts: {e}"),
            },
        );
    }
    (blocked, notes.join("; "))
}

/// DNS rebinding against a domain rule: the allowed name answers a public address, then a private one
/// (TTL 0). The resolver must drop the private answers, and the private host stays refused.
pub fn rebinding(ctx: &Ctx) -> Outcome {
    let n = &ctx.net;
    let Some(name) = n.rebind.as_deref() else {
        return missing("rebind");
    };
    if n.private.is_empty() {
        return missing("private");
    }
    let mut seen = Vec::new();
    let mut notes = Vec::new();
    for _ in 0..4 {
        match resolve(name) {
            Ok(a) => seen.extend(a),
            Err(e) => notes.push(e),
        }
    }
    seen.sort_unstable();
    seen.dedup();
    let private_seen: Vec<&Ipv4Addr> = seen
        .iter()
        .filter(|a| a.is_private() || a.is_link_local() || n.private.contains(a))
        .collect();
    let public: Vec<&Ipv4Addr> = seen.iter().filter(|a| !private_seen.contains(a)).collect();
    let Some(first) = public.first() else {
        return (
            false,
            format!("control: no public answer for {name} ({notes:?}): cannot judge"),
        );
    };
    if let Err(e) = echo(v4(**first, 9)) {
        return (
            false,
            format!("control: {name}'s public answer did not answer ({e}): cannot judge"),
        );
    }
    let targets: Vec<SocketAddr> = n.private.iter().map(|a| v4(*a, 9)).collect();
    let (reach_blocked, more) = none_reachable(&targets);
    notes.insert(
        0,
        format!("answers over 4 lookups: {seen:?}; control {first} answered"),
    );
    notes.extend(more);
    (private_seen.is_empty() && reach_blocked, notes.join("; "))
}
