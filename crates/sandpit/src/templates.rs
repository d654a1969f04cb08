//! Templates (`/v1/templates`): the read-only root filesystems sandboxes start from.
//!
//! Building one can take from seconds (a directory or tarball import) to minutes (a debootstrap
//! build), so the daemon answers `POST` at once and builds in the background; [`Templates::wait`]
//! polls the build and hands each new progress line to a callback.

use std::time::Duration;

use reqwest::Method;
use sandpit_types::sandbox::{CreateTemplateRequest, SetPoolRequest, TemplateList};
pub use sandpit_types::sandbox::{
    DebianSource, PoolInfo, TemplateBuild, TemplateBuildState, TemplateInfo, TemplateSource,
};

use std::path::Path;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;

use crate::client::{Client, enc};
use crate::error::{Error, Result};

/// `client.templates()`.
#[derive(Debug, Clone)]
pub struct Templates {
    client: Client,
}

impl Client {
    /// The template calls.
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// for t in client.templates().list().await? {
    ///     println!("{} ({})", t.name, t.source);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn templates(&self) -> Templates {
        Templates {
            client: self.clone(),
        }
    }
}

impl Templates {
    /// `GET /v1/templates`: every built template, by name.
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// let names: Vec<String> = client.templates().list().await?.into_iter().map(|t| t.name).collect();
    /// # Ok(()) }
    /// ```
    pub async fn list(&self) -> Result<Vec<TemplateInfo>> {
        let list: TemplateList = self
            .client
            .send_json(self.client.request(Method::GET, "/v1/templates"))
            .await?;
        Ok(list.templates)
    }

    /// `GET /v1/templates/{name}`.
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// let base = client.templates().get("base").await?;
    /// # Ok(()) }
    /// ```
    pub async fn get(&self, name: &str) -> Result<TemplateInfo> {
        let path = format!("/v1/templates/{name}");
        self.client
            .send_json(self.client.request(Method::GET, &path))
            .await
    }

    /// Starts building template `name` from `source` (`POST /v1/templates`) and returns at once.
    /// Paths in `source` are on the daemon's host.
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// use sandpit::TemplateSource;
    /// let build = client.templates().start("alpine", TemplateSource::Tar("/srv/alpine.tar".into())).await?;
    /// # Ok(()) }
    /// ```
    pub async fn start(&self, name: &str, source: TemplateSource) -> Result<TemplateBuild> {
        let body = CreateTemplateRequest {
            name: name.to_owned(),
            source,
        };
        let rb = self
            .client
            .request(Method::POST, "/v1/templates")
            .json(&body);
        self.client.send_json(rb).await
    }

    /// `GET /v1/templates/{name}/build`: where the latest build of `name` stands.
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// let b = client.templates().build_status("alpine").await?;
    /// println!("{:?}: {:?}", b.state, b.log.last());
    /// # Ok(()) }
    /// ```
    pub async fn build_status(&self, name: &str) -> Result<TemplateBuild> {
        let path = format!("/v1/templates/{name}/build");
        self.client
            .send_json(self.client.request(Method::GET, &path))
            .await
    }

