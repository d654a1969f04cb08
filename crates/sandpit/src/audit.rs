//! The audit log (`GET /v1/audit`, admin keys only): which key did what to which sandbox, when, and how
//! it ended — never a secret.

use reqwest::Method;
pub use sandpit_types::audit::{AuditEntry, AuditList};

use crate::client::Client;
use crate::error::Result;

/// Which rows [`Audit::list`] reads; all fields optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Rows at or after this time: RFC 3339 (`2026-12-04T10:00:00Z`) or milliseconds since the epoch.
    pub since: Option<String>,
    /// Rows after this id: the [`AuditList::next_after`] of the previous page.
    pub after: Option<u64>,
    /// Only this tenant's keys' calls.
    pub tenant: Option<String>,
    /// Only calls on this sandbox.
    pub sandbox: Option<String>,
    /// At most this many (the daemon's default 100, at most 1000).
    pub limit: Option<usize>,
}

/// `client.audit()`.
#[derive(Debug, Clone)]
pub struct Audit {
    client: Client,
}

impl Client {
    /// The audit log (needs an `admin` key).
    ///
    /// ```no_run
    /// # async fn demo(client: sandpit::Client) -> sandpit::Result<()> {
    /// use sandpit::AuditQuery;
    /// let page = client
    ///     .audit()
    ///     .list(&AuditQuery { tenant: Some("team-a".into()), ..AuditQuery::default() })
    ///     .await?;
    /// for e in page.entries {
    ///     println!("{} {} {} {:?} {}", e.at, e.key_id, e.action, e.detail, e.outcome);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn audit(&self) -> Audit {
        Audit {
            client: self.clone(),
        }
    }
}

impl Audit {
    /// `GET /v1/audit`: one page of rows, oldest first; `next_after` is set when there are more.
    pub async fn list(&self, q: &AuditQuery) -> Result<AuditList> {
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(v) = &q.since {
            params.push(("since", v.clone()));
        }
        if let Some(v) = q.after {
            params.push(("after", v.to_string()));
        }
        if let Some(v) = &q.tenant {
            params.push(("tenant", v.clone()));
        }
        if let Some(v) = &q.sandbox {
            params.push(("sandbox", v.clone()));
        }
        if let Some(v) = q.limit {
            params.push(("limit", v.to_string()));
        }
        let rb = self.client.request(Method::GET, "/v1/audit").query(&params);
        self.client.send_json(rb).await
    }
}
