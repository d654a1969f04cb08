//! The daemon's DNS resolver: every sandbox's `/etc/resolv.conf` names it (the gateway address of the
//! daemon's block, port 53, UDP and TCP), and it forwards to the host's resolvers.
//!
//! It is where domain rules are enforced, by **pinning**: a query for a name an `allow_out` rule matches
//! is forwarded, and the IPv4 addresses of the answer are added to that sandbox's allowed set in the
//! firewall *before* the answer is returned; a name the policy denies gets NXDOMAIN without being
//! forwarded. What the sandbox connects to is then checked by address on the host, so `/etc/hosts`
//! entries, IP literals and other DNS servers gain nothing: an address is reachable only if a policy
//! CIDR allows it or this resolver answered it for an allowed name.
//!
//! Also: answers that fall in the always-denied ranges are dropped from every response (DNS rebinding
//! cannot turn an allowed name into a path to the host's network), and AAAA queries get an empty
//! answer (sandboxes have IPv4 only, so clients do not wait on IPv6 first).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};

use crate::firewall::{Firewall, NameVerdict};
use crate::lease::Block;

/// How long an upstream resolver may take.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// Shortest and longest life of a pin, whatever the record's TTL says: a client keeps using an address
/// for a while after its TTL, and a very long pin would outlive an address's owner.
const PIN_MIN: Duration = Duration::from_secs(600);
const PIN_MAX: Duration = Duration::from_secs(86_400);
/// Queries answered at once.
const MAX_INFLIGHT: usize = 256;

/// The host's resolvers, from `/etc/resolv.conf` (port 53).
pub fn host_resolvers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// One daemon's resolver.
#[derive(Debug)]
pub struct Resolver {
    fw: Arc<Firewall>,
    block: Block,
    upstreams: Vec<SocketAddr>,
    inflight: Semaphore,
}

fn bind_freebind(addr: SocketAddrV4, ty: socket2::Type) -> io::Result<socket2::Socket> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, ty, None)?;
    // The gateway address exists only while a sandbox's veth carries it: bind it anyway.
    s.set_freebind_v4(true)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::V4(addr).into())?;
    Ok(s)
}

impl Resolver {
    pub fn new(fw: Arc<Firewall>, block: Block, upstreams: Vec<SocketAddr>) -> Arc<Self> {
        Arc::new(Self {
            fw,
            block,
            upstreams,
            inflight: Semaphore::new(MAX_INFLIGHT),
        })
    }

