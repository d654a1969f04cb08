//! The `process` backend: **no isolation at all**. The agent runs as a detached child of the daemon, with
//! the daemon's user, filesystem and network. It exists for development, CI and machines without
//! namespaces, and is only ever used when the operator names it (`--backend process`).
//!
//! The agent is started in a session of its own (`setsid`) so that it outlives the daemon: a daemon restart
//! must not touch running processes. Pause and resume signal the agent's whole process *tree* (found through
//! `/proc`), because every user process leads its own process group and would escape a group-wide signal.
//! A process that daemonizes itself away from the tree escapes too: that is part of "no isolation".

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use sandpit_isolate::READY_FD;
use sandpit_isolate::procfs::ProcStat;

use super::{BackendError, BackendHandle, SandboxBackend, SandboxSpec};

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Starts each sandbox's agent as a plain host process. See the module docs: this is not a sandbox.
#[derive(Debug, Clone)]
pub struct ProcessBackend {
    agent_binary: PathBuf,
    start_timeout: Duration,
}

impl ProcessBackend {
    pub fn new(agent_binary: PathBuf, start_timeout: Duration) -> Self {
        Self {
            agent_binary,
            start_timeout,
        }
    }

    fn spawn_agent(
        &self,
        spec: &SandboxSpec,
        socket: &Path,
        ready_w: &OwnedFd,
    ) -> Result<Child, BackendError> {
        // The sandbox's directory is this backend's to make (private: its agent's socket is in it).
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&spec.dir)
                .map_err(|e| {
                    BackendError::io(format!("cannot create {}", spec.dir.display()), e)
                })?;
        }
        let logs = spec.dir.join("logs");
        std::fs::create_dir_all(&logs)
            .map_err(|e| BackendError::io(format!("cannot create {}", logs.display()), e))?;
        // The agent logs to `agent.log` itself (`--log-file`); this catches what it prints before that.
        let log_path = spec.dir.join("agent.stderr");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| BackendError::io(format!("cannot open {}", log_path.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| BackendError::io("cannot duplicate the log fd", e))?;

        let mut listen = OsString::from("unix:");
        listen.push(socket);
        let mut cmd = Command::new(&self.agent_binary);
        cmd.arg("agent")
            .arg("--listen")
            .arg(listen)
            .arg("--log-dir")
            .arg(&logs)
            .arg("--log-file")
            .arg(spec.dir.join("agent.log"))
            .arg("--ready-fd")
            .arg(READY_FD.to_string());
        for (k, v) in &spec.env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        // The daemon's own settings (the API key among them) are none of the sandbox's business.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SANDPIT_") {
                cmd.env_remove(k);
            }
        }
        cmd.current_dir(&spec.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);

        let raw_w = ready_w.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe calls
        // (setsid, dup2, fcntl) on fds that exist in the child; it allocates nothing and takes no locks.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                if raw_w == READY_FD {
                    // dup2 onto itself would keep FD_CLOEXEC, so clear it by hand.
                    if libc::fcntl(READY_FD, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(raw_w, READY_FD) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn().map_err(|e| {
            BackendError::io(
                format!("cannot start the agent {}", self.agent_binary.display()),
                e,
            )
        })
    }

    /// Waits until the agent accepts connections. The ready fd only makes this faster: an agent that
    /// closes it without writing still counts once its socket answers.
    fn wait_ready(
        &self,
        child: &mut Child,
        ready_r: &OwnedFd,
        socket: &Path,
    ) -> Result<(), String> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let deadline = Instant::now() + self.start_timeout;
        let mut pipe_open = true;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("the agent exited during start-up ({status})"));
            }
            if pipe_open {
                let mut fds = [PollFd::new(ready_r.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::from(50u8)) {
                    Ok(n) if n > 0 => {
                        let mut buf = [0u8; 256];
                        if matches!(nix::unistd::read(ready_r, &mut buf), Ok(0) | Err(_)) {
                            pipe_open = false;
                        }
                    }
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(format!("cannot wait for the agent: {e}")),
                }
            } else {
                std::thread::sleep(Duration::from_millis(25));
            }
            if UnixStream::connect(socket).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the agent did not accept connections within {:?}",
                    self.start_timeout
                ));
            }
        }
    }
}

