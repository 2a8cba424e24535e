//! What a node is and how it is started: [`NodeKind`] (which binary, which flags, the default
//! ids and ports) and [`NodeSpec`] (one node's command line, directory and environment).

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::process::BIN_DIR_ENV;

/// The kinds of node. Each has its binary, its id flag, and its row of the defaults every issue
/// keeps (one id namespace):
///
/// | kind | ids | gRPC port | metrics port |
/// |---|---|---|---|
/// | coordinator | 101, 102, 103 | 9191, 9192, 9193 | 10191, 10192, 10193 |
/// | broker | 1, 2, 3 | 9092, 9093, 9094 | 10092, 10093, 10094 |
///
/// Both binaries take `--data-dir DIR --listen ADDR --advertised-address HOST:PORT`, log to
/// stderr, stop gracefully on SIGTERM, and have `healthcheck [ADDR]` (exit 0 iff the node
/// reports SERVING on `grpc.health.v1`, service ""). A coordinator takes `--node-id ID
/// --initial-members ID=HOST:PORT,...`; a broker `--broker-id ID --coordinators HOST:PORT,...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeKind {
    /// `tributary-coordinator`: Raft-replicated metadata and the controller.
    Coordinator,
    /// `tributary-broker` (issue 4): hosts partition logs. The binary does not exist yet; its
    /// command line is the one announced for it.
    Broker,
}

impl NodeKind {
    /// Every kind, in the order a cluster starts them (coordinators first: brokers need them).
    pub const ALL: [NodeKind; 2] = [NodeKind::Coordinator, NodeKind::Broker];

    /// The binary's file name.
    pub fn binary_name(self) -> &'static str {
        match self {
            NodeKind::Coordinator => "tributary-coordinator",
            NodeKind::Broker => "tributary-broker",
        }
    }

    /// `coordinator` / `broker`: the start of node names (`coordinator-101`).
    pub fn label(self) -> &'static str {
        match self {
            NodeKind::Coordinator => "coordinator",
            NodeKind::Broker => "broker",
        }
    }

    /// The flag that takes the node's id.
    pub fn id_flag(self) -> &'static str {
        match self {
            NodeKind::Coordinator => "--node-id",
            NodeKind::Broker => "--broker-id",
        }
    }

    /// The first id of this kind (the next ones follow it).
    pub fn first_id(self) -> u64 {
        match self {
            NodeKind::Coordinator => 101,
            NodeKind::Broker => 1,
        }
    }

    fn first_ports(self) -> (u16, u16) {
        match self {
            NodeKind::Coordinator => (9191, 10191),
            NodeKind::Broker => (9092, 10092),
        }
    }

    /// The default gRPC port of node `id` (9191 for coordinator 101, 9092 for broker 1, ...),
    /// `None` for an id below the kind's first.
    pub fn default_grpc_port(self, id: u64) -> Option<u16> {
        let offset = u16::try_from(id.checked_sub(self.first_id())?).ok()?;
        self.first_ports().0.checked_add(offset)
    }

    /// The default metrics port of node `id` (10191 for coordinator 101, 10092 for broker 1).
    pub fn default_metrics_port(self, id: u64) -> Option<u16> {
        let offset = u16::try_from(id.checked_sub(self.first_id())?).ok()?;
        self.first_ports().1.checked_add(offset)
    }

    /// `coordinator-101`, `broker-1`: the node's name and its directory's.
    pub fn node_name(self, id: u64) -> String {
        format!("{}-{id}", self.label())
    }

    /// The kind and id of a node name made by [`NodeKind::node_name`].
    pub fn parse_node_name(name: &str) -> Option<(NodeKind, u64)> {
        let (label, id) = name.rsplit_once('-')?;
        let kind = NodeKind::ALL.into_iter().find(|k| k.label() == label)?;
        Some((kind, id.parse().ok()?))
    }
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Everything needed to start one node process. Its directory holds, by the same layout in
/// tests and under `cargo xtask cluster-up`:
///
/// ```text
/// <dir>/data       the node's --data-dir
/// <dir>/node.log   its stdout and stderr, appended to across restarts
/// <dir>/pid        the pid of the process last started
/// <dir>/node.toml  its --config, when the spec has one
/// ```
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// Which binary and flags.
    pub kind: NodeKind,
    /// The node's id (`--node-id` / `--broker-id`).
    pub id: u64,
    /// The binary to run.
    pub program: PathBuf,
    /// The node's directory (see the type's documentation).
    pub dir: PathBuf,
    /// `--listen`, and where the harness health-checks the node.
    pub listen: SocketAddr,
    /// `--advertised-address` (by default `listen`).
    pub advertised_address: String,
    /// The coordinators as `(id, host:port)`. A coordinator gets them as `--initial-members
    /// id=host:port,...` (itself included; left out when empty), a broker as `--coordinators
    /// host:port,...`.
    pub coordinators: Vec<(u64, String)>,
    /// The text of a TOML config: written to `<dir>/node.toml` at each start and passed as
    /// `--config`. Flags override it.
    pub config: Option<String>,
    /// `--metrics-listen`: where the node serves Prometheus `GET /metrics` (none by default).
    pub metrics_listen: Option<SocketAddr>,
    /// More flags, after the ones above.
    pub extra_args: Vec<OsString>,
    /// Environment variables set for the node (on top of the inherited environment; `RUST_LOG`
    /// is `info` unless set in either).
    pub env: Vec<(OsString, OsString)>,
    /// Start the process in a process group of its own, so that it outlives the starting
    /// command and a terminal's Ctrl-C does not reach it (`cargo xtask cluster-up`). Test nodes
    /// stay in the test's group: a Ctrl-C of `cargo test` reaches them too.
    pub detached: bool,
}

