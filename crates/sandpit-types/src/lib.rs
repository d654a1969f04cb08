//! The sandpit wire contract: every JSON body, event and frame that crosses a process boundary.
//!
//! This crate is a contract layer, not a runtime. The agent (inside a sandbox), the daemon (`sandpitd`), the
//! Rust SDK and, by way of the OpenAPI document generated from these types, the Python and TypeScript SDKs
//! all read and write exactly these shapes. It depends on serde (and base64 for byte payloads) only, so that
//! a client never pulls in the server.
//!
//! # Versioning rule
//! [`PROTOCOL_VERSION`] is bumped when a change is *not* backwards compatible: a field removed or renamed, a
//! meaning changed, an enum value removed. Adding an optional request field, a response field or an event
//! kind is compatible and does not bump it; clients must ignore response fields and event kinds they do not
//! know. Request bodies are strict (`deny_unknown_fields`) so that a typo is a 400, not a silent default.
#![forbid(unsafe_code)]

pub mod error;
pub mod event;
pub mod frame;
pub mod process;
pub mod sandbox;
pub mod signal;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use event::{LostEvent, OutputEvent, ProcessEvent};
pub use frame::{Channel, ClientControl, Frame, FrameError, ServerControl};
pub use process::{
    AgentHealth, ExecResult, KillResponse, ListQuery, ProcessInfo, ProcessList, ProcessStatus,
    Rlimit, RlimitResource, SignalRequest, StartRequest, Stdin, StdinMode, StdinQuery, StreamQuery,
    TtySize, WaitQuery,
};
pub use signal::SignalSpec;

/// The version of the wire protocol described by this crate. See the crate docs for when it changes.
pub const PROTOCOL_VERSION: u32 = 1;
