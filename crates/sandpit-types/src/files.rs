//! The files API's wire shapes: entries, the JSON bodies of the `/fs/*` operations, watch events and
//! the path rules every end applies.
//!
//! Bytes travel as raw bodies (`GET`/`PUT /files`, tar archives on `/files/tar`); metadata as JSON.
//! Paths in query strings are percent-encoded *bytes*, so names that are not UTF-8 work there; an entry
//! whose path is not UTF-8 carries it in `path_b64` as well (its `path` and `name` then hold a lossy
//! rendering, for display only). JSON bodies take UTF-8 paths.
//!
//! Watch events have a `seq` that only grows. Seqs are numbered agent-wide, so the numbers one watch
//! sees are increasing but not contiguous: a gap in numbers is never a loss. A loss is always reported,
//! by an event of type `lost` covering the seqs `from_seq..=to_seq` whose events are gone.

use serde::{Deserialize, Serialize};

/// Longest path accepted, in bytes (Linux's `PATH_MAX` less the NUL).
pub const MAX_PATH_BYTES: usize = 4095;
/// Longest single name (path component) accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Deepest tree a recursive operation (list, tar, recursive remove, recursive watch) walks.
pub const MAX_WALK_DEPTH: usize = 256;

/// The daemon's fast path for file content between itself and an agent:
/// `GET` and `PUT` on the agent's [`SPLICE_PATH`] (under the daemon-only prefix, with `/files`' query)
/// with `Connection: upgrade` and `Upgrade: sandpit-file`. After a `101` the content travels raw on the
/// connection and the agent moves it with `splice(2)`: no copy through its memory, no HTTP framing.
///
/// * `GET`: the 101 carries the real answer's headers, its status in [`SPLICE_STATUS_HEADER`] (200 or
///   206) and its length in [`SPLICE_LENGTH_HEADER`]; exactly that many bytes follow, then the agent
///   closes. Fewer bytes mean the read failed (the file shrank). The agent answers an ordinary response
///   instead when the content is small (under [`SPLICE_MIN_BYTES`]), or an error.
/// * `PUT`: the request has no body and says the content's length in [`SPLICE_LENGTH_HEADER`]; after
///   the 101 the daemon sends exactly that many bytes, and the agent answers with the status as three
///   ASCII digits, a newline and the JSON body `PUT /files` would have answered (the entry, or an
///   error), then closes. A connection that ends early leaves nothing written.
///
/// Versioning: an agent from before this path answers it 404, and the daemon then sends the request
/// the ordinary way (`/files`), so a daemon upgraded under running sandboxes keeps working with them.
///
/// **Clients may ask the daemon for the same switch** on `/v1/sandboxes/{id}/files`, on plain HTTP/1.1
/// (docs/api.md, "Switched transfers"), so that the daemon splices between the two sockets and no
/// process copies the content:
///
/// * `GET` with `Connection: upgrade` and `Upgrade: sandpit-file`: large content comes as above (a
///   101 with [`SPLICE_STATUS_HEADER`] and [`SPLICE_LENGTH_HEADER`], the bytes, the close); small
///   content and errors come as ordinary answers.
/// * `PUT` with the same two headers and [`SPLICE_LENGTH_HEADER`] instead of a body: after the 101 the
///   client sends exactly that many bytes, then reads the answer as above (status digits, newline,
///   JSON) up to the close. Errors found before the switch (a bad path, an unknown user) come as
///   ordinary answers; a connection that cannot be switched is answered
///   [`crate::error::UPGRADE_REQUIRED`], and the client sends the content the ordinary way.
pub const SPLICE_PATH: &str = "_daemon/files";
/// See [`SPLICE_PATH`].
pub const SPLICE_PROTOCOL: &str = "sandpit-file";
/// See [`SPLICE_PROTOCOL`].
pub const SPLICE_STATUS_HEADER: &str = "sandpit-status";
/// See [`SPLICE_PROTOCOL`].
pub const SPLICE_LENGTH_HEADER: &str = "sandpit-length";
/// Content shorter than this goes as an ordinary HTTP body (a pooled connection beats a new one).
pub const SPLICE_MIN_BYTES: u64 = 1 << 20;

