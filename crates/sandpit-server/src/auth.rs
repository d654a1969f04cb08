//! Authentication: the keys a request may carry and what each may do.
//!
//! The key file: when the operator configures no key, a random one is generated on first start and kept
//! (mode 0600) in `STATE_DIR/api-key`, so that a fresh install is never open. It is an `admin` key of
//! tenant `default`, not listed and not revocable (it is how an operator gets in).
//!
//! More keys ([`Keys`], `/v1/keys`): each has an id, a name, a tenant and scopes. A key reads
//! `sp_<id>_<secret>`; only the SHA-256 of the whole key is kept (in memory for the request path, in the
//! store's `api_keys` table across restarts), so a leaked database opens nothing. The id in the key finds
//! the record in O(1); the digests are compared in constant time. A revoked or expired key fails on the
//! very next request, because every request is checked against the in-memory table.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use std::collections::HashMap;
use std::sync::RwLock;

use sandpit_types::keys::{CreateKeyRequest, CreatedKey, DEFAULT_TENANT, KeyInfo, Scope};
use subtle::ConstantTimeEq;

use crate::store::{KeyRow, Store, StoreError};
use crate::tokens::{digest, hex, unhex};

/// Where the key came from, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Configured,
    File(PathBuf),
    Generated(PathBuf),
}

/// The daemon's API key.
#[derive(Clone)]
pub struct ApiKey {
    key: Vec<u8>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the API key file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot write the API key file {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("the API key file {0} is empty")]
    Empty(PathBuf),
}

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into().into_bytes(),
        }
    }

    /// The configured key if any, else the one in `STATE_DIR/api-key`, else a new one written there.
    pub fn load_or_create(
        state_dir: &Path,
        configured: Option<&str>,
    ) -> Result<(Self, KeySource), AuthError> {
        if let Some(k) = configured {
            return Ok((Self::new(k), KeySource::Configured));
        }
        let path = state_dir.join("api-key");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let key = text.trim();
                if key.is_empty() {
                    return Err(AuthError::Empty(path));
                }
                return Ok((Self::new(key), KeySource::File(path)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(cause) => return Err(AuthError::Read { path, cause }),
        }
        let key = random_hex(32);
        let write = |path: &Path| -> std::io::Result<()> {
            // create_new: if another daemon raced us to it, fail instead of overwriting its key.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            f.write_all(key.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()
        };
        write(&path).map_err(|cause| AuthError::Write {
            path: path.clone(),
            cause,
        })?;
        Ok((Self::new(key), KeySource::Generated(path)))
    }

    /// Whether an `Authorization` header value carries this key (`Bearer <key>`, scheme case-insensitive).
    pub fn verify_header(&self, value: Option<&[u8]>) -> bool {
        bearer_token(value).is_some_and(|t| self.verify(t))
    }

    pub fn verify(&self, candidate: &[u8]) -> bool {
        // ct_eq on slices of different lengths is false without comparing contents; only the length, which
        // is not secret, can leak.
        bool::from(self.key.as_slice().ct_eq(candidate))
    }
}

/// The credential in an `Authorization` header value (`Bearer <key>`, scheme case-insensitive).
pub fn bearer_token(value: Option<&[u8]>) -> Option<&[u8]> {
    let value = value?;
    if !value.get(..7)?.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    Some(value[7..].trim_ascii())
}

/// Who a request is: the key it carried, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `file` for the key file's key, `access-token:<sandbox id>` for a sandbox's access token.
    pub key_id: String,
    pub tenant: String,
    pub scopes: Vec<Scope>,
    /// Set for a sandbox's access token: the one sandbox it reaches.
    pub sandbox: Option<String>,
    /// SHA-256 of the credential presented (zero for the key file's key): what
    /// [`Keys::still_valid`] compares with the current one.
    pub credential: [u8; 32],
    /// When the credential expires (ms since the epoch).
    pub expires_at_ms: Option<i64>,
}

