//! Preview URLs on the real daemon with real sandboxes (issue 16): by path and by host name, a server
//! bound to 127.0.0.1, private ports and port-scoped tokens, the cookie flow, public ports, WebSocket
//! echo, streaming, a large upload, credentials stripped and `X-Forwarded-*` set, 502 when nothing
//! listens, and a paused sandbox resumed by a request. Only loopback traffic. Needs root (SKIPPED
//! otherwise).

#![allow(clippy::too_many_lines, clippy::many_single_char_names)]

mod daemon;

use std::time::{Duration, Instant};

use daemon::{Fixture, KEY, Serve, call, client, post};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};

/// An HTTP/1.1 server for the sandbox: `/headers` echoes the request headers as JSON, `/upload` counts
/// the body, `/stream` sends three chunks 300 ms apart, anything else says hello.
const HTTP: &str = r#"
import http.server, json, sys, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def send(self, body, ctype="text/plain"):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path.startswith("/headers"):
            self.send(json.dumps({"path": self.path, "headers": dict(self.headers)}).encode(), "application/json")
        elif self.path == "/stream":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(3):
                c = b"chunk%d\n" % i
                self.wfile.write(b"%x\r\n%s\r\n" % (len(c), c))
                self.wfile.flush()
                time.sleep(0.3)
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send(b"hello from the sandbox")
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        left, total = n, 0
        while left:
            d = self.rfile.read(min(left, 1 << 20))
            if not d: break
            total += len(d); left -= len(d)
        self.send(str(total).encode())
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"#;

/// A minimal WebSocket echo server (RFC 6455: handshake, masked client frames, text and binary).
const WS: &str = r#"
import base64, hashlib, socket, struct, sys, threading
def serve(c):
    req = b""
    while b"\r\n\r\n" not in req:
        d = c.recv(4096)
        if not d: return
        req += d
    head = dict(l.split(": ", 1) for l in req.decode().split("\r\n")[1:] if ": " in l)
    key = head.get("Sec-WebSocket-Key", head.get("sec-websocket-key", ""))
    acc = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    origin = head.get("Origin", head.get("origin", "-"))
    c.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % acc).encode())
    f = c.makefile("rb")
    while True:
        h = f.read(2)
        if len(h) < 2: return
        op, n = h[0] & 15, h[1] & 127
        if n == 126: n = struct.unpack(">H", f.read(2))[0]
        elif n == 127: n = struct.unpack(">Q", f.read(8))[0]
        mask = f.read(4)
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(f.read(n)))
        if op == 8: return
        if op == 1: data = ("echo:" + data.decode() + " origin:" + origin).encode()
        hdr = bytes([0x80 | op]) + (bytes([len(data)]) if len(data) < 126 else b"\x7e" + struct.pack(">H", len(data)))
        c.sendall(hdr + data)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

