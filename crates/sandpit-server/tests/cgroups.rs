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
    // The v2 hierarchy: beside the v1 ones at `unified` on a hybrid host, at /sys/fs/cgroup on pure v2.
    let v2 = if std::path::Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists()
        && std::path::Path::new("/sys/fs/cgroup/memory").exists()
    {
        "/sys/fs/cgroup/unified"
    } else {
        "/sys/fs/cgroup"
    };
    let (code, out) = sh(&root, &format!("cat /proc/1/cgroup; ls {v2}"), Some("root")).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0::/agent"), "{out}");
    assert!(out.contains("work"), "{out}");
    for attempt in [
        format!("echo 1 > {v2}/work/cgroup.procs"),
        format!("mkdir -p {v2}/work/trap && echo 1 > {v2}/work/trap/cgroup.procs"),
        format!("echo 1 > {v2}/cgroup.freeze"),
        format!("echo 1 > {v2}/agent/cgroup.freeze"),
        format!("echo $$ > {v2}/agent/cgroup.procs"),
        format!("echo 1 > {v2}/cgroup.kill"),
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
    // The reserve comes on top of the limits asked for: `work` has exactly them.
    let h = daemon::isolate_handle(&fx.state, &id);
    let read = |ctrl: &str, file: &str| {
        let dir = std::path::PathBuf::from(h["cgroups"]["controllers"][ctrl].as_str().unwrap());
        std::fs::read_to_string(dir.join(file))
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(read("pids", "work/pids.max"), "64");
    assert_eq!(read("pids", "pids.max"), "80");
    assert_eq!(
        read("memory", "work/memory.limit_in_bytes"),
        (128u64 << 20).to_string()
    );
    assert_eq!(
        read("memory", "memory.limit_in_bytes"),
        (144u64 << 20).to_string()
    );
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

/// Issue 13: a sandbox sees its own limits where runtimes look for them. Created with `memory_mb: 512,
/// cpu: 1`, the cgroup a process is in (by `/proc/self/cgroup`, under the mounts `/proc/self/mountinfo`
/// lists) shows a 512 MiB memory limit and one CPU of quota, and the host's JDK (in `base`) sizes itself
/// from them: `java -XshowSettings:system` reports a 512 MiB memory limit and one effective CPU (before,
/// "No metrics available").
#[tokio::test(flavor = "multi_thread")]
async fn runtimes_see_the_sandboxs_own_limits_the_jvm_reports_512_mib() {
    let Some(fx) = Fixture::new() else {
        return;
    };
    let serve = daemon::serve(&fx.bin, &fx.state).await;
    let id = daemon::create(&serve, json!({"memory_mb": 512, "cpu": 1})).await;
    let root = serve.url(&format!("/v1/sandboxes/{id}"));
    let hybrid = std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
    // What a runtime does: find its cgroup per controller, then read the limit under that mount.
    let probe = if hybrid {
        "m=$(sed -n 's/^[0-9]*:memory://p' /proc/self/cgroup); \
         c=$(sed -n 's/^[0-9]*:\\(cpu,cpuacct\\|cpu\\)://p' /proc/self/cgroup); \
         cat /sys/fs/cgroup/memory$m/memory.limit_in_bytes /sys/fs/cgroup/cpu$c/cpu.cfs_quota_us \
             /sys/fs/cgroup/cpu$c/cpu.cfs_period_us; \
         grep -c ' - cgroup cgroup ' /proc/self/mountinfo"
    } else {
        "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max"
    };
    for user in ["user", "root"] {
        let (code, out) = sh(&root, probe, Some(user)).await;
        assert_eq!(code, 0, "{user}: {out}");
        let lines: Vec<&str> = out.lines().collect();
        if hybrid {
            assert_eq!(lines[0], (512u64 << 20).to_string(), "{user}: {out}");
            assert_eq!(lines[1], lines[2], "one CPU of quota per period: {out}");
            // memory, cpu, cpuacct, cpuset and pids (cpu and cpuacct may share one).
            let mounts: u32 = lines[3].parse().unwrap();
            assert!(mounts >= 4, "v1 mounts in the sandbox: {out}");
        } else {
            assert_eq!(lines[0], (512u64 << 20).to_string(), "{out}");
        }
    }
    // The limits are the host's: not even the sandbox's root can raise them.
    let (code, out) = sh(
        &root,
        "echo -1 > /sys/fs/cgroup/memory/work/memory.limit_in_bytes 2>&1; echo rc=$?",
        Some("root"),
    )
    .await;
    assert_eq!(code, 0);
    assert!(!out.contains("rc=0"), "{out}");

    if std::process::Command::new("java")
        .arg("-version")
        .output()
        .is_err()
    {
        sandpit_testkit::skip("no java on this host (the base template's JDK comes from /usr)");
        return;
    }
    let (s, r) = post(
        format!("{root}/exec"),
        json!({"cmd": "java -XshowSettings:system -version 2>&1", "timeout_ms": 60_000}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let out = r["stdout"].as_str().unwrap_or_default();
    assert_eq!(r["exit_code"], 0, "{out}");
    assert!(!out.contains("No metrics available"), "{out}");
    assert!(out.contains("Memory Limit: 512.00M"), "{out}");
    assert!(out.contains("Effective CPU Count: 1"), "{out}");
    let (s, _) = call(client().delete(root.clone())).await;
    assert_eq!(s, 204);
}
