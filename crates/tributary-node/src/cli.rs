//! The generic `main` of a server: flags, layered configuration, logging, signals, the
//! `healthcheck` subcommand and the hidden flags `cargo xtask deploy-check` asks.

use std::future::Future;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::LogFormat;

/// What a server binary tells the scaffold.
pub trait Node {
    /// The binary's name, e.g. `tributary-broker`.
    const NAME: &'static str;
    /// The first line of `--help`.
    const ABOUT: &'static str;
    /// What the server is called in `healthcheck`'s help (`broker`, `node`).
    const NOUN: &'static str;
    /// The address `healthcheck` asks without one (the default listener).
    const HEALTH_ADDR: &'static str;
    /// The log filter without `RUST_LOG`.
    const LOG_FILTER: &'static str;
    /// The flags that override the file and the environment.
    type Flags: clap::Args + std::fmt::Debug;
    /// The settings struct: its fields are the config keys (see [`crate::settings`]).
    type Config: Serialize + DeserializeOwned + Default;

    /// Layers defaults, the file, the environment and `flags`, and validates.
    fn load(flags: &Self::Flags) -> anyhow::Result<Self::Config>;
    /// The `log_format` key.
    fn log_format(config: &Self::Config) -> LogFormat;
    /// Every metric series the server exposes, without the process ones.
    fn metric_names() -> Vec<String>;
    /// Runs the server until `shutdown` resolves.
    fn run<S>(config: Self::Config, shutdown: S) -> impl Future<Output = anyhow::Result<()>>
    where
        S: Future<Output = ()> + Send + 'static;
}

#[derive(Debug, Parser)]
#[command(version)]
struct Cli<F: clap::Args> {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    flags: F,
    /// Log as JSON lines instead of text (the `log_format = "json"` key).
    #[arg(long, global = true)]
    log_json: bool,
    /// Print every config key with its default as a JSON object, and exit.
    #[arg(long, hide = true)]
    print_config_keys: bool,
    /// Print every metric series the server exposes as a JSON array, and exit.
    #[arg(long, hide = true)]
    print_metric_names: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Exit 0 if the server at ADDR reports SERVING, non-zero otherwise.
    Healthcheck {
        /// host:port of the server (the default is set per server).
        #[arg(default_value = "127.0.0.1:0")]
        addr: String,
    },
}

/// The whole `main` of server `N`: exit 0 after a clean stop, 2 on an invalid configuration,
/// 1 on any other failure.
pub fn main<N: Node>() -> ExitCode {
    let command = Cli::<N::Flags>::command()
        .name(N::NAME)
        .about(N::ABOUT)
        .mut_subcommand("healthcheck", |c| {
            c.about(format!(
                "Exit 0 if the {} at ADDR reports SERVING, non-zero otherwise.",
                N::NOUN
            ))
            .mut_arg("addr", |a| {
                a.default_value(N::HEALTH_ADDR)
                    .help(format!("host:port of the {}.", N::NOUN))
            })
        });
    let cli = match Cli::<N::Flags>::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let name = N::NAME;
    if cli.print_config_keys {
        return print(crate::settings::describe::<N::Config>());
    }
    if cli.print_metric_names {
        let mut names = N::metric_names();
        names.extend(
            crate::metrics::PROCESS_METRICS
                .iter()
                .map(|n| n.to_string()),
        );
        return print(serde_json::to_string_pretty(&names).map_err(Into::into));
    }
    let runtime = match crate::runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{name}: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Healthcheck { addr }) => runtime.block_on(crate::healthcheck(&addr)),
        None => {
            let config = match N::load(&cli.flags) {
                Ok(config) => config,
                Err(err) => {
                    eprintln!("{name}: invalid configuration: {err:#}");
                    return ExitCode::from(2);
                }
            };
            let format = if cli.log_json {
                LogFormat::Json
            } else {
                N::log_format(&config)
            };
            crate::init_logging(format, N::LOG_FILTER);
            match runtime.block_on(N::run(config, crate::shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("{name}: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn print(text: anyhow::Result<String>) -> ExitCode {
    match text {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err:#}");
            ExitCode::FAILURE
        }
    }
}
