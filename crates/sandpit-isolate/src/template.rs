//! Templates: the read-only lower layer of every sandbox rootfs, stored as
//! `STATE/templates/<name>/{rootfs/, template.json}`.
//!
//! A template is built in a temporary sibling directory and renamed into place, so it appears
//! complete or not at all and is never modified afterwards (sandboxes only ever see it through a
//! read-only idmapped mount). On-disk ownership is the sandbox's view: uid 0 is root inside.
//!
//! Sources: `base` (built on first use from the host's `/usr`, hard-linked so it costs inodes, not
//! gigabytes, plus a generated, sanitised `/etc`), a rootfs directory, a rootfs tarball, an OCI
//! image layout or `docker save` archive (layers applied in order with whiteouts), and debootstrap.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, Read, Seek};
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The template built automatically from the host.
pub const BASE: &str = "base";

/// Errors building or reading templates.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template name {0:?} is invalid: use 1-64 characters from a-z, 0-9, '.', '_', '-'")]
    InvalidName(String),
    #[error("template {0:?} does not exist; import it or use `base`")]
    NotFound(String),
    #[error("template {0:?} already exists; templates are immutable, remove it first")]
    Exists(String),
    #[error("template {name:?} is the parent layer of snapshot {child:?}; delete that first")]
    HasChildren { name: String, child: String },
    #[error("template {0:?} is a layer chain more than 64 deep, or a loop")]
    TooDeep(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("image {path}: {reason}")]
    BadImage { path: PathBuf, reason: String },
    #[error(
        "debootstrap is not installed; install it (`apt-get install debootstrap`) to build Debian templates"
    )]
    NoDebootstrap,
    #[error("debootstrap failed ({status}); last output: {tail}")]
    Debootstrap { status: String, tail: String },
}

fn ioe(what: impl Into<String>) -> impl FnOnce(io::Error) -> TemplateError {
    let what = what.into();
    move |source| TemplateError::Io { what, source }
}

/// Metadata of a built template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateInfo {
    pub name: String,
    /// Where it came from, e.g. `host /usr`, `tarball /x.tar.gz`, `debootstrap bookworm`.
    pub source: String,
    /// Unix time of the build.
    pub created: u64,
    /// The rootfs directory (lower layer of sandboxes). For a snapshot, only what changed over
    /// `parent`, with overlayfs whiteouts for what was removed.
    pub rootfs: PathBuf,
    /// The template this one is a layer over (snapshots), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Who made it (a tenant, opaque here), for templates made from a sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Made for a fork: the daemon removes it once no sandbox uses it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_remove: bool,
}

/// What a layer built over another template is (see [`TemplateStore::build_layer`]).
#[derive(Debug, Clone, Default)]
pub struct LayerMeta {
    pub source: String,
    pub parent: String,
    pub owner: Option<String>,
    pub auto_remove: bool,
}

/// How deep a chain of snapshot layers may be (overlayfs stacks at most 500; mount options are one page).
const MAX_LAYERS: usize = 64;

/// What to import.
#[derive(Debug, Clone)]
pub enum ImportSource {
    /// A directory holding a root filesystem (copied).
    Directory(PathBuf),
    /// A tar archive of a root filesystem, optionally gzip-compressed (`docker export`).
    Tarball(PathBuf),
    /// An OCI image layout directory, or a tar of one / a `docker save` archive.
    OciImage(PathBuf),
    /// An archive someone uploaded (a template export, or any root filesystem tar), stored at the path
    /// only while it is imported.
    Upload(PathBuf),
}

/// The template directory.
#[derive(Debug, Clone)]
pub struct TemplateStore {
    dir: PathBuf,
}

/// The template-name rule is the API's (names become directory names here).
use sandpit_types::sandbox::valid_template_name as valid_name;

impl TemplateStore {
    pub fn new(dir: PathBuf) -> Result<Self, TemplateError> {
        fs::create_dir_all(&dir).map_err(ioe(format!("creating {}", dir.display())))?;
        let store = Self { dir };
        store.remove_stale_builds();
        Ok(store)
    }

    /// Removes `.tmp-*` / `.trash-*` directories left by builders that died (their pid is part of
    /// the name); a build in progress in a live process is left alone.
    fn remove_stale_builds(&self) {
        for e in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !(name.starts_with(".tmp-") || name.starts_with(".trash-")) {
                continue;
            }
            let pid = name.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }

    fn info_path(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("template.json")
    }

