//! End-to-end tests of `sandbox.files()` against a real daemon with the `isolate` backend (real
//! sandboxes: the files API acts inside them as their users). Without root: a loud SKIPPED line.
#![allow(clippy::too_many_lines, clippy::many_single_char_names)]

mod common;

use std::time::Duration;

use common::Daemon;
use futures_util::StreamExt;
use sandpit::{EntryType, Error, FsEventType, Sandbox, WriteEntry};
use tokio::io::AsyncReadExt;

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        sandpit_testkit::skip(format_args!(
            "the files tests need the isolate backend, which needs root"
        ));
        false
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn files_read_write_list_watch_through_the_sdk() {
    if !root() {
        return;
    }
    let t = std::time::Instant::now();
    let d = Daemon::start_with_backend("isolate");
    let sbx = Sandbox::create().client(&d.client()).await.unwrap();
    let files = sbx.files();

    // Text, bytes, a stream, a reader, a local file.
    let e = files.write("notes/a.txt", "hello").await.unwrap();
    assert_eq!(
        (e.kind, e.size, e.owner.as_str()),
        (EntryType::File, 5, "user")
    );
    assert_eq!(files.read_to_string("notes/a.txt").await.unwrap(), "hello");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    files
        .write_reader("big.bin", std::io::Cursor::new(data.clone()))
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut s = files.read_stream("big.bin").await.unwrap();
    while let Some(c) = s.next().await {
        got.extend_from_slice(&c.unwrap());
    }
    assert_eq!(got, data);
    let mut r = files.read_reader("big.bin").await.unwrap();
    let mut via_reader = Vec::new();
    r.read_to_end(&mut via_reader).await.unwrap();
    assert_eq!(via_reader.len(), data.len());
    let local = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(local.path(), b"from disk").unwrap();
    files
        .write_file("/tmp/from-disk", local.path())
        .await
        .unwrap();
    assert_eq!(files.read("/tmp/from-disk").await.unwrap(), b"from disk");
    // A large local file both ways with a known length (the daemon's fast path): up with write_file,
    // down with read_file; a missing file leaves no local file behind.
    std::fs::write(local.path(), &data).unwrap();
    let e = files
        .write_file("/tmp/sized.bin", local.path())
        .await
        .unwrap();
    assert_eq!(e.size, data.len() as u64);
    let back = tempfile::tempdir().unwrap();
    let n = files
        .read_file("/tmp/sized.bin", back.path().join("got"))
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert!(std::fs::read(back.path().join("got")).unwrap() == data);
    assert!(matches!(
        files.read_file("/tmp/nope", back.path().join("nope")).await,
        Err(sandpit::Error::NotFound(_))
    ));
    assert!(!back.path().join("nope").exists());
    // An error after the switch (the agent answers it on the switched connection) is the same error.
    let r = files.write_file("/root/no.bin", local.path()).await;
    assert!(
        matches!(r, Err(sandpit::Error::PermissionDenied(_))),
        "{r:?}"
    );
    // A small file is answered without the switch, on the same connection.
    let n = files
        .read_file("/tmp/from-disk", back.path().join("small"))
        .await
        .unwrap();
    assert_eq!(n, 9);
    assert_eq!(
        std::fs::read(back.path().join("small")).unwrap(),
        b"from disk"
    );
    // Bigger than the switch threshold and not a whole number of steps, through the stream too (the
    // stream takes the switched connection, the reader reads it).
    assert!(data.len() as u64 > sandpit_types::files::SPLICE_MIN_BYTES);
    // A name that is not UTF-8.
    let odd = std::path::Path::new(std::ffi::OsStr::from_bytes(b"/tmp/\xff.bin"));
    files.write(odd, vec![1u8, 2, 3]).await.unwrap();
    assert_eq!(files.read(odd).await.unwrap(), [1, 2, 3]);

    eprintln!("content: {:?}", t.elapsed());
    // Many files in one request.
    let many: Vec<_> = (0..100)
        .map(|i| WriteEntry::new(format!("proj/m{i}.txt"), format!("{i}")))
        .chain([WriteEntry::new("proj/run.sh", "#!/bin/sh\n").mode(0o755)])
        .collect();
    let written = files.write_files(many).await.unwrap();
    assert_eq!(written.len(), 101);
    assert_eq!(files.get_info("proj/run.sh").await.unwrap().mode, "0755");
    assert_eq!(files.list("proj").await.unwrap().len(), 101);
    assert_eq!(files.read_to_string("proj/m42.txt").await.unwrap(), "42");

    // exists, make_dir, rename, remove, errors.
    assert!(files.exists("proj").await.unwrap());
    assert!(!files.exists("nope").await.unwrap());
    assert!(files.make_dir("d/e").await.unwrap());
    assert!(!files.make_dir("d/e").await.unwrap());
    files.rename("notes/a.txt", "d/e/a.txt").await.unwrap();
    assert!(matches!(
        files.rename("proj/m1.txt", "proj/m2.txt").await,
        Err(Error::AlreadyExists(_))
    ));
    files.remove("d").await.unwrap();
    assert!(!files.exists("d").await.unwrap());
    let r = files.read("/root/.profile").await;
    assert!(matches!(r, Err(Error::PermissionDenied(_))), "{r:?}");
    assert!(matches!(files.read("nope").await, Err(Error::NotFound(_))));
    let e = files.read("proj").await.unwrap_err();
    assert_eq!(e.code(), Some(sandpit::ErrorCode::IsADirectory), "{e}");
    let as_root = sbx.files().user("root");
    as_root.write("/root/mine", "r").await.unwrap();
    assert_eq!(as_root.get_info("/root/mine").await.unwrap().owner, "root");

    eprintln!("metadata: {:?}", t.elapsed());
    // A watch that resumes after its connection is cut.
    let (proxy, cuts) = common::cutting_proxy(d.url.clone(), "/fs/watch", 1, 600).await;
    let via = sandpit::Client::new(&proxy, &d.key).unwrap();
    let sbx2 = Sandbox::get(&via, sbx.id()).await.unwrap();
    let mut w = sbx2.files().watch_dir("proj", true).await.unwrap();
    for i in 0..3 {
        files.write(format!("proj/w{i}.txt"), "x").await.unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("no watch event within 10 s")
            .unwrap()
            .unwrap();
        assert_ne!(ev.kind, FsEventType::Lost, "{ev:?}");
        seen.push(ev.path.unwrap());
    }
    assert!(
        seen[0].ends_with("proj/w0.txt") && seen[2].ends_with("proj/w2.txt"),
        "{seen:?}"
    );
    assert_eq!(
        cuts.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the connection was never cut"
    );
    w.stop();
    eprintln!("watch: {:?}", t.elapsed());
    sbx.kill().await.unwrap();
    eprintln!("killed: {:?}", t.elapsed());
}

