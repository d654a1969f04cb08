//! Volumes: named filesystems that outlive sandboxes, stored as `STATE/volumes/<name>/{image,
//! volume.json}` and mounted (loop device, ext4) at `STATE/volumes/<name>/mnt` in the host's mount
//! namespace while the daemon runs.
//!
//! An ext4 image of exactly the asked size is what makes the cap hold: a full volume is `ENOSPC`
//! inside the sandbox, never a full host disk (a sparse file only takes what is written). Files are
//! stored in the sandboxes' view of ownership (uid 1000 is `user` in every sandbox) and reach each
//! sandbox through an idmapped mount made with that sandbox's user namespace, like templates; the
//! filesystem's root belongs to `user` so that the default user can write to it.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The uid/gid of the volume's root directory, in the sandboxes' view: `user`.
const ROOT_OWNER: u32 = 1000;

/// Errors of the volume store.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {0:?} does not exist")]
    NotFound(String),
    #[error("volume {0:?} already exists")]
    Exists(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{tool} failed ({status}): {output}")]
    Tool {
        tool: &'static str,
        status: String,
        output: String,
    },
}

fn ioe(what: impl Into<String>) -> impl FnOnce(io::Error) -> VolumeError {
    let what = what.into();
    move |source| VolumeError::Io { what, source }
}

/// A volume's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMeta {
    pub name: String,
    pub size_mb: u64,
    /// Who owns it (a tenant; opaque here).
    pub owner: String,
    /// Unix time of creation.
    pub created: u64,
}

/// The volume directory.
#[derive(Debug, Clone)]
pub struct VolumeStore {
    dir: PathBuf,
}

impl VolumeStore {
    pub fn new(dir: PathBuf) -> Result<Self, VolumeError> {
        fs::create_dir_all(&dir).map_err(ioe(format!("creating {}", dir.display())))?;
        let store = Self { dir };
        // Creates a killed daemon left half-made.
        for e in fs::read_dir(&store.dir).into_iter().flatten().flatten() {
            let dir = e.path();
            if !dir.join("volume.json").exists() {
                let _ = unmount(&dir.join("mnt"));
                let _ = fs::remove_dir_all(&dir);
            }
        }
        Ok(store)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The volume called `name`.
    pub fn get(&self, name: &str) -> Option<VolumeMeta> {
        if !sandpit_types::sandbox::valid_template_name(name) {
            return None;
        }
        let text = fs::read_to_string(self.path(name).join("volume.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Every volume, by name.
    pub fn list(&self) -> Vec<VolumeMeta> {
        let mut v: Vec<VolumeMeta> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| self.get(e.file_name().to_str()?))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Makes volume `name`: a sparse image of `size_mb` MiB holding an empty ext4 filesystem, mounted.
    pub fn create(&self, name: &str, size_mb: u64, owner: &str) -> Result<VolumeMeta, VolumeError> {
        let dir = self.path(name);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(VolumeError::Exists(name.to_owned()));
            }
            Err(e) => return Err(ioe(format!("creating {}", dir.display()))(e)),
        }
        let made = (|| {
            let image = dir.join("image");
            let f = fs::File::create(&image).map_err(ioe("creating the volume image"))?;
            f.set_len(size_mb << 20)
                .map_err(ioe("sizing the volume image"))?;
            drop(f);
            run(
                "mkfs.ext4",
                Command::new("mkfs.ext4")
                    .args(["-q", "-F", "-m", "0", "-E"])
                    .arg(format!(
                        "root_owner={ROOT_OWNER}:{ROOT_OWNER},lazy_itable_init=1"
                    ))
                    .arg(&image),
            )?;
            fs::create_dir(dir.join("mnt")).map_err(ioe("creating the mount point"))?;
            let meta = VolumeMeta {
                name: name.to_owned(),
                size_mb,
                owner: owner.to_owned(),
                created: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            };
            Self::mount(&dir)?;
            // Last: a directory without it is a half-made volume, removed at the next start.
            let json = serde_json::to_vec_pretty(&meta).unwrap_or_default();
            fs::write(dir.join("volume.json.tmp"), json).map_err(ioe("writing volume.json"))?;
            fs::rename(dir.join("volume.json.tmp"), dir.join("volume.json"))
                .map_err(ioe("writing volume.json"))?;
            Ok(meta)
        })();
        if made.is_err() {
            let _ = unmount(&dir.join("mnt"));
            let _ = fs::remove_dir_all(&dir);
        }
        made
    }

    fn mount(dir: &Path) -> Result<(), VolumeError> {
        let mnt = dir.join("mnt");
        if is_mountpoint(&mnt) {
            return Ok(());
        }
        run(
            "mount",
            Command::new("mount")
                .args(["-t", "ext4", "-o", "loop,nodev,nosuid"])
                .arg(dir.join("image"))
                .arg(&mnt),
        )
    }

    /// Where volume `name`'s filesystem is mounted on the host, mounting it first if needed (after a
    /// reboot, say).
    pub fn mounted(&self, name: &str) -> Result<PathBuf, VolumeError> {
        if self.get(name).is_none() {
            return Err(VolumeError::NotFound(name.to_owned()));
        }
        let dir = self.path(name);
        Self::mount(&dir)?;
        Ok(dir.join("mnt"))
    }

    /// Bytes in use on volume `name` (`statvfs`: its files and the filesystem's own metadata).
    pub fn used_bytes(&self, name: &str) -> Result<u64, VolumeError> {
        let mnt = self.mounted(name)?;
        let c = crate::sys::path_cstr(&mnt).map_err(ioe("statvfs"))?;
        // SAFETY: `st` is a properly sized out-parameter; `c` is a valid C string.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: see above.
        if unsafe { libc::statvfs(c.as_ptr(), &raw mut st) } != 0 {
            return Err(ioe(format!("statvfs {}", mnt.display()))(
                io::Error::last_os_error(),
            ));
        }
        Ok((st.f_blocks - st.f_bfree) * st.f_frsize)
    }

    /// Removes volume `name` and its data. The caller has made sure no sandbox mounts it.
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        if self.get(name).is_none() {
            return Err(VolumeError::NotFound(name.to_owned()));
        }
        let dir = self.path(name);
        // The metadata first: from here on it is a half-made volume that any restart finishes off.
        fs::remove_file(dir.join("volume.json")).map_err(ioe("removing volume.json"))?;
        unmount(&dir.join("mnt"))?;
        fs::remove_dir_all(&dir).map_err(ioe(format!("removing {}", dir.display())))
    }
}

/// Whether `p` is a mount point (its device differs from its parent's).
fn is_mountpoint(p: &Path) -> bool {
    match (fs::metadata(p), p.parent().map(fs::metadata)) {
        (Ok(m), Some(Ok(parent))) => m.dev() != parent.dev(),
        _ => false,
    }
}

/// Detaches the mount at `p`, if any; the loop device goes with its last user.
fn unmount(p: &Path) -> Result<(), VolumeError> {
    if !is_mountpoint(p) {
        return Ok(());
    }
    let c = crate::sys::path_cstr(p).map_err(ioe("umount"))?;
    // SAFETY: valid C string.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(ioe(format!("unmounting {}", p.display()))(
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn run(tool: &'static str, cmd: &mut Command) -> Result<(), VolumeError> {
    let out = cmd.output().map_err(ioe(format!("running {tool}")))?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    Err(VolumeError::Tool {
        tool,
        status: out.status.to_string(),
        output: text.trim().chars().take(400).collect(),
    })
}