    /// The template called `name`, if built.
    pub fn get(&self, name: &str) -> Option<TemplateInfo> {
        if !valid_name(name) {
            return None;
        }
        let text = fs::read_to_string(self.info_path(name)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// All built templates, by name.
    pub fn list(&self) -> Vec<TemplateInfo> {
        let mut v: Vec<TemplateInfo> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| self.get(e.file_name().to_str()?))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Resolves `name`, building `base` on first use.
    pub fn resolve(&self, name: &str) -> Result<TemplateInfo, TemplateError> {
        if let Some(t) = self.get(name) {
            return Ok(t);
        }
        if name == BASE {
            return self.build(BASE, "host /usr + generated /etc", build_base);
        }
        if valid_name(name) {
            Err(TemplateError::NotFound(name.to_string()))
        } else {
            Err(TemplateError::InvalidName(name.to_string()))
        }
    }

    /// Removes a template. Running sandboxes keep working: their overlay holds the lower layer.
    pub fn remove(&self, name: &str) -> Result<(), TemplateError> {
        if !valid_name(name) {
            return Err(TemplateError::InvalidName(name.to_string()));
        }
        let dir = self.dir.join(name);
        if !dir.exists() {
            return Err(TemplateError::NotFound(name.to_string()));
        }
        if let Some(child) = self
            .list()
            .into_iter()
            .find(|t| t.parent.as_deref() == Some(name))
        {
            return Err(TemplateError::HasChildren {
                name: name.to_string(),
                child: child.name,
            });
        }
        // Rename first so a half-deleted template is never visible under its name.
        let trash = self.dir.join(format!(".trash-{name}-{}", unique()));
        fs::rename(&dir, &trash).map_err(ioe(format!("removing template {name}")))?;
        fs::remove_dir_all(&trash).map_err(ioe(format!("removing {}", trash.display())))
    }

    /// The layers a sandbox made from `t` stacks, top first: `t`'s own rootfs, then its parent's, ….
    pub fn layers(&self, t: &TemplateInfo) -> Result<Vec<PathBuf>, TemplateError> {
        let mut layers = vec![t.rootfs.clone()];
        let mut next = t.parent.clone();
        while let Some(name) = next {
            if layers.len() >= MAX_LAYERS {
                return Err(TemplateError::TooDeep(t.name.clone()));
            }
            let p = self
                .get(&name)
                .ok_or_else(|| TemplateError::NotFound(name.clone()))?;
            layers.push(p.rootfs);
            next = p.parent;
        }
        Ok(layers)
    }

    /// Builds template `name` as a layer over `meta.parent`: `fill` writes only the differences, as
    /// overlayfs records them (the template gets no `/etc` or mount points of its own).
    pub fn build_layer(
        &self,
        name: &str,
        meta: &LayerMeta,
        fill: impl FnOnce(&Path) -> Result<(), TemplateError>,
    ) -> Result<TemplateInfo, TemplateError> {
        let parent = self.resolve(&meta.parent)?;
        let depth = self.layers(&parent)?.len();
        if depth >= MAX_LAYERS {
            return Err(TemplateError::TooDeep(name.to_string()));
        }
        self.build_with(name, &meta.source, fill, |info| {
            info.parent = Some(parent.name.clone());
            info.owner.clone_from(&meta.owner);
            info.auto_remove = meta.auto_remove;
        })
    }

    /// Writes template `name` as one tar stream (zstd-compressed) to `out`: the root filesystem a
    /// sandbox made from it starts with, its layers merged, so that it imports on any host
    /// ([`ImportSource::Tarball`] reads it back).
    pub fn export(&self, name: &str, out: impl io::Write) -> Result<(), TemplateError> {
        let t = self.resolve(name)?;
        let layers = self.layers(&t)?;
        let view = crate::rootfs::merged_view(&layers).map_err(|e| TemplateError::Io {
            what: format!("mounting the layers of template {name}"),
            source: io::Error::other(e),
        })?;
        let root = PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&view)
        ));
        let mut enc = zstd::Encoder::new(out, 3).map_err(ioe("starting zstd"))?;
        // Both cores: an export of a whole root filesystem is compression-bound.
        let _ = enc.multithread(2);
        let mut tar = tar::Builder::new(enc);
        tar.follow_symlinks(false);
        tar.mode(tar::HeaderMode::Complete);
        tar.append_dir_all(".", &root)
            .map_err(ioe(format!("writing template {name}")))?;
        let enc = tar
            .into_inner()
            .map_err(ioe(format!("writing template {name}")))?;
        enc.finish()
            .map_err(ioe(format!("writing template {name}")))?;
        Ok(())
    }

    /// Imports a template from `source`.
    pub fn import(&self, name: &str, source: &ImportSource) -> Result<TemplateInfo, TemplateError> {
        let desc = match source {
            ImportSource::Directory(p) => format!("directory {}", p.display()),
            ImportSource::Tarball(p) => format!("tarball {}", p.display()),
            ImportSource::OciImage(p) => format!("OCI image {}", p.display()),
            ImportSource::Upload(_) => "uploaded archive".to_owned(),
        };
        let source = source.clone();
        self.build(name, &desc, move |root| match &source {
            ImportSource::Directory(p) => copy_tree(p, root),
            ImportSource::Tarball(p) | ImportSource::Upload(p) => unpack_tarball(p, root),
            ImportSource::OciImage(p) => import_oci(p, root),
        })
    }

    /// Builds a Debian template with `debootstrap --variant=minbase`, passing its output lines
    /// to `progress`.
    pub fn build_debian(
        &self,
        name: &str,
        suite: &str,
        mirror: Option<&str>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<TemplateInfo, TemplateError> {
        let debootstrap = ["/usr/sbin/debootstrap", "/usr/bin/debootstrap"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or(TemplateError::NoDebootstrap)?;
        self.build(name, &format!("debootstrap {suite}"), |root| {
            let mut cmd = Command::new(debootstrap);
            cmd.args(["--variant=minbase", suite]).arg(root);
            if let Some(m) = mirror {
                cmd.arg(m);
            }
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(ioe("running debootstrap"))?;
            let mut tail = Vec::new();
            if let Some(out) = child.stdout.take() {
                for line in io::BufReader::new(out).lines().map_while(Result::ok) {
                    progress(&line);
                    tail.push(line);
                    if tail.len() > 5 {
                        tail.remove(0);
                    }
                }
            }
            let status = child.wait().map_err(ioe("waiting for debootstrap"))?;
            if !status.success() {
                return Err(TemplateError::Debootstrap {
                    status: status.to_string(),
                    tail: tail.join(" | "),
                });
            }
            // The host's resolver configuration must not leak in.
            let _ = fs::remove_file(root.join("etc/resolv.conf"));
            progress("debootstrap finished; finalising template");
            Ok(())
        })
    }

    /// Builds `name` into a temporary directory with `fill`, adds what every sandpit rootfs needs,
    /// and renames it into place.
    fn build(
        &self,
        name: &str,
        source: &str,
        fill: impl FnOnce(&Path) -> Result<(), TemplateError>,
    ) -> Result<TemplateInfo, TemplateError> {
        self.build_with(
            name,
            source,
            |root| {
                fill(root)?;
                finalize(root)
            },
            |_| {},
        )
    }

    /// Builds `name` in a temporary directory that `fill` writes the rootfs of, then renames it into
    /// place; `describe` adds to the metadata.
    fn build_with(
        &self,
        name: &str,
        source: &str,
        fill: impl FnOnce(&Path) -> Result<(), TemplateError>,
        describe: impl FnOnce(&mut TemplateInfo),
    ) -> Result<TemplateInfo, TemplateError> {
        if !valid_name(name) {
            return Err(TemplateError::InvalidName(name.to_string()));
        }
        let _lock = Lock::take(&self.dir.join(format!(".lock-{name}")))?;
        if let Some(t) = self.get(name) {
            // Someone built it while we waited for the lock.
            return if name == BASE {
                Ok(t)
            } else {
                Err(TemplateError::Exists(name.to_string()))
            };
        }
        let tmp = self.dir.join(format!(".tmp-{name}-{}", unique()));
        let result = (|| {
            let root = tmp.join("rootfs");
            fs::create_dir_all(&root).map_err(ioe(format!("creating {}", root.display())))?;
            fs::set_permissions(&root, fs::Permissions::from_mode(0o755))
                .map_err(ioe("chmod rootfs"))?;
            fill(&root)?;
            let mut info = TemplateInfo {
                name: name.to_string(),
                source: source.to_string(),
                created: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                rootfs: self.dir.join(name).join("rootfs"),
                parent: None,
                owner: None,
                auto_remove: false,
            };
            describe(&mut info);
            let json = serde_json::to_vec_pretty(&info).unwrap_or_default();
            fs::write(tmp.join("template.json"), json).map_err(ioe("writing template.json"))?;
            fs::rename(&tmp, self.dir.join(name))
                .map_err(ioe(format!("installing template {name}")))?;
            Ok(info)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }
}

fn unique() -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{n}", std::process::id())
}

/// An exclusive `flock` held while a template builds (concurrent daemons or threads).
struct Lock(File);

impl Lock {
    fn take(path: &Path) -> Result<Self, TemplateError> {
        let f = File::create(path).map_err(ioe(format!("creating lock {}", path.display())))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) } != 0 {
            return Err(TemplateError::Io {
                what: format!("locking {}", path.display()),
                source: io::Error::last_os_error(),
            });
        }
        Ok(Self(f))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: unlocking a descriptor we own; closing it would unlock as well.
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&self.0), libc::LOCK_UN) };
    }
}

