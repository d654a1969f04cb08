//! The sandbox root filesystem, built host-side as detached mounts (nothing ever appears in the
//! host's mount table):
//!
//! * lower: an idmapped, read-only clone of the template (`open_tree` + `mount_setattr` with the
//!   sandbox's user namespace), so template files owned by uid N appear owned by sandbox uid N
//!   while the template itself is untouched and shared by all sandboxes;
//! * upper/work: directories on a per-sandbox tmpfs whose `size=` is the disk cap — the kernel
//!   enforces it (ENOSPC inside the sandbox), it costs one syscall, and it vanishes with the
//!   sandbox's mount namespace;
//! * the overlay itself, mounted by the host (init user namespace, so trusted xattrs and whiteout
//!   devices work) and handed to the sandbox child as a mount fd.
//!
//! It also lists the in-sandbox mounts (`/proc`, `/dev`, `/tmp`, the agent and its run dir) the
//! child performs before `pivot_root`.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::Path;

use crate::child::{Step, cstring};
use crate::sys::{self, FsContext};

/// Errors building the rootfs.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("creating the {disk_mb} MiB writable layer (tmpfs): {source}")]
    Tmpfs {
        disk_mb: u64,
        #[source]
        source: io::Error,
    },
    #[error(
        "creating an idmapped mount of template {path}: {source}; the template's filesystem must \
         support idmapped mounts (ext4, xfs, btrfs, tmpfs on Linux >= 5.12/6.3)"
    )]
    Idmap {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("writing {path} into the writable layer: {source}")]
    Seed {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("mounting the overlay rootfs: {source}; is overlayfs available (modprobe overlay)?")]
    Overlay {
        #[source]
        source: io::Error,
    },
}

/// A detached tmpfs of `disk_mb` MiB holding `upper/` and `work/`, owned by sandbox root.
pub(crate) fn writable_layer(disk_mb: u64, owner: u32) -> Result<OwnedFd, RootfsError> {
    let err = |source| RootfsError::Tmpfs { disk_mb, source };
    let ctx = FsContext::open(c"tmpfs").map_err(err)?;
    ctx.set("size", &format!("{disk_mb}m")).map_err(err)?;
    ctx.set("mode", "0755").map_err(err)?;
    let fd = ctx.mount(0).map_err(err)?;
    let base = format!("/proc/self/fd/{}", fd.as_raw_fd());
    for d in ["upper", "work"] {
        let p = format!("{base}/{d}");
        fs::create_dir(&p).map_err(err)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).map_err(err)?;
        chown(&p, Some(owner), Some(owner)).map_err(err)?;
    }
    Ok(fd)
}

/// Writes `content` at `rel` (e.g. `etc/resolv.conf`) in the writable layer, so that it shadows the
/// template's file; the directories on the way are made 0755. Everything is owned by sandbox root.
pub(crate) fn seed_file(
    upper: &OwnedFd,
    rel: &str,
    content: &[u8],
    owner: u32,
) -> Result<(), RootfsError> {
    let err = |source| RootfsError::Seed {
        path: rel.to_owned(),
        source,
    };
    let base = format!("/proc/self/fd/{}/upper", upper.as_raw_fd());
    let mut dir = std::path::PathBuf::from(&base);
    let parts: Vec<&str> = rel.split('/').collect();
    for p in &parts[..parts.len().saturating_sub(1)] {
        dir.push(p);
        match fs::create_dir(&dir) {
            Ok(()) => {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(err)?;
                chown(&dir, Some(owner), Some(owner)).map_err(err)?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(e)),
        }
    }
    let file = dir.join(parts.last().copied().unwrap_or_default());
    fs::write(&file, content).map_err(err)?;
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).map_err(err)?;
    chown(&file, Some(owner), Some(owner)).map_err(err)
}

