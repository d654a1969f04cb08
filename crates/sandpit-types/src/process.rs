//! Process requests and results: what a client asks the agent to run and what it gets back.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Body of `POST /processes` (start in the background) and `POST /exec` (run and wait).
///
/// Exactly one of `cmd` (a shell string, run by the sandbox's shell) and `argv` must be given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// A shell command line, run as `/bin/sh -c CMD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// A program and its arguments, run without a shell. `argv[0]` is looked up in `PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// Working directory; the user's home when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Environment for this process, merged over the sandbox's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// User to run as (a name from the sandbox's `/etc/passwd`, or a numeric uid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Total run time before the process tree is killed and marked `timed_out`. 0 or absent: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout_ms: u64,
    /// Kill and mark `timed_out` after this long without any output. 0 or absent: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub idle_timeout_ms: u64,
    /// `"null"` (default), `"pipe"` (write later), or `{"bytes_b64": "..."}` / `{"text": "..."}`.
    #[serde(default, skip_serializing_if = "Stdin::is_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub stdin: Stdin,
    /// Allocate a pseudo-terminal of this size; stderr is then merged into stdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<TtySize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rlimits: Vec<Rlimit>,
    /// A client-chosen id. Starting an id that exists returns that process (idempotent retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// Longest client-chosen process id.
pub const MAX_PROCESS_ID_LEN: usize = 128;

impl StartRequest {
    /// Checks what serde cannot: exactly one of `cmd` and `argv`, a well-formed `id`, a usable `tty`
    /// size, no NUL byte in anything that becomes a C string, environment names without `=`, and
    /// `soft <= hard` limits. The agent calls this before anything runs; the message is for the client.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.cmd, &self.argv) {
            (Some(_), Some(_)) => return Err("give either \"cmd\" or \"argv\", not both".into()),
            (None, None) => {
                return Err("missing \"cmd\" (a shell string) or \"argv\" (a list)".into());
            }
            (None, Some(a)) if a.first().is_none_or(String::is_empty) => {
                return Err("\"argv\" must start with a program name".into());
            }
            (Some(c), None) if c.trim().is_empty() => return Err("\"cmd\" is empty".into()),
            _ => {}
        }
        if let Some(id) = &self.id {
            if id.is_empty()
                || id.len() > MAX_PROCESS_ID_LEN
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(format!(
                    "id {id:?} must be 1-{MAX_PROCESS_ID_LEN} characters of [A-Za-z0-9._-]"
                ));
            }
        }
        if let Some(t) = self.tty {
            t.validate()?;
        }
        let strings = self
            .cmd
            .iter()
            .chain(self.argv.iter().flatten())
            .chain(self.cwd.iter())
            .chain(self.user.iter())
            .chain(self.env.values());
        for s in strings {
            if s.contains('\0') {
                return Err(format!("{s:?} contains a NUL byte"));
            }
        }
        for k in self.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(format!(
                    "environment variable name {k:?} is empty or contains '=' or NUL"
                ));
            }
        }
        for r in &self.rlimits {
            if r.hard.is_some_and(|h| h < r.soft) {
                return Err(format!(
                    "rlimit {:?}: soft {} is above hard {:?}",
                    r.resource, r.soft, r.hard
                ));
            }
        }
        Ok(())
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Where a process's standard input comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Stdin {
    /// `/dev/null`.
    #[default]
    Null,
    /// A pipe the client writes to later (`POST .../stdin`, WebSocket stdin frames).
    Pipe,
    /// These bytes, then EOF.
    Bytes(Vec<u8>),
}

impl Stdin {
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }
}

/// The plain string modes of [`Stdin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StdinMode {
    Null,
    Pipe,
}

