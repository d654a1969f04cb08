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
    Serve::start_with(&fx.bin, &fx.state, free_port(), &args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn egress_policies_hold_on_the_host_side() {
    let Some(fx) = Fixture::new() else {
        return;
    };
    let hosts = TestHosts::start(
        11,
        &[PUBLIC, PUBLIC2, OTHER, PRIVATE, CGNAT, LINK_LOCAL],
        &[ULA],
    );
    let dns = TestDns::start(&[
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

    // Deleting sandboxes frees their links; stopping the daemon removes its firewall tables.
    for id in [&a, &b, &c] {
        let (s, _) = call(client().delete(serve.url(&format!("/v1/sandboxes/{id}")))).await;
        assert_eq!(s, 204);
    }
    drop(hosts);
    drop(serve);
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
