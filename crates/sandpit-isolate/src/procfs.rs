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
        let mut fields = rest.split_whitespace();
        let state = fields.next()?.chars().next()?;
        let ppid = fields.next()?.parse().ok()?;
        // Field 22 overall is the 20th after the command name; two are read already.
        let starttime = fields.nth(17)?.parse().ok()?;
        Some(Self {
            state,
            ppid,
            starttime,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let line = "4242 (a) b (c)) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 \
                    1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            ProcStat::parse(line),
            Some(ProcStat {
                state: 'S',
                ppid: 17,
                starttime: 987_654
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