    /// Binds `gateway:53` (UDP and TCP) and answers until `stop` turns true.
    pub async fn serve(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> io::Result<()> {
        let addr = SocketAddrV4::new(self.block.gateway(), 53);
        let udp = UdpSocket::from_std(bind_freebind(addr, socket2::Type::DGRAM)?.into())?;
        let tcp = bind_freebind(addr, socket2::Type::STREAM)?;
        tcp.listen(128)?;
        let tcp = TcpListener::from_std(tcp.into())?;
        let udp = Arc::new(udp);
        let mut buf = vec![0u8; 4096];
        loop {
            tokio::select! {
                _ = async { stop.wait_for(|s| *s).await.is_ok() } => return Ok(()),
                r = udp.recv_from(&mut buf) => {
                    let Ok((n, from)) = r else { continue };
                    let Ok(permit) = self.inflight.try_acquire() else { continue };
                    let query = buf[..n].to_vec();
                    let (this, udp) = (self.clone(), udp.clone());
                    permit.forget();
                    tokio::spawn(async move {
                        if let Some(answer) = this.answer(&query, from.ip(), false).await {
                            let _ = udp.send_to(&answer, from).await;
                        }
                        this.inflight.add_permits(1);
                    });
                }
                r = tcp.accept() => {
                    let Ok((conn, from)) = r else { continue };
                    let this = self.clone();
                    tokio::spawn(async move { this.serve_tcp(conn, from.ip()).await });
                }
            }
        }
    }

    async fn serve_tcp(&self, mut conn: TcpStream, from: IpAddr) {
        loop {
            let Ok(Ok(len)) = tokio::time::timeout(Duration::from_secs(10), conn.read_u16()).await
            else {
                return;
            };
            let mut q = vec![0u8; usize::from(len)];
            if conn.read_exact(&mut q).await.is_err() {
                return;
            }
            let Some(a) = self.answer(&q, from, true).await else {
                return;
            };
            let len = u16::try_from(a.len()).unwrap_or(u16::MAX);
            if conn.write_u16(len).await.is_err() || conn.write_all(&a).await.is_err() {
                return;
            }
        }
    }

    /// The answer to one query from `from` (`None`: drop it).
    async fn answer(&self, query: &[u8], from: IpAddr, tcp: bool) -> Option<Vec<u8>> {
        let IpAddr::V4(src) = from else { return None };
        let slot = self.block.slot_of(src)?;
        let msg = Message::from_vec(query).ok()?;
        if msg.message_type() != MessageType::Query {
            return None;
        }
        let Some(q) = msg.queries().first() else {
            return reply(&msg, ResponseCode::FormErr);
        };
        let name = q
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let qtype = q.query_type();
        let verdict = self.fw.verdict(slot, &name);
        if verdict == NameVerdict::Deny {
            tracing::debug!(slot, %name, "DNS: denied by policy");
            return reply(&msg, ResponseCode::NXDomain);
        }
        if qtype == RecordType::AAAA {
            return reply(&msg, ResponseCode::NoError);
        }
        let Some(raw) = self.forward(query, tcp).await else {
            return reply(&msg, ResponseCode::ServFail);
        };
        let Ok(mut resp) = Message::from_vec(&raw) else {
            return reply(&msg, ResponseCode::ServFail);
        };
        let answers = resp.take_answers();
        let before = answers.len();
        let kept: Vec<_> = answers
            .into_iter()
            .filter(|r| match r.data() {
                RData::A(a) => !self.fw.is_blocked(a.0),
                RData::AAAA(_) => false,
                _ => true,
            })
            .collect();
        let filtered = kept.len() != before;
        if verdict == NameVerdict::AllowPinned {
            let addrs: Vec<Ipv4Addr> = kept
                .iter()
                .filter_map(|r| match r.data() {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect();
            let ttl = kept
                .iter()
                .map(hickory_proto::rr::Record::ttl)
                .min()
                .unwrap_or(0);
            let ttl = Duration::from_secs(u64::from(ttl)).clamp(PIN_MIN, PIN_MAX);
            if !addrs.is_empty() {
                let fw = self.fw.clone();
                let n = name.clone();
                let pinned =
                    tokio::task::spawn_blocking(move || fw.pin(slot, &n, &addrs, ttl)).await;
                if !matches!(pinned, Ok(Ok(()))) {
                    tracing::warn!(slot, %name, "DNS: cannot pin the answer; answering SERVFAIL");
                    return reply(&msg, ResponseCode::ServFail);
                }
            }
        }
        if filtered {
            resp.insert_answers(kept);
            resp.to_vec().ok()
        } else {
            Some(raw)
        }
    }

    /// Sends `query` to the upstream resolvers in turn; TCP when asked over TCP or when truncated.
    async fn forward(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        for up in &self.upstreams {
            if !tcp {
                if let Ok(Ok(r)) =
                    tokio::time::timeout(UPSTREAM_TIMEOUT, udp_query(*up, query)).await
                {
                    let truncated = r.len() > 2 && r[2] & 0x02 != 0;
                    if !truncated {
                        return Some(r);
                    }
                }
            }
            if let Ok(Ok(r)) = tokio::time::timeout(UPSTREAM_TIMEOUT, tcp_query(*up, query)).await {
                return Some(r);
            }
        }
        None
    }
}

async fn udp_query(up: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let bind: SocketAddr = if up.is_ipv4() {
        "0.0.0.0:0".parse().unwrap_or(up)
    } else {
        "[::]:0".parse().unwrap_or(up)
    };
    let s = UdpSocket::bind(bind).await?;
    s.connect(up).await?;
    s.send(query).await?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = s.recv(&mut buf).await?;
        // Only the answer to this query (same id).
        if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp_query(up: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(up).await?;
    s.write_u16(u16::try_from(query.len()).unwrap_or(u16::MAX))
        .await?;
    s.write_all(query).await?;
    let len = s.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

/// An answer with no records and `code`.
fn reply(query: &Message, code: ResponseCode) -> Option<Vec<u8>> {
    let mut m = Message::new();
    m.set_id(query.id());
    m.set_message_type(MessageType::Response);
    m.set_op_code(query.op_code());
    m.set_recursion_desired(query.recursion_desired());
    m.set_recursion_available(true);
    m.set_response_code(code);
    m.add_queries(query.queries().to_vec());
    m.to_vec().ok()
}
