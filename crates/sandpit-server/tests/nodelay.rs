//! Regression (found by the load test, `sandpit-bench load`): the daemon left Nagle's algorithm on for
//! its client connections. A stream is many small writes, and on a kept-alive connection (where the
//! client no longer acknowledges at once) each write after the first waited for the client's delayed
//! ACK: every burst of SSE events came ~40 ms late, and a command that ends at once took ~48 ms to
//! stream instead of ~3 ms. The test reads the option on the daemon's side of real connections (the
//! daemon runs in this process, so its sockets are ours to inspect), over plain HTTP and over TLS.

mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::RawFd;
use std::time::Duration;

use common::{Daemon, FakeBackend};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A socket address of `fd` (`getsockname` or `getpeername`), IPv4 only (the test binds 127.0.0.1).
fn addr_of(
    fd: RawFd,
    get: unsafe extern "C" fn(i32, *mut libc::sockaddr, *mut libc::socklen_t) -> i32,
) -> Option<SocketAddr> {
    // SAFETY: an all-zero sockaddr_in is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sa` and `len` are live locals of the sizes passed.
    let r = unsafe { get(fd, (&raw mut sa).cast(), &raw mut len) };
    if r != 0 || i32::from(sa.sin_family) != libc::AF_INET {
        return None;
    }
    Some(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
        u16::from_be(sa.sin_port),
    )))
}

/// `TCP_NODELAY` of the daemon's end of the connection from `client` to `server`, once it is accepted.
async fn server_side_nodelay(server: SocketAddr, client: SocketAddr) -> bool {
    // Up to 20 s: on a loaded machine the daemon's start-up (before its accept loop runs) can take seconds.
    for _ in 0..2000 {
        for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let Ok(fd) = e.file_name().to_string_lossy().parse::<RawFd>() else {
                continue;
            };
            if addr_of(fd, libc::getsockname) != Some(server)
                || addr_of(fd, libc::getpeername) != Some(client)
            {
                continue;
            }
            let mut on: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: `on` and `len` are live locals of the sizes passed.
            let r = unsafe {
                libc::getsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    (&raw mut on).cast(),
                    &raw mut len,
                )
            };
            assert_eq!(r, 0, "getsockopt: {}", std::io::Error::last_os_error());
            return on != 0;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the daemon never accepted the connection from {client}");
}

#[tokio::test]
async fn client_connections_have_nagle_off() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let mut tcp = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    tcp.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    assert!(
        server_side_nodelay(d.addr, tcp.local_addr().unwrap()).await,
        "TCP_NODELAY is off on the daemon's end of a client connection"
    );
    drop(tcp);
    d.stop().await.unwrap();
}

#[tokio::test]
async fn tls_client_connections_have_nagle_off() {
    let dir = tempfile::tempdir().unwrap();
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args([
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
        ])
        .args([
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-days",
            "1",
        ])
        .arg("-keyout")
        .arg(dir.path().join("key.pem"))
        .arg("-out")
        .arg(dir.path().join("cert.pem"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !made {
        sandpit_testkit::skip(format_args!(
            "cannot make a test certificate with `openssl`"
        ));
        return;
    }
    let mut config = Daemon::config(&dir.path().join("state"));
    config.tls_cert = Some(dir.path().join("cert.pem"));
    config.tls_key = Some(dir.path().join("key.pem"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sandpit_server::run_with_backend(
        config,
        FakeBackend::new(),
        listener,
        async {
            let _ = rx.await;
        },
    ));
    // The option is set when the connection is accepted, before the TLS handshake: no handshake
    // needed to see it.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(
        server_side_nodelay(addr, tcp.local_addr().unwrap()).await,
        "TCP_NODELAY is off on the daemon's end of a TLS client connection"
    );
    drop(tcp);
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}