fn mkdir_mode(p: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<(), TemplateError> {
    if !p.exists() {
        fs::create_dir_all(p).map_err(ioe(format!("creating {}", p.display())))?;
        fs::set_permissions(p, fs::Permissions::from_mode(mode))
            .map_err(ioe(format!("chmod {}", p.display())))?;
    }
    if let Some((u, g)) = owner {
        lchown(p, Some(u), Some(g)).map_err(ioe(format!("chown {}", p.display())))?;
    }
    Ok(())
}

/// Adds what sandboxes rely on: mount points, the agent placeholder, the default user.
fn finalize(root: &Path) -> Result<(), TemplateError> {
    for (d, mode) in [
        ("proc", 0o555),
        ("dev", 0o755),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("run", 0o755),
        ("run/sandpit", 0o700),
        ("etc", 0o755),
        ("root", 0o700),
        ("home", 0o755),
        ("var/tmp", 0o1777),
        (".sandpit", 0o755),
    ] {
        mkdir_mode(&root.join(d), mode, None)?;
    }
    let agent = root.join(".sandpit/sandpit");
    if !agent.exists() {
        fs::write(&agent, b"").map_err(ioe("creating the agent placeholder"))?;
        fs::set_permissions(&agent, fs::Permissions::from_mode(0o755))
            .map_err(ioe("chmod agent placeholder"))?;
    }
    // `root` and the default user (uid/gid 1000 named `user`) unless the image already has them: an
    // image with no /etc/passwd at all (a directory holding only a static busybox) gets both.
    add_missing_lines(
        &root.join("etc/passwd"),
        &[
            ("root:", "root:x:0:0:root:/root:/bin/sh"),
            ("user:", "user:x:1000:1000:sandpit user:/home/user:/bin/sh"),
        ],
    )?;
    add_missing_lines(
        &root.join("etc/group"),
        &[("root:", "root:x:0:"), ("user:", "user:x:1000:")],
    )?;
    mkdir_mode(&root.join("home/user"), 0o755, Some((1000, 1000)))
}

/// Appends each `line` whose `prefix` starts no line of the file yet (a missing file counts as empty).
fn add_missing_lines(path: &Path, lines: &[(&str, &str)]) -> Result<(), TemplateError> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut t = text.clone();
    for (prefix, line) in lines {
        if !text.lines().any(|l| l.starts_with(prefix)) {
            if !t.is_empty() && !t.ends_with('\n') {
                t.push('\n');
            }
            t.push_str(line);
            t.push('\n');
        }
    }
    if t != text {
        fs::write(path, t).map_err(ioe("writing the template's users"))?;
    }
    Ok(())
}

