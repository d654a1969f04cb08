//! Test harness: a real `sandpit serve --backend process` on a free loopback port with its own state
//! directory, stopped (after deleting its sandboxes) on drop; plus a cutting TCP proxy for resume tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use sandpit::Client;

/// The `sandpit` binary: `$SANDPIT_BIN`, else `<workspace>/target/debug/sandpit` (a failure when missing:
/// these tests only need the process backend, which runs anywhere).
pub fn sandpit_bin() -> PathBuf {
    sandpit_testkit::sandpit_bin().expect("the sandpit binary (cargo build -p sandpit-cli)")
}

/// A `sandpit serve` with its own state directory and generated key; its sandboxes are deleted and the
/// daemon stopped (SIGTERM) on drop.
pub struct Daemon {
    serve: sandpit_testkit::Serve,
    pub url: String,
    pub key: String,
    pub dir: tempfile::TempDir,
}

impl Daemon {
    pub fn start() -> Self {
        Self::start_with_backend("process")
    }

    /// A daemon with the given isolation backend (`isolate` needs root).
    pub fn start_with_backend(backend: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let serve = sandpit_testkit::Serve::builder(sandpit_bin(), dir.path())
            .backend(backend)
            .arg("--import-root")
            .arg(std::env::temp_dir().display().to_string())
            .log(dir.path().join("daemon.log"))
            .start_blocking();
        Self {
            url: serve.base.clone(),
            key: serve.key.clone(),
            serve,
            dir,
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url, &self.key).unwrap()
    }

    pub fn log(&self) -> String {
        self.serve.log_text()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Delete every sandbox first: with the process backend their agents would outlive the daemon.
        let client = self.client();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(list) = client.list_sandboxes().await {
                    for s in list {
                        if let Ok(sbx) = sandpit::Sandbox::get(&client, s.id).await {
                            let _ = sbx.kill().await;
                        }
                    }
                }
            });
        })
        .join();
        self.serve.stop(Duration::from_secs(5));
    }
}

/// A loopback TCP proxy to `upstream` that cuts the first `cuts` connections whose request line
/// contains `needle`, after passing `after` bytes of their response. Plain HTTP requests get
/// `Connection: close` so that every request comes on a connection of its own. Returns its URL and the
/// number of cuts made so far.
pub async fn cutting_proxy(
    upstream: String,
    needle: &'static str,
    cuts: usize,
    after: usize,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let up = upstream.trim_start_matches("http://").to_owned();
    let left = Arc::new(AtomicUsize::new(cuts));
    let made = Arc::new(AtomicUsize::new(0));
    let made2 = made.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let up = up.clone();
            let left = left.clone();
            let made = made2.clone();
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(&up).await else {
                    return;
                };
                let mut first = vec![0u8; 8192];
                let Ok(n) = client.read(&mut first).await else {
                    return;
                };
                first.truncate(n);
                let head = String::from_utf8_lossy(&first)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let cut = head.contains(needle)
                    && left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_sub(1))
                        .is_ok();
                let text = String::from_utf8_lossy(&first).to_ascii_lowercase();
                if !text.contains("\r\nconnection:") {
                    if let Some(end) = first.windows(4).position(|w| w == b"\r\n\r\n") {
                        first.splice(end..end, b"\r\nConnection: close".iter().copied());
                    }
                }
                if cut {
                    made.fetch_add(1, Ordering::SeqCst);
                }
                if server.write_all(&first).await.is_err() {
                    return;
                }
                if !cut {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    return;
                }
                let mut passed = 0usize;
                let mut buf = vec![0u8; 1];
                // Byte by byte, so the cut lands exactly `after` bytes in.
                while passed < after {
                    match server.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            if client.write_all(&buf).await.is_err() {
                                break;
                            }
                            passed += 1;
                        }
                    }
                }
                // Dropping both ends cuts the connection.
            });
        }
    });
    (format!("http://{addr}"), made)
}
