//! Warm pools: per template, sandboxes created ahead that wait, nobody's, until a create claims one.
//!
//! A pool is a size per template (`PUT /v1/templates/{name}/pool`, kept in the store; `--pool
//! TEMPLATE=SIZE` sets a default for a template that has none). The refill loop ([`Pools::run`]) creates
//! the missing sandboxes one at a time, with a pause between two, and only once no claim has been made for
//! a moment ([`CLAIM_QUIET`]), so that a refill takes the host's spare time rather than that of its
//! running sandboxes or of the first commands in the sandbox just claimed. A pooled sandbox is a sandbox record with
//! `pool = Some(template)`: no tenant, no deadline, in no list and no quota; it survives a daemon restart
//! like any sandbox, and the pool is rebuilt from the store at start.
//!
//! A create that a pooled sandbox can serve ([`servable`]) takes one ([`crate::engine::Engine::create`])
//! and gets the request's environment (set in the agent), metadata, timeout and tenant at that moment.
//! Limits (`cpu`, `memory_mb`, `pids`, `disk_mb`), `network` and `volumes` are fixed when a sandbox is
//! made, so a request naming any of them is created cold.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sandpit_types::sandbox::{CreateSandboxRequest, PoolInfo};
use tokio::sync::{Notify, watch};

use crate::engine::{Engine, EngineError};

/// The largest pool a template may have.
pub const MAX_POOL: u64 = 256;

/// The pause between two refill creates.
const REFILL_GAP: Duration = Duration::from_millis(20);
/// How long the refill holds off after a claim, so that the claimed sandbox's first commands (what a
/// create from a pool is for) do not share the host's cores with the making of its replacement. Each claim
/// moves the end of the quiet spell: a burst of claims is refilled after the burst.
const CLAIM_QUIET: Duration = Duration::from_millis(100);
/// How long a template whose pooled create failed waits before the next try.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// Whether a pooled sandbox can serve `req`: it names nothing that is fixed when a sandbox is made.
pub fn servable(req: &CreateSandboxRequest) -> bool {
    req.cpu.is_none()
        && req.memory_mb.is_none()
        && req.pids.is_none()
        && req.disk_mb.is_none()
        && req.network.is_none()
        && req.volumes.is_empty()
}

#[derive(Debug, Default)]
struct State {
    sizes: HashMap<String, u64>,
    /// Waiting sandboxes, oldest first.
    ready: HashMap<String, VecDeque<String>>,
    /// Creates in flight per template.
    filling: HashMap<String, u64>,
    /// No refill create starts before this ([`CLAIM_QUIET`] after the latest claim).
    quiet_until: Option<tokio::time::Instant>,
}

/// The pools' state; the engine owns one.
#[derive(Debug, Default)]
pub struct Pools {
    state: Mutex<State>,
    wake: Notify,
}

impl Pools {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A waiting sandbox of `template`'s pool, taken out of it.
    pub fn take(&self, template: &str) -> Option<String> {
        self.state().ready.get_mut(template)?.pop_front()
    }

    /// Returns a sandbox a claim did not use.
    pub fn put_back(&self, template: &str, id: String) {
        self.state()
            .ready
            .entry(template.to_owned())
            .or_default()
            .push_front(id);
    }

    /// Wakes the refill loop.
    pub fn refill(&self) {
        self.wake.notify_one();
    }

    /// A create took a pooled sandbox: the refill makes its replacement once the host has been free of
    /// claims for [`CLAIM_QUIET`].
    pub fn claimed(&self) {
        self.state().quiet_until = Some(tokio::time::Instant::now() + CLAIM_QUIET);
        self.wake.notify_one();
    }

    /// Until when the refill must wait, if a claim was made less than [`CLAIM_QUIET`] before `now`.
    fn quiet_until(&self, now: tokio::time::Instant) -> Option<tokio::time::Instant> {
        self.state().quiet_until.filter(|t| *t > now)
    }

