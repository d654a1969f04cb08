//! Network verbs: `port` (expose a port, print its preview URL) and `network` (show or replace a
//! sandbox's egress policy).

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use sandpit::types::network::{Egress, ExposePortRequest, NetworkPolicy};
use sandpit::{Client, Sandbox};

use super::print_json;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sandpit port ID 8000              # private: prints a URL carrying a one-time token for a browser\n  \
    sandpit port ID 8000 --public     # anyone with the URL\n  \
    sandpit port ID 8000 --close      # private again, every token revoked")]
pub struct PortArgs {
    /// Sandbox id.
    id: String,
    /// TCP port inside the sandbox (bound to 0.0.0.0 or 127.0.0.1).
    port: u16,
    /// Open to anyone with the URL (default: private, behind a port-scoped token).
    #[arg(long)]
    public: bool,
    /// Seconds the token stays valid [default: until the port is closed].
    #[arg(long, value_name = "SECS")]
    expires_in: Option<u64>,
    /// Close the port instead (private again, every token revoked).
    #[arg(long, conflicts_with_all = ["public", "expires_in"])]
    close: bool,
    /// Print the daemon's answer (url, token, …) as JSON.
    #[arg(long)]
    json: bool,
}

/// `sandpit port ID PORT`: prints the preview URL. For a private port the URL carries the token
/// (`?sandpit_token=`), which the daemon trades for an `HttpOnly` cookie and strips from the address bar.
pub async fn port(client: &Client, a: PortArgs) -> anyhow::Result<ExitCode> {
    let sbx = Sandbox::get(client, &a.id)
        .await
        .with_context(|| format!("cannot find sandbox {}", a.id))?;
    if a.close {
        sbx.close_port(a.port)
            .await
            .with_context(|| format!("cannot close port {} of {}", a.port, a.id))?;
        return Ok(ExitCode::SUCCESS);
    }
    let p = sbx
        .expose_port_with(
            a.port,
            ExposePortRequest {
                public: a.public,
                expires_in: a.expires_in,
            },
        )
        .await
        .with_context(|| format!("cannot expose port {} of {}", a.port, a.id))?;
    if a.json {
        return print_json(&p);
    }
    match (&p.token, p.public) {
        (Some(t), false) => println!("{}?sandpit_token={t}", p.url),
        _ => println!("{}", p.url),
    }
    Ok(ExitCode::SUCCESS)
}

/// Policy flags, shared by `create`/`run` and `network`.
#[derive(Debug, Args, Default)]
pub struct PolicyOpts {
    /// Outbound default: `allow` or `deny` [default: the daemon's].
    #[arg(long, value_name = "allow|deny")]
    egress: Option<Egress>,
    /// Allowed destination: CIDR, address, domain or `*.domain` (repeatable; wins over --deny-out).
    #[arg(long = "allow-out", value_name = "DEST")]
    allow_out: Vec<String>,
    /// Denied destination: CIDR, address or domain (repeatable).
    #[arg(long = "deny-out", value_name = "DEST")]
    deny_out: Vec<String>,
}

impl PolicyOpts {
    /// The policy, when any flag was given.
    pub fn policy(&self) -> Option<NetworkPolicy> {
        (self.egress.is_some() || !self.allow_out.is_empty() || !self.deny_out.is_empty()).then(
            || NetworkPolicy {
                egress: self.egress,
                allow_out: self.allow_out.clone(),
                deny_out: self.deny_out.clone(),
            },
        )
    }
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sandpit network ID                                      # show the policy\n  \
    sandpit network ID --egress deny --allow-out pypi.org --allow-out '*.pythonhosted.org'\n  \
    sandpit network ID --egress allow                       # replace it: open again")]
pub struct NetworkArgs {
    /// Sandbox id.
    id: String,
    #[command(flatten)]
    policy: PolicyOpts,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

/// `sandpit network ID [flags]`: shows the policy, or replaces it (connections it forbids are cut).
pub async fn network(client: &Client, a: NetworkArgs) -> anyhow::Result<ExitCode> {
    let sbx = Sandbox::get(client, &a.id)
        .await
        .with_context(|| format!("cannot find sandbox {}", a.id))?;
    let p = match a.policy.policy() {
        Some(p) => sbx.set_network(p).await,
        None => sbx.network().await,
    }
    .with_context(|| format!("network policy of {}", a.id))?;
    if a.json {
        return print_json(&p);
    }
    println!("egress: {}", p.egress.map_or("default", Egress::as_str));
    for d in &p.allow_out {
        println!("allow:  {d}");
    }
    for d in &p.deny_out {
        println!("deny:   {d}");
    }
    Ok(ExitCode::SUCCESS)
}