impl Serialize for Stdin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => s.serialize_str("null"),
            Self::Pipe => s.serialize_str("pipe"),
            Self::Bytes(b) => {
                let mut m = BTreeMap::new();
                m.insert("bytes_b64", B64.encode(b));
                m.serialize(s)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Stdin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = serde_json::Value::deserialize(d)?;
        match v {
            serde_json::Value::Null => Ok(Self::Null),
            serde_json::Value::String(s) => match s.as_str() {
                "null" => Ok(Self::Null),
                "pipe" => Ok(Self::Pipe),
                other => Err(D::Error::custom(format!(
                    "stdin: unknown mode {other:?}, expected \"null\", \"pipe\" or {{\"bytes_b64\": ...}}"
                ))),
            },
            serde_json::Value::Object(m) if m.len() == 1 => {
                let (k, v) = m.into_iter().next().expect("one entry");
                let serde_json::Value::String(s) = v else {
                    return Err(D::Error::custom(format!("stdin.{k} must be a string")));
                };
                match k.as_str() {
                    "bytes_b64" => B64.decode(s.as_bytes()).map(Self::Bytes).map_err(|e| {
                        D::Error::custom(format!("stdin.bytes_b64 is not base64: {e}"))
                    }),
                    "text" => Ok(Self::Bytes(s.into_bytes())),
                    other => Err(D::Error::custom(format!(
                        "stdin: unknown field {other:?}, expected \"bytes_b64\" or \"text\""
                    ))),
                }
            }
            _ => Err(D::Error::custom(
                "stdin must be \"null\", \"pipe\", {\"bytes_b64\": ...} or {\"text\": ...}",
            )),
        }
    }
}

/// Terminal size for a PTY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TtySize {
    pub cols: u16,
    pub rows: u16,
}

impl TtySize {
    /// A terminal has at least one column and one row (`TIOCSWINSZ` takes 0x0, but nothing can draw on it).
    pub fn validate(self) -> Result<(), String> {
        if self.cols == 0 || self.rows == 0 {
            return Err(format!(
                "tty size {}x{} must be at least 1x1",
                self.cols, self.rows
            ));
        }
        Ok(())
    }
}

/// One resource limit, applied with `setrlimit` before exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rlimit {
    pub resource: RlimitResource,
    pub soft: u64,
    /// Defaults to `soft`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard: Option<u64>,
}

/// The `RLIMIT_*` resources, spelled in lower case without the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum RlimitResource {
    Cpu,
    Fsize,
    Data,
    Stack,
    Core,
    Rss,
    Nproc,
    Nofile,
    Memlock,
    As,
    Locks,
    Sigpending,
    Msgqueue,
    Nice,
    Rtprio,
    Rttime,
}

/// Lifecycle of a process. `exited`, `failed`, `killed` and `timed_out` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ProcessStatus {
    /// Accepted, not yet started.
    Queued,
    Running,
    /// Exited on its own; see `exit_code`.
    Exited,
    /// Could not be started (no such program, bad cwd, unknown user); see `error`.
    Failed,
    /// Ended by a signal; see `signal`. `exit_code` is 128 + the signal number.
    Killed,
    /// Killed by the agent because `timeout_ms` or `idle_timeout_ms` passed; see `error`.
    TimedOut,
}

impl ProcessStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Exited => "exited",
            Self::Failed => "failed",
            Self::Killed => "killed",
            Self::TimedOut => "timed_out",
        }
    }
}

/// Everything known about one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProcessInfo {
    /// Stable string id: client-chosen, or assigned by the agent.
    pub id: String,
    /// PID inside the sandbox; absent when the process never started.
    pub pid: Option<u32>,
    /// The command as given: the shell string, or argv joined with spaces.
    pub cmd: String,
    /// The argv actually executed.
    pub args: Vec<String>,
    pub cwd: String,
    pub user: String,
    /// The environment the process was given (the merged one).
    pub env: BTreeMap<String, String>,
    pub is_pty: bool,
    pub status: ProcessStatus,
    /// Exit code by shell convention (128 + n when killed by signal n).
    pub exit_code: Option<i32>,
    /// Name of the signal that ended the process, e.g. `"SIGKILL"`.
    pub signal: Option<String>,
    /// RFC 3339.
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    /// Why it failed to start or why it was timed out.
    pub error: Option<String>,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// Output bytes dropped because the per-process cap was reached (the oldest go first).
    pub lost_bytes: u64,
    /// The seq of the last output chunk so far (0: none yet).
    pub last_seq: u64,
    /// What the process used, once it has ended (the kernel's account at `wait4`: the process and the
    /// descendants it waited for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ProcessResources>,
}

/// The cpu time and peak memory of an ended process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProcessResources {
    /// CPU time in user mode, milliseconds.
    pub cpu_user_ms: u64,
    /// CPU time in the kernel on its behalf, milliseconds.
    pub cpu_system_ms: u64,
    /// The largest resident set of the process or of one descendant it waited for, bytes.
    pub max_rss_bytes: u64,
}

