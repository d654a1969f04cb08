//! The raw per-sandbox process calls (`/v1/sandboxes/{id}/exec`, `/processes/…`), one method per HTTP
//! endpoint of docs/api.md. The seed-shaped surfaces (commands, exec, processes, attach) are thin layers
//! over this, so each endpoint is spelled exactly once in the SDK.

use std::time::Duration;

use reqwest::Method;
use sandpit_types::{
    ExecResult, KillResponse, ProcessInfo, ProcessList, ProcessStatus, SignalRequest, SignalSpec,
    StartRequest,
};

use crate::client::{Client, enc};
use crate::error::Result;
use crate::sse::EventStream;

/// A sandbox's id bound to a client: enough to reach its processes. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct SandboxRef {
    pub(crate) client: Client,
    pub(crate) id: String,
}

impl SandboxRef {
    pub(crate) fn path(&self, rest: &str) -> String {
        format!("/v1/sandboxes/{}{rest}", enc(&self.id))
    }

    fn proc_path(&self, pid: &str, rest: &str) -> String {
        self.path(&format!("/processes/{}{rest}", enc(pid)))
    }

    /// `POST /exec`: runs and waits.
    pub(crate) async fn exec(&self, req: &StartRequest) -> Result<ExecResult> {
        let rb = self
            .client
            .request(Method::POST, &self.path("/exec"))
            .json(req);
        self.client.send_json(rb).await
    }

    /// `POST /processes`: starts in the background.
    pub(crate) async fn start(&self, req: &StartRequest) -> Result<ProcessInfo> {
        let rb = self
            .client
            .request(Method::POST, &self.path("/processes"))
            .json(req);
        self.client.send_json(rb).await
    }

    /// `GET /processes?status=&limit=`, newest first.
    pub(crate) async fn list(
        &self,
        status: Option<ProcessStatus>,
        limit: Option<usize>,
    ) -> Result<Vec<ProcessInfo>> {
        let mut q = Vec::new();
        if let Some(s) = status {
            q.push(format!("status={}", s.as_str()));
        }
        if let Some(l) = limit {
            q.push(format!("limit={l}"));
        }
        let qs = if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        };
        let rb = self
            .client
            .request(Method::GET, &self.path(&format!("/processes{qs}")));
        let list: ProcessList = self.client.send_json(rb).await?;
        Ok(list.processes)
    }

    /// `GET /processes/{pid}`.
    pub(crate) async fn get(&self, pid: &str) -> Result<ProcessInfo> {
        let rb = self.client.request(Method::GET, &self.proc_path(pid, ""));
        self.client.send_json(rb).await
    }

    /// `GET /processes/{pid}/wait`: long-polls until the process ends (`timeout`: 408 → `Error::Timeout`).
    pub(crate) async fn wait(
        &self,
        pid: &str,
        timeout: Option<Duration>,
        output: bool,
    ) -> Result<ExecResult> {
        let mut q = format!("/wait?output={output}");
        if let Some(t) = timeout {
            q = format!("{q}&timeout_ms={}", t.as_millis());
        }
        // A long-poll cut by the network is simply asked again.
        let mut failures = 0;
        loop {
            let rb = self.client.request(Method::GET, &self.proc_path(pid, &q));
            match self.client.send_json(rb).await {
                Err(e) if e.is_transient() && failures < crate::sse::MAX_RETRIES => {
                    tokio::time::sleep(crate::sse::backoff(failures)).await;
                    failures += 1;
                }
                r => return r,
            }
        }
    }

    /// `POST /processes/{pid}/stdin[?eof=true]`.
    pub(crate) async fn stdin(&self, pid: &str, data: Vec<u8>, eof: bool) -> Result<()> {
        let q = if eof { "/stdin?eof=true" } else { "/stdin" };
        let rb = self
            .client
            .request(Method::POST, &self.proc_path(pid, q))
            .header("content-type", "application/octet-stream")
            .body(data);
        self.client.send_empty(rb).await
    }

    /// `POST /processes/{pid}/signal`.
    pub(crate) async fn signal(&self, pid: &str, signal: SignalSpec) -> Result<()> {
        let rb = self
            .client
            .request(Method::POST, &self.proc_path(pid, "/signal"))
            .json(&SignalRequest { signal });
        self.client.send_empty(rb).await
    }

    /// `POST /processes/{pid}/resize`.
    pub(crate) async fn resize(&self, pid: &str, cols: u16, rows: u16) -> Result<()> {
        let rb = self
            .client
            .request(Method::POST, &self.proc_path(pid, "/resize"))
            .json(&sandpit_types::TtySize { cols, rows });
        self.client.send_empty(rb).await
    }

    /// `DELETE /processes/{pid}`: SIGKILL to the whole tree.
    pub(crate) async fn kill(&self, pid: &str) -> Result<KillResponse> {
        let rb = self
            .client
            .request(Method::DELETE, &self.proc_path(pid, ""));
        self.client.send_json(rb).await
    }

    /// `GET /processes/{pid}/events?from_seq=N`, resumed from the last seq when cut.
    pub(crate) fn events(&self, pid: &str, from_seq: u64) -> EventStream {
        EventStream::open(self.clone(), pid.to_owned(), from_seq)
    }

    pub(crate) fn events_path(&self, pid: &str, from_seq: u64) -> String {
        self.proc_path(pid, &format!("/events?from_seq={from_seq}"))
    }

    pub(crate) fn ws_path(&self, pid: &str, from_seq: u64) -> String {
        self.proc_path(pid, &format!("/ws?from_seq={from_seq}"))
    }
}
