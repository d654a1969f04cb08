//! Test hosts for the network suites: network namespaces on this machine, joined to the host by a veth
//! pair, holding whatever addresses a test needs (a "public" one, private ranges, link-local, an IPv6
//! ULA), with a small server on each; and a DNS server for test domains. Nothing a test sends leaves
//! the machine: every address a sandbox is pointed at lives in one of these namespaces (the one
//! exception, a package-registry request, is made where the issue allows it).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, Record, rdata};
use serde_json::{Value, json};

use crate::daemon::{Serve, client, post};

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The server every test host runs: TCP echo on 9 and 7000-7009 (IPv4 and IPv6, each accepted
/// connection logged as `tcp SRC`), an HTTP answer on 80 saying which address was reached, UDP on 9
/// (IPv4 and IPv6) logging every datagram as `udp SRC PAYLOAD` (so a test can tell that a spoofed packet
/// never arrived), static files from `SERVE_DIR` on 8081 and — with `TLS_CERT`/`TLS_KEY` — over HTTPS
/// on 443 (a directory holding `index.json` is answered with it: an npm registry's package document),
/// and — with `DNS_ANSWER` and `DNS_BIND` — a DNS server on `DNS_BIND`:53 answering every A query with
/// `DNS_ANSWER` (the "other DNS server" a sandbox may try).
const SERVER: &str = r#"
import os, socket, socketserver, ssl, struct, sys, threading, http.server, functools
log = open(sys.argv[1], "a", buffering=1)
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        log.write("tcp %s\n" % self.client_address[0])
        while True:
            d = self.request.recv(65536)
            if not d: return
            self.request.sendall(d)
class Http(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.recv(4096)
        body = ("hello from %s" % self.request.getsockname()[0]).encode()
        self.request.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
class Udp(socketserver.BaseRequestHandler):
    def handle(self):
        log.write("udp %s %r\n" % (self.client_address[0], self.request[0][:64]))
class Dns(socketserver.BaseRequestHandler):
    def handle(self):
        q, sock = self.request
        if len(q) < 17: return
        end = q.index(b"\0", 12) + 5
        qtype = struct.unpack("!H", q[end - 4:end - 2])[0]
        head = q[:2] + b"\x81\x80" + q[4:6] + struct.pack("!HHH", 1 if qtype == 1 else 0, 0, 0)
        ans = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + socket.inet_aton(os.environ["DNS_ANSWER"])
        sock.sendto(head + q[12:end] + (ans if qtype == 1 else b""), self.client_address)
class Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        doc = os.path.join(self.translate_path(self.path), "index.json")
        if os.path.isfile(doc):
            body = open(doc, "rb").read()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            super().do_GET()
class T(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
class T6(T): address_family = socket.AF_INET6
class U6(socketserver.ThreadingUDPServer): address_family = socket.AF_INET6
def run(srv): threading.Thread(target=srv.serve_forever, daemon=True).start()
for p in [9] + list(range(7000, 7010)):
    run(T(("0.0.0.0", p), Echo))
run(T(("0.0.0.0", 80), Http))
run(socketserver.ThreadingUDPServer(("0.0.0.0", 9), Udp))
files = functools.partial(Files, directory=os.environ.get("SERVE_DIR", "/nonexistent"))
run(T(("0.0.0.0", 8081), files))
if os.environ.get("TLS_CERT"):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(os.environ["TLS_CERT"], os.environ["TLS_KEY"])
    tls = T(("0.0.0.0", 443), files)
    tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
    run(tls)
if os.environ.get("DNS_ANSWER"):
    # Bound to the one address it serves: a server on 0.0.0.0 would answer from another one.
    run(socketserver.ThreadingUDPServer((os.environ["DNS_BIND"], 53), Dns))
try:
    for c in (T6, U6):
        class V6Only(c):
            def server_bind(self):
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                super().server_bind()
        run(V6Only(("::", 9), Echo if c is T6 else Udp))
except OSError as e:
    log.write("no ipv6: %s\n" % e)
log.write("ready\n")
threading.Event().wait()
"#;

/// The host-wide objects of one [`TestHosts`]: deleted when dropped, also when setting them up failed
/// half-way.
struct Link {
    ns: String,
    host_if: String,
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end, which takes the host end and its routes along.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

/// Removes the namespaces of test processes that were killed before their `Drop` ran (`spt<pid>-<n>`
/// with `pid` gone). Their servers died with them (`PR_SET_PDEATHSIG`), so the namespace goes, and its
/// veth pair with it.
fn sweep_stale() {
    let dead = |pid: &str| {
        pid.parse::<u32>()
            .is_ok_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
    };
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((pid, _)) = name.strip_prefix("spt").and_then(|r| r.split_once('-')) {
            if dead(pid) {
                let _ = Command::new("ip").args(["netns", "del", &name]).output();
            }
        }
    }
}

/// A network namespace standing for hosts at `addrs`, routed from the host through a veth pair.
pub struct TestHosts {
    pub ns: String,
    server: Child,
    pub log: std::path::PathBuf,
    pub files: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _link: Link,
}

impl TestHosts {
    /// `n` (1-250) makes the names and the link addresses unique per test, with this process's id (the
    /// link is a /30 of `10.78.0.0/16` and a /64 of `fd78::/16`: other test runs on the machine hold
    /// other ones); `v4` are the IPv4 addresses the hosts hold, `v6` the IPv6 ones.
    pub fn start(n: u8, v4: &[&str], v6: &[&str]) -> Self {
        Self::start_with(n, v4, v6, &[])
    }

    /// [`Self::start`] with extra environment for the server (`TLS_CERT`/`TLS_KEY`, `DNS_ANSWER`,
    /// `SERVE_DIR`: see `SERVER`).
    pub fn start_with(n: u8, v4: &[&str], v6: &[&str], env: &[(&str, &str)]) -> Self {
        let pid = std::process::id();
        let ns = format!("spt{pid}-{n}");
        let host_if = format!("spt{}x{n}", pid % 100_000);
        let dir = tempfile::tempdir().unwrap();
        // One /30 of 10.78.0.0/16 per (process, n): 16,384 of them.
        let link = (pid.wrapping_mul(251).wrapping_add(u32::from(n))) % 16_384;
        let (l3, l4) = (link / 64, (link % 64) * 4);
        sweep_stale();
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let link_guard = Link {
            ns: ns.clone(),
            host_if: host_if.clone(),
        };
        sh(&["ip", "netns", "add", &ns]);
        sh(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        let (h4, p4) = (
            format!("10.78.{l3}.{}", l4 + 1),
            format!("10.78.{l3}.{}", l4 + 2),
        );
        let (h6, p6) = (format!("fd78:{link:x}::1"), format!("fd78:{link:x}::2"));
        sh(&["ip", "addr", "add", &format!("{h4}/30"), "dev", &host_if]);
        sh(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{h6}/64"),
            "dev",
            &host_if,
            "nodad",
        ]);
        sh(&["ip", "link", "set", &host_if, "up"]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{p4}/30"),
            "dev",
            "eth0",
        ]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "-6",
            "addr",
            "add",
            &format!("{p6}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        sh(&["ip", "-n", &ns, "route", "add", "default", "via", &h4]);
        sh(&["ip", "-n", &ns, "-6", "route", "add", "default", "via", &h6]);
        for a in v4 {
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{a}/32"),
                "dev",
                "lo",
            ]);
            sh(&[
                "ip",
                "route",
                "replace",
                &format!("{a}/32"),
                "via",
                &p4,
                "dev",
                &host_if,
            ]);
        }
        for a in v6 {
            sh(&[
                "ip",
                "-n",
                &ns,
                "-6",
                "addr",
                "add",
                &format!("{a}/128"),
                "dev",
                "lo",
            ]);
            sh(&[
                "ip",
                "-6",
                "route",
                "replace",
                &format!("{a}/128"),
                "via",
                &p6,
                "dev",
                &host_if,
            ]);
        }
        let script = dir.path().join("server.py");
        std::fs::write(&script, SERVER).unwrap();
        let log = dir.path().join("server.log");
        let files = dir.path().join("files");
        std::fs::create_dir_all(&files).unwrap();
        let mut server = Command::new("ip");
        server
            .args(["netns", "exec", &ns, "python3"])
            .arg(&script)
            .arg(&log)
            .env("SERVE_DIR", &files)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; the server (`ip netns exec` execs python3 in place) dies
        // with the test process even when that is killed and no `Drop` runs.
        unsafe {
            server.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let server = server.spawn().unwrap();
        let hosts = Self {
            ns,
            server,
            log,
            files,
            _dir: dir,
            _link: link_guard,
        };
        for _ in 0..200 {
            if hosts.log_text().contains("ready") {
                return hosts;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the test hosts' server did not start: {}", hosts.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TestHosts {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        // Then `_link` removes the namespace and the veth.
    }
}

/// A DNS server for test domains on 127.0.0.1 (the daemon's resolver forwards to it): answers the
/// zone's A records, NXDOMAIN for other `.test` names, and forwards anything else to the host's own
/// resolvers (only the package-registry checks ask for such names).
pub struct TestDns {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TestDns {
    pub async fn start(zone: &[(&str, &[&str])]) -> Self {
        let seq: Vec<(&str, Vec<&[&str]>)> = zone.iter().map(|(n, a)| (*n, vec![*a])).collect();
        let seq: Vec<(&str, &[&[&str]])> = seq.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        Self::start_seq(&seq).await
    }

    /// A zone whose names answer in turn: query `k` of a name gets its answer set `k % len` (TTL 0).
    /// DNS rebinding: a name that answers a public address, then a private one.
    pub async fn start_seq(zone: &[(&str, &[&[&str]])]) -> Self {
        let zone: HashMap<String, (Vec<Vec<Ipv4Addr>>, std::sync::atomic::AtomicUsize)> = zone
            .iter()
            .map(|(n, sets)| {
                let sets = sets
                    .iter()
                    .map(|a| a.iter().map(|x| x.parse().unwrap()).collect())
                    .collect();
                (
                    (*n).to_owned(),
                    (sets, std::sync::atomic::AtomicUsize::new(0)),
                )
            })
            .collect();
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let upstream: Option<SocketAddr> = std::fs::read_to_string("/etc/resolv.conf")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .find_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53));
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(query) = q.queries().first().cloned() else {
                    continue;
                };
                let name = query
                    .name()
                    .to_ascii()
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                let answer = if let Some((sets, turn)) = zone.get(&name) {
                    let rotating = sets.len() > 1;
                    let ips = if query.query_type() == hickory_proto::rr::RecordType::A {
                        &sets[turn.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % sets.len()]
                    } else {
                        &sets[0]
                    };
                    let mut m = Message::new();
                    m.set_id(q.id())
                        .set_message_type(MessageType::Response)
                        .set_recursion_available(true)
                        .add_query(query.clone());
                    if query.query_type() == hickory_proto::rr::RecordType::A {
                        for ip in ips {
                            m.add_answer(Record::from_rdata(
                                query.name().clone(),
                                if rotating { 0 } else { 60 },
                                RData::A(rdata::A(*ip)),
                            ));
                        }
                    }
                    m.to_vec().ok()
                } else if std::path::Path::new(&name)
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("test"))
                    || upstream.is_none()
                {
                    let mut m = Message::new();
                    m.set_id(q.id())
                        .set_message_type(MessageType::Response)
                        .set_response_code(ResponseCode::NXDomain)
                        .add_query(query.clone());
                    m.to_vec().ok()
                } else {
                    let up = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
                    let Some(to) = upstream else { continue };
                    let _ = up.send_to(&buf[..n], to).await;
                    let mut r = vec![0u8; 4096];
                    match tokio::time::timeout(Duration::from_secs(3), up.recv(&mut r)).await {
                        Ok(Ok(k)) => Some(r[..k].to_vec()),
                        _ => None,
                    }
                };
                if let Some(a) = answer {
                    let _ = sock.send_to(&a, from).await;
                }
            }
        });
        Self { addr, task }
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `argv` in sandbox `id` (as `user`) and returns `(exit_code, stdout, stderr)`.
pub async fn run(serve: &Serve, id: &str, user: &str, argv: &[&str]) -> (i64, String, String) {
    let (s, r) = post(
        serve.url(&format!("/v1/sandboxes/{id}/exec")),
        json!({"argv": argv, "user": user, "timeout_ms": 120_000}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    (
        r["exit_code"].as_i64().unwrap_or(-1),
        r["stdout"].as_str().unwrap_or_default().to_owned(),
        r["stderr"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The probe run inside a sandbox: for each `HOST:PORT`, `ok` when a TCP echo came back, else why not
/// (`refused` is a reset, as the firewall sends; `nodns`; `timeout`; `err:ERRNO`).
const PROBE: &str = r#"
import errno, json, socket, sys
out = {}
for t in sys.argv[1:]:
    host, port = t.rsplit(":", 1)
    host = host.strip("[]")
    try:
        s = socket.create_connection((host, int(port)), timeout=3)
        s.settimeout(3)
        s.sendall(b"ping")
        out[t] = "ok" if s.recv(16) == b"ping" else "noecho"
        s.close()
    except socket.gaierror:
        out[t] = "nodns"
    except ConnectionRefusedError:
        out[t] = "refused"
    except socket.timeout:
        out[t] = "timeout"
    except OSError as e:
        out[t] = "err:" + errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))
"#;

/// Probes `targets` from sandbox `id`; returns target → outcome.
pub async fn probe(serve: &Serve, id: &str, targets: &[String]) -> HashMap<String, String> {
    let mut argv = vec!["python3", "-c", PROBE];
    argv.extend(targets.iter().map(String::as_str));
    let (code, out, err) = run(serve, id, "user", &argv).await;
    assert_eq!(code, 0, "probe failed: {out} {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("probe said {out}"));
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// The sandbox's own IPv4 address (the source of its outbound packets).
pub async fn sandbox_addr(serve: &Serve, id: &str) -> String {
    let (_, out, _) = run(
        serve,
        id,
        "user",
        &[
            "python3",
            "-c",
            "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('198.51.100.1', 9)); print(s.getsockname()[0])",
        ],
    )
    .await;
    out.trim().to_owned()
}

/// Creates a sandbox with `body` and returns its id.
pub async fn create(serve: &Serve, body: Value) -> String {
    let (s, sb) = post(serve.url("/v1/sandboxes"), body).await;
    assert_eq!(s, 201, "{sb}");
    sb["id"].as_str().unwrap().to_owned()
}

/// `PUT /v1/sandboxes/{id}/network`.
pub async fn put_policy(serve: &Serve, id: &str, policy: Value) -> (u16, Value) {
    crate::daemon::call(
        client()
            .put(serve.url(&format!("/v1/sandboxes/{id}/network")))
            .json(&policy),
    )
    .await
}

/// The host's own IPv4 addresses (but loopback).
pub fn host_addrs() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|a| a.split('/').next())
        .filter(|a| !a.starts_with("127.") && !a.starts_with("10.78.") && !a.starts_with("10.212."))
        .map(str::to_owned)
        .collect()
}

/// A sandbox's link seen from the host: its address (`eth0` in the namespace of `init_pid`) and the
/// name of the host end of its veth.
pub fn sandbox_link(init_pid: i64) -> (String, String) {
    let ns = |args: &[&str]| {
        let out = Command::new("nsenter")
            .args(["-t", &init_pid.to_string(), "-n", "ip", "-o"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let addr = ns(&["-4", "addr", "show", "dev", "eth0"])
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_default()
        .to_owned();
    let link = ns(&["link", "show", "dev", "eth0"]);
    let peer: String = link
        .split_once("eth0@if")
        .map(|(_, r)| r.chars().take_while(char::is_ascii_digit).collect())
        .unwrap_or_default();
    let host_if = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .find(|e| std::fs::read_to_string(e.path().join("ifindex")).is_ok_and(|i| i.trim() == peer))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .unwrap_or_default();
    assert!(
        !addr.is_empty() && !host_if.is_empty(),
        "cannot find the link of sandbox init {init_pid}: {link}"
    );
    (addr, host_if)
}

/// `ip -o ARGS` on the host, its output.
pub fn ip_host(args: &[&str]) -> String {
    let out = Command::new("ip").arg("-o").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