/// Top-level entries of the host that `base` reproduces (merged-/usr symlinks or real dirs).
const BASE_TOP: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Host `/etc` entries copied into `base`: configuration programs need to run, nothing with
/// credentials, keys or host identity (no shadow, ssh, ssl/private, machine-id, apt auth…).
const ETC_ALLOW: &[&str] = &[
    "alternatives",
    "bash.bashrc",
    "bindresvport.blacklist",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "gai.conf",
    "host.conf",
    "inputrc",
    "issue",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "localtime",
    "login.defs",
    "magic",
    "magic.mime",
    "mime.types",
    "networks",
    "os-release",
    "profile",
    "profile.d",
    "protocols",
    "rpc",
    "services",
    "shells",
    "skel",
    "ssl/certs",
    "ssl/openssl.cnf",
    "terminfo",
    "timezone",
    "vim",
    "xattr.conf",
];

fn build_base(root: &Path) -> Result<(), TemplateError> {
    link_tree(Path::new("/usr"), &root.join("usr"))?;
    for top in BASE_TOP {
        let host = Path::new("/").join(top);
        let Ok(meta) = fs::symlink_metadata(&host) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            let target =
                fs::read_link(&host).map_err(ioe(format!("readlink {}", host.display())))?;
            std::os::unix::fs::symlink(target, root.join(top))
                .map_err(ioe(format!("symlink {top}")))?;
        } else if meta.is_dir() {
            link_tree(&host, &root.join(top))?;
        }
    }
    let etc = root.join("etc");
    mkdir_mode(&etc, 0o755, None)?;
    for entry in ETC_ALLOW {
        let src = Path::new("/etc").join(entry);
        if fs::symlink_metadata(&src).is_ok() {
            if let Some(parent) = Path::new(entry).parent() {
                mkdir_mode(&etc.join(parent), 0o755, None)?;
            }
            copy_tree(&src, &etc.join(entry))?;
        }
    }
    let files: [(&str, &str); 8] = [
        (
            "passwd",
            "root:x:0:0:root:/root:/bin/bash\n\
             user:x:1000:1000:sandpit user:/home/user:/bin/bash\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        ),
        (
            "group",
            "root:x:0:\ntty:x:5:\nusers:x:100:user\nuser:x:1000:\nnogroup:x:65534:\n",
        ),
        ("hostname", "sandpit\n"),
        (
            "hosts",
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        ),
        ("resolv.conf", ""),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n\
             protocols: files\nservices: files\nethers: files\nrpc: files\n",
        ),
        ("environment", ""),
        ("machine-id", ""),
    ];
    for (name, text) in files {
        fs::write(etc.join(name), text).map_err(ioe(format!("writing /etc/{name}")))?;
    }
    let _ = std::os::unix::fs::symlink("../proc/self/mounts", etc.join("mtab"));
    user_installs(root)?;
    for (d, mode) in [
        ("var/lib", 0o755),
        ("var/cache", 0o755),
        ("var/log", 0o755),
        ("mnt", 0o755),
        ("opt", 0o755),
        ("srv", 0o755),
        ("media", 0o755),
    ] {
        mkdir_mode(&root.join(d), mode, None)?;
    }
    Ok(())
}