impl SandboxBackend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }

    fn create(&self, spec: &SandboxSpec) -> Result<BackendHandle, BackendError> {
        if !spec.volumes.is_empty() {
            return Err(BackendError::Conflict(
                "volumes need the `isolate` backend; this daemon runs the `process` backend".into(),
            ));
        }
        if spec.template != "base" {
            return Err(BackendError::NotFound(format!(
                "template {:?} not found (the process backend only has \"base\", the host itself)",
                spec.template
            )));
        }
        let socket = spec.dir.join("agent.sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(BackendError::Unavailable(format!(
                "agent socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter state dir",
                socket.display()
            )));
        }
        let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| BackendError::io("cannot create the ready pipe", e.into()))?;
        let mut child = self.spawn_agent(spec, &socket, &ready_w)?;
        drop(ready_w);
        let pid = child.id();
        if let Err(why) = self.wait_ready(&mut child, &ready_r, &socket) {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            let _ = child.wait();
            let tail = [
                log_tail(&spec.dir.join("agent.stderr")),
                log_tail(&spec.dir.join("agent.log")),
            ]
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" / ");
            return Err(BackendError::Failed(if tail.is_empty() {
                why
            } else {
                format!("{why}; agent log: {tail}")
            }));
        }
        let starttime = proc_stat(pid as i32).map(|s| s.starttime);
        // While the daemon lives the agent is its child: reap it so that a destroyed sandbox leaves no
        // zombie. After a daemon restart the agent has been re-parented and init reaps it instead.
        std::thread::Builder::new()
            .name(format!("reap-{}", spec.id))
            .spawn(move || {
                let _ = child.wait();
            })
            .map_err(|e| BackendError::io("cannot start the reaper thread", e))?;
        Ok(BackendHandle {
            agent_socket: socket,
            init_pid: pid,
            data: serde_json::json!({ "starttime": starttime, "pgid": pid }),
        })
    }

    fn pause(&self, handle: &BackendHandle) -> Result<(), BackendError> {
        if !self.is_alive(handle) {
            return Err(BackendError::Failed("the sandbox's agent is gone".into()));
        }
        freeze_tree(handle.init_pid as i32);
        Ok(())
    }

    fn resume(&self, handle: &BackendHandle) -> Result<(), BackendError> {
        if !self.is_alive(handle) {
            return Err(BackendError::Failed("the sandbox's agent is gone".into()));
        }
        for pid in process_tree(handle.init_pid as i32) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        }
        Ok(())
    }

    fn destroy(&self, handle: &BackendHandle) -> Result<(), BackendError> {
        if !self.is_alive(handle) {
            return Ok(());
        }
        let root = handle.init_pid as i32;
        // Freeze first so that nothing forks between listing the tree and killing it.
        freeze_tree(root);
        for pid in process_tree(root) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = killpg(Pid::from_raw(root), Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.is_alive(handle) {
            if Instant::now() >= deadline {
                return Err(BackendError::Failed(format!(
                    "agent pid {root} survived SIGKILL"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn is_stopped(&self, handle: &BackendHandle) -> bool {
        proc_stat(handle.init_pid as i32).is_some_and(|s| matches!(s.state, 'T' | 't'))
    }

    /// Summed over the agent's process tree (no cgroup of its own); no disk figure: its processes write
    /// the host's filesystem.
    fn usage(&self, handle: &BackendHandle) -> Option<sandpit_isolate::usage::Usage> {
        if !self.is_alive(handle) {
            return None;
        }
        Some(sandpit_isolate::usage::of_process_tree(
            handle.init_pid as i32,
        ))
    }

    fn is_alive(&self, handle: &BackendHandle) -> bool {
        let Some(stat) = proc_stat(handle.init_pid as i32) else {
            return false;
        };
        if matches!(stat.state, 'Z' | 'X' | 'x') {
            return false;
        }
        // A recorded start time tells the agent apart from an unrelated process that got its pid later
        // (after a reboot, typically).
        match handle
            .data
            .get("starttime")
            .and_then(serde_json::Value::as_u64)
        {
            Some(t) => t == stat.starttime,
            None => true,
        }
    }
}

/// SIGSTOPs `root` and its descendants. The root goes first so that it stops spawning; the tree is then
/// listed twice to catch children forked while the first pass ran.
fn freeze_tree(root: i32) {
    let _ = kill(Pid::from_raw(root), Signal::SIGSTOP);
    for _ in 0..2 {
        for pid in process_tree(root) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
        }
    }
    // SIGSTOP is delivered asynchronously: a sleeping process is woken to take it and is briefly
    // running. Return once the whole tree is stopped (or gone), so that "paused" means frozen.
    // Regression: `real_agent::pause_freezes_processes_and_a_call_resumes_them` read `R` after pause.
    let deadline = Instant::now() + STOP_WAIT;
    while Instant::now() < deadline {
        let running = process_tree(root)
            .into_iter()
            .filter_map(proc_stat)
            .any(|st| !matches!(st.state, 'T' | 't' | 'Z' | 'X'));
        if !running {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    tracing::warn!(
        pid = root,
        "some processes were not stopped {STOP_WAIT:?} after SIGSTOP"
    );
}

/// How long [`freeze_tree`] waits for every process to report stopped.
const STOP_WAIT: Duration = Duration::from_secs(2);

fn proc_stat(pid: i32) -> Option<ProcStat> {
    ProcStat::read(pid)
}

/// `root` followed by all its living descendants, parents before children.
fn process_tree(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some(stat) = proc_stat(pid) {
                children.entry(stat.ppid).or_default().push(pid);
            }
        }
    }
    let mut out = vec![root];
    let mut seen = std::collections::HashSet::from([root]);
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            for &k in kids {
                if seen.insert(k) {
                    out.push(k);
                }
            }
        }
        i += 1;
    }
    out
}

/// The last couple of KiB of the agent's own log, for error messages.
fn log_tail(path: &Path) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(2048)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_stat_and_tree() {
        let me = std::process::id() as i32;
        let st = proc_stat(me).expect("own stat");
        assert!(st.starttime > 0);
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let tree = process_tree(me);
        assert_eq!(tree[0], me);
        assert!(tree.contains(&(child.id() as i32)));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn missing_binary_is_a_clean_error() {
        let dir = tempfile::tempdir().unwrap();
        let b = ProcessBackend::new("/nonexistent/sandpit".into(), Duration::from_secs(1));
        let spec = SandboxSpec {
            id: "t".into(),
            template: "base".into(),
            cpu: None,
            memory_mb: None,
            pids: None,
            disk_mb: None,
            env: std::collections::BTreeMap::new(),
            dir: dir.path().to_owned(),
            network: None,
            volumes: Vec::new(),
        };
        let err = b.create(&spec).unwrap_err();
        assert!(err.to_string().contains("cannot start the agent"), "{err}");
    }
}
