//! [`Files`]: the files API of one sandbox (`sandbox.files()`), with E2B's method names: `read`,
//! `write`, `write_files`, `list`, `exists`, `get_info`, `make_dir`, `rename`, `remove`, `watch_dir`.
//!
//! Content streams both ways: [`Files::read_stream`] is a `Stream` of chunks (and
//! [`Files::read_reader`] an `AsyncRead`), [`Files::write_reader`] uploads any `AsyncRead`, and
//! [`Files::write_files`] sends many files as one tar request built while it is sent. Only
//! [`Files::read`] and [`Files::read_to_string`] hold a whole file, because the caller asked for it.
//! Paths are `AsRef<Path>`: names that are not UTF-8 work; relative paths start at the user's home.
//!
//! [`Files::watch_dir`] returns a [`WatchHandle`], a `Stream` of [`FsEvent`]s that reconnects by
//! itself after a dropped connection and resumes where it was (the server replays what happened in
//! between, or says what was lost).

use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use reqwest::Method;
use sandpit_types::files::{
    SPLICE_MIN_BYTES, SPLICE_PROTOCOL, SignedUrl, SignedUrlOp, SignedUrlRequest,
};
use sandpit_types::{
    ChmodRequest, ChownRequest, Entry, EntryList, FileMode, FsEvent, MkdirRequest, MoveRequest,
    TarResult,
};
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use crate::api::SandboxRef;
use crate::error::{Error, Result};
use crate::sse::{SILENCE, SseParser, backoff};

type IoStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// A file being read, as an `AsyncRead` ([`Files::read_reader`]).
pub type FileReader = tokio_util::io::StreamReader<IoStream, Bytes>;

/// One file for [`Files::write_files`]: where it goes and what it holds.
#[derive(Debug, Clone)]
pub struct WriteEntry {
    /// Where in the sandbox (relative paths start at the user's home).
    pub path: PathBuf,
    /// The content.
    pub data: WriteData,
    /// Permission bits (default 0644).
    pub mode: Option<u32>,
}

/// Content of a [`WriteEntry`].
#[derive(Debug, Clone)]
pub enum WriteData {
    /// Bytes in memory.
    Bytes(Bytes),
    /// A local file, streamed from disk when the archive is sent.
    LocalFile(PathBuf),
}

impl WriteEntry {
    /// A file with the given bytes.
    pub fn new(path: impl Into<PathBuf>, data: impl Into<Bytes>) -> Self {
        Self {
            path: path.into(),
            data: WriteData::Bytes(data.into()),
            mode: None,
        }
    }

    /// A file whose content is the local file `local`.
    pub fn from_file(path: impl Into<PathBuf>, local: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            data: WriteData::LocalFile(local.into()),
            mode: None,
        }
    }

    /// Sets the permission bits.
    #[must_use]
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }
}

/// The files of one sandbox, acting as one user (default: the sandbox's default user).
///
/// ```no_run
/// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
/// let files = sandbox.files();
/// files.write("app/main.py", "print('hi')\n").await?;
/// assert_eq!(files.read_to_string("app/main.py").await?, "print('hi')\n");
/// for e in files.list("app").await? {
///     println!("{} {} {}", e.permissions, e.size, e.name);
/// }
/// let root_files = sandbox.files().user("root");
/// root_files.make_dir("/opt/data").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Files {
    target: SandboxRef,
    user: Option<String>,
}

/// Percent-encodes path bytes for a query string.
fn qpath(p: &Path) -> String {
    let mut out = String::new();
    for &b in p.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            let _ = std::fmt::Write::write_fmt(&mut out, format_args!("%{b:02X}"));
        }
    }
    out
}

fn text(p: &Path) -> Result<String> {
    p.to_str().map(str::to_owned).ok_or_else(|| {
        Error::invalid(format!(
            "{} is not UTF-8 (this call takes UTF-8 paths)",
            p.display()
        ))
    })
}

impl Files {
    pub(crate) fn new(target: SandboxRef) -> Self {
        Self { target, user: None }
    }

