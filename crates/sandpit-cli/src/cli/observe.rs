//! `sandpit events`, `sandpit metrics`, `sandpit top` and `sandpit webhook`: lifecycle events (a page, or
//! followed live with `-f`), a sandbox's resource samples, a live table of every sandbox's cpu and
//! memory, and webhooks (admin keys).

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use sandpit::{Client, CreateWebhookRequest, EventQuery, LifecycleEvent, MetricSample, Sandbox};
use sandpit_types::sandbox::SandboxState;

use super::{print_json, print_table};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    sandpit events\n  \
    sandpit events -f                              # follow new events\n  \
    sandpit events --sandbox 3f9a0c1d2e4b5a69 --type sandbox.paused,sandbox.resumed\n  \
    sandpit events -f --after 120 --json           # replay from event 120, then follow, as JSON lines")]
pub struct EventsArgs {
    /// Follow: print events as they happen until interrupted (with --after, the stored ones after it first).
    #[arg(short, long)]
    follow: bool,
    /// Only this sandbox's events.
    #[arg(long, value_name = "ID")]
    sandbox: Option<String>,
    /// Only these types, comma-separated: `sandbox.created`, `sandbox.paused`, `sandbox.resumed`,
    /// `sandbox.timeout_extended`, `sandbox.timed_out`, `sandbox.killed`, `sandbox.failed`,
    /// `sandbox.unhealthy`, `sandbox.snapshot_created`, `sandbox.forked`.
    #[arg(long = "type", value_name = "TYPES", value_delimiter = ',')]
    types: Vec<String>,
    /// Events at or after this time (RFC 3339, or milliseconds since the epoch); not with -f.
    #[arg(long, value_name = "TIME", conflicts_with = "follow")]
    since: Option<String>,
    /// Events after this id.
    #[arg(long, value_name = "ID")]
    after: Option<u64>,
    /// At most this many [default: 100; at most 1000]; not with -f.
    #[arg(long, value_name = "N", conflicts_with = "follow")]
    limit: Option<usize>,
    /// JSON: the whole page, or (with -f) one event per line.
    #[arg(long)]
    json: bool,
}

fn event_row(e: &LifecycleEvent) -> Vec<String> {
    vec![
        e.id.to_string(),
        e.at.clone(),
        e.kind.clone(),
        e.sandbox_id.clone(),
        e.tenant.clone(),
        if e.data.as_object().is_some_and(serde_json::Map::is_empty) {
            String::new()
        } else {
            e.data.to_string()
        },
    ]
}

const EVENT_HEADER: [&str; 6] = ["ID", "AT", "TYPE", "SANDBOX", "TENANT", "DATA"];