/// Body of `GET /processes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProcessList {
    pub processes: Vec<ProcessInfo>,
}

/// Body of `DELETE /processes/{pid}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KillResponse {
    /// False when the process had already ended.
    pub killed: bool,
    pub process: ProcessInfo,
}

/// Result of `POST /exec` and of a finished wait: process info plus the collected output.
///
/// Output that is valid UTF-8 comes as `stdout`/`stderr`; otherwise as `stdout_b64`/`stderr_b64`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecResult {
    #[serde(flatten)]
    pub process: ProcessInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_b64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_b64: Option<String>,
}

impl ExecResult {
    pub fn new(process: ProcessInfo, stdout: Vec<u8>, stderr: Vec<u8>) -> Self {
        let (stdout, stdout_b64) = split_text(stdout);
        let (stderr, stderr_b64) = split_text(stderr);
        Self {
            process,
            stdout,
            stdout_b64,
            stderr,
            stderr_b64,
        }
    }

    /// Raw stdout bytes, whichever way they were encoded. Bad base64 decodes to nothing.
    pub fn stdout_bytes(&self) -> Vec<u8> {
        join_text(self.stdout.as_ref(), self.stdout_b64.as_ref())
    }

    pub fn stderr_bytes(&self) -> Vec<u8> {
        join_text(self.stderr.as_ref(), self.stderr_b64.as_ref())
    }
}

fn split_text(b: Vec<u8>) -> (Option<String>, Option<String>) {
    match String::from_utf8(b) {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(B64.encode(e.as_bytes()))),
    }
}