/// The overlay of the idmapped template layers (`layers[0]` on top: a snapshot over its parents)
/// under `upper`, as a detached mount fd.
pub(crate) fn overlay(
    layers: &[std::path::PathBuf],
    userns: &OwnedFd,
    upper: &OwnedFd,
) -> Result<OwnedFd, RootfsError> {
    let mut lowers = Vec::with_capacity(layers.len());
    for layer in layers {
        let idmap_err = |source| RootfsError::Idmap {
            path: layer.display().to_string(),
            source,
        };
        let lower = sys::open_tree_clone(layer).map_err(idmap_err)?;
        sys::mount_setattr(&lower, libc::MOUNT_ATTR_RDONLY, Some(userns)).map_err(idmap_err)?;
        lowers.push(lower);
    }
    let err = |source| RootfsError::Overlay { source };
    let ctx = FsContext::open(c"overlay").map_err(err)?;
    let up = format!("/proc/self/fd/{}", upper.as_raw_fd());
    ctx.set("lowerdir", &lowerdir(&lowers)).map_err(err)?;
    ctx.set("upperdir", &format!("{up}/upper")).map_err(err)?;
    ctx.set("workdir", &format!("{up}/work")).map_err(err)?;
    // No inode index / metacopy: plain copy-up semantics, nothing that ties the upper layer to
    // this exact lower mount.
    ctx.set("index", "off").map_err(err)?;
    ctx.set("metacopy", "off").map_err(err)?;
    // `nodev`: a template is a whole root filesystem from wherever its builder took it (a copied
    // directory keeps its device nodes, debootstrap makes some), and this superblock belongs to the
    // host's user namespace, so without it a node in the template would open a host device for root
    // inside. The sandbox's /dev is separate mounts of the few harmless nodes. Not `nosuid`: setuid
    // binaries of the template only reach the sandbox's own root.
    ctx.mount(libc::MOUNT_ATTR_NODEV).map_err(err)
}

/// The merged, read-only view of template layers (`layers[0]` on top) as a detached mount fd, with
/// the layers' whiteouts applied: what a sandbox made from the template starts with. For export.
pub(crate) fn merged_view(layers: &[std::path::PathBuf]) -> Result<OwnedFd, RootfsError> {
    let err = |source| RootfsError::Overlay { source };
    if let [only] = layers {
        return sys::open_tree_clone(only).map_err(err);
    }
    let mut lowers = Vec::with_capacity(layers.len());
    for layer in layers {
        lowers.push(sys::open_tree_clone(layer).map_err(err)?);
    }
    let ctx = FsContext::open(c"overlay").map_err(err)?;
    ctx.set("lowerdir", &lowerdir(&lowers)).map_err(err)?;
    ctx.mount(libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NODEV)
        .map_err(err)
}

/// A volume's filesystem (mounted on the host at `host`) as a detached mount idmapped into the
/// sandbox's user namespace, like the template: uid 1000 on disk is `user` inside. `nosuid`/`nodev`:
/// a volume holds data, and outlives the sandbox that could have planted something in it.
pub(crate) fn volume(
    host: &Path,
    userns: &OwnedFd,
    read_only: bool,
) -> Result<OwnedFd, RootfsError> {
    let err = |source| RootfsError::Idmap {
        path: host.display().to_string(),
        source,
    };
    let fd = sys::open_tree_clone(host).map_err(err)?;
    let mut attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    if read_only {
        attrs |= libc::MOUNT_ATTR_RDONLY;
    }
    sys::mount_setattr(&fd, attrs, Some(userns)).map_err(err)?;
    Ok(fd)
}

/// overlayfs's `lowerdir=` value for mount fds, top layer first.
fn lowerdir(lowers: &[OwnedFd]) -> String {
    lowers
        .iter()
        .map(|l| format!("/proc/self/fd/{}", l.as_raw_fd()))
        .collect::<Vec<_>>()
        .join(":")
}