pub async fn events(client: &Client, a: EventsArgs) -> anyhow::Result<ExitCode> {
    let q = EventQuery {
        sandbox: a.sandbox,
        types: a.types,
        since: a.since,
        after: a.after,
        limit: a.limit,
    };
    if a.follow {
        let mut live = client.events().stream(&q);
        while let Some(e) = live.next().await {
            let e = e.context("the event stream failed")?;
            if a.json {
                println!("{}", serde_json::to_string(&e)?);
            } else {
                println!("{}", event_row(&e).join("  ").trim_end());
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let page = client
        .events()
        .list(&q)
        .await
        .context("cannot read the events")?;
    if a.json {
        return print_json(&page);
    }
    let rows: Vec<Vec<String>> = page.events.iter().map(event_row).collect();
    print_table(&EVENT_HEADER, &rows);
    if let Some(next) = page.next_after {
        eprintln!("more: sandpit events --after {next}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    sandpit metrics 3f9a0c1d2e4b5a69\n  \
    sandpit metrics 3f9a0c1d2e4b5a69 --start 2026-12-04T10:00:00Z --json\n  \
    sandpit metrics -f 3f9a0c1d2e4b5a69            # a line per sample as it is taken")]
pub struct MetricsArgs {
    /// The sandbox.
    id: String,
    /// Follow: print each sample as it is taken, until the sandbox is deleted or interrupted.
    #[arg(short, long)]
    follow: bool,
    /// Samples at or after this time (RFC 3339, or milliseconds since the epoch).
    #[arg(long, value_name = "TIME", conflicts_with = "follow")]
    start: Option<String>,
    /// Samples at or before this time.
    #[arg(long, value_name = "TIME", conflicts_with = "follow")]
    end: Option<String>,
    /// JSON: the list, or (with -f) one sample per line.
    #[arg(long)]
    json: bool,
}

/// `1.5 GiB`-style sizes.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn of_limit(used: u64, limit: u64) -> String {
    if limit == 0 {
        size(used)
    } else {
        format!("{} / {}", size(used), size(limit))
    }
}

fn sample_row(m: &MetricSample) -> Vec<String> {
    vec![
        m.timestamp.clone(),
        format!("{:.1}% of {}", m.cpu_used_pct, m.cpu_count),
        of_limit(m.mem_used, m.mem_limit),
        of_limit(m.disk_used, m.disk_limit),
        m.pids.to_string(),
    ]
}

const SAMPLE_HEADER: [&str; 5] = ["TIME", "CPU", "MEMORY", "DISK", "PIDS"];

pub async fn metrics(client: &Client, a: MetricsArgs) -> anyhow::Result<ExitCode> {
    let sbx = Sandbox::get(client, &a.id)
        .await
        .with_context(|| format!("cannot find sandbox {}", a.id))?;
    if a.follow {
        let mut live = sbx.metrics_stream();
        while let Some(m) = live.next().await {
            let m = m.context("the metrics stream failed")?;
            if a.json {
                println!("{}", serde_json::to_string(&m)?);
            } else {
                println!("{}", sample_row(&m).join("  "));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let samples = sbx
        .metrics(a.start.as_deref(), a.end.as_deref())
        .await
        .with_context(|| format!("cannot read the metrics of sandbox {}", a.id))?;
    if a.json {
        return print_json(&samples);
    }
    let rows: Vec<Vec<String>> = samples.iter().map(sample_row).collect();
    print_table(&SAMPLE_HEADER, &rows);
    if samples.is_empty() {
        eprintln!(
            "no samples yet: a running sandbox is sampled every few seconds (the daemon's metrics_interval_ms)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    sandpit top                  # refreshes every 2 s; ctrl-c quits\n  \
    sandpit top --once --sort mem")]
pub struct TopArgs {
    /// Print the table once and exit.
    #[arg(long)]
    once: bool,
    /// Seconds between refreshes.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    interval: f64,
    /// Sort by `cpu`, `mem`, `age` or `id`.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "mem", "age", "id"])]
    sort: String,
}

pub async fn top(client: &Client, a: TopArgs) -> anyhow::Result<ExitCode> {
    if !(a.interval.is_finite() && a.interval >= 0.2) {
        anyhow::bail!("--interval {}: use at least 0.2 seconds", a.interval);
    }
    let tty = std::io::stdout().is_terminal();
    loop {
        let list = client
            .list_sandboxes()
            .await
            .context("cannot list sandboxes")?;
        let since = (std::time::SystemTime::now() - Duration::from_secs(60))
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
            .to_string();
        let latest = futures_util::future::join_all(list.iter().map(|s| {
            let since = since.clone();
            async move {
                if s.state != SandboxState::Running {
                    return None;
                }
                let sbx = Sandbox::get(client, &s.id).await.ok()?;
                sbx.metrics(Some(&since), None).await.ok()?.pop()
            }
        }))
        .await;
        let mut rows: Vec<(&sandpit::SandboxInfo, Option<MetricSample>)> =
            list.iter().zip(latest).collect();
        match a.sort.as_str() {
            "mem" => {
                rows.sort_by_key(|(_, m)| std::cmp::Reverse(m.as_ref().map_or(0, |m| m.mem_used)));
            }
            "age" => rows.sort_by(|x, y| x.0.created_at.cmp(&y.0.created_at)),
            "id" => rows.sort_by(|x, y| x.0.id.cmp(&y.0.id)),
            _ => rows.sort_by(|x, y| {
                let c = |m: &Option<MetricSample>| m.as_ref().map_or(-1.0, |m| m.cpu_used_pct);
                c(&y.1).total_cmp(&c(&x.1))
            }),
        }
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|(s, m)| {
                let dash = || "-".to_owned();
                vec![
                    s.id.clone(),
                    s.state.as_str().to_owned(),
                    s.template.clone(),
                    m.as_ref()
                        .map_or_else(dash, |m| format!("{:.1}%", m.cpu_used_pct)),
                    m.as_ref()
                        .map_or_else(dash, |m| of_limit(m.mem_used, m.mem_limit)),
                    m.as_ref()
                        .map_or_else(dash, |m| of_limit(m.disk_used, m.disk_limit)),
                    m.as_ref().map_or_else(dash, |m| m.pids.to_string()),
                    s.created_at.clone(),
                    s.expires_at.clone().unwrap_or_else(dash),
                ]
            })
            .collect();
        if tty && !a.once {
            // Clear the screen and go home, then redraw.
            print!("\x1b[2J\x1b[H");
        }
        print_table(
            &[
                "ID", "STATE", "TEMPLATE", "CPU", "MEMORY", "DISK", "PIDS", "CREATED", "EXPIRES",
            ],
            &table,
        );
        if a.once {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs_f64(a.interval)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// `sandpit webhook …` (admin keys).
#[derive(Debug, clap::Subcommand)]
pub enum WebhookCommand {
    /// Register a URL that receives every event of the given types as a signed POST; prints its id.
    #[command(after_help = "Examples:\n  \
        sandpit webhook create https://hooks.example.com/sandpit --events '*' --secret \"$SECRET\"\n  \
        sandpit webhook create http://127.0.0.1:9000/hook --events sandbox.created,sandbox.killed --secret \"$SECRET\"")]
    Create {
        /// The receiver's `http://` or `https://` URL (named `target`: `--url` is the daemon's).
        #[arg(value_name = "URL")]
        target: String,
        /// Event types, comma-separated, or `*` for all.
        #[arg(long, value_delimiter = ',', required = true)]
        events: Vec<String>,
        /// Signs each delivery (`Sandpit-Signature`); 8-256 characters. `SANDPIT_WEBHOOK_SECRET` works too.
        #[arg(long, env = "SANDPIT_WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List webhooks.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show one webhook.
    Get { id: String },
    /// Delete webhooks (their pending retries stop).
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// A webhook's delivery attempts, newest first.
    Deliveries {
        id: String,
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn webhook(client: &Client, c: WebhookCommand) -> anyhow::Result<ExitCode> {
    let hooks = client.webhooks();
    match c {
        WebhookCommand::Create {
            target,
            events,
            secret,
            description,
            json,
        } => {
            let w = hooks
                .create(&CreateWebhookRequest {
                    url: target,
                    events,
                    secret,
                    description,
                })
                .await
                .context("cannot create the webhook")?;
            if json {
                return print_json(&w);
            }
            println!("{}", w.id);
        }
        WebhookCommand::Ls { json } => {
            let list = hooks.list().await.context("cannot list webhooks")?;
            if json {
                return print_json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|w| {
                    vec![
                        w.id.clone(),
                        w.url.clone(),
                        w.events.join(","),
                        w.created_at.clone(),
                        w.description.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print_table(&["ID", "URL", "EVENTS", "CREATED", "DESCRIPTION"], &rows);
        }
        WebhookCommand::Get { id } => {
            let w = hooks
                .get(&id)
                .await
                .with_context(|| format!("cannot read webhook {id}"))?;
            return print_json(&w);
        }
        WebhookCommand::Rm { ids } => {
            let mut failed = false;
            for id in ids {
                if let Err(e) = hooks.delete(&id).await {
                    eprintln!("sandpit: cannot delete webhook {id}: {e}");
                    failed = true;
                }
            }
            return Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
        WebhookCommand::Deliveries { id, limit, json } => {
            let list = hooks
                .deliveries(&id, limit)
                .await
                .with_context(|| format!("cannot read the deliveries of webhook {id}"))?;
            if json {
                return print_json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|d| {
                    vec![
                        d.id.clone(),
                        d.event_id.to_string(),
                        d.event_type.clone(),
                        d.attempt.to_string(),
                        d.at.clone(),
                        d.outcome.clone(),
                        d.status_code.map_or_else(|| "-".into(), |s| s.to_string()),
                        format!("{} ms", d.duration_ms),
                        d.error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "DELIVERY", "EVENT", "TYPE", "ATTEMPT", "AT", "OUTCOME", "STATUS", "TOOK",
                    "ERROR",
                ],
                &rows,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What the console link's fragment escapes: all but unreserved characters (ids and tokens are made of those).
const LINK_FRAGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'-')
    .remove(b'.')
    .remove(b'~');

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    sandpit console                      # the address to open in a browser (sign in with a key)\n  \
    sandpit console 3f9a0c1d2e4b5a69     # a link for that sandbox alone (a new access token)")]
pub struct ConsoleArgs {
    /// A sandbox: print a link that opens it alone, signed in with a new access token of it (the
    /// sandbox's previous access token stops working, as with `sandpit access-token`).
    id: Option<String>,
}

/// Prints the console's address, or a one-sandbox link (the token rides in the fragment, which browsers
/// never send to the server; the console takes it out of the address bar at once).
pub async fn console(client: &Client, a: ConsoleArgs) -> anyhow::Result<ExitCode> {
    let base = format!("{}/console", client.url().trim_end_matches('/'));
    let Some(id) = a.id else {
        println!("{base}");
        return Ok(ExitCode::SUCCESS);
    };
    let sbx = Sandbox::get(client, &id)
        .await
        .with_context(|| format!("cannot find sandbox {id}"))?;
    let token = sbx
        .rotate_access_token()
        .await
        .with_context(|| format!("cannot issue an access token for sandbox {id}"))?;
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, LINK_FRAGMENT).to_string();
    println!("{base}#sandbox={}&token={}", enc(&id), enc(&token));
    Ok(ExitCode::SUCCESS)
}