    /// Waits for the build of `name` to finish, calling `progress` once for every new log line.
    /// A failed build is [`Error::TemplateBuild`].
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// use sandpit::{DebianSource, TemplateSource};
    /// let t = client.templates();
    /// t.start("debian", TemplateSource::Debian(DebianSource::default())).await?;
    /// let info = t.wait("debian", |line| eprintln!("{line}")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait(&self, name: &str, mut progress: impl FnMut(&str)) -> Result<TemplateInfo> {
        let mut seen: Vec<String> = Vec::new();
        loop {
            let b = self.build_status(name).await?;
            // The daemon keeps the last lines only: print what follows the longest overlap with
            // what was already printed.
            let skip = (0..=seen.len().min(b.log.len()))
                .rev()
                .find(|&k| seen[seen.len() - k..] == b.log[..k])
                .unwrap_or(0);
            for line in &b.log[skip..] {
                progress(line);
            }
            seen.clone_from(&b.log);
            match b.state {
                TemplateBuildState::Building => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                TemplateBuildState::Ready => {
                    return match b.template {
                        Some(t) => Ok(t),
                        None => self.get(name).await,
                    };
                }
                TemplateBuildState::Failed => {
                    return Err(Error::TemplateBuild {
                        name: name.to_owned(),
                        message: b.error.unwrap_or_else(|| "no reason given".into()),
                    });
                }
            }
        }
    }

    /// Builds template `name` from `source` and waits for it: [`start`](Self::start) then
    /// [`wait`](Self::wait) without progress output.
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// use sandpit::TemplateSource;
    /// let t = client.templates().import("mini", TemplateSource::Dir("/srv/rootfs".into())).await?;
    /// # Ok(()) }
    /// ```
    pub async fn import(&self, name: &str, source: TemplateSource) -> Result<TemplateInfo> {
        self.start(name, source).await?;
        self.wait(name, |_| {}).await
    }

    /// `GET /v1/templates/{name}/pool`: the template's warm pool (size 0: none), how many wait, how many
    /// are being made.
    pub async fn pool(&self, name: &str) -> Result<PoolInfo> {
        let path = format!("/v1/templates/{}/pool", enc(name));
        self.client
            .send_json(self.client.request(Method::GET, &path))
            .await
    }

    /// `PUT /v1/templates/{name}/pool` (admin): keep `size` sandboxes of the template ready (0: none).
    /// A create that names no limit, `disk_mb`, network policy or volume takes one of them.
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// client.templates().set_pool("base", 8).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_pool(&self, name: &str, size: u64) -> Result<PoolInfo> {
        let path = format!("/v1/templates/{}/pool", enc(name));
        let rb = self
            .client
            .request(Method::PUT, &path)
            .json(&SetPoolRequest { size });
        self.client.send_json(rb).await
    }

    /// `GET /v1/templates/{name}/export`: the template as one file, a zstd-compressed tar of the root
    /// filesystem a sandbox made from it starts with (a snapshot's layers merged), streamed.
    /// [`import_archive`](Self::import_archive) reads it back, on this daemon or another.
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// use futures_util::StreamExt;
    /// let mut archive = client.templates().export("mine").await?;
    /// while let Some(chunk) = archive.next().await {
    ///     let chunk = chunk?;
    ///     // write it somewhere
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn export(
        &self,
        name: &str,
    ) -> Result<Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>> {
        let path = format!("/v1/templates/{}/export", enc(name));
        let resp = self
            .client
            .send(self.client.request(Method::GET, &path))
            .await?;
        Ok(Box::pin(resp.bytes_stream().map_err(Error::from)))
    }

    /// [`export`](Self::export) into the local file `local` (created or truncated); returns its size.
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// let bytes = client.templates().export_to_file("mine", "mine.tar.zst").await?;
    /// # Ok(()) }
    /// ```
    pub async fn export_to_file(&self, name: &str, local: impl AsRef<Path>) -> Result<u64> {
        let local = local.as_ref();
        let write_err = |e| Error::io(format!("cannot write {}", local.display()), e);
        let mut stream = self.export(name).await?;
        let mut file = tokio::fs::File::create(local).await.map_err(write_err)?;
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            file.write_all(&chunk).await.map_err(write_err)?;
            n += chunk.len() as u64;
        }
        file.flush().await.map_err(write_err)?;
        Ok(n)
    }

    /// `POST /v1/templates?name=…` with the local archive `local` as the body (streamed): imports a
    /// template [`export`](Self::export)ed here or elsewhere, or any root filesystem tar (plain, gzip or
    /// zstd). Admin keys only. Returns when the template is ready.
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// let t = client.templates().import_archive("moved", "mine.tar.zst").await?;
    /// # Ok(()) }
    /// ```
    pub async fn import_archive(
        &self,
        name: &str,
        local: impl AsRef<Path>,
    ) -> Result<TemplateInfo> {
        let file = tokio::fs::File::open(local.as_ref())
            .await
            .map_err(|e| Error::io(format!("cannot open {}", local.as_ref().display()), e))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            file,
            256 << 10,
        ));
        let rb = self
            .client
            .request(Method::POST, &format!("/v1/templates?name={}", enc(name)))
            .header("content-type", "application/zstd")
            .body(body);
        self.client.send_json(rb).await
    }

    /// `DELETE /v1/templates/{name}`: refused (409) while a sandbox uses it or a snapshot is layered
    /// over it. A tenant's key may delete its own snapshots; other templates need an admin key.
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// client.templates().delete("mini").await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete(&self, name: &str) -> Result<()> {
        let path = format!("/v1/templates/{name}");
        self.client
            .send_empty(self.client.request(Method::DELETE, &path))
            .await
    }
}