/// What a user types first must work in `base` (issue 16): `pip install`, `npm install -g` and `git
/// clone` over HTTPS, as `user`, without sudo or flags.
///
/// * Python: Debian marks its interpreter EXTERNALLY-MANAGED (PEP 668), which makes `pip install` refuse.
///   A sandbox is a throw-away system of its own, so `base` drops the marker; `pip install` as `user`
///   then installs into `~/.local` (the system site is not writable: pip says "Defaulting to user
///   installation"), as root into `/usr/local`. `~/.local/bin` is on the agent's default `PATH`.
/// * npm: the global prefix is the user's own `~/.local` (`npm install -g` needs no root, binaries land
///   in `~/.local/bin`), and npm, pip and git use the host's CA bundle (`/etc/ssl/certs`, copied into
///   `base`), which is what this host's package registries are reached with.
///
/// Files here replace hard links to the host's `/usr`: each is unlinked before it is written, so the
/// host's own file is never touched.
fn user_installs(root: &Path) -> Result<(), TemplateError> {
    let replace = |rel: &str, text: &str| -> Result<(), TemplateError> {
        let p = root.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(ioe(format!("mkdir {}", parent.display())))?;
        }
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ioe(format!("removing {}", p.display()))(e)),
        }
        fs::write(&p, text).map_err(ioe(format!("writing {}", p.display())))
    };
    for e in fs::read_dir(root.join("usr/lib"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let marker = e.path().join("EXTERNALLY-MANAGED");
        if e.file_name().to_string_lossy().starts_with("python3") && marker.exists() {
            fs::remove_file(&marker).map_err(ioe(format!("removing {}", marker.display())))?;
        }
    }
    let ca = "/etc/ssl/certs/ca-certificates.crt";
    let npmrc = format!("prefix=${{HOME}}/.local\ncafile={ca}\n");
    // npm reads `{its prefix}/etc/npmrc` (Debian's and nodejs.org's builds differ on the prefix).
    replace("usr/etc/npmrc", &npmrc)?;
    replace("etc/npmrc", &npmrc)?;
    replace("etc/pip.conf", &format!("[global]\ncert = {ca}\n"))?;
    let git_ca = format!("[http]\n\tsslCAInfo = {ca}\n");
    replace("etc/gitconfig", &git_ca)?;
    // A git built from source (in /usr/local) reads `/usr/local/etc/gitconfig` instead: keep what the
    // host has there and add the same setting.
    if root.join("usr/local/bin/git").exists() {
        let rel = "usr/local/etc/gitconfig";
        let host = fs::read_to_string(root.join(rel)).unwrap_or_default();
        replace(rel, &format!("{host}{git_ca}"))?;
    }
    Ok(())
}

/// Mirrors `src` into `dst` with hard links for regular files (copying only when linking is
/// impossible, e.g. across filesystems): directories and symlinks are recreated with the same
/// mode and owner. Template files are only ever exposed read-only, so sharing inodes is safe.
fn link_tree(src: &Path, dst: &Path) -> Result<(), TemplateError> {
    let meta = fs::symlink_metadata(src).map_err(ioe(format!("stat {}", src.display())))?;
    if !meta.is_dir() {
        return copy_entry(src, dst, &meta, true, &mut HashMap::new());
    }
    mkdir_copy(dst, &meta)?;
    for entry in fs::read_dir(src).map_err(ioe(format!("reading {}", src.display())))? {
        let entry = entry.map_err(ioe(format!("reading {}", src.display())))?;
        let (s, d) = (entry.path(), dst.join(entry.file_name()));
        let m = fs::symlink_metadata(&s).map_err(ioe(format!("stat {}", s.display())))?;
        if m.is_dir() {
            link_tree(&s, &d)?;
        } else {
            copy_entry(&s, &d, &m, true, &mut HashMap::new())?;
        }
    }
    Ok(())
}

fn mkdir_copy(dst: &Path, meta: &fs::Metadata) -> Result<(), TemplateError> {
    match fs::create_dir(dst) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(ioe(format!("mkdir {}", dst.display()))(e)),
    }
    lchown(dst, Some(meta.uid()), Some(meta.gid()))
        .map_err(ioe(format!("chown {}", dst.display())))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(ioe(format!("chmod {}", dst.display())))
}

/// Copies (or links) one non-directory entry, preserving type, mode and owner. `links` maps
/// source inodes to already-copied paths so hard links inside the source stay hard links.
fn copy_entry(
    src: &Path,
    dst: &Path,
    meta: &fs::Metadata,
    hardlink: bool,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), TemplateError> {
    let ft = meta.file_type();
    let what = || format!("copying {} to {}", src.display(), dst.display());
    if ft.is_symlink() {
        let target = fs::read_link(src).map_err(ioe(what()))?;
        std::os::unix::fs::symlink(target, dst).map_err(ioe(what()))?;
        return lchown(dst, Some(meta.uid()), Some(meta.gid())).map_err(ioe(what()));
    }
    if ft.is_file() {
        if hardlink && fs::hard_link(src, dst).is_ok() {
            return Ok(());
        }
        if meta.nlink() > 1 {
            if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                return fs::hard_link(first, dst).map_err(ioe(what()));
            }
            links.insert((meta.dev(), meta.ino()), dst.to_path_buf());
        }
        fs::copy(src, dst).map_err(ioe(what()))?;
    } else {
        // Devices, fifos, sockets: recreate the node (we are root on the host).
        let c = crate::sys::path_cstr(dst).map_err(ioe(what()))?;
        // SAFETY: valid C string; mknod has no memory side effects.
        if unsafe { libc::mknod(c.as_ptr(), meta.mode(), meta.rdev()) } != 0 {
            return Err(ioe(what())(io::Error::last_os_error()));
        }
    }
    lchown(dst, Some(meta.uid()), Some(meta.gid())).map_err(ioe(what()))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777)).map_err(ioe(what()))
}

/// Copies a tree (no hard links to the source: an imported directory may change later).
fn copy_tree(src: &Path, dst: &Path) -> Result<(), TemplateError> {
    fn walk(
        src: &Path,
        dst: &Path,
        links: &mut HashMap<(u64, u64), PathBuf>,
    ) -> Result<(), TemplateError> {
        let meta = fs::symlink_metadata(src).map_err(ioe(format!("stat {}", src.display())))?;
        if !meta.is_dir() {
            return copy_entry(src, dst, &meta, false, links);
        }
        mkdir_copy(dst, &meta)?;
        for entry in fs::read_dir(src).map_err(ioe(format!("reading {}", src.display())))? {
            let entry = entry.map_err(ioe(format!("reading {}", src.display())))?;
            walk(&entry.path(), &dst.join(entry.file_name()), links)?;
        }
        Ok(())
    }
    walk(src, dst, &mut HashMap::new())
}

