//! Durable sandbox records in `SQLite` (`STATE_DIR/sandpit.db`).
//!
//! The store is the daemon's memory across restarts: after a crash it reads back which sandboxes exist, in
//! which state, and how to reach their agents. It holds records, not decisions: the engine validates
//! transitions, the store writes them. Schema changes are numbered migrations tracked with
//! `PRAGMA user_version`, so that an old state dir is upgraded in place and a newer one is refused.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, Row, params};
use sandpit_types::sandbox::{OnTimeout, SandboxState};

use crate::backend::BackendHandle;

/// Applied in order; entry `i` takes the schema from version `i` to `i + 1`. Never edit a shipped entry.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE sandboxes (
        id            TEXT PRIMARY KEY NOT NULL,
        state         TEXT NOT NULL,
        template      TEXT NOT NULL,
        cpu           REAL,
        memory_mb     INTEGER,
        pids          INTEGER,
        disk_mb       INTEGER,
        env           TEXT NOT NULL,
        metadata      TEXT NOT NULL,
        on_timeout    TEXT NOT NULL,
        timeout_secs  INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER,
        error         TEXT,
        handle        TEXT
    );
    CREATE INDEX sandboxes_expiry ON sandboxes (expires_at_ms) WHERE expires_at_ms IS NOT NULL;",
    // Networking (issue 16): a sandbox's place in the daemon's network and its policy (JSON), exposed
    // ports and their tokens (SHA-256 of the token, never the token).
    "CREATE TABLE sandbox_network (
        id   TEXT PRIMARY KEY NOT NULL,
        data TEXT NOT NULL
    );
    CREATE TABLE port_access (
        id     TEXT NOT NULL,
        port   INTEGER NOT NULL,
        public INTEGER NOT NULL,
        PRIMARY KEY (id, port)
    );
    CREATE TABLE port_tokens (
        hash          TEXT PRIMARY KEY NOT NULL,
        id            TEXT NOT NULL,
        port          INTEGER NOT NULL,
        expires_at_ms INTEGER
    );",
    // API keys (issue 17): SHA-256 of the secret, never the secret; scopes as a comma list.
    "CREATE TABLE api_keys (
        id            TEXT PRIMARY KEY NOT NULL,
        hash          TEXT NOT NULL,
        name          TEXT NOT NULL,
        tenant        TEXT NOT NULL,
        scopes        TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER
    );",
    // Tenants (issue 17): the tenant of the key that made a sandbox; older rows belong to `default`.
    "ALTER TABLE sandboxes ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';",
    // Per-sandbox access tokens (issue 17): one per sandbox, SHA-256 only.
    "CREATE TABLE sandbox_tokens (
        id   TEXT PRIMARY KEY NOT NULL,
        hash TEXT NOT NULL
    );",
    // Tenant quotas (issue 17): the `TenantQuotas` JSON of each tenant that has any.
    "CREATE TABLE tenant_quotas (
        tenant TEXT PRIMARY KEY NOT NULL,
        quotas TEXT NOT NULL
    );",
    // The audit log (issue 17): who did what, when, with what outcome. Never a secret.
    "CREATE TABLE audit (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms   INTEGER NOT NULL,
        key_id  TEXT NOT NULL,
        tenant  TEXT NOT NULL,
        action  TEXT NOT NULL,
        sandbox TEXT,
        detail  TEXT,
        status  INTEGER NOT NULL
    );
    CREATE INDEX audit_at ON audit (at_ms);",
    // Volumes (issue 18): the volumes a sandbox mounts (a JSON list of `VolumeMount`).
    "ALTER TABLE sandboxes ADD COLUMN volumes TEXT NOT NULL DEFAULT '[]';",
    // Warm pools (issue 18): a waiting sandbox names its pool's template until it is claimed; the size
    // of each template's pool.
    "ALTER TABLE sandboxes ADD COLUMN pool TEXT;
    CREATE TABLE pools (
        template TEXT PRIMARY KEY NOT NULL,
        size     INTEGER NOT NULL
    );",
    // Lifecycle events and webhooks (issue 20). `events.id` is assigned by the daemon (`crate::events`),
    // in the order events happen.
    "CREATE TABLE events (
        id      INTEGER PRIMARY KEY NOT NULL,
        at_ms   INTEGER NOT NULL,
        type    TEXT NOT NULL,
        sandbox TEXT NOT NULL,
        tenant  TEXT NOT NULL,
        data    TEXT NOT NULL
    );
    CREATE INDEX events_at ON events (at_ms);
    CREATE INDEX events_sandbox ON events (sandbox, id);
    CREATE TABLE webhooks (
        id          TEXT PRIMARY KEY NOT NULL,
        url         TEXT NOT NULL,
        events      TEXT NOT NULL,
        secret      TEXT NOT NULL,
        description TEXT,
        created_ms  INTEGER NOT NULL
    );
    CREATE TABLE webhook_deliveries (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        webhook    TEXT NOT NULL,
        delivery   TEXT NOT NULL,
        event_id   INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        attempt    INTEGER NOT NULL,
        at_ms      INTEGER NOT NULL,
        outcome    TEXT NOT NULL,
        status     INTEGER,
        error      TEXT,
        duration_ms INTEGER NOT NULL
    );
    CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (webhook, seq);",
];

