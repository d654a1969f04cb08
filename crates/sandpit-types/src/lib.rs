//! The sandpit wire contract: every JSON body, event and frame that crosses a process boundary.
//!
//! This crate is a contract layer, not a runtime. The agent (inside a sandbox), the daemon (`sandpitd`), the
//! Rust SDK and, by way of the `OpenAPI` document generated from these types, the Python and TypeScript SDKs
//! all read and write exactly these shapes. It depends on serde (and base64 for byte payloads) only, so that
//! a client never pulls in the server.
//!
//! # Versioning rule
//! [`PROTOCOL_VERSION`] is bumped when a change is *not* backwards compatible: a field removed or renamed, a
//! meaning changed, an enum value removed. Adding an optional request field, a response field or an event
//! kind is compatible and does not bump it; clients must ignore response fields and event kinds they do not
//! know. Request bodies are strict (`deny_unknown_fields`) so that a typo is a 400, not a silent default.
#![forbid(unsafe_code)]

pub mod audit;
pub mod error;
pub mod event;
pub mod files;
pub mod frame;
pub mod keys;
pub mod network;
pub mod observe;
pub mod process;
pub mod sandbox;
pub mod signal;
pub mod sse;
pub mod tenants;
pub mod volumes;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use event::{LostEvent, OutputEvent, ProcessEvent, output_event_json};
pub use files::{
    ChmodRequest, ChownRequest, CreateWatcherRequest, Entry, EntryList, EntryType, FileMode,
    FsEvent, FsEventType, MkdirRequest, MoveRequest, SkippedMember, TarResult, WatchEventList,
    WatcherInfo,
};
pub use frame::{
    Channel, ClientControl, ClientMessage, Frame, FrameError, HEADER_LEN, ServerControl,
};
pub use keys::{CreateKeyRequest, CreatedKey, KeyInfo, KeyList, Scope};
pub use process::{
    AgentHealth, ExecResult, KillResponse, LOGS_DEFAULT_TAIL, LOGS_MAX_TAIL, ListQuery, LogsQuery,
    MAX_PROCESS_ID_LEN, ProcessInfo, ProcessList, ProcessResources, ProcessStatus, Rlimit,
    RlimitResource, SignalRequest, StartRequest, Stdin, StdinMode, StdinQuery, StreamQuery,
    TtySize, WaitQuery,
};
pub use signal::SignalSpec;

/// The version of the wire protocol described by this crate. See the crate docs for when it changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest request body the agent accepts (exec stdin bytes, stdin writes, any JSON body). The daemon
/// enforces the same limit on what it proxies, so that an oversized body is refused before it is
/// forwarded instead of racing the agent's refusal.
pub const MAX_AGENT_BODY_BYTES: usize = 16 << 20;

/// Checks a JSON request's `Content-Type`: a missing one is accepted (curl-friendly), a present one must
/// be JSON. The daemon's and the agent's body extractors both apply this, so the two ends of one API
/// agree on what a body is.
pub fn check_json_content_type(content_type: Option<&[u8]>) -> Result<(), String> {
    let Some(ct) = content_type else {
        return Ok(());
    };
    let ct = String::from_utf8_lossy(ct).to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or_default().trim();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(format!(
            "unsupported content type {essence:?}: send application/json"
        ))
    }
}

/// Decodes a JSON request body by the rules of every sandpit server (the daemon and the agent): an
/// empty (or all-whitespace) body is `{}`, and anything else must be a JSON object. Without the second
/// rule serde would take a JSON array for a struct, its fields by position. The body extractors and the
/// fuzz targets call this.
pub fn decode_json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let text: &[u8] = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => b"{}",
        Some(b'{') => body,
        Some(_) => return Err("the request body must be a JSON object".into()),
    };
    serde_json::from_slice(text).map_err(|e| format!("invalid JSON body: {e}"))
}
