//! Where the cluster runs and how faults reach it.
//!
//! - [`Backend::Process`]: the harness's processes on loopback; kill -9, SIGSTOP/SIGCONT and
//!   restarts act on the processes, network faults on the proxies of [`crate::proxy`] (one per
//!   broker-to-broker and per broker-to-coordinator link).
//! - [`Backend::Docker`]: `deploy/docker-compose.yml` (3 coordinators, 3 brokers on a private
//!   network); `docker kill`/`start`/`pause`, and network faults as iptables rules applied from
//!   the host inside each container's network namespace (`nsenter`), which can also cut one
//!   direction only. The images must exist (`cargo xtask docker-build`).
//!
//! Every operation blocks its caller's thread (inside `block_in_place`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tributary_tests::harness::{Cluster, NodeKind};

use crate::proxy::{LinkState, Network};
use crate::{Rng, blocking, lock};

/// A node of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    /// Broker 1, 2 or 3.
    Broker(u64),
    /// Coordinator 101, 102 or 103.
    Coordinator(u64),
}

/// The cluster under test.
pub enum Backend {
    /// Processes on loopback.
    Process {
        cluster: Arc<Mutex<Cluster>>,
        net: Network,
        /// Each broker's data directory on a small file system of its own, where mounting one
        /// is possible (root): the disk-full fault fills it. Dropped after the cluster.
        disks: BTreeMap<u64, Tmpfs>,
    },
    /// The Compose cluster.
    Docker(Compose),
}

impl Backend {
    /// Starts 3 coordinators and 3 brokers as processes under `root`, with every
    /// broker-to-broker and broker-to-coordinator link through a proxy; `broker_config` is
    /// added to every broker's.
    pub async fn process(
        root: &Path,
        coordinator_config: &str,
        broker_config: &str,
    ) -> Result<Self> {
        let (net, link_configs, route) = crate::proxy::network(3, &[101, 102, 103]).await?;
        let mut disks = BTreeMap::new();
        for id in 1..=3 {
            let data = root.join(NodeKind::Broker.node_name(id)).join("data");
            std::fs::create_dir_all(&data)
                .with_context(|| format!("creating {}", data.display()))?;
            match Tmpfs::mount(&data, DISK_BYTES) {
                Some(disk) => {
                    disks.insert(id, disk);
                }
                None => {
                    println!(
                        "chaos: cannot mount a tmpfs here (not root?): the disk-full fault will be skipped"
                    );
                    break;
                }
            }
        }
        let mut builder = Cluster::builder()
            .route_coordinators(move |broker, coordinators| route.route(broker, coordinators));
        for (id, config) in link_configs {
            builder = builder.node_config(NodeKind::Broker, id, config);
        }
        let cluster = builder
            .coordinators(3)
            .brokers(3)
            .root(root)
            .config(NodeKind::Coordinator, coordinator_config)
            .config(NodeKind::Broker, broker_config)
            .start()?;
        Ok(Backend::Process {
            cluster: Arc::new(Mutex::new(cluster)),
            net,
            disks,
        })
    }

    /// Brings the Compose cluster up (project `tributary-chaos`, free host ports, the chaos
    /// settings as an override file in `out`) and waits until every container is healthy.
    pub fn docker(
        out: &Path,
        coordinator_env: &[(String, String)],
        broker_env: &[(String, String)],
    ) -> Result<Self> {
        blocking(|| Compose::up(out, coordinator_env, broker_env)).map(Backend::Docker)
    }

