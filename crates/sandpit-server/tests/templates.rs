//! The templates API against a fake template store (the HTTP contract: 202 and polling, conflicts,
//! validation) and against a backend without templates (a clear 409). The real isolate store is exercised
//! in `tests/isolate.rs`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Daemon, FakeBackend, call, client};
use sandpit_server::{
    BackendError, BackendHandle, SandboxBackend, SandboxSpec, TemplateRecord, TemplateStore,
};
use sandpit_types::sandbox::TemplateSource;
use serde_json::{Value, json};

/// [`FakeBackend`] sandboxes plus an in-memory template store. A source path containing `slow` takes a
/// second to build, one containing `fail` fails.
#[derive(Debug)]
struct WithTemplates {
    inner: Arc<FakeBackend>,
    templates: Mutex<Vec<TemplateRecord>>,
}

impl SandboxBackend for WithTemplates {
    fn name(&self) -> &'static str {
        "fake-with-templates"
    }
    fn create(&self, spec: &SandboxSpec) -> Result<BackendHandle, BackendError> {
        self.inner.create(spec)
    }
    fn pause(&self, h: &BackendHandle) -> Result<(), BackendError> {
        self.inner.pause(h)
    }
    fn resume(&self, h: &BackendHandle) -> Result<(), BackendError> {
        self.inner.resume(h)
    }
    fn destroy(&self, h: &BackendHandle) -> Result<(), BackendError> {
        self.inner.destroy(h)
    }
    fn is_alive(&self, h: &BackendHandle) -> bool {
        self.inner.is_alive(h)
    }
    fn is_stopped(&self, h: &BackendHandle) -> bool {
        self.inner.is_stopped(h)
    }
    fn templates(&self) -> Option<&dyn TemplateStore> {
        Some(self)
    }
}

impl TemplateStore for WithTemplates {
    fn list(&self) -> Result<Vec<TemplateRecord>, BackendError> {
        Ok(self.templates.lock().unwrap().clone())
    }

    fn build(
        &self,
        name: &str,
        source: &TemplateSource,
        progress: &mut dyn FnMut(&str),
    ) -> Result<TemplateRecord, BackendError> {
        let path = match source {
            TemplateSource::Dir(p) | TemplateSource::Tar(p) | TemplateSource::Oci(p) => p.clone(),
            TemplateSource::Debian(d) => d.suite.clone().unwrap_or_default(),
        };
        progress("step 1");
        if path.contains("slow") {
            std::thread::sleep(Duration::from_secs(1));
        }
        if path.contains("fail") {
            return Err(BackendError::Failed("the image is corrupt (test)".into()));
        }
        progress("step 2");
        let record = TemplateRecord {
            name: name.into(),
            source: format!("fake {path}"),
            created_at_ms: 1_700_000_000_000,
            ..Default::default()
        };
        self.templates.lock().unwrap().push(record.clone());
        Ok(record)
    }

    fn remove(&self, name: &str) -> Result<(), BackendError> {
        let mut t = self.templates.lock().unwrap();
        let before = t.len();
        t.retain(|r| r.name != name);
        if t.len() == before {
            return Err(BackendError::NotFound(format!(
                "template {name:?} not found"
            )));
        }
        Ok(())
    }
}

