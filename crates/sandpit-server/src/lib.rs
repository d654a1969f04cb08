//! `sandpitd`, the sandpit daemon, as a library: the authenticated HTTP API users talk to, the sandbox
//! lifecycle behind it, its `SQLite` store and TTL timers, and the reverse proxy to each sandbox's agent.
//!
//! The binary (`sandpit serve`, in `sandpit-cli`) only parses flags and calls [`run`]; tests call [`run`]
//! or [`run_with_backend`] in-process on a port-0 listener and a temporary state directory.
//!
//! Module map: [`config`] (settings), [`store`] (`SQLite` records), [`backend`] (the isolation boundary and
//! the unisolated `process` backend), [`engine`] (state machine, timers, recovery), [`api`] (router,
//! errors, extractors, handlers, CORS), [`templates`] (template builds), [`proxy`] (bytes to and from the
//! agent), [`auth`], [`metrics`], [`openapi`].

pub mod api;
pub mod audit;
pub mod auth;
pub mod backend;
mod batch;
pub mod config;
pub mod conn;
pub mod console;
pub mod e2b;
pub mod engine;
pub mod events;
pub mod fast_files;
pub mod metrics;
pub mod network;
pub mod openapi;
pub mod pools;
pub mod preview;
pub mod proxy;
pub mod quotas;
pub mod signing;
pub mod store;
pub mod templates;
pub mod time;
mod tls;
pub mod tokens;
pub mod usage;
pub mod volumes;
pub mod webhooks;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub use auth::{ApiKey, KeySource};
pub use backend::{
    BackendError, BackendHandle, IsolateBackend, ProcessBackend, SandboxBackend, SandboxSpec,
    TemplateRecord, TemplateStore,
};
pub use config::{BackendKind, Config, ConfigError, DEFAULT_LISTEN, LogFormat};

/// Why the daemon could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot prepare the state directory {path}: {cause}")]
    StateDir {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("another sandpit daemon is using the state directory {0}")]
    Locked(PathBuf),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Network(String),
    #[error("server I/O: {0}")]
    Io(std::io::Error),
}

/// Runs the daemon with the backend the configuration names until `shutdown` completes.
///
/// On shutdown the listener stops accepting, requests in flight get `shutdown_grace_secs` to finish, and
/// sandboxes are left running: a restarted daemon picks them up again.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    config.validate()?;
    prepare_state_dir(&config.state_dir)?;
    // The lock comes first: a second daemon must not touch the backend's state (templates, id ranges).
    let lock = lock_state_dir(&config.state_dir)?;
    let backend = backend::from_config(&config)?;
    serve(
        config,
        backend,
        Arc::new(time::SystemClock),
        listener,
        shutdown,
        lock,
    )
    .await
}

/// [`run`] with a backend supplied by the caller (another isolation layer, or a test double).
pub async fn run_with_backend(
    config: Config,
    backend: Arc<dyn SandboxBackend>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    run_with_clock(
        config,
        backend,
        Arc::new(time::SystemClock),
        listener,
        shutdown,
    )
    .await
}

/// [`run_with_backend`] with the clock deadlines are read from (tests pass a [`time::ManualClock`]).
pub async fn run_with_clock(
    config: Config,
    backend: Arc<dyn SandboxBackend>,
    clock: Arc<dyn time::Clock>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    config.validate()?;
    prepare_state_dir(&config.state_dir)?;
    let lock = lock_state_dir(&config.state_dir)?;
    serve(config, backend, clock, listener, shutdown, lock).await
}

