//! Pieces every process-starting builder shares: the [`Signal`] type callers pass by name or number, and
//! a macro that gives each seed-shaped builder the same per-process setters (`cwd`, `env`/`envs`, `user`/`run_as`,
//! timeouts, id) over one [`StartRequest`](sandpit_types::StartRequest), so the spellings of all five
//! seeds map onto a single wire body.

use sandpit_types::SignalSpec;

/// A POSIX signal by name (`"TERM"`, `"SIGTERM"`, `"RTMIN+1"`) or number; validated by the server.
///
/// ```
/// use sandpit::Signal;
/// let a: Signal = "INT".into();
/// let b: Signal = 9.into();
/// assert_eq!(Signal::KILL, b);
/// assert_ne!(a, Signal::TERM);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal(pub SignalSpec);

impl Signal {
    /// SIGHUP.
    pub const HUP: Self = Self(SignalSpec::Number(1));
    /// SIGINT.
    pub const INT: Self = Self(SignalSpec::Number(2));
    /// SIGQUIT.
    pub const QUIT: Self = Self(SignalSpec::Number(3));
    /// SIGKILL.
    pub const KILL: Self = Self(SignalSpec::Number(9));
    /// SIGUSR1.
    pub const USR1: Self = Self(SignalSpec::Number(10));
    /// SIGUSR2.
    pub const USR2: Self = Self(SignalSpec::Number(12));
    /// SIGTERM, the default of `kill()` on sessions.
    pub const TERM: Self = Self(SignalSpec::Number(15));
}

impl Default for Signal {
    fn default() -> Self {
        Self::TERM
    }
}

impl From<&str> for Signal {
    fn from(s: &str) -> Self {
        Self(SignalSpec::Name(s.to_owned()))
    }
}

impl From<String> for Signal {
    fn from(s: String) -> Self {
        Self(SignalSpec::Name(s))
    }
}

impl From<i32> for Signal {
    fn from(n: i32) -> Self {
        Self(SignalSpec::Number(n))
    }
}

impl From<SignalSpec> for Signal {
    fn from(s: SignalSpec) -> Self {
        Self(s)
    }
}

/// Adds the common per-process setters to a builder with a `req: StartRequest` field.
macro_rules! start_setters {
    () => {
        /// Working directory (default: the user's home).
        pub fn cwd(mut self, dir: impl Into<String>) -> Self {
            self.req.cwd = Some(dir.into());
            self
        }

        /// One environment variable, merged over the sandbox's environment.
        pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
            self.req.env.insert(key.into(), value.into());
            self
        }

        /// Many environment variables (a map or pairs); the Declaw spelling.
        pub fn envs<K: Into<String>, V: Into<String>>(
            mut self,
            vars: impl IntoIterator<Item = (K, V)>,
        ) -> Self {
            self.req
                .env
                .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
            self
        }

        /// The user to run as (a name or numeric uid); default `user` in an isolated sandbox.
        pub fn user(mut self, user: impl Into<String>) -> Self {
            self.req.user = Some(user.into());
            self
        }

        /// Same as [`user`](Self::user): the Hyperbrowser spelling.
        pub fn run_as(self, user: impl Into<String>) -> Self {
            self.user(user)
        }

        /// Total run time; past it the process tree is killed and ends `timed_out`.
        pub fn timeout(mut self, t: std::time::Duration) -> Self {
            self.req.timeout_ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
            self
        }

        /// [`timeout`](Self::timeout) in milliseconds (`timeoutMs`).
        pub fn timeout_ms(self, ms: u64) -> Self {
            self.timeout(std::time::Duration::from_millis(ms))
        }

        /// [`timeout`](Self::timeout) in seconds (`timeout_seconds`, Declaw's `timeout`).
        pub fn timeout_secs(self, secs: u64) -> Self {
            self.timeout(std::time::Duration::from_secs(secs))
        }

        /// Kill the process (status `timed_out`) after this long without any output.
        pub fn idle_timeout(mut self, t: std::time::Duration) -> Self {
            self.req.idle_timeout_ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
            self
        }

        /// A client-chosen process id (`[A-Za-z0-9._-]{1,128}`): starting an existing id returns that
        /// process instead of a second one, which makes retries safe.
        pub fn id(mut self, id: impl Into<String>) -> Self {
            self.req.id = Some(id.into());
            self
        }
    };
}

pub(crate) use start_setters;

/// The argv of `cmd args…`, or a shell command line when there are no arguments.
pub(crate) fn command_line(req: &mut sandpit_types::StartRequest, cmd: String, args: Vec<String>) {
    if args.is_empty() {
        req.cmd = Some(cmd);
        req.argv = None;
    } else {
        let mut argv = Vec::with_capacity(args.len() + 1);
        argv.push(cmd);
        argv.extend(args);
        req.argv = Some(argv);
        req.cmd = None;
    }
}