use std::os::unix::ffi::OsStrExt as _;

#[tokio::test(flavor = "multi_thread")]
async fn signed_urls_download_and_upload_with_no_other_credential() {
    if !root() {
        return;
    }
    let d = Daemon::start_with_backend("isolate");
    let sbx = Sandbox::create().client(&d.client()).await.unwrap();
    let files = sbx.files();
    files.write("report.txt", "the report").await.unwrap();
    let plain = reqwest::Client::new();
    // Download: a plain GET, no key.
    let url = files.download_url("report.txt", None).await.unwrap();
    let r = plain.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "the report");
    // Upload, as root (the handle's user), then read back as root.
    let up = files
        .clone()
        .user("root")
        .upload_url("/root/uploaded.bin", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    let r = plain.put(&up).body("from a page").send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let back = files
        .clone()
        .user("root")
        .read_to_string("/root/uploaded.bin")
        .await
        .unwrap();
    assert_eq!(back, "from a page");
    let e = files
        .clone()
        .user("root")
        .get_info("/root/uploaded.bin")
        .await
        .unwrap();
    assert_eq!(e.owner, "root");
    // Altered: 403.
    let r = plain
        .get(url.replace("report", "secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Bad lifetime: a clear error.
    let e = files
        .signed_url(
            "x",
            sandpit::SignedUrlOp::Read,
            Some(Duration::from_secs(30 * 24 * 3600)),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    sbx.kill().await.unwrap();
}
