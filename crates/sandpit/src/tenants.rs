//! Tenants and their quotas (`/v1/tenants`): an admin key sets a tenant's quotas and lists every tenant;
//! any key reads its own tenant (quotas and what it holds). A create over a quota fails with
//! [`ErrorCode::QuotaExceeded`](sandpit_types::ErrorCode::QuotaExceeded) or
//! [`ErrorCode::RateLimited`](sandpit_types::ErrorCode::RateLimited) (HTTP 429).

use reqwest::Method;
use sandpit_types::tenants::TenantList;
pub use sandpit_types::tenants::{TenantInfo, TenantQuotas, TenantUsage};

use crate::client::Client;
use crate::error::Result;

/// `client.tenants()`.
#[derive(Debug, Clone)]
pub struct Tenants {
    client: Client,
}

impl Client {
    /// The tenant calls.
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// use sandpit::TenantQuotas;
    /// let t = client
    ///     .tenants()
    ///     .set_quotas("customer-a", &TenantQuotas {
    ///         max_sandboxes: Some(10),
    ///         max_creates_per_second: Some(2.0),
    ///         ..TenantQuotas::default()
    ///     })
    ///     .await?;
    /// println!("{} holds {} sandboxes", t.name, t.usage.sandboxes);
    /// # Ok(()) }
    /// ```
    pub fn tenants(&self) -> Tenants {
        Tenants {
            client: self.clone(),
        }
    }
}

impl Tenants {
    /// `GET /v1/tenants/{name}`: quotas and usage (a non-admin key: its own tenant only).
    pub async fn get(&self, name: &str) -> Result<TenantInfo> {
        let path = format!("/v1/tenants/{name}");
        self.client
            .send_json(self.client.request(Method::GET, &path))
            .await
    }

    /// `GET /v1/tenants` (admin): every tenant with quotas, keys or sandboxes, by name.
    pub async fn list(&self) -> Result<Vec<TenantInfo>> {
        let list: TenantList = self
            .client
            .send_json(self.client.request(Method::GET, "/v1/tenants"))
            .await?;
        Ok(list.tenants)
    }

    /// `PUT /v1/tenants/{name}` (admin): replaces the tenant's quotas (a `None` is no limit; all `None`
    /// lifts them). Sandboxes that exist are never stopped by a lower quota.
    pub async fn set_quotas(&self, name: &str, quotas: &TenantQuotas) -> Result<TenantInfo> {
        let path = format!("/v1/tenants/{name}");
        let rb = self.client.request(Method::PUT, &path).json(quotas);
        self.client.send_json(rb).await
    }
}
