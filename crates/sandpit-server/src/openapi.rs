//! The `OpenAPI` 3.1 document served at `/openapi.json`, generated from the handler annotations and the
//! `sandpit-types` schemas.
//!
//! The per-sandbox process routes are served by the agent and only proxied here, so they have no handler
//! of their own in this crate; the annotated stubs below exist to describe them, with the same wire types
//! the agent uses, so that SDKs can be generated against one document.

use sandpit_types::sandbox::{
    AccessToken, CreateSandboxRequest, CreateSnapshotRequest, CreateTemplateRequest, DebianSource,
    ForkInfo, ForkRequest, OnTimeout, PoolInfo, SandboxInfo, SandboxList, SandboxState,
    SetPoolRequest, SetTimeoutRequest, SnapshotInfo, TemplateBuild, TemplateBuildState,
    TemplateInfo, TemplateList, TemplateSource,
};
use sandpit_types::{
    ChmodRequest, ChownRequest, CreateWatcherRequest, Entry, EntryList, EntryType, FileMode,
    FsEvent, FsEventType, MkdirRequest, MoveRequest, SkippedMember, TarResult, WatchEventList,
    WatcherInfo,
};
use sandpit_types::{
    ErrorBody, ErrorCode, ErrorDetail, ExecResult, KillResponse, LostEvent, OutputEvent,
    ProcessInfo, ProcessList, ProcessStatus, Rlimit, RlimitResource, SignalSpec, StartRequest,
    TtySize,
};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::{
    audit, handlers, keys, network, observe, pools, signed, snapshots, tenants, volumes,
};
use sandpit_types::audit::{AuditEntry, AuditList};
use sandpit_types::files::{SignedUrl, SignedUrlOp, SignedUrlRequest};
use sandpit_types::keys::{CreateKeyRequest, CreatedKey, KeyInfo, KeyList, Scope};
use sandpit_types::network::{Egress, ExposePortRequest, ExposedPort, NetworkPolicy, PortList};
use sandpit_types::observe::{
    CreateWebhookRequest, DeliveryList, EventList, LifecycleEvent, MetricSample, Webhook,
    WebhookDelivery, WebhookList,
};
use sandpit_types::tenants::{TenantInfo, TenantList, TenantQuotas, TenantUsage};
use sandpit_types::volumes::{CreateVolumeRequest, VolumeInfo, VolumeList, VolumeMount};

/// Body of `POST /v1/sandboxes/{id}/processes/{pid}/signal`.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // describes a body the agent parses
pub struct SignalRequest {
    /// `"TERM"`, `"SIGTERM"` or `15`.
    pub signal: SignalSpec,
}

/// A raw byte body (`application/octet-stream`): the bytes as they are, not a JSON array of numbers
/// (what `Vec<u8>` would be documented as).
#[derive(Debug)]
pub struct RawBytes;

