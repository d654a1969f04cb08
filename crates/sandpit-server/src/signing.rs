//! Signed file URLs: a URL that reads or writes one file of one sandbox, as one user, until a time, with
//! no other credential — for `<a href download>` and uploads from a page.
//!
//! Owns the daemon's signing secret (`STATE_DIR/signing-key`, 32 random bytes, mode 0600, made at first
//! start; replacing the file voids every URL), the one format of what is signed, and its check. A URL is
//! `/v1/sandboxes/{id}/files?path=P[&user=U]&expires=T&signer=K&signature=S` where `S` is the hex
//! HMAC-SHA256 of `sandpit-signed-url-v1`, the operation (`read` for GET/HEAD, `write` for PUT), the
//! sandbox id, `P` and `U` exactly as they are in the URL (still percent-encoded), `T` (Unix seconds) and
//! `K` (the id of the key that signed, never a secret), joined by newlines. Any other query parameter,
//! another method, path or sandbox, a changed byte or a passed `T` is a 403; so is a URL whose signer has
//! since been revoked (or whose sandbox token was rotated).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ring::hmac;

use crate::auth::{AuthError, Principal};

/// The query parameters a signed URL adds; the daemon removes them before a call reaches the agent.
pub const SIGNED_PARAMS: [&str; 3] = ["expires", "signer", "signature"];

/// The daemon's signing secret.
pub struct Signer {
    key: hmac::Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

/// What a signed URL allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }

    /// The operation a request method performs on `/files`, if it is one a URL may be signed for.
    pub fn of_method(m: &axum::http::Method) -> Option<Self> {
        match *m {
            axum::http::Method::GET | axum::http::Method::HEAD => Some(Self::Read),
            axum::http::Method::PUT => Some(Self::Write),
            _ => None,
        }
    }
}

/// Why a signed URL does not open anything (each a 403 with this sentence).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedUrlError {
    #[error("this signed URL expired at {0}")]
    Expired(String),
    #[error("this signed URL does not match its signature (altered, or signed by another daemon)")]
    BadSignature,
    #[error(
        "a signed URL is for GET or HEAD (read) or PUT (write) of /v1/sandboxes/{{id}}/files only"
    )]
    WrongRoute,
    #[error("a signed URL carries only path, user, expires, signer and signature; not {0:?}")]
    ExtraParameter(String),
    #[error("this signed URL lacks {0}")]
    Missing(&'static str),
    #[error("the key that signed this URL is no longer valid")]
    SignerRevoked,
}

/// The parts of a signed URL's query, as they appear in it (percent-encoded).
#[derive(Debug, Default)]
struct Parts<'a> {
    path: Option<&'a str>,
    user: Option<&'a str>,
    expires: Option<&'a str>,
    signer: Option<&'a str>,
    signature: Option<&'a str>,
}

fn message(op: Op, sandbox: &str, path: &str, user: &str, expires: u64, signer: &str) -> String {
    format!(
        "sandpit-signed-url-v1\n{}\n{sandbox}\n{path}\n{user}\n{expires}\n{signer}",
        op.as_str()
    )
}

/// Percent-encodes a query value: everything but `A-Z a-z 0-9 - . _ ~ /`.
pub fn encode(v: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(v, SET).to_string()
}