impl Principal {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// The id the key file's key goes by in logs and principals.
pub const FILE_KEY_ID: &str = "file";
/// The prefix of every key made by `/v1/keys` (easy to spot in logs and secret scanners).
pub const KEY_PREFIX: &str = "sp_";
/// The key id a signed URL's principal goes by: `signed-url:<signer key id>`.
pub const SIGNED_URL_PREFIX: &str = "signed-url:";
/// The prefix of every sandbox access token: `spa_<sandbox id>_<secret>`.
pub const SANDBOX_TOKEN_PREFIX: &str = "spa_";

/// A new sandbox access token (`spa_<id>_<secret>`) with what the store and the request path keep of it.
#[derive(Clone)]
pub struct SandboxToken {
    /// The secret, shown once to the creator.
    pub token: String,
    digest: [u8; 32],
}

impl SandboxToken {
    /// A new random token for sandbox `id`.
    pub fn mint(id: &str) -> Self {
        let token = format!("{SANDBOX_TOKEN_PREFIX}{id}_{}", random_hex(24));
        let digest = digest(&token);
        Self { token, digest }
    }

    /// What the store keeps (`sandbox_tokens.hash`): the hex SHA-256, never the token.
    pub fn stored_hash(&self) -> String {
        hex(&self.digest)
    }
}

// By hand, so that the secret never reaches a log through `{:?}`.
impl std::fmt::Debug for SandboxToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SandboxToken(..)")
    }
}

