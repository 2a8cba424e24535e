//! `tributary-coordinator`: runs a coordinator node, or checks one's health.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tributary_coordinator::{ConfigFlags, CoordinatorConfig};

#[derive(Debug, Parser)]
#[command(
    name = "tributary-coordinator",
    version,
    about = "Tributary's Raft-replicated metadata service and controller"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    flags: ConfigFlags,
    /// Log as JSON lines instead of text (the `log_format = "json"` key).
    #[arg(long, global = true)]
    log_json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Exit 0 if the node at ADDR reports SERVING, non-zero otherwise.
    Healthcheck {
        /// host:port of the node.
        #[arg(default_value = "127.0.0.1:9191")]
        addr: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tributary_node::runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("tributary-coordinator: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Healthcheck { addr }) => runtime.block_on(tributary_node::healthcheck(&addr)),
        None => {
            let config = match CoordinatorConfig::load(&cli.flags) {
                Ok(config) => config,
                Err(err) => {
                    eprintln!("tributary-coordinator: invalid configuration: {err:#}");
                    return ExitCode::from(2);
                }
            };
            let format = if cli.log_json {
                tributary_node::LogFormat::Json
            } else {
                config.log_format
            };
            tributary_node::init_logging(format, "info,openraft=warn,sled=warn");
            match runtime.block_on(tributary_coordinator::run(
                config,
                tributary_node::shutdown_signal(),
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("tributary-coordinator: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
