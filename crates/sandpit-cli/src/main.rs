//! The `sandpit` binary: a thin layer of argument parsing over the sandpit libraries.
//!
//! Each subcommand lives in its own module and turns its arguments into a library call; errors are
//! printed once, with their chain, and turned into a non-zero exit code here.

mod cli;
mod serve;

use clap::{Parser, Subcommand};

/// sandpit: self-hosted Linux sandboxes for running untrusted code.
#[derive(Debug, Parser)]
#[command(
    name = "sandpit",
    version,
    about,
    propagate_version = true,
    after_help = cli::EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    conn: cli::ConnArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the in-sandbox process agent (normally started by the daemon as a sandbox's PID 1).
    Agent(sandpit_agent_cli::AgentArgs),
    /// Run the sandpit daemon: the authenticated HTTP API for sandboxes (default 127.0.0.1:7070).
    Serve(serve::ServeArgs),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agent(args) => sandpit_agent_cli::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Client(cmd) => cli::run(cmd, &cli.conn),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sandpit: error: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}
