//! Test support: a daemon started in-process on port 0, and a fake backend whose "agent" is a tiny axum
//! app on the sandbox's unix socket, so that the API, engine and proxy can be tested without the real agent.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures_util::stream;
use sandpit_server::{BackendError, BackendHandle, Config, SandboxBackend, SandboxSpec};
use tokio::sync::oneshot;

pub const KEY: &str = "test-key-0123456789abcdef";

/// One fake agent.
#[derive(Debug)]
struct FakeAgent {
    task: tokio::task::JoinHandle<()>,
    paused: Arc<AtomicBool>,
}

/// A backend whose sandboxes are in-process axum apps. Pausing makes the app answer 500, so a test can tell
/// whether the daemon resumed a sandbox before proxying to it.
#[derive(Debug)]
pub struct FakeBackend {
    rt: tokio::runtime::Handle,
    agents: Mutex<HashMap<u32, FakeAgent>>,
    next_pid: AtomicUsize,
    pub pauses: AtomicUsize,
    pub resumes: AtomicUsize,
    pub destroys: AtomicUsize,
    /// Makes `destroy` fail while set.
    pub fail_destroy: AtomicBool,
}

impl FakeBackend {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            rt: tokio::runtime::Handle::current(),
            agents: Mutex::new(HashMap::new()),
            next_pid: AtomicUsize::new(1000),
            pauses: AtomicUsize::new(0),
            resumes: AtomicUsize::new(0),
            destroys: AtomicUsize::new(0),
            fail_destroy: AtomicBool::new(false),
        })
    }

    /// Simulates an agent crash.
    pub fn kill_agent(&self, pid: u32) {
        if let Some(a) = self.agents.lock().unwrap().remove(&pid) {
            a.task.abort();
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.agents.lock().unwrap().keys().copied().collect()
    }
}

impl SandboxBackend for FakeBackend {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn create(&self, spec: &SandboxSpec) -> Result<BackendHandle, BackendError> {
        if spec.template == "missing" {
            return Err(BackendError::NotFound(
                "template \"missing\" not found".into(),
            ));
        }
        // The sandbox directory is the backend's to make (`SandboxSpec::dir`).
        std::fs::create_dir_all(&spec.dir).map_err(|e| BackendError::io("mkdir", e))?;
        let socket = spec.dir.join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket)
            .map_err(|e| BackendError::io("bind", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| BackendError::io("nonblocking", e))?;
        let paused = Arc::new(AtomicBool::new(false));
        let app = fake_agent(paused.clone(), spec.env.clone());
        let task = self.rt.spawn(async move {
            let listener = tokio::net::UnixListener::from_std(listener).unwrap();
            let _ = axum::serve(listener, app).await;
        });
        let pid = self.next_pid.fetch_add(1, Ordering::SeqCst) as u32;
        self.agents
            .lock()
            .unwrap()
            .insert(pid, FakeAgent { task, paused });
        Ok(BackendHandle {
            agent_socket: socket,
            init_pid: pid,
            data: serde_json::Value::Null,
        })
    }

    fn pause(&self, h: &BackendHandle) -> Result<(), BackendError> {
        self.pauses.fetch_add(1, Ordering::SeqCst);
        let agents = self.agents.lock().unwrap();
        let a = agents
            .get(&h.init_pid)
            .ok_or_else(|| BackendError::Failed("gone".into()))?;
        a.paused.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn resume(&self, h: &BackendHandle) -> Result<(), BackendError> {
        self.resumes.fetch_add(1, Ordering::SeqCst);
        let agents = self.agents.lock().unwrap();
        let a = agents
            .get(&h.init_pid)
            .ok_or_else(|| BackendError::Failed("gone".into()))?;
        a.paused.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn destroy(&self, h: &BackendHandle) -> Result<(), BackendError> {
        self.destroys.fetch_add(1, Ordering::SeqCst);
        if self.fail_destroy.load(Ordering::SeqCst) {
            return Err(BackendError::Failed("destroy failed (test)".into()));
        }
        self.kill_agent(h.init_pid);
        Ok(())
    }

    fn is_alive(&self, h: &BackendHandle) -> bool {
        self.agents.lock().unwrap().contains_key(&h.init_pid)
    }
    // The fake's agents are in-process servers: never stopped.
    fn is_stopped(&self, _: &BackendHandle) -> bool {
        false
    }
}

async fn refuse_when_paused(
    State(paused): State<Arc<AtomicBool>>,
    req: Request,
    next: Next,
) -> Response {
    if paused.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "fake agent is frozen").into_response();
    }
    next.run(req).await
}

