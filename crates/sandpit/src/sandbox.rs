//! [`Sandbox`]: the lifecycle calls of `/v1/sandboxes` (create with a builder, connect, list, info,
//! pause, resume, `set_timeout`, kill) and the entry points to everything that runs inside one
//! ([`commands`](Sandbox::commands), [`processes`](Sandbox::processes), `exec…`, `attach…`).

use std::collections::BTreeMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use reqwest::Method;
use sandpit_types::sandbox::{
    CreateSandboxRequest, CreateSnapshotRequest, ForkInfo, ForkRequest, OnTimeout, SandboxInfo,
    SandboxList, SandboxState, SetTimeoutRequest, SnapshotInfo,
};

use crate::api::SandboxRef;
use crate::client::{Client, enc};
use crate::error::Result;

/// A boxed future, as returned by the builders' `IntoFuture`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One sandbox: its id, the client that reaches it, and the info last read.
///
/// ```no_run
/// use sandpit::Sandbox;
/// # async fn demo() -> sandpit::Result<()> {
/// let sandbox = Sandbox::create().template("base").memory_mb(512).timeout_secs(600).await?;
/// let out = sandbox.exec("echo", ["hello"]).await?;
/// assert_eq!(out.stdout(), "hello\n");
/// sandbox.kill().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub(crate) target: SandboxRef,
    info: SandboxInfo,
}

