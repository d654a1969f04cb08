//! The few rtnetlink requests a sandbox's link needs, spoken directly on a `NETLINK_ROUTE` socket:
//! create a veth pair whose peer is born inside the sandbox's network namespace, give the host end its
//! point-to-point address, and delete a link.
//!
//! Spawning `ip` for this costs ~3 ms per call (a process, its libraries, a netlink cache); one request
//! on a socket costs tens of microseconds, which keeps "create with networking" within a few
//! milliseconds of "create without". The messages are built by hand because these three are all we
//! need: a netlink crate would bring an async runtime and a generic attribute model for 200 lines.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;

const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_PID: u16 = 19;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;

/// One netlink message under construction.
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(ty: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&1u32.to_ne_bytes()); // seq
        buf.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel's
        Self { buf }
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    /// A fixed header (`ifinfomsg`, `ifaddrmsg`).
    fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.pad();
    }

    fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn str_attr(&mut self, ty: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(ty, &v);
    }

    fn nest(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn end(&mut self, at: usize) {
        let len = u16::try_from(self.buf.len() - at).unwrap_or(u16::MAX);
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// `struct ifinfomsg` with `flags`/`change`.
fn ifinfomsg(flags: u32, change: u32) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[8..12].copy_from_slice(&flags.to_ne_bytes());
    m[12..16].copy_from_slice(&change.to_ne_bytes());
    m
}

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is checked and owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends one request and waits for its acknowledgement; a negative error code becomes the error.
fn request(msg: Msg) -> io::Result<()> {
    let sock = socket()?;
    let bytes = msg.finish();
    // SAFETY: `bytes` is a complete netlink message; the kernel is the destination (no address needed).
    let n = unsafe { libc::send(sock.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 8192];
    loop {
        // SAFETY: reading into a local buffer of the given size.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let n = n as usize;
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or_default()) as usize;
            let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap_or_default());
            if ty == NLMSG_ERROR && off + 20 <= n {
                let code =
                    i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap_or_default());
                return if code == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-code))
                };
            }
            if len < 16 {
                break;
            }
            off += (len + 3) & !3;
        }
    }
}

/// Creates the veth pair `host` ↔ `peer`, with `peer` created directly in the network namespace of
/// process `pid` (so it never appears in the host's), both ends with `mtu`, the host end up.
pub fn create_veth(host: &str, peer: &str, pid: i32, mtu: u32) -> io::Result<()> {
    let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    m.raw(&ifinfomsg(libc::IFF_UP as u32, libc::IFF_UP as u32));
    m.str_attr(IFLA_IFNAME, host);
    m.attr(IFLA_MTU, &mtu.to_ne_bytes());
    let info = m.nest(IFLA_LINKINFO);
    m.str_attr(IFLA_INFO_KIND, "veth");
    let data = m.nest(IFLA_INFO_DATA);
    let p = m.nest(VETH_INFO_PEER);
    m.raw(&ifinfomsg(0, 0));
    m.str_attr(IFLA_IFNAME, peer);
    m.attr(IFLA_MTU, &mtu.to_ne_bytes());
    m.attr(IFLA_NET_NS_PID, &(pid as u32).to_ne_bytes());
    m.end(p);
    m.end(data);
    m.end(info);
    request(m)
}

/// Gives link `ifname` the address `local` with `peer` as the other end of a point-to-point /32 (the
/// kernel adds the host route to `peer` through the link).
pub fn add_peer_address(ifname: &str, local: Ipv4Addr, peer: Ipv4Addr) -> io::Result<()> {
    let index = ifindex(ifname)?;
    let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
    let mut ifa = [0u8; 8];
    ifa[0] = libc::AF_INET as u8;
    ifa[1] = 32;
    ifa[4..8].copy_from_slice(&index.to_ne_bytes());
    m.raw(&ifa);
    m.attr(IFA_LOCAL, &local.octets());
    m.attr(IFA_ADDRESS, &peer.octets());
    request(m)
}

/// Deletes link `ifname` (a veth takes its peer with it); a link that is already gone is fine.
pub fn delete_link(ifname: &str) -> io::Result<()> {
    let mut m = Msg::new(RTM_DELLINK, 0);
    m.raw(&ifinfomsg(0, 0));
    m.str_attr(IFLA_IFNAME, ifname);
    match request(m) {
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        other => other,
    }
}

/// The index of link `ifname` in the caller's network namespace.
pub fn ifindex(ifname: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(ifname).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i)
    }
}

/// Names of the host's links that start with `prefix`.
pub fn links_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Whether link `ifname` exists in the host's namespace.
pub fn link_exists(ifname: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(ifname).exists()
}

/// Turns IPv6 off on a host-side link: sandboxes get IPv4 only, and the host end must not answer
/// neighbour discovery or route anything a sandbox sends over IPv6.
pub fn disable_ipv6(ifname: &str) -> io::Result<()> {
    std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"),
        b"1",
    )
}
