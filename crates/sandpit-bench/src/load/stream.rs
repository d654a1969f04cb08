//! The deterministic byte stream every load command writes, and how a received stream is checked
//! against it.
//!
//! A command is `bash -c SCRIPT` with shell builtins only (`printf`, arithmetic, `read -t`), so a
//! command forks once (the shell) however many lines it writes: with a thousand of them on two cores,
//! a fork per line would measure `fork`, not sandpit. Each stdout line carries the command's unique
//! prefix and its line number, so a divergence can be located (which line, lost, repeated or out of
//! order), and varies in length, so chunk boundaries fall everywhere. Every line ends with a two-byte
//! UTF-8 character (`·`): the agent must never split it between chunks, or the text the SDK hands to
//! callbacks would be mangled.
//!
//! The expected bytes are regenerated in Rust and compared byte for byte (stronger than a checksum,
//! and it says where the streams part).

use std::fmt::Write as _;

/// 48 ASCII characters; line `i` carries the first `i % 48`.
const PAD: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV";

/// Where the pacing `read -t` waits: a FIFO nobody writes to, opened read-write so the open never
/// blocks and the read never sees EOF. `read -t` on it is a sleep without a fork. Created once per
/// sandbox (see [`SETUP`]).
macro_rules! pace_fifo {
    () => {
        "/tmp/.sandpit-load-pace"
    };
}

/// Run once in every sandbox before its commands. Sandboxes of the `process` backend share the
/// host's `/tmp`: the FIFO may already be there (or be made by a neighbour at the same moment).
pub const SETUP: &str = concat!(
    "mkfifo ",
    pace_fifo!(),
    " 2>/dev/null; [ -p ",
    pace_fifo!(),
    " ]"
);

/// `$1` prefix, `$2` ticks, `$3` lines per tick, `$4` seconds between ticks. No single quote in it:
/// it travels single-quoted through `/bin/sh -c`.
const SCRIPT: &str = concat!(
    "exec 3<>",
    pace_fifo!(),
    r#" || exit 90
p=$1 t=$2 n=$3 s=$4
pad=abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV
printf "begin %s\n" "$p" >&2
i=0 k=0
while [ $k -lt $t ]; do
  k=$((k+1)) j=0
  while [ $j -lt $n ]; do
    j=$((j+1)) i=$((i+1))
    printf "%s %06d %s\xc2\xb7\n" "$p" $i "${pad:0:i%48}"
  done
  printf "tick %d\n" $k >&2
  if [ $k -lt $t ]; then read -t $s -u 3; fi
done
printf "end %s %d\n" "$p" $i >&2
"#
);

/// One command of one stream slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Unique per command: sandbox, slot and command number.
    pub prefix: String,
    pub ticks: u32,
    pub lines_per_tick: u32,
    pub tick_ms: u64,
}

impl Spec {
    pub fn new(sandbox: usize, slot: usize, n: u64, ticks: u32, lines: u32, tick_ms: u64) -> Self {
        Self {
            prefix: format!("s{sandbox:03}k{slot:02}c{n:05}"),
            ticks,
            lines_per_tick: lines,
            tick_ms,
        }
    }

    /// The shell command line (run by the agent as `/bin/sh -c`, which execs bash: no extra fork).
    pub fn command(&self) -> String {
        format!(
            "exec bash -c '{SCRIPT}' load {} {} {} {}.{:03}",
            self.prefix,
            self.ticks,
            self.lines_per_tick,
            self.tick_ms / 1000,
            self.tick_ms % 1000
        )
    }

    pub fn lines(&self) -> u64 {
        u64::from(self.ticks) * u64::from(self.lines_per_tick)
    }

    /// What stdout must be, byte for byte.
    pub fn stdout(&self) -> Vec<u8> {
        let mut s = String::with_capacity(self.lines() as usize * 52);
        for i in 1..=self.lines() {
            let _ = writeln!(s, "{} {i:06} {}·", self.prefix, &PAD[..(i % 48) as usize]);
        }
        s.into_bytes()
    }

    /// What stderr must be.
    pub fn stderr(&self) -> Vec<u8> {
        let mut s = format!("begin {}\n", self.prefix);
        for k in 1..=self.ticks {
            let _ = writeln!(s, "tick {k}");
        }
        let _ = writeln!(s, "end {} {}", self.prefix, self.lines());
        s.into_bytes()
    }
}

/// How a received stream differs from the expected one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Expected bytes from the first differing one to the end: what was lost, reordered or replaced.
    pub bad_bytes: u64,
    /// Bytes received beyond the expected length (duplicates or foreign output).
    pub extra_bytes: u64,
    /// A sentence saying where and how.
    pub detail: String,
}