impl Sandbox {
    /// Starts building a new sandbox; `.await` the builder to create it. The client comes from the
    /// environment ([`Client::from_env`]) unless given with [`SandboxBuilder::client`].
    ///
    /// ```no_run
    /// # async fn demo(client: &sandpit::Client) -> sandpit::Result<()> {
    /// let sbx = sandpit::Sandbox::create()
    ///     .client(client)
    ///     .cpu(1.0)
    ///     .env("LANG", "C.UTF-8")
    ///     .metadata("owner", "me")
    ///     .await?;
    /// println!("{}", sbx.id());
    /// # Ok(()) }
    /// ```
    pub fn create() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    /// Connects to an existing sandbox by id (resuming it if paused), with a client from the environment.
    ///
    /// ```no_run
    /// # async fn demo() -> sandpit::Result<()> {
    /// let sbx = sandpit::Sandbox::connect("3f2a9c0d11e4b7a8").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(id: impl Into<String>) -> Result<Self> {
        Self::connect_with(&Client::from_env()?, id).await
    }

    /// [`connect`](Self::connect) with an explicit client.
    ///
    /// ```no_run
    /// # async fn demo(client: &sandpit::Client) -> sandpit::Result<()> {
    /// let sbx = sandpit::Sandbox::connect_with(client, "3f2a9c0d11e4b7a8").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with(client: &Client, id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        let rb = client.request(Method::POST, &format!("/v1/sandboxes/{}/connect", enc(&id)));
        let info: SandboxInfo = client.send_json(rb).await?;
        Ok(Self::from_info(client.clone(), info))
    }

    /// Looks a sandbox up without resuming it (`GET /v1/sandboxes/{id}`).
    ///
    /// ```no_run
    /// # async fn demo(client: &sandpit::Client) -> sandpit::Result<()> {
    /// let sbx = sandpit::Sandbox::get(client, "3f2a9c0d11e4b7a8").await?;
    /// println!("{:?}", sbx.cached_info().state);
    /// # Ok(()) }
    /// ```
    pub async fn get(client: &Client, id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        let rb = client.request(Method::GET, &format!("/v1/sandboxes/{}", enc(&id)));
        let info: SandboxInfo = client.send_json(rb).await?;
        Ok(Self::from_info(client.clone(), info))
    }

    /// Lists sandboxes, with a client from the environment; filter with the builder.
    ///
    /// ```no_run
    /// # async fn demo() -> sandpit::Result<()> {
    /// use sandpit::SandboxState;
    /// let running = sandpit::Sandbox::list().state(SandboxState::Running).await?;
    /// # Ok(()) }
    /// ```
    pub fn list() -> ListSandboxes {
        ListSandboxes::default()
    }

    pub(crate) fn from_info(client: Client, info: SandboxInfo) -> Self {
        Self {
            target: SandboxRef {
                client,
                id: info.id.clone(),
            },
            info,
        }
    }

    /// The sandbox's id.
    pub fn id(&self) -> &str {
        &self.target.id
    }

    /// The client this sandbox uses.
    pub fn client(&self) -> &Client {
        &self.target.client
    }

    /// The info as last read (at creation, connect, or the last lifecycle call).
    pub fn cached_info(&self) -> &SandboxInfo {
        &self.info
    }

    fn path(&self, rest: &str) -> String {
        self.target.path(rest)
    }

    /// Reads the sandbox's current info.
    ///
    /// ```no_run
    /// # async fn demo(sbx: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let info = sbx.info().await?;
    /// println!("{:?} until {:?}", info.state, info.expires_at);
    /// # Ok(()) }
    /// ```
    pub async fn info(&self) -> Result<SandboxInfo> {
        let c = &self.target.client;
        c.send_json(c.request(Method::GET, &self.path(""))).await
    }

    /// The end of the sandbox agent's own log (at most `tail_bytes`, default 64 KiB; the log lives inside
    /// the sandbox and is rotated at 1 MiB): what to read when a sandbox misbehaves.
    ///
    /// ```no_run
    /// # async fn demo(sbx: sandpit::Sandbox) -> sandpit::Result<()> {
    /// println!("{}", sbx.logs(None).await?);
    /// # Ok(()) }
    /// ```
    pub async fn logs(&self, tail_bytes: Option<u64>) -> Result<String> {
        let c = &self.target.client;
        let mut rb = c.request(Method::GET, &self.path("/logs"));
        if let Some(n) = tail_bytes {
            rb = rb.query(&[("tail_bytes", n)]);
        }
        Ok(c.send(rb).await?.text().await?)
    }

    async fn post_info(
        &mut self,
        rest: &str,
        body: Option<serde_json::Value>,
    ) -> Result<SandboxInfo> {
        let c = &self.target.client;
        let mut rb = c.request(Method::POST, &self.path(rest));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let info: SandboxInfo = c.send_json(rb).await?;
        self.info = info.clone();
        Ok(info)
    }

    /// A new access token for this sandbox (`POST /v1/sandboxes/{id}/access-token`); the one from
    /// create, or from an earlier rotation, stops working at once. The token opens this sandbox only
    /// (processes, files, ports, pause/resume, info): give it to a page or a helper, never the API key.
    ///
    /// ```no_run
    /// # async fn demo(sbx: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let token = sbx.rotate_access_token().await?;
    /// let scoped = sandpit::Client::new("http://127.0.0.1:7070", token)?;
    /// # Ok(()) }
    /// ```
    pub async fn rotate_access_token(&self) -> Result<String> {
        let c = &self.target.client;
        let t: sandpit_types::sandbox::AccessToken = c
            .send_json(c.request(Method::POST, &self.path("/access-token")))
            .await?;
        Ok(t.access_token)
    }

    /// Freezes every process of the sandbox. Any process call resumes it.
    ///
    /// ```no_run
    /// # async fn demo(mut sbx: sandpit::Sandbox) -> sandpit::Result<()> {
    /// sbx.pause().await?;
    /// sbx.resume().await?;
    /// # Ok(()) }
    /// ```
    pub async fn pause(&mut self) -> Result<SandboxInfo> {
        self.post_info("/pause", None).await
    }

    /// Thaws a paused sandbox.
    ///
    /// ```no_run
    /// # async fn demo(mut sbx: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let info = sbx.resume().await?;
    /// # Ok(()) }
    /// ```
    pub async fn resume(&mut self) -> Result<SandboxInfo> {
        self.post_info("/resume", None).await
    }

    /// Moves the sandbox's deadline to `timeout` from now.
    ///
    /// ```no_run
    /// # async fn demo(mut sbx: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let info = sbx.set_timeout(std::time::Duration::from_secs(3600)).await?;
    /// println!("expires at {:?}", info.expires_at);
    /// # Ok(()) }
    /// ```
    pub async fn set_timeout(&mut self, timeout: Duration) -> Result<SandboxInfo> {
        let body = serde_json::to_value(SetTimeoutRequest {
            timeout: timeout.as_secs().max(1),
        })
        .expect("serializable");
        self.post_info("/timeout", Some(body)).await
    }

    /// Makes template `name` from the sandbox's filesystem as it is now (`POST
    /// /v1/sandboxes/{id}/snapshots`): its template plus everything written since. The sandbox keeps
    /// running (frozen for [`SnapshotInfo::frozen_ms`]); create sandboxes from the snapshot by name.
    ///
    /// ```no_run
    /// # async fn demo(client: &sandpit::Client, sbx: sandpit::Sandbox) -> sandpit::Result<()> {
    /// sbx.exec("git clone https://example.com/repo /home/user/repo", sandpit::NO_ARGS).await?;
    /// let snap = sbx.snapshot("repo-ready").await?;
    /// let copy = sandpit::Sandbox::create().client(client).template("repo-ready").await?;
    /// # Ok(()) }
    /// ```
    pub async fn snapshot(&self, name: &str) -> Result<SnapshotInfo> {
        let c = &self.target.client;
        let rb = c
            .request(Method::POST, &self.path("/snapshots"))
            .json(&CreateSnapshotRequest {
                name: name.to_owned(),
            });
        c.send_json(rb).await
    }

    /// Makes `count` sandboxes whose filesystems start as this one's is now (`POST
    /// /v1/sandboxes/{id}/fork`), each with the options of `options` (a [`Sandbox::create`] builder,
    /// without a template). Files are copied; running processes and memory are not. All or nothing.
    ///
    /// ```no_run
    /// # async fn demo(sbx: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let fork = sbx.fork(3, sandpit::Sandbox::create().metadata("try", "fix")).await?;
    /// for s in &fork.sandboxes {
    ///     s.exec("make test", sandpit::NO_ARGS).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn fork(&self, count: u32, options: SandboxBuilder) -> Result<Fork> {
        let c = &self.target.client;
        let body = ForkRequest {
            count,
            options: options.req,
        };
        let rb = c.request(Method::POST, &self.path("/fork")).json(&body);
        let info: ForkInfo = c.send_json(rb).await?;
        Ok(Fork {
            snapshot: info.snapshot,
            sandboxes: info
                .sandboxes
                .into_iter()
                .map(|i| Self::from_info(c.clone(), i))
                .collect(),
        })
    }

    /// Deletes the sandbox: kills every process and removes its files.
    ///
    /// ```no_run
    /// # async fn demo(sbx: sandpit::Sandbox) -> sandpit::Result<()> {
    /// sbx.kill().await?;
    /// # Ok(()) }
    /// ```
    pub async fn kill(&self) -> Result<()> {
        let c = &self.target.client;
        c.send_empty(c.request(Method::DELETE, &self.path("")))
            .await
    }
}