fn mount(
    src: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Step {
    Step::Mount {
        src: src.map(cstring),
        target: cstring(target),
        fstype: fstype.map(cstring),
        flags,
        data: data.map(cstring),
    }
}

fn mkdir(path: &str, mode: u32) -> Step {
    Step::Mkdir {
        path: cstring(path),
        mode,
    }
}

/// Host device nodes bind-mounted into the sandbox `/dev` (a user namespace cannot mknod).
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The mounts made inside the sandbox's mount namespace, relative to the new root, and how many
/// of them (the host binds, whose targets every template provides) run before the switch to the
/// sandbox's uid.
// A declarative list: splitting it would only scatter the mount table.
#[allow(clippy::too_many_lines)]
pub(crate) fn steps(
    run_src: Option<&Path>,
    agent_src: &Path,
    tmp_mb: u64,
    view: &crate::cgroup::CgroupView,
) -> (Vec<Step>, usize) {
    let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
    let agent_src = crate::sys::path_cstr(agent_src).unwrap_or_default();
    let mut v = Vec::new();
    // Only for this crate's tests (`share_run_dir_for_tests`): a writable host directory inside.
    if let Some(run_src) = run_src {
        let run_src = crate::sys::path_cstr(run_src).unwrap_or_default();
        v.extend([
            Step::Mount {
                src: Some(run_src),
                target: cstring("run/sandpit"),
                fstype: None,
                flags: libc::MS_BIND,
                data: None,
            },
            Step::SetAttr {
                path: cstring("run/sandpit"),
                attrs: libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC,
            },
        ]);
    }
    v.extend([
        Step::Mount {
            src: Some(agent_src),
            target: cstring(".sandpit/sandpit"),
            fstype: None,
            flags: libc::MS_BIND,
            data: None,
        },
        // Read-only: the agent binary can never be overwritten from inside (CVE-2019-5736);
        // the host file is also owned by a uid the sandbox cannot act for.
        Step::SetAttr {
            path: cstring(".sandpit/sandpit"),
            attrs: libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        },
    ]);
    let early = v.len();
    v.extend([
        mkdir("proc", 0o555),
        mount(
            Some("proc"),
            "proc",
            Some("proc"),
            nosuid_nodev | libc::MS_NOEXEC,
            None,
        ),
        mkdir("dev", 0o755),
        mount(
            Some("tmpfs"),
            "dev",
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some("mode=755,size=1m"),
        ),
    ]);
    for d in DEVICES {
        let target = format!("dev/{d}");
        v.push(Step::Touch {
            path: cstring(&target),
        });
        v.push(mount(
            Some(&format!("/dev/{d}")),
            &target,
            None,
            libc::MS_BIND,
            None,
        ));
    }
    v.extend([
        mkdir("dev/pts", 0o755),
        mount(
            Some("devpts"),
            "dev/pts",
            Some("devpts"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ),
        Step::Symlink {
            target: cstring("pts/ptmx"),
            link: cstring("dev/ptmx"),
        },
        Step::Symlink {
            target: cstring("/proc/self/fd"),
            link: cstring("dev/fd"),
        },
        Step::Symlink {
            target: cstring("/proc/self/fd/0"),
            link: cstring("dev/stdin"),
        },
        Step::Symlink {
            target: cstring("/proc/self/fd/1"),
            link: cstring("dev/stdout"),
        },
        Step::Symlink {
            target: cstring("/proc/self/fd/2"),
            link: cstring("dev/stderr"),
        },
        mkdir("dev/shm", 0o1777),
        mount(
            Some("shm"),
            "dev/shm",
            Some("tmpfs"),
            nosuid_nodev,
            Some(&format!("mode=1777,size={tmp_mb}m")),
        ),
        mkdir("tmp", 0o1777),
        mount(
            Some("tmpfs"),
            "tmp",
            Some("tmpfs"),
            nosuid_nodev,
            Some(&format!("mode=1777,size={tmp_mb}m")),
        ),
        // /sys holds only the sandbox's own cgroup view: a read-only tmpfs (nothing of the host's
        // sysfs), with the sandbox's cgroups under /sys/fs/cgroup as `view` says: each v1 hierarchy a
        // read-only bind of the sandbox's own directory, v2 a cgroup2 mount rooted there by the
        // sandbox's cgroup namespace. The agent makes its per-process cgroups in the v2 hierarchy's
        // `work` there.
        mkdir("sys", 0o555),
        mount(
            Some("sysfs-view"),
            "sys",
            Some("tmpfs"),
            nosuid_nodev | libc::MS_NOEXEC,
            Some("mode=755,size=64k"),
        ),
        mkdir("sys/fs", 0o755),
        mkdir("sys/fs/cgroup", 0o755),
    ]);
    // The hierarchies' directories and links are made in the /sys tmpfs before it turns read-only (no
    // tmpfs of their own: every superblock a sandbox has is one more the kernel visits for each memory
    // cgroup taken offline anywhere on the host).
    if view.v2 != Some("") {
        for h in &view.v1 {
            let h = &h.controllers;
            v.push(mkdir(&format!("sys/fs/cgroup/{h}"), 0o755));
            if h.contains(',') {
                for c in h.split(',') {
                    v.push(Step::Symlink {
                        target: cstring(h),
                        link: cstring(&format!("sys/fs/cgroup/{c}")),
                    });
                }
            }
        }
        if let Some(v2) = view.v2 {
            v.push(mkdir(&format!("sys/fs/cgroup/{v2}"), 0o755));
        }
    }
    v.push(Step::SetAttr {
        path: cstring("sys"),
        attrs: libc::MOUNT_ATTR_RDONLY,
    });
    for h in &view.v1 {
        // A bind of the sandbox's own directory, which is also the root of its cgroup namespace, so
        // that it shows what a new cgroup v1 mount there would (`/proc/self/mountinfo` gives its root
        // as `/` inside). Not a new mount: mounting a v1 hierarchy first waits, under the host-wide
        // cgroup lock, for every cgroup being taken offline on the host (`cgroup1_get_tree`), so that a
        // create waited longer the more sandboxes had come and gone. Read-only: the limits are the
        // host's (its files are owned by the host's root anyway).
        let target = format!("sys/fs/cgroup/{}", h.controllers);
        v.push(Step::Mount {
            src: Some(crate::sys::path_cstr(&h.dir).unwrap_or_default()),
            target: cstring(&target),
            fstype: None,
            flags: libc::MS_BIND,
            data: None,
        });
        v.push(Step::SetAttr {
            path: cstring(&target),
            attrs: libc::MOUNT_ATTR_RDONLY
                | libc::MOUNT_ATTR_NOSUID
                | libc::MOUNT_ATTR_NODEV
                | libc::MOUNT_ATTR_NOEXEC,
        });
    }
    if let Some(v2) = view.v2 {
        let target = if v2.is_empty() {
            "sys/fs/cgroup".to_string()
        } else {
            format!("sys/fs/cgroup/{v2}")
        };
        v.push(mount(
            Some("cgroup2"),
            &target,
            Some("cgroup2"),
            nosuid_nodev | libc::MS_NOEXEC,
            None,
        ));
    }
    (v, early)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::{CgroupView, V1View};

    fn described(view: &CgroupView) -> Vec<String> {
        let (steps, _) = steps(None, Path::new("/agent"), 64, view);
        steps
            .iter()
            .map(Step::describe)
            .filter(|d| d.contains("sys/fs/cgroup") || d.contains("sys"))
            .collect()
    }

    #[test]
    fn a_hybrid_view_binds_each_v1_hierarchy_read_only_and_mounts_v2_at_unified() {
        let view = CgroupView {
            v1: vec![
                V1View {
                    controllers: "cpu,cpuacct".into(),
                    dir: "/sys/fs/cgroup/cpu,cpuacct/sandpit/x".into(),
                },
                V1View {
                    controllers: "memory".into(),
                    dir: "/sys/fs/cgroup/memory/sandpit/x".into(),
                },
            ],
            v2: Some("unified"),
        };
        let (steps, _) = steps(None, Path::new("/agent"), 64, &view);
        let mounts: Vec<(String, String)> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Mount {
                    src,
                    target,
                    fstype,
                    data,
                    ..
                } if target.to_bytes().starts_with(b"sys/fs/cgroup") => Some((
                    target.to_string_lossy().into_owned(),
                    match fstype {
                        Some(t) => format!(
                            "{}:{}",
                            t.to_string_lossy(),
                            data.as_ref()
                                .map(|d| d.to_string_lossy())
                                .unwrap_or_default()
                        ),
                        None => format!(
                            "bind {}",
                            src.as_ref()
                                .map(|s| s.to_string_lossy())
                                .unwrap_or_default()
                        ),
                    },
                )),
                Step::SetAttr { path, attrs }
                    if path.to_bytes().starts_with(b"sys/fs/cgroup/")
                        && attrs & libc::MOUNT_ATTR_RDONLY != 0 =>
                {
                    Some((path.to_string_lossy().into_owned(), "read-only".into()))
                }
                _ => None,
            })
            .collect();
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert_eq!(
            mounts,
            [
                pair(
                    "sys/fs/cgroup/cpu,cpuacct",
                    "bind /sys/fs/cgroup/cpu,cpuacct/sandpit/x"
                ),
                pair("sys/fs/cgroup/cpu,cpuacct", "read-only"),
                pair(
                    "sys/fs/cgroup/memory",
                    "bind /sys/fs/cgroup/memory/sandpit/x"
                ),
                pair("sys/fs/cgroup/memory", "read-only"),
                pair("sys/fs/cgroup/unified", "cgroup2:"),
            ]
        );
        let d = described(&view);
        assert!(d.iter().any(|s| s == "symlink sys/fs/cgroup/cpu"), "{d:?}");
        assert!(
            d.iter().any(|s| s == "symlink sys/fs/cgroup/cpuacct"),
            "{d:?}"
        );
    }

    #[test]
    fn a_pure_v2_view_mounts_cgroup2_at_sys_fs_cgroup() {
        let view = CgroupView {
            v1: Vec::new(),
            v2: Some(""),
        };
        let (steps, _) = steps(None, Path::new("/agent"), 64, &view);
        let cg: Vec<String> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Mount {
                    target,
                    fstype: Some(t),
                    ..
                } if target.to_bytes().starts_with(b"sys/fs/cgroup") => Some(format!(
                    "{} {}",
                    target.to_string_lossy(),
                    t.to_string_lossy()
                )),
                _ => None,
            })
            .collect();
        assert_eq!(cg, ["sys/fs/cgroup cgroup2"]);
    }
}
