//! Per-process cgroups inside isolated sandboxes (issue 13): a kill reaches `setsid` escapers, and the
//! agent's own cgroup is out of reach of everything in the sandbox. Its own test binary, so that it never
//! runs beside `isolate.rs`'s timing-sensitive abuse test. Needs root (SKIPPED otherwise; a failure under
//! CI).

mod daemon;

use std::time::{Duration, Instant};

use daemon::{Fixture, call, client, post, sh};
use serde_json::json;

/// Issue 13: inside a sandbox, killing a process reaches every descendant, `setsid` escapers included
/// (each process has its own cgroup in the subtree delegated to the sandbox), and nothing in the sandbox,
/// root included, can move the agent into that subtree or freeze the sandbox's own cgroup.
#[tokio::test(flavor = "multi_thread")]
async fn a_kill_reaches_setsid_escapers_and_the_agents_cgroup_is_out_of_reach() {
    let Some(fx) = Fixture::new() else {
        return;
    };
    let serve = daemon::serve(&fx.bin, &fx.state).await;
    let id = daemon::create(&serve, json!({})).await;
    let root = serve.url(&format!("/v1/sandboxes/{id}"));
    let (s, p) = post(
        format!("{root}/processes"),
        json!({"cmd": "setsid sleep 301 & sleep 302 & wait", "id": "tree"}),
    )
    .await;
    assert_eq!(s, 201, "{p}");
    sandpit_testkit::eventually("both sleeps to run", Duration::from_secs(20), || async {
        let (_, out) = sh(&root, "pgrep -xc sleep || true", None).await;
        (out.trim() == "2").then_some(())
    })
    .await;
    let (s, v) = call(client().delete(format!("{root}/processes/tree"))).await;
    assert!(s == 200 || s == 204, "{s} {v}");
    sandpit_testkit::eventually(
        "the setsid escaper to be killed too",
        Duration::from_secs(20),
        || async {
            let (_, out) = sh(&root, "pgrep -xc sleep || true", None).await;
            (out.trim() == "0").then_some(())
        },
    )
    .await;

    // The agent is in a cgroup of its own the sandbox cannot touch.
    let (code, out) = sh(&root, "cat /proc/1/cgroup; ls /sys/fs/cgroup", Some("root")).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0::/agent"), "{out}");
    assert!(out.contains("work"), "{out}");
    for attempt in [
        "echo 1 > /sys/fs/cgroup/work/cgroup.procs",
        "mkdir -p /sys/fs/cgroup/work/trap && echo 1 > /sys/fs/cgroup/work/trap/cgroup.procs",
        "echo 1 > /sys/fs/cgroup/cgroup.freeze",
        "echo 1 > /sys/fs/cgroup/agent/cgroup.freeze",
        "echo $$ > /sys/fs/cgroup/agent/cgroup.procs",
        "echo 1 > /sys/fs/cgroup/cgroup.kill",
    ] {
        let (code, out) = sh(&root, &format!("{attempt} 2>&1; echo rc=$?"), Some("root")).await;
        assert_eq!(code, 0, "{attempt}: {out}");
        assert!(!out.contains("rc=0"), "{attempt} succeeded: {out}");
    }
    // The agent still answers at once.
    let t = Instant::now();
    let (code, _) = sh(&root, "true", None).await;
    assert_eq!(code, 0);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let (s, _) = call(client().delete(root.clone())).await;
    assert_eq!(s, 204);
}

/// Issue 13: the agent keeps a reserve of pids and memory. A fork bomb fills the sandbox's `work` pids
/// limit, a memory hog its memory, and the agent still starts a new process at once: `exec("true")`
/// answers (before, a full `pids.max` left the agent unable to fork).
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_keeps_a_reserve_a_fork_bomb_or_a_memory_hog_cannot_take() {
    let Some(fx) = Fixture::new() else {
        return;
    };
    let serve = daemon::serve(&fx.bin, &fx.state).await;
    let id = daemon::create(&serve, json!({"pids": 64, "memory_mb": 128})).await;
    let root = serve.url(&format!("/v1/sandboxes/{id}"));
    let (s, p) = post(
        format!("{root}/processes"),
        // Holds every pid it gets (each a sleeping process) and keeps asking for more.
        json!({"cmd": "while :; do sleep 600 & done 2>/dev/null", "id": "bomb"}),
    )
    .await;
    assert_eq!(s, 201, "{p}");
    // The bomb holds (nearly) every pid `work` allows.
    sandpit_testkit::eventually(
        "the fork bomb to fill work's pids.max",
        Duration::from_secs(30),
        || async {
            let h = daemon::isolate_handle(&fx.state, &id);
            let pids = h["cgroups"]["controllers"]["pids"]
                .as_str()
                .map(std::path::PathBuf::from)?;
            let cur: u64 = std::fs::read_to_string(pids.join("work/pids.current"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let max: u64 = std::fs::read_to_string(pids.join("work/pids.max"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            // The shell gives up (exits 2) once a fork is refused; its sleeps keep their pids.
            (cur + 2 >= max).then_some(())
        },
    )
    .await;
    for _ in 0..3 {
        let t = Instant::now();
        let (s, r) = post(
            format!("{root}/exec"),
            json!({"cmd": "true", "timeout_ms": 20_000}),
        )
        .await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["exit_code"], 0, "{r}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "exec took {:?}",
            t.elapsed()
        );
    }
    let (s, _) = call(client().delete(format!("{root}/processes/bomb"))).await;
    assert!(s == 200 || s == 204);

    // A memory hog is killed inside `work`; the agent is not, and answers.
    let (s, r) = post(
        format!("{root}/exec"),
        json!({"cmd": "python3 -c 'a = bytearray(1 << 30)'", "timeout_ms": 60_000}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_ne!(
        r["exit_code"], 0,
        "the hog got 1 GiB in a 128 MiB sandbox: {r}"
    );
    let (code, out) = sh(&root, "echo still here", None).await;
    assert_eq!((code, out.as_str()), (0, "still here\n"));
    let (s, _) = call(client().delete(root.clone())).await;
    assert_eq!(s, 204);
}
