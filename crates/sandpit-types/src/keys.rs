//! API keys (`/v1/keys`): many keys per daemon, each with a name, a tenant and scopes.
//!
//! Only an `admin` key manages keys. The secret is returned once, by create; lists never carry it.

use serde::{Deserialize, Serialize};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Everything, including keys and the daemon's `/metrics`.
    Admin,
    /// Create and use sandboxes and templates; not keys, not `/metrics`.
    Sandboxes,
    /// Read only: `GET`/`HEAD` requests that are not WebSocket upgrades (list, get, watch, read files).
    Read,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Sandboxes => "sandboxes",
            Self::Read => "read",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(Self::Admin),
            "sandboxes" => Ok(Self::Sandboxes),
            "read" => Ok(Self::Read),
            other => Err(format!(
                "unknown scope {other:?}: expected admin, sandboxes or read"
            )),
        }
    }
}

/// The tenant of the key file written at first start, and of keys created without one.
pub const DEFAULT_TENANT: &str = "default";

/// Longest key name or tenant name.
pub const MAX_KEY_NAME_LEN: usize = 64;

/// The rule for key names and tenant names: 1–64 characters of `A-Z a-z 0-9 . _ -`, not only dots.
pub fn validate_key_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_KEY_NAME_LEN {
        return Err(format!(
            "{what} {name:?} must be 1 to {MAX_KEY_NAME_LEN} characters long"
        ));
    }
    if name.chars().all(|c| c == '.') {
        return Err(format!(
            "{what} {name:?} is only dots: it would read as a path step"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{what} {name:?} holds {c:?}: use letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Body of `POST /v1/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// A label for people (1–64 of `A-Z a-z 0-9 . _ -`).
    pub name: String,
    /// At least one.
    pub scopes: Vec<Scope>,
    /// Defaults to `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Seconds until the key stops working; never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

impl CreateKeyRequest {
    /// Checks everything the types do not: names, a non-empty scope list, a positive lifetime.
    pub fn validate(&self) -> Result<(), String> {
        validate_key_name("key name", &self.name)?;
        if let Some(t) = &self.tenant {
            validate_key_name("tenant", t)?;
        }
        if self.scopes.is_empty() {
            return Err("scopes is empty: give at least one of admin, sandboxes, read".into());
        }
        if self.expires_in == Some(0) {
            return Err("expires_in must be at least 1 second".into());
        }
        Ok(())
    }
}

/// A key as listed (`GET /v1/keys`): never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub tenant: String,
    pub scopes: Vec<Scope>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; `null` for a key that does not expire.
    pub expires_at: Option<String>,
}

/// The answer to `POST /v1/keys`: the key's record and, this once, its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedKey {
    /// Send as `Authorization: Bearer <key>`. Shown only here.
    pub key: String,
    #[serde(flatten)]
    pub info: KeyInfo,
}

/// Body of `GET /v1/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_only_dots_are_refused() {
        for bad in [".", "..", "...", ""] {
            assert!(validate_key_name("tenant", bad).is_err(), "{bad:?}");
        }
        for ok in ["a.b", ".hidden", "team-a", "x..y"] {
            assert!(validate_key_name("tenant", ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn requests_are_strict_and_checked() {
        let ok: CreateKeyRequest =
            serde_json::from_str(r#"{"name":"ci-bot","scopes":["read","sandboxes"]}"#).unwrap();
        assert!(ok.validate().is_ok());
        assert!(
            serde_json::from_str::<CreateKeyRequest>(r#"{"name":"a","scopes":["root"]}"#).is_err()
        );
        assert!(
            serde_json::from_str::<CreateKeyRequest>(r#"{"name":"a","scopes":[],"x":1}"#).is_err()
        );
        let empty: CreateKeyRequest = serde_json::from_str(r#"{"name":"a","scopes":[]}"#).unwrap();
        assert!(empty.validate().unwrap_err().contains("scopes"));
        let bad: CreateKeyRequest =
            serde_json::from_str(r#"{"name":"a b","scopes":["read"]}"#).unwrap();
        assert!(bad.validate().unwrap_err().contains("' '"));
        let zero: CreateKeyRequest =
            serde_json::from_str(r#"{"name":"a","scopes":["read"],"expires_in":0}"#).unwrap();
        assert!(zero.validate().is_err());
        assert_eq!("sandboxes".parse::<Scope>(), Ok(Scope::Sandboxes));
    }

    #[test]
    fn a_created_key_is_flat_on_the_wire() {
        let k = CreatedKey {
            key: "sp_x".into(),
            info: KeyInfo {
                id: "k_1".into(),
                name: "n".into(),
                tenant: DEFAULT_TENANT.into(),
                scopes: vec![Scope::Read],
                created_at: "t".into(),
                expires_at: None,
            },
        };
        let v = serde_json::to_value(&k).unwrap();
        assert_eq!(v["id"], "k_1");
        assert_eq!(v["key"], "sp_x");
        assert_eq!(v["scopes"][0], "read");
        assert!(v["expires_at"].is_null());
    }
}
