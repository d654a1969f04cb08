//! POSIX signals by name or number, as clients send them (`"TERM"`, `"SIGTERM"`, `15`).

use serde::{Deserialize, Serialize};

/// A signal as a client spells it: a name with or without the `SIG` prefix, or a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum SignalSpec {
    Number(i32),
    Name(String),
}

/// Linux signal numbers (the generic table used by x86, arm and riscv).
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

impl SignalSpec {
    /// The signal number, or a message naming what is wrong.
    pub fn number(&self) -> Result<i32, String> {
        match self {
            Self::Number(n) if (1..=SIGRTMAX).contains(n) => Ok(*n),
            Self::Number(n) => Err(format!("signal number {n} is out of range 1..={SIGRTMAX}")),
            Self::Name(name) => parse_name(name),
        }
    }
}

fn parse_name(raw: &str) -> Result<i32, String> {
    let upper = raw.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Ok(n) = name.parse::<i32>() {
        return SignalSpec::Number(n).number();
    }
    if name == "IOT" {
        return Ok(6);
    }
    if name == "POLL" {
        return Ok(29);
    }
    if let Some(&(_, n)) = SIGNALS.iter().find(|(s, _)| *s == name) {
        return Ok(n);
    }
    // `RTMIN+n` counts up from SIGRTMIN, `RTMAX-n` down from SIGRTMAX; the result must stay in the
    // real-time range. The offset is bare digits: `str::parse` alone would also take a sign ("RTMAX--5"
    // would be signal 69) and a huge offset would overflow the addition.
    if let Some(n) = rt_offset(name, "RTMIN", '+').and_then(|o| SIGRTMIN.checked_add(o)) {
        if n <= SIGRTMAX {
            return Ok(n);
        }
    }
    if let Some(n) = rt_offset(name, "RTMAX", '-').and_then(|o| SIGRTMAX.checked_sub(o)) {
        if n >= SIGRTMIN {
            return Ok(n);
        }
    }
    Err(format!(
        "unknown signal {raw:?}: use a name such as \"TERM\" or \"SIGKILL\", or a number"
    ))
}

/// The offset in `RTMIN`, `RTMIN+n`, `RTMAX` or `RTMAX-n`: `Some(0)` for the bare name, `Some(n)` for
/// `base`, `sign` and one or more ASCII digits that fit an `i32`, `None` otherwise.
fn rt_offset(name: &str, base: &str, sign: char) -> Option<i32> {
    let rest = name.strip_prefix(base)?;
    if rest.is_empty() {
        return Some(0);
    }
    let digits = rest.strip_prefix(sign)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The conventional name (`"SIGTERM"`) of a signal number.
pub fn signal_name(n: i32) -> String {
    SIGNALS
        .iter()
        .find(|&&(_, num)| num == n)
        .map_or_else(|| format!("SIG{n}"), |(name, _)| format!("SIG{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_prefixes_parse() {
        assert_eq!(SignalSpec::Name("TERM".into()).number(), Ok(15));
        assert_eq!(SignalSpec::Name("sigkill".into()).number(), Ok(9));
        assert_eq!(SignalSpec::Name("SIGRTMIN+2".into()).number(), Ok(36));
        assert_eq!(SignalSpec::Name("RTMAX".into()).number(), Ok(64));
        assert_eq!(SignalSpec::Name("10".into()).number(), Ok(10));
        assert_eq!(SignalSpec::Number(28).number(), Ok(28));
    }

    #[test]
    fn bad_signals_are_errors_not_panics() {
        assert!(SignalSpec::Name("NOPE".into()).number().is_err());
        assert!(SignalSpec::Name("RTMIN+99".into()).number().is_err());
        assert!(SignalSpec::Number(0).number().is_err());
        assert!(SignalSpec::Number(-3).number().is_err());
        assert!(SignalSpec::Number(65).number().is_err());
    }

    /// Found with `tests/bad_input.rs` (the `signal` fuzz target finds it in under a second on the old
    /// code): `RTMIN+2147483647` overflowed the addition (a panic in the agent's handler, a 503 through
    /// the daemon) and `RTMAX--5` was taken as signal 69 (`kill` failed: a 500).
    #[test]
    fn rt_offsets_that_overflow_or_carry_a_sign_are_errors() {
        for bad in [
            "RTMIN+2147483647",
            "RTMIN+99999999999",
            "RTMAX-2147483647",
            "RTMAX--5",
            "RTMAX--2147483648",
            "RTMIN+-5",
            "RTMIN++1",
            "RTMIN+",
            "RTMAX-",
            "RTMIN+ 1",
        ] {
            assert!(SignalSpec::Name(bad.into()).number().is_err(), "{bad}");
        }
        assert_eq!(SignalSpec::Name("RTMIN+30".into()).number(), Ok(64));
        assert_eq!(SignalSpec::Name("RTMAX-30".into()).number(), Ok(34));
        assert_eq!(SignalSpec::Name("SIGRTMIN+002".into()).number(), Ok(36));
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(40), "SIG40");
    }
}
