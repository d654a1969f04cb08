//! The sandbox lifecycle: the one place that decides which state a sandbox moves to, calls the backend to
//! make it so, and writes the result to the store.
//!
//! Every lifecycle change is an [`Action`] checked by [`transition`] (firecracker style: an explicit table,
//! not ad-hoc `if`s), so an impossible request is a `Conflict` before anything is touched. Operations on one
//! sandbox are serialized by a per-sandbox async lock, and each runs in a task of its own so that a client
//! hanging up mid-request cannot leave a record half-written. The timer loop enforces deadlines (TTL) and
//! notices agents that died; [`Engine::reconcile`] brings the records in line with reality after a restart.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sandpit_types::network::{NetworkPolicy, ParsedPolicy};
use sandpit_types::observe::EventType;
use sandpit_types::sandbox::{
    CreateSandboxRequest, ForkInfo, ForkRequest, OnTimeout, SandboxInfo, SandboxState, SnapshotInfo,
};
use sandpit_types::tenants::TenantUsage;
use tokio::sync::{Notify, watch};

use crate::auth::SandboxToken;
use crate::backend::{BackendError, BackendHandle, SandboxBackend, SandboxSpec, SnapshotSpec};
use crate::store::{SandboxRecord, Store, StoreError};
use crate::time::rfc3339;

/// Everything that can happen to a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The backend reported the agent ready.
    Ready,
    /// The backend could not start the sandbox.
    StartFailed,
    Pause,
    Resume,
    /// The deadline passed with `on_timeout = kill`.
    Kill,
    /// The agent is gone without being asked (crash, host reboot).
    Lost,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Self::Ready => "start",
            Self::StartFailed => "fail",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Kill => "kill",
            Self::Lost => "lose",
        }
    }
}

/// The state machine. `None` means the action is impossible from that state.
pub fn transition(from: SandboxState, action: Action) -> Option<SandboxState> {
    use SandboxState as S;
    match (from, action) {
        (S::Starting, Action::Ready) | (S::Paused, Action::Resume) => Some(S::Running),
        (S::Starting, Action::StartFailed)
        | (S::Starting | S::Running | S::Paused, Action::Lost) => Some(S::Failed),
        (S::Running, Action::Pause) => Some(S::Paused),
        (S::Running | S::Paused, Action::Kill) => Some(S::Stopped),
        _ => None,
    }
}

/// What a cold create's blocking part ([`Engine::create_blocking`]) made.
enum Made {
    /// Running and recorded so, with its access token (none for a pooled sandbox).
    Ready(SandboxRecord, Option<SandboxToken>),
    /// The backend failed: the record (`starting`) and the network slot are still to be released.
    Failed(SandboxRecord, EngineError),
    /// The backend made it but recording it as running failed: it stays as the store has it.
    Unrecorded(EngineError),
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("sandbox {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InvalidArgument(String),
    /// The sandbox's agent is not reachable (it died, or the host rebooted).
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A tenant quota refused a create.
    #[error(transparent)]
    Quota(#[from] crate::quotas::QuotaError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Who owns a recorded sandbox and what it counts against its tenant's quotas.
#[derive(Debug, Clone)]
struct Owner {
    tenant: String,
    ask: crate::quotas::Ask,
}

impl Owner {
    fn of(rec: &SandboxRecord) -> Self {
        Self {
            tenant: rec.tenant.clone(),
            ask: crate::quotas::Ask {
                memory_mb: rec.memory_mb,
                disk_mb: rec.disk_mb,
            },
        }
    }
}

/// What `tenant` holds among `owners`.
fn usage_of(owners: &HashMap<String, Owner>, tenant: &str) -> TenantUsage {
    let mut u = TenantUsage::default();
    for o in owners.values().filter(|o| o.tenant == tenant) {
        u.sandboxes += 1;
        u.memory_mb += o.ask.memory_mb.unwrap_or(0);
        u.disk_mb += o.ask.disk();
    }
    u
}

/// The engine's share of the configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub state_dir: PathBuf,
    pub default_timeout_secs: u64,
    pub max_timeout_secs: u64,
    /// The clock deadlines are read from ([`crate::time::SystemClock`] but in tests).
    pub clock: Arc<dyn crate::time::Clock>,
    /// How agents are probed ([`Engine::run_health`]).
    pub health: HealthSettings,
}

/// How often every running sandbox's agent is asked `GET /health`, how long it has to answer, and how
/// long one that is not stopped may keep failing before its sandbox is `unhealthy` (config keys
/// `health_interval_ms`, `health_timeout_ms`, `unhealthy_grace_secs`).
#[derive(Debug, Clone, Copy)]
pub struct HealthSettings {
    pub interval: Duration,
    pub timeout: Duration,
    pub grace: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            interval: HEALTH_INTERVAL,
            timeout: HEALTH_TIMEOUT,
            grace: UNRESPONSIVE_GRACE,
        }
    }
}

/// `GET /v1/sandboxes` filters: a sandbox matches when its state is one of `states` (any, if empty) and it
/// carries every `metadata` pair.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub states: Vec<SandboxState>,
    pub metadata: Vec<(String, String)>,
    /// Only this tenant's sandboxes (a non-admin key); every tenant's when `None`.
    pub tenant: Option<String>,
}

/// How long to wait before trying again to enforce a deadline whose enforcement failed.
const EXPIRY_RETRY_MS: i64 = 30_000;

/// How often running sandboxes are checked for a dead agent when no deadline comes sooner.
const SWEEP_INTERVAL: Duration = Duration::from_secs(2);

/// The default of how often every running sandbox's agent is asked `GET /health` ([`Engine::run_health`]).
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// How long an agent has to answer that probe. One that does not and is stopped (SIGSTOP, a tracer) makes
/// its sandbox `unhealthy` at once.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an agent that is not stopped may keep failing the probe (a slow one on a host at full load)
/// before its sandbox is reported `unhealthy`.
pub const UNRESPONSIVE_GRACE: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub struct Engine {
    store: Store,
    backend: Arc<dyn SandboxBackend>,
    cfg: EngineConfig,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Poked whenever a deadline changes, so the timer loop re-reads the next one.
    wake: Notify,
    /// Agent sockets of the `running` sandboxes, so that a proxied call (the hot path) needs neither the
    /// per-sandbox lock nor the store. Kept in step by [`Engine::save`]; an entry is removed *before* a
    /// pause or destroy starts, so a call never picks up a sandbox that is going away.
    live: std::sync::RwLock<HashMap<String, PathBuf>>,
    /// The tenant of every recorded sandbox, for the per-request tenant check ([`Engine::tenant_of`]):
    /// filled at create and at start, emptied when a record is forgotten.
    owners: std::sync::RwLock<HashMap<String, Owner>>,
    /// Tenant quotas, checked under the `owners` lock at create ([`Engine::set_quotas`]).
    quotas: std::sync::OnceLock<Arc<crate::quotas::Quotas>>,
    /// Sandbox networking, when the daemon runs with it.
    net: std::sync::OnceLock<Arc<crate::network::SandboxNet>>,
    /// Running sandboxes whose agent failed its last health probe ([`Engine::run_health`]), with why.
    /// Reported as `unhealthy`; calls to them fail fast; cleared when the agent answers again.
    unhealthy: std::sync::RwLock<HashMap<String, String>>,
    /// Bumped whenever a sandbox turns unhealthy, so that calls in flight to it end ([`Engine::until_unhealthy`]).
    health_events: watch::Sender<u64>,
    /// Warm pools: sandboxes created ahead per template ([`crate::pools`]).
    pub(crate) pools: crate::pools::Pools,
    /// Where lifecycle events go ([`Engine::set_events`]).
    events: std::sync::OnceLock<Arc<crate::events::Events>>,
    /// The daemon's connections to agents, pooled per agent: proxied calls, health probes and the
    /// daemon's own calls (a pooled sandbox's environment) all go through it ([`Engine::agents`]).
    agents: crate::proxy::AgentConns,
    /// Backend creates in flight at once (one per core): a burst is served first come, first served
    /// instead of every create sharing the cores until all finish together (see `create_cold`).
    creates: tokio::sync::Semaphore,
}