    /// The same files, acted on as `user` (a name or uid in the sandbox).
    #[must_use]
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    fn url(&self, endpoint: &str, path: &Path, extra: &str) -> String {
        let mut q = format!("{endpoint}?path={}", qpath(path));
        if let Some(u) = &self.user {
            let _ =
                std::fmt::Write::write_fmt(&mut q, format_args!("&user={}", crate::client::enc(u)));
        }
        q.push_str(extra);
        self.target.path(&q)
    }

    fn req(
        &self,
        method: Method,
        endpoint: &str,
        path: &Path,
        extra: &str,
    ) -> reqwest::RequestBuilder {
        self.target
            .client
            .request(method, &self.url(endpoint, path, extra))
    }

    /// The whole file, in memory.
    pub async fn read(&self, path: impl AsRef<Path>) -> Result<Vec<u8>> {
        let resp = self
            .target
            .client
            .send(self.req(Method::GET, "/files", path.as_ref(), ""))
            .await?;
        Ok(resp.bytes().await?.to_vec())
    }

    /// The whole file as text (UTF-8, else an error).
    pub async fn read_to_string(&self, path: impl AsRef<Path>) -> Result<String> {
        let bytes = self.read(path.as_ref()).await?;
        String::from_utf8(bytes).map_err(|_| {
            Error::invalid(format!(
                "{} is not UTF-8 text: read it as bytes",
                path.as_ref().display()
            ))
        })
    }