/// What [`Sandbox::fork`] made.
#[derive(Debug, Clone)]
pub struct Fork {
    /// The snapshot the new sandboxes start from (removed by the daemon with the last of them).
    pub snapshot: SnapshotInfo,
    pub sandboxes: Vec<Sandbox>,
}

/// Builds a `POST /v1/sandboxes` request; `.await` it to create the sandbox. See [`Sandbox::create`].
#[derive(Debug, Default, Clone)]
#[must_use = "a builder does nothing until awaited"]
pub struct SandboxBuilder {
    client: Option<Client>,
    pub(crate) req: CreateSandboxRequest,
}

impl SandboxBuilder {
    /// The client to create it with (default: [`Client::from_env`]).
    pub fn client(mut self, client: &Client) -> Self {
        self.client = Some(client.clone());
        self
    }

    /// Template name (default `base`).
    pub fn template(mut self, name: impl Into<String>) -> Self {
        self.req.template = Some(name.into());
        self
    }

    /// CPU limit in cores.
    pub fn cpu(mut self, cores: f64) -> Self {
        self.req.cpu = Some(cores);
        self
    }

    /// Memory limit in MiB.
    pub fn memory_mb(mut self, mb: u64) -> Self {
        self.req.memory_mb = Some(mb);
        self
    }

    /// Maximum number of processes and threads.
    pub fn pids(mut self, n: u64) -> Self {
        self.req.pids = Some(n);
        self
    }

    /// Size cap of the sandbox's writable layer, in MiB.
    pub fn disk_mb(mut self, mb: u64) -> Self {
        self.req.disk_mb = Some(mb);
        self
    }

