//! The process table and the operations the HTTP API translates into: start, look up, list, forget.
//!
//! [`Agent`] owns every [`Process`]; handlers hold `Arc`s only for the duration of a request or stream.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sandpit_types::{ProcessStatus, StartRequest, Stdin};

use crate::output::{Limits, OutputLog, log_dir};
use crate::passwd::{self, Account};
use crate::process::{Meta, Process, Timeouts, spawn_supervisor, supervise};
use crate::reaper::Reaper;
use crate::spawn::{Prepared, SpawnError, StdinSource};

/// How the agent runs processes.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where per-process output spill files go.
    pub log_dir: PathBuf,
    /// The user processes run as when a request names none. `None`: the agent's own user.
    pub default_user: Option<String>,
    /// Sandbox-wide environment, under each request's `env`.
    pub env: BTreeMap<String, String>,
    /// Output kept per process (memory plus disk).
    pub output_cap: u64,
    /// Output kept in memory per process before spilling to disk. Half of it is how far a live
    /// follower may lag before the process waits (`crate::flow`): 2 MiB by default, because a 512 KiB
    /// window (a 1 MiB tail) stalled fast streams (docs/benchmarks.md, output streams round 4).
    pub memory_tail: usize,
    /// How long finished processes stay queryable.
    pub retention: Duration,
    /// At most this many finished processes are kept, oldest forgotten first.
    pub max_finished: usize,
    /// The directory holding `passwd` and `group`.
    pub etc: PathBuf,
    /// The shell that runs `cmd` strings.
    pub shell: String,
    /// A cgroup directory for per-process cgroups.
    pub cgroup: Option<PathBuf>,
    /// Inherited `cgroup.procs` descriptors, opened by the host, through which a new process enters the
    /// subtree `cgroup` is in (and, on cgroup v1 controllers, the sandbox's `work` cgroup): inside a
    /// sandbox the agent's own cgroups are not in them, and only the host may move processes across.
    /// Marked close-on-exec at start.
    pub cgroup_entry_fds: Vec<std::os::fd::RawFd>,
    /// Inherited descriptors the host asks the init to hold open for the sandbox's whole life and takes
    /// back with `pidfd_getfd` when it needs them (the isolate backend's writable layer, for snapshots).
    /// The agent never reads them; it marks them close-on-exec at start so no process inherits them.
    pub kept_fds: Vec<std::os::fd::RawFd>,
    /// The agent's own log file (`GET /logs`), when it logs to one ([`crate::log`]).
    pub log_file: Option<PathBuf>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            log_dir: std::env::temp_dir().join(format!("sandpit-agent-{}", std::process::id())),
            default_user: None,
            env: BTreeMap::new(),
            output_cap: 64 << 20,
            memory_tail: 2 << 20,
            retention: Duration::from_secs(600),
            max_finished: 1000,
            etc: PathBuf::from("/etc"),
            shell: "/bin/sh".into(),
            cgroup: None,
            cgroup_entry_fds: Vec::new(),
            kept_fds: Vec::new(),
            log_file: None,
        }
    }
}

/// Errors of agent operations; mapped to HTTP responses in `api::error`.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("no process with id or pid {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
}

#[derive(Debug, Default)]
struct Table {
    by_id: HashMap<String, Arc<Process>>,
}

/// The agent: configuration, the reaper and the process table.
#[derive(Debug)]
pub struct Agent {
    pub config: AgentConfig,
    reaper: Reaper,
    table: Mutex<Table>,
    counter: AtomicU64,
    cgroups: Option<crate::cgroup::ProcessCgroups>,
    /// The account used when switching is impossible (the agent is not root).
    self_uid: u32,
    /// The files API: who file requests act as, and the watches.
    pub files: Arc<crate::files::Files>,
    /// The sandbox-wide environment: `config.env` at start, replaced by [`Agent::set_env`] (a sandbox
    /// taken from a warm pool gets its creator's environment this way).
    env: std::sync::RwLock<BTreeMap<String, String>>,
}