    /// `template`'s pool as the API shows it.
    pub fn info(&self, template: &str) -> PoolInfo {
        let st = self.state();
        let size = st.sizes.get(template).copied().unwrap_or(0);
        let ready = st.ready.get(template).map_or(0, |r| r.len() as u64);
        // What the pool owes counts as filling whether its create has started or waits its turn (one at
        // a time, after the quiet spell that follows a claim): `ready + filling` is `size` while it
        // refills, and more only while a create outlives a shrink.
        let in_flight = st.filling.get(template).copied().unwrap_or(0);
        PoolInfo {
            template: template.to_owned(),
            size,
            ready,
            filling: in_flight.max(size.saturating_sub(ready)),
        }
    }

    /// Rebuilds the pools from the store at start: the sizes (`defaults` for templates the store has
    /// none for), and the pooled sandboxes that survived.
    pub async fn load(
        &self,
        engine: &Arc<Engine>,
        defaults: &[(String, u64)],
    ) -> Result<(), EngineError> {
        let mut sizes: HashMap<String, u64> = engine.store().pools().await?.into_iter().collect();
        for (t, n) in defaults {
            if !sizes.contains_key(t) {
                engine.store().set_pool(t, *n).await?;
                sizes.insert(t.clone(), *n);
            }
        }
        let mut ready: HashMap<String, VecDeque<String>> = HashMap::new();
        let mut dead = Vec::new();
        for r in engine.store().list().await? {
            match (&r.pool, r.state) {
                (Some(t), sandpit_types::sandbox::SandboxState::Running) => {
                    ready.entry(t.clone()).or_default().push_back(r.id);
                }
                // Lost while waiting (a reboot): nobody can see or delete it but us.
                (Some(_), _) => dead.push(r.id),
                (None, _) => {}
            }
        }
        for id in dead {
            let _ = engine.delete(&id).await;
        }
        let mut st = self.state();
        st.sizes = sizes;
        st.ready = ready;
        drop(st);
        self.refill();
        Ok(())
    }

    /// Sets `template`'s pool size (0 removes the pool); waiting sandboxes beyond it are deleted.
    pub async fn set_size(
        &self,
        engine: &Arc<Engine>,
        template: &str,
        size: u64,
    ) -> Result<PoolInfo, EngineError> {
        if size > MAX_POOL {
            return Err(EngineError::InvalidArgument(format!(
                "pool size {size}: at most {MAX_POOL} sandboxes wait per template"
            )));
        }
        engine.store().set_pool(template, size).await?;
        let extra: Vec<String> = {
            let mut st = self.state();
            if size == 0 {
                st.sizes.remove(template);
            } else {
                st.sizes.insert(template.to_owned(), size);
            }
            let ready = st.ready.entry(template.to_owned()).or_default();
            let keep = usize::try_from(size).unwrap_or(usize::MAX);
            if ready.len() > keep {
                ready.split_off(keep).into_iter().collect()
            } else {
                Vec::new()
            }
        };
        for id in extra {
            let _ = engine.delete(&id).await;
        }
        self.refill();
        Ok(self.info(template))
    }

    /// The template that most needs a sandbox now (fewest waiting against its size), counted as filling.
    fn next_to_fill(&self, backoff: &HashMap<String, tokio::time::Instant>) -> Option<String> {
        let mut st = self.state();
        let now = tokio::time::Instant::now();
        let pick = st
            .sizes
            .iter()
            .filter(|(t, _)| backoff.get(*t).is_none_or(|until| *until <= now))
            .filter_map(|(t, size)| {
                let have = st.ready.get(t).map_or(0, VecDeque::len) as u64
                    + st.filling.get(t).copied().unwrap_or(0);
                (have < *size).then(|| (have * 1000 / size.max(&1), t.clone()))
            })
            .min()
            .map(|(_, t)| t)?;
        *st.filling.entry(pick.clone()).or_default() += 1;
        Some(pick)
    }

