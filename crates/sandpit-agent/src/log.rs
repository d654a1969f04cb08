//! The agent's own log: a file inside the sandbox, capped in size and rotated once, read back through
//! `GET /logs` (the daemon's `GET /v1/sandboxes/{id}/logs`). Never a host file: a sandbox's root can make
//! its agent log (signals, bad requests), and a host file would be disk it could fill.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The default size at which the log is rotated (`PATH` → `PATH.1`, replacing the older one).
pub const DEFAULT_MAX_BYTES: u64 = 1 << 20;

/// A file that is moved to `PATH.1` and started afresh when a write would take it past `max_bytes`: the
/// log never holds more than twice that on disk.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    file: File,
    size: u64,
}

impl RotatingFile {
    pub fn open(path: &Path, max_bytes: u64) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            max_bytes: max_bytes.max(4096),
            file,
            size,
        })
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        std::fs::rename(&self.path, rotated(&self.path))?;
        self.file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max_bytes {
            // A failed rotation keeps writing to the current file rather than losing the line.
            let _ = self.rotate();
        }
        let n = self.file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// `PATH.1`.
pub fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// The last `tail` bytes of the log (the rotated file first, then the current one), as text.
pub fn read_tail(path: &Path, tail: u64) -> std::io::Result<String> {
    let mut parts = Vec::new();
    let mut left = tail;
    for p in [path.to_owned(), rotated(path)] {
        if left == 0 {
            break;
        }
        let mut f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        let take = len.min(left);
        f.seek(SeekFrom::Start(len - take))?;
        let mut buf = Vec::with_capacity(usize::try_from(take).unwrap_or(0));
        f.take(take).read_to_end(&mut buf)?;
        left -= take;
        parts.push(buf);
    }
    parts.reverse();
    Ok(String::from_utf8_lossy(&parts.concat()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_the_cap_and_reads_back_across_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        let mut f = RotatingFile::open(&path, 4096).unwrap();
        for i in 0..600 {
            // As tracing does: one write per line.
            f.write_all(format!("line {i:04} ........\n").as_bytes())
                .unwrap();
        }
        let cur = std::fs::metadata(&path).unwrap().len();
        let old = std::fs::metadata(rotated(&path)).unwrap().len();
        assert!(cur <= 4096 && old <= 4096, "{cur} {old}");
        let all = read_tail(&path, 1 << 20).unwrap();
        assert!(all.ends_with("line 0599 ........\n"), "{all}");
        assert!(!all.contains("line 0000"), "the oldest lines are gone");
        let lines: Vec<&str> = all.lines().collect();
        let nums: Vec<u32> = lines.iter().map(|l| l[5..9].parse().unwrap()).collect();
        assert!(
            nums.windows(2).all(|w| w[1] == w[0] + 1),
            "in order across the rotation"
        );
        assert_eq!(read_tail(&path, 19).unwrap(), "line 0599 ........\n");
    }
}