/// Checks a path as a client gave it: not empty, no NUL byte, not longer than [`MAX_PATH_BYTES`], no
/// component longer than [`MAX_NAME_BYTES`]. The message is for the client.
pub fn validate_path(path: &[u8]) -> Result<(), String> {
    if path.is_empty() {
        return Err("the path is empty".into());
    }
    if path.contains(&0) {
        return Err("the path contains a NUL byte".into());
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(format!(
            "the path is {} bytes long; the limit is {MAX_PATH_BYTES}",
            path.len()
        ));
    }
    if let Some(long) = path
        .split(|b| *b == b'/')
        .find(|c| c.len() > MAX_NAME_BYTES)
    {
        return Err(format!(
            "a name in the path is {} bytes long; the limit is {MAX_NAME_BYTES}",
            long.len()
        ));
    }
    Ok(())
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EntryType {
    File,
    Dir,
    Symlink,
    /// A fifo, socket or device.
    Other,
}

/// One file, directory or link, as `GET /fs/stat`, `GET /fs/list` and the writing calls return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Entry {
    /// Absolute path inside the sandbox.
    pub path: String,
    /// The last component of `path`.
    pub name: String,
    /// The path's bytes (base64) when it is not valid UTF-8; `path` and `name` are then lossy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_b64: Option<String>,
    #[serde(rename = "type")]
    pub kind: EntryType,
    /// Bytes (for a symlink: the length of its target).
    pub size: u64,
    /// Permission bits in octal, four digits: `"0644"`, `"4755"`.
    pub mode: String,
    /// The same bits as `ls` shows them: `"rw-r--r--"`.
    pub permissions: String,
    /// The owner's name in the sandbox's `/etc/passwd`, or the numeric uid.
    pub owner: String,
    /// The group's name in the sandbox's `/etc/group`, or the numeric gid.
    pub group: String,
    /// Last modification, RFC 3339.
    pub modified_at: String,
    /// Where a symlink points (as stored in the link), `null` for anything else.
    pub symlink_target: Option<String>,
}

/// Body of `GET /fs/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EntryList {
    pub entries: Vec<Entry>,
}

/// Permission bits as an octal string (`"755"`, `"0644"`, `"4755"`); at most `0o7777`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl FileMode {
    pub fn parse(s: &str) -> Result<Self, String> {
        let digits = s.trim().strip_prefix("0o").unwrap_or(s.trim());
        if digits.is_empty() || digits.len() > 5 {
            return Err(format!("mode {s:?} must be octal, like \"0644\""));
        }
        let v = u32::from_str_radix(digits, 8)
            .map_err(|_| format!("mode {s:?} must be octal, like \"0644\""))?;
        if v > 0o7777 {
            return Err(format!("mode {s:?} is more than 07777"));
        }
        Ok(Self(v))
    }

    /// Four octal digits.
    pub fn octal(self) -> String {
        format!("{:04o}", self.0 & 0o7777)
    }
}

impl Serialize for FileMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.octal())
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for FileMode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("Octal permission bits, e.g. \"0644\""))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for FileMode {}

/// Body of `POST /fs/mkdir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MkdirRequest {
    pub path: String,
    /// Who creates it (and owns it); default the sandbox's default user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Default `"0755"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FileMode>,
    /// Create missing parents, and answer 200 (not 409) when the directory exists. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parents: Option<bool>,
}

/// Body of `POST /fs/move`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    pub from: String,
    pub to: String,
    /// Replace `to` if it exists (default false: 409 `already_exists`).
    #[serde(default)]
    pub overwrite: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Body of `POST /fs/chmod`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChmodRequest {
    pub path: String,
    pub mode: FileMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Body of `POST /fs/chown`: a user or group name from the sandbox's `/etc/passwd`/`/etc/group`, or a
/// number. At least one of the two. Done as root unless `user` says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChownRequest {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Body of `POST /fs/watchers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateWatcherRequest {
    pub path: String,
    #[serde(default)]
    pub recursive: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Answer of `POST /fs/watchers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WatcherInfo {
    pub id: String,
    /// The absolute path watched.
    pub path: String,
    pub recursive: bool,
    /// Events with a seq above this one are what happens from now on (resume point for `from_seq`).
    pub seq: u64,
}

/// Answer of `GET /fs/watchers/{id}/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WatchEventList {
    pub events: Vec<FsEvent>,
}

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FsEventType {
    Create,
    Write,
    Remove,
    /// `from` → `to` (both under the watched path).
    Rename,
    /// Permissions, owner or times changed.
    Chmod,
    /// Events were dropped (the kernel's queue or the agent's buffer overflowed): `from_seq..=to_seq`.
    Lost,
    /// A client this agent does not know yet (newer agent).
    #[serde(other)]
    Unknown,
}

/// One watch event (SSE `event:` is its `type`, `id:` its `seq`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FsEvent {
    pub seq: u64,
    #[serde(rename = "type")]
    pub kind: FsEventType,
    /// The path concerned (for `rename`, the new path); absent for `lost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// For `rename`: the old path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// For `rename`: the new path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Whether the path is a directory (when known).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_dir: bool,
    /// For `lost`: the first and last seq whose events are gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_seq: Option<u64>,
    /// For `lost`: `"kernel_queue_overflow"` or `"buffer_overflow"` (the agent dropped the oldest
    /// events of this watch before the client read them), or `"watch_restarted"` (the client resumed
    /// a watch that had ended; what happened in between is unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the agent saw it, RFC 3339.
    pub at: String,
}

