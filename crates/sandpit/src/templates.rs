//! Templates (`GET/POST /v1/templates`): the root filesystems sandboxes start from. The daemon's
//! template API is not settled yet (DESIGN.md names only the endpoints), so this module speaks plain
//! JSON: [`TemplateInfo`] keeps every field the daemon sends, and requests carry `name` plus the
//! fields documented on each method.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::client::Client;
use crate::error::Result;

/// A template as the daemon reports it: its name plus whatever else it says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateInfo {
    /// The name sandboxes are created with.
    pub name: String,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TemplateList {
    Wrapped { templates: Vec<TemplateInfo> },
    Bare(Vec<TemplateInfo>),
}

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
    ///     println!("{}", t.name);
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
    /// `GET /v1/templates`.
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
        Ok(match list {
            TemplateList::Wrapped { templates } | TemplateList::Bare(templates) => templates,
        })
    }

    /// Imports a root filesystem from a path on the daemon's host: `POST /v1/templates` with
    /// `{"name", "source", "format"}`; `format` is `dir`, `tar`, `oci` or `debootstrap` (`None`: the
    /// daemon guesses).
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// client.templates().import("alpine", "/srv/alpine.tar", Some("tar")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn import(
        &self,
        name: &str,
        source: &str,
        format: Option<&str>,
    ) -> Result<TemplateInfo> {
        let mut body = serde_json::json!({ "name": name, "source": source });
        if let Some(f) = format {
            body["format"] = Value::from(f);
        }
        self.create(body).await
    }

    /// Builds a template from another one by running shell commands in it: `POST /v1/templates` with
    /// `{"name", "from", "run": [...]}`.
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// client.templates().build("py", "base", &["apt-get install -y python3".into()]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn build(&self, name: &str, from: &str, run: &[String]) -> Result<TemplateInfo> {
        self.create(serde_json::json!({ "name": name, "from": from, "run": run }))
            .await
    }

    /// `POST /v1/templates` with any body.
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// let t = client
    ///     .templates()
    ///     .create(serde_json::json!({"name": "mini", "source": "/srv/rootfs"}))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn create(&self, body: Value) -> Result<TemplateInfo> {
        let rb = self
            .client
            .request(Method::POST, "/v1/templates")
            .json(&body);
        self.client.send_json(rb).await
    }
}
