//! [`Client`]: where the daemon is and how to authenticate to it, plus the one place that turns HTTP
//! answers into values or [`Error`]s. Everything else in the SDK sends its requests through here, so the
//! configuration rules (arguments, then `SANDPIT_URL`/`SANDPIT_API_KEY`, then key files) live once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};

/// The daemon's address when neither an argument nor `SANDPIT_URL` gives one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7070";

/// A connection to a sandpit daemon: its base URL, the API key, and a pooled HTTP client.
///
/// Cheap to clone (an `Arc` inside); clones share the connection pool.
///
/// ```no_run
/// # async fn demo() -> sandpit::Result<()> {
/// // From SANDPIT_URL / SANDPIT_API_KEY, or the defaults and the daemon's key file:
/// let client = sandpit::Client::from_env()?;
/// // Or explicitly:
/// let client = sandpit::Client::new("http://127.0.0.1:7070", "my-key")?;
/// println!("{}", client.health().await?);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
    /// Where a key was looked for, named in the error when the daemon refuses us.
    key_hint: String,
}

/// Configures a [`Client`]; unset values come from the environment.
///
/// ```
/// let client = sandpit::Client::builder()
///     .url("http://127.0.0.1:7070")
///     .api_key("secret")
///     .build()
///     .unwrap();
/// assert_eq!(client.url(), "http://127.0.0.1:7070");
/// ```
#[derive(Debug, Default, Clone)]
pub struct ClientBuilder {
    url: Option<String>,
    api_key: Option<String>,
    connect_timeout: Option<Duration>,
}

impl ClientBuilder {
    /// The daemon's base URL, e.g. `http://127.0.0.1:7070`.
    #[must_use]
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// The API key (the content of the daemon's `STATE_DIR/api-key`).
    #[must_use]
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// How long to wait for a TCP connection (default 10 s). Requests themselves have no deadline,
    /// since waits and streams legitimately last as long as the process does.
    #[must_use]
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = Some(t);
        self
    }

    /// Resolves the configuration and builds the client.
    ///
    /// The URL is the argument, else `SANDPIT_URL`, else [`DEFAULT_URL`]. The key is the argument, else
    /// `SANDPIT_API_KEY`, else the first readable file of `$SANDPIT_STATE_DIR/api-key`,
    /// `/var/lib/sandpit/api-key`, `$XDG_DATA_HOME/sandpit/api-key` (or `~/.local/share/sandpit/api-key`).
    /// A missing key is not an error here (`/health` needs none); the first refused call names the files.
    pub fn build(self) -> Result<Client> {
        let url = self
            .url
            .or_else(|| env_nonempty("SANDPIT_URL"))
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let url = url.trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::invalid(format!(
                "daemon URL {url:?} must start with http:// or https://"
            )));
        }
        let files = key_files();
        let explicit = self.api_key.or_else(|| env_nonempty("SANDPIT_API_KEY"));
        let (key, key_hint) = if let Some(k) = explicit {
            (Some(k), "the API key given".to_owned())
        } else {
            let found = files.iter().find_map(|p| {
                std::fs::read_to_string(p)
                    .ok()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .map(|k| (k, p.clone()))
            });
            let tried = files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            match found {
                Some((k, p)) => (Some(k), format!("the key in {}", p.display())),
                None => (
                    None,
                    format!(
                        "no API key: set SANDPIT_API_KEY or --api-key (no key file in {tried})"
                    ),
                ),
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout.unwrap_or(Duration::from_secs(10)))
            .tcp_nodelay(true)
            .build()?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base: url,
                key,
                key_hint,
            }),
        })
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The key files looked at, in order.
fn key_files() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(d) = env_nonempty("SANDPIT_STATE_DIR") {
        v.push(PathBuf::from(d).join("api-key"));
    }
    v.push(PathBuf::from("/var/lib/sandpit/api-key"));
    if let Some(d) = env_nonempty("XDG_DATA_HOME") {
        v.push(PathBuf::from(d).join("sandpit/api-key"));
    } else if let Some(h) = env_nonempty("HOME") {
        v.push(PathBuf::from(h).join(".local/share/sandpit/api-key"));
    }
    v
}