impl Engine {
    /// The pooled connections to agents (see the field).
    pub fn agents(&self) -> &crate::proxy::AgentConns {
        &self.agents
    }

    pub fn new(store: Store, backend: Arc<dyn SandboxBackend>, cfg: EngineConfig) -> Arc<Self> {
        Arc::new(Self {
            store,
            backend,
            cfg,
            locks: Mutex::new(HashMap::new()),
            agents: crate::proxy::AgentConns::new(),
            wake: Notify::new(),
            live: std::sync::RwLock::new(HashMap::new()),
            owners: std::sync::RwLock::new(HashMap::new()),
            quotas: std::sync::OnceLock::new(),
            net: std::sync::OnceLock::new(),
            unhealthy: std::sync::RwLock::new(HashMap::new()),
            health_events: watch::channel(0).0,
            pools: crate::pools::Pools::default(),
            events: std::sync::OnceLock::new(),
            creates: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            ),
        })
    }

    /// Records lifecycle events from now on (once, at start).
    pub fn set_events(&self, events: Arc<crate::events::Events>) {
        let _ = self.events.set(events);
    }

    /// Records that `kind` happened to a sandbox; pooled sandboxes (nobody's yet) have no events.
    fn emit(&self, kind: EventType, rec: &SandboxRecord, data: serde_json::Value) {
        if rec.pool.is_some() {
            return;
        }
        if let Some(ev) = self.events.get() {
            ev.emit(kind, &rec.id, &rec.tenant, data);
        }
    }

    /// Running sandboxes to sample ([`crate::usage`]): id, backend handle, cpu limit, disk cap in MiB.
    /// Pooled sandboxes (nobody's yet) are left out.
    pub async fn sampled(&self) -> Vec<(String, BackendHandle, Option<f64>, Option<u64>)> {
        self.store
            .list()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.state == SandboxState::Running && r.pool.is_none())
            .filter_map(|r| Some((r.id, r.handle?, r.cpu, r.disk_mb)))
            .collect()
    }

    /// What a sandbox uses now (blocking: reads `/proc` and cgroup files).
    pub fn usage_of(&self, handle: &BackendHandle) -> Option<sandpit_isolate::usage::Usage> {
        self.backend.usage(handle)
    }

    /// Turns networking on for sandboxes created from now on (once, at start).
    pub fn set_network(&self, net: Arc<crate::network::SandboxNet>) {
        let _ = self.net.set(net);
    }

    /// Turns tenant quotas on (once, at start).
    pub fn set_quotas(&self, quotas: Arc<crate::quotas::Quotas>) {
        let _ = self.quotas.set(quotas);
    }

    /// The tenant quotas, when they are on.
    pub fn quotas(&self) -> Option<&Arc<crate::quotas::Quotas>> {
        self.quotas.get()
    }

    /// What `tenant` holds now, counted the way quotas count it.
    pub fn tenant_usage(&self, tenant: &str) -> TenantUsage {
        usage_of(
            &self
                .owners
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            tenant,
        )
    }

    /// Every tenant that holds a sandbox.
    pub fn tenants(&self) -> Vec<String> {
        let owners = self
            .owners
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut t: Vec<String> = owners.values().map(|o| o.tenant.clone()).collect();
        t.sort();
        t.dedup();
        t
    }

    /// The daemon's sandbox network, if it has one.
    pub fn network(&self) -> Option<&Arc<crate::network::SandboxNet>> {
        self.net.get()
    }

    /// Releases a sandbox's network slot after its namespace is gone.
    async fn release_network(&self, id: &str) {
        if let Some(n) = self.net.get() {
            n.release(id).await;
        } else if let Err(e) = self.store.network_forget(id).await {
            tracing::warn!(sandbox = %id, error = %e, "cannot forget a sandbox's port records");
        }
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        locks.entry(id.to_owned()).or_default().clone()
    }

    /// Persists a record and updates the running-sandbox cache to match.
    async fn save(&self, rec: &SandboxRecord) -> Result<(), EngineError> {
        self.store.update(rec.clone()).await?;
        self.note(rec);
        Ok(())
    }

    fn note(&self, rec: &SandboxRecord) {
        let mut live = self
            .live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (&rec.handle, rec.state) {
            (Some(h), SandboxState::Running) => {
                live.insert(rec.id.clone(), h.agent_socket.clone());
            }
            _ => {
                live.remove(&rec.id);
            }
        }
    }

    /// Opens the daemon's pooled connection to a new sandbox's agent in the background (a health
    /// check) while the create's answer is on its way, so that the creator's first call finds it open
    /// instead of paying connect, accept and a first request on a new connection (docs/benchmarks.md,
    /// "Cold creates, round 2"). A failure here costs nothing: that call then connects itself.
    fn warm_agent_connection(&self, rec: &SandboxRecord) {
        let Some(h) = &rec.handle else { return };
        let (agents, socket) = (self.agents.clone(), h.agent_socket.clone());
        let timeout = self.cfg.health.timeout;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(timeout, agents.health(&socket)).await;
        });
    }

    /// The agent socket of sandbox `id` if it is running (see `live`).
    fn live_socket(&self, id: &str) -> Option<PathBuf> {
        self.live
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn unlist(&self, id: &str) {
        let mut live = self
            .live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        live.remove(id);
    }

    /// Every recorded sandbox's id (the E2B surface looks for the sandbox a signed URL belongs to).
    pub fn sandbox_ids(&self) -> Vec<String> {
        self.owners
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// The tenant sandbox `id` belongs to, if it is recorded. O(1), no store access: checked on every
    /// request a non-admin key makes to a sandbox.
    pub fn tenant_of(&self, id: &str) -> Option<String> {
        self.owners
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .map(|o| o.tenant.clone())
    }

    /// Records a sandbox's owner (at start-up: what the store holds, quotas or not).
    fn own(&self, id: &str, owner: Owner) {
        self.owners
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_owned(), owner);
    }

    /// Records a new sandbox's owner if the tenant's quotas leave room for it: the check and the record
    /// under one lock, so that racing creates cannot both take the last slot.
    fn admit(&self, id: &str, owner: Owner) -> Result<(), EngineError> {
        let mut owners = self
            .owners
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(q) = self.quotas.get() {
            q.admit(&owner.tenant, &usage_of(&owners, &owner.tenant), owner.ask)?;
        }
        owners.insert(id.to_owned(), owner);
        Ok(())
    }

    /// Forgets a sandbox whose record is gone: its lock and its owner.
    fn forget_record(&self, id: &str) {
        self.owners
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        locks.remove(id);
    }

    /// Runs `f` to completion in its own task, even if the caller's future is dropped.
    async fn detached<T, F>(f: F) -> Result<T, EngineError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, EngineError>> + Send + 'static,
    {
        tokio::spawn(f)
            .await
            .map_err(|e| EngineError::Internal(format!("lifecycle task failed: {e}")))?
    }

    async fn on_backend<T, F>(&self, f: F) -> Result<T, EngineError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn SandboxBackend) -> Result<T, BackendError> + Send + 'static,
    {
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || f(backend.as_ref()))
            .await
            .map_err(|e| EngineError::Internal(format!("backend task failed: {e}")))?
            .map_err(EngineError::Backend)
    }

    async fn load(&self, id: &str) -> Result<SandboxRecord, EngineError> {
        self.store
            .get(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(id.to_owned()))
    }

    fn apply(rec: &mut SandboxRecord, action: Action) -> Result<(), EngineError> {
        let next = transition(rec.state, action).ok_or_else(|| {
            EngineError::Conflict(format!(
                "cannot {} sandbox {}: it is {}",
                action.verb(),
                rec.id,
                rec.state.as_str()
            ))
        })?;
        rec.state = next;
        Ok(())
    }

    fn check_timeout(&self, secs: u64) -> Result<u64, EngineError> {
        if secs == 0 || secs > self.cfg.max_timeout_secs {
            return Err(EngineError::InvalidArgument(format!(
                "timeout must be between 1 and {} seconds",
                self.cfg.max_timeout_secs
            )));
        }
        Ok(secs)
    }

    /// Creates a sandbox owned by `tenant`: from the template's warm pool when it has a sandbox waiting
    /// and the request is one a pooled sandbox can serve ([`crate::pools::servable`]), else cold. The
    /// sandbox's new access token is in `access_token`, already stored with the sandbox: the caller makes
    /// it live with [`crate::auth::Keys::adopt_sandbox_token`].
    pub async fn create(
        self: &Arc<Self>,
        req: CreateSandboxRequest,
        tenant: &str,
    ) -> Result<SandboxInfo, EngineError> {
        validate_create(&req)?;
        if crate::pools::servable(&req) {
            if let Some(info) = self.claim(&req, tenant).await? {
                return Ok(info);
            }
        }
        self.create_cold(req, tenant, None).await
    }

    /// Takes a waiting sandbox from the warm pool of the request's template, if one is there and healthy,
    /// and makes it the request's: its tenant (quotas checked now), environment, metadata and deadline.
    /// `None`: the pool is empty (the caller creates cold). A pooled sandbox that fails its claim is
    /// deleted and the next one tried.
    async fn claim(
        self: &Arc<Self>,
        req: &CreateSandboxRequest,
        tenant: &str,
    ) -> Result<Option<SandboxInfo>, EngineError> {
        let template = req.template.clone().unwrap_or_else(|| "base".into());
        let timeout_secs =
            self.check_timeout(req.timeout.unwrap_or(self.cfg.default_timeout_secs))?;
        while let Some(id) = self.pools.take(&template) {
            let (this, req, tenant) = (self.clone(), req.clone(), tenant.to_owned());
            let (id2, template) = (id.clone(), template.clone());
            let claimed = Self::detached(async move {
                let lock = this.lock_for(&id2);
                let _guard = lock.lock().await;
                // Running (it has an agent socket in `live`) and answering its probes; that it still
                // waits in this pool is checked by the store's claim, in its one transaction.
                let Some(socket) = this.live_socket(&id2) else {
                    return Ok(None);
                };
                if this.unhealthy_reason(&id2).is_some() {
                    return Ok(None);
                }
                let owner = Owner {
                    tenant: tenant.clone(),
                    ask: crate::quotas::Ask {
                        memory_mb: None,
                        disk_mb: None,
                    },
                };
                // A quota refusal leaves the sandbox in the pool for the next create.
                if let Err(e) = this.admit(&id2, owner) {
                    this.pools.put_back(&template, id2.clone());
                    return Err(e);
                }
                if !req.env.is_empty() {
                    let set = tokio::time::timeout(
                        Duration::from_secs(5),
                        this.agents.put_env(&socket, &req.env),
                    )
                    .await;
                    if !matches!(set, Ok(Ok(()))) {
                        this.forget_owner(&id2);
                        return Ok(None);
                    }
                }
                let claim = crate::store::Claim {
                    tenant,
                    env: req.env,
                    metadata: req.metadata,
                    on_timeout: req.on_timeout.unwrap_or_default(),
                    timeout_secs,
                    created_at_ms: this.now_ms(),
                    expires_at_ms: this.deadline(timeout_secs),
                };
                let token = SandboxToken::mint(&id2);
                let rec = match this
                    .store
                    .claim(&id2, &template, claim, token.stored_hash())
                    .await
                {
                    Ok(Some(rec)) => rec,
                    Ok(None) => {
                        this.forget_owner(&id2);
                        return Ok(None);
                    }
                    Err(e) => {
                        this.forget_owner(&id2);
                        return Err(e.into());
                    }
                };
                this.note(&rec);
                this.wake.notify_one();
                this.emit(
                    EventType::Created,
                    &rec,
                    serde_json::json!({"template": rec.template, "pooled": true}),
                );
                tracing::info!(sandbox = %rec.id, template = %template, "sandbox taken from the warm pool");
                Ok(Some(SandboxInfo {
                    access_token: Some(token.token),
                    ..info(&rec)
                }))
            })
            .await?;
            if let Some(info) = claimed {
                self.pools.claimed();
                return Ok(Some(info));
            }
            self.pools.refill();
            tracing::warn!(sandbox = %id, "a pooled sandbox could not be claimed; deleting it");
            let _ = self.delete(&id).await;
        }
        self.pools.refill();
        Ok(None)
    }

    /// Forgets an owner recorded by a claim that then failed.
    fn forget_owner(&self, id: &str) {
        self.owners
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }

    /// Creates a sandbox cold. With `pool`, a sandbox for that template's warm pool: nobody's (no tenant,
    /// no quota), no deadline and no access token, listed nowhere until claimed.
    pub(crate) async fn create_cold(
        self: &Arc<Self>,
        req: CreateSandboxRequest,
        tenant: &str,
        pool: Option<String>,
    ) -> Result<SandboxInfo, EngineError> {
        let timeout_secs =
            self.check_timeout(req.timeout.unwrap_or(self.cfg.default_timeout_secs))?;
        let network = match self.net.get() {
            Some(n) => Some(n.check(req.network.as_ref())?),
            None if req.network.is_some() => {
                return Err(EngineError::InvalidArgument(
                    "this daemon runs without sandbox networking (`--network off`, or the `process` \
                     backend): `network` cannot be set"
                        .into(),
                ));
            }
            None => None,
        };
        let id = crate::auth::random_hex(8);
        let dir = self.cfg.state_dir.join("sandboxes").join(&id);
        let rec = SandboxRecord {
            id: id.clone(),
            state: SandboxState::Starting,
            template: req.template.unwrap_or_else(|| "base".into()),
            cpu: req.cpu,
            memory_mb: req.memory_mb,
            pids: req.pids,
            disk_mb: req.disk_mb,
            env: req.env,
            metadata: req.metadata,
            on_timeout: req.on_timeout.unwrap_or_default(),
            timeout_secs,
            created_at_ms: self.now_ms(),
            expires_at_ms: None,
            error: None,
            handle: None,
            tenant: tenant.to_owned(),
            volumes: req.volumes,
            pool: pool.clone(),
        };
        if pool.is_none() {
            self.admit(&id, Owner::of(&rec))?;
        }
        let spec = SandboxSpec {
            id: id.clone(),
            template: rec.template.clone(),
            cpu: rec.cpu,
            memory_mb: rec.memory_mb,
            pids: rec.pids,
            disk_mb: rec.disk_mb,
            env: rec.env.clone(),
            dir: dir.clone(),
            network: None,
            volumes: rec.volumes.clone(),
        };
        let this = self.clone();
        Self::detached(async move {
            let lock = this.lock_for(&id);
            let _guard = lock.lock().await;
            // A create is CPU work (clone, mounts, the agent's start) on every core at once: with a
            // hundred in flight they all shared the cores and all finished at the end of the burst
            // (median = slowest). One per core, in arrival order (tokio's semaphore is fair), the
            // first ones are ready while the rest wait, and the burst as a whole takes no longer.
            let made = {
                let _slot = this.creates.acquire().await;
                let work = this.clone();
                tokio::task::spawn_blocking(move || work.create_blocking(rec, spec, network))
                    .await
                    .map_err(|e| EngineError::Internal(format!("create task failed: {e}")))?
            };
            match made {
                Err(e) => {
                    // Nothing was made, and the store forgot what it had been told.
                    this.remove_dir(&id);
                    this.forget_record(&id);
                    Err(e)
                }
                Ok(Made::Ready(rec, token)) => {
                    this.note(&rec);
                    if token.is_some() {
                        this.warm_agent_connection(&rec);
                    }
                    this.after_create(&rec);
                    this.wake.notify_one();
                    this.emit(
                        EventType::Created,
                        &rec,
                        serde_json::json!({"template": rec.template, "pooled": false}),
                    );
                    tracing::info!(sandbox = %rec.id, backend = this.backend.name(), "sandbox started");
                    Ok(SandboxInfo {
                        access_token: token.map(|t| t.token),
                        ..info(&rec)
                    })
                }
                Ok(Made::Unrecorded(err)) => Err(err),
                Ok(Made::Failed(mut rec, err)) => {
                    // The caller gets the error and never learns the id, so a `failed` record would only
                    // be clutter nobody can name: forget it (the backend cleans up its own half-made
                    // sandbox). Should forgetting fail too (a full disk), the record stays `failed`.
                    tracing::warn!(sandbox = %rec.id, error = %err, "sandbox failed to start");
                    this.release_network(&rec.id).await;
                    Self::apply(&mut rec, Action::StartFailed)?;
                    rec.error = Some(err.to_string());
                    if let Err(e) = this.store.delete(&rec.id).await {
                        tracing::error!(sandbox = %rec.id, error = %e, "cannot forget a failed create");
                        let _ = this.save(&rec).await;
                    }
                    this.remove_dir(&rec.id);
                    this.forget_record(&rec.id);
                    Err(err)
                }
            }
        })
        .await
    }

    /// The backend's work left for after a create's answer ([`SandboxBackend::created`]), in the
    /// background, once the create has let go of the sandbox's lock.
    fn after_create(self: &Arc<Self>, rec: &SandboxRecord) {
        let Some(handle) = rec.handle.clone() else {
            return;
        };
        let (this, id) = (self.clone(), rec.id.clone());
        tokio::spawn(async move {
            let lock = this.lock_for(&id);
            let _guard = lock.lock().await;
            let _ = this
                .on_backend(move |b| {
                    b.created(&handle);
                    Ok(())
                })
                .await;
        });
    }

    /// A cold create's blocking part, in one trip to the blocking pool (each trip is a thread
    /// wake-up, tens of microseconds on a VM's idle vCPU): the record (`starting`), the network
    /// slot, the backend's create and, once it runs, the record as running with its access token.
    /// `Err`: nothing was made and the store holds nothing of it; otherwise what [`Made`] says.
    fn create_blocking(
        &self,
        mut rec: SandboxRecord,
        mut spec: SandboxSpec,
        network: Option<(NetworkPolicy, Option<ParsedPolicy>)>,
    ) -> Result<Made, EngineError> {
        self.store
            .blocking(|c| crate::store::insert_record(c, &rec))?;
        if let (Some(net), Some((policy, parsed))) = (self.net.get(), network) {
            match net.attach_blocking(&rec.id, policy, parsed.as_ref()) {
                Ok(att) => spec.network = Some(att),
                Err(e) => {
                    let _ = self
                        .store
                        .blocking(|c| crate::store::delete_record(c, &rec.id));
                    return Err(e);
                }
            }
        }
        let handle = match self.backend.create(&spec) {
            Ok(handle) => handle,
            Err(err) => return Ok(Made::Failed(rec, EngineError::Backend(err))),
        };
        if let Err(e) = Self::apply(&mut rec, Action::Ready) {
            return Ok(Made::Unrecorded(e));
        }
        rec.handle = Some(handle);
        // A pooled sandbox waits without a deadline: its time starts when it is claimed, and so
        // does its access token. Anyone else's gets its token in the same write.
        let token = rec.pool.is_none().then(|| SandboxToken::mint(&rec.id));
        let recorded = match &token {
            Some(t) => {
                rec.expires_at_ms = Some(self.deadline(rec.timeout_secs));
                self.store
                    .blocking(|c| crate::store::update_with_token(c, &rec, &t.stored_hash()))
            }
            None => self
                .store
                .blocking(|c| crate::store::update_record(c, &rec)),
        };
        if let Err(e) = recorded {
            return Ok(Made::Unrecorded(e.into()));
        }
        Ok(Made::Ready(rec, token))
    }

    /// The sandbox as recorded, except that a live-looking sandbox whose agent has died is marked
    /// `failed` first (checking costs a read of `/proc`), so nobody is told "running" about a corpse.
    pub async fn get(&self, id: &str) -> Result<SandboxInfo, EngineError> {
        self.get_inner(id).await.map(|i| self.with_health(i))
    }

    async fn get_inner(&self, id: &str) -> Result<SandboxInfo, EngineError> {
        let rec = self.load(id).await?;
        let Some(handle) = rec.handle.clone() else {
            return Ok(info(&rec));
        };
        if !matches!(rec.state, SandboxState::Running | SandboxState::Paused)
            || self
                .on_backend(move |b| Ok(b.is_alive(&handle)))
                .await
                .unwrap_or(true)
        {
            return Ok(info(&rec));
        }
        let lock = self.lock_for(id);
        let _guard = lock.lock().await;
        let mut rec = self.load(id).await?;
        if matches!(rec.state, SandboxState::Running | SandboxState::Paused) {
            self.mark_lost_if_dead(&mut rec).await;
        }
        Ok(info(&rec))
    }

    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<SandboxInfo>, EngineError> {
        Ok(self
            .store
            .list()
            .await?
            .iter()
            .filter(|r| r.pool.is_none())
            .filter(|r| filter.tenant.as_ref().is_none_or(|t| *t == r.tenant))
            .filter(|r| {
                filter
                    .metadata
                    .iter()
                    .all(|(k, v)| r.metadata.get(k) == Some(v))
            })
            .map(|r| self.with_health(info(r)))
            .filter(|i| filter.states.is_empty() || filter.states.contains(&i.state))
            .collect())
    }

    /// A `running` sandbox whose agent failed its health probe is reported `unhealthy`, with why.
    fn with_health(&self, mut i: SandboxInfo) -> SandboxInfo {
        if i.state == SandboxState::Running {
            if let Some(why) = self.unhealthy_reason(&i.id) {
                i.state = SandboxState::Unhealthy;
                i.error = Some(why);
            }
        }
        i
    }

    fn unhealthy_reason(&self, id: &str) -> Option<String> {
        self.unhealthy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Resolves, with the reason, once sandbox `id` is found unhealthy: what a proxied call or stream
    /// waits on beside the agent, so that it ends instead of hanging on a wedged agent.
    pub async fn until_unhealthy(self: Arc<Self>, id: String) -> String {
        let mut rx = self.health_events.subscribe();
        loop {
            if let Some(why) = self.unhealthy_reason(&id) {
                return why;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Probes every running sandbox's agent (`GET /health`, within [`HealthSettings::timeout`]) every
    /// [`HealthSettings::interval`] until `shutdown`; marks the ones that do not answer `unhealthy` and clears
    /// the ones that answer again. A stopped (`SIGSTOP`), ptrace-stopped or deadlocked agent is thus
    /// found within `interval + timeout`.
    pub async fn run_health(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        // Since when each sandbox's agent has failed every probe.
        let mut failing_since: HashMap<String, tokio::time::Instant> = HashMap::new();
        let health = self.cfg.health;
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.cfg.health.interval) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let live: Vec<(String, PathBuf)> = self
                .live
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            // Over the pooled connections (`proxy::AgentConns::health`): one per agent, kept between
            // probes.
            let probes = live.into_iter().map(|(id, socket)| {
                let this = &self;
                async move {
                    let probe = this.agents.health(&socket);
                    let failure = match tokio::time::timeout(health.timeout, probe).await {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(format!("its agent does not answer: {e}")),
                        Err(_) => Some(format!(
                            "its agent did not answer a health check within {} ms",
                            health.timeout.as_millis()
                        )),
                    };
                    (id, failure)
                }
            });
            let results = futures_util::future::join_all(probes.collect::<Vec<_>>()).await;
            let now = tokio::time::Instant::now();
            let failing: Vec<String> = results
                .iter()
                .filter(|(_, f)| f.is_some())
                .map(|(id, _)| id.clone())
                .collect();
            failing_since.retain(|id, _| failing.contains(id));
            // A stopped agent (SIGSTOP, a tracer) is wedged at once; one that is only slow (a host at full
            // load answered 100 sandboxes' probes late in the load test) gets UNRESPONSIVE_GRACE first.
            let stopped = if failing.is_empty() {
                Vec::new()
            } else {
                let handles: Vec<(String, BackendHandle)> = self
                    .store
                    .list()
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|r| failing.contains(&r.id))
                    .filter_map(|r| Some((r.id, r.handle?)))
                    .collect();
                self.on_backend(move |b| {
                    Ok(handles
                        .into_iter()
                        .filter(|(_, h)| b.is_stopped(h))
                        .map(|(id, _)| id)
                        .collect::<Vec<_>>())
                })
                .await
                .unwrap_or_default()
            };
            let mut turned = false;
            {
                let mut map = self
                    .unhealthy
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let still_live = self
                    .live
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (id, failure) in results {
                    let verdict = failure.and_then(|why| {
                        let since = *failing_since.entry(id.clone()).or_insert(now);
                        if stopped.contains(&id) {
                            Some(format!(
                                "{why}; the agent process is stopped (SIGSTOP or a tracer)"
                            ))
                        } else if now.duration_since(since) >= self.cfg.health.grace {
                            Some(format!(
                                "{why}; no answer for {} s",
                                now.duration_since(since).as_secs()
                            ))
                        } else {
                            None
                        }
                    });
                    match verdict {
                        Some(why) if still_live.contains_key(&id) => {
                            if map.insert(id.clone(), why.clone()).is_none() {
                                tracing::warn!(sandbox = %id, reason = %why, "sandbox unhealthy");
                                turned = true;
                                if let (Some(ev), Some(tenant)) =
                                    (self.events.get(), self.tenant_of(&id))
                                {
                                    ev.emit(
                                        EventType::Unhealthy,
                                        &id,
                                        &tenant,
                                        serde_json::json!({"error": why}),
                                    );
                                }
                            }
                        }
                        // Still within its grace: whatever it was reported before stands.
                        None if failing_since.contains_key(&id) => {}
                        _ => {
                            if map.remove(&id).is_some() {
                                tracing::info!(sandbox = %id, "sandbox healthy again");
                            }
                        }
                    }
                }
                // Gone from `live` (paused, deleted): nothing to report.
                map.retain(|id, _| still_live.contains_key(id));
            }
            if turned {
                self.health_events.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    pub async fn pause(self: &Arc<Self>, id: &str) -> Result<SandboxInfo, EngineError> {
        let (this, id) = (self.clone(), id.to_owned());
        Self::detached(async move {
            let lock = this.lock_for(&id);
            let _guard = lock.lock().await;
            let mut rec = this.load(&id).await?;
            this.pause_locked(&mut rec, "api").await?;
            Ok(info(&rec))
        })
        .await
    }

    /// Pauses; `reason` (`api`, `timeout`) goes into the `sandbox.paused` event.
    async fn pause_locked(&self, rec: &mut SandboxRecord, reason: &str) -> Result<(), EngineError> {
        let before = rec.state;
        Self::apply(rec, Action::Pause)?;
        let handle = rec.handle.clone().ok_or_else(|| no_handle(rec))?;
        self.unlist(&rec.id);
        if let Err(err) = self.on_backend(move |b| b.pause(&handle)).await {
            rec.state = before;
            let err = self.after_backend_error(rec, err).await;
            self.note(rec);
            return Err(err);
        }
        rec.expires_at_ms = None;
        self.save(rec).await?;
        self.wake.notify_one();
        self.emit(
            EventType::Paused,
            rec,
            serde_json::json!({"reason": reason}),
        );
        tracing::info!(sandbox = %rec.id, "sandbox paused");
        Ok(())
    }

    pub async fn resume(self: &Arc<Self>, id: &str) -> Result<SandboxInfo, EngineError> {
        let (this, id) = (self.clone(), id.to_owned());
        Self::detached(async move {
            let lock = this.lock_for(&id);
            let _guard = lock.lock().await;
            let mut rec = this.load(&id).await?;
            this.resume_locked(&mut rec, "api").await?;
            Ok(info(&rec))
        })
        .await
    }

    /// Resumes; `reason` (`api`, `auto`: a call reached the paused sandbox) goes into the
    /// `sandbox.resumed` event.
    async fn resume_locked(
        &self,
        rec: &mut SandboxRecord,
        reason: &str,
    ) -> Result<(), EngineError> {
        let before = rec.state;
        Self::apply(rec, Action::Resume)?;
        let handle = rec.handle.clone().ok_or_else(|| no_handle(rec))?;
        if let Err(err) = self.on_backend(move |b| b.resume(&handle)).await {
            rec.state = before;
            return Err(self.after_backend_error(rec, err).await);
        }
        rec.expires_at_ms = Some(self.deadline(rec.timeout_secs));
        self.save(rec).await?;
        self.wake.notify_one();
        self.emit(
            EventType::Resumed,
            rec,
            serde_json::json!({"reason": reason}),
        );
        tracing::info!(sandbox = %rec.id, "sandbox resumed");
        Ok(())
    }

    /// A backend call failed: if the agent is in fact gone, record the loss (and say so); otherwise pass
    /// the error on and leave the record as it was.
    async fn after_backend_error(&self, rec: &mut SandboxRecord, err: EngineError) -> EngineError {
        if self.mark_lost_if_dead(rec).await {
            EngineError::Unavailable(format!(
                "sandbox {} is gone: {}",
                rec.id,
                rec.error.as_deref().unwrap_or("its agent exited")
            ))
        } else {
            err
        }
    }

    /// Checks the agent; when it is dead, moves the record to `failed`. Returns whether it was dead.
    async fn mark_lost_if_dead(&self, rec: &mut SandboxRecord) -> bool {
        let alive = match rec.handle.clone() {
            Some(h) => self
                .on_backend(move |b| Ok(b.is_alive(&h)))
                .await
                .unwrap_or(true),
            None => false,
        };
        if alive || Self::apply(rec, Action::Lost).is_err() {
            return false;
        }
        rec.error = Some(
            "the sandbox's agent is gone (it crashed, was killed, or the host rebooted); its processes \
             and their output were lost"
                .into(),
        );
        rec.expires_at_ms = None;
        if let Err(e) = self.save(rec).await {
            tracing::error!(sandbox = %rec.id, error = %e, "cannot record a lost sandbox");
        }
        tracing::warn!(sandbox = %rec.id, "sandbox agent is gone; marked failed");
        self.emit(
            EventType::Failed,
            rec,
            serde_json::json!({"error": rec.error.clone().unwrap_or_default()}),
        );
        // What is left of it (processes the agent's death did not take, cgroups, its directory, its id
        // range) is released now, not when somebody deletes the record: a crashed sandbox must not hold
        // host resources. The record keeps the handle; deleting it later destroys again, idempotently.
        if let Some(h) = rec.handle.clone() {
            if let Err(e) = self.on_backend(move |b| b.destroy(&h)).await {
                tracing::error!(sandbox = %rec.id, error = %e, "cannot release a lost sandbox");
            }
        }
        self.release_network(&rec.id).await;
        true
    }

    /// E2B-style connect: a paused sandbox is resumed, a running one is returned as is.
    pub async fn connect(self: &Arc<Self>, id: &str) -> Result<SandboxInfo, EngineError> {
        let (this, id) = (self.clone(), id.to_owned());
        Self::detached(async move {
            let lock = this.lock_for(&id);
            let _guard = lock.lock().await;
            let mut rec = this.load(&id).await?;
            if rec.state != SandboxState::Running {
                this.resume_locked(&mut rec, "api").await?;
            }
            Ok(info(&rec))
        })
        .await
    }

    /// Moves the deadline to `secs` from now. On a paused sandbox the new time to live applies from its
    /// next resume.
    pub async fn set_timeout(
        self: &Arc<Self>,
        id: &str,
        secs: u64,
    ) -> Result<SandboxInfo, EngineError> {
        let secs = self.check_timeout(secs)?;
        let (this, id) = (self.clone(), id.to_owned());
        Self::detached(async move {
            let lock = this.lock_for(&id);
            let _guard = lock.lock().await;
            let mut rec = this.load(&id).await?;
            match rec.state {
                SandboxState::Running => rec.expires_at_ms = Some(this.deadline(secs)),
                SandboxState::Paused => {}
                other => {
                    return Err(EngineError::Conflict(format!(
                        "cannot set the timeout of sandbox {id}: it is {}",
                        other.as_str()
                    )));
                }
            }
            rec.timeout_secs = secs;
            this.save(&rec).await?;
            this.wake.notify_one();
            this.emit(
                EventType::TimeoutExtended,
                &rec,
                serde_json::json!({
                    "timeout_s": secs,
                    "expires_at": rec.expires_at_ms.map(crate::time::rfc3339),
                }),
            );
            Ok(info(&rec))
        })
        .await
    }

    /// Makes template `name` from sandbox `id`'s filesystem as it is now ([`SandboxBackend::snapshot`]):
    /// a running sandbox is frozen for the last, short pass; a paused one stays paused. The template
    /// belongs to the sandbox's tenant.
    pub async fn snapshot(
        self: &Arc<Self>,
        id: &str,
        name: &str,
        auto_remove: bool,
    ) -> Result<SnapshotInfo, EngineError> {
        let (this, id, name) = (self.clone(), id.to_owned(), name.to_owned());
        Self::detached(async move {
            let lock = this.lock_for(&id);
            let _guard = lock.lock().await;
            let mut rec = this.load(&id).await?;
            let freeze = match rec.state {
                SandboxState::Running => true,
                SandboxState::Paused => false,
                other => {
                    return Err(EngineError::Conflict(format!(
                        "cannot snapshot sandbox {id}: it is {}",
                        other.as_str()
                    )));
                }
            };
            let handle = rec.handle.clone().ok_or_else(|| no_handle(&rec))?;
            let spec = SnapshotSpec {
                name,
                sandbox: id.clone(),
                tenant: Some(rec.tenant.clone()),
                auto_remove,
            };
            let out = match this
                .on_backend(move |b| b.snapshot(&handle, &spec, freeze))
                .await
            {
                Ok(out) => out,
                Err(err) => return Err(this.after_backend_error(&mut rec, err).await),
            };
            tracing::info!(
                sandbox = %id,
                template = %out.template.name,
                bytes = out.bytes,
                frozen_ms = out.frozen.as_secs_f64() * 1e3,
                "snapshot made"
            );
            // A fork's own snapshot is reported as the fork.
            if !auto_remove {
                this.emit(
                    EventType::SnapshotCreated,
                    &rec,
                    serde_json::json!({
                        "template": out.template.name,
                        "frozen_ms": (out.frozen.as_secs_f64() * 1e3).round() as u64,
                    }),
                );
            }
            Ok(SnapshotInfo {
                template: crate::templates::info(out.template),
                frozen_ms: out.frozen.as_secs_f64() * 1e3,
                bytes: out.bytes,
                entries: out.entries,
            })
        })
        .await
    }

    /// `req.count` new sandboxes whose filesystems start as sandbox `id`'s is now: a snapshot of it
    /// (removed with the last sandbox that uses it), then creates from that, side by side. All or
    /// nothing: when one create fails, those made are deleted and the error returned.
    pub async fn fork(
        self: &Arc<Self>,
        id: &str,
        req: ForkRequest,
        tenant: &str,
    ) -> Result<ForkInfo, EngineError> {
        req.validate().map_err(EngineError::InvalidArgument)?;
        let name = format!("fork-{}", crate::auth::random_hex(6));
        let snapshot = self.snapshot(id, &name, true).await?;
        let creates = (0..req.count).map(|_| {
            let mut options = req.options.clone();
            options.template = Some(name.clone());
            self.create(options, tenant)
        });
        let results = futures_util::future::join_all(creates).await;
        let mut made = Vec::new();
        let mut failure = None;
        for r in results {
            match r {
                Ok(info) => made.push(info),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if let Some(err) = failure {
            for s in &made {
                let _ = self.delete(&s.id).await;
            }
            self.remove_if_unused(&name).await;
            return Err(err);
        }
        if let Ok(rec) = self.load(id).await {
            self.emit(
                EventType::Forked,
                &rec,
                serde_json::json!({
                    "template": name,
                    "sandboxes": made.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
                }),
            );
        }
        Ok(ForkInfo {
            snapshot,
            sandboxes: made,
        })
    }

    /// Ids of the sandboxes recorded with template `name` (which must not be deleted meanwhile).
    pub async fn template_users(&self, name: &str) -> Result<Vec<String>, EngineError> {
        Ok(self
            .store
            .list()
            .await?
            .into_iter()
            .filter(|r| r.template == name)
            .map(|r| r.id)
            .collect())
    }

    /// Which recorded sandboxes mount each volume: volume name → sandbox ids.
    pub async fn volume_users(&self) -> Result<HashMap<String, Vec<String>>, EngineError> {
        let mut users: HashMap<String, Vec<String>> = HashMap::new();
        for r in self.store.list().await? {
            for v in &r.volumes {
                users.entry(v.name.clone()).or_default().push(r.id.clone());
            }
        }
        Ok(users)
    }

    /// Removes template `name` if it is a fork's (`auto_remove`) and no sandbox uses it any more; then
    /// its parent, if that is a fork's left unused too (a fork of a forked sandbox).
    async fn remove_if_unused(&self, name: &str) {
        let Some(store) = self.backend.templates() else {
            return;
        };
        let mut next = Some(name.to_owned());
        while let Some(name) = next.take() {
            let Some(t) = store
                .list()
                .unwrap_or_default()
                .into_iter()
                .find(|t| t.name == name && t.auto_remove)
            else {
                return;
            };
            if !self.template_users(&name).await.is_ok_and(|u| u.is_empty()) {
                return;
            }
            let owned = name.clone();
            match self
                .on_backend(move |b| match b.templates() {
                    Some(t) => t.remove(&owned),
                    None => Ok(()),
                })
                .await
            {
                Ok(()) => {
                    tracing::info!(template = %name, "fork snapshot removed with its last sandbox");
                    next = t.parent;
                }
                // A snapshot stacked on it, say: it stays until that one goes.
                Err(e) => tracing::debug!(template = %name, error = %e, "fork snapshot kept"),
            }
        }
    }

    /// Removes every fork snapshot no sandbox uses (those a daemon killed mid-delete left). At start-up.
    pub async fn sweep_fork_snapshots(&self) {
        let Some(store) = self.backend.templates() else {
            return;
        };
        let forks: Vec<String> = store
            .list()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.auto_remove)
            .map(|t| t.name)
            .collect();
        for name in forks {
            self.remove_if_unused(&name).await;
        }
    }

    /// Kills everything in the sandbox and forgets it: afterwards its id is unknown (404).
    pub async fn delete(self: &Arc<Self>, id: &str) -> Result<(), EngineError> {
        let (this, id) = (self.clone(), id.to_owned());
        Self::detached(async move {
            let lock = this.lock_for(&id);
            let _guard = lock.lock().await;
            let rec = this.load(&id).await?;
            this.unlist(&id);
            if let Some(handle) = rec.handle.clone() {
                if let Err(e) = this.on_backend(move |b| b.destroy(&handle)).await {
                    this.note(&rec);
                    return Err(e);
                }
            }
            this.release_network(&id).await;
            this.remove_dir(&id);
            this.store.delete(&id).await?;
            this.forget_record(&id);
            this.wake.notify_one();
            if matches!(rec.state, SandboxState::Running | SandboxState::Paused) {
                this.emit(
                    EventType::Killed,
                    &rec,
                    serde_json::json!({"reason": "api"}),
                );
            }
            tracing::info!(sandbox = %id, "sandbox deleted");
            this.remove_if_unused(&rec.template).await;
            Ok(())
        })
        .await
    }

    fn remove_dir(&self, id: &str) {
        let dir = self.cfg.state_dir.join("sandboxes").join(id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(sandbox = %id, error = %e, "cannot remove the sandbox directory");
            }
            _ => {}
        }
    }

    /// A socket inside the sandbox's network namespace to connect to one of its ports, when the backend
    /// makes one ([`SandboxBackend::port_socket`]); `None` means "use the agent's port tunnel". Call
    /// [`Self::agent_socket`] first: it resumes a paused sandbox.
    pub async fn port_socket(
        &self,
        id: &str,
        v6: bool,
    ) -> Result<Option<std::os::fd::OwnedFd>, EngineError> {
        let rec = self.load(id).await?;
        let Some(handle) = rec.handle else {
            return Ok(None);
        };
        self.on_backend(move |b| b.port_socket(&handle, v6).transpose())
            .await
    }

    /// The socket of a sandbox's agent, ready for a proxied call: a paused sandbox is resumed first.
    pub async fn agent_socket(self: &Arc<Self>, id: &str) -> Result<PathBuf, EngineError> {
        if let Some(socket) = self.live_socket(id) {
            if let Some(why) = self.unhealthy_reason(id) {
                return Err(EngineError::Unavailable(format!(
                    "sandbox {id} is unhealthy: {why}; calls fail until it answers again (checked every \
                     {} ms); DELETE works",
                    self.cfg.health.interval.as_millis()
                )));
            }
            return Ok(socket);
        }
        let (this, id) = (self.clone(), id.to_owned());
        Self::detached(async move {
            let lock = this.lock_for(&id);
            let _guard = lock.lock().await;
            let mut rec = this.load(&id).await?;
            match rec.state {
                SandboxState::Running => {}
                SandboxState::Paused => this.resume_locked(&mut rec, "auto").await?,
                other => {
                    let why = rec
                        .error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default();
                    return Err(EngineError::Conflict(format!(
                        "sandbox {id} is {}{why}",
                        other.as_str()
                    )));
                }
            }
            Ok(rec
                .handle
                .as_ref()
                .ok_or_else(|| no_handle(&rec))?
                .agent_socket
                .clone())
        })
        .await
    }

    /// Called by the proxy when the agent socket did not answer. Returns the error to give the client.
    pub async fn agent_unreachable(self: &Arc<Self>, id: &str, cause: String) -> EngineError {
        let (this, id2) = (self.clone(), id.to_owned());
        let dead = Self::detached(async move {
            let lock = this.lock_for(&id2);
            let _guard = lock.lock().await;
            let mut rec = this.load(&id2).await?;
            Ok(this.mark_lost_if_dead(&mut rec).await)
        })
        .await;
        match dead {
            Ok(true) => EngineError::Unavailable(format!("sandbox {id} is gone: its agent exited")),
            _ => EngineError::Unavailable(format!(
                "the agent of sandbox {id} is not answering: {cause}"
            )),
        }
    }

    /// Brings the records in line with reality after a daemon (re)start: an interrupted start is a
    /// failure, and a sandbox whose agent is gone (host reboot) is marked `failed` with what was lost.
    pub async fn reconcile(&self) -> Result<(), EngineError> {
        for mut rec in self.store.list().await? {
            if rec.pool.is_none() {
                self.own(&rec.id, Owner::of(&rec));
            }
            match rec.state {
                SandboxState::Starting => {
                    Self::apply(&mut rec, Action::StartFailed)?;
                    rec.error = Some("the daemon stopped while the sandbox was starting".into());
                    self.save(&rec).await?;
                    self.emit(
                        EventType::Failed,
                        &rec,
                        serde_json::json!({"error": rec.error}),
                    );
                }
                SandboxState::Running | SandboxState::Paused => {
                    if self.mark_lost_if_dead(&mut rec).await {
                        continue;
                    }
                    self.note(&rec);
                    tracing::info!(sandbox = %rec.id, state = rec.state.as_str(),
                        "sandbox recovered");
                }
                // `unhealthy` is only reported, never stored.
                SandboxState::Stopped | SandboxState::Failed | SandboxState::Unhealthy => {}
            }
        }
        // A daemon killed in the middle of a create leaves a sandbox whose handle never reached the store:
        // nothing could ever pause, bill or delete it, so it goes now.
        let known: std::collections::HashSet<String> = self
            .store
            .list()
            .await?
            .into_iter()
            .filter(|r| r.handle.is_some() && r.state != SandboxState::Stopped)
            .map(|r| r.id)
            .collect();
        self.on_backend(move |b| {
            b.destroy_unknown(&|id| known.contains(id));
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Applies `on_timeout` to every sandbox whose deadline has passed.
    pub async fn expire_due(self: &Arc<Self>) -> Result<(), EngineError> {
        for id in self.store.expired(self.now_ms()).await? {
            let this = self.clone();
            let result = Self::detached(async move {
                let lock = this.lock_for(&id);
                let _guard = lock.lock().await;
                let Some(mut rec) = this.store.get(&id).await? else {
                    return Ok(());
                };
                if rec.expires_at_ms.is_none_or(|t| t > this.now_ms()) {
                    return Ok(());
                }
                let result = this.expire_locked(&mut rec).await;
                if result.is_err() {
                    // Retry later rather than spin on a deadline that cannot be enforced right now,
                    // unless the failure already settled the record (an agent found dead, say).
                    if let Some(mut rec) = this.store.get(&id).await? {
                        if rec.expires_at_ms.is_some_and(|t| t <= this.now_ms()) {
                            rec.expires_at_ms = Some(this.now_ms() + EXPIRY_RETRY_MS);
                            this.save(&rec).await?;
                        }
                    }
                }
                result
            })
            .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "cannot enforce a sandbox deadline");
            }
        }
        Ok(())
    }

    async fn expire_locked(&self, rec: &mut SandboxRecord) -> Result<(), EngineError> {
        match (rec.state, rec.on_timeout) {
            (SandboxState::Running, OnTimeout::Pause) => {
                tracing::info!(sandbox = %rec.id, "deadline reached: pausing");
                self.emit(
                    EventType::TimedOut,
                    rec,
                    serde_json::json!({"action": "pause"}),
                );
                self.pause_locked(rec, "timeout").await
            }
            (SandboxState::Running | SandboxState::Paused, _) => {
                tracing::info!(sandbox = %rec.id, "deadline reached: killing");
                let before = rec.clone();
                Self::apply(rec, Action::Kill)?;
                self.unlist(&rec.id);
                if let Some(handle) = rec.handle.clone() {
                    if let Err(e) = self.on_backend(move |b| b.destroy(&handle)).await {
                        self.note(&before);
                        return Err(e);
                    }
                }
                self.release_network(&rec.id).await;
                self.remove_dir(&rec.id);
                rec.expires_at_ms = None;
                rec.error = Some("killed at its deadline (timeout)".into());
                self.save(rec).await?;
                self.emit(
                    EventType::TimedOut,
                    rec,
                    serde_json::json!({"action": "kill"}),
                );
                self.emit(
                    EventType::Killed,
                    rec,
                    serde_json::json!({"reason": "timeout"}),
                );
                Ok(())
            }
            _ => {
                rec.expires_at_ms = None;
                self.save(rec).await?;
                Ok(())
            }
        }
    }

    /// Marks running sandboxes whose agent died as `failed` (and releases them). The liveness check runs
    /// for all of them in one blocking call and without their locks, so a sweep costs little and never
    /// waits behind a long pause or delete; only the dead ones are then locked and re-checked.
    async fn sweep(&self) -> Result<(), EngineError> {
        let running: Vec<(String, BackendHandle)> = self
            .store
            .list()
            .await?
            .into_iter()
            .filter(|r| r.state == SandboxState::Running)
            .filter_map(|r| Some((r.id, r.handle?)))
            .collect();
        let dead = self
            .on_backend(move |b| {
                Ok(running
                    .into_iter()
                    .filter(|(_, h)| !b.is_alive(h))
                    .map(|(id, _)| id)
                    .collect::<Vec<_>>())
            })
            .await?;
        for id in dead {
            let lock = self.lock_for(&id);
            let _guard = lock.lock().await;
            if let Some(mut rec) = self.store.get(&id).await? {
                if rec.state == SandboxState::Running {
                    self.mark_lost_if_dead(&mut rec).await;
                }
            }
        }
        Ok(())
    }

    fn now_ms(&self) -> i64 {
        self.cfg.clock.now_ms()
    }

    /// The deadline `secs` from now.
    fn deadline(&self, secs: u64) -> i64 {
        self.now_ms()
            .saturating_add(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX))
    }

    /// Enforces deadlines until `shutdown` turns true. Sleeps until the next deadline, or until a
    /// lifecycle call moves one.
    pub async fn run_timers(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut last_sweep = tokio::time::Instant::now();
        loop {
            if let Err(e) = self.expire_due().await {
                tracing::error!(error = %e, "deadline check failed");
            }
            if last_sweep.elapsed() >= SWEEP_INTERVAL {
                last_sweep = tokio::time::Instant::now();
                if let Err(e) = self.sweep().await {
                    tracing::error!(error = %e, "liveness sweep failed");
                }
            }
            let next = self.store.next_deadline().await.ok().flatten();
            let wait = next.map_or(SWEEP_INTERVAL, |t| {
                Duration::from_millis(u64::try_from(t - self.now_ms()).unwrap_or(0))
                    .min(SWEEP_INTERVAL)
            });
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
                () = self.cfg.clock.moved() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }
}

fn no_handle(rec: &SandboxRecord) -> EngineError {
    EngineError::Internal(format!("sandbox {} has no backend handle", rec.id))
}

/// The public view of a record.
pub fn info(rec: &SandboxRecord) -> SandboxInfo {
    SandboxInfo {
        id: rec.id.clone(),
        state: rec.state,
        template: rec.template.clone(),
        cpu: rec.cpu,
        memory_mb: rec.memory_mb,
        pids: rec.pids,
        disk_mb: rec.disk_mb,
        env: rec.env.clone(),
        metadata: rec.metadata.clone(),
        on_timeout: rec.on_timeout,
        created_at: rfc3339(rec.created_at_ms),
        expires_at: rec.expires_at_ms.map(rfc3339),
        error: rec.error.clone(),
        network: None,
        preview_domain: None,
        tenant: rec.tenant.clone(),
        access_token: None,
        volumes: rec.volumes.clone(),
    }
}

pub use sandpit_types::sandbox::{MIN_MEMORY_MB, MIN_PIDS};

/// The request's own checks, shared with the fuzz targets (`CreateSandboxRequest::validate`).
fn validate_create(req: &CreateSandboxRequest) -> Result<(), EngineError> {
    req.validate().map_err(EngineError::InvalidArgument)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use SandboxState as S;

    #[test]
    fn transition_table() {
        assert_eq!(transition(S::Starting, Action::Ready), Some(S::Running));
        assert_eq!(transition(S::Running, Action::Pause), Some(S::Paused));
        assert_eq!(transition(S::Paused, Action::Resume), Some(S::Running));
        assert_eq!(transition(S::Paused, Action::Kill), Some(S::Stopped));
        assert_eq!(transition(S::Running, Action::Lost), Some(S::Failed));
        assert_eq!(transition(S::Paused, Action::Pause), None);
        assert_eq!(transition(S::Running, Action::Resume), None);
        assert_eq!(transition(S::Stopped, Action::Resume), None);
        assert_eq!(transition(S::Failed, Action::Lost), None);
        assert_eq!(transition(S::Stopped, Action::Kill), None);
    }

    #[test]
    fn create_validation() {
        let ok = CreateSandboxRequest::default();
        assert!(validate_create(&ok).is_ok());
        let bad_cpu = CreateSandboxRequest {
            cpu: Some(f64::NAN),
            ..Default::default()
        };
        assert!(validate_create(&bad_cpu).is_err());
        let bad_env = CreateSandboxRequest {
            env: BTreeMap::from([("A=B".into(), "x".into())]),
            ..Default::default()
        };
        assert!(validate_create(&bad_env).is_err());
        let bad_tpl = CreateSandboxRequest {
            template: Some("../x y".into()),
            ..Default::default()
        };
        assert!(validate_create(&bad_tpl).is_err());
        for (memory_mb, pids, ok) in [(16, 8, true), (15, 8, false), (16, 7, false)] {
            let req = CreateSandboxRequest {
                memory_mb: Some(memory_mb),
                pids: Some(pids),
                ..Default::default()
            };
            assert_eq!(validate_create(&req).is_ok(), ok, "{memory_mb} {pids}");
        }
    }
}