#[allow(clippy::too_many_lines)] // the daemon's start-up and shutdown, in order
async fn serve(
    config: Config,
    backend: Arc<dyn SandboxBackend>,
    clock: Arc<dyn time::Clock>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    _lock: nix::fcntl::Flock<std::fs::File>,
) -> Result<(), ServerError> {
    let state_dir = config.state_dir.clone();
    let store = store::Store::open(&state_dir.join("sandpit.db"))?;

    let (api_key, source) = ApiKey::load_or_create(&state_dir, config.api_key.as_deref())?;
    match &source {
        KeySource::Configured => tracing::info!("using the configured API key"),
        KeySource::File(p) => {
            tracing::info!(path = %p.display(), "using the API key stored in the state dir");
        }
        KeySource::Generated(p) => tracing::warn!(
            path = %p.display(),
            "generated a new API key; clients send it as `Authorization: Bearer <key>`"
        ),
    }
    if backend.name() == "process" {
        tracing::warn!(
            "backend `process`: sandboxes are NOT isolated; their processes run as this user on this host"
        );
    }

    let templates = Arc::new(templates::Templates::new(
        backend.clone(),
        &config.import_roots,
        state_dir.join("uploads"),
    ));
    templates.warm_base();
    let volumes = Arc::new(volumes::Volumes::new(backend.clone()));
    let engine = engine::Engine::new(
        store,
        backend,
        engine::EngineConfig {
            state_dir: state_dir.clone(),
            default_timeout_secs: config.default_timeout_secs,
            max_timeout_secs: config.max_timeout_secs,
            clock,
            health: engine::HealthSettings {
                interval: Duration::from_millis(config.health_interval_ms),
                timeout: Duration::from_millis(config.health_timeout_ms),
                grace: Duration::from_secs(config.unhealthy_grace_secs),
            },
        },
    );
    let net = network::SandboxNet::start(&config, engine.store())
        .await
        .map_err(ServerError::Network)?;
    if let Some(n) = &net {
        engine.set_network(n.clone());
    }
    engine.set_quotas(Arc::new(
        quotas::Quotas::load(engine.store().clone()).await?,
    ));
    // Lifecycle events (and the webhooks that deliver them) are recorded from the reconcile on. Their
    // writer stops after the last request, like the audit log's.
    let (events_stop, events_stop_rx) = watch::channel(false);
    let (events, events_task) = events::Events::start(
        engine.store().clone(),
        Duration::from_secs(config.events_retention_days.saturating_mul(86_400)),
        events_stop_rx.clone(),
    )
    .await?;
    let (webhooks, webhooks_task) = webhooks::Webhooks::start(
        engine.store().clone(),
        webhooks::WebhookConfig {
            max_attempts: u32::try_from(config.webhook_max_attempts).unwrap_or(u32::MAX),
            backoff: Duration::from_millis(config.webhook_backoff_ms),
            timeout: Duration::from_millis(config.webhook_timeout_ms),
        },
        &events,
        events_stop_rx,
    )
    .await?;
    engine.set_events(events.clone());
    engine.reconcile().await?;
    engine.sweep_fork_snapshots().await;
    let pool_defaults = config.pool_defaults()?;
    engine.pools.load(&engine, &pool_defaults).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let timers = tokio::spawn(engine.clone().run_timers(stop_rx.clone()));
    let health = tokio::spawn(engine.clone().run_health(stop_rx.clone()));
    let pools = tokio::spawn(pools::Pools::run(engine.clone(), stop_rx.clone()));
    let sampler = usage::Sampler::new(usage::SamplerConfig {
        interval: Duration::from_millis(config.metrics_interval_ms),
        window: Duration::from_secs(config.metrics_window_secs),
        max_series: usize::try_from(config.metrics_max_series).unwrap_or(usize::MAX),
    });
    let sampling = tokio::spawn(sampler.clone().run(engine.clone(), stop_rx.clone()));
    let net_services = net.as_ref().map(|n| n.spawn_services(stop_rx.clone()));
    let ports = Arc::new(tokens::PortAccess::load(engine.store().clone()).await?);
    let keys = Arc::new(auth::Keys::load(api_key, engine.store().clone()).await?);
    // The audit writer stops after the last request, not with the other services: calls finishing in
    // the shutdown grace are recorded too.
    let (audit_stop, audit_stop_rx) = watch::channel(false);
    let (audit, audit_task) = audit::Audit::start(
        engine.store().clone(),
        Duration::from_secs(config.audit_retention_days.saturating_mul(86_400)),
        audit_stop_rx,
    );
    let local = listener.local_addr().map_err(ServerError::Io)?;
    let preview = Arc::new(preview::Preview::new(
        engine.clone(),
        config.preview_domain.clone(),
        config.preview_strip_origin,
        config.tls_cert.is_some(),
        local.port(),
    ));
    let signer = Arc::new(signing::Signer::load_or_create(&state_dir)?);
    let state = api::AppState {
        engine,
        keys,
        audit,
        signer,
        metrics: Arc::new(metrics::Metrics::default()),
        templates,
        volumes,
        openapi: Arc::new(openapi::spec_json()),
        ports,
        preview,
        events,
        webhooks,
        sampler,
    };
    let cors = api::cors::Cors::new(&config.cors_origins)
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    if config.cors_origins.iter().any(|o| o.trim() == "*") {
        tracing::warn!(
            "CORS allows every origin (`*`): any web page a key holder visits may call this API; development only"
        );
    }
    let (app, e2b_root) = api::routers(state, config.max_body_bytes, cors);

    let graceful = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let limits = conn::ConnLimits {
        header_timeout: Duration::from_secs(config.header_timeout_secs),
        body_idle_timeout: Duration::from_secs(config.body_idle_timeout_secs),
    };
    // The peer address reaches handlers as `ConnectInfo<SocketAddr>` (preview URLs' `X-Forwarded-For`).
    let mut serve: Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> =
        if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
            let tls = tls::load_config(cert, key).map_err(ServerError::Tls)?;
            tracing::info!(addr = %local, "sandpit listening (https)");
            let listener = tls::TlsListener::new(listener, tls).map_err(ServerError::Io)?;
            Box::pin(conn::serve(listener, app, limits, graceful))
        } else {
            tracing::info!(addr = %local, "sandpit listening (http)");
            Box::pin(conn::serve(
                listener.tap_io(no_delay),
                app,
                limits,
                graceful,
            ))
        };

    // The E2B surface alone at the root of a second listener (plain HTTP), when asked for.
    let e2b_server = match config.e2b_listen {
        Some(addr) => {
            let l = TcpListener::bind(addr).await.map_err(ServerError::Io)?;
            tracing::info!(addr = %l.local_addr().map_err(ServerError::Io)?, "E2B surface listening (http)");
            let mut rx = stop_rx.clone();
            let graceful = async move {
                let _ = rx.wait_for(|stop| *stop).await;
            };
            Some(tokio::spawn(conn::serve(
                l.tap_io(no_delay),
                e2b_root,
                limits,
                graceful,
            )))
        }
        None => None,
    };
    let shutdown = std::pin::pin!(shutdown);
    let result = tokio::select! {
        r = &mut serve => r,
        () = shutdown => {
            tracing::info!("shutting down: no new connections; sandboxes keep running");
            let _ = stop_tx.send(true);
            let grace = Duration::from_secs(config.shutdown_grace_secs);
            if let Ok(r) = tokio::time::timeout(grace, &mut serve).await {
                r
            } else {
                tracing::warn!(?grace, "open requests (streams) did not finish in time; no longer waiting for them");
                Ok(())
            }
        }
    };
    let _ = stop_tx.send(true);
    if let Some(t) = e2b_server {
        let _ = t.await;
    }
    let _ = audit_stop.send(true);
    let _ = audit_task.await;
    let _ = events_stop.send(true);
    let _ = events_task.await;
    let _ = webhooks_task.await;
    let _ = sampling.await;
    let _ = timers.await;
    let _ = health.await;
    let _ = pools.await;
    if let Some(t) = net_services {
        let _ = t.await;
    }
    if let Some(n) = &net {
        n.shutdown();
    }
    result.map_err(ServerError::Io)
}

/// Turns Nagle's algorithm off on a client connection. Streams are many small writes (an SSE event,
/// a WebSocket frame); with Nagle on, each write after the first waits for the client's ACK, which a
/// client that only reads delays by up to 40 ms: every SSE event then arrived ~40 ms late (found by
/// the load test, `sandpit-bench load`).
pub(crate) fn no_delay(tcp: &mut TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

fn prepare_state_dir(dir: &Path) -> Result<(), ServerError> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |cause| ServerError::StateDir {
        path: dir.to_owned(),
        cause,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir.join("sandboxes"))
        .map_err(err)?;
    Ok(())
}

/// Holds an exclusive lock on `STATE_DIR/daemon.lock` for as long as the value lives. The kernel drops it
/// when the process dies, however it dies, so a daemon killed with `SIGKILL` never blocks its successor.
fn lock_state_dir(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, ServerError> {
    let path = dir.join("daemon.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|cause| ServerError::StateDir {
            path: path.clone(),
            cause,
        })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| ServerError::Locked(dir.to_owned()))
}