/// Opens a possibly gzip-compressed tar stream.
fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read>, TemplateError> {
    let mut f = File::open(path).map_err(ioe(format!("opening {}", path.display())))?;
    let mut magic = [0u8; 4];
    let n = f
        .read(&mut magic)
        .map_err(ioe(format!("reading {}", path.display())))?;
    f.rewind()
        .map_err(ioe(format!("reading {}", path.display())))?;
    let bad = |reason: &str| TemplateError::BadImage {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    match &magic[..n] {
        [0x1f, 0x8b, ..] => Ok(Box::new(flate2::read::GzDecoder::new(io::BufReader::new(
            f,
        )))),
        [0x28, 0xb5, 0x2f, 0xfd] => Ok(Box::new(
            zstd::Decoder::new(f).map_err(ioe(format!("reading {}", path.display())))?,
        )),
        [0xfd, b'7', b'z', b'X'] => Err(bad("xz-compressed; decompress it first (xz -d)")),
        _ => Ok(Box::new(io::BufReader::new(f))),
    }
}

fn archive<R: Read>(r: R) -> tar::Archive<R> {
    let mut a = tar::Archive::new(r);
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(true);
    a.set_preserve_mtime(true);
    a.set_unpack_xattrs(false);
    a.set_overwrite(true);
    a
}

fn unpack_tarball(path: &Path, root: &Path) -> Result<(), TemplateError> {
    archive(open_maybe_gz(path)?)
        .unpack(root)
        .map_err(ioe(format!("unpacking {}", path.display())))
}

/// Imports an OCI image layout (directory or tar) or a `docker save` archive.
fn import_oci(path: &Path, root: &Path) -> Result<(), TemplateError> {
    let bad = |reason: String| TemplateError::BadImage {
        path: path.to_path_buf(),
        reason,
    };
    let scratch;
    let layout = if path.is_dir() {
        path.to_path_buf()
    } else {
        // The outer archive holds only blobs and JSON: unpack it next to the rootfs.
        scratch = root.with_file_name("image");
        fs::create_dir_all(&scratch).map_err(ioe("creating image scratch dir"))?;
        tar::Archive::new(open_maybe_gz(path)?)
            .unpack(&scratch)
            .map_err(ioe(format!("unpacking {}", path.display())))?;
        scratch.clone()
    };
    let read_json = |p: &Path| -> Result<serde_json::Value, TemplateError> {
        let t = fs::read(p).map_err(ioe(format!("reading {}", p.display())))?;
        serde_json::from_slice(&t).map_err(|e| bad(format!("{}: {e}", p.display())))
    };
    let blob = |digest: &str| -> Result<PathBuf, TemplateError> {
        let (alg, hex) = digest
            .split_once(':')
            .ok_or_else(|| bad(format!("malformed digest {digest}")))?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) || alg.contains('/') {
            return Err(bad(format!("malformed digest {digest}")));
        }
        Ok(layout.join("blobs").join(alg).join(hex))
    };
    let mut layers: Vec<PathBuf> = Vec::new();
    if layout.join("index.json").exists() {
        let mut doc = read_json(&layout.join("index.json"))?;
        // Follow (nested) indexes to the first image manifest, preferring linux/amd64.
        for _ in 0..4 {
            let Some(manifests) = doc.get("manifests").and_then(|m| m.as_array()) else {
                break;
            };
            let pick = manifests
                .iter()
                .find(|m| {
                    m.pointer("/platform/architecture").and_then(|a| a.as_str()) == Some(oci_arch())
                })
                .or_else(|| manifests.first())
                .ok_or_else(|| bad("index.json lists no manifests".into()))?;
            let digest = pick["digest"]
                .as_str()
                .ok_or_else(|| bad("manifest without digest".into()))?;
            doc = read_json(&blob(digest)?)?;
        }
        let list = doc["layers"]
            .as_array()
            .ok_or_else(|| bad("manifest has no layers".into()))?;
        for l in list {
            let digest = l["digest"]
                .as_str()
                .ok_or_else(|| bad("layer without digest".into()))?;
            layers.push(blob(digest)?);
        }
    } else if layout.join("manifest.json").exists() {
        let doc = read_json(&layout.join("manifest.json"))?;
        let list = doc
            .pointer("/0/Layers")
            .and_then(|l| l.as_array())
            .ok_or_else(|| bad("manifest.json has no Layers".into()))?;
        for l in list {
            let rel = l
                .as_str()
                .ok_or_else(|| bad("layer path is not a string".into()))?;
            if !safe_relative(Path::new(rel)) {
                return Err(bad(format!("layer path {rel} escapes the image")));
            }
            layers.push(layout.join(rel));
        }
    } else {
        return Err(bad(
            "neither index.json (OCI layout) nor manifest.json (docker save)".into(),
        ));
    }
    for layer in &layers {
        apply_layer(layer, root)?;
    }
    if layout != path {
        let _ = fs::remove_dir_all(&layout);
    }
    Ok(())
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

fn safe_relative(p: &Path) -> bool {
    p.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Resolves `rel` under `root` refusing symlinked ancestors, so that a whiteout in a hostile layer
/// cannot delete through a symlink planted by an earlier layer.
fn contained(root: &Path, rel: &Path) -> Option<PathBuf> {
    if !safe_relative(rel) {
        return None;
    }
    let mut cur = root.to_path_buf();
    let parent = rel.parent().unwrap_or(Path::new(""));
    for c in parent.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            _ => return None,
        }
    }
    Some(cur.join(rel.file_name()?))
}

fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Applies one image layer: first its whiteouts (which only concern lower layers), then its
/// content.
fn apply_layer(layer: &Path, root: &Path) -> Result<(), TemplateError> {
    let what = || format!("applying layer {}", layer.display());
    let mut a = archive(open_maybe_gz(layer)?);
    for entry in a.entries().map_err(ioe(what()))? {
        let entry = entry.map_err(ioe(what()))?;
        let path = entry.path().map_err(ioe(what()))?.into_owned();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name == ".wh..wh..opq" {
            // Opaque directory: hide everything the lower layers put there.
            if let Some(dir) =
                contained(root, &path).and_then(|p| p.parent().map(Path::to_path_buf))
            {
                if let Ok(rd) = fs::read_dir(&dir) {
                    for e in rd.flatten() {
                        remove_any(&e.path()).map_err(ioe(what()))?;
                    }
                }
            }
        } else if let Some(hidden) = name.strip_prefix(".wh.") {
            if let Some(target) = contained(root, &path.with_file_name(hidden)) {
                remove_any(&target).map_err(ioe(what()))?;
            }
        }
    }
    let mut a = archive(open_maybe_gz(layer)?);
    for entry in a.entries().map_err(ioe(what()))? {
        let mut entry = entry.map_err(ioe(what()))?;
        let path = entry.path().map_err(ioe(what()))?.into_owned();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(".wh."))
        {
            continue;
        }
        // A file replacing a directory (or the reverse) across layers: clear the old entry.
        if let Some(existing) = contained(root, &path) {
            if let Ok(m) = fs::symlink_metadata(&existing) {
                let is_dir = entry.header().entry_type().is_dir();
                if m.is_dir() != is_dir || (!is_dir && m.file_type().is_symlink()) {
                    remove_any(&existing).map_err(ioe(what()))?;
                }
            }
        }
        entry.unpack_in(root).map_err(ioe(what()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            if let Some(d) = data {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                h.set_mode(0o644);
                b.append_data(&mut h, path, *d).unwrap();
            } else {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                b.append_data(&mut h, path, &[][..]).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    /// One raw tar entry: the name is written as is (the builder would refuse `..`), as a hostile archive
    /// would have it.
    fn raw_entry(
        b: &mut tar::Builder<Vec<u8>>,
        name: &str,
        kind: tar::EntryType,
        link: Option<&str>,
        data: &[u8],
    ) {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            h.as_gnu_mut().unwrap().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        if kind == tar::EntryType::Char {
            h.set_device_major(1).unwrap();
            h.set_device_minor(1).unwrap();
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    /// A template tarball comes from whoever built it. Nothing in it may write outside the template, link
    /// to a host file (the template is readable inside every sandbox), or plant a device node.
    #[test]
    fn hostile_tarballs_stay_inside_the_template() {
        use std::os::unix::fs::FileTypeExt;
        use tar::EntryType as E;
        type Entry<'a> = (&'a str, E, Option<&'a str>);
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host");
        fs::create_dir_all(&host).unwrap();
        let secret = host.join("secret");
        fs::write(&secret, "host secret").unwrap();
        let (h, sec) = (host.display().to_string(), secret.display().to_string());
        let absolute = format!("{h}/absolute");
        let cases: Vec<(&str, Vec<Entry>)> = vec![
            ("dotdot", vec![("../../dotdot", E::Regular, None)]),
            ("absolute path", vec![(&absolute, E::Regular, None)]),
            (
                "write through a symlink",
                vec![
                    ("link", E::Symlink, Some(&h)),
                    ("link/through-symlink", E::Regular, None),
                ],
            ),
            (
                "symlink to a dotdot dir",
                vec![
                    ("up", E::Symlink, Some("../../host")),
                    ("up/through-relative", E::Regular, None),
                ],
            ),
            (
                "hard link to a host file",
                vec![("hard", E::Link, Some(&sec))],
            ),
            (
                "hard link by dotdot",
                vec![("hard2", E::Link, Some("../../host/secret"))],
            ),
            ("device node", vec![("mem", E::Char, None)]),
        ];
        for (i, (what, entries)) in cases.iter().enumerate() {
            let root = tmp.path().join(format!("t{i}/rootfs"));
            fs::create_dir_all(&root).unwrap();
            let mut b = tar::Builder::new(Vec::new());
            for (name, kind, link) in entries {
                let data: &[u8] = if *kind == E::Regular { b"x" } else { b"" };
                raw_entry(&mut b, name, *kind, *link, data);
            }
            raw_entry(&mut b, "ok", E::Regular, None, b"x");
            let tarball = tmp.path().join(format!("hostile{i}.tar"));
            fs::write(&tarball, b.into_inner().unwrap()).unwrap();
            let r = unpack_tarball(&tarball, &root);
            let inside = walkdir_all(&root);
            eprintln!("{what}: {r:?}; inside: {inside:?}");

            let mut host_entries: Vec<_> = fs::read_dir(&host)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            host_entries.sort();
            assert_eq!(
                host_entries,
                ["secret"],
                "{what}: written outside the template"
            );
            assert!(!tmp.path().join("dotdot").exists(), "{what}");
            assert_eq!(
                fs::read_to_string(&secret).unwrap(),
                "host secret",
                "{what}"
            );
            for p in &inside {
                let m = fs::symlink_metadata(p).unwrap();
                let ft = m.file_type();
                assert!(
                    !ft.is_char_device() && !ft.is_block_device(),
                    "{what}: device node {}",
                    p.display()
                );
                assert!(
                    !ft.is_file() || m.ino() != fs::metadata(&secret).unwrap().ino(),
                    "{what}: {} is the host's file",
                    p.display()
                );
            }
        }
    }

    fn walkdir_all(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                out.extend(walkdir_all(&p));
            }
            out.push(p);
        }
        out
    }

    #[test]
    fn whiteouts_never_follow_symlinks_or_dotdot() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        assert!(contained(&root, Path::new("link/passwd")).is_none());
        assert!(contained(&root, Path::new("../x")).is_none());
        assert!(contained(&root, Path::new("/abs")).is_none());
        assert_eq!(contained(&root, Path::new("a")), Some(root.join("a")));
    }

    #[test]
    fn names_are_validated() {
        assert!(valid_name("base"));
        assert!(valid_name("debian-12.1_x"));
        assert!(!valid_name("../x"));
        assert!(!valid_name(".tmp"));
        assert!(!valid_name("Upper"));
        assert!(!valid_name(""));
    }

    #[test]
    fn docker_save_layers_apply_with_whiteouts() {
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("img");
        fs::create_dir_all(img.join("l1")).unwrap();
        fs::create_dir_all(img.join("l2")).unwrap();
        fs::write(
            img.join("l1/layer.tar"),
            tar_with(&[
                ("etc/", None),
                ("etc/keep", Some(b"k")),
                ("etc/gone", Some(b"g")),
                ("opq/", None),
                ("opq/old", Some(b"o")),
            ]),
        )
        .unwrap();
        fs::write(
            img.join("l2/layer.tar"),
            tar_with(&[
                ("etc/.wh.gone", Some(b"")),
                ("opq/.wh..wh..opq", Some(b"")),
                ("opq/new", Some(b"n")),
            ]),
        )
        .unwrap();
        fs::write(
            img.join("manifest.json"),
            r#"[{"Config":"c.json","RepoTags":["t"],"Layers":["l1/layer.tar","l2/layer.tar"]}]"#,
        )
        .unwrap();
        let store = TemplateStore::new(tmp.path().join("templates")).unwrap();
        let t = store.import("img", &ImportSource::OciImage(img)).unwrap();
        let r = &t.rootfs;
        assert_eq!(fs::read_to_string(r.join("etc/keep")).unwrap(), "k");
        assert!(!r.join("etc/gone").exists());
        assert!(!r.join("opq/old").exists());
        assert_eq!(fs::read_to_string(r.join("opq/new")).unwrap(), "n");
        assert!(
            fs::read_to_string(r.join("etc/passwd"))
                .unwrap()
                .contains("user:x:1000")
        );
        assert!(r.join(".sandpit/sandpit").exists());
        assert_eq!(store.list().len(), 1);
        assert!(matches!(
            store.import("img", &ImportSource::Directory(tmp.path().into())),
            Err(TemplateError::Exists(_))
        ));
    }

    #[test]
    fn oci_layout_and_gzip_tarball() {
        use std::io::Write;
        let tmp = tempfile::tempdir().unwrap();
        let lay = tmp.path().join("oci");
        fs::create_dir_all(lay.join("blobs/sha256")).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar_with(&[("hello", Some(b"world"))]))
            .unwrap();
        fs::write(lay.join("blobs/sha256/aa"), gz.finish().unwrap()).unwrap();
        fs::write(
            lay.join("blobs/sha256/bb"),
            r#"{"schemaVersion":2,"layers":[{"digest":"sha256:aa"}]}"#,
        )
        .unwrap();
        fs::write(
            lay.join("index.json"),
            r#"{"manifests":[{"digest":"sha256:bb"}]}"#,
        )
        .unwrap();
        let store = TemplateStore::new(tmp.path().join("t")).unwrap();
        let t = store.import("oci", &ImportSource::OciImage(lay)).unwrap();
        assert_eq!(fs::read_to_string(t.rootfs.join("hello")).unwrap(), "world");

        let tarball = tmp.path().join("root.tar");
        fs::write(
            &tarball,
            tar_with(&[("bin/", None), ("bin/sh", Some(b"#!"))]),
        )
        .unwrap();
        let t = store.import("tb", &ImportSource::Tarball(tarball)).unwrap();
        assert!(t.rootfs.join("bin/sh").exists());
        store.remove("tb").unwrap();
        assert!(store.get("tb").is_none());
    }
}