/// One lifecycle event as stored (`crate::events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub id: i64,
    pub at_ms: i64,
    pub kind: String,
    pub sandbox: String,
    pub tenant: String,
    /// JSON.
    pub data: String,
}

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub since_ms: Option<i64>,
    pub after_id: Option<i64>,
    pub tenant: Option<String>,
    pub sandbox: Option<String>,
    /// Any of these types (all when empty).
    pub kinds: Vec<String>,
    pub limit: usize,
}

/// A webhook as stored (`crate::webhooks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRow {
    pub id: String,
    pub url: String,
    /// JSON list.
    pub events: String,
    pub secret: String,
    pub description: Option<String>,
    pub created_ms: i64,
}

/// One delivery attempt as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub webhook: String,
    pub delivery: String,
    pub event_id: i64,
    pub event_type: String,
    pub attempt: u32,
    pub at_ms: i64,
    pub outcome: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// One audit row (`crate::audit`); `id` is assigned on insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub at_ms: i64,
    pub key_id: String,
    pub tenant: String,
    pub action: String,
    pub sandbox: Option<String>,
    pub detail: Option<String>,
    pub status: u16,
}

/// Which audit rows to read.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub since_ms: Option<i64>,
    pub after_id: Option<i64>,
    pub tenant: Option<String>,
    pub sandbox: Option<String>,
    pub limit: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    #[error(
        "the state database has schema version {found}, newer than this sandpit knows ({known})"
    )]
    TooNew { found: u32, known: u32 },
    #[error("corrupt record for sandbox {id}: {why}")]
    Corrupt { id: String, why: String },
    #[error("database task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// Whether `SQLite` could not write because the disk is full (it reports `ENOSPC` as `SQLITE_FULL`).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Self::Sqlite(rusqlite::Error::SqliteFailure(f, _))
            if f.code == rusqlite::ErrorCode::DiskFull)
    }
}

// By hand rather than `#[from]`, which would also make the SQLite error the `source` and print it twice.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

/// One sandbox as persisted.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRecord {
    pub id: String,
    pub state: SandboxState,
    pub template: String,
    pub cpu: Option<f64>,
    pub memory_mb: Option<u64>,
    pub pids: Option<u64>,
    pub disk_mb: Option<u64>,
    pub env: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub on_timeout: OnTimeout,
    /// The time to live granted at creation, at the last `timeout` call, and again on each resume.
    pub timeout_secs: u64,
    pub created_at_ms: i64,
    /// When the timer acts; `None` while paused (a paused sandbox costs nothing and waits for a resume).
    pub expires_at_ms: Option<i64>,
    pub error: Option<String>,
    /// Set once the backend created the sandbox.
    pub handle: Option<BackendHandle>,
    /// The tenant of the key that created it.
    pub tenant: String,
    /// The volumes mounted in it.
    pub volumes: Vec<sandpit_types::volumes::VolumeMount>,
    /// Waiting in the warm pool of this template (nobody's yet: listed nowhere, counted for no tenant);
    /// `None` once claimed, and for every sandbox created cold.
    pub pool: Option<String>,
}

/// One API key as persisted (`hash`: hex SHA-256 of the secret; `scopes`: comma separated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub id: String,
    pub hash: String,
    pub name: String,
    pub tenant: String,
    pub scopes: String,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
}

/// A cheaply clonable handle on the database. Every async call runs on the blocking pool; a caller
/// already on a blocking thread uses [`Store::blocking`].
#[derive(Debug, Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

/// Runs one statement through the connection's statement cache: the store runs the same few
/// statements over and over (a create writes three rows), and preparing one anew each time was 1.5 %
/// of the host's CPU in a burst of creates.
fn exec(c: &Connection, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(p)
}

/// [`update_record`] and the sandbox's access token in one transaction: how a create records its
/// sandbox as ready.
pub(crate) fn update_with_token(
    c: &mut Connection,
    rec: &SandboxRecord,
    token_hash: &str,
) -> Result<(), StoreError> {
    let tx = c.transaction()?;
    update_record(&tx, rec)?;
    put_sandbox_token(&tx, &rec.id, token_hash)?;
    tx.commit()?;
    Ok(())
}

