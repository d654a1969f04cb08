//! `sandpit-agent`: the in-sandbox agent alone, with the same command line as `sandpit agent`
//! (`sandpit-agent agent --listen …`), so that the daemon starts either the same way. Built statically
//! (`scripts/build-agent.sh`), it needs nothing from a sandbox's template.

use clap::{Parser, Subcommand};

/// The sandpit in-sandbox agent (started by the daemon as a sandbox's PID 1).
#[derive(Debug, Parser)]
#[command(name = "sandpit-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the in-sandbox process agent.
    Agent(sandpit_agent_cli::AgentArgs),
}

fn main() -> std::process::ExitCode {
    let Command::Agent(args) = Cli::parse().command;
    match sandpit_agent_cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sandpit-agent: error: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}
