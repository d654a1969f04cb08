//! HTTPS: the daemon serves TLS when given a certificate and key. The certificate is made with the
//! `openssl` command line tool; without it the test prints SKIPPED and passes.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Daemon, FakeBackend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

fn make_cert(dir: &Path) -> bool {
    std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            // webpki refuses a CA certificate as a server certificate; `req -x509` makes one by default.
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-days",
            "1",
        ])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn https_get(
    addr: std::net::SocketAddr,
    cert: &Path,
    path: &str,
    key: Option<&str>,
) -> String {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn serves_https_with_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    if !make_cert(dir.path()) {
        sandpit_testkit::skip(format_args!(
            "cannot make a test certificate with `openssl`"
        ));
        return;
    }
    let state = dir.path().join("state");
    let mut config = Daemon::config(&state);
    config.tls_cert = Some(dir.path().join("cert.pem"));
    config.tls_key = Some(dir.path().join("key.pem"));
    // Daemon::start_with polls /health over plain HTTP, which a TLS port never answers: start by hand.
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
    let cert = dir.path().join("cert.pem");
    let mut health = String::new();
    for _ in 0..100 {
        if state.join("daemon.lock").exists() {
            health = https_get(addr, &cert, "/health", None).await;
            if !health.is_empty() {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    let denied = https_get(addr, &cert, "/v1/sandboxes", None).await;
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
    let listed = https_get(addr, &cert, "/v1/sandboxes", Some(common::KEY)).await;
    assert!(
        listed.starts_with("HTTP/1.1 200") && listed.contains("\"sandboxes\":[]"),
        "{listed}"
    );
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_bad_certificate_path_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Daemon::config(dir.path());
    config.tls_cert = Some(dir.path().join("missing.pem"));
    config.tls_key = Some(dir.path().join("missing-key.pem"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = sandpit_server::run_with_backend(config, FakeBackend::new(), listener, async {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
}