/// Records (or replaces) sandbox `id`'s network record.
pub(crate) fn network_put(c: &Connection, id: &str, data: &str) -> Result<(), StoreError> {
    exec(
        c,
        "INSERT INTO sandbox_network (id, data) VALUES (?1, ?2)
         ON CONFLICT (id) DO UPDATE SET data = excluded.data",
        params![id, data],
    )?;
    Ok(())
}

/// Forgets sandbox `id`'s record; whether there was one.
pub(crate) fn delete_record(c: &Connection, id: &str) -> Result<bool, StoreError> {
    Ok(exec(c, "DELETE FROM sandboxes WHERE id = ?1", [id])? > 0)
}

/// Adds a new sandbox record.
pub(crate) fn insert_record(c: &Connection, rec: &SandboxRecord) -> Result<(), StoreError> {
    let handle = handle_json(rec.handle.as_ref());
    exec(
        c,
        "INSERT INTO sandboxes (id, state, template, cpu, memory_mb, pids, disk_mb, env, metadata,
             on_timeout, timeout_secs, created_at_ms, expires_at_ms, error, handle, tenant, volumes,
             pool)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        params![
            rec.id,
            rec.state.as_str(),
            rec.template,
            rec.cpu,
            rec.memory_mb.map(to_i64),
            rec.pids.map(to_i64),
            rec.disk_mb.map(to_i64),
            map_json(&rec.env),
            map_json(&rec.metadata),
            on_timeout_str(rec.on_timeout),
            to_i64(rec.timeout_secs),
            rec.created_at_ms,
            rec.expires_at_ms,
            rec.error,
            handle,
            rec.tenant,
            serde_json::to_string(&rec.volumes).unwrap_or_else(|_| "[]".into()),
            rec.pool,
        ],
    )?;
    Ok(())
}

/// The mutable part of a record (see [`Store::update`]).
pub(crate) fn update_record(c: &Connection, rec: &SandboxRecord) -> Result<(), StoreError> {
    exec(
        c,
        "UPDATE sandboxes SET state = ?2, timeout_secs = ?3, expires_at_ms = ?4, error = ?5,
             handle = ?6 WHERE id = ?1",
        params![
            rec.id,
            rec.state.as_str(),
            to_i64(rec.timeout_secs),
            rec.expires_at_ms,
            rec.error,
            handle_json(rec.handle.as_ref()),
        ],
    )?;
    Ok(())
}

/// Sandbox `id`'s access token (hex SHA-256), replacing any earlier one.
fn put_sandbox_token(c: &Connection, id: &str, hash: &str) -> Result<(), StoreError> {
    exec(
        c,
        "INSERT INTO sandbox_tokens (id, hash) VALUES (?1, ?2)
         ON CONFLICT (id) DO UPDATE SET hash = excluded.hash",
        params![id, hash],
    )?;
    Ok(())
}

/// What a claim from a warm pool gives the sandbox ([`Store::claim`]).
#[derive(Debug, Clone)]
pub struct Claim {
    pub tenant: String,
    pub env: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub on_timeout: OnTimeout,
    pub timeout_secs: u64,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

impl Store {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        // WAL keeps readers off the writer's back; NORMAL sync is durable across a daemon crash, which is
        // the failure that matters here (a power cut may lose the last transition, never corrupt the file).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Room for every statement the store runs (rusqlite keeps 16 by default).
        conn.set_prepared_statement_cache_capacity(64);
        migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.blocking(f))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    pub async fn insert(&self, rec: SandboxRecord) -> Result<(), StoreError> {
        self.call(move |c| insert_record(c, &rec)).await
    }

    /// Runs `f` on the connection on the calling thread: for a caller already on a blocking thread
    /// (a create makes its writes and the backend's work in one trip to the blocking pool: every trip
    /// is a thread wake-up, which on a VM's idle vCPU costs tens of microseconds).
    pub fn blocking<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // A panic while holding the lock cannot leave SQLite half-written (statements are atomic), so a
        // poisoned mutex is still safe to use.
        let mut guard = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Writes the mutable part of a record (state, deadline, error, handle, timeout).
    pub async fn update(&self, rec: SandboxRecord) -> Result<(), StoreError> {
        self.call(move |c| update_record(c, &rec)).await
    }

    /// [`Store::update`] and the sandbox's access token (`token_hash`) in one transaction: how a create
    /// records its sandbox as ready.
    pub async fn update_with_token(
        &self,
        rec: SandboxRecord,
        token_hash: String,
    ) -> Result<(), StoreError> {
        self.call(move |c| update_with_token(c, &rec, &token_hash))
            .await
    }