async fn wait_build(daemon: &Daemon, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, b) = call(client().get(daemon.url(&format!("/v1/templates/{name}/build")))).await;
        assert_eq!(s, 200, "{b}");
        if b["state"] != "building" {
            return b;
        }
        assert!(Instant::now() < deadline, "{b}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn builds_are_accepted_polled_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let slow = src.path().join("slow");
    let fail = src.path().join("fail");
    std::fs::create_dir(&slow).unwrap();
    std::fs::create_dir(&fail).unwrap();
    let backend = Arc::new(WithTemplates {
        inner: FakeBackend::new(),
        templates: Mutex::new(Vec::new()),
    });
    let daemon = Daemon::start(dir.path(), backend).await;
    let path = |p: &std::path::Path| p.display().to_string();

    let (s, list) = call(client().get(daemon.url("/v1/templates"))).await;
    assert_eq!((s, list), (200, json!({"templates": []})));

    // Accepted at once, polled to the end.
    let resp = client()
        .post(daemon.url("/v1/templates"))
        .json(&json!({"name": "py", "source": {"dir": path(src.path())}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["location"], "/v1/templates/py/build");
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["state"], "building");
    let b = wait_build(&daemon, "py").await;
    assert_eq!(b["state"], "ready", "{b}");
    assert_eq!(b["log"], json!(["step 1", "step 2"]));
    assert_eq!(b["template"]["name"], "py");
    assert!(b["finished_at"].is_string());
    let (s, tpl) = call(client().get(daemon.url("/v1/templates/py"))).await;
    assert_eq!(s, 200);
    assert_eq!(tpl["created_at"], "2023-11-14T22:13:20.000Z");

    // Taken name; a name being built; deleting what is being built.
    let (s, e) = common::call(
        client()
            .post(daemon.url("/v1/templates"))
            .json(&json!({"name": "py", "source": {"dir": path(&slow)}})),
    )
    .await;
    assert_eq!((s, code(&e)), (409, "conflict"), "{e}");
    let (s, _) = call(
        client()
            .post(daemon.url("/v1/templates"))
            .json(&json!({"name": "slow", "source": {"dir": path(&slow)}})),
    )
    .await;
    assert_eq!(s, 202);
    let (s, e) = call(
        client()
            .post(daemon.url("/v1/templates"))
            .json(&json!({"name": "slow", "source": {"dir": path(&slow)}})),
    )
    .await;
    assert_eq!((s, code(&e)), (409, "conflict"), "{e}");
    let (s, e) = call(client().delete(daemon.url("/v1/templates/slow"))).await;
    assert_eq!((s, code(&e)), (409, "conflict"), "{e}");
    assert_eq!(wait_build(&daemon, "slow").await["state"], "ready");

    // A failed build says why.
    let (s, _) = call(
        client()
            .post(daemon.url("/v1/templates"))
            .json(&json!({"name": "broken", "source": {"oci": path(&fail)}})),
    )
    .await;
    assert_eq!(s, 202);
    let b = wait_build(&daemon, "broken").await;
    assert_eq!(b["state"], "failed");
    assert!(b["error"].as_str().unwrap().contains("corrupt"), "{b}");

    // Debian sources are validated too; then delete.
    let (s, _) = call(client().post(daemon.url("/v1/templates")).json(
        &json!({"name": "deb", "source": {"debian": {"suite": "bookworm", "mirror": "http://deb.debian.org/debian"}}}),
    ))
    .await;
    assert_eq!(s, 202);
    assert_eq!(wait_build(&daemon, "deb").await["state"], "ready");
    let (s, _) = call(client().delete(daemon.url("/v1/templates/py"))).await;
    assert_eq!(s, 204);
    let (s, e) = call(client().get(daemon.url("/v1/templates/py"))).await;
    assert_eq!((s, code(&e)), (404, "not_found"));
    let (s, e) = call(client().delete(daemon.url("/v1/templates/py"))).await;
    assert_eq!((s, code(&e)), (404, "not_found"));
    let (s, e) = call(client().get(daemon.url("/v1/templates/never/build"))).await;
    assert_eq!((s, code(&e)), (404, "not_found"));
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn bad_requests_are_400() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(WithTemplates {
        inner: FakeBackend::new(),
        templates: Mutex::new(Vec::new()),
    });
    let daemon = Daemon::start(dir.path(), backend).await;
    let tmp = std::env::temp_dir().display().to_string();
    for body in [
        json!({"name": "Py", "source": {"dir": tmp}}),
        json!({"name": "base", "source": {"dir": tmp}}),
        json!({"name": "py", "source": {"dir": "relative/path"}}),
        json!({"name": "py", "source": {"dir": "/does/not/exist"}}),
        json!({"name": "py", "source": {"tar": tmp}}),
        json!({"name": "py", "source": {"zip": tmp}}),
        json!({"name": "py", "source": {"dir": tmp, "tar": tmp}}),
        json!({"name": "py", "source": {"dir": tmp}, "extra": 1}),
        json!({"name": "py"}),
        json!({"name": "deb", "source": {"debian": {"suite": "-x"}}}),
        json!({"name": "deb", "source": {"debian": {"mirror": "file:///etc"}}}),
    ] {
        let (s, e) = call(client().post(daemon.url("/v1/templates")).json(&body)).await;
        assert_eq!((s, code(&e)), (400, "invalid_argument"), "{body}: {e}");
    }
    daemon.stop().await.unwrap();
}

/// Host paths are read with the daemon's privileges: without import roots they are refused, and with
/// them only paths under a root are taken, judged after resolving symlinks.
#[tokio::test]
async fn host_path_imports_are_confined_to_the_import_roots() {
    let dir = tempfile::tempdir().unwrap();
    let with_templates = || {
        Arc::new(WithTemplates {
            inner: FakeBackend::new(),
            templates: Mutex::new(Vec::new()),
        })
    };
    let src = dir.path().join("allowed/rootfs");
    std::fs::create_dir_all(&src).unwrap();
    let outside = dir.path().join("secret");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, dir.path().join("allowed/sneaky")).unwrap();

    // No roots (the default): refused, saying how to allow it; debootstrap builds still work.
    let mut config = Daemon::config(&dir.path().join("s1"));
    config.import_roots = Vec::new();
    let daemon = Daemon::start_with(config, with_templates()).await;
    let body = json!({"name": "py", "source": {"dir": src.display().to_string()}});
    let (s, e) = call(client().post(daemon.url("/v1/templates")).json(&body)).await;
    assert_eq!((s, code(&e)), (409, "conflict"), "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--import-root"),
        "{e}"
    );
    let deb = json!({"name": "deb", "source": {"debian": {}}});
    let (s, e) = call(client().post(daemon.url("/v1/templates")).json(&deb)).await;
    assert_eq!(s, 202, "{e}");
    daemon.stop().await.unwrap();

    let mut config = Daemon::config(&dir.path().join("s2"));
    config.import_roots = vec![dir.path().join("allowed")];
    let daemon = Daemon::start_with(config, with_templates()).await;
    for (name, path) in [
        ("out", outside.display().to_string()),
        (
            "sym",
            dir.path().join("allowed/sneaky").display().to_string(),
        ),
        (
            "dots",
            format!("{}/allowed/../secret", dir.path().display()),
        ),
        ("etc", "/etc".to_owned()),
    ] {
        let body = json!({"name": name, "source": {"dir": path}});
        let (s, e) = call(client().post(daemon.url("/v1/templates")).json(&body)).await;
        assert_eq!((s, code(&e)), (400, "invalid_argument"), "{path}: {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains("outside"),
            "{e}"
        );
    }
    let body = json!({"name": "ok", "source": {"dir": src.display().to_string()}});
    let (s, e) = call(client().post(daemon.url("/v1/templates")).json(&body)).await;
    assert_eq!(s, 202, "{e}");
    daemon.stop().await.unwrap();
}

#[tokio::test]
async fn a_backend_without_templates_says_which_one_is_needed() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), FakeBackend::new()).await;
    let tmp = std::env::temp_dir().display().to_string();
    for (method, path, body) in [
        ("GET", "/v1/templates", None),
        (
            "POST",
            "/v1/templates",
            Some(json!({"name": "py", "source": {"dir": tmp}})),
        ),
        ("GET", "/v1/templates/base", None),
        ("GET", "/v1/templates/base/build", None),
        ("DELETE", "/v1/templates/base", None),
    ] {
        let mut rb = client().request(method.parse().unwrap(), daemon.url(path));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let (s, e) = call(rb).await;
        assert_eq!((s, code(&e)), (409, "conflict"), "{method} {path}: {e}");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("templates need the `isolate` backend"),
            "{msg}"
        );
    }
    daemon.stop().await.unwrap();
}
