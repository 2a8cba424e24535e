//! [`Cluster`]: coordinators (and brokers) started together on free ports under one root
//! directory, and the machine-wide limit on how many clusters run at once.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use super::node::{Node, Stopped, wait_all_serving};
use super::process::{self, free_ports};
use super::spec::{NodeKind, NodeSpec};

/// How many clusters may run at once on this machine, across every test thread and test
/// process (default [`DEFAULT_CONCURRENT_CLUSTERS`]).
pub const CLUSTERS_ENV: &str = "TRIBUTARY_TEST_CLUSTERS";

/// Set to `1` to keep every cluster's directory (it is always kept when a test panics).
pub const KEEP_DIRS_ENV: &str = "TRIBUTARY_KEEP_TEST_DIRS";

/// One cluster at a time: three Raft nodes plus the test on two cores is already enough to make
/// election timeouts and health waits misfire if another cluster competes for the CPU.
pub const DEFAULT_CONCURRENT_CLUSTERS: usize = 1;

/// How long [`ClusterPermit::acquire`] waits for a slot before failing.
pub const PERMIT_WAIT: Duration = Duration::from_secs(20 * 60);

/// How often a cluster start picks new ports when a node could not bind its own.
const PORT_ATTEMPTS: u32 = 3;

/// A slot to run one cluster: an exclusive `flock` on one of `$TRIBUTARY_TEST_CLUSTERS` lock
/// files in `<temp dir>/tributary-test-clusters/`, held until dropped.
///
/// Why a file lock and not a static semaphore: `cargo test` runs the tests of one binary on
/// several threads, but test runners such as nextest run every test in a process of its own,
/// and several test binaries may run at once; a lock file limits them all. The kernel drops the
/// lock when its holder dies, so a crashed test never blocks the next one. [`Cluster`] takes a
/// permit before it picks ports and keeps it until its processes are killed, so the timeouts a
/// test sets start counting only once it has the machine.
#[derive(Debug)]
pub struct ClusterPermit {
    _lock: File,
    slot: usize,
}

impl ClusterPermit {
    /// Waits (at most [`PERMIT_WAIT`]) for one of the machine's cluster slots.
    pub fn acquire() -> Result<ClusterPermit> {
        let slots = match std::env::var(CLUSTERS_ENV) {
            Ok(value) => value
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .with_context(|| format!("{CLUSTERS_ENV}={value:?}: expected a count >= 1"))?,
            Err(_) => DEFAULT_CONCURRENT_CLUSTERS,
        };
        let dir = std::env::temp_dir().join("tributary-test-clusters");
        Self::acquire_in(&dir, slots, PERMIT_WAIT)
    }

    /// Waits at most `wait` for one of `slots` lock files in `dir`.
    pub fn acquire_in(dir: &Path, slots: usize, wait: Duration) -> Result<ClusterPermit> {
        use rustix::fs::{FlockOperation, flock};
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let deadline = Instant::now() + wait;
        let mut interval = Duration::from_millis(5);
        loop {
            for slot in 0..slots {
                let path = dir.join(format!("slot-{slot}.lock"));
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                    Ok(()) => return Ok(ClusterPermit { _lock: file, slot }),
                    Err(rustix::io::Errno::WOULDBLOCK) => {}
                    Err(err) => {
                        return Err(err).with_context(|| format!("locking {}", path.display()));
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "no cluster slot free after {wait:?}: {slots} lock(s) in {} are held by \
                     other tests (a hung test? more slots: {CLUSTERS_ENV}=N)",
                    dir.display()
                );
            }
            thread::sleep(interval.min(deadline - now));
            interval = (interval * 2).min(Duration::from_millis(100));
        }
    }

    /// Which slot this permit holds.
    pub fn slot(&self) -> usize {
        self.slot
    }
}

/// How to start a [`Cluster`]: `Cluster::builder().coordinators(3).start()?`.
#[derive(Debug)]
pub struct ClusterBuilder {
    counts: HashMap<NodeKind, usize>,
    root: Option<PathBuf>,
    bin_dir: Option<PathBuf>,
    programs: HashMap<NodeKind, PathBuf>,
    args: HashMap<NodeKind, Vec<OsString>>,
    configs: HashMap<NodeKind, String>,
    node_configs: HashMap<(NodeKind, u64), String>,
    env: Vec<(OsString, OsString)>,
    start_timeout: Duration,
    metrics: bool,
    coordinator_route: Option<CoordinatorRoute>,
}

/// Which coordinator addresses a broker is given: from the broker's id and the coordinators'
/// `(id, address)` pairs (see [`ClusterBuilder::route_coordinators`]).
type RouteFn = dyn Fn(u64, &[(u64, String)]) -> Vec<(u64, String)> + Send + Sync;