impl Client {
    /// A builder; see [`ClientBuilder::build`] for how unset values are resolved.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client for `url` with `api_key`.
    ///
    /// ```
    /// let c = sandpit::Client::new("http://127.0.0.1:7070/", "k").unwrap();
    /// assert_eq!(c.url(), "http://127.0.0.1:7070");
    /// ```
    pub fn new(url: impl Into<String>, api_key: impl Into<String>) -> Result<Self> {
        Self::builder().url(url).api_key(api_key).build()
    }

    /// A client configured from `SANDPIT_URL`, `SANDPIT_API_KEY` and the key files (see
    /// [`ClientBuilder::build`]).
    ///
    /// ```no_run
    /// let client = sandpit::Client::from_env().unwrap();
    /// ```
    pub fn from_env() -> Result<Self> {
        Self::builder().build()
    }

    /// The daemon's base URL, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.inner.base
    }

    /// `GET /health` (no key needed): the daemon's status document.
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// let health = client.health().await?;
    /// assert_eq!(health["status"], "ok");
    /// # Ok(()) }
    /// ```
    pub async fn health(&self) -> Result<Value> {
        self.send_json(self.request(Method::GET, "/health")).await
    }

    /// A request to `path` (starting with `/`) with the key attached.
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self
            .inner
            .http
            .request(method, format!("{}{path}", self.inner.base));
        match &self.inner.key {
            Some(k) => rb.bearer_auth(k),
            None => rb,
        }
    }

    /// The WebSocket URL and `Authorization` header value for `path`.
    pub(crate) fn ws_target(&self, path: &str) -> (String, Option<String>) {
        let base = &self.inner.base;
        let url = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}{path}")
        } else {
            format!("ws://{}{path}", base.trim_start_matches("http://"))
        };
        (url, self.inner.key.as_ref().map(|k| format!("Bearer {k}")))
    }

    /// Sends and checks the status; an error answer becomes an [`Error`].
    pub(crate) async fn send(&self, rb: RequestBuilder) -> Result<reqwest::Response> {
        let resp = rb.send().await?;
        let status = resp.status();
        // A 101 comes only to a request that asked for the switch.
        if status.is_success() || status == reqwest::StatusCode::SWITCHING_PROTOCOLS {
            return Ok(resp);
        }
        let headers = resp.headers().clone();
        let body = resp.bytes().await.unwrap_or_default();
        Err(self.failure(status.as_u16(), &headers, &body))
    }

    /// The [`Error`] for an error answer: its status, headers (`Retry-After`) and body.
    pub(crate) fn failure(
        &self,
        status: u16,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> Error {
        let retry_after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let mut err = Error::from_response(status, body);
        if let Some(a) = err.api_mut() {
            a.retry_after = retry_after;
        }
        self.refine(err)
    }

    /// Adds where the key came from to an authentication error.
    pub(crate) fn refine(&self, e: Error) -> Error {
        match e {
            Error::Authentication(mut a) => {
                a.message = format!("{} [{}]", a.message, self.inner.key_hint);
                Error::Authentication(a)
            }
            e => e,
        }
    }

    pub(crate) async fn send_json<T: DeserializeOwned>(&self, rb: RequestBuilder) -> Result<T> {
        let resp = self.send(rb).await?;
        let bytes = resp.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::Protocol(format!(
                "{e} in {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            ))
        })
    }

    pub(crate) async fn send_empty(&self, rb: RequestBuilder) -> Result<()> {
        self.send(rb).await.map(drop)
    }
}

/// Percent-encodes one path segment or query value (ids are plain, but metadata filters may not be).
pub(crate) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = std::fmt::Write::write_fmt(&mut out, format_args!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalised_and_checked() {
        let c = Client::new("https://h:1/", "k").unwrap();
        assert_eq!(c.ws_target("/x").0, "wss://h:1/x");
        assert_eq!(c.ws_target("/x").1.as_deref(), Some("Bearer k"));
        assert!(Client::new("h:1", "k").is_err());
        assert_eq!(enc("a b/c=d"), "a%20b%2Fc%3Dd");
    }
}
