//! sandpit's in-sandbox agent: the process supervisor that runs as PID 1 of every sandbox.
//!
//! It owns every process started in its sandbox: spawning ([`spawn`]), reaping ([`reaper`]), output
//! logs ([`output`]), timeouts and state ([`process`]), the sandbox's files ([`files`]), and the HTTP API
//! that exposes them ([`api`]).
//! Because it lives inside the sandbox, a client disconnect or a daemon restart never kills a process
//! or loses its output. The same agent runs unchanged on a plain host (`sandpit agent --listen
//! 127.0.0.1:PORT`), which is how its tests and the unsafe `process` backend use it.

pub mod agent;
pub mod api;
pub mod cgroup;
pub mod files;
pub mod flow;
pub mod guard;
pub mod log;
pub mod output;
pub mod passwd;
pub mod process;
pub mod reaper;
pub mod serve;
pub mod spawn;
pub mod sync;
pub mod warm;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use agent::{Agent, AgentConfig, AgentError};

/// Where the agent serves its API.
#[derive(Debug)]
pub enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// Serves the agent's API until `shutdown` resolves, then stops every process (SIGTERM, then SIGKILL
/// after `grace`) and returns.
pub async fn run(
    agent: Arc<Agent>,
    listener: Listener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    if let Some(keep) = guard::protect() {
        tokio::spawn(guard::watch(keep));
    }
    let app = api::router(agent.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server_stop = async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|s| *s).await;
    };
    let server = tokio::spawn(serve::serve(listener, app, server_stop));
    shutdown.await;
    tracing::info!("shutting down: stopping processes");
    stop_processes(&agent, grace).await;
    stop_tx.send_replace(true);
    // Streams end when their processes do; do not let a stuck connection hold the exit.
    match tokio::time::timeout(Duration::from_secs(2), server).await {
        Ok(Ok(())) | Err(_) => Ok(()),
        Ok(Err(e)) => Err(std::io::Error::other(e)),
    }
}

/// SIGTERM to every running process, SIGKILL to what is left after `grace`.
pub async fn stop_processes(agent: &Agent, grace: Duration) {
    let running: Vec<_> = agent
        .all()
        .into_iter()
        .filter(|p| p.status() == sandpit_types::ProcessStatus::Running)
        .collect();
    for p in &running {
        let _ = p.signal(libc::SIGTERM);
    }
    let all_done = futures_util::future::join_all(running.iter().map(|p| {
        let mut d = p.done();
        async move {
            let _ = d.wait_for(|x| *x).await;
        }
    }));
    if tokio::time::timeout(grace, all_done).await.is_err() {
        for p in &running {
            p.kill_tree();
        }
    }
}