    /// Claims sandbox `id` from `template`'s warm pool, if it still waits there, running: gives it
    /// everything a create request sets (`claim`) and no pool, and stores `token_hash` as its access
    /// token, in one transaction (one trip to the blocking pool, one commit: a claim is on a create's
    /// path). The claimed record, or `None` (nothing written) when the sandbox is not claimable.
    pub async fn claim(
        &self,
        id: &str,
        template: &str,
        claim: Claim,
        token_hash: String,
    ) -> Result<Option<SandboxRecord>, StoreError> {
        let (id, template) = (id.to_owned(), template.to_owned());
        self.call(move |c| {
            let tx = c.transaction()?;
            let rec = tx
                .prepare_cached("SELECT * FROM sandboxes WHERE id = ?1")?
                .query_row([&id], from_row)
                .optional()?
                .transpose()?;
            let Some(mut rec) = rec.filter(|r| {
                r.pool.as_deref() == Some(template.as_str())
                    && r.state == SandboxState::Running
                    && r.handle.is_some()
            }) else {
                return Ok(None);
            };
            rec.tenant = claim.tenant;
            rec.env = claim.env;
            rec.metadata = claim.metadata;
            rec.on_timeout = claim.on_timeout;
            rec.timeout_secs = claim.timeout_secs;
            rec.created_at_ms = claim.created_at_ms;
            rec.expires_at_ms = Some(claim.expires_at_ms);
            rec.pool = None;
            exec(
                &tx,
                "UPDATE sandboxes SET state = ?2, timeout_secs = ?3, expires_at_ms = ?4, env = ?5,
                     metadata = ?6, on_timeout = ?7, tenant = ?8, pool = NULL, created_at_ms = ?9
                 WHERE id = ?1",
                params![
                    rec.id,
                    rec.state.as_str(),
                    to_i64(rec.timeout_secs),
                    rec.expires_at_ms,
                    map_json(&rec.env),
                    map_json(&rec.metadata),
                    on_timeout_str(rec.on_timeout),
                    rec.tenant,
                    rec.created_at_ms,
                ],
            )?;
            put_sandbox_token(&tx, &rec.id, &token_hash)?;
            tx.commit()?;
            Ok(Some(rec))
        })
        .await
    }

    /// Every template's warm-pool size.
    pub async fn pools(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare("SELECT template, size FROM pools ORDER BY template")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                ))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Sets (or with 0, removes) a template's warm-pool size.
    pub async fn set_pool(&self, template: &str, size: u64) -> Result<(), StoreError> {
        let template = template.to_owned();
        self.call(move |c| {
            if size == 0 {
                exec(c, "DELETE FROM pools WHERE template = ?1", [&template])?;
            } else {
                exec(
                    c,
                    "INSERT INTO pools (template, size) VALUES (?1, ?2)
                     ON CONFLICT (template) DO UPDATE SET size = excluded.size",
                    params![template, to_i64(size)],
                )?;
            }
            Ok(())
        })
        .await
    }

    pub async fn get(&self, id: &str) -> Result<Option<SandboxRecord>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.query_row("SELECT * FROM sandboxes WHERE id = ?1", [&id], from_row)
                .optional()?
                .transpose()
        })
        .await
    }

    /// Every record, oldest first.
    pub async fn list(&self) -> Result<Vec<SandboxRecord>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare("SELECT * FROM sandboxes ORDER BY created_at_ms, id")?;
            let rows = stmt.query_map([], from_row)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row??);
            }
            Ok(out)
        })
        .await
    }

    /// Returns whether a record was there.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.call(move |c| delete_record(c, &id)).await
    }

    /// The earliest deadline of any sandbox, if one has a deadline.
    pub async fn next_deadline(&self) -> Result<Option<i64>, StoreError> {
        self.call(|c| {
            Ok(c.query_row(
                "SELECT MIN(expires_at_ms) FROM sandboxes WHERE expires_at_ms IS NOT NULL",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )?)
        })
        .await
    }

    /// Ids whose deadline is at or before `now_ms`.
    pub async fn expired(&self, now_ms: i64) -> Result<Vec<String>, StoreError> {
        self.call(move |c| {
            let mut stmt = c.prepare(
                "SELECT id FROM sandboxes WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= ?1",
            )?;
            let ids = stmt.query_map([now_ms], |r| r.get::<_, String>(0))?;
            Ok(ids.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Number of sandboxes per state, for metrics.
    pub async fn count_by_state(&self) -> Result<Vec<(SandboxState, u64)>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare("SELECT state, COUNT(*) FROM sandboxes GROUP BY state")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (s, n) = row?;
                if let Ok(state) = s.parse::<SandboxState>() {
                    out.push((state, u64::try_from(n).unwrap_or(0)));
                }
            }
            Ok(out)
        })
        .await
    }
}