    /// Keeps every pool full until `shutdown`: one create at a time, [`REFILL_GAP`] apart.
    pub async fn run(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
        let mut backoff: HashMap<String, tokio::time::Instant> = HashMap::new();
        loop {
            if let Some(until) = engine.pools.quiet_until(tokio::time::Instant::now()) {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                continue;
            }
            let Some(template) = engine.pools.next_to_fill(&backoff) else {
                let retry = backoff.values().min().copied();
                tokio::select! {
                    () = engine.pools.wake.notified() => {}
                    () = async {
                        match retry {
                            Some(t) => tokio::time::sleep_until(t).await,
                            None => std::future::pending().await,
                        }
                    } => { backoff.retain(|_, t| *t > tokio::time::Instant::now()); }
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                continue;
            };
            let req = CreateSandboxRequest {
                template: Some(template.clone()),
                ..CreateSandboxRequest::default()
            };
            let made = engine.create_cold(req, "", Some(template.clone())).await;
            let surplus = {
                let mut st = engine.pools.state();
                if let Some(n) = st.filling.get_mut(&template) {
                    *n = n.saturating_sub(1);
                }
                let size = st.sizes.get(&template).copied().unwrap_or(0);
                match &made {
                    // The pool shrank while this one was being made.
                    Ok(info) if st.ready.get(&template).map_or(0, VecDeque::len) as u64 >= size => {
                        Some(info.id.clone())
                    }
                    Ok(info) => {
                        st.ready
                            .entry(template.clone())
                            .or_default()
                            .push_back(info.id.clone());
                        None
                    }
                    Err(_) => None,
                }
            };
            if let Some(id) = surplus {
                let _ = engine.delete(&id).await;
            }
            if let Err(e) = made {
                tracing::warn!(template = %template, error = %e, "cannot fill the warm pool; retrying in 5 s");
                backoff.insert(template, tokio::time::Instant::now() + RETRY_AFTER_FAILURE);
            }
            if *shutdown.borrow() {
                return;
            }
            tokio::time::sleep(REFILL_GAP).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_holds_the_refill_off_until_claims_have_stopped_for_a_while() {
        let pools = Pools::default();
        let t0 = tokio::time::Instant::now();
        assert_eq!(pools.quiet_until(t0), None, "no claim yet: refill at once");
        pools.claimed();
        let first = pools.quiet_until(t0).expect("a claim holds the refill off");
        assert!(first >= t0 + CLAIM_QUIET, "{:?}", first - t0);
        assert_eq!(
            pools.quiet_until(first),
            None,
            "over once the spell has passed"
        );
        std::thread::sleep(Duration::from_millis(5));
        pools.claimed();
        let second = pools.quiet_until(t0).expect("held off");
        assert!(second > first, "each claim moves the end of the spell");
    }

    #[test]
    fn only_requests_without_make_time_options_are_served_from_a_pool() {
        let mut r = CreateSandboxRequest::default();
        r.env.insert("A".into(), "1".into());
        r.metadata.insert("k".into(), "v".into());
        r.timeout = Some(60);
        assert!(servable(&r));
        for change in [
            |r: &mut CreateSandboxRequest| r.cpu = Some(1.0),
            |r: &mut CreateSandboxRequest| r.memory_mb = Some(256),
            |r: &mut CreateSandboxRequest| r.pids = Some(64),
            |r: &mut CreateSandboxRequest| r.disk_mb = Some(64),
            |r: &mut CreateSandboxRequest| {
                r.volumes.push(sandpit_types::volumes::VolumeMount {
                    name: "v".into(),
                    path: "/v".into(),
                    read_only: false,
                });
            },
        ] {
            let mut c = r.clone();
            change(&mut c);
            assert!(!servable(&c));
        }
    }

    #[test]
    fn the_emptiest_pool_fills_first_and_a_failing_one_waits() {
        let p = Pools::default();
        {
            let mut st = p.state();
            st.sizes.insert("a".into(), 4);
            st.sizes.insert("b".into(), 2);
            st.ready
                .insert("a".into(), VecDeque::from(vec!["x".into()]));
        }
        let none = HashMap::new();
        assert_eq!(p.info("b").filling, 2, "owed, none started yet");
        assert_eq!(p.next_to_fill(&none).as_deref(), Some("b"));
        assert_eq!(p.info("b").filling, 2, "one started, one waiting its turn");
        assert_eq!(p.info("a").filling, 3);
        let mut backoff = HashMap::new();
        backoff.insert(
            "b".to_owned(),
            tokio::time::Instant::now() + Duration::from_secs(60),
        );
        assert_eq!(p.next_to_fill(&backoff).as_deref(), Some("a"));
        assert_eq!(p.take("a").as_deref(), Some("x"));
        assert_eq!(p.take("a"), None);
    }
}
