//! Shared helpers for tests that drive the real `sandpit` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A running `sandpit agent --listen 127.0.0.1:0`, killed on drop.
#[derive(Debug)]
pub struct AgentProc {
    pub child: Child,
    pub base: String,
    pub addr: String,
    pub http: reqwest::Client,
    pub log_dir: tempfile::TempDir,
}

impl AgentProc {
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with_log_dir(tempfile::tempdir().unwrap(), extra)
    }

    /// [`AgentProc::start`] with output spilled under `log_dir`.
    pub fn start_with_log_dir(log_dir: tempfile::TempDir, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sandpit"))
            .args(["agent", "--listen", "127.0.0.1:0", "--log-dir"])
            .arg(log_dir.path())
            .args(extra)
            .env("SANDPIT_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start agent");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .expect("listening line")
            .to_owned();
        Self {
            child,
            base: format!("http://{addr}"),
            addr,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            log_dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn exec(&self, body: Value) -> Value {
        let (status, v) = self.post("/exec", body).await;
        assert_eq!(status, 200, "exec failed: {v}");
        v
    }

    /// Starts a background process and returns its id.
    pub async fn spawn(&self, body: Value) -> String {
        let (status, v) = self.post("/processes", body).await;
        assert_eq!(status, 201, "start failed: {v}");
        v["id"].as_str().unwrap().to_owned()
    }

    pub async fn wait(&self, id: &str) -> Value {
        let (status, v) = self
            .get(&format!("/processes/{id}/wait?timeout_ms=60000"))
            .await;
        assert_eq!(status, 200, "wait failed: {v}");
        v
    }

    /// All SSE events of a process from a starting point: `(event, id, data)`.
    pub async fn sse(
        &self,
        id: &str,
        query: &str,
        last_event_id: Option<u64>,
    ) -> Vec<(String, Option<u64>, Value)> {
        let mut req = self
            .http
            .get(format!("{}/processes/{id}/events{query}", self.base));
        if let Some(l) = last_event_id {
            req = req.header("Last-Event-ID", l.to_string());
        }
        let text = req.send().await.unwrap().text().await.unwrap();
        parse_sse(&text)
    }
}

impl Drop for AgentProc {
    /// SIGTERM first, so the agent stops its processes even when a test failed half-way; SIGKILL if
    /// it does not exit in time.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `sleep` command line unique to this test run, to count its processes without confusion.
pub fn marker(n: u32) -> String {
    format!("sleep {}.{n}", 100_000 + std::process::id())
}

/// Parses a complete SSE body.
pub fn parse_sse(text: &str) -> Vec<(String, Option<u64>, Value)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                v.clone_into(&mut event);
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
        if !data.is_empty() {
            out.push((
                event,
                id,
                serde_json::from_str(&data).unwrap_or(Value::String(data)),
            ));
        }
    }
    out
}

/// Number of live processes whose command line contains `marker`.
pub fn count_procs(marker: &str) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .chars()
            .all(|c| c.is_ascii_digit())
        {
            continue;
        }
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let zombie = std::fs::read_to_string(entry.path().join("stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        });
        if cmd.contains(marker) && !zombie {
            n += 1;
        }
    }
    n
}

/// Zombie children of `pid`.
pub fn zombies_of(pid: u32) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let rest: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if rest.len() > 2 && rest[0] == "Z" && rest[1] == pid.to_string() {
            n += 1;
        }
    }
    n
}

/// Polls `f` until it is true or `secs` pass.
pub async fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}
