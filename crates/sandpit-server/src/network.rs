//! Sandbox networking in the daemon: the bridge between the engine and `sandpit-net`.
//!
//! Owns each sandbox's [`NetRecord`] (its slot in the daemon's block, its policy as given and the
//! policy generation), persisted in the store's `sandbox_network` table so that a restarted daemon
//! restores every live sandbox's firewall entries. The engine calls [`SandboxNet::attach`] before a
//! create and [`SandboxNet::release`] after a destroy; the API calls [`SandboxNet::policy`] and
//! [`SandboxNet::set_policy`] for `GET/PUT /v1/sandboxes/{id}/network`. Policy syntax is checked once, by
//! `sandpit_types::network::NetworkPolicy::validate`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sandpit_net::{Attachment, LiveSandbox, NetConfig, Network};
use sandpit_types::network::{Cidr, Egress, NetworkPolicy, ParsedPolicy};
use sandpit_types::sandbox::SandboxState;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::{BackendKind, Config};
use crate::engine::EngineError;
use crate::store::Store;

/// The networking part of the configuration, checked.
#[derive(Debug)]
pub struct NetSettings;

impl NetSettings {
    /// `sandpit-net`'s configuration from the daemon's; the error names the bad setting.
    pub fn from_config(c: &Config) -> Result<NetConfig, String> {
        let pool = Cidr::parse(&c.network_pool)
            .map_err(|e| format!("network_pool {:?}: {e}", c.network_pool))?;
        if !matches!(pool, Cidr::V4(_, len) if len <= sandpit_net::BLOCK_PREFIX) {
            return Err(format!(
                "network_pool {:?}: must be an IPv4 range of /{} or larger",
                c.network_pool,
                sandpit_net::BLOCK_PREFIX
            ));
        }
        let opt_in = c
            .egress_opt_in
            .iter()
            .map(|o| Cidr::parse(o).map_err(|e| format!("egress_opt_in {o:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let dns_upstreams = c
            .dns_upstream
            .iter()
            .map(|u| {
                u.parse::<SocketAddr>()
                    .or_else(|_| {
                        u.parse::<std::net::IpAddr>()
                            .map(|ip| SocketAddr::new(ip, 53))
                    })
                    .map_err(|_| format!("dns_upstream {u:?}: expected IP or IP:PORT"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if c.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        let domain = &c.preview_domain;
        if domain.is_empty()
            || domain.starts_with('.')
            || domain.ends_with('.')
            || !domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(format!(
                "preview_domain {domain:?}: expected a host name such as localhost or preview.example.com"
            ));
        }
        Ok(NetConfig {
            pool,
            opt_in,
            max_connections: c.max_connections,
            default_egress: c.default_egress,
            dns_upstreams,
            ..NetConfig::default()
        })
    }
}

/// What the daemon remembers about a sandbox's network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetRecord {
    pub attachment: Attachment,
    /// The policy as in force, `egress` filled in.
    pub policy: NetworkPolicy,
    pub generation: u32,
}

/// The daemon's sandbox network.
#[derive(Debug)]
pub struct SandboxNet {
    net: Arc<Network>,
    store: Store,
    records: Mutex<HashMap<String, NetRecord>>,
    default_egress: Egress,
}

fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(format!("network: {e}"))
}

impl SandboxNet {
    /// Starts networking when the configuration asks for it and the backend can use it (`isolate`).
    /// Live sandboxes recorded in the store get their firewall entries back.
    pub async fn start(config: &Config, store: &Store) -> Result<Option<Arc<Self>>, String> {
        if !config.network || config.backend != BackendKind::Isolate {
            return Ok(None);
        }
        let cfg = NetSettings::from_config(config)?;
        let live_ids: std::collections::HashSet<String> = store
            .list()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|r| matches!(r.state, SandboxState::Running | SandboxState::Paused))
            .map(|r| r.id)
            .collect();
        let mut records = HashMap::new();
        for (id, data) in store.network_all().await.map_err(|e| e.to_string())? {
            match serde_json::from_str::<NetRecord>(&data) {
                Ok(r) if live_ids.contains(&id) => {
                    records.insert(id, r);
                }
                _ => {
                    let _ = store.network_forget(&id).await;
                }
            }
        }
        let default_egress = cfg.default_egress;
        let live: Vec<LiveSandbox> = records
            .values()
            .map(|r| LiveSandbox {
                attachment: r.attachment.clone(),
                policy: r.policy.validate(default_egress).ok(),
                generation: r.generation,
            })
            .collect();
        let owner = config.state_dir.clone();
        let net = tokio::task::spawn_blocking(move || Network::start(cfg, &owner, &live))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| {
                format!("sandbox networking: {e} (start with `--network off` to run without)")
            })?;
        // Records for another block (the old one was taken while this daemon was down) are stale.
        let block = net.block();
        records.retain(|_, r| block.slot_of(r.attachment.addr) == Some(r.attachment.slot));
        Ok(Some(Arc::new(Self {
            net,
            store: store.clone(),
            records: Mutex::new(records),
            default_egress,
        })))
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<String, NetRecord>> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs the resolver and the pin expiry until `stop`.
    pub fn spawn_services(
        self: &Arc<Self>,
        stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let resolver = self.net.resolver();
        let this = self.clone();
        tokio::spawn(async move {
            let mut stop2 = stop.clone();
            let dns = tokio::spawn(async move {
                if let Err(e) = resolver.serve(stop).await {
                    tracing::error!(error = %e, "the sandboxes' DNS resolver stopped");
                }
            });
            loop {
                tokio::select! {
                    _ = async { stop2.wait_for(|s| *s).await.is_ok() } => break,
                    () = tokio::time::sleep(Duration::from_secs(5)) => {
                        let net = this.net.clone();
                        let _ = tokio::task::spawn_blocking(move || net.housekeeping()).await;
                    }
                }
            }
            let _ = dns.await;
        })
    }

    /// Checks a policy (400 naming the bad entry) and fills in `egress`. `None` when it is the
    /// daemon's default policy, which needs no firewall work.
    pub fn check(
        &self,
        p: Option<&NetworkPolicy>,
    ) -> Result<(NetworkPolicy, Option<ParsedPolicy>), EngineError> {
        let p = p.cloned().unwrap_or_default();
        let parsed = p
            .validate(self.default_egress)
            .map_err(EngineError::InvalidArgument)?;
        let filled = NetworkPolicy {
            egress: Some(parsed.egress),
            ..p
        };
        let is_default = parsed.egress == self.default_egress
            && parsed.allow.is_empty()
            && parsed.deny.is_empty();
        Ok((filled, (!is_default).then_some(parsed)))
    }

    /// Gives sandbox `id` a slot with `policy` (checked by [`Self::check`]) and records it, on the
    /// calling thread (a blocking one: the firewall work and the store write block).
    pub fn attach_blocking(
        &self,
        id: &str,
        policy: NetworkPolicy,
        parsed: Option<&ParsedPolicy>,
    ) -> Result<Attachment, EngineError> {
        let (att, generation) = self.net.attach(parsed).map_err(|e| match e {
            sandpit_net::NetError::Exhausted(_) => {
                EngineError::Backend(crate::backend::BackendError::Exhausted(e.to_string()))
            }
            other => internal(other),
        })?;
        let rec = NetRecord {
            attachment: att.clone(),
            policy,
            generation,
        };
        let saved = serde_json::to_string(&rec)
            .map_err(internal)
            .and_then(|data| {
                self.store
                    .blocking(|c| crate::store::network_put(c, id, &data))
                    .map_err(EngineError::from)
            });
        if let Err(e) = saved {
            self.net.release(&att);
            return Err(e);
        }
        self.records().insert(id.to_owned(), rec);
        Ok(att)
    }

    async fn save(&self, id: &str, rec: &NetRecord) -> Result<(), EngineError> {
        let data = serde_json::to_string(rec).map_err(internal)?;
        self.store
            .network_put(id, data)
            .await
            .map_err(EngineError::from)
    }

    /// Frees what sandbox `id` held (after its namespace is gone) and forgets its ports and tokens.
    pub async fn release(&self, id: &str) {
        let rec = self.records().remove(id);
        if let Some(rec) = rec {
            let net = self.net.clone();
            let _ = tokio::task::spawn_blocking(move || net.release(&rec.attachment)).await;
        }
        if let Err(e) = self.store.network_forget(id).await {
            tracing::warn!(sandbox = %id, error = %e, "cannot forget a sandbox's network records");
        }
    }

    /// The policy in force for `id`.
    pub fn policy(&self, id: &str) -> Option<NetworkPolicy> {
        self.records().get(id).map(|r| r.policy.clone())
    }

    /// Replaces `id`'s policy while it runs; connections the new policy forbids are cut.
    pub async fn set_policy(
        &self,
        id: &str,
        p: &NetworkPolicy,
    ) -> Result<NetworkPolicy, EngineError> {
        let (filled, parsed) = self.check(Some(p))?;
        let Some(mut rec) = self.records().get(id).cloned() else {
            return Err(EngineError::Conflict(format!(
                "sandbox {id} has no network (it is not running, or was created without networking)"
            )));
        };
        let net = self.net.clone();
        let slot = rec.attachment.slot;
        let generation = tokio::task::spawn_blocking(move || net.set_policy(slot, parsed.as_ref()))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        rec.policy = filled.clone();
        rec.generation = generation;
        self.save(id, &rec).await?;
        self.records().insert(id.to_owned(), rec);
        Ok(filled)
    }

    /// Called when the daemon stops.
    pub fn shutdown(&self) {
        self.net.shutdown();
    }

    /// The daemon's network (block, firewall), for tests and diagnostics.
    pub fn network(&self) -> &Arc<Network> {
        &self.net
    }
}
