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
