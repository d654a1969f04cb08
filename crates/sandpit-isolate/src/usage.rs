//! What a sandbox uses at this moment — cpu time so far, memory, processes, bytes on its writable layer —
//! read from its cgroups (v1 controllers or v2) and its root filesystem, or, for a sandbox with no cgroup
//! of its own, summed over its process tree from `/proc`. Rates (cpu percent) are the caller's: it divides
//! the difference of two readings by the time between them.

use std::path::Path;

use crate::cgroup::CgroupSet;
use crate::procfs::ProcStat;

/// One reading.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// CPU time used since the sandbox started, nanoseconds.
    pub cpu_ns: u64,
    /// The cpu limit in cpus (`None`: no limit).
    pub cpu_limit: Option<f64>,
    /// Memory in use, bytes, without the inactive page cache (what `docker stats` shows).
    pub mem_used: u64,
    /// 0: no limit.
    pub mem_limit: u64,
    /// Tasks (processes and threads).
    pub pids: u64,
    pub disk_used: u64,
    /// 0: no cap known.
    pub disk_limit: u64,
}

/// Limits at or above this are "unlimited" (cgroup v1 writes `PAGE_COUNTER_MAX` pages as bytes).
const UNLIMITED: u64 = 1 << 62;

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines (`memory.stat`, `cpu.stat`): the value of `key`.
fn stat_field(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Reads a sandbox's cgroups; fields a controller is missing for stay 0.
pub fn of_cgroups(set: &CgroupSet) -> Usage {
    let mut u = Usage::default();
    let dirs: Vec<&Path> = set.dirs();
    let with = |file: &str| dirs.iter().map(|d| d.join(file)).find(|p| p.exists());
    // CPU: cgroup v1's cpuacct, else v2's cpu.stat (present in every v2 cgroup).
    if let Some(ns) = with("cpuacct.usage").and_then(|p| read_u64(&p)) {
        u.cpu_ns = ns;
    } else if let Some(us) = with("cpu.stat").and_then(|p| stat_field(&p, "usage_usec")) {
        u.cpu_ns = us.saturating_mul(1000);
    }
    if let (Some(q), Some(p)) = (
        with("cpu.cfs_quota_us").and_then(|p| std::fs::read_to_string(p).ok()),
        with("cpu.cfs_period_us").and_then(|p| read_u64(&p)),
    ) {
        u.cpu_limit = q
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|q| *q > 0)
            .map(|q| q as f64 / p.max(1) as f64);
    } else if let Some(max) = with("cpu.max").and_then(|p| std::fs::read_to_string(p).ok()) {
        let mut it = max.split_whitespace();
        if let (Some(q), Some(p)) = (
            it.next().and_then(|q| q.parse::<u64>().ok()),
            it.next().and_then(|p| p.parse::<u64>().ok()),
        ) {
            u.cpu_limit = Some(q as f64 / p.max(1) as f64);
        }
    }
    // Memory: v1 `memory.usage_in_bytes` less inactive file pages; v2 `memory.current` likewise.
    if let Some(used) = with("memory.usage_in_bytes").and_then(|p| read_u64(&p)) {
        let cache = with("memory.stat")
            .and_then(|p| stat_field(&p, "total_inactive_file"))
            .unwrap_or(0);
        u.mem_used = used.saturating_sub(cache);
        // The sandbox's own limit is on its `work` cgroup (the sandbox's directory adds the agent's reserve).
        let limit = dirs
            .iter()
            .map(|d| {
                d.join(crate::cgroup::WORK_CGROUP)
                    .join("memory.limit_in_bytes")
            })
            .find(|p| p.exists())
            .or_else(|| with("memory.limit_in_bytes"))
            .and_then(|p| read_u64(&p))
            .unwrap_or(0);
        u.mem_limit = if limit >= UNLIMITED { 0 } else { limit };
    } else if let Some(used) = with("memory.current").and_then(|p| read_u64(&p)) {
        let cache = with("memory.stat")
            .and_then(|p| stat_field(&p, "inactive_file"))
            .unwrap_or(0);
        u.mem_used = used.saturating_sub(cache);
        u.mem_limit = with("memory.max").and_then(|p| read_u64(&p)).unwrap_or(0);
    }
    u.pids = with("pids.current").and_then(|p| read_u64(&p)).unwrap_or(0);
    u
}

/// Sums `root`'s living process tree: cpu (its own and its reaped children's), resident memory, tasks.
/// For sandboxes without a cgroup of their own (the `process` backend); approximate where processes
/// share pages.
pub fn of_process_tree(root: i32) -> Usage {
    let mut children: std::collections::HashMap<i32, Vec<(i32, ProcStat)>> =
        std::collections::HashMap::new();
    let mut root_stat = None;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(st) = ProcStat::read(pid) {
            if pid == root {
                root_stat = Some(st);
            } else {
                children.entry(st.ppid).or_default().push((pid, st));
            }
        }
    }
    let Some(root_stat) = root_stat else {
        return Usage::default();
    };
    // SAFETY: sysconf has no memory effects; it only reads a constant.
    let tick = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1);
    // SAFETY: as above.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let (mut ticks, mut pages, mut tasks) = (0u64, 0u64, 0u64);
    let mut todo = vec![(root, root_stat)];
    while let Some((pid, st)) = todo.pop() {
        // A process's reaped children are in its own children_cpu; living ones are counted below.
        ticks += st.cpu_ticks + st.children_cpu_ticks;
        pages += st.rss_pages;
        tasks += st.threads;
        if let Some(kids) = children.remove(&pid) {
            todo.extend(kids);
        }
    }
    Usage {
        cpu_ns: ticks * (1_000_000_000 / tick),
        mem_used: pages * page,
        pids: tasks,
        ..Usage::default()
    }
}

/// Bytes used and the size of the filesystem holding `path` (`statvfs`).
pub fn filesystem(path: &Path) -> Option<(u64, u64)> {
    let c = crate::sys::path_cstr(path).ok()?;
    // SAFETY: `st` is a properly sized out-parameter, written by the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a valid out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &raw mut st) } != 0 {
        return None;
    }
    Some((
        st.f_blocks.saturating_sub(st.f_bfree) * st.f_frsize,
        st.f_blocks * st.f_frsize,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_tree_uses_cpu_memory_and_tasks() {
        let me = std::process::id() as i32;
        let mut spin = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(50) {
            spin = spin.wrapping_add(1);
        }
        let u = of_process_tree(me);
        assert!(spin > 0);
        assert!(u.cpu_ns > 0, "{u:?}");
        assert!(u.mem_used > 1 << 20, "{u:?}");
        assert!(u.pids >= 1, "{u:?}");
        assert_eq!(of_process_tree(i32::MAX), Usage::default());
    }

    #[test]
    fn the_root_filesystem_has_a_size() {
        let (used, size) = filesystem(Path::new("/")).expect("statvfs /");
        assert!(size > 0 && used <= size);
    }
}
