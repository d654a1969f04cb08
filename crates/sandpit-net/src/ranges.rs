//! IPv4 range arithmetic for the firewall's interval sets: the kernel refuses overlapping intervals in
//! one set, so every list is merged first, and the operator's opt-ins are cut out of the always-denied
//! ranges.

/// An inclusive range of IPv4 addresses as integers.
pub type Range = (u32, u32);

/// What a sandbox never reaches unless the operator opts in: "this network", RFC 1918, shared address
/// space (100.64/10), loopback, link-local (cloud metadata), IETF protocol assignments, multicast and the
/// reserved/broadcast block. The sandbox pool itself (other sandboxes) is added by the firewall; the
/// host's own addresses never reach the forward path (the `input` hook refuses them).
pub const ALWAYS_DENIED_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// Sorts and joins overlapping or adjacent ranges.
pub fn merge(mut v: Vec<Range>) -> Vec<Range> {
    v.sort_unstable();
    let mut out: Vec<Range> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// `a` minus `b` (both merged).
pub fn subtract(a: &[Range], b: &[Range]) -> Vec<Range> {
    let mut out = Vec::new();
    for &(mut s, e) in a {
        let mut done = false;
        for &(bs, be) in b {
            if be < s || bs > e {
                continue;
            }
            if bs > s {
                out.push((s, bs - 1));
            }
            if be >= e {
                done = true;
                break;
            }
            s = be + 1;
        }
        if !done {
            out.push((s, e));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_and_subtracting() {
        assert_eq!(
            merge(vec![(5, 9), (1, 3), (4, 4), (20, 30), (25, 26)]),
            [(1, 9), (20, 30)]
        );
        assert_eq!(
            subtract(&[(0, 100)], &[(10, 20), (50, 50)]),
            [(0, 9), (21, 49), (51, 100)]
        );
        assert_eq!(subtract(&[(10, 20)], &[(0, 100)]), []);
        assert_eq!(subtract(&[(10, 20)], &[(15, 100)]), [(10, 14)]);
        assert_eq!(subtract(&[(10, 20), (30, 40)], &[]), [(10, 20), (30, 40)]);
    }
}
