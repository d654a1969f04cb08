//! The one reader of `/proc/<pid>/stat` in the workspace (the isolator and the daemon's process backend
//! both use it; the escape probe keeps its own on purpose, as an independent attacker's view).

/// The fields of `/proc/<pid>/stat` that sandpit reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// The state letter (`R`, `S`, `T` stopped, `t` traced, `Z` zombie, …).
    pub state: char,
    pub ppid: i32,
    /// Start time in clock ticks since boot (field 22): with the pid it identifies a process across
    /// pid reuse.
    pub starttime: u64,
    /// CPU time in clock ticks: its own (user + system, fields 14-15) and its waited-for children's
    /// (fields 16-17).
    pub cpu_ticks: u64,
    pub children_cpu_ticks: u64,
    /// Threads (field 20).
    pub threads: u64,
    /// Resident set in pages (field 24).
    pub rss_pages: u64,
}

impl ProcStat {
    /// Reads the process's stat line; `None` when the process does not exist (or the line is not what
    /// the kernel writes).
    pub fn read(pid: i32) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// Parses a stat line. The command name (field 2) is in parentheses and may itself hold spaces and
    /// parentheses: the fields that follow start after the *last* `)`.
    pub fn parse(line: &str) -> Option<Self> {
        let rest = &line[line.rfind(')')? + 1..];
        // f[0] is field 3 (the state).
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
        Some(Self {
            state: f.first()?.chars().next()?,
            ppid: f.get(1)?.parse().ok()?,
            starttime: num(22)?,
            cpu_ticks: num(14)? + num(15)?,
            children_cpu_ticks: num(16)? + num(17)?,
            threads: num(20)?,
            rss_pages: num(24)?,
        })
    }
}

/// What a process has done so far, to tell a slow process from a stuck one: CPU time (its own and its
/// waited-for children's), bytes it read and wrote (`/proc/<pid>/io`), and whether a thread is waiting
/// on the disk (`D`) right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    work: u64,
    on_disk: bool,
}

impl Progress {
    /// `None` when the process does not exist.
    pub fn sample(pid: i32) -> Option<Self> {
        let stat = ProcStat::read(pid)?;
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
        Some(Self::of(&stat, &io, disk_wait(pid)))
    }

    fn of(stat: &ProcStat, io: &str, on_disk: bool) -> Self {
        let bytes: u64 = io
            .lines()
            .filter_map(|l| {
                l.strip_prefix("rchar: ")
                    .or_else(|| l.strip_prefix("wchar: "))
            })
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .sum();
        Self {
            work: (stat.cpu_ticks + stat.children_cpu_ticks).wrapping_add(bytes),
            on_disk: on_disk || stat.state == 'D',
        }
    }

    /// Whether the process got on with its work since `earlier`: it used CPU, moved bytes, or is
    /// waiting for the disk (a slow host, not a stuck process).
    pub fn moved_since(&self, earlier: &Self) -> bool {
        self.work != earlier.work || self.on_disk
    }
}

/// Whether any thread of `pid` is in uninterruptible (disk) sleep.
fn disk_wait(pid: i32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|t| {
            std::fs::read_to_string(t.path().join("stat"))
                .ok()
                .and_then(|l| ProcStat::parse(&l))
                .is_some_and(|st| st.state == 'D')
        })
}

/// A one-line account of where a process is, for an error message about a process that did not do
/// what it should in time: its name, and each thread's state letter and kernel wait channel
/// (`comm=sandpit-agent threads=[S ep_poll, S futex_wait_queue, …]`). Says `gone` when the process
/// does not exist.
pub fn describe(pid: i32) -> String {
    let Some(stat) = ProcStat::read(pid) else {
        return format!("pid {pid} gone");
    };
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let mut threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| {
            let tid: i32 = t.file_name().to_str()?.parse().ok()?;
            let st = ProcStat::parse(
                &std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?,
            )?;
            let wchan = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan"))
                .unwrap_or_default();
            Some(format!("{} {}", st.state, wchan.trim()))
        })
        .collect();
    threads.truncate(8);
    format!(
        "pid {pid} comm={} state={} threads=[{}]",
        comm.trim(),
        stat.state,
        threads.join(", ")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn describe_names_the_process_and_its_threads() {
        let me = super::describe(std::process::id() as i32);
        assert!(
            me.starts_with(&format!("pid {} comm=", std::process::id())),
            "{me}"
        );
        // This thread is running: its own state letter is R.
        assert!(
            me.contains("state=") && me.contains("threads=[") && me.contains('R'),
            "{me}"
        );
        assert!(super::describe(i32::MAX).ends_with("gone"));
    }

    use super::*;

    #[test]
    fn progress_is_cpu_or_bytes_or_a_wait_on_the_disk_never_just_time() {
        let line = |state: char, utime: u64| {
            format!("7 (init) {state} 1 7 7 0 -1 0 0 0 0 0 {utime} 0 0 0 20 0 1 0 100 1000 10 0")
        };
        let io = |r: u64| format!("rchar: {r}\nwchar: 5\nsyscr: 1\nread_bytes: 0\n");
        let at = |state, utime, r| {
            Progress::of(
                &ProcStat::parse(&line(state, utime)).unwrap(),
                &io(r),
                false,
            )
        };
        let start = at('S', 3, 100);
        assert!(!at('S', 3, 100).moved_since(&start), "asleep, nothing done");
        assert!(at('R', 4, 100).moved_since(&start), "used CPU");
        assert!(at('S', 3, 4096).moved_since(&start), "read bytes");
        assert!(at('D', 3, 100).moved_since(&start), "waiting for the disk");
        let me = std::process::id() as i32;
        assert!(Progress::sample(me).is_some());
        assert!(Progress::sample(i32::MAX).is_none());
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let line = "4242 (a) b (c)) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 \
                    1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            ProcStat::parse(line),
            Some(ProcStat {
                state: 'S',
                ppid: 17,
                starttime: 987_654,
                cpu_ticks: 3,
                children_cpu_ticks: 0,
                threads: 1,
                rss_pages: 10,
            })
        );
        assert_eq!(ProcStat::parse("12 (x) Z"), None);
        assert_eq!(ProcStat::parse("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = ProcStat::read(std::process::id() as i32).expect("own stat");
        assert!(me.starttime > 0);
        assert_eq!(me.ppid, std::os::unix::process::parent_id() as i32);
    }
}
