//! `tributary-broker`: runs a broker, or checks one's health.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tributary_broker::{BrokerConfig, ConfigFlags};

#[derive(Debug, Parser)]
#[command(
    name = "tributary-broker",
    version,
    about = "Tributary's broker: hosts partition logs and serves producers and consumers"
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
    /// Exit 0 if the broker at ADDR reports SERVING, non-zero otherwise.
    Healthcheck {
        /// host:port of the broker.
        #[arg(default_value = "127.0.0.1:9092")]
        addr: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tributary_node::runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("tributary-broker: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Healthcheck { addr }) => runtime.block_on(tributary_node::healthcheck(&addr)),
        None => {
            let config = match BrokerConfig::load(&cli.flags) {
                Ok(config) => config,
                Err(err) => {
                    eprintln!("tributary-broker: invalid configuration: {err:#}");
                    return ExitCode::from(2);
                }
            };
            let format = if cli.log_json {
                tributary_node::LogFormat::Json
            } else {
                config.log_format
            };
            tributary_node::init_logging(format, "info");
            match runtime.block_on(tributary_broker::run(
                config,
                tributary_node::shutdown_signal(),
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("tributary-broker: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