    /// `host:port,...` of the brokers for clients.
    pub fn bootstrap(&self) -> String {
        match self {
            Backend::Process { cluster, .. } => lock(cluster)
                .of_kind(NodeKind::Broker)
                .map(|n| n.addr().to_string())
                .collect::<Vec<_>>()
                .join(","),
            Backend::Docker(c) => (1..=3)
                .map(|i| format!("127.0.0.1:{}", c.port(&format!("BROKER_{i}_PORT"))))
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// kill -9.
    pub fn kill(&self, node: Node) -> Result<()> {
        blocking(|| match self {
            Backend::Process { cluster, .. } => with_node(cluster, node, |n| n.kill_9()),
            Backend::Docker(c) => c
                .docker(&["kill", "--signal", "KILL", &c.container(node)?])
                .map(drop),
        })
    }

    /// Starts a killed node again (same data, same address).
    pub fn start(&self, node: Node) -> Result<()> {
        blocking(|| match self {
            Backend::Process { cluster, .. } => with_node(cluster, node, |n| n.restart()),
            Backend::Docker(c) => c.docker(&["start", &c.container(node)?]).map(drop),
        })
    }

    /// SIGSTOP (the cgroup freezer in Docker).
    pub fn pause(&self, broker: u64) -> Result<()> {
        blocking(|| match self {
            Backend::Process { cluster, .. } => lock(cluster).broker(broker).pause(),
            Backend::Docker(c) => c
                .docker(&["pause", &c.container(Node::Broker(broker))?])
                .map(drop),
        })
    }

    /// SIGCONT.
    pub fn resume(&self, broker: u64) -> Result<()> {
        blocking(|| match self {
            Backend::Process { cluster, .. } => lock(cluster).broker(broker).resume(),
            Backend::Docker(c) => c
                .docker(&["unpause", &c.container(Node::Broker(broker))?])
                .map(drop),
        })
    }

    /// SIGTERM (a controlled shutdown), start again, wait until it serves.
    pub fn restart_gracefully(&self, broker: u64) -> Result<()> {
        blocking(|| match self {
            Backend::Process { cluster, .. } => {
                let mut c = lock(cluster);
                let node = c.broker(broker);
                node.stop(Duration::from_secs(30))?;
                node.restart()?;
                node.wait_serving(Duration::from_secs(60))
            }
            Backend::Docker(c) => {
                c.docker(&[
                    "restart",
                    "--time",
                    "45",
                    &c.container(Node::Broker(broker))?,
                ])?;
                c.wait_healthy(Duration::from_secs(120))
            }
        })
    }

    /// Waits until `node` serves again.
    pub fn wait_serving(&self, node: Node) -> Result<()> {
        blocking(|| match self {
            Backend::Process { cluster, .. } => {
                with_node(cluster, node, |n| n.wait_serving(Duration::from_secs(60)))
            }
            Backend::Docker(c) => c.wait_healthy(Duration::from_secs(120)),
        })
    }

    /// Kills `broker`, damages the tail of one of its `topic` segments, starts it again.
    pub fn tear(&self, broker: u64, topic: &str, partitions: i32, rng: &mut Rng) -> Result<String> {
        blocking(|| match self {
            Backend::Process { cluster, .. } => {
                let mut c = lock(cluster);
                let node = c.broker(broker);
                node.kill_9()?;
                let detail = crate::tear(&node.data_dir(), topic, partitions, rng)?;
                node.restart()?;
                Ok(detail)
            }
            Backend::Docker(_) => bail!("torn writes need process mode"),
        })
    }

    /// Cuts every link between a broker of `a` and one of `b`, both ways.
    pub fn isolate(&self, a: &[u64], b: &[u64]) -> Result<()> {
        blocking(|| {
            for x in a {
                for y in b {
                    match self {
                        Backend::Process { net, .. } => {
                            net.set(*x, *y, LinkState::Cut);
                            net.set(*y, *x, LinkState::Cut);
                        }
                        Backend::Docker(c) => {
                            c.drop_from(Node::Broker(*x), Node::Broker(*y))?;
                            c.drop_from(Node::Broker(*y), Node::Broker(*x))?;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// Fills `broker`'s data file system to the last byte (a file of zeros beside its logs);
    /// returns the bytes written, or `None` where the data directory has no file system of its
    /// own (docker mode, or no tmpfs could be mounted).
    pub fn fill_disk(&self, broker: u64) -> Result<Option<u64>> {
        blocking(|| match self {
            Backend::Process { disks, .. } => match disks.get(&broker) {
                Some(disk) => disk.fill().map(Some),
                None => Ok(None),
            },
            Backend::Docker(_) => Ok(None),
        })
    }

    /// Removes what [`Backend::fill_disk`] wrote.
    pub fn free_disk(&self, broker: u64) -> Result<()> {
        blocking(|| match self {
            Backend::Process { disks, .. } => disks.get(&broker).map_or(Ok(()), Tmpfs::free),
            Backend::Docker(_) => Ok(()),
        })
    }

    /// Cuts `broker` off from every coordinator, both ways; with `answers_only`, only what the
    /// coordinators send it is lost (its heartbeats still arrive).
    pub fn cut_from_coordinators(&self, broker: u64, answers_only: bool) -> Result<()> {
        blocking(|| {
            for coordinator in 101..=103 {
                match self {
                    Backend::Process { net, .. } => {
                        let state = if answers_only {
                            LinkState::OneWay
                        } else {
                            LinkState::Cut
                        };
                        net.set(broker, coordinator, state);
                    }
                    Backend::Docker(c) => {
                        c.drop_from(Node::Broker(broker), Node::Coordinator(coordinator))?;
                        if !answers_only {
                            c.drop_from(Node::Coordinator(coordinator), Node::Broker(broker))?;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// What `leader` sends `follower` is lost; the follower's requests still arrive.
    pub fn stall_answers(&self, leader: u64, follower: u64) -> Result<()> {
        blocking(|| match self {
            Backend::Process { net, .. } => {
                net.set(follower, leader, LinkState::OneWay);
                Ok(())
            }
            Backend::Docker(c) => c.drop_from(Node::Broker(follower), Node::Broker(leader)),
        })
    }

    /// Every link back.
    pub fn heal_network(&self) -> Result<()> {
        blocking(|| match self {
            Backend::Process { net, .. } => {
                net.heal();
                Ok(())
            }
            Backend::Docker(c) => c.flush_rules(),
        })
    }

    /// Everything runs again and serves: network healed, paused nodes resumed, dead ones
    /// started.
    pub fn heal_all(&self) -> Result<()> {
        self.heal_network()?;
        blocking(|| match self {
            Backend::Process { cluster, .. } => {
                let mut c = lock(cluster);
                for node in c.nodes_mut() {
                    if node.is_paused() {
                        node.resume()?;
                    }
                    if !node.is_running() {
                        node.restart()?;
                    }
                }
                c.wait_serving(Duration::from_secs(60))
            }
            Backend::Docker(c) => {
                for node in ALL_NODES {
                    let id = c.container(node)?;
                    let state = c.docker(&["inspect", "--format", "{{.State.Status}}", &id])?;
                    match state.trim() {
                        "paused" => c.docker(&["unpause", &id]).map(drop)?,
                        "exited" | "created" | "dead" => c.docker(&["start", &id]).map(drop)?,
                        _ => {}
                    }
                }
                c.wait_healthy(Duration::from_secs(120))
            }
        })
    }

    /// The lines of every broker's log (all its runs) that contain `needle`.
    pub fn broker_log_lines(&self, needle: &str) -> Result<Vec<String>> {
        blocking(|| {
            let mut found = Vec::new();
            for id in 1..=3 {
                let text = match self {
                    Backend::Process { cluster, .. } => {
                        let path = lock(cluster).broker(id).log_path();
                        std::fs::read(&path)
                            .with_context(|| format!("reading {}", path.display()))?
                    }
                    Backend::Docker(c) => {
                        let container = c.container(Node::Broker(id))?;
                        let out = Command::new("docker").args(["logs", &container]).output()?;
                        [out.stdout, out.stderr].concat()
                    }
                };
                found.extend(
                    String::from_utf8_lossy(&text)
                        .lines()
                        .filter(|l| l.contains(needle))
                        .map(|l| format!("broker {id}: {l}")),
                );
            }
            Ok(found)
        })
    }

    /// Stops the brokers and returns each broker's data directory (for comparing replicas).
    pub fn stop_brokers(&self, out: &Path) -> Result<BTreeMap<u64, PathBuf>> {
        blocking(|| match self {
            Backend::Process { cluster, .. } => {
                let mut c = lock(cluster);
                let mut dirs = BTreeMap::new();
                for id in 1..=3 {
                    let node = c.broker(id);
                    node.stop(Duration::from_secs(30))?;
                    dirs.insert(id, node.data_dir());
                }
                Ok(dirs)
            }
            Backend::Docker(c) => {
                let mut dirs = BTreeMap::new();
                for id in 1..=3 {
                    let container = c.container(Node::Broker(id))?;
                    c.docker(&["stop", "--time", "45", &container])?;
                    let dir = out.join("docker-data").join(format!("broker-{id}"));
                    std::fs::create_dir_all(&dir)?;
                    c.docker(&[
                        "cp",
                        &format!("{container}:/var/lib/tributary/."),
                        &dir.display().to_string(),
                    ])?;
                    dirs.insert(id, dir);
                }
                Ok(dirs)
            }
        })
    }
}

/// The size of each broker's data file system in process mode: far more than a run writes.
const DISK_BYTES: u64 = 256 << 20;

/// A tmpfs mounted on a directory (unmounted when dropped).
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    const FILLER: &'static str = "chaos-disk-filler";

    fn mount(dir: &Path, bytes: u64) -> Option<Self> {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Writes zeros until the file system is full (ENOSPC); returns the bytes written.
    fn fill(&self) -> Result<u64> {
        use std::io::Write;
        let path = self.dir.join(Self::FILLER);
        let mut file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut written = 0u64;
        for chunk in [1 << 20, 4096, 1] {
            let zeros = vec![0u8; chunk];
            loop {
                match file.write(&zeros) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                    Err(e) => {
                        return Err(e).with_context(|| format!("filling {}", path.display()));
                    }
                }
            }
        }
        Ok(written)
    }

    fn free(&self) -> Result<()> {
        let path = self.dir.join(Self::FILLER);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process of a failed run may still hold a file open.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

const ALL_NODES: [Node; 6] = [
    Node::Coordinator(101),
    Node::Coordinator(102),
    Node::Coordinator(103),
    Node::Broker(1),
    Node::Broker(2),
    Node::Broker(3),
];

fn with_node<T>(
    cluster: &Mutex<Cluster>,
    node: Node,
    f: impl FnOnce(&mut tributary_tests::harness::Node) -> Result<T>,
) -> Result<T> {
    let mut c = lock(cluster);
    match node {
        Node::Broker(id) => f(c.broker(id)),
        Node::Coordinator(id) => f(c.coordinator(id)),
    }
}

/// The Compose project of docker mode.
pub struct Compose {
    program: Vec<String>,
    files: Vec<PathBuf>,
    ports: Vec<(String, u16)>,
    containers: Mutex<BTreeMap<String, String>>,
}

const PROJECT: &str = "tributary-chaos";

impl Compose {
    fn up(
        out: &Path,
        coordinator_env: &[(String, String)],
        broker_env: &[(String, String)],
    ) -> Result<Self> {
        let program: Vec<String> =
            if run(Command::new("docker").args(["compose", "version"])).is_ok() {
                vec!["docker".into(), "compose".into()]
            } else if run(Command::new("docker-compose").arg("version")).is_ok() {
                vec!["docker-compose".into()]
            } else {
                bail!("docker mode needs `docker compose` or `docker-compose`");
            };
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("workspace root")?;
        // The chaos settings (short failure detection) on top of the deployment's file.
        let mut over = String::from("services:\n");
        for i in 1..=3 {
            over.push_str(&format!("  coordinator-{i}:\n    environment:\n"));
            for (k, v) in coordinator_env {
                over.push_str(&format!("      {k}: \"{v}\"\n"));
            }
            over.push_str(&format!("  broker-{i}:\n    environment:\n"));
            for (k, v) in broker_env {
                over.push_str(&format!("      {k}: \"{v}\"\n"));
            }
        }
        let override_file = out.join("compose.override.yml");
        std::fs::write(&override_file, over)?;
        let mut variables = Vec::new();
        for i in 1..=3 {
            variables.push(format!("BROKER_{i}_PORT"));
            variables.push(format!("BROKER_{i}_METRICS_PORT"));
            variables.push(format!("COORDINATOR_{i}_METRICS_PORT"));
        }
        let free = tributary_tests::harness::free_ports(variables.len())?;
        let compose = Compose {
            program,
            files: vec![
                root.join("deploy").join("docker-compose.yml"),
                override_file,
            ],
            ports: variables.into_iter().zip(free).collect(),
            containers: Mutex::new(BTreeMap::new()),
        };
        // A project left over by an interrupted run goes first.
        let _ = compose.compose(&["down", "--volumes", "--remove-orphans", "--timeout", "5"]);
        compose.compose(&["up", "--detach"])?;
        compose.wait_healthy(Duration::from_secs(180))?;
        Ok(compose)
    }

    fn port(&self, variable: &str) -> u16 {
        self.ports
            .iter()
            .find(|(v, _)| v == variable)
            .map_or(0, |(_, p)| *p)
    }

    fn compose(&self, args: &[&str]) -> Result<String> {
        let mut command = Command::new(&self.program[0]);
        command
            .args(&self.program[1..])
            .args(["--project-name", PROJECT]);
        for file in &self.files {
            command.arg("--file").arg(file);
        }
        command.args(args);
        for (variable, port) in &self.ports {
            command.env(variable, port.to_string());
        }
        run(&mut command)
    }

    fn docker(&self, args: &[&str]) -> Result<String> {
        run(Command::new("docker").args(args))
    }

    fn service(node: Node) -> String {
        match node {
            Node::Broker(id) => format!("broker-{id}"),
            Node::Coordinator(id) => format!("coordinator-{}", id - 100),
        }
    }

    /// The container id of `node` (stable across kill and start).
    fn container(&self, node: Node) -> Result<String> {
        let service = Self::service(node);
        if let Some(id) = lock(&self.containers).get(&service) {
            return Ok(id.clone());
        }
        let id = self
            .compose(&["ps", "--all", "--quiet", &service])?
            .trim()
            .to_owned();
        if id.is_empty() {
            bail!("no container for {service}");
        }
        lock(&self.containers).insert(service, id.clone());
        Ok(id)
    }

    fn pid_and_ip(&self, node: Node) -> Result<(String, String)> {
        let out = self.docker(&[
            "inspect",
            "--format",
            "{{.State.Pid}} {{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &self.container(node)?,
        ])?;
        let mut parts = out.split_whitespace();
        let pid = parts.next().context("a pid")?.to_owned();
        let ip = parts.next().unwrap_or_default().to_owned();
        Ok((pid, ip))
    }

    /// Drops, inside `at`'s network namespace, every packet from `from`.
    fn drop_from(&self, at: Node, from: Node) -> Result<()> {
        let (pid, _) = self.pid_and_ip(at)?;
        let (_, ip) = self.pid_and_ip(from)?;
        if pid == "0" || ip.is_empty() {
            return Ok(()); // not running: nothing to cut
        }
        run(Command::new("nsenter").args([
            "--target", &pid, "--net", "iptables", "-I", "INPUT", "-s", &ip, "-j", "DROP",
        ]))
        .map(drop)
    }

    /// Removes every rule this backend added (the containers' own namespaces start empty).
    fn flush_rules(&self) -> Result<()> {
        for node in ALL_NODES {
            let (pid, _) = self.pid_and_ip(node)?;
            if pid != "0" {
                run(Command::new("nsenter")
                    .args(["--target", &pid, "--net", "iptables", "-F", "INPUT"]))?;
            }
        }
        Ok(())
    }

    /// Waits until all six containers run and report healthy.
    fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut waiting = Vec::new();
            for node in ALL_NODES {
                let state = self.docker(&[
                    "inspect",
                    "--format",
                    "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                    &self.container(node)?,
                ])?;
                if state.trim() != "running healthy" {
                    waiting.push(format!("{}: {}", Self::service(node), state.trim()));
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "containers not healthy within {timeout:?}: {}",
                    waiting.join(", ")
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if std::env::var_os("TRIBUTARY_CHAOS_KEEP").is_none() {
            let _ = self.compose(&["down", "--volumes", "--remove-orphans", "--timeout", "10"]);
        }
    }
}

/// Runs `command`, bounded to 3 minutes; its stdout, or an error with its stderr.
fn run(command: &mut Command) -> Result<String> {
    let what = format!("{command:?}");
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("{what} did not finish within 3 minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