struct CoordinatorRoute(Box<RouteFn>);

impl std::fmt::Debug for CoordinatorRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CoordinatorRoute")
    }
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        Self {
            counts: HashMap::from([(NodeKind::Coordinator, 3)]),
            root: None,
            bin_dir: None,
            programs: HashMap::new(),
            args: HashMap::new(),
            configs: HashMap::new(),
            node_configs: HashMap::new(),
            env: Vec::new(),
            start_timeout: Duration::from_secs(60),
            metrics: false,
            coordinator_route: None,
        }
    }
}

impl ClusterBuilder {
    /// How many coordinators (default 3), ids 101, 102, ...
    pub fn coordinators(self, count: usize) -> Self {
        self.nodes(NodeKind::Coordinator, count)
    }

    /// How many brokers (default 0), ids 1, 2, ..., started once every coordinator serves.
    pub fn brokers(self, count: usize) -> Self {
        self.nodes(NodeKind::Broker, count)
    }

    /// How many nodes of `kind`.
    pub fn nodes(mut self, kind: NodeKind, count: usize) -> Self {
        self.counts.insert(kind, count);
        self
    }

    /// Puts the nodes' directories under `root` (kept afterwards) instead of a temporary
    /// directory (removed afterwards unless a test panicked or `$TRIBUTARY_KEEP_TEST_DIRS=1`).
    pub fn root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = Some(root.into());
        self
    }

    /// Takes the binaries from `dir` instead of [`process::bin_dir`].
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// Runs `program` for nodes of `kind` instead of the kind's binary.
    pub fn program(mut self, kind: NodeKind, program: impl Into<PathBuf>) -> Self {
        self.programs.insert(kind, program.into());
        self
    }

    /// Adds a flag (or a value) to every node of `kind`'s command line.
    pub fn arg(mut self, kind: NodeKind, arg: impl Into<OsString>) -> Self {
        self.args.entry(kind).or_default().push(arg.into());
        self
    }

    /// Gives every node of `kind` this TOML config (as `--config`; the harness's flags win over
    /// it).
    pub fn config(mut self, kind: NodeKind, toml: impl Into<String>) -> Self {
        self.configs.insert(kind, toml.into());
        self
    }

    /// Adds TOML lines for node `id` of `kind` only, after the kind's [`ClusterBuilder::config`]
    /// (keys must not repeat between the two).
    pub fn node_config(mut self, kind: NodeKind, id: u64, toml: impl Into<String>) -> Self {
        self.node_configs.insert((kind, id), toml.into());
        self
    }

    /// Decides which coordinator addresses each broker is given (`--coordinators`): `route` gets
    /// the broker's id and the coordinators' `(id, address)` pairs once they serve, and returns
    /// the pairs for that broker; a fault-injecting proxy in front of each link is the use
    /// (the chaos suite cuts one broker off from the coordinators that way).
    pub fn route_coordinators(
        mut self,
        route: impl Fn(u64, &[(u64, String)]) -> Vec<(u64, String)> + Send + Sync + 'static,
    ) -> Self {
        self.coordinator_route = Some(CoordinatorRoute(Box::new(route)));
        self
    }

    /// Sets an environment variable for every node.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Gives every node a Prometheus endpoint on a free port (`--metrics-listen`; see
    /// [`Node::metrics_addr`]).
    pub fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// How long the start may take, all nodes together (default 60 s), counted from when the
    /// cluster has its [`ClusterPermit`].
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Takes a [`ClusterPermit`], then starts the coordinators and waits until every one serves,
    /// then the brokers likewise. If a node exits because another process took its port, that
    /// kind's nodes are started again on new ports (with fresh data directories), up to three
    /// times. On failure every process started is killed and the error names the node, with the
    /// tail of its log.
    pub fn start(self) -> Result<Cluster> {
        let permit = ClusterPermit::acquire()?;
        let (root, tempdir) = match &self.root {
            Some(root) => {
                std::fs::create_dir_all(root)
                    .with_context(|| format!("creating {}", root.display()))?;
                (std::path::absolute(root)?, None)
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("tributary-cluster-")
                    .tempdir()
                    .context("creating the cluster's directory")?;
                (dir.path().to_path_buf(), Some(dir))
            }
        };
        // From here on an error drops `cluster`, which kills whatever was started.
        let mut cluster = Cluster {
            nodes: Vec::new(),
            root,
            tempdir,
            _permit: permit,
        };
        let deadline = Instant::now() + self.start_timeout;
        for kind in NodeKind::ALL {
            let count = self.counts.get(&kind).copied().unwrap_or(0);
            if count > 0 {
                cluster.start_kind(&self, kind, count, deadline)?;
            }
        }
        Ok(cluster)
    }

    fn program_for(&self, kind: NodeKind) -> Result<PathBuf> {
        if let Some(program) = self.programs.get(&kind) {
            return Ok(program.clone());
        }
        let dir = match &self.bin_dir {
            Some(dir) => dir.clone(),
            None => process::bin_dir().context("finding the directory of the node binaries")?,
        };
        Ok(dir.join(kind.binary_name()))
    }
}

