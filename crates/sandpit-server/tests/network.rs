//! Egress under a policy, on the real daemon with real sandboxes (issue 16): allowed and denied CIDRs and
//! domains, the always-denied ranges, other sandboxes and the host, a live policy change cutting an open
//! connection, `/etc/hosts` and IP-literal tricks, DNS rebinding, the connection cap, bad policies, and
//! the package registries (one request each, the only traffic that leaves the machine).
//!
//! Every other address a sandbox is pointed at belongs to test hosts in a network namespace made here
//! (`netkit`). Needs root, like every isolate suite; prints SKIPPED and passes otherwise.

#![allow(clippy::too_many_lines, clippy::many_single_char_names)]

mod daemon;
mod netkit;

use std::time::{Duration, Instant};

use daemon::{Fixture, Serve, call, client, free_port, post};
use netkit::{TestDns, TestHosts, create, host_addrs, probe, put_policy, run, sandbox_addr};
use serde_json::json;

const PUBLIC: &str = "198.51.100.10";
const PUBLIC2: &str = "198.51.100.11";
const OTHER: &str = "198.51.100.12";
const PRIVATE: &str = "10.77.0.10";
const CGNAT: &str = "100.64.77.10";
const LINK_LOCAL: &str = "169.254.77.10";
const ULA: &str = "fd77::10";
/// The package test host: a PyPI-style index, an npm registry and a git repository over HTTPS.
const PKGS: &str = "198.51.100.13";
const PKGS_NAME: &str = "pkgs.sandpit.test";

