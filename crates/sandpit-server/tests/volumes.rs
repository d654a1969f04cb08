//! Volumes against the real daemon with the `isolate` backend: real ext4 images on loop devices,
//! idmapped into real sandboxes.
//!
//! Root-only like every isolate test (a loud SKIPPED line and a pass elsewhere; CI runs them as root).

mod daemon;

use daemon::{Fixture, call, client, create, import_busybox_template, post, sh};
use serde_json::{Value, json};

async fn run(serve: &daemon::Serve, id: &str, cmd: &str, user: Option<&str>) -> (i64, String) {
    sh(&serve.url(&format!("/v1/sandboxes/{id}")), cmd, user).await
}

async fn ok(serve: &daemon::Serve, id: &str, cmd: &str, user: Option<&str>) -> String {
    let (code, out) = run(serve, id, cmd, user).await;
    assert_eq!(code, 0, "{cmd}: {out}");
    out
}

async fn volume(serve: &daemon::Serve, name: &str) -> Value {
    let (s, v) = call(client().get(serve.url(&format!("/v1/volumes/{name}")))).await;
    assert_eq!(s, 200, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_are_shared_capped_owned_right_and_outlive_sandboxes_and_restarts() {
    let Some(fx) = Fixture::new() else {
        return;
    };
    let port = daemon::free_port();
    let serve = daemon::serve_on(&fx.bin, &fx.state, port).await;
    import_busybox_template(&serve, &fx.bin, &fx.dir.path().join("tiny"), |_| {}).await;

    let (s, v) = post(
        serve.url("/v1/volumes"),
        json!({"name": "data", "size_mb": 32}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (v["size_mb"].as_u64(), v["tenant"].as_str()),
        (Some(32), Some("default"))
    );
    assert!(v["used_mb"].as_u64().unwrap() < 32, "{v}");
    assert_eq!(v["mounted_by"], json!([]));

    // Two sandboxes mount it at once, one read-only.
    let a = create(
        &serve,
        json!({"template": "tiny", "volumes": [{"name": "data", "path": "/data"}]}),
    )
    .await;
    let b = create(
        &serve,
        json!({"template": "tiny",
               "volumes": [{"name": "data", "path": "/mnt/shared", "read_only": true}]}),
    )
    .await;
    let (s, info) = call(client().get(serve.url(&format!("/v1/sandboxes/{a}")))).await;
    assert_eq!(s, 200);
    assert_eq!(info["volumes"], json!([{"name": "data", "path": "/data"}]));
    ok(&serve, &a, "echo shared > /data/f", Some("user")).await;
    assert_eq!(ok(&serve, &b, "cat /mnt/shared/f", None).await, "shared\n");
    assert_eq!(
        ok(&serve, &b, "busybox stat -c %U /mnt/shared/f", None).await,
        "user\n"
    );
    let (code, _) = run(&serve, &b, "echo no > /mnt/shared/g", Some("root")).await;
    assert_ne!(code, 0, "a read-only volume took a write");
    // The files API works on volume paths.
    let r = client()
        .get(serve.url(&format!("/v1/sandboxes/{a}/files?path=/data/f")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), "shared\n");

    // The cap holds inside (ENOSPC), and the host's file stays within it.
    let (code, out) = run(
        &serve,
        &a,
        "busybox dd if=/dev/zero of=/data/big bs=1M count=64 2>&1",
        Some("user"),
    )
    .await;
    assert_ne!(code, 0, "64 MiB fit in a 32 MiB volume: {out}");
    assert!(out.contains("No space left"), "{out}");
    let image = fx.state.join("isolate/volumes/data/image");
    let on_disk = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&image).unwrap()) * 512;
    assert!(on_disk <= 32 << 20, "the image took {on_disk} bytes");
    ok(&serve, &a, "busybox rm /data/big", Some("user")).await;

    // Mounted: not deleted; it says by whom.
    let v = volume(&serve, "data").await;
    let mut by: Vec<&str> = v["mounted_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    by.sort_unstable();
    let mut want = vec![a.as_str(), b.as_str()];
    want.sort_unstable();
    assert_eq!(by, want);
    let (s, e) = call(client().delete(serve.url("/v1/volumes/data"))).await;
    assert_eq!(s, 409, "{e}");

    // Bad requests say what is wrong.
    for (body, status) in [
        (json!({"name": "data", "size_mb": 32}), 409),
        (json!({"name": "tiny-one", "size_mb": 1}), 400),
        (json!({"name": "Bad", "size_mb": 32}), 400),
        (json!({"name": "x", "size_mb": 32, "extra": 1}), 400),
    ] {
        let (s, e) = post(serve.url("/v1/volumes"), body.clone()).await;
        assert_eq!(s, status, "{body}: {e}");
    }
    for (mounts, status) in [
        (json!([{"name": "nope", "path": "/x"}]), 404),
        (json!([{"name": "data", "path": "/proc/x"}]), 400),
        (json!([{"name": "data", "path": "relative"}]), 400),
        (
            json!([{"name": "data", "path": "/a"}, {"name": "data", "path": "/a"}]),
            400,
        ),
        // A mount point the template has as a file.
        (json!([{"name": "data", "path": "/etc/passwd"}]), 400),
    ] {
        let (s, e) = post(
            serve.url("/v1/sandboxes"),
            json!({"template": "tiny", "volumes": mounts}),
        )
        .await;
        assert_eq!(s, status, "{mounts}: {e}");
        assert!(e["error"]["message"].is_string(), "{e}");
    }

    // Another tenant neither sees nor mounts it.
    let (s, key) = post(
        serve.url("/v1/keys"),
        json!({"name": "other", "scopes": ["sandboxes"], "tenant": "other"}),
    )
    .await;
    assert_eq!(s, 201, "{key}");
    let other = key["key"].as_str().unwrap();
    let plain = reqwest::Client::new();
    let (s, v) = call(plain.get(serve.url("/v1/volumes")).bearer_auth(other)).await;
    assert_eq!((s, v["volumes"].clone()), (200, json!([])));
    let (s, _) = call(plain.get(serve.url("/v1/volumes/data")).bearer_auth(other)).await;
    assert_eq!(s, 404);
    let (s, _) = call(
        plain
            .post(serve.url("/v1/sandboxes"))
            .bearer_auth(other)
            .json(&json!({"template": "tiny", "volumes": [{"name": "data", "path": "/d"}]})),
    )
    .await;
    assert_eq!(s, 404);

    // The data outlives both sandboxes, a daemon restart, and the host mount going away (a reboot).
    for id in [&a, &b] {
        let (s, _) = call(client().delete(serve.url(&format!("/v1/sandboxes/{id}")))).await;
        assert_eq!(s, 204);
    }
    drop(serve);
    // The test kit unmounts volumes when it stops a daemon: as after a reboot, the next daemon finds
    // the image unmounted and mounts it again on first use.
    let mnt = fx.state.join("isolate/volumes/data/mnt");
    assert!(
        !std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .contains(mnt.to_str().unwrap()),
        "the volume is still mounted"
    );
    let serve = daemon::serve_on(&fx.bin, &fx.state, port).await;
    let c = create(
        &serve,
        json!({"template": "tiny", "volumes": [{"name": "data", "path": "/home/user/ws"}]}),
    )
    .await;
    assert_eq!(
        ok(&serve, &c, "cat /home/user/ws/f", None).await,
        "shared\n"
    );
    ok(&serve, &c, "echo more >> /home/user/ws/f", Some("user")).await;
    let (s, _) = call(client().delete(serve.url(&format!("/v1/sandboxes/{c}")))).await;
    assert_eq!(s, 204);

    // Unmounted everywhere: deleted, data and all.
    assert_eq!(volume(&serve, "data").await["mounted_by"], json!([]));
    let (s, e) = call(client().delete(serve.url("/v1/volumes/data"))).await;
    assert_eq!(s, 204, "{e}");
    assert!(!fx.state.join("isolate/volumes/data").exists());
    let (s, _) = call(client().get(serve.url("/v1/volumes/data"))).await;
    assert_eq!(s, 404);
}