/// Echo routes that let tests see exactly what the proxy delivered.
fn fake_agent(paused: Arc<AtomicBool>, env: std::collections::BTreeMap<String, String>) -> Router {
    Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/env",
            get(move || {
                let env = env.clone();
                async move { axum::Json(env) }
            }),
        )
        .route(
            "/processes/{pid}/events",
            get(|| async {
                let events = stream::unfold(0u32, |n| async move {
                    match n {
                        0 => Some((
                            Ok::<_, std::convert::Infallible>(
                                Event::default().event("stdout").data("first"),
                            ),
                            1,
                        )),
                        // The second event only comes much later: a buffering proxy would hold back the first.
                        1 => {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                            Some((Ok(Event::default().event("exited").data("{}")), 2))
                        }
                        _ => None,
                    }
                });
                Sse::new(events)
            }),
        )
        .route(
            "/processes/{pid}/ws",
            get(|ws: WebSocketUpgrade| async move {
                ws.on_upgrade(|mut socket| async move {
                    while let Some(Ok(msg)) = socket.recv().await {
                        let reply = match msg {
                            Message::Text(t) => {
                                Message::Text(format!("echo:{}", t.as_str()).into())
                            }
                            Message::Binary(b) => Message::Binary(b),
                            Message::Close(_) => break,
                            _ => continue,
                        };
                        if socket.send(reply).await.is_err() {
                            break;
                        }
                    }
                })
            }),
        )
        .fallback(any(
            |uri: Uri, headers: HeaderMap, body: Bytes| async move {
                let hdrs: HashMap<String, String> = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
                    .collect();
                axum::Json(serde_json::json!({
                    "uri": uri.to_string(),
                    "headers": hdrs,
                    "body_len": body.len(),
                    "body": String::from_utf8_lossy(&body),
                }))
            },
        ))
        .layer(middleware::from_fn_with_state(paused, refuse_when_paused))
}

/// A daemon running in this test's runtime.
pub struct Daemon {
    pub addr: SocketAddr,
    pub state_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), sandpit_server::ServerError>>,
}

impl Daemon {
    pub async fn start(state_dir: &Path, backend: Arc<dyn SandboxBackend>) -> Self {
        Self::start_with(Self::config(state_dir), backend).await
    }

    pub fn config(state_dir: &Path) -> Config {
        let mut c = Config::with_state_dir(state_dir);
        c.api_key = Some(KEY.into());
        c.shutdown_grace_secs = 2;
        // Template tests import from temporary directories.
        c.import_roots = vec![std::env::temp_dir()];
        c
    }

    pub async fn start_with(config: Config, backend: Arc<dyn SandboxBackend>) -> Self {
        Self::start_with_clock(config, backend, Arc::new(sandpit_server::time::SystemClock)).await
    }

    /// A daemon whose deadlines follow `clock` (a `ManualClock` lets a test move time by hand).
    pub async fn start_with_clock(
        config: Config,
        backend: Arc<dyn SandboxBackend>,
        clock: Arc<dyn sandpit_server::time::Clock>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let state_dir = config.state_dir.clone();
        let task = tokio::spawn(sandpit_server::run_with_clock(
            config,
            backend,
            clock,
            listener,
            async {
                let _ = rx.await;
            },
        ));
        let d = Self {
            addr,
            state_dir,
            stop: Some(tx),
            task,
        };
        d.wait_healthy().await;
        d
    }

    async fn wait_healthy(&self) {
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(self.url("/health")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(!self.task.is_finished(), "daemon exited during start-up");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("daemon did not become healthy");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the daemon and returns what `run` returned.
    pub async fn stop(mut self) -> Result<(), sandpit_server::ServerError> {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("daemon did not stop")
            .unwrap()
    }
}

/// A client that sends the test key.
pub fn client() -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {KEY}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap()
}

/// Sends a request and returns (status, JSON body or Null).
pub async fn call(rb: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (status, json)
}
