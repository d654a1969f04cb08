//! The `e2b` group: the stock E2B Python SDK (pinned in compat/e2b/python/requirements.txt), unchanged,
//! against the daemon's E2B surface — create → first `commands.run("echo hi")` result, the measure
//! computesdk/benchmarks publish (E2B's own cloud: 491 ms, May 2026) — beside sandpit's own Python SDK doing
//! the same in the same run, each in its own interpreter (`bench/first_result.py`).
//!
//! Uses the isolate backend when root (what users run), the process backend otherwise (the rows say which).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::daemon::start_daemon;
use crate::stats::{Row, summarize};

const GROUP: &str = "E2B compatibility";

fn samples(python: &str, mode: &str, url: &str, key: &str, n: usize) -> anyhow::Result<Vec<f64>> {
    let out = Command::new(python)
        .args(["bench/first_result.py", mode, url, key, &n.to_string()])
        .output()
        .with_context(|| format!("running bench/first_result.py with {python}"))?;
    if !out.status.success() {
        bail!(
            "bench/first_result.py {mode} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("bench/first_result.py output")
}

pub fn run(bin: &Path, quick: bool) -> anyhow::Result<Vec<Row>> {
    let (e2b_py, sandpit_py) = (
        "compat/e2b/python/.venv/bin/python",
        "sdk/python/.venv/bin/python",
    );
    let name = "stock e2b SDK: create → first run(\"echo hi\")";
    for p in [e2b_py, sandpit_py] {
        if !Path::new(p).exists() {
            return Ok(vec![Row::new(GROUP, name, "ms", summarize(&[])).note(
                format!("not measured: {p} is missing (bench/run prepares it)"),
            )]);
        }
    }
    let d = start_daemon(bin)?;
    let n = if quick { 3 } else { 50 };
    // The first create builds `base` with the isolate backend (seconds, once): not measured.
    samples(sandpit_py, "sandpit", &d.url, &d.key, 0).context("first sandbox")?;
    // Interleaved halves, so that both SDKs see the same machine.
    let (mut e2b, mut own) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        own.extend(samples(sandpit_py, "sandpit", &d.url, &d.key, n / 2 + 1)?);
        e2b.extend(samples(e2b_py, "e2b", &d.url, &d.key, n / 2 + 1)?);
    }
    let own_s = summarize(&own);
    Ok(vec![
        Row::new(GROUP, name, "ms", summarize(&e2b))
            .against("sandpit Python SDK: create → first run(\"echo hi\")", own_s)
            .note(format!(
                "{} backend; issue 19's target: median ≤ 30 ms (E2B's cloud: 491 ms)",
                d.backend
            )),
    ])
}