impl utoipa::PartialSchema for RawBytes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl utoipa::ToSchema for RawBytes {}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sandpit",
        description = "Self-hosted Linux sandboxes. Every call but `/health` needs `Authorization: Bearer <key>`.",
        license(name = "Apache-2.0")
    ),
    paths(
        handlers::health,
        handlers::openapi_json,
        handlers::metrics,
        handlers::create_sandbox,
        handlers::list_sandboxes,
        handlers::get_sandbox,
        handlers::delete_sandbox,
        handlers::pause_sandbox,
        handlers::resume_sandbox,
        handlers::connect_sandbox,
        handlers::set_sandbox_timeout,
        handlers::rotate_access_token,
        handlers::list_templates,
        handlers::create_template,
        handlers::get_template,
        handlers::template_build,
        handlers::delete_template,
        snapshots::export_template,
        pools::get_pool,
        pools::set_pool,
        snapshots::create_snapshot,
        snapshots::fork_sandbox,
        volumes::create_volume,
        volumes::list_volumes,
        volumes::get_volume,
        volumes::delete_volume,
        keys::create_key,
        keys::list_keys,
        keys::revoke_key,
        tenants::list_tenants,
        audit::read_audit,
        observe::list_events,
        observe::sandbox_events,
        observe::stream_events,
        observe::stream_sandbox_events,
        observe::sandbox_metrics,
        observe::stream_sandbox_metrics,
        observe::create_webhook,
        observe::list_webhooks,
        observe::get_webhook,
        observe::delete_webhook,
        observe::webhook_deliveries,
        tenants::get_tenant,
        tenants::put_tenant,
        process_docs::exec,
        process_docs::start_process,
        process_docs::list_processes,
        process_docs::get_process,
        process_docs::kill_process,
        process_docs::process_events,
        process_docs::process_ws,
        process_docs::write_stdin,
        process_docs::signal_process,
        process_docs::resize_process,
        process_docs::wait_process,
        process_docs::agent_logs,
        network::get_network,
        network::put_network,
        network::list_ports,
        network::expose_port,
        network::close_port,
        preview_docs::preview,
        file_docs::read_file,
        signed::signed_url,
        file_docs::write_file,
        file_docs::extract_tar,
        file_docs::archive_tar,
        file_docs::list_dir,
        file_docs::stat_path,
        file_docs::make_dir,
        file_docs::move_path,
        file_docs::remove_path,
        file_docs::chmod_path,
        file_docs::chown_path,
        file_docs::watch,
        file_docs::create_watcher,
        file_docs::watcher_events,
        file_docs::delete_watcher,
    ),
    components(schemas(
        AccessToken, CreateSandboxRequest, SandboxInfo, SandboxList, SandboxState, OnTimeout, SetTimeoutRequest,
        ErrorBody, ErrorDetail, ErrorCode, StartRequest, ExecResult, ProcessInfo, ProcessList,
        ProcessStatus, KillResponse, TtySize, Rlimit, RlimitResource, SignalSpec, SignalRequest,
        OutputEvent, LostEvent, handlers::Health, TemplateInfo, TemplateList, CreateTemplateRequest,
        TemplateSource, DebianSource, TemplateBuild, TemplateBuildState, Entry, EntryList, EntryType,
        FileMode, FsEvent, FsEventType, MkdirRequest, MoveRequest, ChmodRequest, ChownRequest,
        CreateWatcherRequest, WatcherInfo, WatchEventList, TarResult, SkippedMember,
        NetworkPolicy, Egress, ExposePortRequest, ExposedPort, PortList,
        CreateKeyRequest, CreatedKey, KeyInfo, KeyList, Scope,
        TenantQuotas, TenantUsage, TenantInfo, TenantList, AuditEntry, AuditList,
        SignedUrlRequest, SignedUrl, SignedUrlOp,
        CreateSnapshotRequest, SnapshotInfo, ForkRequest, ForkInfo,
        CreateVolumeRequest, VolumeInfo, VolumeList, VolumeMount, PoolInfo, SetPoolRequest,
        LifecycleEvent, EventList, MetricSample, CreateWebhookRequest, Webhook, WebhookList,
        WebhookDelivery, DeliveryList,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []), ("access_token" = [])),
    tags(
        (name = "daemon", description = "Health, metrics and this document"),
        (name = "sandboxes", description = "Sandbox lifecycle"),
        (name = "templates", description = "Root filesystems sandboxes start from (isolate backend; admin-only imports; a tenant sees its own snapshots)"),
        (name = "snapshots", description = "Templates made from a sandbox's filesystem, and forks (isolate backend)"),
        (name = "volumes", description = "Named, size-capped filesystems that outlive sandboxes (isolate backend; a tenant's own)"),
        (name = "processes", description = "Processes inside a sandbox (served by its agent; a paused sandbox is resumed first)"),
        (name = "network", description = "Egress policy and exposed ports (preview URLs)"),
        (name = "keys", description = "API keys with scopes (`admin`, `sandboxes`, `read`); admin only"),
        (name = "tenants", description = "Tenant quotas (set by an admin; a key reads its own tenant)"),
        (name = "audit", description = "Who did what, when, with what outcome (admin only)"),
        (name = "events", description = "Sandbox lifecycle events, as pages and as live streams (SSE)"),
        (name = "metrics", description = "Per-sandbox cpu, memory, disk and pids samples, as pages and as a live stream (SSE)"),
        (name = "webhooks", description = "Lifecycle events delivered as signed HTTP POSTs (admin only)"),
        (name = "files", description = "Files inside a sandbox, as the requesting user (served by its agent; a paused sandbox is resumed first). `path` query values are percent-encoded bytes; relative paths start at the user's home"),
    )
)]
struct ApiDoc;