/// Answer of `POST /files/tar`: what was written, and what was left out and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TarResult {
    /// Every file, directory and link written, in archive order.
    pub entries: Vec<Entry>,
    /// Archive members not written (devices, fifos, paths leaving the target directory).
    pub skipped: Vec<SkippedMember>,
}

/// One archive member [`TarResult`] did not write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SkippedMember {
    pub path: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        assert!(validate_path(b"/a/b").is_ok());
        assert!(validate_path(b"").is_err());
        assert!(validate_path(b"/a\0b").is_err());
        assert!(validate_path(&vec![b'a'; 256]).is_err());
        assert!(validate_path(&[b"/".as_slice(), &[b'a'; 255]].concat()).is_ok());
        let long: Vec<u8> = std::iter::repeat_n(b"/abc".as_slice(), 1100)
            .flatten()
            .copied()
            .collect();
        assert!(validate_path(&long).is_err());
    }

    #[test]
    fn modes_are_octal_strings() {
        assert_eq!(FileMode::parse("755").unwrap().0, 0o755);
        assert_eq!(FileMode::parse("0644").unwrap().octal(), "0644");
        assert_eq!(FileMode::parse("0o4755").unwrap().0, 0o4755);
        assert!(FileMode::parse("999").is_err());
        assert!(FileMode::parse("17777").is_err());
        assert!(FileMode::parse("").is_err());
        let m: FileMode = serde_json::from_str("\"0600\"").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"0600\"");
    }

    #[test]
    fn unknown_event_types_are_tolerated() {
        let e: FsEvent =
            serde_json::from_str(r#"{"seq": 3, "type": "teleport", "at": "x"}"#).unwrap();
        assert_eq!(e.kind, FsEventType::Unknown);
    }
}

/// What a signed URL may do: `read` (GET) or `write` (PUT) one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SignedUrlOp {
    Read,
    Write,
}

/// Longest life of a signed URL, in seconds (7 days).
pub const MAX_SIGNED_URL_SECS: u64 = 7 * 24 * 3600;
/// Life of a signed URL when the request names none, in seconds.
pub const DEFAULT_SIGNED_URL_SECS: u64 = 3600;

/// Body of `POST /v1/sandboxes/{id}/files/signed-url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignedUrlRequest {
    /// The file (absolute, or relative to the user's home).
    pub path: String,
    pub op: SignedUrlOp,
    /// Seconds the URL works (1 to 604800; default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    /// The sandbox user the file is read or written as (default: the sandbox's default user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl SignedUrlRequest {
    /// Checks what serde cannot: a path, a lifetime in range.
    pub fn validate(&self) -> Result<(), String> {
        if self.path.is_empty() || self.path.contains('\0') {
            return Err("path must be a non-empty path without NUL bytes".into());
        }
        if let Some(s) = self.expires_in {
            if s == 0 || s > MAX_SIGNED_URL_SECS {
                return Err(format!(
                    "expires_in must be 1 to {MAX_SIGNED_URL_SECS} seconds (got {s})"
                ));
            }
        }
        if self
            .user
            .as_deref()
            .is_some_and(|u| u.is_empty() || u.chars().any(char::is_control))
        {
            return Err(
                "user must be a user name or uid without control characters (leave it out for the \
                 default user)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The answer to `POST /v1/sandboxes/{id}/files/signed-url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignedUrl {
    /// Absolute, built from the request's `Host`: needs no other credential.
    pub url: String,
    /// The same, from `/v1/…` on, for a client that reaches the daemon under another name.
    pub path: String,
    /// `GET` (read; `HEAD` works too) or `PUT` (write).
    pub method: String,
    /// RFC 3339.
    pub expires_at: String,
}
