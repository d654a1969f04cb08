//! A sandbox's network: its egress policy (set on create with [`SandboxBuilder::network`], read and
//! replaced live with [`Sandbox::network`] / [`Sandbox::set_network`]) and its exposed ports
//! ([`Sandbox::get_host`], [`Sandbox::expose_port`], [`Sandbox::close_port`], [`Sandbox::ports`]).

use reqwest::Method;
use sandpit_types::network::{ExposePortRequest, ExposedPort, NetworkPolicy, PortList};

use crate::error::Result;
use crate::sandbox::{Sandbox, SandboxBuilder};

impl SandboxBuilder {
    /// The sandbox's outbound network policy (default: the daemon's, usually "allow").
    ///
    /// ```no_run
    /// # async fn demo(client: &sandpit::Client) -> sandpit::Result<()> {
    /// use sandpit::types::network::{Egress, NetworkPolicy};
    /// let sbx = sandpit::Sandbox::create()
    ///     .client(client)
    ///     .network(NetworkPolicy {
    ///         egress: Some(Egress::Deny),
    ///         allow_out: vec!["pypi.org".into(), "*.pythonhosted.org".into()],
    ///         deny_out: vec![],
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn network(mut self, policy: NetworkPolicy) -> Self {
        self.req.network = Some(policy);
        self
    }
}

impl Sandbox {
    /// The host name of `port`'s preview URL, E2B-style: `{port}-{id}.{preview-domain}` (with the
    /// daemon's port when it is not 80/443), e.g. `8000-ab12.localhost:7070`. No request is made; the
    /// port is private until [`Sandbox::expose_port`].
    ///
    /// ```no_run
    /// # fn demo(sbx: &sandpit::Sandbox) {
    /// let url = format!("http://{}/", sbx.get_host(8000));
    /// # }
    /// ```
    pub fn get_host(&self, port: u16) -> String {
        let domain = self
            .cached_info()
            .preview_domain
            .clone()
            .unwrap_or_else(|| {
                let base = self.client().url();
                let authority = base.split("://").nth(1).unwrap_or(base);
                let port = authority.rsplit_once(':').map_or("", |(_, p)| p);
                if port.is_empty() {
                    "localhost".into()
                } else {
                    format!("localhost:{port}")
                }
            });
        format!("{port}-{}.{domain}", self.id())
    }

    /// Exposes `port`: returns its URL and a token for that port only (send it as `X-Sandpit-Token`,
    /// or once as `?sandpit_token=` in a browser). `public` opens it to anyone with the URL.
    ///
    /// ```no_run
    /// # async fn demo(sbx: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let p = sbx.expose_port(8000, false).await?;
    /// println!("{}?sandpit_token={}", p.url, p.token.unwrap_or_default());
    /// # Ok(()) }
    /// ```
    pub async fn expose_port(&self, port: u16, public: bool) -> Result<ExposedPort> {
        self.expose_port_with(
            port,
            ExposePortRequest {
                public,
                expires_in: None,
            },
        )
        .await
    }

    /// [`Sandbox::expose_port`] with every option (a token lifetime, say).
    pub async fn expose_port_with(&self, port: u16, req: ExposePortRequest) -> Result<ExposedPort> {
        let c = self.client();
        c.send_json(
            c.request(Method::POST, &self.target.path(&format!("/ports/{port}")))
                .json(&req),
        )
        .await
    }

    /// Makes `port` private again and revokes every token for it.
    pub async fn close_port(&self, port: u16) -> Result<()> {
        let c = self.client();
        c.send_empty(c.request(Method::DELETE, &self.target.path(&format!("/ports/{port}"))))
            .await
    }

    /// The exposed ports.
    pub async fn ports(&self) -> Result<Vec<ExposedPort>> {
        let c = self.client();
        let list: PortList = c
            .send_json(c.request(Method::GET, &self.target.path("/ports")))
            .await?;
        Ok(list.ports)
    }

    /// The outbound network policy in force.
    pub async fn network(&self) -> Result<NetworkPolicy> {
        let c = self.client();
        c.send_json(c.request(Method::GET, &self.target.path("/network")))
            .await
    }

    /// Replaces the policy while the sandbox runs; open connections it forbids are cut.
    ///
    /// ```no_run
    /// # async fn demo(sbx: sandpit::Sandbox) -> sandpit::Result<()> {
    /// use sandpit::types::network::{Egress, NetworkPolicy};
    /// sbx.set_network(NetworkPolicy { egress: Some(Egress::Deny), ..Default::default() }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_network(&self, policy: NetworkPolicy) -> Result<NetworkPolicy> {
        let c = self.client();
        c.send_json(
            c.request(Method::PUT, &self.target.path("/network"))
                .json(&policy),
        )
        .await
    }
}
