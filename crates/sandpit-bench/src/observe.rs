//! The `observe` group (issue 20): a sandbox's life (create → `echo hi` → pause → resume → delete, five
//! lifecycle events) while a webhook's receiver accepts connections and never answers — every delivery
//! hangs for its whole timeout — against the same life with no webhook, in the same run. The claim it checks:
//! deliveries run off the request path, so a dead receiver does not change the API's latency.

use std::time::Instant;

use anyhow::Context;
use sandpit::{Client, CreateWebhookRequest, Sandbox};

use crate::daemon::start_daemon_with;
use crate::stats::{Row, ms, summarize};

const GROUP: &str = "events and webhooks";

async fn life(client: &Client) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut sbx = Sandbox::create().client(client).await?;
    let out = sbx.exec("echo", ["hi"]).await?;
    anyhow::ensure!(out.stdout() == "hi\n", "echo hi gave {:?}", out.stdout());
    sbx.pause().await?;
    sbx.resume().await?;
    sbx.kill().await?;
    Ok(ms(t.elapsed()))
}

pub async fn run(bin: &std::path::Path, quick: bool) -> anyhow::Result<Vec<Row>> {
    // A receiver that accepts and never answers: each attempt waits the whole webhook timeout.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hang_url = format!("http://{}/hook", hang.local_addr()?);
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            conns.push(s);
        }
    });
    let d = start_daemon_with(bin, &["--webhook-timeout-ms", "60000"])?;
    let client = Client::new(&d.url, &d.key)?;
    life(&client).await.context("a first sandbox")?;
    let n = if quick { 4 } else { 40 };
    let mut quiet = Vec::new();
    for _ in 0..n / 2 {
        quiet.push(life(&client).await?);
    }
    let hook = client
        .webhooks()
        .create(&CreateWebhookRequest {
            url: hang_url,
            events: vec!["*".into()],
            secret: "bench-webhook-secret".into(),
            description: Some("a receiver that never answers".into()),
        })
        .await?;
    let mut hung = Vec::new();
    for _ in 0..n / 2 {
        hung.push(life(&client).await?);
    }
    // The other half of the baseline after, so that both see the same machine.
    client.webhooks().delete(&hook.id).await?;
    for _ in 0..n / 2 {
        quiet.push(life(&client).await?);
    }
    held.abort();
    let backend = d.backend;
    Ok(vec![
        Row::new(
            GROUP,
            "sandbox life (create, exec, pause, resume, delete) while every webhook delivery hangs",
            "ms",
            summarize(&hung),
        )
        .against("the same life with no webhook", summarize(&quiet))
        .note(format!(
            "{backend} backend; five deliveries per life stay in flight for 60 s each: the ratio should be ~1"
        )),
    ])
}
