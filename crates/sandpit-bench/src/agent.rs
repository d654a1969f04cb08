//! Agent benchmarks: `exec("true")` through the agent's HTTP API beside a bare fork/exec of `true`, and
//! stdout throughput of `head -c SIZE /dev/zero` through the WebSocket and SSE beside a plain pipe.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::stats::{Row, ms, summarize};

/// A `sandpit agent` on a loopback port, stopped on drop.
struct Agent {
    child: Child,
    addr: String,
    _logs: tempfile::TempDir,
}

impl Agent {
    fn start(bin: &Path) -> anyhow::Result<Self> {
        let logs = tempfile::tempdir()?;
        let mut child = Command::new(bin)
            .args(["agent", "--listen", "127.0.0.1:0", "--log-dir"])
            .arg(logs.path())
            .env("SANDPIT_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .context("agent did not report its address")?;
        Ok(Self {
            addr: addr.to_owned(),
            child,
            _logs: logs,
        })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn run(bin: &Path, quick: bool) -> anyhow::Result<Vec<Row>> {
    let agent = Agent::start(bin)?;
    let http = reqwest::Client::new();
    let base = format!("http://{}", agent.addr);
    let n = if quick { 30 } else { 500 };

    // Interleave the two measurements so that machine noise hits both alike.
    let (mut api, mut bare) = (Vec::new(), Vec::new());
    for i in 0..n + 5 {
        let t = Instant::now();
        let r: Value = http
            .post(format!("{base}/exec"))
            .json(&json!({"argv": ["true"]}))
            .send()
            .await?
            .json()
            .await?;
        let api_ms = ms(t.elapsed());
        if r["status"] != "exited" {
            bail!("exec true failed: {r}");
        }
        let t = Instant::now();
        let st = tokio::task::spawn_blocking(|| Command::new("true").status()).await??;
        let bare_ms = ms(t.elapsed());
        assert!(st.success());
        if i >= 5 {
            api.push(api_ms);
            bare.push(bare_ms);
        }
    }
    let mut rows = vec![
        Row::new(
            "agent",
            "exec(\"true\") via agent HTTP",
            "ms",
            summarize(&api),
        )
        .against("fork/exec+wait of true", summarize(&bare)),
    ];

    let size: u64 = if quick { 64 << 20 } else { 1 << 30 };
    let reps = if quick { 1 } else { 3 };
    let (mut ws, mut sse, mut pipe) = (Vec::new(), Vec::new(), Vec::new());
    let mut ws_lost = 0;
    let mut sse_lost = 0;
    for _ in 0..reps {
        let ws_base = format!("ws://{}", agent.addr);
        let (rate, lost) = ws_throughput(&http, &base, &ws_base, None, size).await?;
        ws.push(rate);
        ws_lost += lost;
        let (rate, lost) = sse_throughput(&http, &base, size).await?;
        sse.push(rate);
        sse_lost += lost;
        pipe.push(tokio::task::spawn_blocking(move || pipe_throughput(size)).await??);
    }
    let label = format!("head -c {} MiB /dev/zero", size >> 20);
    let pipe_s = summarize(&pipe);
    rows.push(
        Row::new(
            "agent",
            &format!("{label} over WebSocket"),
            "MiB/s",
            summarize(&ws),
        )
        .against("plain pipe", pipe_s)
        .note(format!(
            "bytes dropped by the 64 MiB cap (client too slow): {ws_lost}"
        )),
    );
    rows.push(
        Row::new(
            "agent",
            &format!("{label} over SSE"),
            "MiB/s",
            summarize(&sse),
        )
        .against("plain pipe", pipe_s)
        .note(format!(
            "binary-looking chunks travel as base64 in JSON; dropped by the cap: {sse_lost} B"
        )),
    );
    Ok(rows)
}

async fn start(http: &reqwest::Client, base: &str, size: u64) -> anyhow::Result<String> {
    let r: Value = http
        .post(format!("{base}/processes"))
        .json(&json!({"argv": ["head", "-c", size.to_string(), "/dev/zero"]}))
        .send()
        .await?
        .json()
        .await?;
    Ok(r["id"].as_str().context("process id")?.to_owned())
}

/// MiB/s reaching a WebSocket client, and the bytes the agent reported lost.
/// `ws_base` is where `/processes/...` lives over WebSocket (`ws://agent` or the daemon's
/// `ws://daemon/v1/sandboxes/ID`); `key` authenticates to the daemon.
pub(crate) async fn ws_throughput(
    http: &reqwest::Client,
    base: &str,
    ws_base: &str,
    key: Option<&str>,
    size: u64,
) -> anyhow::Result<(f64, u64)> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let t = Instant::now();
    let id = start(http, base, size).await?;
    let mut req = format!("{ws_base}/processes/{id}/ws").into_client_request()?;
    if let Some(k) = key {
        req.headers_mut()
            .insert("authorization", format!("Bearer {k}").parse()?);
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
    let (mut got, mut lost) = (0u64, 0u64);
    while let Some(msg) = ws.next().await {
        match msg? {
            Message::Binary(b) => got += (b.len() - 9) as u64,
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t)?;
                if v["type"] == "lost" {
                    lost += v["bytes"].as_u64().unwrap_or(0);
                }
                if v["type"] == "exited" {
                    break;
                }
            }
            _ => {}
        }
    }
    let secs = t.elapsed().as_secs_f64();
    if got + lost != size {
        bail!("websocket delivered {got} + lost {lost} != {size}");
    }
    Ok((got as f64 / secs / 1_048_576.0, lost))
}

pub(crate) async fn sse_throughput(
    http: &reqwest::Client,
    base: &str,
    size: u64,
) -> anyhow::Result<(f64, u64)> {
    let t = Instant::now();
    let id = start(http, base, size).await?;
    let mut resp = http
        .get(format!("{base}/processes/{id}/events"))
        .send()
        .await?;
    let mut buf: Vec<u8> = Vec::new();
    // Where to resume looking for the blank line that ends an event: never rescan what was scanned.
    let mut scanned = 0;
    let (mut got, mut lost) = (0u64, 0u64);
    'outer: while let Some(chunk) = resp.chunk().await? {
        buf.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(rel) = buf[scanned.max(start)..]
            .windows(2)
            .position(|w| w == b"\n\n")
        {
            let end = scanned.max(start) + rel;
            let block = std::str::from_utf8(&buf[start..end])?;
            let mut event = "";
            let mut data = "null";
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = v;
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = v;
                }
            }
            match event {
                "stdout" | "stderr" => {
                    let v: sandpit_types::OutputEvent = serde_json::from_str(data)?;
                    got += v.bytes().len() as u64;
                }
                "lost" => {
                    lost += serde_json::from_str::<Value>(data)?["bytes"]
                        .as_u64()
                        .unwrap_or(0);
                }
                "exited" => break 'outer,
                _ => {}
            }
            start = end + 2;
            scanned = start;
        }
        buf.drain(..start);
        scanned = buf.len().saturating_sub(1);
    }
    let secs = t.elapsed().as_secs_f64();
    if got + lost != size {
        bail!("sse delivered {got} + lost {lost} != {size}");
    }
    Ok((got as f64 / secs / 1_048_576.0, lost))
}

pub(crate) fn pipe_throughput(size: u64) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut child = Command::new("head")
        .args(["-c", &size.to_string(), "/dev/zero"])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    child.wait()?;
    assert_eq!(got, size);
    Ok(got as f64 / t.elapsed().as_secs_f64() / 1_048_576.0)
}