    /// The file as a stream of chunks, never held whole.
    ///
    /// ```no_run
    /// # async fn demo(files: sandpit::Files) -> sandpit::Result<()> {
    /// use futures_util::StreamExt;
    /// let mut s = files.read_stream("/var/log/big.log").await?;
    /// let mut n = 0;
    /// while let Some(chunk) = s.next().await {
    ///     n += chunk?.len();
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// The request offers the daemon's raw download ([`SPLICE_PROTOCOL`]): for a large file on plain
    /// HTTP/1.1 the daemon switches the connection and sends the content bare, moved by the kernel from
    /// the sandbox's file to this socket; otherwise the answer is the ordinary body.
    pub async fn read_stream(
        &self,
        path: impl AsRef<Path>,
    ) -> Result<Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>> {
        let rb = self
            .req(Method::GET, "/files", path.as_ref(), "")
            .header(reqwest::header::CONNECTION, "upgrade")
            .header(reqwest::header::UPGRADE, SPLICE_PROTOCOL);
        let resp = self.target.client.send(rb).await?;
        if resp.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            return Ok(Box::pin(resp.bytes_stream().map_err(Error::from)));
        }
        let len = crate::switched::switched_length(resp.headers())?;
        let raw = resp.upgrade().await?;
        Ok(Box::pin(raw_content(raw, len)))
    }

    /// The file as an `AsyncRead` (for `tokio::io::copy` to a local file, say).
    pub async fn read_reader(&self, path: impl AsRef<Path>) -> Result<FileReader> {
        let s = self.read_stream(path).await?;
        let s: IoStream = Box::pin(s.map_err(std::io::Error::other));
        Ok(tokio_util::io::StreamReader::new(s))
    }

    /// Streams `path` into the local file `local` (created or truncated); returns the bytes written.
    /// On plain HTTP a large file comes over a switched connection and goes from the socket into
    /// `local` by `splice(2)`, never through this process's memory; otherwise chunks go straight from
    /// the connection to a blocking writer thread. A download that fails half-way removes `local`
    /// rather than leave it short.
    pub async fn read_file(&self, path: impl AsRef<Path>, local: impl AsRef<Path>) -> Result<u64> {
        let local = local.as_ref();
        let req = self.req(Method::GET, "/files", path.as_ref(), "").build()?;
        if let Some(n) = crate::switched::to_file(&self.target.client, req, local).await? {
            return Ok(n);
        }
        let stream = self.read_stream(path).await?;
        crate::switched::stream_to_file(stream, local).await
    }

    /// Writes bytes (or text) to `path`, atomically; parents are created. Returns the entry written.
    pub async fn write(&self, path: impl AsRef<Path>, data: impl Into<Bytes>) -> Result<Entry> {
        let rb = self
            .req(Method::PUT, "/files", path.as_ref(), "")
            .header("content-type", "application/octet-stream")
            .body(data.into());
        self.target.client.send_json(rb).await
    }

    /// Writes with explicit permission bits.
    pub async fn write_with_mode(
        &self,
        path: impl AsRef<Path>,
        data: impl Into<Bytes>,
        mode: u32,
    ) -> Result<Entry> {
        let rb = self
            .req(
                Method::PUT,
                "/files",
                path.as_ref(),
                &format!("&mode={}", FileMode(mode).octal()),
            )
            .header("content-type", "application/octet-stream")
            .body(data.into());
        self.target.client.send_json(rb).await
    }

    /// Streams any `AsyncRead` to `path` (nothing is held whole).
    pub async fn write_reader(
        &self,
        path: impl AsRef<Path>,
        reader: impl AsyncRead + Send + 'static,
    ) -> Result<Entry> {
        self.write_stream(path.as_ref(), reader, None).await
    }

    /// Streams the local file `local` to `path`. Its size goes ahead as the `Content-Length`, which
    /// lets the daemon hand large content to the sandbox without copying it through the agent; a file
    /// that changes size while it is sent fails the upload, and nothing is written. On plain HTTP a
    /// large file goes over a switched connection, from the file to the socket by `sendfile(2)`, never
    /// through this process's memory.
    pub async fn write_file(
        &self,
        path: impl AsRef<Path>,
        local: impl AsRef<Path>,
    ) -> Result<Entry> {
        let local = local.as_ref();
        let f = tokio::fs::File::open(local)
            .await
            .map_err(|e| Error::io(format!("cannot open {}", local.display()), e))?;
        let len = f
            .metadata()
            .await
            .map_err(|e| Error::io(format!("cannot stat {}", local.display()), e))?
            .len();
        if len >= SPLICE_MIN_BYTES {
            let req = self.req(Method::PUT, "/files", path.as_ref(), "").build()?;
            if let Some(e) =
                crate::switched::from_file(&self.target.client, req, local, len).await?
            {
                return Ok(e);
            }
        }
        self.write_stream(path.as_ref(), f, Some(len)).await
    }

    async fn write_stream(
        &self,
        path: &Path,
        reader: impl AsyncRead + Send + 'static,
        len: Option<u64>,
    ) -> Result<Entry> {
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            reader,
            256 << 10,
        ));
        let mut rb = self
            .req(Method::PUT, "/files", path, "")
            .header("content-type", "application/octet-stream");
        if let Some(len) = len {
            rb = rb.header("content-length", len);
        }
        self.target.client.send_json(rb.body(body)).await
    }

    /// Writes many files in one request (a tar built while it is sent). Returns their entries.
    ///
    /// ```no_run
    /// # async fn demo(files: sandpit::Files) -> sandpit::Result<()> {
    /// use sandpit::WriteEntry;
    /// let written = files
    ///     .write_files([
    ///         WriteEntry::new("proj/a.py", "print(1)\n"),
    ///         WriteEntry::new("proj/run.sh", "#!/bin/sh\n").mode(0o755),
    ///     ])
    ///     .await?;
    /// assert_eq!(written.len(), 2);
    /// # Ok(()) }
    /// ```
    pub async fn write_files(
        &self,
        entries: impl IntoIterator<Item = WriteEntry>,
    ) -> Result<Vec<Entry>> {
        let entries: Vec<WriteEntry> = entries.into_iter().collect();
        for e in &entries {
            if e.path.as_os_str().is_empty() {
                return Err(Error::invalid("a file to write has an empty path"));
            }
        }
        // Absolute paths are archived from "/", relative ones from the home: one request each.
        let (abs, rel): (Vec<_>, Vec<_>) = entries.into_iter().partition(|e| e.path.is_absolute());
        let mut out = Vec::new();
        for (dir, group) in [("/", abs), (".", rel)] {
            if group.is_empty() {
                continue;
            }
            let r = self.upload_tar(dir, tar_stream(group), false).await?;
            if let Some(s) = r.skipped.first() {
                return Err(Error::invalid(format!(
                    "{} was not written: {}",
                    s.path, s.reason
                )));
            }
            out.extend(
                r.entries
                    .into_iter()
                    .filter(|e| e.kind == sandpit_types::EntryType::File),
            );
        }
        Ok(out)
    }

    /// Extracts a tar stream (gzip when `gzip`) into the directory `dir`.
    pub async fn upload_tar(
        &self,
        dir: impl AsRef<Path>,
        tar: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
        gzip: bool,
    ) -> Result<TarResult> {
        let mut rb = self
            .req(Method::POST, "/files/tar", dir.as_ref(), "")
            .header("content-type", "application/x-tar")
            .body(reqwest::Body::wrap_stream(tar));
        if gzip {
            rb = rb.header("content-encoding", "gzip");
        }
        self.target.client.send_json(rb).await
    }

    /// Copies the local directory `local` into the sandbox as `to` (created; its parents too), in one
    /// streamed tar request. Returns what was written and skipped.
    pub async fn upload_dir(
        &self,
        local: impl AsRef<Path>,
        to: impl AsRef<Path>,
    ) -> Result<TarResult> {
        let local = local.as_ref().to_path_buf();
        if !local.is_dir() {
            return Err(Error::invalid(format!(
                "{} is not a local directory",
                local.display()
            )));
        }
        let stream = blocking_tar(move |b| b.append_dir_all(".", &local));
        self.upload_tar(to, stream, false).await
    }

    /// Copies the sandbox directory `from` to the local directory `local` (created), streaming.
    pub async fn download_dir(
        &self,
        from: impl AsRef<Path>,
        local: impl AsRef<Path>,
    ) -> Result<()> {
        let s = self.download_tar(from).await?;
        let s: IoStream = Box::pin(s.map_err(std::io::Error::other));
        let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(s));
        let local = local.as_ref().to_path_buf();
        let shown = local.display().to_string();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&local)?;
            let mut a = tar::Archive::new(reader);
            for entry in a.entries()? {
                let mut entry = entry?;
                // Drop the archive's top directory (the source's own name).
                let rel: PathBuf = entry.path()?.components().skip(1).collect();
                if rel.as_os_str().is_empty()
                    || rel
                        .components()
                        .any(|c| !matches!(c, std::path::Component::Normal(_)))
                {
                    continue;
                }
                // Never write through a link the archive made (`a -> /etc`, then `a/passwd`).
                let mut at = local.clone();
                let mut through_link = false;
                for c in rel.parent().into_iter().flat_map(Path::components) {
                    at.push(c);
                    through_link |= at
                        .symlink_metadata()
                        .is_ok_and(|m| m.file_type().is_symlink());
                }
                if through_link {
                    continue;
                }
                let dst = local.join(&rel);
                if let Some(p) = dst.parent() {
                    std::fs::create_dir_all(p)?;
                }
                entry.unpack(&dst)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::io("the download task failed", std::io::Error::other(e)))?
        .map_err(|e| Error::io(format!("cannot write into {shown}"), e))
    }

    /// A file or directory as a tar stream.
    pub async fn download_tar(
        &self,
        path: impl AsRef<Path>,
    ) -> Result<Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>> {
        let resp = self
            .target
            .client
            .send(self.req(Method::GET, "/files/tar", path.as_ref(), ""))
            .await?;
        Ok(Box::pin(resp.bytes_stream().map_err(Error::from)))
    }

    /// The entries of a directory (its children).
    pub async fn list(&self, path: impl AsRef<Path>) -> Result<Vec<Entry>> {
        self.list_depth(path, 1).await
    }

    /// The entries `depth` levels deep.
    pub async fn list_depth(&self, path: impl AsRef<Path>, depth: u32) -> Result<Vec<Entry>> {
        let rb = self.req(
            Method::GET,
            "/fs/list",
            path.as_ref(),
            &format!("&depth={depth}"),
        );
        let l: EntryList = self.target.client.send_json(rb).await?;
        Ok(l.entries)
    }

    /// One entry (a symlink is reported as one).
    pub async fn get_info(&self, path: impl AsRef<Path>) -> Result<Entry> {
        self.target
            .client
            .send_json(self.req(Method::GET, "/fs/stat", path.as_ref(), ""))
            .await
    }

    /// Whether `path` exists.
    pub async fn exists(&self, path: impl AsRef<Path>) -> Result<bool> {
        match self.get_info(path).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates a directory and its parents; `false` when it existed already.
    pub async fn make_dir(&self, path: impl AsRef<Path>) -> Result<bool> {
        let req = MkdirRequest {
            path: text(path.as_ref())?,
            user: self.user.clone(),
            mode: None,
            parents: Some(true),
        };
        let rb = self
            .target
            .client
            .request(Method::POST, &self.target.path("/fs/mkdir"))
            .json(&req);
        let resp = self.target.client.send(rb).await?;
        Ok(resp.status() == reqwest::StatusCode::CREATED)
    }

    /// A URL that reads (`op` `Read`: GET) or writes (`Write`: PUT) `path` as this handle's user with no
    /// other credential, until `expires_in` has passed (default one hour, at most 7 days): for a page's
    /// `<a href download>` or upload. It stops working when the key that signed it is revoked.
    pub async fn signed_url(
        &self,
        path: impl AsRef<Path>,
        op: SignedUrlOp,
        expires_in: Option<std::time::Duration>,
    ) -> Result<SignedUrl> {
        let req = SignedUrlRequest {
            path: text(path.as_ref())?,
            op,
            expires_in: expires_in.map(|d| d.as_secs()),
            user: self.user.clone(),
        };
        let rb = self
            .target
            .client
            .request(Method::POST, &self.target.path("/files/signed-url"))
            .json(&req);
        self.target.client.send_json(rb).await
    }

    /// [`signed_url`](Self::signed_url) for reading: the URL a browser downloads `path` from.
    pub async fn download_url(
        &self,
        path: impl AsRef<Path>,
        expires_in: Option<std::time::Duration>,
    ) -> Result<String> {
        Ok(self
            .signed_url(path, SignedUrlOp::Read, expires_in)
            .await?
            .url)
    }

    /// [`signed_url`](Self::signed_url) for writing: the URL a client `PUT`s `path`'s new content to.
    pub async fn upload_url(
        &self,
        path: impl AsRef<Path>,
        expires_in: Option<std::time::Duration>,
    ) -> Result<String> {
        Ok(self
            .signed_url(path, SignedUrlOp::Write, expires_in)
            .await?
            .url)
    }

    /// Moves `from` to `to` (fails if `to` exists).
    pub async fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Result<Entry> {
        self.move_path(from, to, false).await
    }

    /// Moves, replacing `to` when `overwrite`.
    pub async fn move_path(
        &self,
        from: impl AsRef<Path>,
        to: impl AsRef<Path>,
        overwrite: bool,
    ) -> Result<Entry> {
        let req = MoveRequest {
            from: text(from.as_ref())?,
            to: text(to.as_ref())?,
            overwrite,
            user: self.user.clone(),
        };
        let rb = self
            .target
            .client
            .request(Method::POST, &self.target.path("/fs/move"))
            .json(&req);
        self.target.client.send_json(rb).await
    }

    /// Removes a file, link or directory (with everything in it).
    pub async fn remove(&self, path: impl AsRef<Path>) -> Result<()> {
        self.remove_with(path, true).await
    }

    /// Removes; a non-empty directory needs `recursive`.
    pub async fn remove_with(&self, path: impl AsRef<Path>, recursive: bool) -> Result<()> {
        let rb = self.req(
            Method::DELETE,
            "/fs",
            path.as_ref(),
            &format!("&recursive={recursive}"),
        );
        self.target.client.send_empty(rb).await
    }

    /// Changes permission bits.
    pub async fn chmod(&self, path: impl AsRef<Path>, mode: u32) -> Result<Entry> {
        let req = ChmodRequest {
            path: text(path.as_ref())?,
            mode: FileMode(mode),
            user: self.user.clone(),
        };
        let rb = self
            .target
            .client
            .request(Method::POST, &self.target.path("/fs/chmod"))
            .json(&req);
        self.target.client.send_json(rb).await
    }

    /// Changes owner and/or group (names or numbers in the sandbox); done as root unless this
    /// `Files` acts as another user.
    pub async fn chown(
        &self,
        path: impl AsRef<Path>,
        owner: Option<&str>,
        group: Option<&str>,
    ) -> Result<Entry> {
        let req = ChownRequest {
            path: text(path.as_ref())?,
            owner: owner.map(str::to_owned),
            group: group.map(str::to_owned),
            user: self.user.clone(),
        };
        let rb = self
            .target
            .client
            .request(Method::POST, &self.target.path("/fs/chown"))
            .json(&req);
        self.target.client.send_json(rb).await
    }

    /// Watches `path` (with `recursive`, everything below it): a stream of events that resumes after
    /// a dropped connection. Returns once the watch is in place.
    ///
    /// ```no_run
    /// # async fn demo(files: sandpit::Files) -> sandpit::Result<()> {
    /// use futures_util::StreamExt;
    /// let mut w = files.watch_dir("proj", true).await?;
    /// files.write("proj/out.txt", "done").await?;
    /// while let Some(ev) = w.next().await {
    ///     let ev = ev?;
    ///     println!("{:?} {:?}", ev.kind, ev.path);
    ///     break;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn watch_dir(&self, path: impl AsRef<Path>, recursive: bool) -> Result<WatchHandle> {
        let url = self.url(
            "/fs/watch",
            path.as_ref(),
            &format!("&recursive={recursive}"),
        );
        let (tx, rx) = mpsc::channel(256);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(watch_pump(self.target.clone(), url, tx, ready_tx));
        match ready_rx.await {
            Ok(Ok(seq)) => Ok(WatchHandle {
                rx,
                task,
                start_seq: seq,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::cut("the watch ended before it started")),
        }
    }
}