/// A port's access record: `(sandbox, port, public)`.
pub type PortRow = (String, u16, bool);
/// A port token's record: `(hash, sandbox, port, expires_at_ms)`.
pub type TokenRow = (String, String, u16, Option<i64>);

/// Networking records (see the second migration). Kept apart from `sandboxes` so that the network
/// layer owns its rows; the engine removes them with the sandbox.
impl Store {
    pub async fn network_put(&self, id: &str, data: String) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| network_put(c, &id, &data)).await
    }

    pub async fn network_all(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare("SELECT id, data FROM sandbox_network")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Forgets everything networking kept for a sandbox (its network row, ports and tokens).
    pub async fn network_forget(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            let tx = c.transaction()?;
            for table in ["sandbox_network", "port_access", "port_tokens"] {
                tx.execute(&format!("DELETE FROM {table} WHERE id = ?1"), [&id])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub async fn ports_all(&self) -> Result<(Vec<PortRow>, Vec<TokenRow>), StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare("SELECT id, port, public FROM port_access")?;
            let ports = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0)))?
                .collect::<Result<Vec<_>, _>>()?;
            let mut stmt = c.prepare("SELECT hash, id, port, expires_at_ms FROM port_tokens")?;
            let tokens = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((ports, tokens))
        })
        .await
    }

    /// Records that a port is exposed (and whether publicly) and, if given, a token for it.
    pub async fn port_put(&self, row: PortRow, token: Option<TokenRow>) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            exec(
                &tx,
                "INSERT INTO port_access (id, port, public) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id, port) DO UPDATE SET public = excluded.public",
                params![row.0, row.1, i64::from(row.2)],
            )?;
            if let Some((hash, id, port, exp)) = token {
                exec(
                    &tx,
                    "INSERT INTO port_tokens (hash, id, port, expires_at_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![hash, id, port, exp],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Every sandbox access token: `(sandbox id, hex SHA-256)`.
    pub async fn sandbox_tokens_all(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare("SELECT id, hash FROM sandbox_tokens")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Sets (or replaces) a sandbox's access token hash.
    pub async fn sandbox_token_put(&self, id: &str, hash: String) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| put_sandbox_token(c, &id, &hash)).await
    }

    pub async fn sandbox_token_delete(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            exec(c, "DELETE FROM sandbox_tokens WHERE id = ?1", [&id])?;
            Ok(())
        })
        .await
    }

    /// Appends audit rows in one transaction.
    pub async fn audit_append(&self, rows: Vec<AuditRow>) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO audit (at_ms, key_id, tenant, action, sandbox, detail, status)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for r in rows {
                    stmt.execute(params![
                        r.at_ms, r.key_id, r.tenant, r.action, r.sandbox, r.detail, r.status
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Audit rows matching `q`, oldest first, at most `q.limit + 1` (so the caller knows whether there
    /// are more).
    pub async fn audit_read(&self, q: AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, at_ms, key_id, tenant, action, sandbox, detail, status FROM audit
                 WHERE (?1 IS NULL OR at_ms >= ?1) AND (?2 IS NULL OR id > ?2)
                   AND (?3 IS NULL OR tenant = ?3) AND (?4 IS NULL OR sandbox = ?4)
                 ORDER BY id LIMIT ?5",
            )?;
            let rows = stmt
                .query_map(
                    params![
                        q.since_ms,
                        q.after_id,
                        q.tenant,
                        q.sandbox,
                        to_i64(q.limit as u64 + 1)
                    ],
                    |r| {
                        Ok(AuditRow {
                            id: r.get(0)?,
                            at_ms: r.get(1)?,
                            key_id: r.get(2)?,
                            tenant: r.get(3)?,
                            action: r.get(4)?,
                            sandbox: r.get(5)?,
                            detail: r.get(6)?,
                            status: r.get(7)?,
                        })
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Forgets audit rows older than `before_ms`; how many went.
    pub async fn audit_prune(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.call(move |c| Ok(exec(c, "DELETE FROM audit WHERE at_ms < ?1", [before_ms])?))
            .await
    }

    /// Appends lifecycle events (their ids assigned by the caller) in one transaction.
    pub async fn events_append(&self, rows: Vec<EventRow>) -> Result<(), StoreError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO events (id, at_ms, type, sandbox, tenant, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for r in rows {
                    stmt.execute(params![r.id, r.at_ms, r.kind, r.sandbox, r.tenant, r.data])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The largest event id stored (0 when none).
    pub async fn events_max_id(&self) -> Result<i64, StoreError> {
        self.call(|c| Ok(c.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?))
            .await
    }

    /// Events matching `q`, oldest first, at most `q.limit + 1` (so the caller knows whether there are more).
    pub async fn events_read(&self, q: EventQuery) -> Result<Vec<EventRow>, StoreError> {
        self.call(move |c| {
            let kinds = (!q.kinds.is_empty()).then(|| q.kinds.join(","));
            let mut stmt = c.prepare_cached(
                "SELECT id, at_ms, type, sandbox, tenant, data FROM events
                 WHERE (?1 IS NULL OR at_ms >= ?1) AND (?2 IS NULL OR id > ?2)
                   AND (?3 IS NULL OR tenant = ?3) AND (?4 IS NULL OR sandbox = ?4)
                   AND (?5 IS NULL OR instr(',' || ?5 || ',', ',' || type || ',') > 0)
                 ORDER BY id LIMIT ?6",
            )?;
            let rows = stmt
                .query_map(
                    params![
                        q.since_ms,
                        q.after_id,
                        q.tenant,
                        q.sandbox,
                        kinds,
                        to_i64(q.limit as u64 + 1)
                    ],
                    |r| {
                        Ok(EventRow {
                            id: r.get(0)?,
                            at_ms: r.get(1)?,
                            kind: r.get(2)?,
                            sandbox: r.get(3)?,
                            tenant: r.get(4)?,
                            data: r.get(5)?,
                        })
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Forgets events (and webhook delivery attempts) older than `before_ms`; how many events went.
    pub async fn events_prune(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.call(move |c| {
            exec(
                c,
                "DELETE FROM webhook_deliveries WHERE at_ms < ?1",
                [before_ms],
            )?;
            Ok(exec(c, "DELETE FROM events WHERE at_ms < ?1", [before_ms])?)
        })
        .await
    }

    pub async fn webhooks_all(&self) -> Result<Vec<WebhookRow>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare(
                "SELECT id, url, events, secret, description, created_ms FROM webhooks ORDER BY created_ms, id",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(WebhookRow {
                        id: r.get(0)?,
                        url: r.get(1)?,
                        events: r.get(2)?,
                        secret: r.get(3)?,
                        description: r.get(4)?,
                        created_ms: r.get(5)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn webhook_put(&self, w: WebhookRow) -> Result<(), StoreError> {
        self.call(move |c| {
            exec(
                c,
                "INSERT INTO webhooks (id, url, events, secret, description, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![w.id, w.url, w.events, w.secret, w.description, w.created_ms],
            )?;
            Ok(())
        })
        .await
    }

    /// Forgets a webhook and its delivery log; whether it existed.
    pub async fn webhook_delete(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            let tx = c.transaction()?;
            exec(
                &tx,
                "DELETE FROM webhook_deliveries WHERE webhook = ?1",
                [&id],
            )?;
            let n = exec(&tx, "DELETE FROM webhooks WHERE id = ?1", [&id])?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    pub async fn delivery_append(&self, d: DeliveryRow) -> Result<(), StoreError> {
        self.call(move |c| {
            c.prepare_cached(
                "INSERT INTO webhook_deliveries
                   (webhook, delivery, event_id, event_type, attempt, at_ms, outcome, status, error, duration_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                d.webhook, d.delivery, d.event_id, d.event_type, d.attempt, d.at_ms, d.outcome, d.status,
                d.error, d.duration_ms
            ])?;
            Ok(())
        })
        .await
    }

    /// A webhook's delivery attempts, newest first.
    pub async fn deliveries(
        &self,
        webhook: &str,
        limit: usize,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let webhook = webhook.to_owned();
        self.call(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT webhook, delivery, event_id, event_type, attempt, at_ms, outcome, status, error, duration_ms
                 FROM webhook_deliveries WHERE webhook = ?1 ORDER BY seq DESC LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![webhook, to_i64(limit as u64)], delivery_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// The last attempt of every delivery whose last attempt said another would follow (to resume after a
    /// restart).
    pub async fn deliveries_pending(&self) -> Result<Vec<DeliveryRow>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare(
                "SELECT webhook, delivery, event_id, event_type, attempt, at_ms, outcome, status, error, duration_ms
                 FROM webhook_deliveries d
                 WHERE seq = (SELECT MAX(seq) FROM webhook_deliveries WHERE delivery = d.delivery)
                   AND outcome = 'retrying'",
            )?;
            let rows = stmt.query_map([], delivery_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Every tenant's quotas, as stored (JSON).
    pub async fn quotas_all(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare("SELECT tenant, quotas FROM tenant_quotas")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Sets a tenant's quotas (JSON), or forgets them when `quotas` is `None`.
    pub async fn quotas_put(&self, tenant: &str, quotas: Option<String>) -> Result<(), StoreError> {
        let tenant = tenant.to_owned();
        self.call(move |c| {
            match quotas {
                Some(q) => exec(
                    c,
                    "INSERT INTO tenant_quotas (tenant, quotas) VALUES (?1, ?2)
                     ON CONFLICT (tenant) DO UPDATE SET quotas = excluded.quotas",
                    params![tenant, q],
                )?,
                None => exec(c, "DELETE FROM tenant_quotas WHERE tenant = ?1", [&tenant])?,
            };
            Ok(())
        })
        .await
    }

    /// Every API key row.
    pub async fn keys_all(&self) -> Result<Vec<KeyRow>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare(
                "SELECT id, hash, name, tenant, scopes, created_at_ms, expires_at_ms FROM api_keys",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(KeyRow {
                        id: r.get(0)?,
                        hash: r.get(1)?,
                        name: r.get(2)?,
                        tenant: r.get(3)?,
                        scopes: r.get(4)?,
                        created_at_ms: r.get(5)?,
                        expires_at_ms: r.get(6)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn key_put(&self, row: KeyRow) -> Result<(), StoreError> {
        self.call(move |c| {
            exec(
                c,
                "INSERT INTO api_keys (id, hash, name, tenant, scopes, created_at_ms, expires_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    row.id,
                    row.hash,
                    row.name,
                    row.tenant,
                    row.scopes,
                    row.created_at_ms,
                    row.expires_at_ms
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Whether a key with this id existed.
    pub async fn key_delete(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.call(move |c| Ok(exec(c, "DELETE FROM api_keys WHERE id = ?1", [&id])? > 0))
            .await
    }

    /// Closes a port: its access record and every token for it.
    pub async fn port_delete(&self, id: &str, port: u16) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            let tx = c.transaction()?;
            exec(
                &tx,
                "DELETE FROM port_access WHERE id = ?1 AND port = ?2",
                params![id, port],
            )?;
            exec(
                &tx,
                "DELETE FROM port_tokens WHERE id = ?1 AND port = ?2",
                params![id, port],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

fn delivery_row(r: &Row<'_>) -> rusqlite::Result<DeliveryRow> {
    Ok(DeliveryRow {
        webhook: r.get(0)?,
        delivery: r.get(1)?,
        event_id: r.get(2)?,
        event_type: r.get(3)?,
        attempt: r.get(4)?,
        at_ms: r.get(5)?,
        outcome: r.get(6)?,
        status: r.get(7)?,
        error: r.get(8)?,
        duration_ms: r.get(9)?,
    })
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as u32;
    let tx = conn.transaction()?;
    let found: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > known {
        return Err(StoreError::TooNew { found, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as u32 + 1)?;
    }
    tx.commit()?;
    Ok(())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn map_json(m: &BTreeMap<String, String>) -> String {
    serde_json::to_string(m).unwrap_or_else(|_| "{}".into())
}

fn handle_json(h: Option<&BackendHandle>) -> Option<String> {
    h.and_then(|h| serde_json::to_string(h).ok())
}

fn on_timeout_str(o: OnTimeout) -> &'static str {
    match o {
        OnTimeout::Kill => "kill",
        OnTimeout::Pause => "pause",
    }
}

/// Reads a row; the outer `Result` is `SQLite`'s, the inner one says whether the stored text made sense.
fn from_row(r: &Row<'_>) -> rusqlite::Result<Result<SandboxRecord, StoreError>> {
    let id: String = r.get("id")?;
    let state: String = r.get("state")?;
    let env: String = r.get("env")?;
    let metadata: String = r.get("metadata")?;
    let on_timeout: String = r.get("on_timeout")?;
    let handle: Option<String> = r.get("handle")?;
    let opt_u64 = |name: &str| -> rusqlite::Result<Option<u64>> {
        Ok(r.get::<_, Option<i64>>(name)?
            .map(|v| u64::try_from(v).unwrap_or(0)))
    };
    let memory_mb = opt_u64("memory_mb")?;
    let pids = opt_u64("pids")?;
    let disk_mb = opt_u64("disk_mb")?;
    let template: String = r.get("template")?;
    let cpu: Option<f64> = r.get("cpu")?;
    let timeout_secs = u64::try_from(r.get::<_, i64>("timeout_secs")?).unwrap_or(0);
    let created_at_ms: i64 = r.get("created_at_ms")?;
    let expires_at_ms: Option<i64> = r.get("expires_at_ms")?;
    let error: Option<String> = r.get("error")?;
    let tenant: String = r.get("tenant")?;
    let volumes: String = r.get("volumes")?;
    let pool: Option<String> = r.get("pool")?;

    let corrupt = |why: String| StoreError::Corrupt {
        id: id.clone(),
        why,
    };
    let parsed = (|| {
        let state = state.parse::<SandboxState>().map_err(corrupt)?;
        let on_timeout = match on_timeout.as_str() {
            "kill" => OnTimeout::Kill,
            "pause" => OnTimeout::Pause,
            other => return Err(corrupt(format!("unknown on_timeout {other:?}"))),
        };
        let env = serde_json::from_str(&env).map_err(|e| corrupt(format!("env: {e}")))?;
        let metadata =
            serde_json::from_str(&metadata).map_err(|e| corrupt(format!("metadata: {e}")))?;
        let handle = handle
            .map(|h| serde_json::from_str(&h))
            .transpose()
            .map_err(|e| corrupt(format!("handle: {e}")))?;
        let volumes =
            serde_json::from_str(&volumes).map_err(|e| corrupt(format!("volumes: {e}")))?;
        Ok(SandboxRecord {
            id: id.clone(),
            state,
            template,
            cpu,
            memory_mb,
            pids,
            disk_mb,
            env,
            metadata,
            on_timeout,
            timeout_secs,
            created_at_ms,
            expires_at_ms,
            error,
            handle,
            tenant: tenant.clone(),
            volumes,
            pool,
        })
    })();
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, expires: Option<i64>) -> SandboxRecord {
        SandboxRecord {
            id: id.into(),
            state: SandboxState::Running,
            template: "base".into(),
            cpu: Some(0.5),
            memory_mb: Some(256),
            pids: None,
            disk_mb: None,
            env: BTreeMap::from([("A".into(), "1".into())]),
            metadata: BTreeMap::from([("team".into(), "ml".into())]),
            on_timeout: OnTimeout::Pause,
            timeout_secs: 300,
            created_at_ms: 1,
            expires_at_ms: expires,
            error: None,
            handle: Some(BackendHandle {
                agent_socket: "/x/agent.sock".into(),
                init_pid: 42,
                data: serde_json::json!({"starttime": 7}),
            }),
            tenant: "default".into(),
            volumes: Vec::new(),
            pool: None,
        }
    }

    #[tokio::test]
    async fn a_claim_takes_only_a_waiting_sandbox_and_stores_its_token_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("sandpit.db")).unwrap();
        let waiting = SandboxRecord {
            pool: Some("base".into()),
            tenant: String::new(),
            expires_at_ms: None,
            ..record("p", None)
        };
        store.insert(waiting.clone()).await.unwrap();
        store
            .insert(SandboxRecord {
                state: SandboxState::Paused,
                ..waiting.clone()
            })
            .await
            .unwrap_err(); // same id: refused
        store
            .insert(SandboxRecord {
                id: "q".into(),
                state: SandboxState::Paused,
                ..waiting.clone()
            })
            .await
            .unwrap();
        let claim = Claim {
            tenant: "acme".into(),
            env: BTreeMap::from([("B".into(), "2".into())]),
            metadata: BTreeMap::new(),
            on_timeout: OnTimeout::Kill,
            timeout_secs: 60,
            created_at_ms: 5,
            expires_at_ms: 60_005,
        };
        // Another pool's, or not running: not claimable, nothing written.
        for (id, template) in [("p", "other"), ("q", "base")] {
            let got = store.claim(id, template, claim.clone(), "h0".into()).await;
            assert!(got.unwrap().is_none(), "{id} from {template}");
        }
        assert!(store.sandbox_tokens_all().await.unwrap().is_empty());
        assert_eq!(store.get("p").await.unwrap().unwrap(), waiting);

        let rec = store
            .claim("p", "base", claim, "h1".into())
            .await
            .unwrap()
            .expect("claimable");
        assert_eq!(
            (rec.tenant.as_str(), rec.pool.as_ref(), rec.expires_at_ms),
            ("acme", None, Some(60_005))
        );
        assert_eq!(store.get("p").await.unwrap().unwrap(), rec);
        assert_eq!(
            store.sandbox_tokens_all().await.unwrap(),
            vec![("p".to_owned(), "h1".to_owned())]
        );
    }

    #[tokio::test]
    async fn round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sandpit.db");
        let store = Store::open(&path).unwrap();
        store.insert(record("a", Some(100))).await.unwrap();
        store.insert(record("b", None)).await.unwrap();
        let mut a = store.get("a").await.unwrap().unwrap();
        assert_eq!(a, record("a", Some(100)));
        a.state = SandboxState::Paused;
        a.expires_at_ms = None;
        store.update(a.clone()).await.unwrap();
        assert_eq!(store.next_deadline().await.unwrap(), None);
        drop(store);

        let store = Store::open(&path).unwrap();
        assert_eq!(store.get("a").await.unwrap().unwrap(), a);
        assert_eq!(store.list().await.unwrap().len(), 2);
        assert!(store.delete("a").await.unwrap());
        assert!(!store.delete("a").await.unwrap());
        assert!(store.get("a").await.unwrap().is_none());
        assert_eq!(
            store.count_by_state().await.unwrap(),
            vec![(SandboxState::Running, 1)]
        );
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sandpit.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }
}
