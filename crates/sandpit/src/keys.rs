//! API keys (`/v1/keys`, admin keys only): make keys with a name, a tenant and scopes for other
//! programs or people, list them, revoke them.

use reqwest::Method;
use sandpit_types::keys::KeyList;
pub use sandpit_types::keys::{CreateKeyRequest, CreatedKey, KeyInfo, Scope};

use crate::client::Client;
use crate::error::Result;

/// `client.keys()`.
#[derive(Debug, Clone)]
pub struct Keys {
    client: Client,
}

impl Client {
    /// The key calls (they need an `admin` key).
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// use sandpit::{CreateKeyRequest, Scope};
    /// let made = client
    ///     .keys()
    ///     .create(&CreateKeyRequest {
    ///         name: "ci-bot".into(),
    ///         scopes: vec![Scope::Sandboxes],
    ///         tenant: None,
    ///         expires_in: Some(3600),
    ///     })
    ///     .await?;
    /// println!("give {} the key {}", made.info.name, made.key);
    /// # Ok(()) }
    /// ```
    pub fn keys(&self) -> Keys {
        Keys {
            client: self.clone(),
        }
    }
}

impl Keys {
    /// `POST /v1/keys`: the new key, whose secret (`key`) is shown only in this answer.
    pub async fn create(&self, req: &CreateKeyRequest) -> Result<CreatedKey> {
        let rb = self.client.request(Method::POST, "/v1/keys").json(req);
        self.client.send_json(rb).await
    }

    /// `GET /v1/keys`: every key made with [`Keys::create`], oldest first, without secrets.
    pub async fn list(&self) -> Result<Vec<KeyInfo>> {
        let list: KeyList = self
            .client
            .send_json(self.client.request(Method::GET, "/v1/keys"))
            .await?;
        Ok(list.keys)
    }

    /// `DELETE /v1/keys/{id}`: the key stops working at its next request.
    pub async fn revoke(&self, id: &str) -> Result<()> {
        let path = format!("/v1/keys/{id}");
        self.client
            .send_empty(self.client.request(Method::DELETE, &path))
            .await
    }
}
