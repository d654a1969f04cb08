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

    let ws_base = format!("ws://{}", agent.addr);
    rows.extend(
        stream_rows(&http, &base, &ws_base, None, quick, |label, transport| {
            ("agent".to_owned(), format!("{label} over {transport}"))
        })
        .await?,
    );
    Ok(rows)
}

/// Output throughput rows, each beside a plain pipe carrying the same source in the same run: binary
/// output over WebSocket and SSE, text over SSE (three runs each, interleaved). `name(label,
/// transport)` gives each row its group and measurement name.
pub(crate) async fn stream_rows(
    http: &reqwest::Client,
    base: &str,
    ws_base: &str,
    key: Option<&str>,
    quick: bool,
    name: impl Fn(&str, &str) -> (String, String),
) -> anyhow::Result<Vec<Row>> {
    let size: u64 = if quick { 64 << 20 } else { 1 << 30 };
    let reps = if quick { 1 } else { 3 };
    let (mut ws, mut sse, mut sse_text) = (Vec::new(), Vec::new(), Vec::new());
    let (mut pipe, mut pipe_text) = (Vec::new(), Vec::new());
    let (mut ws_lost, mut sse_lost, mut text_lost) = (0, 0, 0);
    for _ in 0..reps {
        let (rate, lost) = ws_throughput(http, base, ws_base, key, Source::Zero, size).await?;
        ws.push(rate);
        ws_lost += lost;
        let (rate, lost) = sse_throughput(http, base, Source::Zero, size).await?;
        sse.push(rate);
        sse_lost += lost;
        let (rate, lost) = sse_throughput(http, base, Source::Text, size).await?;
        sse_text.push(rate);
        text_lost += lost;
        pipe.push(tokio::task::spawn_blocking(move || pipe_throughput(Source::Zero, size)).await??);
        pipe_text
            .push(tokio::task::spawn_blocking(move || pipe_throughput(Source::Text, size)).await??);
    }
    let (pipe_s, pipe_text_s) = (summarize(&pipe), summarize(&pipe_text));
    let row = |source: Source, transport: &str, samples: &[f64]| {
        let (group, measurement) = name(&source.label(size), transport);
        Row::new(&group, &measurement, "MiB/s", summarize(samples))
    };
    Ok(vec![
        row(Source::Zero, "WebSocket", &ws)
            .against("plain pipe", pipe_s)
            .note(format!(
                "binary frames; dropped by the 64 MiB cap (client too slow): {ws_lost} B"
            )),
        row(Source::Zero, "SSE", &sse)
            .against("plain pipe", pipe_s)
            .note(format!(
                "NULs travel as base64 in JSON, decoded by the client; dropped by the cap: {sse_lost} B"
            )),
        row(Source::Text, "SSE", &sse_text)
            .against("plain pipe, same text", pipe_text_s)
            .note(format!(
                "text in JSON, parsed by the client; dropped by the cap: {text_lost} B"
            )),
    ])
}

/// What a stream benchmark's process writes: the same command runs in the sandbox (or the agent) and,
/// for the baseline, into a plain pipe on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `head -c SIZE /dev/zero`: bytes that travel as binary (base64 over SSE).
    Zero,
    /// Lines of printable text (`yes … | head -c SIZE`): what a build log or a dataset looks like.
    Text,
}

/// A line of the text source: printable, a newline every 80 bytes.
const TEXT_LINE: &str =
    "sandpit stream benchmark: the quick brown fox jumps over the lazy dog 0123456789";

impl Source {
    pub(crate) fn label(self, size: u64) -> String {
        match self {
            Self::Zero => format!("head -c {} MiB /dev/zero", size >> 20),
            Self::Text => format!("{} MiB of text lines", size >> 20),
        }
    }

    pub(crate) fn command(self, size: u64) -> String {
        match self {
            Self::Zero => format!("head -c {size} /dev/zero"),
            Self::Text => format!("yes '{TEXT_LINE}' | head -c {size}"),
        }
    }
}

/// Starts the source held at a gate: it runs once [`open_gate`] writes a line to its stdin, so that
/// the follower is attached before the first byte (a process that outruns a late follower by the
/// output cap loses its oldest output, which would measure the race, not the stream).
async fn start(
    http: &reqwest::Client,
    base: &str,
    source: Source,
    size: u64,
) -> anyhow::Result<String> {
    let r: Value = http
        .post(format!("{base}/processes"))
        .json(&json!({
            "cmd": format!("read _gate; {}", source.command(size)),
            "stdin": "pipe",
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(r["id"].as_str().context("process id")?.to_owned())
}

async fn open_gate(http: &reqwest::Client, base: &str, id: &str) -> anyhow::Result<()> {
    http.post(format!("{base}/processes/{id}/stdin?eof=true"))
        .body("go\n")
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// MiB/s reaching a WebSocket client, and the bytes the agent reported lost.
/// `ws_base` is where `/processes/...` lives over WebSocket (`ws://agent` or the daemon's
/// `ws://daemon/v1/sandboxes/ID`); `key` authenticates to the daemon.
pub(crate) async fn ws_throughput(
    http: &reqwest::Client,
    base: &str,
    ws_base: &str,
    key: Option<&str>,
    source: Source,
    size: u64,
) -> anyhow::Result<(f64, u64)> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let t = Instant::now();
    let id = start(http, base, source, size).await?;
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
                match v["type"].as_str() {
                    Some("started") => open_gate(http, base, &id).await?,
                    Some("lost") => lost += v["bytes"].as_u64().unwrap_or(0),
                    Some("exited") => break,
                    _ => {}
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

/// MiB/s of output reaching an SSE client that decodes every event (text as is, base64 decoded), and
/// the bytes the agent reported lost.
pub(crate) async fn sse_throughput(
    http: &reqwest::Client,
    base: &str,
    source: Source,
    size: u64,
) -> anyhow::Result<(f64, u64)> {
    let t = Instant::now();
    let id = start(http, base, source, size).await?;
    let mut resp = http
        .get(format!("{base}/processes/{id}/events"))
        .send()
        .await?
        .error_for_status()?;
    let mut buf: Vec<u8> = Vec::new();
    // Where to resume looking for the blank line that ends an event: never rescan what was scanned.
    let mut scanned = 0;
    let (mut got, mut lost) = (0u64, 0u64);
    let blank = memchr::memmem::Finder::new(b"\n\n");
    'outer: while let Some(chunk) = resp.chunk().await? {
        buf.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(rel) = blank.find(&buf[scanned.max(start)..]) {
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
                "started" => open_gate(http, base, &id).await?,
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

/// MiB/s of the same source read from a plain pipe on the host.
pub(crate) fn pipe_throughput(source: Source, size: u64) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut child = Command::new("sh")
        .args(["-c", &source.command(size)])
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
