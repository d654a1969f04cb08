//! Process events as they travel over SSE (`GET /processes/{pid}/events`).
//!
//! SSE framing: output chunks are `id: <seq>`, `event: stdout|stderr`, `data: {"seq": 7, "data": "text"}`
//! (or `"data_b64"` for bytes that are not UTF-8). `event: started` and `event: exited` carry a
//! [`ProcessInfo`](crate::ProcessInfo); `event: lost` a [`LostEvent`]. `started` opens every stream, `exited`
//! closes it once every chunk at or after the requested seq was sent. Resume with `?from_seq=N` (chunks with
//! seq ≥ N) or the `Last-Event-ID` header (chunks after that id).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::ProcessInfo;

/// Data of an SSE `stdout` or `stderr` event: exactly one of `data` (text) and `data_b64` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutputEvent {
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_b64: Option<String>,
}

impl OutputEvent {
    pub fn new(seq: u64, bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) => Self {
                seq,
                data: Some(s.to_owned()),
                data_b64: None,
            },
            Err(_) => Self {
                seq,
                data: None,
                data_b64: Some(B64.encode(bytes)),
            },
        }
    }

    /// The chunk's bytes. Bad base64 decodes to nothing.
    pub fn bytes(&self) -> Vec<u8> {
        match (&self.data, &self.data_b64) {
            (Some(s), _) => s.as_bytes().to_vec(),
            (None, Some(b)) => B64.decode(b).unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }
}

/// Output that was dropped by the per-process cap before this client read it: chunks
/// `from_seq..=to_seq`, `bytes` bytes in all. Sent instead of those chunks, never silently skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LostEvent {
    pub from_seq: u64,
    pub to_seq: u64,
    pub bytes: u64,
}

/// One decoded event of a process's stream, whichever transport carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent {
    Started(ProcessInfo),
    Stdout { seq: u64, data: Vec<u8> },
    Stderr { seq: u64, data: Vec<u8> },
    Lost(LostEvent),
    Exited(ProcessInfo),
}
