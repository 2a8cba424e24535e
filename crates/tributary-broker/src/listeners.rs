//! Kafka's listeners: a broker binds one or more named listeners (`listeners =
//! "INTERNAL://0.0.0.0:19092,EXTERNAL://0.0.0.0:9092"`), registers an advertised address for
//! each (`advertised_listeners`), and serves the same services on all of them.
//!
//! Kafka's rule: a client sees every broker at that broker's address *on the listener its
//! request arrived on*, so clients inside a private network and clients outside it each get
//! addresses they can reach. Brokers replicate over `inter_broker_listener_name`.
//!
//! `listen` and `advertised_address` remain the single-listener shorthand: they define the
//! listener named [`DEFAULT_LISTENER`] (`PLAINTEXT`).

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use tributary_metadata::{Broker, BrokerId, MetadataImage};

/// The listener `listen` / `advertised_address` define (Kafka's default name).
pub const DEFAULT_LISTENER: &str = "PLAINTEXT";

/// One listener the broker binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Its name (`INTERNAL`, `EXTERNAL`, `PLAINTEXT`, ...).
    pub name: String,
    /// The address it binds, e.g. `0.0.0.0:9092`.
    pub bind: SocketAddr,
    /// The `host:port` it is advertised as (registered with the coordinators).
    pub advertised: String,
}

/// The address `broker` advertises on `listener`, if it has that listener.
pub fn broker_address(broker: &Broker, listener: &str) -> Option<String> {
    broker.listeners.get(listener).cloned()
}

/// The address broker `id` advertises on `listener`, from `image` (None: unknown broker, or it
/// has no such listener). Every answer that names a broker's address (Metadata, leader hints,
/// FindCoordinator) uses the listener the request arrived on.
pub fn advertised_address(image: &MetadataImage, id: BrokerId, listener: &str) -> Option<String> {
    image
        .brokers
        .get(&id)
        .and_then(|b| broker_address(b, listener))
}

/// Whether `name` is a valid listener name (letters, digits, `_`, `-`).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `host:port` with a non-empty host and a port.
pub(crate) fn is_host_port(text: &str) -> bool {
    text.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// Parses `NAME://host:port,NAME2://host:port` (`key` names the setting in errors). Names are
/// unique; an empty text is an empty list.
pub fn parse_list(text: &str, key: &str) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((name, address)) = item.split_once("://") else {
            bail!("{key}: `{item}` is not NAME://HOST:PORT");
        };
        if !valid_name(name) {
            bail!(
                "{key}: listener name `{name}` must be letters, digits, `_` or `-` (e.g. INTERNAL)"
            );
        }
        if !is_host_port(address) {
            bail!("{key}: `{address}` (listener {name}) is not HOST:PORT");
        }
        if out.iter().any(|(n, _)| n == name) {
            bail!("{key}: listener {name} is named twice");
        }
        out.push((name.to_owned(), address.to_owned()));
    }
    Ok(out)
}