    /// One environment variable for every process of the sandbox.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.req.env.insert(key.into(), value.into());
        self
    }

    /// Many environment variables.
    pub fn envs<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.req
            .env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// One metadata entry (filterable in [`Sandbox::list`]).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.req.metadata.insert(key.into(), value.into());
        self
    }

    /// Time to live (default 300 s on the daemon).
    pub fn timeout(mut self, ttl: Duration) -> Self {
        self.req.timeout = Some(ttl.as_secs().max(1));
        self
    }

    /// [`timeout`](Self::timeout) in seconds.
    pub fn timeout_secs(self, secs: u64) -> Self {
        self.timeout(Duration::from_secs(secs))
    }

    /// Mounts volume `name` (see [`Client::volumes`]) at `path` in the sandbox, read-write.
    pub fn volume(mut self, name: impl Into<String>, path: impl Into<String>) -> Self {
        self.req.volumes.push(sandpit_types::volumes::VolumeMount {
            name: name.into(),
            path: path.into(),
            read_only: false,
        });
        self
    }

    /// Mounts volume `name` at `path`, read-only.
    pub fn volume_read_only(mut self, name: impl Into<String>, path: impl Into<String>) -> Self {
        self.req.volumes.push(sandpit_types::volumes::VolumeMount {
            name: name.into(),
            path: path.into(),
            read_only: true,
        });
        self
    }

    /// What happens at the deadline: kill (default) or pause.
    pub fn on_timeout(mut self, what: OnTimeout) -> Self {
        self.req.on_timeout = Some(what);
        self
    }

    /// The request body this builder sends.
    pub fn request(&self) -> &CreateSandboxRequest {
        &self.req
    }

    /// Creates the sandbox.
    pub async fn send(self) -> Result<Sandbox> {
        let client = match self.client {
            Some(c) => c,
            None => Client::from_env()?,
        };
        let rb = client
            .request(Method::POST, "/v1/sandboxes")
            .json(&self.req);
        let info: SandboxInfo = client.send_json(rb).await?;
        Ok(Sandbox::from_info(client, info))
    }
}

impl IntoFuture for SandboxBuilder {
    type Output = Result<Sandbox>;
    type IntoFuture = BoxFuture<'static, Result<Sandbox>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// Builds a `GET /v1/sandboxes` query; `.await` it for the matching sandboxes. See [`Sandbox::list`].
#[derive(Debug, Default, Clone)]
#[must_use = "a builder does nothing until awaited"]
pub struct ListSandboxes {
    client: Option<Client>,
    state: Option<SandboxState>,
    metadata: BTreeMap<String, String>,
}

impl ListSandboxes {
    /// The client to use (default: [`Client::from_env`]).
    pub fn client(mut self, client: &Client) -> Self {
        self.client = Some(client.clone());
        self
    }

    /// Only sandboxes in this state.
    pub fn state(mut self, state: SandboxState) -> Self {
        self.state = Some(state);
        self
    }

    /// Only sandboxes whose metadata has `key = value` (repeatable: all must match).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Runs the query.
    pub async fn send(self) -> Result<Vec<SandboxInfo>> {
        let client = match self.client {
            Some(c) => c,
            None => Client::from_env()?,
        };
        let mut q = Vec::new();
        if let Some(s) = self.state {
            let s = serde_json::to_value(s).expect("serializable");
            q.push(format!("state={}", s.as_str().unwrap_or_default()));
        }
        for (k, v) in &self.metadata {
            q.push(format!("metadata={}", enc(&format!("{k}={v}"))));
        }
        let path = if q.is_empty() {
            "/v1/sandboxes".to_owned()
        } else {
            format!("/v1/sandboxes?{}", q.join("&"))
        };
        let list: SandboxList = client.send_json(client.request(Method::GET, &path)).await?;
        Ok(list.sandboxes)
    }
}

impl IntoFuture for ListSandboxes {
    type Output = Result<Vec<SandboxInfo>>;
    type IntoFuture = BoxFuture<'static, Self::Output>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

impl Client {
    /// [`Sandbox::create`] with this client.
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// let sbx = client.create_sandbox().timeout_secs(60).await?;
    /// # Ok(()) }
    /// ```
    pub fn create_sandbox(&self) -> SandboxBuilder {
        Sandbox::create().client(self)
    }

    /// [`Sandbox::list`] with this client.
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// for s in client.list_sandboxes().metadata("owner", "me").await? {
    ///     println!("{} {:?}", s.id, s.state);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn list_sandboxes(&self) -> ListSandboxes {
        Sandbox::list().client(self)
    }

    /// [`Sandbox::connect_with`] with this client.
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// let sbx = client.connect("3f2a9c0d11e4b7a8").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(&self, id: impl Into<String>) -> Result<Sandbox> {
        Sandbox::connect_with(self, id).await
    }
}