#[derive(Debug, Clone)]
struct KeyEntry {
    hash: [u8; 32],
    info: KeyInfo,
    expires_at_ms: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    #[error("no key with id {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Every key the daemon accepts: the key file's and those made by `/v1/keys`.
#[derive(Debug)]
pub struct Keys {
    file_key: ApiKey,
    store: Store,
    by_id: RwLock<HashMap<String, KeyEntry>>,
    /// Sandbox id → SHA-256 of its access token.
    sandbox_tokens: RwLock<HashMap<String, [u8; 32]>>,
    /// Bumped whenever a credential stops working (a key revoked, a token rotated or forgotten), so that
    /// responses still streaming to it can end ([`Keys::revocations`]).
    revoked: tokio::sync::watch::Sender<u64>,
}

fn scopes_text(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

impl Keys {
    /// The key file's key plus what the store holds (rows it cannot read are skipped with a warning:
    /// a key that cannot be checked opens nothing).
    pub async fn load(file_key: ApiKey, store: Store) -> Result<Self, StoreError> {
        let mut by_id = HashMap::new();
        for row in store.keys_all().await? {
            let scopes: Result<Vec<Scope>, _> =
                row.scopes.split(',').map(str::parse::<Scope>).collect();
            let (Some(hash), Ok(scopes)) = (unhex(&row.hash), scopes) else {
                tracing::warn!(key = %row.id, "unreadable API key record: ignored");
                continue;
            };
            by_id.insert(
                row.id.clone(),
                KeyEntry {
                    hash,
                    expires_at_ms: row.expires_at_ms,
                    info: KeyInfo {
                        id: row.id,
                        name: row.name,
                        tenant: row.tenant,
                        scopes,
                        created_at: crate::time::rfc3339(row.created_at_ms),
                        expires_at: row.expires_at_ms.map(crate::time::rfc3339),
                    },
                },
            );
        }
        let sandbox_tokens = store
            .sandbox_tokens_all()
            .await?
            .into_iter()
            .filter_map(|(id, hash)| Some((id, unhex(&hash)?)))
            .collect();
        Ok(Self {
            file_key,
            store,
            by_id: RwLock::new(by_id),
            sandbox_tokens: RwLock::new(sandbox_tokens),
            revoked: tokio::sync::watch::channel(0).0,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, KeyEntry>> {
        self.by_id
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, KeyEntry>> {
        self.by_id
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The principal a presented key stands for, if it is a valid, unrevoked, unexpired key.
    pub fn resolve(&self, presented: &[u8]) -> Option<Principal> {
        if self.file_key.verify(presented) {
            return Some(Principal {
                key_id: FILE_KEY_ID.into(),
                tenant: DEFAULT_TENANT.into(),
                scopes: vec![Scope::Admin],
                sandbox: None,
                credential: [0; 32],
                expires_at_ms: None,
            });
        }
        let text = std::str::from_utf8(presented).ok()?;
        if let Some(rest) = text.strip_prefix(SANDBOX_TOKEN_PREFIX) {
            let (id, _secret) = rest.rsplit_once('_')?;
            let tokens = self
                .sandbox_tokens
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let hash = digest(text);
            if !bool::from(tokens.get(id)?.ct_eq(&hash)) {
                return None;
            }
            return Some(Principal {
                key_id: format!("access-token:{id}"),
                tenant: String::new(),
                scopes: vec![Scope::Sandboxes],
                sandbox: Some(id.to_owned()),
                credential: hash,
                expires_at_ms: None,
            });
        }
        let (id, _secret) = text.strip_prefix(KEY_PREFIX)?.rsplit_once('_')?;
        let map = self.read();
        let entry = map.get(id)?;
        let hash = digest(text);
        if !bool::from(entry.hash.ct_eq(&hash)) {
            return None;
        }
        if entry
            .expires_at_ms
            .is_some_and(|exp| crate::time::now_ms() >= exp)
        {
            return None;
        }
        Some(Principal {
            key_id: entry.info.id.clone(),
            tenant: entry.info.tenant.clone(),
            scopes: entry.info.scopes.clone(),
            sandbox: None,
            credential: hash,
            expires_at_ms: entry.expires_at_ms,
        })
    }

    /// Changes whenever a credential stops working; see [`Keys::still_valid`].
    pub fn revocations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revoked.subscribe()
    }

    fn bump(&self) {
        self.revoked.send_modify(|n| *n += 1);
    }

    /// Whether the credential `who` was resolved from still works (not revoked, rotated or expired).
    pub fn still_valid(&self, who: &Principal) -> bool {
        if who
            .expires_at_ms
            .is_some_and(|exp| crate::time::now_ms() >= exp)
        {
            return false;
        }
        if who.key_id == FILE_KEY_ID {
            return true;
        }
        if let Some(signer) = who.key_id.strip_prefix(SIGNED_URL_PREFIX) {
            return self.signer_valid(signer);
        }
        let same = |h: &[u8; 32]| bool::from(h.ct_eq(&who.credential));
        match &who.sandbox {
            Some(id) => self
                .sandbox_tokens
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(id)
                .is_some_and(same),
            None => self.read().get(&who.key_id).is_some_and(|e| same(&e.hash)),
        }
    }

    /// Whether the credential that signed a URL (by its key id) still works: the key file's always, a
    /// key while it is neither revoked nor expired, a sandbox's access token while its sandbox has one.
    /// (A rotated token's URLs keep working until they expire: the id does not say which token signed.)
    pub fn signer_valid(&self, signer: &str) -> bool {
        if signer == FILE_KEY_ID {
            return true;
        }
        if let Some(id) = signer.strip_prefix("access-token:") {
            return self
                .sandbox_tokens
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains_key(id);
        }
        let now = crate::time::now_ms();
        self.read()
            .get(signer)
            .is_some_and(|e| e.expires_at_ms.is_none_or(|exp| now < exp))
    }

    /// Makes a key; its secret is in the answer and nowhere else.
    pub async fn create(&self, req: CreateKeyRequest) -> Result<CreatedKey, KeyError> {
        req.validate().map_err(KeyError::Invalid)?;
        let mut scopes = req.scopes;
        scopes.sort();
        scopes.dedup();
        let id = format!("k_{}", random_hex(8));
        let key = format!("{KEY_PREFIX}{id}_{}", random_hex(24));
        let hash = digest(&key);
        let now = crate::time::now_ms();
        let expires_at_ms = req
            .expires_in
            .map(|s| now.saturating_add(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)));
        let tenant = req.tenant.unwrap_or_else(|| DEFAULT_TENANT.into());
        self.store
            .key_put(KeyRow {
                id: id.clone(),
                hash: hex(&hash),
                name: req.name.clone(),
                tenant: tenant.clone(),
                scopes: scopes_text(&scopes),
                created_at_ms: now,
                expires_at_ms,
            })
            .await?;
        let info = KeyInfo {
            id: id.clone(),
            name: req.name,
            tenant,
            scopes,
            created_at: crate::time::rfc3339(now),
            expires_at: expires_at_ms.map(crate::time::rfc3339),
        };
        self.write().insert(
            id,
            KeyEntry {
                hash,
                info: info.clone(),
                expires_at_ms,
            },
        );
        tracing::info!(key = %info.id, name = %info.name, tenant = %info.tenant, "API key created");
        Ok(CreatedKey { key, info })
    }

    /// Every key made by `/v1/keys`, oldest first; never a secret.
    pub fn list(&self) -> Vec<KeyInfo> {
        let mut keys: Vec<KeyInfo> = self.read().values().map(|e| e.info.clone()).collect();
        keys.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        keys
    }

    /// Issues a new access token for sandbox `id`, replacing (and so revoking) any earlier one.
    pub async fn issue_sandbox_token(&self, id: &str) -> Result<String, KeyError> {
        let token = SandboxToken::mint(id);
        self.install_sandbox_token(id, &token.token).await?;
        Ok(token.token)
    }

    /// Makes `token` sandbox `id`'s access token in memory: for a token whose hash the caller has already
    /// stored, in the same transaction as the sandbox it opens (a create, a claim from a warm pool), so
    /// that a create costs one write to the store and not two.
    pub fn adopt_sandbox_token(&self, id: &str, token: &str) {
        self.sandbox_tokens
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_owned(), digest(token));
        self.bump();
    }

    /// Makes `token` (`spa_<id>_…`, made by the caller) sandbox `id`'s access token, replacing (and so
    /// revoking) any earlier one: the E2B surface's derived tokens (`crate::e2b`).
    pub async fn install_sandbox_token(&self, id: &str, token: &str) -> Result<(), KeyError> {
        if token
            .strip_prefix(SANDBOX_TOKEN_PREFIX)
            .and_then(|r| r.rsplit_once('_'))
            .is_none_or(|(owner, _)| owner != id)
        {
            return Err(KeyError::Invalid(format!(
                "a token of sandbox {id} must read {SANDBOX_TOKEN_PREFIX}{id}_<secret>"
            )));
        }
        let hash = digest(token);
        self.store.sandbox_token_put(id, hex(&hash)).await?;
        self.sandbox_tokens
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_owned(), hash);
        self.bump();
        Ok(())
    }

    /// Whether `token` is sandbox `id`'s current access token.
    pub fn sandbox_token_is(&self, id: &str, token: &str) -> bool {
        let hash = digest(token);
        self.sandbox_tokens
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .is_some_and(|h| bool::from(h.ct_eq(&hash)))
    }

    /// Forgets sandbox `id`'s access token (the sandbox is gone).
    pub async fn forget_sandbox(&self, id: &str) -> Result<(), KeyError> {
        self.sandbox_tokens
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        self.bump();
        Ok(self.store.sandbox_token_delete(id).await?)
    }

    /// Revokes a key: from the next request on, it opens nothing.
    pub async fn revoke(&self, id: &str) -> Result<(), KeyError> {
        // Out of the request path's table first, so that no request is let in while the row goes.
        let removed = self.write().remove(id);
        let existed = match self.store.key_delete(id).await {
            Ok(existed) => existed,
            Err(e) => {
                if let Some(entry) = removed {
                    self.write().insert(id.to_owned(), entry);
                }
                return Err(e.into());
            }
        };
        if removed.is_none() && !existed {
            return Err(KeyError::NotFound(id.to_owned()));
        }
        self.bump();
        tracing::info!(key = %id, "API key revoked");
        Ok(())
    }
}

/// `bytes` random bytes from the OS, hex encoded.
pub(crate) fn random_hex(bytes: usize) -> String {
    use std::fmt::Write as _;
    let mut buf = vec![0u8; bytes];
    // The OS random source failing is not something the daemon can work around; ids and keys must be
    // unpredictable, so there is no fallback.
    getrandom::fill(&mut buf).expect("the OS random number generator failed");
    buf.iter()
        .fold(String::with_capacity(bytes * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_reads_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (k1, src) = ApiKey::load_or_create(dir.path(), None).unwrap();
        assert!(matches!(src, KeySource::Generated(_)));
        let meta = std::fs::metadata(dir.path().join("api-key")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let (k2, src) = ApiKey::load_or_create(dir.path(), None).unwrap();
        assert!(matches!(src, KeySource::File(_)));
        assert_eq!(k1.key, k2.key);
        assert_eq!(k1.key.len(), 64);
    }

    #[test]
    fn header_checks() {
        let k = ApiKey::new("secret-key-123456");
        assert!(k.verify_header(Some(b"Bearer secret-key-123456")));
        assert!(k.verify_header(Some(b"bearer secret-key-123456")));
        assert!(!k.verify_header(Some(b"Bearer secret-key-12345")));
        assert!(!k.verify_header(Some(b"Basic secret-key-123456")));
        assert!(!k.verify_header(Some(b"Bear")));
        assert!(!k.verify_header(None));
    }
}