impl Signer {
    /// The secret in `STATE_DIR/signing-key`, made there (0600) if it is not.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, AuthError> {
        let path = state_dir.join("signing-key");
        let secret = match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
            Ok(_) => return Err(AuthError::Empty(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = crate::auth::random_hex(32);
                // create_new: a daemon racing us to it keeps its secret instead of having it replaced.
                let write = || -> std::io::Result<()> {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path)?;
                    f.write_all(secret.as_bytes())?;
                    f.sync_all()
                };
                write().map_err(|cause| AuthError::Write {
                    path: path.clone(),
                    cause,
                })?;
                secret
            }
            Err(cause) => return Err(AuthError::Read { path, cause }),
        };
        Ok(Self::new(secret.as_bytes()))
    }

    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// A secret derived from the signing secret for `purpose` and `subject` (hex HMAC-SHA256): what the
    /// E2B surface's access tokens are made of, so that the daemon can make them again (`crate::e2b`).
    pub fn derive(&self, purpose: &str, subject: &str) -> String {
        let msg = format!("sandpit-derived-v1\n{purpose}\n{subject}");
        crate::tokens::hex(hmac::sign(&self.key, msg.as_bytes()).as_ref())
    }

    /// The query string of a signed URL (after `?`).
    pub fn sign(
        &self,
        op: Op,
        sandbox: &str,
        path: &str,
        user: Option<&str>,
        expires: u64,
        signer: &str,
    ) -> String {
        let (p, u, k) = (encode(path), user.map(encode), encode(signer));
        let msg = message(
            op,
            sandbox,
            &p,
            u.as_deref().unwrap_or_default(),
            expires,
            &k,
        );
        let sig = crate::tokens::hex(hmac::sign(&self.key, msg.as_bytes()).as_ref());
        let user = u.map(|u| format!("&user={u}")).unwrap_or_default();
        format!("path={p}{user}&expires={expires}&signer={k}&signature={sig}")
    }

    /// Checks a request that carries `signature`: the principal it acts as (the sandbox, its tenant, the
    /// signer), or why not. `tenant_of` finds the sandbox's tenant; `signer_valid` says whether the
    /// signing key still is.
    pub fn verify(
        &self,
        method: &axum::http::Method,
        path: &str,
        query: &str,
        now_ms: i64,
        tenant_of: impl Fn(&str) -> Option<String>,
        signer_valid: impl Fn(&str) -> bool,
    ) -> Result<Principal, SignedUrlError> {
        let op = Op::of_method(method).ok_or(SignedUrlError::WrongRoute)?;
        let sandbox = path
            .strip_prefix("/v1/sandboxes/")
            .and_then(|r| r.strip_suffix("/files"))
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .ok_or(SignedUrlError::WrongRoute)?;
        let mut parts = Parts::default();
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let slot = match k {
                "path" => &mut parts.path,
                "user" => &mut parts.user,
                "expires" => &mut parts.expires,
                "signer" => &mut parts.signer,
                "signature" => &mut parts.signature,
                other => return Err(SignedUrlError::ExtraParameter(other.to_owned())),
            };
            if slot.replace(v).is_some() {
                return Err(SignedUrlError::ExtraParameter(k.to_owned()));
            }
        }
        let p = parts.path.ok_or(SignedUrlError::Missing("path"))?;
        let e = parts.expires.ok_or(SignedUrlError::Missing("expires"))?;
        let signer_raw = parts.signer.ok_or(SignedUrlError::Missing("signer"))?;
        let sig = parts
            .signature
            .and_then(crate::tokens::unhex)
            .ok_or(SignedUrlError::BadSignature)?;
        let expires: u64 = e.parse().map_err(|_| SignedUrlError::BadSignature)?;
        let msg = message(
            op,
            sandbox,
            p,
            parts.user.unwrap_or_default(),
            expires,
            signer_raw,
        );
        hmac::verify(&self.key, msg.as_bytes(), &sig).map_err(|_| SignedUrlError::BadSignature)?;
        let expires_ms = i64::try_from(expires.saturating_mul(1000)).unwrap_or(i64::MAX);
        if now_ms >= expires_ms {
            return Err(SignedUrlError::Expired(crate::time::rfc3339(expires_ms)));
        }
        let signer = percent_encoding::percent_decode_str(signer_raw)
            .decode_utf8_lossy()
            .into_owned();
        if !signer_valid(&signer) {
            return Err(SignedUrlError::SignerRevoked);
        }
        Ok(Principal {
            key_id: format!("signed-url:{signer}"),
            tenant: tenant_of(sandbox).unwrap_or_default(),
            scopes: Vec::new(),
            sandbox: Some(sandbox.to_owned()),
            credential: [0; 32],
            // Checked above, when the call starts: a download under way is not cut at the expiry (a
            // revocation of the signer does cut it).
            expires_at_ms: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    fn verify(
        s: &Signer,
        m: &Method,
        path: &str,
        q: &str,
        now_s: i64,
    ) -> Result<Principal, SignedUrlError> {
        s.verify(
            m,
            path,
            q,
            now_s * 1000,
            |_| Some("t".into()),
            |k| k != "k_gone",
        )
    }

    #[test]
    fn a_signed_url_opens_its_file_and_nothing_else() {
        let s = Signer::new(b"secret");
        let q = s.sign(
            Op::Read,
            "sb1",
            "/home/user/a b.txt",
            Some("user"),
            2000,
            "k_1",
        );
        assert!(
            q.starts_with("path=/home/user/a%20b.txt&user=user&expires=2000&signer=k_1&signature="),
            "{q}"
        );
        let who = verify(&s, &Method::GET, "/v1/sandboxes/sb1/files", &q, 1000).unwrap();
        assert_eq!(
            (
                who.key_id.as_str(),
                who.sandbox.as_deref(),
                who.tenant.as_str()
            ),
            ("signed-url:k_1", Some("sb1"), "t")
        );
        assert!(verify(&s, &Method::HEAD, "/v1/sandboxes/sb1/files", &q, 1000).is_ok());
        // Another operation, sandbox or route.
        assert_eq!(
            verify(&s, &Method::PUT, "/v1/sandboxes/sb1/files", &q, 1000),
            Err(SignedUrlError::BadSignature)
        );
        assert_eq!(
            verify(&s, &Method::GET, "/v1/sandboxes/sb2/files", &q, 1000),
            Err(SignedUrlError::BadSignature)
        );
        assert_eq!(
            verify(&s, &Method::GET, "/v1/sandboxes/sb1/files/tar", &q, 1000),
            Err(SignedUrlError::WrongRoute)
        );
        assert_eq!(
            verify(&s, &Method::DELETE, "/v1/sandboxes/sb1/files", &q, 1000),
            Err(SignedUrlError::WrongRoute)
        );
        // Altered: path, user, expiry, signer; an added parameter; a repeated one.
        for altered in [
            q.replace("a%20b", "c"),
            q.replace("user=user", "user=root"),
            q.replace("expires=2000", "expires=3000"),
            q.replace("signer=k_1", "signer=k_2"),
        ] {
            assert_eq!(
                verify(&s, &Method::GET, "/v1/sandboxes/sb1/files", &altered, 1000),
                Err(SignedUrlError::BadSignature),
                "{altered}"
            );
        }
        assert_eq!(
            verify(
                &s,
                &Method::GET,
                "/v1/sandboxes/sb1/files",
                &format!("{q}&mode=0777"),
                1000
            ),
            Err(SignedUrlError::ExtraParameter("mode".into()))
        );
        assert_eq!(
            verify(
                &s,
                &Method::GET,
                "/v1/sandboxes/sb1/files",
                &format!("{q}&path=/etc/shadow"),
                1000
            ),
            Err(SignedUrlError::ExtraParameter("path".into()))
        );
        // Another daemon's secret.
        assert_eq!(
            verify(
                &Signer::new(b"other"),
                &Method::GET,
                "/v1/sandboxes/sb1/files",
                &q,
                1000
            ),
            Err(SignedUrlError::BadSignature)
        );
        // Expired; a revoked signer.
        assert!(matches!(
            verify(&s, &Method::GET, "/v1/sandboxes/sb1/files", &q, 2000),
            Err(SignedUrlError::Expired(_))
        ));
        let gone = s.sign(Op::Write, "sb1", "x", None, 2000, "k_gone");
        assert_eq!(
            verify(&s, &Method::PUT, "/v1/sandboxes/sb1/files", &gone, 1000),
            Err(SignedUrlError::SignerRevoked)
        );
    }
}