/// The preview route is a reverse proxy to a server in the sandbox: any method, any body.
mod preview_docs {
    use sandpit_types::ErrorBody;

    /// A preview URL by path: proxied (HTTP/1.1, streaming, WebSocket upgrades) to `port` inside the
    /// sandbox, with the caller's credentials removed and `X-Forwarded-*` set. The same server is at
    /// `{port}-{id}.{preview-domain}` on this listener. Access: the API key, the port's token
    /// (`X-Sandpit-Token`, or `?sandpit_token=` once, answered with an `HttpOnly` cookie and a redirect),
    /// or nothing for a public port. Any method; GET shown.
    #[utoipa::path(get, path = "/v1/sandboxes/{id}/ports/{port}/{path}", tag = "network",
        params(("id" = String, Path, description = "Sandbox id"),
            ("port" = u16, Path, description = "TCP port inside the sandbox (bound to 0.0.0.0 or 127.0.0.1)"),
            ("path" = String, Path, description = "Path on the sandbox's server")),
        security((), ("bearer" = [])),
        responses((status = 200, description = "Whatever the sandbox's server answers"),
            (status = 302, description = "`?sandpit_token=` was accepted: a cookie is set, the token removed from the URL"),
            (status = 400, description = "A port outside 1-65535", body = ErrorBody),
            (status = 401, description = "A private port without its token", body = ErrorBody),
            (status = 404, description = "No such sandbox", body = ErrorBody),
            (status = 409, description = "The sandbox is stopped or failed", body = ErrorBody),
            (status = 502, description = "Nothing listens on that port in the sandbox", body = ErrorBody)))]
    #[allow(dead_code)]
    pub fn preview() {}
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // For browsers, whose WebSocket and EventSource cannot send headers. Prefer the header elsewhere:
        // URLs end up in logs and histories.
        components.add_security_scheme(
            "access_token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("access_token"))),
        );
    }
}