impl NodeSpec {
    /// A node of `kind` with `id` running `program` in `dir`, listening on and advertising
    /// `listen`, with no coordinators, config, extra flags or environment.
    pub fn new(
        kind: NodeKind,
        id: u64,
        program: impl Into<PathBuf>,
        dir: impl Into<PathBuf>,
        listen: SocketAddr,
    ) -> Self {
        Self {
            kind,
            id,
            program: program.into(),
            dir: dir.into(),
            listen,
            advertised_address: listen.to_string(),
            coordinators: Vec::new(),
            config: None,
            metrics_listen: None,
            extra_args: Vec::new(),
            env: Vec::new(),
            detached: false,
        }
    }

    /// `coordinator-101`, `broker-1`.
    pub fn name(&self) -> String {
        self.kind.node_name(self.id)
    }

    /// `<dir>/data`: the node's `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `<dir>/node.log`: the node's stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    /// `<dir>/pid`.
    pub fn pid_path(&self) -> PathBuf {
        self.dir.join("pid")
    }

    /// `<dir>/node.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("node.toml")
    }

    /// The command line after the program's name.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            self.kind.id_flag().into(),
            self.id.to_string().into(),
            "--data-dir".into(),
            self.data_dir().into(),
            "--listen".into(),
            self.listen.to_string().into(),
            "--advertised-address".into(),
            self.advertised_address.clone().into(),
        ];
        match self.kind {
            NodeKind::Coordinator if !self.coordinators.is_empty() => {
                let members: Vec<String> = self
                    .coordinators
                    .iter()
                    .map(|(id, addr)| format!("{id}={addr}"))
                    .collect();
                args.extend(["--initial-members".into(), members.join(",").into()]);
            }
            NodeKind::Coordinator => {}
            NodeKind::Broker => {
                let addrs: Vec<&str> = self.coordinators.iter().map(|(_, a)| a.as_str()).collect();
                args.extend(["--coordinators".into(), addrs.join(",").into()]);
            }
        }
        if let Some(metrics) = self.metrics_listen {
            args.extend(["--metrics-listen".into(), metrics.to_string().into()]);
        }
        if self.config.is_some() {
            args.extend(["--config".into(), self.config_path().into()]);
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// The command that starts the node: program, flags, environment, stdin from /dev/null.
    /// Its stdout and stderr are left to the caller.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(self.args()).stdin(Stdio::null());
        // The harness's own settings are not the node's (the coordinator reads `TRIBUTARY_*`
        // variables as configuration).
        for var in HARNESS_ENV {
            command.env_remove(var);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        if self.detached {
            use std::os::unix::process::CommandExt;
            command.process_group(0);
        }
        command
    }

    /// The command line as one line, for logs and messages.
    pub fn command_line(&self) -> String {
        std::iter::once(self.program.as_os_str().to_owned())
            .chain(self.args())
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Environment variables that configure the harness, not the nodes.
pub(crate) const HARNESS_ENV: [&str; 3] = [
    BIN_DIR_ENV,
    super::cluster::CLUSTERS_ENV,
    super::cluster::KEEP_DIRS_ENV,
];

/// `s` as a TOML basic string, quotes included.
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `path` as a TOML string (lossily, for a path that is not UTF-8).
pub fn toml_path(path: &Path) -> String {
    toml_string(&path.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn a_coordinator_gets_the_contract_flags() {
        let mut spec = NodeSpec::new(
            NodeKind::Coordinator,
            102,
            "/bin/tributary-coordinator",
            "/c/coordinator-102",
            "127.0.0.1:9192".parse().unwrap(),
        );
        spec.coordinators = (101..=103)
            .map(|id| (id, format!("127.0.0.1:{}", 9090 + id)))
            .collect();
        spec.config = Some("node_id = 102\n".into());
        assert_eq!(
            strings(spec.args()),
            [
                "--node-id",
                "102",
                "--data-dir",
                "/c/coordinator-102/data",
                "--listen",
                "127.0.0.1:9192",
                "--advertised-address",
                "127.0.0.1:9192",
                "--initial-members",
                "101=127.0.0.1:9191,102=127.0.0.1:9192,103=127.0.0.1:9193",
                "--config",
                "/c/coordinator-102/node.toml",
            ]
        );
    }

    #[test]
    fn a_broker_gets_the_coordinators_addresses() {
        let mut spec = NodeSpec::new(
            NodeKind::Broker,
            1,
            "/bin/tributary-broker",
            "/c/broker-1",
            "127.0.0.1:9092".parse().unwrap(),
        );
        spec.coordinators = vec![(101, "a:1".into()), (102, "b:2".into())];
        spec.extra_args = vec!["--rack".into(), "r1".into()];
        let args = strings(spec.args());
        assert_eq!(args[..2], ["--broker-id", "1"]);
        assert_eq!(args[8..], ["--coordinators", "a:1,b:2", "--rack", "r1"]);
    }

    #[test]
    fn the_defaults_table() {
        use NodeKind::*;
        assert_eq!(Coordinator.default_grpc_port(101), Some(9191));
        assert_eq!(Coordinator.default_metrics_port(103), Some(10193));
        assert_eq!(Broker.default_grpc_port(3), Some(9094));
        assert_eq!(Broker.default_metrics_port(1), Some(10092));
        assert_eq!(Coordinator.default_grpc_port(100), None);
        assert_eq!(
            NodeKind::parse_node_name(&Coordinator.node_name(101)),
            Some((Coordinator, 101))
        );
        assert_eq!(NodeKind::parse_node_name("broker-2"), Some((Broker, 2)));
        assert_eq!(NodeKind::parse_node_name("broker-x"), None);
        assert_eq!(NodeKind::parse_node_name("data"), None);
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_string("x\ny\u{1}"), r#""x\ny\u0001""#);
    }
}