/// Compares `got` with `want`; `None` when equal. `what` names the stream in the sentence.
pub fn compare(what: &str, want: &[u8], got: &[u8]) -> Option<Mismatch> {
    if want == got {
        return None;
    }
    let at = want
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(want.len().min(got.len()));
    let line = want[..at].split(|&b| b == b'\n').count();
    let line_start = want[..at]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let snippet = |b: &[u8]| -> String {
        let end = b.len().min(line_start + 72);
        String::from_utf8_lossy(b.get(line_start..end).unwrap_or_default()).into_owned()
    };
    let how = if got.len() < want.len() && want.starts_with(got) {
        format!("truncated: {} of {} bytes received", got.len(), want.len())
    } else if got.len() > want.len() && got.starts_with(want) {
        format!("{} extra bytes after the end", got.len() - want.len())
    } else {
        let order = line_order(got).map_or_else(String::new, |o| format!("; {o}"));
        format!(
            "differs at byte {at} (line {line}): expected {:?}, got {:?}{order}",
            snippet(want),
            snippet(got)
        )
    };
    Some(Mismatch {
        bad_bytes: (want.len() - at) as u64,
        extra_bytes: got.len().saturating_sub(want.len()) as u64,
        detail: format!("{what} {how}"),
    })
}

/// The first break in the line numbering of a received stdout (`PREFIX NNNNNN …` lines): says whether
/// a line went missing, came twice or came early.
fn line_order(got: &[u8]) -> Option<String> {
    let mut prev = 0u64;
    for (idx, line) in got.split(|&b| b == b'\n').enumerate() {
        let Some(n) = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if n != prev + 1 {
            let kind = match n.cmp(&(prev + 1)) {
                std::cmp::Ordering::Greater => "skipped ahead (lost or reordered)",
                _ => "went back (duplicated or reordered)",
            };
            return Some(format!(
                "received line {} is number {n} after {prev}: {kind}",
                idx + 1
            ));
        }
        prev = n;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_output_is_what_the_script_prints() {
        let s = Spec::new(7, 3, 12, 2, 3, 50);
        assert_eq!(s.prefix, "s007k03c00012");
        let out = String::from_utf8(s.stdout()).unwrap();
        assert_eq!(out.lines().count(), 6);
        assert_eq!(out.lines().next(), Some("s007k03c00012 000001 a·"));
        assert_eq!(out.lines().nth(2), Some("s007k03c00012 000003 abc·"));
        assert_eq!(
            String::from_utf8(s.stderr()).unwrap(),
            "begin s007k03c00012\ntick 1\ntick 2\nend s007k03c00012 6\n"
        );
        assert!(s.command().ends_with("load s007k03c00012 2 3 0.050"));
        assert!(!SCRIPT.contains('\''));
        assert_eq!(PAD.len(), 48);
        assert!(SCRIPT.contains(PAD) && SCRIPT.starts_with(concat!("exec 3<>", pace_fifo!(), " ")));
    }

    /// Runs the script with the host's bash, when there is one, and checks it against the Rust side.
    #[test]
    fn script_matches_the_expectation() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pace");
        let script = SCRIPT.replace(pace_fifo!(), fifo.to_str().unwrap());
        if std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_err()
        {
            return;
        }
        let s = Spec::new(1, 2, 3, 3, 50, 10);
        let Ok(out) = std::process::Command::new("bash")
            .args(["-c", &script, "load", &s.prefix, "3", "50", "0.010"])
            .output()
        else {
            return;
        };
        assert!(out.status.success(), "{out:?}");
        assert_eq!(compare("stdout", &s.stdout(), &out.stdout), None);
        assert_eq!(compare("stderr", &s.stderr(), &out.stderr), None);
    }

    #[test]
    fn mismatches_say_where() {
        let s = Spec::new(0, 0, 1, 1, 5, 0);
        let want = s.stdout();
        let cut = &want[..want.len() - 10];
        let m = compare("stdout", &want, cut).unwrap();
        assert_eq!(m.bad_bytes, 10);
        assert!(m.detail.contains("truncated"), "{}", m.detail);

        // Lines 2 and 3 swapped.
        let lines: Vec<&[u8]> = want.split_inclusive(|&b| b == b'\n').collect();
        let swapped: Vec<u8> = [lines[0], lines[2], lines[1], lines[3], lines[4]].concat();
        let m = compare("stdout", &want, &swapped).unwrap();
        assert!(m.detail.contains("line 2"), "{}", m.detail);
        assert!(m.detail.contains("number 3 after 1"), "{}", m.detail);
        assert_eq!(m.extra_bytes, 0);

        // Line 2 twice.
        let dup: Vec<u8> = [lines[0], lines[1], lines[1], lines[2]].concat();
        let m = compare("stdout", &want, &dup).unwrap();
        assert!(m.detail.contains("went back"), "{}", m.detail);
        assert_eq!(compare("stdout", &want, &want), None);
    }
}