/// The document.
pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as pretty JSON.
pub fn spec_json() -> String {
    spec()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Doc-only stubs for the proxied process API. Never routed: the proxy forwards these paths as bytes.
#[allow(dead_code, clippy::unused_async)]
mod process_docs {
    use super::{
        ErrorBody, ExecResult, KillResponse, ProcessInfo, ProcessList, RawBytes, SignalRequest,
        StartRequest, TtySize,
    };

    #[utoipa::path(post, path = "/v1/sandboxes/{id}/exec", tag = "processes",
        params(("id" = String, Path, description = "Sandbox id")),
        request_body = StartRequest,
        responses(
            (status = 200, description = "The process ran to its end (a non-zero exit is still a 200)", body = ExecResult),
            (status = 400, description = "Invalid start request", body = ErrorBody),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 404, description = "No such sandbox", body = ErrorBody),
            (status = 409, description = "The sandbox is stopped or failed", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn exec() {}

    #[utoipa::path(post, path = "/v1/sandboxes/{id}/processes", tag = "processes",
        params(("id" = String, Path, description = "Sandbox id")),
        request_body = StartRequest,
        responses(
            (status = 200, description = "Started (or the existing process with this client id)", body = ProcessInfo),
            (status = 201, description = "Started", body = ProcessInfo),
            (status = 400, description = "Invalid start request", body = ErrorBody),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 404, description = "No such sandbox", body = ErrorBody),
            (status = 409, description = "The sandbox is stopped, or the id is in use differently", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn start_process() {}

    #[utoipa::path(get, path = "/v1/sandboxes/{id}/processes", tag = "processes",
        params(("id" = String, Path, description = "Sandbox id"),
            ("status" = Option<String>, Query, description = "Keep processes with this status"),
            ("limit" = Option<u32>, Query, description = "At most this many, newest first")),
        responses(
            (status = 200, description = "Processes", body = ProcessList),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 404, description = "No such sandbox", body = ErrorBody),
            (status = 400, description = "Invalid path, query or body", body = ErrorBody),
            (status = 409, description = "The sandbox is stopped or failed (or the call conflicts with the process state)", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn list_processes() {}

    #[utoipa::path(get, path = "/v1/sandboxes/{id}/processes/{pid}", tag = "processes",
        params(("id" = String, Path, description = "Sandbox id"),
            ("pid" = String, Path, description = "Process pid or client id")),
        responses(
            (status = 200, description = "The process", body = ProcessInfo),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 404, description = "No such sandbox or process", body = ErrorBody),
            (status = 400, description = "Invalid path, query or body", body = ErrorBody),
            (status = 409, description = "The sandbox is stopped or failed (or the call conflicts with the process state)", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn get_process() {}

    #[utoipa::path(delete, path = "/v1/sandboxes/{id}/processes/{pid}", tag = "processes",
        params(("id" = String, Path, description = "Sandbox id"),
            ("pid" = String, Path, description = "Process pid or client id")),
        responses(
            (status = 200, description = "SIGKILL sent to the process tree", body = KillResponse),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 404, description = "No such sandbox or process", body = ErrorBody),
            (status = 400, description = "Invalid path, query or body", body = ErrorBody),
            (status = 409, description = "The sandbox is stopped or failed (or the call conflicts with the process state)", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn kill_process() {}

    #[utoipa::path(get, path = "/v1/sandboxes/{id}/processes/{pid}/events", tag = "processes",
        params(("id" = String, Path, description = "Sandbox id"),
            ("pid" = String, Path, description = "Process pid or client id"),
            ("from_seq" = Option<u64>, Query, description = "Replay output chunks from this seq"),
            ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this seq")),
        responses(
            (status = 200, description = "Server-sent events: started, stdout, stderr (OutputEvent), lost (LostEvent), exited (ProcessInfo), keepalive",
                content_type = "text/event-stream", body = String),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 404, description = "No such sandbox or process", body = ErrorBody),
            (status = 400, description = "Invalid path, query or body", body = ErrorBody),
            (status = 409, description = "The sandbox is stopped or failed (or the call conflicts with the process state)", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn process_events() {}

    #[utoipa::path(get, path = "/v1/sandboxes/{id}/processes/{pid}/ws", tag = "processes",
        params(("id" = String, Path, description = "Sandbox id"),
            ("pid" = String, Path, description = "Process pid or client id"),
            ("from_seq" = Option<u64>, Query, description = "Replay output chunks from this seq")),
        responses(
            (status = 101, description = "WebSocket: binary frames [channel u8][seq u64 BE][bytes] (1 stdout, 2 stderr; client to agent 0 stdin); JSON text frames for control"),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 404, description = "No such sandbox or process", body = ErrorBody),
            (status = 400, description = "Invalid path, query or body", body = ErrorBody),
            (status = 409, description = "The sandbox is stopped or failed (or the call conflicts with the process state)", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn process_ws() {}

    #[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/stdin", tag = "processes",
        params(("id" = String, Path, description = "Sandbox id"),
            ("pid" = String, Path, description = "Process pid or client id"),
            ("eof" = Option<bool>, Query, description = "Close stdin after writing")),
        request_body(content = inline(RawBytes), content_type = "application/octet-stream", description = "Raw bytes for the process's stdin"),
        responses(
            (status = 200, description = "Written"),
            (status = 204, description = "Written"),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 404, description = "No such sandbox or process", body = ErrorBody),
            (status = 409, description = "stdin is not a pipe or already closed", body = ErrorBody),
            (status = 400, description = "Invalid path, query or body", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn write_stdin() {}

    #[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/signal", tag = "processes",
        params(("id" = String, Path, description = "Sandbox id"),
            ("pid" = String, Path, description = "Process pid or client id")),
        request_body = SignalRequest,
        responses(
            (status = 200, description = "Signal sent to the process group", body = ProcessInfo),
            (status = 204, description = "Signal sent"),
            (status = 400, description = "Unknown signal", body = ErrorBody),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 404, description = "No such sandbox or process", body = ErrorBody),
            (status = 409, description = "The sandbox is stopped or failed (or the call conflicts with the process state)", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn signal_process() {}

    #[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/resize", tag = "processes",
        params(("id" = String, Path, description = "Sandbox id"),
            ("pid" = String, Path, description = "Process pid or client id")),
        request_body = TtySize,
        responses(
            (status = 200, description = "Terminal resized", body = ProcessInfo),
            (status = 204, description = "Terminal resized"),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 404, description = "No such sandbox or process", body = ErrorBody),
            (status = 409, description = "The process has no terminal", body = ErrorBody),
            (status = 400, description = "Invalid path, query or body", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn resize_process() {}

    #[utoipa::path(get, path = "/v1/sandboxes/{id}/processes/{pid}/wait", tag = "processes",
        params(("id" = String, Path, description = "Sandbox id"),
            ("pid" = String, Path, description = "Process pid or client id"),
            ("timeout_ms" = Option<u64>, Query, description = "Give up after this long (408)")),
        responses(
            (status = 200, description = "The process ended", body = ProcessInfo),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 404, description = "No such sandbox or process", body = ErrorBody),
            (status = 408, description = "Still running at timeout_ms", body = ErrorBody),
            (status = 400, description = "Invalid path, query or body", body = ErrorBody),
            (status = 409, description = "The sandbox is stopped or failed (or the call conflicts with the process state)", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn wait_process() {}

    /// The sandbox agent's own log (inside the sandbox, rotated at 1 MiB), the end of it as text.
    #[utoipa::path(get, path = "/v1/sandboxes/{id}/logs", tag = "sandboxes",
        params(("id" = String, Path, description = "Sandbox id"),
            ("tail_bytes" = Option<u64>, Query, description = "How much of the end to return (default 65536, at most 4194304)")),
        responses(
            (status = 200, description = "The end of the agent's log", body = String, content_type = "text/plain"),
            (status = 400, description = "tail_bytes over the limit, or an unknown query parameter", body = ErrorBody),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 404, description = "No such sandbox, or an agent that logs to no file", body = ErrorBody),
            (status = 409, description = "The sandbox is stopped or failed", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable or unhealthy", body = ErrorBody)))]
    async fn agent_logs() {}
}

/// Doc-only stubs for the proxied files API (served by the agent; see `docs/api.md`).
#[allow(dead_code, clippy::unused_async)]
mod file_docs {
    use super::{
        ChmodRequest, ChownRequest, CreateWatcherRequest, Entry, EntryList, ErrorBody,
        MkdirRequest, MoveRequest, RawBytes, TarResult, WatchEventList, WatcherInfo,
    };

    #[utoipa::path(get, path = "/v1/sandboxes/{id}/files", tag = "files",
        params(("id" = String, Path, description = "Sandbox id"),
            ("path" = String, Query, description = "The file (percent-encoded bytes)"),
            ("user" = Option<String>, Query, description = "Act as this sandbox user (default: the sandbox's default user)"),
            ("Range" = Option<String>, Header, description = "One `bytes=` range"),
            ("Upgrade" = Option<String>, Header, description = "`sandpit-file` (with `Connection: upgrade`, plain HTTP/1.1): large content comes raw after a 101 (docs/api.md, \"Switched transfers\")")),
        responses(
            (status = 101, description = "Asked with `Upgrade: sandpit-file` and 1 MiB or more: `Sandpit-Status` (200/206) and `Sandpit-Length` bytes follow raw, then the connection closes"),
            (status = 200, description = "The file's bytes, streamed", content_type = "application/octet-stream", body = inline(RawBytes)),
            (status = 206, description = "The requested range", content_type = "application/octet-stream", body = inline(RawBytes)),
            (status = 400, description = "Bad path, or not a regular file (fifo, device, socket)", body = ErrorBody),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 403, description = "The user may not read it", body = ErrorBody),
            (status = 404, description = "No such sandbox or file", body = ErrorBody),
            (status = 409, description = "A directory (`is_a_directory`), or a path through a file (`not_a_directory`); or the sandbox is stopped", body = ErrorBody),
            (status = 416, description = "The range starts past the end", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn read_file() {}

    #[utoipa::path(put, path = "/v1/sandboxes/{id}/files", tag = "files",
        params(("id" = String, Path, description = "Sandbox id"),
            ("path" = String, Query, description = "The file (percent-encoded bytes); parents are created"),
            ("user" = Option<String>, Query, description = "Act as (and own new files as) this sandbox user"),
            ("mode" = Option<String>, Query, description = "Octal permission bits; default: the old file's, else 0644"),
            ("Content-Encoding" = Option<String>, Header, description = "`gzip` to send the content compressed"),
            ("Sandpit-Length" = Option<u64>, Header, description = "A switched upload (with `Connection: upgrade`, `Upgrade: sandpit-file`, no body): after the 101 send exactly this many bytes, then read `NNN\\n{json}` up to the close (docs/api.md, \"Switched transfers\")")),
        request_body(content = inline(RawBytes), content_type = "application/octet-stream", description = "The content, any size, streamed"),
        responses(
            (status = 101, description = "A switched upload: the content follows raw, the answer comes back as status digits, a newline and the JSON below"),
            (status = 200, description = "Written atomically; the entry of the file written (a symlink's target)", body = Entry),
            (status = 400, description = "Bad path or mode, not a regular file, or a body that broke off", body = ErrorBody),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 403, description = "The user may not write it", body = ErrorBody),
            (status = 404, description = "No such sandbox", body = ErrorBody),
            (status = 409, description = "A directory is there (`is_a_directory`), or a parent is a file", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody),
            (status = 426, description = "A switched upload on a connection that cannot be switched (`invalid_argument`): send a body", body = ErrorBody),
            (status = 507, description = "The sandbox's disk cap was hit; nothing was left half-written", body = ErrorBody)))]
    async fn write_file() {}

    #[utoipa::path(post, path = "/v1/sandboxes/{id}/files/tar", tag = "files",
        params(("id" = String, Path, description = "Sandbox id"),
            ("path" = String, Query, description = "The directory to extract into (created)"),
            ("user" = Option<String>, Query, description = "Act as this sandbox user"),
            ("Content-Encoding" = Option<String>, Header, description = "`gzip` for a .tar.gz")),
        request_body(content = inline(RawBytes), content_type = "application/x-tar", description = "A tar archive, streamed"),
        responses(
            (status = 200, description = "What was written and what was skipped (paths leaving the directory, devices, fifos)", body = TarResult),
            (status = 400, description = "Bad path, or not a tar archive", body = ErrorBody),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 403, description = "The user may not write there", body = ErrorBody),
            (status = 404, description = "No such sandbox", body = ErrorBody),
            (status = 409, description = "A parent is a file, or the sandbox is stopped", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody),
            (status = 507, description = "The disk cap was hit; files written before it are whole, none is partial", body = ErrorBody)))]
    async fn extract_tar() {}

    #[utoipa::path(get, path = "/v1/sandboxes/{id}/files/tar", tag = "files",
        params(("id" = String, Path, description = "Sandbox id"),
            ("path" = String, Query, description = "A file or directory"),
            ("user" = Option<String>, Query, description = "Act as this sandbox user")),
        responses(
            (status = 200, description = "A tar, streamed (members named from the path's base name)", content_type = "application/x-tar", body = inline(RawBytes)),
            (status = 400, description = "Bad path, or not a file or directory", body = ErrorBody),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 403, description = "The user may not read it", body = ErrorBody),
            (status = 404, description = "No such sandbox or path", body = ErrorBody),
            (status = 409, description = "The sandbox is stopped or failed", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn archive_tar() {}

    #[utoipa::path(get, path = "/v1/sandboxes/{id}/fs/list", tag = "files",
        params(("id" = String, Path, description = "Sandbox id"),
            ("path" = String, Query, description = "A directory"),
            ("depth" = Option<u32>, Query, description = "Levels (1-256, default 1)"),
            ("user" = Option<String>, Query, description = "Act as this sandbox user")),
        responses(
            (status = 200, description = "Entries, sorted by path", body = EntryList),
            (status = 400, description = "Bad path or depth", body = ErrorBody),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 403, description = "The user may not list it", body = ErrorBody),
            (status = 404, description = "No such sandbox or directory", body = ErrorBody),
            (status = 409, description = "Not a directory, or the sandbox is stopped", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn list_dir() {}

    #[utoipa::path(get, path = "/v1/sandboxes/{id}/fs/stat", tag = "files",
        params(("id" = String, Path, description = "Sandbox id"),
            ("path" = String, Query, description = "Any path (a symlink is reported as one)"),
            ("user" = Option<String>, Query, description = "Act as this sandbox user")),
        responses(
            (status = 200, description = "The entry", body = Entry),
            (status = 400, description = "Bad path", body = ErrorBody),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 403, description = "The user may not reach it", body = ErrorBody),
            (status = 404, description = "No such sandbox or path", body = ErrorBody),
            (status = 409, description = "A path through a file, or the sandbox is stopped", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn stat_path() {}

    #[utoipa::path(post, path = "/v1/sandboxes/{id}/fs/mkdir", tag = "files",
        params(("id" = String, Path, description = "Sandbox id")),
        request_body = MkdirRequest,
        responses(
            (status = 200, description = "It existed (with `parents`)", body = Entry),
            (status = 201, description = "Created", body = Entry),
            (status = 400, description = "Bad path or mode", body = ErrorBody),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 403, description = "The user may not create it", body = ErrorBody),
            (status = 404, description = "No such sandbox, or (without `parents`) no parent", body = ErrorBody),
            (status = 409, description = "`already_exists` (a file, or a directory without `parents`)", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn make_dir() {}

    #[utoipa::path(post, path = "/v1/sandboxes/{id}/fs/move", tag = "files",
        params(("id" = String, Path, description = "Sandbox id")),
        request_body = MoveRequest,
        responses(
            (status = 200, description = "Moved; the entry at `to`", body = Entry),
            (status = 400, description = "Bad path", body = ErrorBody),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 403, description = "The user may not move it", body = ErrorBody),
            (status = 404, description = "No such sandbox or `from`", body = ErrorBody),
            (status = 409, description = "`to` exists (`already_exists`, or `not_empty` with overwrite), or another file system", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn move_path() {}

    #[utoipa::path(delete, path = "/v1/sandboxes/{id}/fs", tag = "files",
        params(("id" = String, Path, description = "Sandbox id"),
            ("path" = String, Query, description = "A file, link or directory (a link is removed, not followed)"),
            ("recursive" = Option<bool>, Query, description = "Remove a non-empty directory and everything in it"),
            ("user" = Option<String>, Query, description = "Act as this sandbox user")),
        responses(
            (status = 204, description = "Removed"),
            (status = 400, description = "Bad path, or a tree deeper than 256 levels", body = ErrorBody),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 403, description = "The user may not remove it", body = ErrorBody),
            (status = 404, description = "No such sandbox or path", body = ErrorBody),
            (status = 409, description = "`not_empty` (without recursive)", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn remove_path() {}

    #[utoipa::path(post, path = "/v1/sandboxes/{id}/fs/chmod", tag = "files",
        params(("id" = String, Path, description = "Sandbox id")),
        request_body = ChmodRequest,
        responses(
            (status = 200, description = "The entry after the change", body = Entry),
            (status = 400, description = "Bad path or mode", body = ErrorBody),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 403, description = "The user does not own it", body = ErrorBody),
            (status = 404, description = "No such sandbox or path", body = ErrorBody),
            (status = 409, description = "The sandbox is stopped or failed", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn chmod_path() {}

    #[utoipa::path(post, path = "/v1/sandboxes/{id}/fs/chown", tag = "files",
        params(("id" = String, Path, description = "Sandbox id")),
        request_body = ChownRequest,
        responses(
            (status = 200, description = "The entry after the change", body = Entry),
            (status = 400, description = "Bad path, or an unknown user or group", body = ErrorBody),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 403, description = "Not permitted (only root gives files away)", body = ErrorBody),
            (status = 404, description = "No such sandbox or path", body = ErrorBody),
            (status = 409, description = "The sandbox is stopped or failed", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn chown_path() {}

    #[utoipa::path(get, path = "/v1/sandboxes/{id}/fs/watch", tag = "files",
        params(("id" = String, Path, description = "Sandbox id"),
            ("path" = String, Query, description = "The file or directory to watch"),
            ("recursive" = Option<bool>, Query, description = "Everything below it too"),
            ("from_seq" = Option<u64>, Query, description = "Replay events from this seq"),
            ("user" = Option<String>, Query, description = "Watch as this sandbox user"),
            ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this seq")),
        responses(
            (status = 200, description = "Server-sent events: `started` (id: the resume point), then create, write, remove, rename, chmod, lost (each an FsEvent, id: its seq), keepalive, ended",
                content_type = "text/event-stream", body = String),
            (status = 400, description = "Bad path or query", body = ErrorBody),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 403, description = "The user may not watch it", body = ErrorBody),
            (status = 404, description = "No such sandbox or path", body = ErrorBody),
            (status = 409, description = "The sandbox is stopped or failed", body = ErrorBody),
            (status = 429, description = "Too many watches in this sandbox", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn watch() {}

    #[utoipa::path(post, path = "/v1/sandboxes/{id}/fs/watchers", tag = "files",
        params(("id" = String, Path, description = "Sandbox id")),
        request_body = CreateWatcherRequest,
        responses(
            (status = 201, description = "The watcher; poll its events", body = WatcherInfo),
            (status = 400, description = "Bad path", body = ErrorBody),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 403, description = "The user may not watch it", body = ErrorBody),
            (status = 404, description = "No such sandbox or path", body = ErrorBody),
            (status = 409, description = "The sandbox is stopped or failed", body = ErrorBody),
            (status = 429, description = "Too many watches in this sandbox", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn create_watcher() {}

    #[utoipa::path(get, path = "/v1/sandboxes/{id}/fs/watchers/{watcher}/events", tag = "files",
        params(("id" = String, Path, description = "Sandbox id"),
            ("watcher" = String, Path, description = "Watcher id"),
            ("from_seq" = Option<u64>, Query, description = "Events from this seq (default: after the last poll)")),
        responses(
            (status = 200, description = "Events since the last poll (or `from_seq`), `lost` first when some are gone", body = WatchEventList),
            (status = 400, description = "Bad query", body = ErrorBody),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 404, description = "No such sandbox or watcher", body = ErrorBody),
            (status = 409, description = "The sandbox is stopped or failed", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn watcher_events() {}

    #[utoipa::path(delete, path = "/v1/sandboxes/{id}/fs/watchers/{watcher}", tag = "files",
        params(("id" = String, Path, description = "Sandbox id"),
            ("watcher" = String, Path, description = "Watcher id")),
        responses(
            (status = 204, description = "Deleted"),
            (status = 401, description = "Missing or wrong API key", body = ErrorBody),
            (status = 404, description = "No such sandbox or watcher", body = ErrorBody),
            (status = 409, description = "The sandbox is stopped or failed", body = ErrorBody),
            (status = 503, description = "The sandbox's agent is not reachable", body = ErrorBody)))]
    async fn delete_watcher() {}
}