/// Nodes started together, each in `<root>/<name>/` (see [`NodeSpec`] for what is there), all
/// on 127.0.0.1.
///
/// Dropping a `Cluster` kills every process it started (SIGKILL, then reaped), panicking test or
/// not, then removes its temporary root unless the test panicked or `$TRIBUTARY_KEEP_TEST_DIRS`
/// is `1` (the path is printed when it is kept). It holds a [`ClusterPermit`] all its life.
#[derive(Debug)]
pub struct Cluster {
    nodes: Vec<Node>,
    root: PathBuf,
    tempdir: Option<TempDir>,
    _permit: ClusterPermit,
}

impl Cluster {
    /// How to start one.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// `coordinators` coordinators from the binaries in [`process::bin_dir`], serving.
    pub fn start(coordinators: usize) -> Result<Cluster> {
        Cluster::builder().coordinators(coordinators).start()
    }

    fn start_kind(
        &mut self,
        builder: &ClusterBuilder,
        kind: NodeKind,
        count: usize,
        deadline: Instant,
    ) -> Result<()> {
        let program = builder.program_for(kind)?;
        for attempt in 1..=PORT_ATTEMPTS {
            let ports = free_ports(count).context("picking free ports")?;
            let mut metrics_ports = if builder.metrics {
                free_ports(count).context("picking free ports")?
            } else {
                Vec::new()
            };
            let ids = (0..count as u64).map(|i| kind.first_id() + i);
            let addrs: Vec<(u64, SocketAddr)> = ids
                .zip(ports)
                .map(|(id, port)| (id, SocketAddr::from((Ipv4Addr::LOCALHOST, port))))
                .collect();
            let coordinators = match kind {
                NodeKind::Coordinator => addrs
                    .iter()
                    .map(|(id, addr)| (*id, addr.to_string()))
                    .collect(),
                NodeKind::Broker => self.coordinator_members(),
            };
            let first = self.nodes.len();
            for (id, listen) in &addrs {
                let mut spec = NodeSpec::new(
                    kind,
                    *id,
                    &program,
                    self.root.join(kind.node_name(*id)),
                    *listen,
                );
                spec.coordinators = match (kind, &builder.coordinator_route) {
                    (NodeKind::Broker, Some(route)) => (route.0)(*id, &coordinators),
                    _ => coordinators.clone(),
                };
                spec.config = match (
                    builder.configs.get(&kind),
                    builder.node_configs.get(&(kind, *id)),
                ) {
                    (None, None) => None,
                    (common, own) => Some(format!(
                        "{}\n{}",
                        common.map_or("", String::as_str),
                        own.map_or("", String::as_str)
                    )),
                };
                spec.extra_args = builder.args.get(&kind).cloned().unwrap_or_default();
                spec.metrics_listen = metrics_ports
                    .pop()
                    .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)));
                spec.env.clone_from(&builder.env);
                self.nodes.push(Node::start(spec)?);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let err = match wait_all_serving(&mut self.nodes[first..], remaining) {
                Ok(()) => return Ok(()),
                Err(err) => err,
            };
            let collided = self.nodes[first..].iter_mut().any(Node::failed_to_bind);
            if !collided || attempt == PORT_ATTEMPTS {
                return Err(err.context(format!(
                    "starting {count} {kind}(s) in {} (attempt {attempt})",
                    self.root.display()
                )));
            }
            eprintln!(
                "harness: a {kind} could not bind its port (attempt {attempt} of \
                 {PORT_ATTEMPTS}); starting the {kind}s again on new ports"
            );
            for node in self.nodes.drain(first..) {
                let data = node.data_dir();
                drop(node); // kills it
                match std::fs::remove_dir_all(&data) {
                    Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                        return Err(err).with_context(|| format!("removing {}", data.display()));
                    }
                    _ => {}
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    /// The root directory of the nodes' directories.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every node, coordinators first, by id.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Every node, coordinators first, by id.
    pub fn nodes_mut(&mut self) -> &mut [Node] {
        &mut self.nodes
    }

    /// The node of `kind` with `id`, if the cluster has it.
    pub fn get(&mut self, kind: NodeKind, id: u64) -> Option<&mut Node> {
        self.nodes
            .iter_mut()
            .find(|node| node.kind() == kind && node.id() == id)
    }

    /// The node of `kind` with `id`. Panics (naming it) if the cluster has no such node.
    pub fn node(&mut self, kind: NodeKind, id: u64) -> &mut Node {
        let root = self.root.display().to_string();
        self.get(kind, id)
            .unwrap_or_else(|| panic!("the cluster in {root} has no {}", kind.node_name(id)))
    }

    /// Coordinator `id` (101, 102, ...). Panics if there is none.
    pub fn coordinator(&mut self, id: u64) -> &mut Node {
        self.node(NodeKind::Coordinator, id)
    }

    /// Broker `id` (1, 2, ...). Panics if there is none.
    pub fn broker(&mut self, id: u64) -> &mut Node {
        self.node(NodeKind::Broker, id)
    }

    /// The nodes of `kind`.
    pub fn of_kind(&mut self, kind: NodeKind) -> impl Iterator<Item = &mut Node> {
        self.nodes
            .iter_mut()
            .filter(move |node| node.kind() == kind)
    }

    /// The coordinators as `(id, "127.0.0.1:port")`.
    pub fn coordinator_members(&self) -> Vec<(u64, String)> {
        self.nodes
            .iter()
            .filter(|node| node.kind() == NodeKind::Coordinator)
            .map(|node| (node.id(), node.addr().to_string()))
            .collect()
    }

    /// The coordinators' addresses, `127.0.0.1:port,...`, as clients and brokers take them.
    pub fn coordinator_addresses(&self) -> String {
        let addrs: Vec<String> = self
            .coordinator_members()
            .into_iter()
            .map(|(_, addr)| addr)
            .collect();
        addrs.join(",")
    }

    /// Waits until every node serves, `timeout` in all (see [`wait_all_serving`]). A node that
    /// is not running (killed and not restarted) fails it at once.
    pub fn wait_serving(&mut self, timeout: Duration) -> Result<()> {
        wait_all_serving(&mut self.nodes, timeout)
    }

    /// Stops every node: SIGTERM to all, then SIGKILL to those still running after `grace`.
    /// Returns how each went, in [`Cluster::nodes`] order.
    pub fn stop(&mut self, grace: Duration) -> Result<Vec<Stopped>> {
        stop_all(&mut self.nodes, grace)
    }
}

/// Stops `nodes` together: SIGTERM to every one, then waits at most `grace` in all, then SIGKILL
/// to those still running.
pub fn stop_all<'a>(
    nodes: impl IntoIterator<Item = &'a mut Node>,
    grace: Duration,
) -> Result<Vec<Stopped>> {
    let mut nodes: Vec<&mut Node> = nodes.into_iter().collect();
    let was_running: Vec<bool> = nodes.iter_mut().map(|node| node.is_running()).collect();
    for node in nodes.iter_mut() {
        node.begin_stop()?;
    }
    let deadline = Instant::now() + grace;
    nodes
        .iter_mut()
        .zip(was_running)
        .map(|(node, was_running)| match node.finish_stop(deadline)? {
            Stopped::AlreadyDown if was_running => Ok(Stopped::Terminated),
            stopped => Ok(stopped),
        })
        .collect()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Kill every process before its directory goes.
        self.nodes.clear();
        if let Some(dir) = self.tempdir.take() {
            let keep = std::env::var(KEEP_DIRS_ENV).is_ok_and(|v| v == "1");
            if thread::panicking() || keep {
                eprintln!(
                    "harness: kept the cluster's directory (logs and data): {}",
                    dir.keep().display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_limited_to_the_slots() {
        let dir = tempfile::tempdir().unwrap();
        let short = Duration::from_millis(50);
        let a = ClusterPermit::acquire_in(dir.path(), 2, short).unwrap();
        let b = ClusterPermit::acquire_in(dir.path(), 2, short).unwrap();
        assert_ne!(a.slot(), b.slot());
        let err = ClusterPermit::acquire_in(dir.path(), 2, short).unwrap_err();
        assert!(err.to_string().contains("no cluster slot free"), "{err:#}");
        drop(a);
        let c = ClusterPermit::acquire_in(dir.path(), 2, short).unwrap();
        assert_ne!(c.slot(), b.slot());
    }

    #[test]
    fn a_waiting_permit_gets_the_slot_when_it_is_freed() {
        let dir = tempfile::tempdir().unwrap();
        let held = ClusterPermit::acquire_in(dir.path(), 1, Duration::ZERO).unwrap();
        let path = dir.path().to_path_buf();
        let waiter = thread::spawn(move || {
            ClusterPermit::acquire_in(&path, 1, Duration::from_secs(60)).map(|p| p.slot())
        });
        drop(held);
        assert_eq!(waiter.join().unwrap().unwrap(), 0);
    }
}