/// A running watch: a `Stream` of [`FsEvent`]s (`lost` ones included: they say what was missed).
/// Dropping it (or [`WatchHandle::stop`]) ends the watch.
#[derive(Debug)]
pub struct WatchHandle {
    rx: mpsc::Receiver<Result<FsEvent>>,
    task: tokio::task::JoinHandle<()>,
    start_seq: u64,
}

impl WatchHandle {
    /// The seq the watch started after.
    pub fn start_seq(&self) -> u64 {
        self.start_seq
    }

    /// Ends the watch.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stream for WatchHandle {
    type Item = Result<FsEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Reads a watch's SSE, reconnecting with `Last-Event-ID` after a cut.
async fn watch_pump(
    target: SandboxRef,
    url: String,
    tx: mpsc::Sender<Result<FsEvent>>,
    ready: tokio::sync::oneshot::Sender<Result<u64>>,
) {
    let mut ready = Some(ready);
    let mut last: Option<u64> = None;
    let mut failures = 0u32;
    loop {
        if failures > 0 {
            if failures > crate::sse::MAX_RETRIES {
                let _ = tx
                    .send(Err(Error::cut("the watch could not be resumed")))
                    .await;
                return;
            }
            tokio::time::sleep(backoff(failures - 1)).await;
        }
        let mut rb = target
            .client
            .request(Method::GET, &url)
            .header("accept", "text/event-stream");
        if let Some(id) = last {
            rb = rb.header("last-event-id", id.to_string());
        }
        let resp = match target.client.send(rb).await {
            Ok(r) => r,
            Err(e) if e.is_transient() && ready.is_none() => {
                failures += 1;
                continue;
            }
            Err(e) => {
                match ready.take() {
                    Some(r) => drop(r.send(Err(e))),
                    None => drop(tx.send(Err(e)).await),
                }
                return;
            }
        };
        let mut body = resp.bytes_stream();
        let mut parser = SseParser::default();
        loop {
            let chunk = tokio::select! {
                c = tokio::time::timeout(SILENCE, body.next()) => c,
                () = tx.closed() => return,
            };
            let Ok(Some(Ok(chunk))) = chunk else { break };
            for raw in parser.push(&chunk) {
                match raw.event.as_str() {
                    "started" => {
                        let seq = raw.id.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0);
                        last = last.or(Some(seq));
                        if let Some(r) = ready.take() {
                            let _ = r.send(Ok(seq));
                        }
                        failures = 0;
                    }
                    "keepalive" => {}
                    "ended" => {
                        return;
                    }
                    _ => {
                        let ev: FsEvent = match serde_json::from_str(&raw.data) {
                            Ok(e) => e,
                            Err(e) => {
                                let _ = tx
                                    .send(Err(Error::Protocol(format!("bad watch event: {e}"))))
                                    .await;
                                return;
                            }
                        };
                        if last.is_some_and(|l| ev.seq <= l) {
                            continue;
                        }
                        last = Some(ev.seq);
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
        failures += 1;
    }
}

/// The writing end of a streamed request body: 256 KiB chunks into a channel.
struct ChunkWriter(mpsc::Sender<std::io::Result<Bytes>>, Vec<u8>);

impl std::io::Write for ChunkWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(b);
        if self.1.len() >= 256 << 10 {
            self.flush()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.1.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::take(&mut self.1);
        self.0
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the request ended"))
    }
}

/// A tar built by `build` on a blocking thread while it is sent (never whole in memory).
fn blocking_tar<F>(build: F) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static
where
    F: FnOnce(&mut tar::Builder<ChunkWriter>) -> std::io::Result<()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
    let err_tx = tx.clone();
    tokio::task::spawn_blocking(move || {
        let r = (|| -> std::io::Result<()> {
            let mut b = tar::Builder::new(ChunkWriter(tx, Vec::new()));
            b.follow_symlinks(false);
            build(&mut b)?;
            let mut w = b.into_inner()?;
            std::io::Write::flush(&mut w)
        })();
        if let Err(e) = r {
            let _ = err_tx.blocking_send(Err(e));
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A tar of `entries`.
fn tar_stream(
    entries: Vec<WriteEntry>,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    blocking_tar(move |b| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for e in entries {
            let name: PathBuf = e
                .path
                .components()
                .filter(|c| matches!(c, std::path::Component::Normal(_)))
                .collect();
            let mut h = tar::Header::new_gnu();
            h.set_mode(e.mode.unwrap_or(0o644));
            h.set_mtime(now);
            match e.data {
                WriteData::Bytes(data) => {
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, &name, &data[..])?;
                }
                WriteData::LocalFile(p) => {
                    let f = std::fs::File::open(&p)?;
                    h.set_size(f.metadata()?.len());
                    b.append_data(&mut h, &name, f)?;
                }
            }
        }
        Ok(())
    })
}

impl crate::Sandbox {
    /// The sandbox's files, as its default user; [`Files::user`] acts as another.
    pub fn files(&self) -> Files {
        Files::new(self.target.clone())
    }
}

/// Bytes per chunk of a switched download.
const RAW_CHUNK: usize = 256 << 10;

/// The content of a switched download: exactly `len` bytes from `raw`, in chunks; a connection that ends
/// first is an error (the file was not read whole).
fn raw_content(
    raw: reqwest::Upgraded,
    len: u64,
) -> impl Stream<Item = Result<Bytes>> + Send + 'static {
    use tokio::io::AsyncReadExt as _;
    futures_util::stream::try_unfold((raw, len), |(mut raw, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let want = usize::try_from(left).unwrap_or(RAW_CHUNK).min(RAW_CHUNK);
        let mut buf = bytes::BytesMut::with_capacity(want);
        let n = (&mut raw)
            .take(want as u64)
            .read_buf(&mut buf)
            .await
            .map_err(|e| Error::io("reading the file's content", e))?;
        if n == 0 {
            return Err(Error::io(
                "reading the file's content",
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the download ended {left} bytes short"),
                ),
            ));
        }
        Ok(Some((buf.freeze(), (raw, left - n as u64))))
    })
}
