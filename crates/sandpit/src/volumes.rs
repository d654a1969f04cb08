//! Volumes (`/v1/volumes`): named, size-capped filesystems that outlive every sandbox. Mount one with
//! [`SandboxBuilder::volume`](crate::SandboxBuilder::volume); two sandboxes may mount one at once.

use reqwest::Method;
use sandpit_types::volumes::{CreateVolumeRequest, VolumeList};
pub use sandpit_types::volumes::{VolumeInfo, VolumeMount};

use crate::client::{Client, enc};
use crate::error::Result;

/// `client.volumes()`.
#[derive(Debug, Clone)]
pub struct Volumes {
    client: Client,
}

impl Client {
    /// The volume calls.
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// let v = client.volumes().create("cache", 1024).await?;
    /// let sbx = sandpit::Sandbox::create()
    ///     .client(&client)
    ///     .volume("cache", "/home/user/.cache")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn volumes(&self) -> Volumes {
        Volumes {
            client: self.clone(),
        }
    }
}

impl Volumes {
    /// `POST /v1/volumes`: an empty volume of `size_mb` MiB (16 to 1048576) for this key's tenant.
    pub async fn create(&self, name: &str, size_mb: u64) -> Result<VolumeInfo> {
        let rb = self
            .client
            .request(Method::POST, "/v1/volumes")
            .json(&CreateVolumeRequest {
                name: name.to_owned(),
                size_mb,
            });
        self.client.send_json(rb).await
    }

    /// `GET /v1/volumes`: this tenant's volumes (an admin key: all), with usage and who mounts them.
    pub async fn list(&self) -> Result<Vec<VolumeInfo>> {
        let list: VolumeList = self
            .client
            .send_json(self.client.request(Method::GET, "/v1/volumes"))
            .await?;
        Ok(list.volumes)
    }

    /// `GET /v1/volumes/{name}`.
    pub async fn get(&self, name: &str) -> Result<VolumeInfo> {
        let path = format!("/v1/volumes/{}", enc(name));
        self.client
            .send_json(self.client.request(Method::GET, &path))
            .await
    }

    /// `DELETE /v1/volumes/{name}`: the volume and its data; refused (409) while a sandbox mounts it.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let path = format!("/v1/volumes/{}", enc(name));
        self.client
            .send_empty(self.client.request(Method::DELETE, &path))
            .await
    }
}
