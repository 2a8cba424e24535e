//! `tributary-coordinator`: runs a coordinator node, or checks one's health (the scaffold is
//! `tributary_node::cli`).

use std::future::Future;

use tributary_coordinator::{ConfigFlags, CoordinatorConfig};
use tributary_node::LogFormat;

struct Coordinator;

impl tributary_node::cli::Node for Coordinator {
    const NAME: &'static str = "tributary-coordinator";
    const ABOUT: &'static str = "Tributary's Raft-replicated metadata service and controller";
    const NOUN: &'static str = "node";
    const HEALTH_ADDR: &'static str = "127.0.0.1:9191";
    const LOG_FILTER: &'static str = "info,openraft=warn,sled=warn";
    type Flags = ConfigFlags;
    type Config = CoordinatorConfig;

    fn load(flags: &ConfigFlags) -> anyhow::Result<CoordinatorConfig> {
        CoordinatorConfig::load(flags)
    }

    fn log_format(config: &CoordinatorConfig) -> LogFormat {
        config.log_format
    }

    fn metric_names() -> Vec<String> {
        tributary_coordinator::scrape::names()
    }

    fn run<S>(config: CoordinatorConfig, shutdown: S) -> impl Future<Output = anyhow::Result<()>>
    where
        S: Future<Output = ()> + Send + 'static,
    {
        tributary_coordinator::run(config, shutdown)
    }
}

fn main() -> std::process::ExitCode {
    tributary_node::cli::main::<Coordinator>()
}
