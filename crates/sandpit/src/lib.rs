//! # sandpit — Rust SDK
//!
//! A client for the sandpit daemon (`sandpit serve`): create Linux sandboxes and run processes in them,
//! one-shot, streamed, in the background, interactively over stdin, or attached to a terminal. It speaks
//! the HTTP API of `docs/api.md` (JSON, SSE, WebSocket) with the wire types of [`sandpit_types`], and
//! never depends on the server.
//!
//! Each hosted product the project mirrors keeps its spelling:
//! * Superserve: [`Commands::run`] (streams with callbacks), [`Commands::spawn`] → [`CommandSession`].
//! * Declaw: [`Run::background`] → [`CommandHandle`], [`Commands::run_stream`], `list`, `kill`,
//!   `send_stdin`, `connect`.
//! * microsandbox: [`Sandbox::exec`], [`Sandbox::exec_with`], [`Sandbox::exec_stream`] → [`ExecHandle`]
//!   (a `Stream` of [`ExecEvent`]), [`Sandbox::shell`], [`Sandbox::attach_with`].
//! * Hyperbrowser: [`Sandbox::exec`] with `cwd`/`env`/`timeout_ms`/`run_as`, [`Sandbox::processes`],
//!   [`Sandbox::get_process`] → [`Process`].
//!
//! * Files (E2B's names): [`Sandbox::files`] → [`Files`] (`read`, `write`, `write_files`, `list`,
//!   `exists`, `get_info`, `make_dir`, `rename`, `remove`, `watch_dir`), streaming both ways.
//!
//! Output streams resume from the last `seq` when a connection is cut; only a cut that cannot be
//! resumed is reported, as [`Error::Sandbox`].
//!
//! ```no_run
//! use sandpit::{Client, Sandbox};
//! # async fn demo() -> sandpit::Result<()> {
//! let client = Client::from_env()?;
//! let sandbox = Sandbox::create().client(&client).memory_mb(512).await?;
//! let r = sandbox.commands().run("echo hello").await?;
//! assert_eq!(r.stdout, "hello\n");
//! sandbox.kill().await?;
//! # Ok(()) }
//! ```

mod api;
mod attach;
mod audit;
mod client;
mod commands;
mod error;
mod exec;
mod files;
mod keys;
mod network;
mod observe;
mod options;
mod processes;
mod sandbox;
mod sse;
mod switched;
mod templates;
mod tenants;
mod volumes;
mod ws;

pub use attach::{
    AttachOptions, AttachOptionsBuilder, AttachOutcome, DEFAULT_DETACH_KEYS, parse_detach_keys,
};
pub use audit::{Audit, AuditEntry, AuditList, AuditQuery};
pub use client::{Client, ClientBuilder, DEFAULT_URL};
pub use commands::{
    Background, CommandHandle, CommandInfo, CommandResult, CommandSession, Commands,
    OutputCallback, Run, STREAM_KEEP_BYTES, SessionStdin, Spawn, Wait,
};
pub use error::{ApiError, Error, Result};
pub use exec::{
    Exec, ExecEvent, ExecHandle, ExecOptionsBuilder, ExecOutput, ExecSink, ExitStatus, NO_ARGS,
};
pub use files::{FileReader, Files, WatchHandle, WriteData, WriteEntry};
pub use keys::{CreateKeyRequest, CreatedKey, KeyInfo, Keys, Scope};
pub use observe::{
    CreateWebhookRequest, EventList, EventQuery, EventType, Events, LifecycleEvent, MetricSample,
    SseStream, Webhook, WebhookDelivery, Webhooks, verify_webhook,
};
pub use options::Signal;
pub use processes::{ListProcesses, Process, ProcessStreamEvent, Processes, StartProcess};
pub use sandbox::{BoxFuture, Fork, ListSandboxes, Sandbox, SandboxBuilder};
pub use sse::EventStream;
pub use templates::{
    DebianSource, PoolInfo, TemplateBuild, TemplateBuildState, TemplateInfo, TemplateSource,
    Templates,
};
pub use tenants::{TenantInfo, TenantQuotas, TenantUsage, Tenants};
pub use volumes::{VolumeInfo, VolumeMount, Volumes};

/// The wire types, for calls this SDK does not wrap.
pub use sandpit_types as types;
pub use sandpit_types::files::{SignedUrl, SignedUrlOp};
pub use sandpit_types::sandbox::{OnTimeout, SandboxInfo, SandboxState, SnapshotInfo};
pub use sandpit_types::{
    Entry, EntryType, ErrorCode, FsEvent, FsEventType, LostEvent, ProcessEvent, ProcessInfo,
    ProcessStatus, RlimitResource, StartRequest, TarResult,
};