fn t(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn start(fx: &Fixture, dns: &TestDns, extra: &[&str]) -> Serve {
    let upstream = dns.addr.to_string();
    let mut args = vec!["--dns-upstream", upstream.as_str()];
    args.extend_from_slice(extra);
    daemon::serve_with(&fx.bin, &fx.state, free_port(), &args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_policies_hold_on_the_host_side() {
    let Some(fx) = Fixture::new() else {
        return;
    };
    let pki = tempfile::tempdir().unwrap();
    let (ca_pem, cert, key) = test_ca(pki.path());
    let hosts = TestHosts::start_with(
        11,
        &[PUBLIC, PUBLIC2, OTHER, PRIVATE, CGNAT, LINK_LOCAL, PKGS],
        &[ULA],
        &[
            ("TLS_CERT", cert.to_str().unwrap()),
            ("TLS_KEY", key.to_str().unwrap()),
        ],
    );
    let dns = TestDns::start(&[
        (PKGS_NAME, &[PKGS]),
        ("allowed.sandpit.test", &[PUBLIC]),
        ("other.sandpit.test", &[OTHER]),
        ("rebind.sandpit.test", &[PUBLIC2, PRIVATE]),
    ])
    .await;
    let host_service = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let host_port = host_service.local_addr().unwrap().port();
    let serve = start(&fx, &dns, &["--max-connections", "20"]).await;

    // 1. The default policy (egress allowed): public test hosts yes; private, shared, link-local and
    //    IPv6 ranges, the host (its API port, any of its addresses) and other sandboxes no.
    let a = create(&serve, json!({})).await;
    let b = create(&serve, json!({})).await;
    let (s, info) = call(client().get(serve.url(&format!("/v1/sandboxes/{a}")))).await;
    assert_eq!(s, 200);
    assert_eq!(info["network"]["egress"], "allow", "{info}");
    let b_addr = sandbox_addr(&serve, &b).await;
    let a_addr = sandbox_addr(&serve, &a).await;
    assert_ne!(a_addr, b_addr);
    let (_, _, _) = run(
        &serve,
        &b,
        "user",
        &["sh", "-c", "python3 -m http.server 7000 >/dev/null 2>&1 &"],
    )
    .await;
    let gateway = {
        let mut parts: Vec<u32> = a_addr.split('.').map(|p| p.parse().unwrap()).collect();
        // The block's gateway is its first address: the sandbox's default route and resolver.
        parts[3] = 0;
        let base = parts.iter().fold(0u32, |acc, p| acc << 8 | p) & !0x3ff;
        std::net::Ipv4Addr::from(base + 1).to_string()
    };
    let mut targets = vec![
        t(PUBLIC, 9),
        t(PUBLIC2, 7001),
        t(PRIVATE, 9),
        t(CGNAT, 9),
        t(LINK_LOCAL, 9),
        t(ULA, 9),
        t(&b_addr, 7000),
        t(&gateway, host_port),
        t(&gateway, serve.port),
    ];
    targets.extend(host_addrs().iter().map(|h| t(h, host_port)));
    let r = probe(&serve, &a, &targets).await;
    assert_eq!(r[&t(PUBLIC, 9)], "ok", "{r:?}");
    assert_eq!(r[&t(PUBLIC2, 7001)], "ok", "{r:?}");
    for denied in targets.iter().skip(2) {
        assert_ne!(r[denied], "ok", "{denied} was reachable: {r:?}");
    }
    for refused in [
        t(PRIVATE, 9),
        t(CGNAT, 9),
        t(LINK_LOCAL, 9),
        t(&b_addr, 7000),
        t(&gateway, serve.port),
    ] {
        assert_eq!(
            r[&refused], "refused",
            "{refused} should be refused at once: {r:?}"
        );
    }
    assert!(r[&t(ULA, 9)].starts_with("err:"), "{r:?}");
    let (code, out, _) = run(
        &serve,
        &a,
        "user",
        &["getent", "hosts", "allowed.sandpit.test"],
    )
    .await;
    assert_eq!((code, out.split_whitespace().next()), (0, Some(PUBLIC)));

    // 2. An allow-list: a domain (pinned by the resolver), a CIDR; everything else denied, including
    //    the same addresses reached by an IP literal or a forged /etc/hosts line, and a rebinding name.
    let c = create(
        &serve,
        json!({"network": {"egress": "deny", "allow_out": ["allowed.sandpit.test", "*.rebind.sandpit.test", "rebind.sandpit.test", format!("{PUBLIC2}/32")]}}),
    )
    .await;
    let r = probe(
        &serve,
        &c,
        &[
            t("allowed.sandpit.test", 9),
            t(PUBLIC2, 9),
            t("other.sandpit.test", 9),
            t(OTHER, 9),
            t(PRIVATE, 9),
        ],
    )
    .await;
    assert_eq!(r[&t("allowed.sandpit.test", 9)], "ok", "{r:?}");
    assert_eq!(r[&t(PUBLIC2, 9)], "ok", "{r:?}");
    assert_eq!(r[&t("other.sandpit.test", 9)], "nodns", "{r:?}");
    assert_eq!(r[&t(OTHER, 9)], "refused", "{r:?}");
    assert_eq!(r[&t(PRIVATE, 9)], "refused", "{r:?}");
    // DNS rebinding: the private answer is dropped by the resolver (and refused by the firewall).
    let (_, out, _) = run(
        &serve,
        &c,
        "user",
        &["getent", "ahostsv4", "rebind.sandpit.test"],
    )
    .await;
    assert!(out.contains(PUBLIC2) && !out.contains(PRIVATE), "{out}");
    // /etc/hosts: root inside points the allowed name at another address; the host does not care.
    let (code, _, err) = run(
        &serve,
        &c,
        "root",
        &[
            "sh",
            "-c",
            &format!("echo '{OTHER} allowed.sandpit.test' > /etc/hosts"),
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let r = probe(&serve, &c, &[t("allowed.sandpit.test", 9)]).await;
    assert_eq!(r[&t("allowed.sandpit.test", 9)], "refused", "{r:?}");

    // Raw sockets (root keeps CAP_NET_RAW): a datagram with the sandbox's own source goes out; one with
    // a forged source (another sandbox's address) is dropped on the host side.
    let (code, out, err) = run(
        &serve,
        &a,
        "root",
        &["python3", "-c", SPOOF, &a_addr, &b_addr, PUBLIC],
    )
    .await;
    assert_eq!(code, 0, "{out} {err}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !hosts.log_text().contains("control") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = hosts.log_text();
    assert!(
        log.contains("control"),
        "the raw control datagram never arrived: {log}"
    );
    assert!(
        !log.contains("spoofed"),
        "a forged source address got through: {log}"
    );

    // 3. Bad policies are 400s that name the entry; nothing changes.
    let (s, e) = put_policy(&serve, &c, json!({"allow_out": ["10.0.0.0/33"]})).await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("10.0.0.0/33"),
        "{e}"
    );
    let (s, e) = post(
        serve.url("/v1/sandboxes"),
        json!({"network": {"deny_out": ["exa mple.com"]}}),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exa mple.com"),
        "{e}"
    );
    let many: Vec<String> = (0..1001)
        .map(|i| format!("203.0.{}.{}", i / 250, i % 250))
        .collect();
    let (s, e) = put_policy(&serve, &c, json!({"deny_out": many})).await;
    assert_eq!(s, 400, "{e}");
    let (s, p) = call(client().get(serve.url(&format!("/v1/sandboxes/{c}/network")))).await;
    assert_eq!((s, &p["egress"]), (200, &json!("deny")), "{p}");

    // 4. A live change cuts an open connection the new policy forbids.
    let (s, proc_) = post(
        serve.url(&format!("/v1/sandboxes/{a}/processes")),
        json!({"argv": ["python3", "-u", "-c", LINGER, PUBLIC], "user": "user"}),
    )
    .await;
    assert_eq!(s, 201, "{proc_}");
    let pid = proc_["id"].as_str().unwrap().to_owned();
    wait_output(&serve, &a, &pid, "echo 3").await;
    let (s, p) = put_policy(&serve, &a, json!({"deny_out": [format!("{PUBLIC}/32")]})).await;
    assert_eq!(s, 200, "{p}");
    let (s, done) = call(client().get(serve.url(&format!(
        "/v1/sandboxes/{a}/processes/{pid}/wait?timeout_ms=15000"
    ))))
    .await;
    assert_eq!(s, 200, "the connection was not cut: {done}");
    assert_eq!(done["exit_code"], 3, "{done}");
    assert!(done["stdout"].as_str().unwrap().contains("CUT"), "{done}");
    // ... while what the new policy allows still works, and the old one again restores it.
    let r = probe(&serve, &a, &[t(PUBLIC, 9), t(PUBLIC2, 9)]).await;
    assert_eq!(
        (r[&t(PUBLIC, 9)].as_str(), r[&t(PUBLIC2, 9)].as_str()),
        ("refused", "ok")
    );
    let (s, _) = put_policy(&serve, &a, json!({})).await;
    assert_eq!(s, 200);
    let r = probe(&serve, &a, &[t(PUBLIC, 9)]).await;
    assert_eq!(r[&t(PUBLIC, 9)], "ok");

    // 5. The connection cap (20 here): the 21st concurrent connection is refused.
    let (code, out, err) = run(&serve, &a, "user", &["python3", "-c", CAP, PUBLIC, "30"]).await;
    assert_eq!(code, 0, "{err}");
    let (ok, refused): (u32, u32) = {
        let mut it = out.split_whitespace().map(|x| x.parse::<u32>().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    };
    assert!(
        (15..=20).contains(&ok) && refused >= 10,
        "ok {ok}, refused {refused}"
    );

    // 6. The real package registries, one request each, with egress allowed; denied, pip fails fast.
    let (code, out, err) = run(
        &serve,
        &a,
        "user",
        &[
            "python3",
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "-d",
            "/tmp/dl",
            "six",
        ],
    )
    .await;
    assert_eq!(code, 0, "pip download: {out} {err}");
    let (code, out, err) = run(&serve, &a, "user", &["npm", "view", "left-pad", "version"]).await;
    assert_eq!(code, 0, "npm view: {out} {err}");
    assert!(out.trim().starts_with('1'), "{out}");
    let t0 = Instant::now();
    let (code, _, err) = run(
        &serve,
        &c,
        "user",
        &[
            "python3",
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "-d",
            "/tmp/dl",
            "six",
        ],
    )
    .await;
    assert_ne!(code, 0, "pip download worked with egress denied");
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}: {err}",
        t0.elapsed()
    );

    // 7. What a user types first, in `base` with egress allowed.
    user_installs(&serve, &hosts, &ca_pem).await;

    // Deleting sandboxes frees their links; stopping the daemon removes its firewall tables.
    let c_addr = sandbox_addr(&serve, &c).await;
    let denied_by_default = || deny_default_set(&c_addr).contains(&c_addr);
    assert!(
        denied_by_default(),
        "{c_addr} is not in deny_default while c runs"
    );
    for id in [&a, &b, &c] {
        let (s, _) = call(client().delete(serve.url(&format!("/v1/sandboxes/{id}")))).await;
        assert_eq!(s, 204);
    }
    // Freed slots are reset in batches (the daemon's housekeeping, every 5 s): c's policy must not
    // outlive it.
    let t0 = Instant::now();
    while denied_by_default() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the deleted sandbox's slot kept its policy: {:?}",
            deny_default_set(&c_addr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(hosts);
    drop(serve);
}

/// The addresses in the `deny_default` set of the firewall table of the block `addr` is in.
fn deny_default_set(addr: &str) -> Vec<String> {
    let a: std::net::Ipv4Addr = addr.parse().unwrap();
    let table = format!("sandpit_{:08x}", u32::from(a) & !0x3ff);
    let out = std::process::Command::new("nft")
        .args(["list", "set", "inet", &table, "deny_default"])
        .output()
        .unwrap();
    assert!(out.status.success(), "nft list set: {out:?}");
    // Elements only: the set's header names its type, never an address.
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_once("elements")
        .map(|(_, e)| e)
        .unwrap_or_default()
        .split(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Holds one TCP connection to the echo port, printing each echo, until the connection is cut.
const LINGER: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], 9), timeout=5)
n = 0
try:
    while True:
        s.sendall(b"x")
        if s.recv(16) != b"x":
            raise OSError("no echo")
        n += 1
        print("echo", n, flush=True)
        open("/tmp/linger", "w").write("echo %d" % n)
        time.sleep(0.1)
except OSError as e:
    print("CUT", repr(e), flush=True)
    sys.exit(3)
"#;

/// Sends two raw UDP datagrams to port 9 of `argv[3]`: one from the sandbox's own address (`argv[1]`),
/// one forged from `argv[2]`.
const SPOOF: &str = r#"
import socket, struct, sys
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
def packet(src, dst, payload):
    udp = struct.pack("!HHHH", 40000, 9, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return ip + udp
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for src, tag in ((sys.argv[1], b"control"), (sys.argv[2], b"spoofed")):
    s.sendto(packet(src, sys.argv[3], tag), (sys.argv[3], 0))
print("sent")
"#;

/// Opens N connections at once and keeps them open: prints how many succeeded and how many were refused.
const CAP: &str = r"
import socket, sys
ok = refused = 0
keep = []
for i in range(int(sys.argv[2])):
    try:
        keep.append(socket.create_connection((sys.argv[1], 7000 + i % 10), timeout=3))
        ok += 1
    except OSError:
        refused += 1
print(ok, refused)
";

/// Waits until the LINGER process has had `needle` echoes (it records them in /tmp/linger).
async fn wait_output(serve: &Serve, id: &str, _pid: &str, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, out, _) = run(serve, id, "user", &["cat", "/tmp/linger"]).await;
        if out.contains(needle) {
            return;
        }
        assert!(Instant::now() < deadline, "never echoed {needle:?}: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A test CA and a server certificate for [`PKGS_NAME`] signed by it (openssl, valid one day):
/// (the CA's PEM, the server's certificate file, its key file).
fn test_ca(dir: &std::path::Path) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let p = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl (scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=sandpit test CA",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        &format!("/CN={PKGS_NAME}"),
        "-keyout",
        &p("srv.key"),
        "-out",
        &p("srv.csr"),
    ]);
    std::fs::write(
        dir.join("ext"),
        format!(
            "subjectAltName=DNS:{PKGS_NAME}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-days",
        "1",
        "-in",
        &p("srv.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-extfile",
        &p("ext"),
        "-out",
        &p("srv.pem"),
    ]);
    (
        std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
        dir.join("srv.pem"),
        dir.join("srv.key"),
    )
}

/// Builds what the package test host serves into `argv[1]`: a wheel with a console script behind a
/// PEP 503 index (`/simple/sandpit-hello/`), an npm package with a `bin` as a registry document and
/// tarball (`/sandpit-left`), and a git repository for the dumb HTTP protocol (`/repo.git`).
const BUILD_PACKAGES: &str = r##"
import base64, hashlib, io, json, os, subprocess, sys, tarfile, tempfile, zipfile
out, host = sys.argv[1], sys.argv[2]
def b64(d): return base64.urlsafe_b64encode(d).rstrip(b"=").decode()
files = {
    "sandpit_hello/__init__.py": "def main():\n    print('hello from sandpit-hello')\n",
    "sandpit_hello-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: sandpit-hello\nVersion: 1.0\n",
    "sandpit_hello-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: sandpit-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    "sandpit_hello-1.0.dist-info/entry_points.txt": "[console_scripts]\nsandpit-hello = sandpit_hello:main\n",
}
record = "".join("%s,sha256=%s,%d\n" % (n, b64(hashlib.sha256(t.encode()).digest()), len(t)) for n, t in files.items())
files["sandpit_hello-1.0.dist-info/RECORD"] = record + "sandpit_hello-1.0.dist-info/RECORD,,\n"
wheel = "sandpit_hello-1.0-py3-none-any.whl"
os.makedirs(os.path.join(out, "packages"), exist_ok=True)
with zipfile.ZipFile(os.path.join(out, "packages", wheel), "w") as z:
    for n, t in files.items(): z.writestr(n, t)
digest = hashlib.sha256(open(os.path.join(out, "packages", wheel), "rb").read()).hexdigest()
os.makedirs(os.path.join(out, "simple", "sandpit-hello"), exist_ok=True)
open(os.path.join(out, "simple", "sandpit-hello", "index.html"), "w").write(
    '<!DOCTYPE html><html><body><a href="../../packages/%s#sha256=%s">%s</a></body></html>\n' % (wheel, digest, wheel))

pkg = {"name": "sandpit-left", "version": "1.0.0", "main": "index.js", "bin": {"sandpit-left": "cli.js"}}
members = {
    "package/package.json": (json.dumps(pkg), 0o644),
    "package/index.js": ("module.exports = (s, n) => ' '.repeat(Math.max(0, n - s.length)) + s;\n", 0o644),
    "package/cli.js": ("#!/usr/bin/env node\nconsole.log(require('./index.js')(process.argv[2] || '', 5));\n", 0o755),
}
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w:gz") as t:
    for n, (text, mode) in members.items():
        data = text.encode(); info = tarfile.TarInfo(n); info.size = len(data); info.mode = mode
        t.addfile(info, io.BytesIO(data))
tgz = buf.getvalue()
os.makedirs(os.path.join(out, "sandpit-left", "-"), exist_ok=True)
open(os.path.join(out, "sandpit-left", "-", "sandpit-left-1.0.0.tgz"), "wb").write(tgz)
dist = {"tarball": "https://%s/sandpit-left/-/sandpit-left-1.0.0.tgz" % host,
        "integrity": "sha512-" + base64.b64encode(hashlib.sha512(tgz).digest()).decode(),
        "shasum": hashlib.sha1(tgz).hexdigest()}
doc = {"name": "sandpit-left", "dist-tags": {"latest": "1.0.0"}, "versions": {"1.0.0": dict(pkg, dist=dist)}}
open(os.path.join(out, "sandpit-left", "index.json"), "w").write(json.dumps(doc))

src = tempfile.mkdtemp()
git = lambda *a, cwd=src: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@sandpit.test", "-c", "init.defaultBranch=main", *a], cwd=cwd, check=True, capture_output=True)
git("init", "-q")
open(os.path.join(src, "README"), "w").write("cloned over https\n")
git("add", "README"); git("commit", "-q", "-m", "first")
git("clone", "-q", "--bare", src, os.path.join(out, "repo.git"), cwd=out)
git("update-server-info", cwd=os.path.join(out, "repo.git"))
print("built")
"##;

/// `pip install`, `npm install` (in a project and `-g`) and `git clone` over HTTPS as `user` in `base`
/// with egress allowed, against the package test host.
///
/// The test host's certificate is signed by a test CA. How the sandbox comes to trust it is the point of
/// the check: nothing tells pip, npm or git about the test CA, and no tool's verification is weakened.
/// The sandbox's `/etc/ssl/certs/ca-certificates.crt` is first shown to be the host's bundle (same
/// bytes), the tools are shown to verify against it (a clone fails on the certificate), and then root
/// inside appends the test CA to that very file, the way an administrator adds a CA to the host's
/// bundle (`update-ca-certificates`). Every tool then succeeds with its default configuration from
/// `base`, which can only be because that file is what they trust.
async fn user_installs(serve: &Serve, hosts: &TestHosts, ca_pem: &str) {
    let out = std::process::Command::new("python3")
        .args(["-c", BUILD_PACKAGES])
        .arg(&hosts.files)
        .arg(PKGS_NAME)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building the test packages: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = create(serve, json!({})).await;
    let sh = |user: &'static str, cmd: String| {
        let d = d.clone();
        async move { run(serve, &d, user, &["sh", "-c", &cmd]).await }
    };
    let bundle = "/etc/ssl/certs/ca-certificates.crt";
    let host_sum = {
        use sha2::Digest as _;
        let b = std::fs::read(bundle).unwrap();
        format!("{:x}", sha2::Sha256::digest(&b))
    };
    let (_, sum, _) = sh("user", format!("sha256sum {bundle}")).await;
    assert_eq!(
        sum.split_whitespace().next(),
        Some(host_sum.as_str()),
        "the sandbox's CA bundle is not the host's"
    );
    let (code, cfg, _) = sh("user", "git config --get http.sslCAInfo".into()).await;
    assert_eq!((code, cfg.trim()), (0, bundle), "git's CA setting in base");
    let url = format!("https://{PKGS_NAME}");
    let (code, _, err) = sh("user", format!("git clone -q {url}/repo.git /tmp/r0")).await;
    assert_ne!(
        code, 0,
        "a clone from a host the bundle does not trust worked"
    );
    assert!(err.contains("certificate"), "{err}");
    let (code, _, err) = run(
        serve,
        &d,
        "root",
        &[
            "sh",
            "-c",
            &format!("printf '%s\\n' \"$1\" >> {bundle}"),
            "sh",
            ca_pem,
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = sh(
        "user",
        format!("git clone -q {url}/repo.git ~/repo && cat ~/repo/README"),
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "cloned over https\n"), "{err}");

    let (code, out, err) = sh(
        "user",
        format!(
            "python3 -m pip install --disable-pip-version-check --index-url {url}/simple/ \
             sandpit-hello && sandpit-hello && python3 -c 'import sandpit_hello; \
             print(sandpit_hello.__file__)'"
        ),
    )
    .await;
    assert_eq!(code, 0, "pip install: {out} {err}");
    assert!(out.contains("hello from sandpit-hello"), "{out}");
    assert!(
        out.contains("/home/user/.local/lib/python3"),
        "not in the user's site: {out}"
    );

    let (code, out, err) = sh(
        "user",
        format!(
            "mkdir -p ~/proj && cd ~/proj && npm init -y >/dev/null && npm install --registry \
             {url}/ sandpit-left && node -e \"console.log('[' + require('sandpit-left')('ab', 4) + ']')\""
        ),
    )
    .await;
    assert_eq!(code, 0, "npm install: {out} {err}");
    assert!(out.contains("[  ab]"), "{out}");
    let (code, out, err) = sh(
        "user",
        format!(
            "npm install -g --registry {url}/ sandpit-left && npm prefix -g && \
             ls ~/.local/lib/node_modules && echo \"[$(sandpit-left hi)]\""
        ),
    )
    .await;
    assert_eq!(code, 0, "npm install -g: {out} {err}");
    assert!(
        out.contains("/home/user/.local\n") && out.contains("sandpit-left\n"),
        "{out}"
    );
    assert!(out.contains("[   hi]"), "{out}");
    let (s, _) = call(client().delete(serve.url(&format!("/v1/sandboxes/{d}")))).await;
    assert_eq!(s, 204);
}

/// Regression: the firewall tables of daemons killed with their state directory removed piled up on the
/// host (107 of them made every `nft` call take seconds, and every daemon start with it). A daemon now
/// removes the tables of every unheld block whose owner's state directory is gone when it starts.
#[tokio::test(flavor = "multi_thread")]
async fn a_starting_daemon_removes_the_tables_of_daemons_whose_state_is_gone() {
    let Some(fx) = Fixture::new() else {
        return;
    };
    // The pool's last /22 (10.215.252.0/22), made to look abandoned: a lease naming a state dir that does
    // not exist, and a table with a marker chain no daemon makes.
    let dir = std::path::Path::new(sandpit_net::DEFAULT_LEASE_DIR);
    std::fs::create_dir_all(dir).unwrap();
    let lock = dir.join("0ad7fc00.lock");
    std::fs::write(&lock, "/nonexistent/sandpit-state-removed").unwrap();
    let nft = |script: &str| {
        let out = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn();
        let mut child = out.unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success(), "nft {script}");
    };
    nft("add table inet sandpit_0ad7fc00\nadd chain inet sandpit_0ad7fc00 stale_marker\n");
    let serve = daemon::serve(&fx.bin, &fx.state).await;
    let ruleset = String::from_utf8(
        std::process::Command::new("nft")
            .args(["list", "ruleset"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        !ruleset.contains("stale_marker"),
        "the abandoned table is still there"
    );
    let owner = std::fs::read_to_string(&lock).unwrap();
    assert!(
        owner.is_empty() || owner == fx.state.display().to_string(),
        "{owner:?}"
    );
    drop(serve);
}