impl Agent {
    /// Replaces the sandbox-wide environment of processes started from now on.
    pub fn set_env(&self, env: BTreeMap<String, String>) {
        *self
            .env
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = env;
    }

    /// Creates the agent and starts its reaper and retention sweeper. Needs a tokio runtime.
    pub fn new(config: AgentConfig) -> std::io::Result<Arc<Self>> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.log_dir)?;
        let cgroups = match &config.cgroup {
            Some(dir) => Some(crate::cgroup::ProcessCgroups::new(dir)?),
            None => None,
        };
        for &fd in config.cgroup_entry_fds.iter().chain(&config.kept_fds) {
            // SAFETY: fcntl on a descriptor number; a bad one fails with EBADF, which is reported.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let agent = Arc::new(Self {
            reaper: Reaper::start()?,
            table: Mutex::new(Table::default()),
            counter: AtomicU64::new(0),
            cgroups,
            self_uid: nix::unistd::geteuid().as_raw(),
            files: crate::files::Files::new(config.etc.clone(), config.default_user.clone()),
            env: std::sync::RwLock::new(config.env.clone()),
            config,
        });
        let weak = Arc::downgrade(&agent);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                let Some(agent) = weak.upgrade() else { break };
                agent.sweep();
            }
        });
        Ok(agent)
    }

    /// Finds a process by id, or by pid (the running one first, then the newest).
    pub fn get(&self, key: &str) -> Result<Arc<Process>, AgentError> {
        let t = crate::sync::lock(&self.table);
        if let Some(p) = t.by_id.get(key) {
            return Ok(p.clone());
        }
        if let Ok(pid) = key.parse::<u32>() {
            let mut best: Option<&Arc<Process>> = None;
            for p in t.by_id.values().filter(|p| p.pid() == Some(pid)) {
                let better = match best {
                    None => true,
                    Some(b) => {
                        let (pr, br) = (
                            p.status() == ProcessStatus::Running,
                            b.status() == ProcessStatus::Running,
                        );
                        (pr && !br) || (pr == br && p.order > b.order)
                    }
                };
                if better {
                    best = Some(p);
                }
            }
            if let Some(p) = best {
                return Ok(p.clone());
            }
        }
        Err(AgentError::NotFound(key.to_owned()))
    }

    /// Processes, newest first, optionally filtered by status.
    pub fn list(&self, status: Option<ProcessStatus>, limit: Option<usize>) -> Vec<Arc<Process>> {
        let t = crate::sync::lock(&self.table);
        let mut v: Vec<_> = t
            .by_id
            .values()
            .filter(|p| status.is_none_or(|s| p.status() == s))
            .cloned()
            .collect();
        v.sort_by_key(|p| std::cmp::Reverse(p.order));
        v.truncate(limit.unwrap_or(usize::MAX));
        v
    }

    /// All processes (for shutdown).
    pub fn all(&self) -> Vec<Arc<Process>> {
        crate::sync::lock(&self.table)
            .by_id
            .values()
            .cloned()
            .collect()
    }

    /// Starts a process. Returns it and whether it is new (false: an existing `id` was reused).
    ///
    /// A process that cannot be started (no such program, bad cwd, unknown user) is still created, with
    /// status `failed` and an `error`: that is a result, not a request error. Not async: the spawn runs on
    /// the calling thread and takes as long as an exec.
    pub fn start(self: &Arc<Self>, req: &StartRequest) -> Result<(Arc<Process>, bool), AgentError> {
        req.validate().map_err(AgentError::InvalidArgument)?;
        // What makes two starts "the same": a retry with the same id must carry the same request.
        let key = {
            let mut r = req.clone();
            r.id = None;
            serde_json::to_string(&r).expect("requests serialize")
        };
        if let Some(id) = &req.id {
            if let Some(existing) = crate::sync::lock(&self.table).by_id.get(id) {
                return reuse(existing, &key);
            }
        }
        let order = self.counter.fetch_add(1, Ordering::SeqCst) + 1;

        // Resolve everything that can fail before the process is visible.
        let plan = self.plan(req);
        let meta = match &plan {
            Ok(p) => p.meta.clone(),
            Err(f) => f.meta.clone(),
        };
        let cgroup = match (&self.cgroups, &plan) {
            (Some(cg), Ok(_)) => cg.create(&format!("proc-{order}")).ok(),
            _ => None,
        };
        let limits = Limits {
            cap: self.config.output_cap,
            memory: self.config.memory_tail,
        };
        let proc = {
            let mut t = crate::sync::lock(&self.table);
            let id = if let Some(id) = &req.id {
                if let Some(existing) = t.by_id.get(id) {
                    return reuse(existing, &key);
                }
                id.clone()
            } else {
                // Assigned ids share the namespace with client-chosen ones: never take one in use.
                let mut id = format!("p{order}");
                let mut n = 1;
                while t.by_id.contains_key(&id) {
                    id = format!("p{order}.{n}");
                    n += 1;
                }
                id
            };
            let log = OutputLog::new(
                log_dir(&self.config.log_dir, &format!("{id}-{order}")),
                limits,
            );
            let proc = Arc::new(Process::new(
                id.clone(),
                meta,
                order,
                log,
                cgroup.clone(),
                key,
            ));
            t.by_id.insert(id, proc.clone());
            proc
        };
        let mut plan = match plan {
            Ok(plan) => plan,
            Err(f) => {
                proc.fail(f.error, f.exit_code);
                return Ok((proc, true));
            }
        };
        plan.prepared.cgroup_procs = cgroup.as_ref().and_then(|d| {
            CString::new(d.join("cgroup.procs").into_os_string().into_encoded_bytes()).ok()
        });
        if cgroup.is_some() {
            plan.prepared
                .cgroup_entry
                .clone_from(&self.config.cgroup_entry_fds);
        }

        let stdin_bytes = match &req.stdin {
            Stdin::Bytes(b) => Some(b.clone()),
            _ => None,
        };
        let prepared = plan.prepared;
        // On this thread: the clone shares the agent's memory and suspends only the calling thread until
        // the child has exec'd (or failed), as posix_spawn does, so it is as short as an exec; a hop to the
        // blocking pool and back cost two thread wake-ups per command.
        let spawned = {
            let mut guard = self.reaper.lock();
            crate::spawn::spawn(&prepared).map(|s| {
                let rx = Reaper::register(&mut guard, s.pid);
                (s, rx, prepared)
            })
        };

        match spawned {
            Err(e) => {
                let code = match &e {
                    SpawnError::Child {
                        step: crate::spawn::Step::Exec,
                        errno,
                        ..
                    } if *errno == libc::ENOENT => 127,
                    _ => 126,
                };
                proc.fail(e.to_string(), code);
            }
            Ok((s, exit_rx, _)) => {
                let stdin = match s.stdin {
                    Some(fd) => crate::spawn::async_fd(fd)
                        .map(Some)
                        .map_err(|e| AgentError::Internal(format!("stdin: {e}")))?,
                    None => None,
                };
                proc.running(s.pid, stdin, s.pty);
                tracing::debug!(id = %proc.id, pid = s.pid, "process started");
                let timeouts = Timeouts {
                    total: (req.timeout_ms > 0).then(|| Duration::from_millis(req.timeout_ms)),
                    idle: (req.idle_timeout_ms > 0)
                        .then(|| Duration::from_millis(req.idle_timeout_ms)),
                };
                spawn_supervisor(
                    proc.clone(),
                    supervise(proc.clone(), s.stdout, s.stderr, exit_rx, timeouts),
                );
                if let Some(bytes) = stdin_bytes {
                    let p = proc.clone();
                    tokio::spawn(async move {
                        let _ = p.write_stdin(&bytes).await;
                        let _ = p.close_stdin().await;
                    });
                }
            }
        }
        Ok((proc, true))
    }

    /// Forgets finished processes past the retention window or beyond the count limit.
    pub fn sweep(&self) {
        self.files.watches.sweep();
        let now = SystemTime::now();
        let mut removed = Vec::new();
        {
            let mut t = crate::sync::lock(&self.table);
            let mut finished: Vec<(u64, String, Option<SystemTime>)> = t
                .by_id
                .values()
                .filter(|p| p.status().is_final())
                .map(|p| (p.order, p.id.clone(), p.ended_at()))
                .collect();
            finished.sort_unstable();
            let excess = finished.len().saturating_sub(self.config.max_finished);
            for (i, (_, id, ended)) in finished.into_iter().enumerate() {
                let expired = ended
                    .and_then(|e| now.duration_since(e).ok())
                    .is_some_and(|age| age >= self.config.retention);
                if i < excess || expired {
                    if let Some(p) = t.by_id.remove(&id) {
                        removed.push(p);
                    }
                }
            }
        }
        for p in removed {
            p.log.remove_files();
            if let Some(cg) = &p.cgroup {
                crate::cgroup::remove(cg);
            }
        }
    }

    /// Warms the sandbox for its first command ([`crate::warm`]): call once, right after ready and off
    /// the request path (it reads `passwd` and looks paths up).
    pub fn warm_up(&self) {
        let user = self
            .config
            .default_user
            .clone()
            .unwrap_or_else(|| self.self_uid.to_string());
        let home = passwd::lookup(&self.config.etc, &user).ok().map(|a| a.home);
        let paths = crate::warm::first_command_paths(
            std::path::Path::new("/"),
            &self.config.shell,
            home.as_deref(),
        );
        let found = crate::warm::look_up(&paths);
        tracing::debug!(found, of = paths.len(), "warmed the first command's paths");
    }

    fn plan(&self, req: &StartRequest) -> Result<Plan, Box<Failure>> {
        let args: Vec<String> = match (&req.cmd, &req.argv) {
            (Some(cmd), _) => vec![self.config.shell.clone(), "-c".into(), cmd.clone()],
            (None, Some(argv)) => argv.clone(),
            (None, None) => unreachable!("validated"),
        };
        let cmd_display = req.cmd.clone().unwrap_or_else(|| args.join(" "));
        let user_name = req
            .user
            .clone()
            .or_else(|| self.config.default_user.clone());
        let account = match &user_name {
            Some(u) => passwd::lookup(&self.config.etc, u),
            None => passwd::lookup(&self.config.etc, &self.self_uid.to_string()),
        };
        let mut meta = Meta {
            cmd: cmd_display,
            args: args.clone(),
            cwd: req.cwd.clone().unwrap_or_default(),
            user: user_name.clone().unwrap_or_default(),
            env: BTreeMap::new(),
            is_pty: req.tty.is_some(),
        };
        let fail = |meta: &Meta, error: String, exit_code| {
            Box::new(Failure {
                meta: meta.clone(),
                error,
                exit_code,
            })
        };
        let account: Account = account.map_err(|e| fail(&meta, e.to_string(), 126))?;
        meta.user.clone_from(&account.name);

        let mut env = BTreeMap::new();
        // `~/.local/bin` first: where `pip install` (as a user) and `npm install -g` (with a user prefix)
        // put programs, so that what was just installed runs by name.
        env.insert(
            "PATH".to_owned(),
            format!(
                "{}/.local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                account.home.trim_end_matches('/')
            ),
        );
        env.insert("HOME".to_owned(), account.home.clone());
        env.insert("USER".to_owned(), account.name.clone());
        env.insert("LOGNAME".to_owned(), account.name.clone());
        env.insert(
            "SHELL".to_owned(),
            if account.shell.is_empty() {
                "/bin/sh".into()
            } else {
                account.shell.clone()
            },
        );
        if req.tty.is_some() {
            env.insert("TERM".to_owned(), "xterm-256color".to_owned());
        }
        env.extend(
            self.env
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        env.extend(req.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        meta.env = env.clone();

        let cwd = match req.cwd.as_deref() {
            None | Some("") => {
                if Path::new(&account.home).is_dir() {
                    account.home.clone()
                } else {
                    "/".to_owned()
                }
            }
            Some(c) if c.starts_with('/') => c.to_owned(),
            Some(c) => format!("{}/{c}", account.home.trim_end_matches('/')),
        };
        meta.cwd.clone_from(&cwd);

        let path = env.get("PATH").map_or("", String::as_str);
        let Some(program) = resolve_program(&args[0], path, &cwd) else {
            return Err(fail(&meta, format!("command not found: {}", args[0]), 127));
        };

        let switching = account.uid != self.self_uid;
        if switching && self.self_uid != 0 {
            let msg = format!(
                "cannot run as user {:?}: the agent runs as uid {} and can only switch users as root",
                account.name, self.self_uid
            );
            return Err(fail(&meta, msg, 126));
        }
        let ids = (self.self_uid == 0).then(|| (account.uid, account.gid, account.groups.clone()));

        let (program, argv, envp, cwd) = c_strings(&program, &args, &env, &cwd)
            .map_err(|s| fail(&meta, format!("{s:?} contains a NUL byte"), 126))?;
        let prepared = Prepared {
            program,
            argv,
            envp,
            cwd,
            ids,
            rlimits: req
                .rlimits
                .iter()
                .map(|r| (r.resource, r.soft, r.hard.unwrap_or(r.soft)))
                .collect(),
            stdin: match req.stdin {
                Stdin::Null => StdinSource::Null,
                Stdin::Pipe | Stdin::Bytes(_) => StdinSource::Pipe,
            },
            tty: req.tty,
            cgroup_procs: None,
            cgroup_entry: Vec::new(),
        };
        Ok(Plan { prepared, meta })
    }
}

/// The C strings `exec` needs, or the string that has a NUL byte. The request was validated, but not
/// everything here comes from it (the sandbox's env and its `/etc/passwd` do): a NUL anywhere must fail
/// the process, never panic the agent.
fn c_strings(
    program: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
    cwd: &str,
) -> Result<(CString, Vec<CString>, Vec<CString>, CString), String> {
    let c = |s: String| CString::new(s.as_bytes()).map_err(|_| s);
    Ok((
        c(program.to_owned())?,
        args.iter()
            .map(|a| c(a.clone()))
            .collect::<Result<_, _>>()?,
        env.iter()
            .map(|(k, v)| c(format!("{k}={v}")))
            .collect::<Result<_, _>>()?,
        c(cwd.to_owned())?,
    ))
}

/// An existing process for a repeated id: the same process when the request is the same (an idempotent
/// retry), a conflict when it differs.
fn reuse(existing: &Arc<Process>, key: &str) -> Result<(Arc<Process>, bool), AgentError> {
    if existing.request_key == key {
        Ok((existing.clone(), false))
    } else {
        Err(AgentError::Conflict(format!(
            "process id {:?} is already used by a different request",
            existing.id
        )))
    }
}

struct Plan {
    prepared: Prepared,
    meta: Meta,
}

struct Failure {
    meta: Meta,
    error: String,
    exit_code: i32,
}

/// Finds `name` in `PATH` the way a shell would; names with a slash are used as given.
fn resolve_program(name: &str, path: &str, cwd: &str) -> Option<String> {
    if name.contains('/') {
        let full = if name.starts_with('/') {
            PathBuf::from(name)
        } else {
            Path::new(cwd).join(name)
        };
        // Let exec report permission problems precisely; only a missing file is "not found" here.
        return full.exists().then(|| name.to_owned());
    }
    path.split(':').filter(|d| !d.is_empty()).find_map(|dir| {
        let candidate = Path::new(dir).join(name);
        let meta = std::fs::metadata(&candidate).ok()?;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0)
            .then(|| candidate.display().to_string())
    })
}