fn join_text(text: Option<&String>, b64: Option<&String>) -> Vec<u8> {
    match (text, b64) {
        (Some(t), _) => t.clone().into_bytes(),
        (None, Some(b)) => B64.decode(b).unwrap_or_default(),
        (None, None) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_accepts_every_spelling() {
        let p: StartRequest = serde_json::from_str(r#"{"cmd":"cat","stdin":"pipe"}"#).unwrap();
        assert_eq!(p.stdin, Stdin::Pipe);
        let p: StartRequest =
            serde_json::from_str(r#"{"cmd":"cat","stdin":{"bytes_b64":"aGk="}}"#).unwrap();
        assert_eq!(p.stdin, Stdin::Bytes(b"hi".to_vec()));
        let p: StartRequest =
            serde_json::from_str(r#"{"cmd":"cat","stdin":{"text":"yo"}}"#).unwrap();
        assert_eq!(p.stdin, Stdin::Bytes(b"yo".to_vec()));
        assert!(serde_json::from_str::<StartRequest>(r#"{"stdin":"tty"}"#).is_err());
        assert!(serde_json::from_str::<StartRequest>(r#"{"stdin":{"bytes_b64":"!!"}}"#).is_err());
    }

    #[test]
    fn unknown_fields_and_negative_sizes_are_rejected() {
        assert!(serde_json::from_str::<StartRequest>(r#"{"cmd":"x","cmdd":1}"#).is_err());
        assert!(serde_json::from_str::<StartRequest>(r#"{"tty":{"cols":-1,"rows":2}}"#).is_err());
        assert!(serde_json::from_str::<StartRequest>(r#"{"timeout_ms":-5}"#).is_err());
    }

    #[test]
    fn start_requests_are_validated_beyond_their_shape() {
        let ok = |j: &str| serde_json::from_str::<StartRequest>(j).unwrap().validate();
        assert!(ok(r#"{"cmd":"true"}"#).is_ok());
        assert!(ok(r#"{"argv":["true"],"id":"a.b-c_1","tty":{"cols":1,"rows":1}}"#).is_ok());
        for bad in [
            r"{}",
            r#"{"cmd":"a","argv":["b"]}"#,
            r#"{"argv":[]}"#,
            r#"{"argv":[""]}"#,
            r#"{"cmd":"  "}"#,
            r#"{"cmd":"a\u0000b"}"#,
            r#"{"cmd":"true","cwd":"/tmp\u0000"}"#,
            r#"{"cmd":"true","env":{"A=B":"x"}}"#,
            r#"{"cmd":"true","env":{"":"x"}}"#,
            r#"{"cmd":"true","env":{"A":"\u0000"}}"#,
            r#"{"cmd":"true","id":"../etc"}"#,
            r#"{"cmd":"true","tty":{"cols":0,"rows":5}}"#,
            r#"{"cmd":"true","rlimits":[{"resource":"nofile","soft":2,"hard":1}]}"#,
        ] {
            assert!(ok(bad).is_err(), "{bad}");
        }
    }

    /// Found by `tests/bad_input.rs`: `Last-Event-ID: 18446744073709551615` overflowed `id + 1` (a
    /// panic in the agent's handler, a 503 through the daemon).
    #[test]
    fn last_event_id_at_u64_max_saturates() {
        let q = StreamQuery::default();
        assert_eq!(q.start_seq(Some(b"18446744073709551615")), Ok(u64::MAX));
        assert_eq!(q.start_seq(Some(b" 7 ")), Ok(8));
        assert_eq!(q.start_seq(None), Ok(1));
        assert!(q.start_seq(Some(b"\xff")).is_err());
        assert!(q.start_seq(Some(b"-1")).is_err());
        let q = StreamQuery { from_seq: Some(0) };
        assert_eq!(q.start_seq(Some(b"garbage")), Ok(1));
    }

    #[test]
    fn exec_result_uses_base64_only_for_binary() {
        let info = ProcessInfo {
            id: "a".into(),
            pid: Some(1),
            cmd: "x".into(),
            args: vec![],
            cwd: "/".into(),
            user: "root".into(),
            env: BTreeMap::new(),
            is_pty: false,
            status: ProcessStatus::Exited,
            exit_code: Some(0),
            signal: None,
            started_at: None,
            ended_at: None,
            error: None,
            stdout_bytes: 0,
            stderr_bytes: 0,
            lost_bytes: 0,
            last_seq: 0,
            resources: None,
        };
        let r = ExecResult::new(info, b"hi\n".to_vec(), vec![0xff, 0xfe]);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["stdout"], "hi\n");
        assert_eq!(v["stderr_b64"], "//4=");
        assert_eq!(v["status"], "exited");
        let back: ExecResult = serde_json::from_value(v).unwrap();
        assert_eq!(back.stderr_bytes(), vec![0xff, 0xfe]);
    }
}

/// Body of `POST /processes/{pid}/signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    /// `"TERM"`, `"SIGTERM"` or `15`.
    pub signal: crate::SignalSpec,
}

/// Query of `GET /processes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<ProcessStatus>,
    pub limit: Option<usize>,
}

/// Query of `GET /processes/{pid}/events` and `/ws`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// First output seq to send (default 1: everything kept).
    pub from_seq: Option<u64>,
}

impl StreamQuery {
    /// Where a stream starts: `from_seq` (0 counts as 1), else one past the `Last-Event-ID` header an
    /// SSE client resends on reconnect, else 1 (everything kept). The header is client input: it must be
    /// a seq number, and `u64::MAX` saturates (a stream that starts after every chunk) instead of
    /// overflowing.
    pub fn start_seq(&self, last_event_id: Option<&[u8]>) -> Result<u64, String> {
        if let Some(s) = self.from_seq {
            return Ok(s.max(1));
        }
        match last_event_id {
            None => Ok(1),
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(|id| id.saturating_add(1))
                .ok_or_else(|| "Last-Event-ID must be a seq number".to_owned()),
        }
    }
}

/// Query of `GET /logs` (the daemon's `GET /v1/sandboxes/{id}/logs`): the agent's own log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// How much of the end of the log to return, in bytes (default 65536, at most 4194304).
    pub tail_bytes: Option<u64>,
}

/// Default and largest `tail_bytes` of [`LogsQuery`].
pub const LOGS_DEFAULT_TAIL: u64 = 64 << 10;
pub const LOGS_MAX_TAIL: u64 = 4 << 20;

/// Query of `GET /processes/{pid}/wait`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// Give up with 408 `timeout` after this long; absent: wait until the process ends.
    pub timeout_ms: Option<u64>,
    /// Include the collected output (default true); `false` returns the process info only.
    pub output: Option<bool>,
}

/// Query of `POST /processes/{pid}/stdin`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct StdinQuery {
    /// Close stdin after writing the body.
    #[serde(default)]
    pub eof: bool,
}

/// Body of `GET /health` on the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentHealth {
    pub status: String,
    pub protocol_version: u32,
    pub processes: usize,
    pub running: usize,
}
