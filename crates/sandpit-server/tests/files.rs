//! The files API (issue 15) against the real daemon (`sandpit serve --backend isolate`, spawned) and
//! real sandboxes: round trips checked by sha256 (empty, 1 byte, 100 MiB, a name that is not UTF-8),
//! ownership and modes as `user` and `root`, symlinks that name host paths, the disk cap (507 and
//! nothing half-written), concurrent writers, tar in and out, watches that survive a disconnect, every
//! bad input's code, a paused sandbox, and the file API's escape attempts (traversal, magic links,
//! devices, fifos, very deep trees, hostile archives), with host-side checks.
//!
//! Needs root, a host the isolator accepts and `target/debug/sandpit` (see `daemon::prerequisites`);
//! otherwise a loud SKIPPED line and a pass.
#![allow(
    clippy::too_many_lines,
    clippy::many_single_char_names,
    clippy::type_complexity,
    clippy::assigning_clones
)]

mod daemon;

use std::time::{Duration, Instant};

use daemon::{Fixture, call, client, create, post, sh};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Percent-encodes path bytes for a query string.
fn q(path: &[u8]) -> String {
    percent_encoding::percent_encode(path, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn put(root: &str, path: &[u8], extra: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    call(
        client()
            .put(format!("{root}/files?path={}{extra}", q(path)))
            .body(body),
    )
    .await
}

async fn get(root: &str, path: &[u8], extra: &str) -> (u16, Vec<u8>) {
    let r = client()
        .get(format!("{root}/files?path={}{extra}", q(path)))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

/// A ranged read: status, `Content-Range`, body.
async fn get_range(root: &str, path: &str, range: &str) -> (u16, String, Vec<u8>) {
    let r = client()
        .get(format!("{root}/files?path={path}"))
        .header("Range", range)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let content_range = r
        .headers()
        .get("content-range")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_range, r.bytes().await.unwrap().to_vec())
}

async fn get_json(url: String) -> (u16, Value) {
    call(client().get(url)).await
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

/// `n` pseudo-random bytes (xorshift), in 1 MiB chunks, hashed on the way.
fn random_body(n: usize, seed: u64) -> (reqwest::Body, tokio::sync::oneshot::Receiver<String>) {
    let (done, hash) = tokio::sync::oneshot::channel();
    let mut state = seed | 1;
    let mut left = n;
    let mut hasher = Some((Sha256::new(), done));
    let stream = futures_util::stream::poll_fn(move |_| {
        if left == 0 {
            if let Some((h, done)) = hasher.take() {
                let _ = done.send(hex(&h.finalize()));
            }
            return std::task::Poll::Ready(None);
        }
        let len = left.min(1 << 20);
        let mut chunk = Vec::with_capacity(len);
        while chunk.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.extend_from_slice(&state.to_le_bytes());
        }
        chunk.truncate(len);
        left -= len;
        if let Some((h, _)) = hasher.as_mut() {
            h.update(&chunk);
        }
        std::task::Poll::Ready(Some(Ok::<_, std::io::Error>(chunk)))
    });
    (reqwest::Body::wrap_stream(stream), hash)
}

fn hex(d: &[u8]) -> String {
    d.iter().fold(String::new(), |mut s, b| {
        let _ = std::fmt::Write::write_fmt(&mut s, format_args!("{b:02x}"));
        s
    })
}

/// Downloads with a streaming hash (nothing held whole).
async fn get_sha(root: &str, path: &[u8]) -> (u16, String, u64) {
    let r = client()
        .get(format!("{root}/files?path={}", q(path)))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut s = r.bytes_stream();
    while let Some(c) = s.next().await {
        let c = c.unwrap();
        n += c.len() as u64;
        h.update(&c);
    }
    (status, hex(&h.finalize()), n)
}

#[tokio::test(flavor = "multi_thread")]
async fn files_api_on_real_sandboxes() {
    let Some(fx) = Fixture::new() else {
        return;
    };
    let serve = daemon::serve(&fx.bin, &fx.state).await;
    let id = create(&serve, json!({})).await;
    let root = serve.url(&format!("/v1/sandboxes/{id}"));
    let t = Instant::now();
    round_trips(&root).await;
    eprintln!("round trips: {:?}", t.elapsed());
    ownership_and_modes(&root).await;
    symlinks_resolve_in_the_sandbox(&root).await;
    concurrent_writers_leave_one_whole_file(&root).await;
    tar_in_and_out(&root).await;
    every_bad_input_has_its_code(&root).await;
    watch_survives_a_disconnect(&root).await;
    poll_watchers(&root).await;
    escape_attempts(&root).await;
    // A paused sandbox is resumed by a file call, as by a command.
    let (s, v) = post(format!("{root}/pause"), json!({})).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("paused")), "{v}");
    let (s, body) = get(&root, b"/home/user/one", "").await;
    assert_eq!((s, body.as_slice()), (200, b"x".as_slice()));
    eprintln!("all but the disk cap: {:?}", t.elapsed());

    let small = create(&serve, json!({"disk_mb": 16})).await;
    disk_cap_leaves_nothing_half_written(&serve.url(&format!("/v1/sandboxes/{small}"))).await;
    for sb in [&id, &small] {
        let r = client()
            .delete(serve.url(&format!("/v1/sandboxes/{sb}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
}

async fn round_trips(root: &str) {
    // Empty, one byte, a name that is not UTF-8.
    for (path, data) in [
        (b"/home/user/empty".as_slice(), b"".as_slice()),
        (b"/home/user/one", b"x"),
        (b"/home/user/\xff\xfe-not-utf8.bin", b"bytes \x00\x01\x02"),
        ("/home/user/ünïcødé 文件.txt".as_bytes(), "çà".as_bytes()),
    ] {
        let (s, e) = put(root, path, "", data.to_vec()).await;
        assert_eq!(s, 200, "{e}");
        assert_eq!(e["size"], data.len(), "{e}");
        assert_eq!(
            (e["type"].as_str(), e["owner"].as_str()),
            (Some("file"), Some("user"))
        );
        let (s, back) = get(root, path, "").await;
        assert_eq!((s, back.as_slice()), (200, data));
    }
    // The name that is not UTF-8 is listed with its bytes.
    let (s, l) = get_json(format!("{root}/fs/list?path=/home/user")).await;
    assert_eq!(s, 200, "{l}");
    let odd = l["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path_b64"].is_string())
        .expect("an entry with path_b64");
    assert!(
        odd["name"].as_str().unwrap().ends_with("-not-utf8.bin"),
        "{odd}"
    );
    // 100 MiB, streamed both ways, checked by sha256.
    let (body, sent) = random_body(100 << 20, 42);
    let (s, e) = put(root, b"big.bin", "", body).await;
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["size"], 100 << 20);
    let sent = sent.await.unwrap();
    let (s, got, n) = get_sha(root, b"big.bin").await;
    assert_eq!((s, n), (200, 100 << 20));
    assert_eq!(got, sent, "the 100 MiB file came back different");
    // A range.
    let (s, range, body) = get_range(root, "big.bin", "bytes=1048576-1048585").await;
    assert_eq!(s, 206);
    assert_eq!(range, format!("bytes 1048576-1048585/{}", 100 << 20));
    assert_eq!(body.len(), 10);
    let (s, _) = call(client().delete(format!("{root}/fs?path=big.bin"))).await;
    assert_eq!(s, 204);
    // With a Content-Length the daemon takes the fast path (the agent splices the content): the same
    // bytes both ways, whole and in a range of more than a MiB.
    let data: Vec<u8> = (0..(24usize << 20) + 4321)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (s, e) = put(root, b"sized.bin", "", data.clone()).await;
    assert_eq!(
        (s, e["size"].as_u64()),
        (200, Some(data.len() as u64)),
        "{e}"
    );
    let (s, back) = get(root, b"sized.bin", "").await;
    assert_eq!((s, back.len()), (200, data.len()));
    assert!(back == data, "the spliced download differs from the upload");
    let (s, range, body) = get_range(root, "sized.bin", "bytes=1000-3001000").await;
    assert_eq!(s, 206);
    assert_eq!(range, format!("bytes 1000-3001000/{}", data.len()));
    assert!(body == data[1000..=3_001_000]);
    a_download_the_client_switches(root, &data).await;
    let (s, _) = call(client().delete(format!("{root}/fs?path=sized.bin"))).await;
    assert_eq!(s, 204);
    an_upload_that_breaks_off_leaves_nothing(root, false).await;
    an_upload_that_breaks_off_leaves_nothing(root, true).await;
    // gzip on the way in.
    let mut gz = flate2_gzip(b"compressed content");
    gz.shrink_to_fit();
    let (s, e) = call(
        client()
            .put(format!("{root}/files?path=gz.txt"))
            .header("Content-Encoding", "gzip")
            .body(gz),
    )
    .await;
    assert_eq!((s, e["size"].as_u64()), (200, Some(18)), "{e}");
}

/// An answer's head read off a raw connection.
struct RawAnswer {
    conn: tokio::net::TcpStream,
    /// `HTTP/1.1 101 Switching Protocols` and the like.
    status_line: String,
    /// Names lower-cased.
    headers: Vec<(String, String)>,
    /// What came after the head in the same reads.
    rest: Vec<u8>,
}

impl RawAnswer {
    fn status(&self) -> u16 {
        self.status_line[9..12].parse().unwrap()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// The rest of an ordinary answer's body (`Content-Length`).
    async fn body(mut self) -> Vec<u8> {
        use tokio::io::AsyncReadExt as _;
        let len: usize = self.header("content-length").unwrap().parse().unwrap();
        while self.rest.len() < len {
            let mut chunk = vec![0u8; len - self.rest.len()];
            let n = self.conn.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            self.rest.extend_from_slice(&chunk[..n]);
        }
        self.rest
    }

    /// Everything up to the daemon's close (after a 101).
    async fn until_close(mut self) -> Vec<u8> {
        use tokio::io::AsyncReadExt as _;
        tokio::time::timeout(
            Duration::from_secs(60),
            self.conn.read_to_end(&mut self.rest),
        )
        .await
        .expect("the daemon did not close a switched connection")
        .unwrap();
        self.rest
    }
}

/// `METHOD {root}/files?path=PATH` on a raw connection with the key, the switch's two headers unless
/// `!upgrade`, and `extra` header lines; the answer's head.
async fn raw_files_request(
    root: &str,
    method: &str,
    path: &str,
    upgrade: bool,
    extra: &str,
) -> RawAnswer {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let url = reqwest::Url::parse(root).unwrap();
    let mut conn = tokio::net::TcpStream::connect((url.host_str().unwrap(), url.port().unwrap()))
        .await
        .unwrap();
    let switch = if upgrade {
        "Connection: upgrade\r\nUpgrade: sandpit-file\r\n"
    } else {
        ""
    };
    let head = format!(
        "{method} {}/files?path={path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         {switch}{extra}\r\n",
        url.path(),
        daemon::KEY,
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the daemon closed before its answer's head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    RawAnswer {
        conn,
        status_line,
        headers,
        rest: buf[end + 4..].to_vec(),
    }
}

/// `GET /files` asking for the switch: the status line, the headers and the content (to the close after
/// a 101, else `Content-Length`).
async fn switched_get(
    root: &str,
    path: &str,
    extra: &str,
) -> (String, Vec<(String, String)>, Vec<u8>) {
    let a = raw_files_request(root, "GET", path, true, extra).await;
    let (status, headers) = (a.status_line.clone(), a.headers.clone());
    let body = if a.status() == 101 {
        a.until_close().await
    } else {
        a.body().await
    };
    (status, headers, body)
}

/// `PUT /files` as a switched upload (`Sandpit-Length`, and the switch's headers unless `!upgrade`, as a
/// proxy that drops them would): `send` of the `data.len()` announced bytes go after the 101 (fewer: the
/// connection is then dropped, and the answer is `(0, null)`); the answer is the status and JSON, raw
/// after a 101 or the ordinary one.
async fn switched_put(
    root: &str,
    path: &str,
    data: &[u8],
    send: usize,
    upgrade: bool,
    extra: &str,
) -> (u16, Value) {
    use tokio::io::AsyncWriteExt as _;
    let extra = format!("Sandpit-Length: {}\r\n{extra}", data.len());
    let mut a = raw_files_request(root, "PUT", path, upgrade, &extra).await;
    if a.status() != 101 {
        let status = a.status();
        return (status, serde_json::from_slice(&a.body().await).unwrap());
    }
    assert!(a.rest.is_empty(), "bytes after the 101 before the content");
    let sent = a.conn.write_all(&data[..send]).await;
    if send < data.len() {
        // A client that breaks off.
        tokio::time::sleep(Duration::from_millis(200)).await;
        return (0, Value::Null);
    }
    // A refusal before the content was all taken still has its answer read.
    let _ = sent;
    let answer = a.until_close().await;
    assert_eq!(
        answer.get(3),
        Some(&b'\n'),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let status = std::str::from_utf8(&answer[..3]).unwrap().parse().unwrap();
    (status, serde_json::from_slice(&answer[4..]).unwrap())
}

/// A client on plain HTTP/1.1 that asks for the switch gets large content raw after a 101 (the daemon
/// splices it from the agent's socket to the client's), with the real status and length in headers, and
/// the connection closes after exactly that many bytes; a range likewise; a small file and an error
/// come as ordinary answers.
async fn a_download_the_client_switches(root: &str, data: &[u8]) {
    let header = |h: &[(String, String)], name: &str| {
        h.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    };
    let (status, h, body) = switched_get(root, "sized.bin", "").await;
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    assert_eq!(header(&h, "upgrade").as_deref(), Some("sandpit-file"));
    assert_eq!(header(&h, "sandpit-status").as_deref(), Some("200"));
    assert_eq!(header(&h, "sandpit-length"), Some(data.len().to_string()));
    assert_eq!(body.len(), data.len());
    assert!(
        body == data,
        "the switched download differs from the upload"
    );

    let (status, h, body) = switched_get(root, "sized.bin", "Range: bytes=1000-3001000\r\n").await;
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    assert_eq!(header(&h, "sandpit-status").as_deref(), Some("206"));
    assert_eq!(
        header(&h, "content-range"),
        Some(format!("bytes 1000-3001000/{}", data.len()))
    );
    assert!(body == data[1000..=3_001_000]);

    let (s, _) = put(root, b"small.txt", "", "small").await;
    assert_eq!(s, 200);
    let (status, _, body) = switched_get(root, "small.txt", "").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, b"small");

    let (status, _, body) = switched_get(root, "missing.bin", "").await;
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "not_found");

    // A switched upload: the same bytes land, and come back the same.
    let (s, e) = switched_put(root, "switched.bin", data, data.len(), true, "").await;
    assert_eq!(
        (s, e["size"].as_u64()),
        (200, Some(data.len() as u64)),
        "{e}"
    );
    let (s, back) = get(root, b"switched.bin", "").await;
    assert_eq!((s, back.len()), (200, data.len()));
    assert!(back == data, "the switched upload differs");
    // A proxy that dropped the switch's headers: 426, and the client sends a body instead.
    let (s, e) = switched_put(root, "switched2.bin", data, 0, false, "").await;
    assert_eq!((s, code(&e)), (426, "invalid_argument"), "{e}");
    // A switched upload has no body.
    let (s, e) = switched_put(
        root,
        "switched2.bin",
        b"12345",
        0,
        true,
        "Content-Length: 5\r\n",
    )
    .await;
    assert_eq!((s, code(&e)), (400, "invalid_argument"), "{e}");
    let (s, e) = switched_put(root, "bad%00name", data, data.len(), true, "").await;
    assert_eq!((s, code(&e)), (400, "invalid_argument"), "{e}");
    let (s, _) = get(root, b"switched2.bin", "").await;
    assert_eq!(s, 404, "a refused switched upload wrote something");
}

/// A client that announces 4 MiB, sends one and hangs up: on the fast path the agent gets a connection
/// that ends early and must leave neither the file nor its temporary behind. `switched`: the client's
/// own connection is switched (the daemon splices it to the agent's).
async fn an_upload_that_breaks_off_leaves_nothing(root: &str, switched: bool) {
    use tokio::io::AsyncWriteExt as _;
    if switched {
        let data = vec![9u8; 4 << 20];
        let (s, _) = switched_put(root, "/home/user/broken.bin", &data, 1 << 20, true, "").await;
        assert_eq!(s, 0);
        return nothing_left_named_broken(root).await;
    }
    let url = reqwest::Url::parse(root).unwrap();
    let mut conn = tokio::net::TcpStream::connect((url.host_str().unwrap(), url.port().unwrap()))
        .await
        .unwrap();
    let head = format!(
        "PUT {}/files?path=/home/user/broken.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Length: {}\r\n\r\n",
        url.path(),
        daemon::KEY,
        4 << 20
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&vec![9u8; 1 << 20]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(conn);
    nothing_left_named_broken(root).await;
}

/// Polls until `/home/user` holds nothing named `broken*` (the agent has cleaned up).
async fn nothing_left_named_broken(root: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, v) = get_json(format!("{root}/fs/list?path=/home/user&user=root")).await;
        assert_eq!(s, 200, "{v}");
        let left: Vec<String> = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .filter(|n| n.contains("broken"))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a broken-off upload left {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gzip member holding `data` stored uncompressed (the test needs no compressor).
fn flate2_gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    // One final stored deflate block.
    out.push(1);
    let len = data.len() as u16;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

async fn ownership_and_modes(root: &str) {
    // user cannot read /root; root can.
    let (s, e) = put(root, b"/root/secret", "&user=root&mode=0600", "s3cret").await;
    assert_eq!(s, 200, "{e}");
    assert_eq!(
        (e["owner"].as_str(), e["mode"].as_str()),
        (Some("root"), Some("0600"))
    );
    let (s, body) = get(root, b"/root/secret", "").await;
    assert_eq!(s, 403, "{}", String::from_utf8_lossy(&body));
    let (s, body) = get(root, b"/root/secret", "&user=root").await;
    assert_eq!((s, body.as_slice()), (200, b"s3cret".as_slice()));
    let (s, l) = get_json(format!("{root}/fs/list?path=/root")).await;
    assert_eq!((s, code(&l)), (403, "permission_denied"), "{l}");
    // The kernel agrees with the API about who owns what.
    let (_, out) = sh(
        root,
        "stat -c '%U %a' /root/secret /home/user/one",
        Some("root"),
    )
    .await;
    assert_eq!(out, "root 600\nuser 644\n");
    // Rewriting keeps the mode; `mode` changes it.
    let (s, _) = call(
        client()
            .post(format!("{root}/fs/chmod"))
            .json(&json!({"path": "one", "mode": "0640"})),
    )
    .await;
    assert_eq!(s, 200);
    let (_, e) = put(root, b"one", "", "y").await;
    assert_eq!(
        (e["mode"].as_str(), e["permissions"].as_str()),
        (Some("0640"), Some("rw-r-----"))
    );
    let (_, e) = put(root, b"one", "&mode=755", "x").await;
    assert_eq!(e["mode"], "0755");
    // root rewriting user's file keeps user as the owner.
    let (_, e) = put(root, b"/home/user/one", "&user=root", "x").await;
    assert_eq!(e["owner"], "user", "{e}");
    // chown is root's.
    let (s, e) = call(client().post(format!("{root}/fs/chown")).json(
        &json!({"path": "/home/user/one", "owner": "root", "group": "root", "user": "user"}),
    ))
    .await;
    assert_eq!((s, code(&e)), (403, "permission_denied"), "{e}");
    let (s, e) = call(
        client()
            .post(format!("{root}/fs/chown"))
            .json(&json!({"path": "/home/user/gz.txt", "owner": "root"})),
    )
    .await;
    assert_eq!((s, e["owner"].as_str()), (200, Some("root")), "{e}");
    // user cannot replace a file they may not write, even in their own directory.
    let (s, e) = put(root, b"/home/user/gz.txt", "", "mine now").await;
    assert_eq!((s, code(&e)), (403, "permission_denied"), "{e}");
    // mkdir, move, remove as user.
    let (s, e) = post(
        format!("{root}/fs/mkdir"),
        json!({"path": "d1/d2", "mode": "0700"}),
    )
    .await;
    assert_eq!(
        (s, e["mode"].as_str(), e["owner"].as_str()),
        (201, Some("0700"), Some("user")),
        "{e}"
    );
    let (s, _) = post(format!("{root}/fs/mkdir"), json!({"path": "d1/d2"})).await;
    assert_eq!(s, 200);
    let (s, e) = post(
        format!("{root}/fs/move"),
        json!({"from": "one", "to": "d1/d2/one"}),
    )
    .await;
    assert_eq!(
        (s, e["path"].as_str()),
        (200, Some("/home/user/d1/d2/one")),
        "{e}"
    );
    let (s, e) = get_json(format!("{root}/fs/list?path=d1&depth=2")).await;
    assert_eq!(
        (s, e["entries"].as_array().map(Vec::len)),
        (200, Some(2)),
        "{e}"
    );
    let (s, _) = post(
        format!("{root}/fs/move"),
        json!({"from": "d1/d2/one", "to": "one"}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, e) = call(client().delete(format!("{root}/fs?path=d1"))).await;
    assert_eq!((s, code(&e)), (409, "not_empty"), "{e}");
    let (s, _) = call(client().delete(format!("{root}/fs?path=d1&recursive=true"))).await;
    assert_eq!(s, 204);
    let (s, e) = get_json(format!("{root}/fs/stat?path=d1")).await;
    assert_eq!((s, code(&e)), (404, "not_found"));
}

async fn symlinks_resolve_in_the_sandbox(root: &str) {
    // A file that exists on the host, at a path the sandbox does not have.
    let host = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(host.path(), "HOST CONTENT").unwrap();
    let hp = host.path().display().to_string();
    let (c, _) = sh(root, &format!("ln -s {hp} /home/user/to-host"), None).await;
    assert_eq!(c, 0);
    let (s, body) = get(root, b"/home/user/to-host", "").await;
    assert_eq!(
        s,
        404,
        "read through a link to a host path: {}",
        String::from_utf8_lossy(&body)
    );
    // Writing through it creates the file in the sandbox, never on the host.
    let (s, e) = put(root, b"/home/user/to-host", "&user=root", "SANDBOX").await;
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["path"], hp.as_str());
    assert_eq!(
        std::fs::read_to_string(host.path()).unwrap(),
        "HOST CONTENT"
    );
    let (s, body) = get(root, b"/home/user/to-host", "").await;
    assert_eq!((s, body.as_slice()), (200, b"SANDBOX".as_slice()));
    // The link itself is still a link.
    let (_, e) = get_json(format!("{root}/fs/stat?path=to-host")).await;
    assert_eq!(
        (e["type"].as_str(), e["symlink_target"].as_str()),
        (Some("symlink"), Some(hp.as_str()))
    );
}

async fn concurrent_writers_leave_one_whole_file(root: &str) {
    let writers: Vec<_> = (0..8u8)
        .map(|i| {
            let root = root.to_owned();
            tokio::spawn(async move {
                put(&root, b"contended", "", vec![b'a' + i; 3 << 20])
                    .await
                    .0
            })
        })
        .collect();
    for w in writers {
        assert_eq!(w.await.unwrap(), 200);
    }
    let (s, body) = get(root, b"contended", "").await;
    assert_eq!((s, body.len()), (200, 3 << 20));
    assert!(
        body.iter().all(|b| *b == body[0]),
        "a mix of writers' bytes"
    );
    let (_, l) = get_json(format!("{root}/fs/list?path=/home/user")).await;
    let temps = l["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"].as_str().unwrap().contains(".sandpit-"))
        .count();
    assert_eq!(temps, 0, "temporary files were left: {l}");
}

fn tar_with(members: &[(&[u8], tar::EntryType, &[u8], Option<&[u8]>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, link) in members {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

async fn tar_in_and_out(root: &str) {
    // 200 small files in one request.
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..200 {
        let data = format!("file {i}\n");
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        b.append_data(
            &mut h,
            format!("src/pkg{}/f{i}.txt", i % 10),
            data.as_bytes(),
        )
        .unwrap();
    }
    let data = b.into_inner().unwrap();
    let (s, r) = call(
        client()
            .post(format!("{root}/files/tar?path=proj"))
            .body(data),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    // 200 files (the archive has no directory members: their directories are made on the way).
    assert_eq!(r["entries"].as_array().map(Vec::len), Some(200));
    assert_eq!(
        r["skipped"].as_array().map(Vec::len),
        Some(0),
        "{}",
        r["skipped"]
    );
    let (_, body) = get(root, b"proj/src/pkg3/f13.txt", "").await;
    assert_eq!(body, b"file 13\n");
    let (_, out) = sh(root, "stat -c '%U %a' proj/src/pkg3/f13.txt", None).await;
    assert_eq!(out, "user 600\n");
    // Out again as a tar.
    let r = client()
        .get(format!("{root}/files/tar?path=proj/src"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.unwrap();
    let mut a = tar::Archive::new(&bytes[..]);
    let names: Vec<String> = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names.len(), 211, "{names:?}"); // src, 10 dirs, 200 files
    assert!(names.contains(&"src/pkg3/f13.txt".to_owned()));
    // A missing path is a JSON error, not an empty archive.
    let (s, e) = call(client().get(format!("{root}/files/tar?path=nope"))).await;
    assert_eq!((s, code(&e)), (404, "not_found"));
}

async fn every_bad_input_has_its_code(root: &str) {
    let long_name = "n".repeat(256);
    let long_path = "/a".repeat(2100);
    for (url, want) in [
        (format!("{root}/files?path="), (400, "invalid_argument")),
        (format!("{root}/files"), (400, "invalid_argument")),
        (
            format!("{root}/files?path=a%00b"),
            (400, "invalid_argument"),
        ),
        (
            format!("{root}/files?path={long_name}"),
            (400, "invalid_argument"),
        ),
        (
            format!("{root}/files?path={long_path}"),
            (400, "invalid_argument"),
        ),
        (
            format!("{root}/files?path=x&colour=red"),
            (400, "invalid_argument"),
        ),
        (
            format!("{root}/files?path=x&user=mallory"),
            (400, "invalid_argument"),
        ),
        (
            format!("{root}/files?path=/home/user"),
            (409, "is_a_directory"),
        ),
        (
            format!("{root}/files?path=/home/user/one/below"),
            (409, "not_a_directory"),
        ),
        (format!("{root}/files?path=/nope"), (404, "not_found")),
        (format!("{root}/fs/stat?path=/nope"), (404, "not_found")),
        (
            format!("{root}/fs/list?path=/home/user/one"),
            (409, "not_a_directory"),
        ),
        (
            format!("{root}/fs/list?path=/&depth=0"),
            (400, "invalid_argument"),
        ),
        (
            format!("{root}/fs/list?path=/&depth=x"),
            (400, "invalid_argument"),
        ),
        (
            format!("{root}/fs/list?path=/&depth=100000"),
            (400, "invalid_argument"),
        ),
        (
            format!("{root}/fs/watchers/nope/events"),
            (404, "not_found"),
        ),
    ] {
        let (s, v) = get_json(url.clone()).await;
        assert_eq!((s, code(&v)), want, "{url}: {v}");
    }
    let r = client()
        .get(format!("{root}/files?path=one"))
        .header("Range", "bytes=5000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    let (s, v) = put(root, b"x", "&mode=999", "x").await;
    assert_eq!((s, code(&v)), (400, "invalid_argument"), "{v}");
    let (s, v) = put(root, b"/home/user", "", "x").await;
    assert_eq!((s, code(&v)), (409, "is_a_directory"), "{v}");
    let (s, v) = call(
        client()
            .put(format!("{root}/files?path=x"))
            .header("Content-Encoding", "br")
            .body("x"),
    )
    .await;
    assert_eq!((s, code(&v)), (400, "invalid_argument"), "{v}");
    for (path, body, want) in [
        (
            "/fs/mkdir",
            json!({"path": "/home/user/one", "parents": false}),
            (409, "already_exists"),
        ),
        (
            "/fs/mkdir",
            json!({"path": "/home/user/one"}),
            (409, "already_exists"),
        ),
        ("/fs/mkdir", json!({"path": ""}), (400, "invalid_argument")),
        (
            "/fs/mkdir",
            json!({"path": "x", "mode": 755}),
            (400, "invalid_argument"),
        ),
        (
            "/fs/mkdir",
            json!({"path": "x", "colour": 1}),
            (400, "invalid_argument"),
        ),
        (
            "/fs/move",
            json!({"from": "empty", "to": "one"}),
            (409, "already_exists"),
        ),
        (
            "/fs/move",
            json!({"from": "nope", "to": "x"}),
            (404, "not_found"),
        ),
        (
            "/fs/move",
            json!({"from": "/etc/hostname", "to": "/etc/h2"}),
            (403, "permission_denied"),
        ),
        (
            "/fs/chmod",
            json!({"path": "/etc/hostname", "mode": "0777"}),
            (403, "permission_denied"),
        ),
        (
            "/fs/chmod",
            json!({"path": "one"}),
            (400, "invalid_argument"),
        ),
        (
            "/fs/chown",
            json!({"path": "one"}),
            (400, "invalid_argument"),
        ),
        (
            "/fs/chown",
            json!({"path": "one", "owner": "mallory"}),
            (400, "invalid_argument"),
        ),
        ("/fs/watchers", json!({"path": "/nope"}), (404, "not_found")),
        (
            "/fs/watchers",
            json!({"path": "/root"}),
            (403, "permission_denied"),
        ),
    ] {
        let (s, v) = post(format!("{root}{path}"), body.clone()).await;
        assert_eq!((s, code(&v)), want, "{path} {body}: {v}");
    }
    let (s, v) = call(client().delete(format!("{root}/fs?path=/etc/hostname"))).await;
    assert_eq!((s, code(&v)), (403, "permission_denied"), "{v}");
    let (s, v) = call(client().delete(format!("{root}/fs?path=/"))).await;
    assert_eq!((s, code(&v)), (400, "invalid_argument"), "{v}");
}

/// A minimal SSE reader: (id, event, data) triples.
struct Sse {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl Sse {
    async fn open(url: String, last_event_id: Option<&str>) -> Self {
        let mut rb = client().get(url);
        if let Some(id) = last_event_id {
            rb = rb.header("Last-Event-ID", id);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 200);
        Self {
            stream: Box::pin(r.bytes_stream()),
            buf: String::new(),
        }
    }

    async fn next(&mut self) -> (String, String, Value) {
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                let (mut id, mut ev, mut data) = (String::new(), String::new(), Value::Null);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        ev = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = serde_json::from_str(v.trim()).unwrap_or(Value::Null);
                    }
                }
                if ev == "keepalive" {
                    continue;
                }
                return (id, ev, data);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.stream.next())
                .await
                .expect("no watch event within 10 s")
                .expect("the stream ended")
                .unwrap();
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

async fn watch_survives_a_disconnect(root: &str) {
    post(format!("{root}/fs/mkdir"), json!({"path": "w"})).await;
    let url = format!("{root}/fs/watch?path=w&recursive=true");
    let mut sse = Sse::open(url.clone(), None).await;
    let (_, ev, started) = sse.next().await;
    assert_eq!(ev, "started", "{started}");
    put(root, b"w/a.txt", "", "1").await;
    let (id, ev, data) = sse.next().await;
    assert_eq!(
        (ev.as_str(), data["path"].as_str()),
        ("write", Some("/home/user/w/a.txt")),
        "{data}"
    );
    assert_eq!(id, data["seq"].to_string());
    drop(sse);
    // While nobody watches: a write, a rename, a removal.
    put(root, b"w/b.txt", "", "2").await;
    post(
        format!("{root}/fs/move"),
        json!({"from": "w/b.txt", "to": "w/c.txt"}),
    )
    .await;
    call(client().delete(format!("{root}/fs?path=w/a.txt"))).await;
    let mut sse = Sse::open(url, Some(&id)).await;
    let (sid, ev, _) = sse.next().await;
    assert_eq!((ev.as_str(), sid.as_str()), ("started", id.as_str()));
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (_, ev, data) = sse.next().await;
        seen.push((
            ev,
            data["path"]
                .as_str()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned(),
            data["from"].clone(),
        ));
    }
    assert_eq!(seen[0].0, "write");
    assert_eq!(
        (seen[1].0.as_str(), seen[1].1.as_str()),
        ("rename", "c.txt")
    );
    assert!(seen[1].2.as_str().unwrap().ends_with("/w/b.txt"));
    assert_eq!(
        (seen[2].0.as_str(), seen[2].1.as_str()),
        ("remove", "a.txt")
    );
}

async fn poll_watchers(root: &str) {
    let (s, w) = post(
        format!("{root}/fs/watchers"),
        json!({"path": "w", "recursive": true}),
    )
    .await;
    assert_eq!(s, 201, "{w}");
    let id = w["id"].as_str().unwrap().to_owned();
    let (_, _) = sh(
        root,
        "echo hi > w/from-a-process && mkdir w/sub && touch w/sub/deep",
        None,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut all = Vec::new();
    while Instant::now() < deadline {
        let (s, v) = get_json(format!("{root}/fs/watchers/{id}/events")).await;
        assert_eq!(s, 200, "{v}");
        all.extend(v["events"].as_array().unwrap().iter().cloned());
        if all
            .iter()
            .any(|e| e["path"].as_str().is_some_and(|p| p.ends_with("sub/deep")))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        all.iter()
            .any(|e| e["type"] == "create"
                && e["path"].as_str().unwrap().ends_with("w/from-a-process")),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|e| e["path"].as_str().is_some_and(|p| p.ends_with("sub/deep"))),
        "{all:?}"
    );
    // Replay from a seq.
    let first = all[0]["seq"].as_u64().unwrap();
    let (_, v) = get_json(format!("{root}/fs/watchers/{id}/events?from_seq={first}")).await;
    assert_eq!(v["events"][0]["seq"].as_u64(), Some(first));
    let (s, _) = call(client().delete(format!("{root}/fs/watchers/{id}"))).await;
    assert_eq!(s, 204);
    let (s, _) = get_json(format!("{root}/fs/watchers/{id}/events")).await;
    assert_eq!(s, 404);
}

async fn escape_attempts(root: &str) {
    let mut blocked = 0;
    // Traversal stays in the sandbox: /../.. is /.
    let (_, sandbox_hostname) = sh(root, "cat /etc/hostname", None).await;
    let (s, body) = get(root, b"/../../../../etc/hostname", "").await;
    assert_eq!(
        (s, String::from_utf8_lossy(&body).as_ref()),
        (200, sandbox_hostname.as_str())
    );
    assert_ne!(
        std::fs::read_to_string("/etc/hostname").unwrap_or_default(),
        sandbox_hostname
    );
    let (s, body) = get(root, b"../../../../etc/shadow", "&user=root").await;
    if s == 200 {
        assert_ne!(
            body,
            std::fs::read("/etc/shadow").unwrap_or_default(),
            "read the host's shadow"
        );
    }
    blocked += 2;
    // Magic links: the agent's own fds, roots and cwds are never followed, for reading or writing.
    for path in [
        "/proc/1/root/etc/hostname",
        "/proc/self/root/etc/hostname",
        "/proc/1/cwd/x",
        "/proc/self/fd/0",
        "/proc/1/fd/1",
        "/proc/1/fd/3",
        "/proc/thread-self/root/etc/passwd",
    ] {
        for user in ["", "&user=root"] {
            let (s, body) = get(root, path.as_bytes(), user).await;
            assert!(
                s == 400 || s == 404 || s == 403,
                "{path}{user}: {s} {}",
                String::from_utf8_lossy(&body)
            );
            let (s, v) = put(root, path.as_bytes(), user, "x").await;
            assert!(s == 400 || s == 404 || s == 403, "{path}{user}: {s} {v}");
            blocked += 2;
        }
    }
    let (s, v) = get_json(format!("{root}/fs/list?path=/proc/1/root&user=root")).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = get_json(format!("{root}/files/tar?path=/proc/1/root/etc&user=root")).await;
    assert_eq!(s, 400, "{v}");
    blocked += 2;
    // Devices and fifos never block the agent (each answer within seconds) and are refused.
    let (c, _) = sh(
        root,
        "mkfifo /tmp/fifo && mkdir -p /tmp/withfifo && mkfifo /tmp/withfifo/p",
        None,
    )
    .await;
    assert_eq!(c, 0);
    for path in [
        "/dev/zero",
        "/dev/urandom",
        "/dev/tty",
        "/dev/ptmx",
        "/tmp/fifo",
        "/dev/null",
    ] {
        let t = Instant::now();
        let (s, _) = get(root, path.as_bytes(), "&user=root").await;
        assert_eq!(s, 400, "{path}");
        let (s, v) = put(root, path.as_bytes(), "&user=root", "x").await;
        assert_eq!((s, code(&v)), (400, "invalid_argument"), "{path}: {v}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{path} took {:?}",
            t.elapsed()
        );
        blocked += 2;
    }
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        client()
            .get(format!("{root}/files/tar?path=/tmp/withfifo"))
            .send(),
    )
    .await
    .expect("a tar of a directory with a fifo hung")
    .unwrap();
    assert_eq!(r.status(), 200);
    let bytes = tokio::time::timeout(Duration::from_secs(10), r.bytes())
        .await
        .unwrap()
        .unwrap();
    let mut a = tar::Archive::new(&bytes[..]);
    assert_eq!(a.entries().unwrap().count(), 2);
    // A very deep tree: refused with a code, and the agent still answers.
    let (c, _) = sh(
        root,
        "cd /tmp && for i in $(seq 300); do mkdir d && cd d; done",
        None,
    )
    .await;
    assert_eq!(c, 0);
    let (s, v) = call(client().delete(format!("{root}/fs?path=/tmp/d&recursive=true"))).await;
    assert_eq!((s, code(&v)), (400, "invalid_argument"), "{v}");
    let (s, v) = get_json(format!("{root}/fs/list?path=/tmp/d&depth=300")).await;
    assert_eq!((s, code(&v)), (400, "invalid_argument"), "{v}");
    let r = tokio::time::timeout(Duration::from_secs(20), async {
        let r = client()
            .get(format!("{root}/files/tar?path=/tmp/d"))
            .send()
            .await
            .unwrap();
        r.bytes().await
    })
    .await
    .expect("a tar of a very deep tree hung");
    assert!(
        r.is_err(),
        "a tar deeper than the limit must be cut short, not complete"
    );
    let (s, _) = get_json(format!("{root}/fs/stat?path=/")).await;
    assert_eq!(s, 200);
    blocked += 3;
    // Hostile archives: `..`, absolute paths, a symlink out and a member through it, hard links out.
    let marker = format!("sandpit-escape-{}", std::process::id());
    let data = tar_with(&[
        (
            format!("../../../../tmp/{marker}").as_bytes(),
            tar::EntryType::Regular,
            b"out",
            None,
        ),
        (
            format!("/tmp/{marker}").as_bytes(),
            tar::EntryType::Regular,
            b"abs",
            None,
        ),
        (b"up", tar::EntryType::Symlink, b"", Some(b"/tmp")),
        (
            format!("up/{marker}").as_bytes(),
            tar::EntryType::Regular,
            b"via link",
            None,
        ),
        (b"dotdot", tar::EntryType::Symlink, b"", Some(b"../../..")),
        (
            format!("dotdot/tmp/{marker}").as_bytes(),
            tar::EntryType::Regular,
            b"via link",
            None,
        ),
        (b"hard", tar::EntryType::Link, b"", Some(b"/etc/passwd")),
        (
            b"hard2",
            tar::EntryType::Link,
            b"",
            Some(b"../../../etc/passwd"),
        ),
        (b"dev", tar::EntryType::Char, b"", None),
        (b"fifo", tar::EntryType::Fifo, b"", None),
        (b"fine.txt", tar::EntryType::Regular, b"ok", None),
    ]);
    let (s, r) = call(
        client()
            .post(format!("{root}/files/tar?path=/home/user/x&user=root"))
            .body(data),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let skipped = r["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 8, "{r}");
    let written: Vec<_> = r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(written, ["up", "dotdot", "fine.txt"], "{r}");
    let (s, _) = get(root, format!("/tmp/{marker}").as_bytes(), "&user=root").await;
    assert_eq!(s, 404, "a hostile member was written in the sandbox's /tmp");
    assert!(
        !std::path::Path::new(&format!("/tmp/{marker}")).exists(),
        "written on the host"
    );
    let (s, _) = get(root, b"/home/user/x/hard", "&user=root").await;
    assert_eq!(s, 404);
    blocked += 8;
    eprintln!("file API escape attempts: {blocked} blocked");
}

async fn disk_cap_leaves_nothing_half_written(root: &str) {
    // 32 MiB into a 16 MiB writable layer: as a body, and switched.
    let (s, v) = put(root, b"/home/user/huge.bin", "", vec![7u8; 32 << 20]).await;
    assert_eq!((s, code(&v)), (507, "insufficient_storage"), "{v}");
    let huge = vec![7u8; 32 << 20];
    let (s, v) = switched_put(root, "/home/user/huge.bin", &huge, huge.len(), true, "").await;
    assert_eq!((s, code(&v)), (507, "insufficient_storage"), "{v}");
    let (s, v) = get_json(format!("{root}/fs/list?path=/home/user&user=root")).await;
    assert_eq!(s, 200);
    assert_eq!(
        v["entries"].as_array().unwrap().len(),
        0,
        "something was left: {v}"
    );
    // The space came back: a small write works.
    let (s, v) = put(root, b"/home/user/small", "", vec![1u8; 1 << 20]).await;
    assert_eq!(s, 200, "{v}");
    // A tar that does not fit: whole files or nothing, never a partial one.
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..4 {
        let mut h = tar::Header::new_gnu();
        h.set_size(6 << 20);
        h.set_mode(0o644);
        b.append_data(&mut h, format!("part{i}"), &vec![i as u8; 6 << 20][..])
            .unwrap();
    }
    let (s, v) = call(
        client()
            .post(format!("{root}/files/tar?path=/home/user/t"))
            .body(b.into_inner().unwrap()),
    )
    .await;
    assert_eq!((s, code(&v)), (507, "insufficient_storage"), "{v}");
    let (_, v) = get_json(format!("{root}/fs/list?path=/home/user/t")).await;
    for e in v["entries"].as_array().unwrap() {
        assert_eq!(e["size"], 6 << 20, "a partial file was left: {e}");
    }
}