async fn wait_listening(serve: &Serve, id: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = client()
            .get(serve.url(&format!("/v1/sandboxes/{id}/ports/{port}/")))
            .send()
            .await
            .unwrap();
        if r.status() != 502 {
            return;
        }
        assert!(Instant::now() < deadline, "port {port} never came up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client with no API key and no redirects followed, resolving `names` to the daemon (browsers resolve
/// every `*.localhost` name to loopback; glibc does not).
fn anonymous(names: &[String], port: u16) -> reqwest::Client {
    let mut b = reqwest::Client::builder();
    for n in names {
        b = b.resolve(n, std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    b.redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// One `GET` over HTTP/2 with prior knowledge (h2c) to the daemon at `addr`, with a port token:
/// (status, HTTP version of the answer, body).
async fn h2c_get(addr: &str, url: &str, token: &str) -> (u16, hyper::Version, String) {
    use http_body_util::BodyExt as _;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(url)
        .header("x-sandpit-token", token)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let (status, version) = (resp.status().as_u16(), resp.version());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, version, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn preview_urls_reach_sandbox_servers_with_port_scoped_access() {
    let Some(fx) = Fixture::new() else {
        return;
    };
    let serve = daemon::serve(&fx.bin, &fx.state).await;
    let (s, sb) = post(
        serve.url("/v1/sandboxes"),
        json!({"network": {"egress": "deny"}}),
    )
    .await;
    assert_eq!(s, 201, "{sb}");
    let id = sb["id"].as_str().unwrap().to_owned();
    let root = serve.url(&format!("/v1/sandboxes/{id}"));
    for argv in [
        json!(["python3", "-c", HTTP, "127.0.0.1", "8000"]),
        json!(["python3", "-c", WS, "8001"]),
    ] {
        let (s, p) = post(format!("{root}/processes"), json!({"argv": argv})).await;
        assert_eq!(s, 201, "{p}");
    }
    wait_listening(&serve, &id, 8000).await;
    wait_listening(&serve, &id, 8001).await;
    let host = |port: u16| format!("http://{port}-{id}.localhost:{}", serve.port);
    let anon = anonymous(
        &[
            format!("8000-{id}.localhost"),
            format!("8001-{id}.localhost"),
        ],
        serve.port,
    );

    // By path with the API key: a server bound to 127.0.0.1, with no egress at all.
    let r = client()
        .get(format!("{root}/ports/8000/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello from the sandbox");

    // Private by default: by host name without a token is 401, JSON.
    let r = anon.get(host(8000)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "unauthenticated", "{e}");

    // A port-scoped token: opens 8000, never 8001.
    let (s, exposed) = post(format!("{root}/ports/8000"), json!({})).await;
    assert_eq!(s, 200, "{exposed}");
    let token = exposed["token"].as_str().unwrap().to_owned();
    assert_eq!(exposed["url"], format!("{}/", host(8000)));
    let r = anon
        .get(format!("{}/headers?x=1", host(8000)))
        .header("X-Sandpit-Token", &token)
        .header("Authorization", "Bearer secret-of-the-caller")
        .header("Cookie", "app=1; sandpit_token=zzz")
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.unwrap();
    let h = &seen["headers"];
    let lower: std::collections::HashMap<String, String> = h
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                v.as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert!(!lower.contains_key("authorization"), "{seen}");
    assert!(!lower.contains_key("x-sandpit-token"), "{seen}");
    assert_eq!(
        lower.get("cookie").map(String::as_str),
        Some("app=1"),
        "{seen}"
    );
    assert_eq!(
        lower["x-forwarded-host"],
        format!("8000-{id}.localhost:{}", serve.port)
    );
    assert_eq!(lower["x-forwarded-proto"], "http");
    // The peer address from the listener, appended to what the client said.
    assert_eq!(lower["x-forwarded-for"], "203.0.113.9, 127.0.0.1", "{seen}");
    assert_eq!(seen["path"], "/headers?x=1");
    let r = anon
        .get(host(8001))
        .header("X-Sandpit-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a token for 8000 opened 8001");

    // The browser flow: ?sandpit_token= once → an HttpOnly cookie for that host and a clean URL.
    let r = anon
        .get(format!("{}/hello?sandpit_token={token}&a=b", host(8000)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/hello?a=b");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.starts_with(&format!("sandpit_token={token}")),
        "{cookie}"
    );
    let r = anon
        .get(format!("{}/hello?a=b", host(8000)))
        .header("Cookie", cookie.split(';').next().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Path form with the token (and no key): the prefix is stripped, X-Forwarded-Prefix says what it was.
    let r = anon
        .get(format!("{root}/ports/8000/headers"))
        .header("X-Sandpit-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["path"], "/headers");
    let xff = seen["headers"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-forwarded-for"))
        .map(|(_, v)| v.clone());
    assert_eq!(xff, Some(json!("127.0.0.1")), "{seen}");

    // HTTP/2 from the client (h2c, prior knowledge) by host name: the daemon speaks HTTP/1.1 to the
    // sandbox's server, the client gets its answer over HTTP/2.
    let (status, version, body) = h2c_get(
        &serve.addr(),
        &format!("http://8000-{id}.localhost:{}/headers?h2=1", serve.port),
        &token,
    )
    .await;
    assert_eq!((status, version), (200, hyper::Version::HTTP_2), "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["path"], "/headers?h2=1", "{seen}");
    let host_seen = seen["headers"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.clone());
    assert_eq!(
        host_seen,
        Some(json!(format!("8000-{id}.localhost:{}", serve.port))),
        "{seen}"
    );

    // Streaming: the first chunk arrives before the last is written.
    let t0 = Instant::now();
    let mut r = client()
        .get(format!("{root}/ports/8000/stream"))
        .send()
        .await
        .unwrap();
    let first = r.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"chunk0"), "{first:?}");
    assert!(
        t0.elapsed() < Duration::from_millis(550),
        "not streamed: {:?}",
        t0.elapsed()
    );
    while r.chunk().await.unwrap().is_some() {}

    // A large upload (32 MiB), streamed through.
    let big = vec![7u8; 32 << 20];
    let r = client()
        .post(format!("{root}/ports/8000/upload"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), (32u64 << 20).to_string());

    // Public: anyone. WebSocket echo through the host form, Origin passed unchanged.
    let (s, p) = post(format!("{root}/ports/8001"), json!({"public": true})).await;
    assert_eq!((s, &p["public"]), (200, &json!(true)), "{p}");
    let ws_url = format!("ws://8001-{id}.localhost:{}/", serve.port);
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        ws_url.as_str(),
    )
    .unwrap();
    req.headers_mut()
        .insert("Origin", "http://example.test".parse().unwrap());
    let stream = tokio::net::TcpStream::connect(serve.addr()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::Text("hi".into()))
        .await
        .unwrap();
    let m = ws.next().await.unwrap().unwrap();
    assert_eq!(m.to_text().unwrap(), "echo:hi origin:http://example.test");
    let _ = ws.close(None).await;

    // Closing the port revokes its token.
    let (s, _) = call(client().delete(format!("{root}/ports/8000"))).await;
    assert_eq!(s, 204);
    let r = anon
        .get(host(8000))
        .header("X-Sandpit-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (s, list) = call(client().get(format!("{root}/ports"))).await;
    assert_eq!(
        (s, list["ports"].as_array().unwrap().len()),
        (200, 1),
        "{list}"
    );

    // Nothing listening: 502 with a JSON body that says so.
    let r = client()
        .get(format!("{root}/ports/8999/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "bad_gateway", "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("8999"),
        "{e}"
    );

    // A paused sandbox is resumed by a preview request.
    let (s, p) = post(format!("{root}/pause"), json!({})).await;
    assert_eq!((s, &p["state"]), (200, &json!("paused")));
    let r = client()
        .get(format!("{root}/ports/8000/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, info) = call(client().get(root.clone())).await;
    assert_eq!(info["state"], "running", "{info}");

    let _ = KEY;
    let (s, _) = call(client().delete(root)).await;
    assert_eq!(s, 204);
}
