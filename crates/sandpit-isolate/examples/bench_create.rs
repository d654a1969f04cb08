//! Benchmark: median create→init-ready, pause, resume and destroy times, beside `unshare(1)` with
//! the same namespaces measured in the same run.
//!
//! `cargo run -p sandpit-isolate --release --example bench_create -- [N] [--agent PATH] [--no-limits]`
//!
//! Without `--agent` the init is `/bin/sh -c 'echo >&3; exec sleep 600'`. With `--agent PATH`
//! (the `sandpit` binary) the init is the real agent and the time runs until its first HTTP
//! answer on the unix socket. Must run as root.

// Short names for the per-iteration timings keep the measurement loop readable.
#![allow(clippy::many_single_char_names)]

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sandpit_isolate::{IsolateConfig, Isolator, SandboxSpec};

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fmt(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

#[allow(clippy::too_many_lines)]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(50);
    let agent = args
        .iter()
        .position(|a| a == "--agent")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let no_limits = args.iter().any(|a| a == "--no-limits");
    let state = "/var/tmp/sandpit-bench";
    let cfg = IsolateConfig::new(state, agent.clone().unwrap_or_else(|| "/bin/true".into()));
    let iso = Isolator::new(cfg).expect("isolator");
    for h in iso.sandboxes() {
        let _ = iso.destroy(&h);
    }
    iso.ensure_template("base").expect("base template");
    println!("cgroups: {}", iso.cgroup_driver().describe());

    let (mut create, mut pause, mut resume, mut destroy) = (vec![], vec![], vec![], vec![]);
    let mut answer = vec![];
    for i in 0..n + 3 {
        let mut spec = SandboxSpec::new(format!("bench{i}"), "base");
        if !no_limits {
            let only = std::env::var("BENCH_ONLY").unwrap_or_default();
            if only.is_empty() || only == "memory" {
                spec.memory_mb = Some(512);
            }
            if only.is_empty() || only == "pids" {
                spec.pids = Some(512);
            }
            if only.is_empty() || only == "cpu" {
                spec.cpu = Some(1.0);
            }
        }
        if agent.is_none() {
            spec.init_argv = Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo >&3; exec sleep 600".into(),
            ]);
        }
        let t = Instant::now();
        let h = iso.create(&spec).expect("create");
        let c = t.elapsed();
        if agent.is_some() {
            // First answer from the agent over its unix socket.
            let mut s = std::os::unix::net::UnixStream::connect(&h.agent_socket).expect("connect");
            s.write_all(b"GET / HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).expect("agent answer");
        }
        let a = t.elapsed();
        let t = Instant::now();
        iso.pause(&h).unwrap();
        let p = t.elapsed();
        let t = Instant::now();
        iso.resume(&h).unwrap();
        let r = t.elapsed();
        let t = Instant::now();
        iso.destroy(&h).unwrap();
        let d = t.elapsed();
        if i >= 3 {
            // The first few warm caches (template lookup, cgroup parents).
            create.push(c);
            answer.push(a);
            pause.push(p);
            resume.push(r);
            destroy.push(d);
        }
    }

    let mut unshare = vec![];
    for _ in 0..n {
        let t = Instant::now();
        let mut child = Command::new("unshare")
            .args([
                "--user",
                "--map-root-user",
                "--pid",
                "--fork",
                "--mount",
                "--uts",
                "--ipc",
                "--net",
                "--cgroup",
                "--",
                "/bin/sh",
                "-c",
                "echo x",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare");
        let mut b = [0u8; 1];
        child.stdout.as_mut().unwrap().read_exact(&mut b).unwrap();
        unshare.push(t.elapsed());
        let _ = child.kill();
        let _ = child.wait();
    }

    println!("runs: {n}");
    println!(
        "{:32} median {}",
        "create → init ready (fd 3)",
        fmt(median(&mut create))
    );
    if agent.is_some() {
        println!(
            "{:32} median {}",
            "create → agent first answer",
            fmt(median(&mut answer))
        );
    }
    println!("{:32} median {}", "pause (freeze)", fmt(median(&mut pause)));
    println!("{:32} median {}", "resume (thaw)", fmt(median(&mut resume)));
    println!("{:32} median {}", "destroy", fmt(median(&mut destroy)));
    println!(
        "{:32} median {}",
        "unshare -Upmuinc --fork sh ready",
        fmt(median(&mut unshare))
    );
}
