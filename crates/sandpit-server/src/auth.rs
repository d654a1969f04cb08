//! API-key authentication: loading or creating the key, and checking a request's `Authorization` header.
//!
//! There is exactly one key per daemon. When the operator configures none, a random one is generated on
//! first start and kept (mode 0600) in `STATE_DIR/api-key`, so that a fresh install is never open. Keys are
//! compared in constant time so that response timing does not leak how much of a guess was right.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

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
        let Some(value) = value else { return false };
        let Some(scheme) = value.get(..7) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"bearer ") {
            return false;
        }
        self.verify(value[7..].trim_ascii())
    }

    pub fn verify(&self, candidate: &[u8]) -> bool {
        // ct_eq on slices of different lengths is false without comparing contents; only the length, which
        // is not secret, can leak.
        bool::from(self.key.as_slice().ct_eq(candidate))
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
