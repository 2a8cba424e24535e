//! The fault-injecting proxy of process mode: every broker-to-broker link (follower `j`
//! fetching from leader `i`) and every broker-to-coordinator link (broker `b` heartbeating,
//! following the metadata and proposing ISR changes to coordinator `c`) goes through a proxy of
//! its own, so one link can be cut, or made one-way, without touching the others.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::{Context, Result};

/// What a link between two brokers does to the bytes of its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Everything passes.
    Up,
    /// Connections are dropped and new ones refused: a partition.
    Cut,
    /// Requests pass but the answers stall (nothing is read from the leader's side, as when
    /// one direction's packets are lost and TCP retransmits in vain): a one-way partition.
    OneWay,
}

/// The links `follower -> leader` (follower `j` fetches from leader `i` through a proxy of its
/// own) and `broker -> coordinator`, each with its state; the first id is the side that
/// connects.
pub struct Network {
    links: BTreeMap<(u64, u64), tokio::sync::watch::Sender<LinkState>>,
}

impl Network {
    /// Sets the link `from -> to`.
    pub fn set(&self, from: u64, to: u64, state: LinkState) {
        if let Some(link) = self.links.get(&(from, to)) {
            link.send_replace(state);
        }
    }

    /// Every link back up.
    pub fn heal(&self) {
        for link in self.links.values() {
            link.send_replace(LinkState::Up);
        }
    }
}

/// Accepts on `listener` and relays each connection to `target` (once known), obeying `state`.
async fn proxy(
    listener: tokio::net::TcpListener,
    target: tokio::sync::watch::Receiver<Option<std::net::SocketAddr>>,
    state: tokio::sync::watch::Receiver<LinkState>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        if *state.borrow() == LinkState::Cut {
            drop(inbound);
            continue;
        }
        let mut state = state.clone();
        let mut target = target.clone();
        tokio::spawn(async move {
            // The coordinators' addresses are set once they serve, before any broker starts.
            let known = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                target.wait_for(Option::is_some),
            )
            .await;
            let Some(to) = known.ok().and_then(|t| t.ok()).and_then(|t| *t) else {
                return;
            };
            let Ok(outbound) = tokio::net::TcpStream::connect(to).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (from_client, to_client) = inbound.into_split();
            let (from_server, to_server) = outbound.into_split();
            let requests = relay(from_client, to_server, state.clone(), false);
            let answers = relay(from_server, to_client, state.clone(), true);
            tokio::select! {
                _ = requests => {}
                _ = answers => {}
                _ = state.wait_for(|s| *s == LinkState::Cut) => {}
            }
        });
    }
}

/// Copies `from` to `to`; the answers direction stalls while the link is one-way.
async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: tokio::sync::watch::Receiver<LinkState>,
    answers: bool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if answers && state.wait_for(|s| *s != LinkState::OneWay).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if answers && *state.borrow() == LinkState::OneWay {
            // Read before the stall began: hold it until the link comes back.
            if state.wait_for(|s| *s != LinkState::OneWay).await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Picks the ports of the broker-to-broker links, starts their proxies, and returns the network
/// and each broker's extra config: listeners `R1`, `R2`, `R3` (follower `j` fetches over `Rj`,
/// advertised at the proxy of link `j -> i`) and `inter_broker_listener_name = "R<i>"`.
pub async fn network(
    brokers: u64,
    coordinators: &[u64],
) -> Result<(Network, BTreeMap<u64, String>, CoordinatorRoute)> {
    let n = brokers as usize;
    // All at once, so no two links share a port (a port bound later by the OS's choice
    // could be one picked here for a broker's listener, which binds only when it starts).
    let ports = tributary_tests::harness::free_ports(2 * n * n + n * coordinators.len())?;
    let mut ports = ports.into_iter();
    let mut links = BTreeMap::new();
    let mut configs = BTreeMap::new();
    for leader in 1..=brokers {
        let mut listeners = Vec::new();
        let mut advertised = Vec::new();
        for follower in 1..=brokers {
            let bind = std::net::SocketAddr::from(([127, 0, 0, 1], ports.next().context("port")?));
            listeners.push(format!("R{follower}://{bind}"));
            if follower == leader {
                continue;
            }
            let via = std::net::SocketAddr::from(([127, 0, 0, 1], ports.next().context("port")?));
            let listener = tokio::net::TcpListener::bind(via).await.with_context(|| {
                format!("binding the proxy of link {follower} -> {leader} on {via}")
            })?;
            let (tx, rx) = tokio::sync::watch::channel(LinkState::Up);
            let (_, target) = tokio::sync::watch::channel(Some(bind));
            tokio::spawn(proxy(listener, target, rx));
            links.insert((follower, leader), tx);
            advertised.push(format!("R{follower}://{via}"));
        }
        configs.insert(
            leader,
            format!(
                "listeners = \"{}\"\nadvertised_listeners = \"{}\"\ninter_broker_listener_name = \"R{leader}\"\n",
                listeners.join(","),
                advertised.join(",")
            ),
        );
    }
    // Broker -> coordinator: a proxy per pair, aimed once the harness knows where the
    // coordinators listen.
    let mut route = BTreeMap::new();
    for broker in 1..=brokers {
        for &coordinator in coordinators {
            let via = std::net::SocketAddr::from(([127, 0, 0, 1], ports.next().context("port")?));
            let listener = tokio::net::TcpListener::bind(via).await.with_context(|| {
                format!("binding the proxy of link {broker} -> coordinator {coordinator} on {via}")
            })?;
            let (tx, rx) = tokio::sync::watch::channel(LinkState::Up);
            let (aim, target) = tokio::sync::watch::channel(None);
            tokio::spawn(proxy(listener, target, rx));
            links.insert((broker, coordinator), tx);
            route.insert((broker, coordinator), (via, aim));
        }
    }
    Ok((Network { links }, configs, CoordinatorRoute(route)))
}

/// The proxies of the broker-to-coordinator links, by (broker, coordinator): where each
/// listens, and how to aim it at the coordinator.
pub struct CoordinatorRoute(BTreeMap<(u64, u64), (SocketAddr, Aim)>);

/// Sets where a proxy relays to.
type Aim = tokio::sync::watch::Sender<Option<SocketAddr>>;

impl CoordinatorRoute {
    /// For the harness ([`tributary_tests::harness::ClusterBuilder::route_coordinators`]):
    /// aims `broker`'s proxies at the coordinators and gives the broker the proxies instead.
    pub fn route(&self, broker: u64, coordinators: &[(u64, String)]) -> Vec<(u64, String)> {
        coordinators
            .iter()
            .map(|(id, addr)| match self.0.get(&(broker, *id)) {
                Some((via, aim)) => {
                    aim.send_replace(addr.parse().ok());
                    (*id, via.to_string())
                }
                None => (*id, addr.clone()),
            })
            .collect()
    }
}
