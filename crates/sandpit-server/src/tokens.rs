//! Port-scoped preview tokens: which ports of which sandbox are exposed, publicly or behind a token.
//!
//! A token opens exactly one `(sandbox, port)`: a token for port 3000 never opens 8080 (Daytona #3032).
//! Only its SHA-256 is kept (in memory for the request path, in the store's `port_tokens` table across
//! restarts); the token itself is returned once, by `POST /v1/sandboxes/{id}/ports/{port}`. API keys
//! (`crate::auth::Keys`) are kept the same way, with [`digest`] from here; per-sandbox access tokens
//! (issue 17, not built yet) belong here, so that every credential a browser may hold is checked in one
//! place.

use std::collections::HashMap;
use std::sync::RwLock;

use subtle::ConstantTimeEq as _;

use crate::store::{Store, StoreError};
use crate::time::now_ms;

/// The port an entry stands in for when it is about every port of its sandbox: E2B's sandbox-wide
/// `allowPublicTraffic` and traffic access token (`crate::e2b`). A port's own entry, when it has one, wins.
pub const EVERY_PORT: u16 = 0;

/// How a preview request was let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// The port is public.
    Public,
    /// A valid, unexpired token for this very port.
    Token,
    Denied,
}

#[derive(Debug, Default, Clone)]
struct PortState {
    public: bool,
    /// SHA-256 of each token, with its expiry (ms since the epoch).
    tokens: Vec<([u8; 32], Option<i64>)>,
}

/// Exposed ports and their tokens.
#[derive(Debug)]
pub struct PortAccess {
    store: Store,
    ports: RwLock<HashMap<(String, u16), PortState>>,
}

/// The prefix of every port token (so that leaked ones are easy to recognise in logs and scanners).
pub const TOKEN_PREFIX: &str = "spt_";

/// SHA-256 of a credential: what is kept of port tokens and API keys.
pub(crate) fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub(crate) fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

pub(crate) fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl PortAccess {
    /// Loads what the store holds.
    pub async fn load(store: Store) -> Result<Self, StoreError> {
        let (ports, tokens) = store.ports_all().await?;
        let mut map: HashMap<(String, u16), PortState> = HashMap::new();
        for (id, port, public) in ports {
            map.entry((id, port)).or_default().public = public;
        }
        for (hash, id, port, exp) in tokens {
            if let Some(h) = unhex(&hash) {
                map.entry((id, port)).or_default().tokens.push((h, exp));
            }
        }
        Ok(Self {
            store,
            ports: RwLock::new(map),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<(String, u16), PortState>> {
        self.ports
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<(String, u16), PortState>> {
        self.ports
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Exposes `port` of sandbox `id` (public or not) and issues a new token for it, valid for
    /// `expires_in` seconds (until the port is closed when `None`). Returns the token and its expiry.
    pub async fn expose(
        &self,
        id: &str,
        port: u16,
        public: bool,
        expires_in: Option<u64>,
    ) -> Result<(String, Option<i64>), StoreError> {
        let token = format!("{TOKEN_PREFIX}{}", crate::auth::random_hex(24));
        let hash = digest(&token);
        let exp = expires_in.map(|s| {
            now_ms().saturating_add(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX))
        });
        self.store
            .port_put(
                (id.to_owned(), port, public),
                Some((hex(&hash), id.to_owned(), port, exp)),
            )
            .await?;
        let mut ports = self.write();
        let st = ports.entry((id.to_owned(), port)).or_default();
        st.public = public;
        let now = now_ms();
        st.tokens.retain(|(_, e)| e.is_none_or(|e| e > now));
        st.tokens.push((hash, exp));
        Ok((token, exp))
    }

    /// Closes a port: private again, every token revoked. Returns whether it was exposed.
    pub async fn close(&self, id: &str, port: u16) -> Result<bool, StoreError> {
        self.store.port_delete(id, port).await?;
        Ok(self.write().remove(&(id.to_owned(), port)).is_some())
    }

    /// The exposed ports of `id`: `(port, public)`, by port.
    pub fn list(&self, id: &str) -> Vec<(u16, bool)> {
        let mut v: Vec<(u16, bool)> = self
            .read()
            .iter()
            .filter(|((i, p), _)| i == id && *p != EVERY_PORT)
            .map(|((_, p), st)| (*p, st.public))
            .collect();
        v.sort_unstable();
        v
    }

    /// Whether a request for `(id, port)` carrying `token` may pass.
    pub fn check(&self, id: &str, port: u16, token: Option<&str>) -> Grant {
        let ports = self.read();
        let Some(st) = ports
            .get(&(id.to_owned(), port))
            .or_else(|| ports.get(&(id.to_owned(), EVERY_PORT)))
        else {
            return Grant::Denied;
        };
        if st.public {
            return Grant::Public;
        }
        let Some(token) = token else {
            return Grant::Denied;
        };
        let h = digest(token);
        let now = now_ms();
        let ok = st
            .tokens
            .iter()
            .any(|(t, e)| bool::from(t.ct_eq(&h)) && e.is_none_or(|e| e > now));
        if ok { Grant::Token } else { Grant::Denied }
    }

    /// Forgets a deleted sandbox's ports (the store rows go with its network records).
    pub fn forget(&self, id: &str) {
        self.write().retain(|(i, _), _| i != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_token_opens_its_own_port_only_and_closing_revokes_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let access = PortAccess::load(store.clone()).await.unwrap();
        let (t3000, _) = access.expose("sb", 3000, false, None).await.unwrap();
        access.expose("sb", 8080, false, None).await.unwrap();
        assert!(t3000.starts_with(TOKEN_PREFIX));
        assert_eq!(access.check("sb", 3000, Some(&t3000)), Grant::Token);
        assert_eq!(access.check("sb", 8080, Some(&t3000)), Grant::Denied);
        assert_eq!(access.check("other", 3000, Some(&t3000)), Grant::Denied);
        assert_eq!(access.check("sb", 3000, None), Grant::Denied);
        assert_eq!(access.check("sb", 3000, Some("spt_wrong")), Grant::Denied);
        // Survives a restart (only hashes are stored).
        let again = PortAccess::load(store.clone()).await.unwrap();
        assert_eq!(again.check("sb", 3000, Some(&t3000)), Grant::Token);
        access.expose("sb", 3000, true, None).await.unwrap();
        assert_eq!(access.check("sb", 3000, None), Grant::Public);
        assert!(access.close("sb", 3000).await.unwrap());
        assert_eq!(access.check("sb", 3000, Some(&t3000)), Grant::Denied);
        // An expired token is refused.
        let (short, _) = access.expose("sb", 9000, false, Some(0)).await.unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(access.check("sb", 9000, Some(&short)), Grant::Denied);
    }
}
