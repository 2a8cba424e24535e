//! `tributary-broker`: runs a broker, or checks one's health (the scaffold is
//! `tributary_node::cli`).

use std::future::Future;

use tributary_broker::{BrokerConfig, ConfigFlags};
use tributary_node::LogFormat;

struct Broker;

impl tributary_node::cli::Node for Broker {
    const NAME: &'static str = "tributary-broker";
    const ABOUT: &'static str =
        "Tributary's broker: hosts partition logs and serves producers and consumers";
    const NOUN: &'static str = "broker";
    const HEALTH_ADDR: &'static str = "127.0.0.1:9092";
    const LOG_FILTER: &'static str = "info";
    type Flags = ConfigFlags;
    type Config = BrokerConfig;

    fn load(flags: &ConfigFlags) -> anyhow::Result<BrokerConfig> {
        BrokerConfig::load(flags)
    }

    fn log_format(config: &BrokerConfig) -> LogFormat {
        config.log_format
    }

    fn metric_names() -> Vec<String> {
        tributary_broker::metrics::names()
    }

    fn run<S>(config: BrokerConfig, shutdown: S) -> impl Future<Output = anyhow::Result<()>>
    where
        S: Future<Output = ()> + Send + 'static,
    {
        tributary_broker::run(config, shutdown)
    }
}

fn main() -> std::process::ExitCode {
    tributary_node::cli::main::<Broker>()
}
