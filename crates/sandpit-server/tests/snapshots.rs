//! Snapshots, forks and template export/import against the real daemon with the `isolate` backend: real
//! sandboxes, their writable layers copied into template layers, sandboxes made from those.
//!
//! Root-only like every isolate test (a loud SKIPPED line and a pass elsewhere; CI runs them as root).

mod daemon;

use std::path::Path;
use std::time::Duration;

use daemon::{Fixture, call, client, create, import_busybox_template, post, sh};
use serde_json::{Value, json};

/// Runs `cmd` in sandbox `id`, asserting exit 0, and returns its stdout.
async fn ok(serve: &daemon::Serve, id: &str, cmd: &str, user: Option<&str>) -> String {
    let (code, out) = sh(&serve.url(&format!("/v1/sandboxes/{id}")), cmd, user).await;
    assert_eq!(code, 0, "{cmd}: {out}");
    out
}

async fn snapshot(serve: &daemon::Serve, id: &str, name: &str) -> Value {
    let (s, v) = post(
        serve.url(&format!("/v1/sandboxes/{id}/snapshots")),
        json!({"name": name}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    v
}

async fn template_names(serve: &daemon::Serve) -> Vec<String> {
    let (s, v) = call(client().get(serve.url("/v1/templates"))).await;
    assert_eq!(s, 200, "{v}");
    v["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshots_keep_what_was_written_before_and_forks_diverge() {
    let Some(fx) = Fixture::new() else {
        return;
    };
    let serve = daemon::serve(&fx.bin, &fx.state).await;
    import_busybox_template(&serve, &fx.bin, &fx.dir.path().join("tiny"), |root| {
        std::fs::create_dir_all(root.join("usr/share/doc/pkg")).unwrap();
        std::fs::write(root.join("usr/share/doc/pkg/README"), "template file").unwrap();
        std::fs::write(root.join("etc/motd"), "template motd").unwrap();
    })
    .await;
    let a = create(&serve, json!({"template": "tiny"})).await;
    // What the sandbox does to its filesystem before the snapshot: a file of `user`'s, a 1 MiB file
    // whose checksum must survive, a template file changed, a template directory removed.
    ok(
        &serve,
        &a,
        "echo mine > /home/user/before.txt",
        Some("user"),
    )
    .await;
    let sum = ok(
        &serve,
        &a,
        "busybox dd if=/dev/urandom of=/home/user/blob bs=64k count=16 2>/dev/null && \
         busybox sha256sum /home/user/blob",
        Some("user"),
    )
    .await;
    ok(
        &serve,
        &a,
        "{ echo changed > /etc/motd && busybox rm -rf /usr/share/doc; } 2>&1",
        Some("root"),
    )
    .await;

    let snap = snapshot(&serve, &a, "snap1").await;
    assert_eq!(snap["template"]["name"], "snap1");
    // What the agent and the host keep for this one sandbox (its logs, resolv.conf) is not copied.
    let layer = fx.state.join("isolate/templates/snap1/rootfs");
    assert!(layer.join("home/user/before.txt").exists());
    assert!(!layer.join("run/sandpit").exists() && !layer.join(".sandpit").exists());
    assert_eq!(snap["template"]["parent"], "tiny");
    assert_eq!(snap["template"]["tenant"], "default");
    assert!(snap["bytes"].as_u64().unwrap() >= 1 << 20, "{snap}");
    assert!(snap["frozen_ms"].as_f64().unwrap() >= 0.0, "{snap}");
    // The sandbox runs on; what it writes now is not in the snapshot.
    ok(
        &serve,
        &a,
        "echo later > /home/user/after.txt",
        Some("user"),
    )
    .await;

    // A sandbox made from the snapshot: everything of before, nothing of after, owners kept.
    let b = create(&serve, json!({"template": "snap1"})).await;
    assert_eq!(
        ok(&serve, &b, "cat /home/user/before.txt", None).await,
        "mine\n"
    );
    assert_eq!(
        ok(
            &serve,
            &b,
            "busybox stat -c %U:%G /home/user/before.txt",
            None
        )
        .await,
        "user:user\n"
    );
    assert_eq!(
        ok(&serve, &b, "busybox sha256sum /home/user/blob", None).await,
        sum
    );
    assert_eq!(ok(&serve, &b, "cat /etc/motd", None).await, "changed\n");
    let (code, _) = sh(
        &serve.url(&format!("/v1/sandboxes/{b}")),
        "test -e /home/user/after.txt || test -e /usr/share/doc",
        None,
    )
    .await;
    assert_ne!(
        code, 0,
        "a file written after the snapshot, or one removed before it, is there"
    );
    // `user` may still write its own files.
    ok(
        &serve,
        &b,
        "echo more >> /home/user/before.txt",
        Some("user"),
    )
    .await;

    // A snapshot of a sandbox made from a snapshot stores only its own changes.
    ok(&serve, &b, "echo b > /home/user/b.txt", None).await;
    let snap2 = snapshot(&serve, &b, "snap2").await;
    assert_eq!(snap2["template"]["parent"], "snap1");
    let layer = fx.state.join("isolate/templates/snap2/rootfs/home/user");
    assert!(layer.join("b.txt").exists());
    assert!(
        !layer.join("blob").exists(),
        "snap2 copied its parent's file"
    );
    let c = create(&serve, json!({"template": "snap2"})).await;
    assert_eq!(
        ok(
            &serve,
            &c,
            "cat /home/user/before.txt /home/user/b.txt",
            None
        )
        .await,
        "mine\nmore\nb\n"
    );

    // In use, or a parent: not deleted.
    for name in ["snap1", "snap2"] {
        let (s, e) = call(client().delete(serve.url(&format!("/v1/templates/{name}")))).await;
        assert_eq!(s, 409, "{name}: {e}");
    }

    // Forks: each starts from A as it is now (after.txt included), then goes its own way.
    let (s, fork) = post(
        serve.url(&format!("/v1/sandboxes/{a}/fork")),
        json!({"count": 3, "metadata": {"branch": "x"}}),
    )
    .await;
    assert_eq!(s, 201, "{fork}");
    let forks: Vec<String> = fork["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["metadata"]["branch"], "x");
            assert!(s["access_token"].is_string());
            s["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(forks.len(), 3);
    let fork_template = fork["snapshot"]["template"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(fork["snapshot"]["template"]["auto_remove"], true);
    for (i, f) in forks.iter().enumerate() {
        assert_eq!(
            ok(&serve, f, "cat /home/user/after.txt", None).await,
            "later\n"
        );
        ok(&serve, f, &format!("echo {i} > /home/user/mine"), None).await;
    }
    for (i, f) in forks.iter().enumerate() {
        assert_eq!(
            ok(&serve, f, "cat /home/user/mine", None).await,
            format!("{i}\n")
        );
    }
    let (code, _) = sh(
        &serve.url(&format!("/v1/sandboxes/{a}")),
        "test -e /home/user/mine",
        None,
    )
    .await;
    assert_ne!(code, 0, "a fork's write reached its source");
    // The fork's snapshot goes with the last fork.
    assert!(template_names(&serve).await.contains(&fork_template));
    for f in &forks {
        let (s, _) = call(client().delete(serve.url(&format!("/v1/sandboxes/{f}")))).await;
        assert_eq!(s, 204);
    }
    assert!(!template_names(&serve).await.contains(&fork_template));

    // Bad requests say what is wrong.
    for (body, want) in [
        (json!({"count": 0}), "count"),
        (json!({"count": 101}), "count"),
        (json!({"template": "tiny"}), "template"),
        (json!({"cpu": "x"}), "expected f64"),
    ] {
        let (s, e) = post(serve.url(&format!("/v1/sandboxes/{a}/fork")), body).await;
        assert_eq!(s, 400, "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(want),
            "{e}"
        );
    }
    let (s, e) = post(
        serve.url(&format!("/v1/sandboxes/{a}/snapshots")),
        json!({"name": "Bad Name"}),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    let (s, e) = post(
        serve.url(&format!("/v1/sandboxes/{a}/snapshots")),
        json!({"name": "snap1"}),
    )
    .await;
    assert_eq!(s, 409, "{e}");
    let (s, _) = post(
        serve.url("/v1/sandboxes/nope/snapshots"),
        json!({"name": "x"}),
    )
    .await;
    assert_eq!(s, 404);

    // Another tenant neither sees nor uses this tenant's snapshots.
    let (s, key) = post(
        serve.url("/v1/keys"),
        json!({"name": "other", "scopes": ["sandboxes"], "tenant": "other"}),
    )
    .await;
    assert_eq!(s, 201, "{key}");
    let other = key["key"].as_str().unwrap();
    let as_other = |rb: reqwest::RequestBuilder| rb.bearer_auth(other);
    let plain = reqwest::Client::new();
    let (s, v) = call(as_other(plain.get(serve.url("/v1/templates")))).await;
    assert_eq!(s, 200);
    let seen: Vec<&str> = v["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(seen.contains(&"tiny") && !seen.contains(&"snap1"), "{v}");
    let (s, e) = call(as_other(
        plain
            .post(serve.url("/v1/sandboxes"))
            .json(&json!({"template": "snap1"})),
    ))
    .await;
    assert_eq!(s, 404, "{e}");
    for rb in [
        plain.get(serve.url("/v1/templates/snap1")),
        plain.get(serve.url("/v1/templates/snap1/export")),
        plain.delete(serve.url("/v1/templates/snap1")),
    ] {
        let (s, e) = call(as_other(rb)).await;
        assert_eq!(s, 404, "{e}");
    }
    let (s, e) = call(as_other(plain.delete(serve.url("/v1/templates/tiny")))).await;
    assert_eq!(s, 403, "{e}");

    // Deleting the sandboxes frees the snapshots (children first).
    for id in [&a, &b, &c] {
        let (s, _) = call(client().delete(serve.url(&format!("/v1/sandboxes/{id}")))).await;
        assert_eq!(s, 204);
    }
    let (s, e) = call(client().delete(serve.url("/v1/templates/snap1"))).await;
    assert_eq!(s, 409, "snap2 is layered over snap1: {e}");
    for name in ["snap2", "snap1"] {
        let (s, e) = call(client().delete(serve.url(&format!("/v1/templates/{name}")))).await;
        assert_eq!(s, 204, "{name}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_survives_a_restart_and_an_export_import_round_trip() {
    let Some(fx) = Fixture::new() else {
        return;
    };
    let port = daemon::free_port();
    let serve = daemon::serve_on(&fx.bin, &fx.state, port).await;
    import_busybox_template(&serve, &fx.bin, &fx.dir.path().join("tiny"), |_| {}).await;
    let a = create(&serve, json!({"template": "tiny"})).await;
    let sum = ok(
        &serve,
        &a,
        "busybox dd if=/dev/urandom of=/home/user/blob bs=64k count=8 2>/dev/null && \
         busybox ln /home/user/blob /home/user/link && busybox sha256sum /home/user/blob",
        Some("user"),
    )
    .await;
    // A paused sandbox is snapshotted as it is, and stays paused.
    let (s, _) = post(serve.url(&format!("/v1/sandboxes/{a}/pause")), json!({})).await;
    assert_eq!(s, 200);
    let snap = snapshot(&serve, &a, "keep").await;
    assert_eq!(snap["frozen_ms"].as_f64(), Some(0.0), "{snap}");
    let (s, v) = call(client().get(serve.url(&format!("/v1/sandboxes/{a}")))).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("paused")));

    // The daemon restarts (a SIGKILL, not a goodbye): the snapshot is still a template.
    drop(serve);
    let serve = daemon::serve_on(&fx.bin, &fx.state, port).await;
    assert!(template_names(&serve).await.contains(&"keep".to_owned()));
    let b = create(&serve, json!({"template": "keep"})).await;
    assert_eq!(
        ok(&serve, &b, "busybox sha256sum /home/user/blob", None).await,
        sum
    );

    // Export to one file and import it under another name (as another host would).
    let resp = client()
        .get(serve.url("/v1/templates/keep/export"))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/zstd");
    let archive = resp.bytes().await.unwrap();
    assert_eq!(&archive[..4], &[0x28, 0xb5, 0x2f, 0xfd], "not zstd");
    let file = fx.dir.path().join("keep.tar.zst");
    std::fs::write(&file, &archive).unwrap();
    let (s, t) = call(
        client()
            .post(serve.url("/v1/templates?name=moved"))
            .header("content-type", "application/zstd")
            .body(archive.clone()),
    )
    .await;
    assert_eq!(s, 201, "{t}");
    assert_eq!(t["name"], "moved");
    assert_eq!(t["source"], "uploaded archive");
    // A refused upload is answered, not cut off while the client still sends (regression: EPIPE).
    let big = vec![0u8; 8 << 20];
    let (s, e) = call(
        client()
            .post(serve.url("/v1/templates?name=moved"))
            .header("content-type", "application/zstd")
            .body(big),
    )
    .await;
    assert_eq!(s, 409, "{e}");
    assert!(t["parent"].is_null(), "an import is whole: {t}");
    let c = create(&serve, json!({"template": "moved"})).await;
    assert_eq!(
        ok(
            &serve,
            &c,
            "busybox sha256sum /home/user/blob /home/user/link",
            None
        )
        .await,
        format!("{sum}{}", sum.replace("/home/user/blob", "/home/user/link"))
    );
    assert_eq!(
        ok(&serve, &c, "busybox stat -c %U /home/user/blob", None).await,
        "user\n"
    );
    // Uploads that are not archives, or lack a name, are refused with a reason.
    let (s, e) = call(
        client()
            .post(serve.url("/v1/templates?name=junk"))
            .header("content-type", "application/zstd")
            .body(vec![0x28u8, 0xb5, 0x2f, 0xfd, 1, 2, 3]),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    let (s, e) = call(
        client()
            .post(serve.url("/v1/templates"))
            .header("content-type", "application/zstd")
            .body(archive),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    assert!(!template_names(&serve).await.contains(&"junk".to_owned()));
    assert!(
        std::fs::read_dir(fx.state.join("uploads"))
            .unwrap()
            .next()
            .is_none(),
        "uploads are removed after import"
    );
    let _ = Path::new(&file);
}