/// The listeners a broker binds, from its settings.
///
/// - `shorthand`: the `listen` / `advertised_address` pair when it applies (set explicitly, or
///   `listeners` empty): the [`DEFAULT_LISTENER`].
/// - `listeners`, `advertised_listeners`: Kafka's lists. A listener missing from
///   `advertised_listeners` is advertised at its bind address, which must then not be a
///   wildcard (0.0.0.0 or ::) that no client could connect to.
/// - `inter_broker`: `inter_broker_listener_name`; by default `PLAINTEXT` if bound, else the
///   only listener; with several and no `PLAINTEXT` it must be given.
///
/// Returns the listeners (the shorthand first, then `listeners` in order) and the inter-broker
/// listener's name.
pub fn resolve(
    shorthand: Option<(SocketAddr, String)>,
    listeners: &str,
    advertised_listeners: &str,
    inter_broker: Option<&str>,
) -> Result<(Vec<Listener>, String)> {
    let mut out = Vec::new();
    if let Some((bind, advertised)) = shorthand {
        out.push(Listener {
            name: DEFAULT_LISTENER.to_owned(),
            bind,
            advertised,
        });
    }
    let advertised = parse_list(advertised_listeners, "advertised_listeners")?;
    for (name, address) in parse_list(listeners, "listeners")? {
        if out.iter().any(|l: &Listener| l.name == name) {
            bail!(
                "listeners: {name} is already defined by `listen` / `advertised_address`; name this listener differently or drop those two settings"
            );
        }
        let bind: SocketAddr = address.parse().with_context(|| {
            format!("listeners: {name}://{address} must bind an IP address and port, e.g. {name}://0.0.0.0:9092")
        })?;
        let advertised = match advertised.iter().find(|(n, _)| *n == name) {
            Some((_, a)) => a.clone(),
            None if bind.ip().is_unspecified() => bail!(
                "listener {name} binds {bind}, which no client can connect to: give its address in advertised_listeners (e.g. {name}://broker-1:{})",
                bind.port()
            ),
            None => bind.to_string(),
        };
        out.push(Listener {
            name,
            bind,
            advertised,
        });
    }
    for (name, _) in &advertised {
        if !out.iter().any(|l| l.name == *name) {
            bail!("advertised_listeners: {name} is not one of the listeners");
        }
    }
    for (i, l) in out.iter().enumerate() {
        if let Some(other) = out[..i].iter().find(|o| o.bind == l.bind) {
            bail!(
                "listeners {} and {} both bind {}",
                other.name,
                l.name,
                l.bind
            );
        }
    }
    let names = || {
        out.iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let inter_broker = match inter_broker.filter(|n| !n.is_empty()) {
        Some(name) if out.iter().any(|l| l.name == name) => name.to_owned(),
        Some(name) => bail!(
            "inter_broker_listener_name {name} is not one of the listeners ({})",
            names()
        ),
        None if out.iter().any(|l| l.name == DEFAULT_LISTENER) => DEFAULT_LISTENER.to_owned(),
        None if out.len() == 1 => out[0].name.clone(),
        None => bail!(
            "several listeners ({}): set inter_broker_listener_name to the one brokers replicate over",
            names()
        ),
    };
    Ok((out, inter_broker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_kafka_style_listeners() {
        let (listeners, inter) = resolve(
            None,
            "INTERNAL://0.0.0.0:19092, EXTERNAL://0.0.0.0:9092",
            "INTERNAL://broker-1:19092,EXTERNAL://localhost:9092",
            Some("INTERNAL"),
        )
        .unwrap();
        assert_eq!(inter, "INTERNAL");
        assert_eq!(listeners.len(), 2);
        assert_eq!(listeners[0].name, "INTERNAL");
        assert_eq!(listeners[0].bind, "0.0.0.0:19092".parse().unwrap());
        assert_eq!(listeners[0].advertised, "broker-1:19092");
        assert_eq!(listeners[1].advertised, "localhost:9092");

        // The shorthand alone is PLAINTEXT, which is also the inter-broker listener.
        let (listeners, inter) = resolve(
            Some(("127.0.0.1:9500".parse().unwrap(), "localhost:9500".into())),
            "",
            "",
            None,
        )
        .unwrap();
        assert_eq!(inter, "PLAINTEXT");
        assert_eq!(listeners[0].advertised, "localhost:9500");

        // Shorthand plus another listener; a specific bind address advertises itself.
        let (listeners, inter) = resolve(
            Some(("127.0.0.1:9500".parse().unwrap(), "127.0.0.1:9500".into())),
            "EXTERNAL://127.0.0.1:9600",
            "",
            None,
        )
        .unwrap();
        assert_eq!(inter, "PLAINTEXT");
        assert_eq!(listeners[1].advertised, "127.0.0.1:9600");
    }

    #[test]
    fn refuses_what_cannot_work() {
        let err = |l: &str, a: &str, i: Option<&str>| {
            format!("{:#}", resolve(None, l, a, i).unwrap_err())
        };
        assert!(err("INTERNAL://0.0.0.0:1", "", None).contains("no client can connect"));
        assert!(err("A://127.0.0.1:1,B://127.0.0.1:2", "", None).contains("inter_broker"));
        assert!(err("A://127.0.0.1:1", "", Some("B")).contains("not one of the listeners"));
        assert!(err("A://127.0.0.1:1", "B://h:1", None).contains("not one of the listeners"));
        assert!(err("A://127.0.0.1:1,B://127.0.0.1:1", "", Some("A")).contains("both bind"));
        assert!(err("A://127.0.0.1:1,A://127.0.0.1:2", "", None).contains("named twice"));
        assert!(err("A://host:1", "", None).contains("IP address"));
        assert!(err("127.0.0.1:1", "", None).contains("NAME://"));
        assert!(err("A B://127.0.0.1:1", "", None).contains("listener name"));
        let shorthand = Some(("127.0.0.1:1".parse().unwrap(), "h:1".to_owned()));
        let e = format!(
            "{:#}",
            resolve(shorthand, "PLAINTEXT://127.0.0.1:2", "", None).unwrap_err()
        );
        assert!(e.contains("already defined"), "{e}");
    }
}
