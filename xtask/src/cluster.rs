//! `cargo xtask cluster-up`, `cluster-down`, `cluster-status`: a local cluster on the default
//! ports, its nodes detached from the command that started them, everything under one directory
//! (default `.tributary/` in the workspace root):
//!
//! ```text
//! .tributary/coordinator-101/node.toml   the node's config, rewritten by every cluster-up
//! .tributary/coordinator-101/data/       its data, kept until `cluster-up --clean`
//! .tributary/coordinator-101/node.log    its stdout and stderr, appended to
//! .tributary/coordinator-101/pid         the pid of the running process
//! ```
//!
//! Processes are started, found, checked and stopped by the test harness
//! (`tributary_tests::harness`), so tests and this share one implementation.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tributary_tests::harness::{
    self, BIN_DIR_ENV, Health, Node, NodeKind, NodeSpec, Stopped, toml_path, toml_string,
};

/// The cluster's directory unless `--dir` says otherwise (relative to the workspace root).
const DEFAULT_DIR: &str = ".tributary";
/// How long `cluster-down` waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// How long `cluster-up` waits for every node to serve, unless `--timeout` says otherwise.
const DEFAULT_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// The cluster tasks' lines of `cargo xtask help`.
pub const HELP: &str =
    "  cluster-up [--coordinators N] [--dir DIR] [--clean] [--no-build] [--timeout SECS]
                     build the release binaries and start a local cluster in the background:
                     coordinators 101, 102, ... (default 3) on 127.0.0.1:9191, 9192, ...
                     (metrics ports 10191, ... reserved), each with its config, data, log and
                     pid in DIR/coordinator-<id>/ (DIR: default .tributary, relative to the
                     workspace root). Starts only the nodes not running and keeps their data;
                     waits until every node is SERVING (default 60 s), else exits non-zero
                     naming the node and its log. --clean: stop every node and wipe DIR
                     first. --no-build: use the binaries already in $TRIBUTARY_BIN_DIR, or
                     else target/release
  cluster-down [--dir DIR]
                     stop every node of the cluster in DIR: SIGTERM, SIGKILL after 30 s
  cluster-status [--dir DIR]
                     each node's pid, address and health (its `healthcheck`); exits non-zero
                     when a node is not SERVING
";

struct Options {
    dir: PathBuf,
    coordinators: u64,
    clean: bool,
    build: bool,
    timeout: Duration,
}

fn parse(task: &str, args: &[String], root: &Path) -> Result<Options> {
    let up = task == "cluster-up";
    let mut options = Options {
        dir: root.join(DEFAULT_DIR),
        coordinators: 3,
        clean: false,
        build: true,
        timeout: DEFAULT_UP_TIMEOUT,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || match inline.clone().or_else(|| args.next().cloned()) {
            Some(value) => Ok(value),
            None => bail!("`{flag}` needs a value"),
        };
        match flag {
            "--dir" => options.dir = root.join(value()?),
            "--coordinators" if up => {
                let v = value()?;
                options.coordinators = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=9).contains(n))
                    .with_context(|| format!("--coordinators {v}: expected 1 to 9"))?;
            }
            "--clean" if up => options.clean = true,
            "--no-build" if up => options.build = false,
            "--timeout" if up => {
                let v = value()?;
                let secs: u64 = v
                    .parse()
                    .with_context(|| format!("--timeout {v}: expected seconds"))?;
                options.timeout = Duration::from_secs(secs);
            }
            other => bail!("unknown option `{other}` for `cargo xtask {task}`\n\n{HELP}"),
        }
    }
    Ok(options)
}

/// `cargo xtask cluster-up`.
pub fn up(args: &[String], root: &Path) -> Result<()> {
    let options = parse("cluster-up", args, root)?;
    let dir = &options.dir;
    if options.clean && dir.exists() {
        down_nodes(dir, &program_dir(root)?)?;
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        println!("removed {}", dir.display());
    }
    if options.build {
        build(root)?;
    }
    let bin_dir = program_dir(root)?;
    let program = bin_dir.join(NodeKind::Coordinator.binary_name());
    if !program.is_file() {
        bail!(
            "there is no {} (build it with `cargo build --release -p tributary-coordinator`, or \
             drop --no-build)",
            program.display()
        );
    }

    let kind = NodeKind::Coordinator;
    let ids: Vec<u64> = (0..options.coordinators)
        .map(|i| kind.first_id() + i)
        .collect();
    let existing = existing_nodes(dir)?;
    if !existing.is_empty() && existing != ids.iter().map(|&id| (kind, id)).collect::<Vec<_>>() {
        bail!(
            "{} holds a cluster of {}; a cluster of {} coordinator(s) would be another one. \
             Pass the same --coordinators, or --clean to start over (its data goes)",
            dir.display(),
            names(&existing),
            options.coordinators
        );
    }
    let members: Vec<(u64, String)> = ids
        .iter()
        .map(|&id| (id, default_addr(kind, id).to_string()))
        .collect();

    // First decide what to start, so that nothing is started when something is in the way.
    let mut nodes: Vec<(Node, bool)> = Vec::new(); // (node, started by this run)
    let mut to_start = Vec::new();
    for &id in &ids {
        let spec = coordinator_spec(dir, &program, id, &members);
        match Node::adopt(spec.clone()) {
            Some(node) => nodes.push((node, false)),
            None if !harness::port_is_free(spec.listen) => bail!(
                "{}: port {} is taken by another process (a cluster in another --dir? `ss -ltnp` \
                 shows who has it)",
                spec.name(),
                spec.listen.port()
            ),
            None => to_start.push(spec),
        }
    }
    for spec in to_start {
        let name = spec.name();
        match Node::start(spec) {
            Ok(node) => nodes.push((node, true)),
            Err(err) => {
                detach_all(nodes);
                return Err(err.context(format!("starting {name}")));
            }
        }
    }
    nodes.sort_by_key(|(node, _)| node.id());

    let waited = harness::wait_all_serving(nodes.iter_mut().map(|(node, _)| node), options.timeout);
    let rows: Vec<Vec<String>> = nodes
        .iter_mut()
        .map(|(node, started)| {
            vec![
                node.name(),
                node.pid().map_or("-".into(), |pid| pid.to_string()),
                node.addr().to_string(),
                kind.default_metrics_port(node.id())
                    .map_or("-".into(), |p| format!("127.0.0.1:{p}")),
                if *started {
                    "started"
                } else {
                    "already running"
                }
                .into(),
                relative(&node.log_path(), root),
            ]
        })
        .collect();
    detach_all(nodes);
    if let Err(err) = waited {
        return Err(err.context(format!(
            "the cluster in {} did not come up within {:?}; its nodes are left running \
             (`cargo xtask cluster-status`, `cargo xtask cluster-down`)",
            dir.display(),
            options.timeout
        )));
    }
    println!("cluster in {}: every node SERVING\n", dir.display());
    print_table(
        &["NODE", "PID", "GRPC", "METRICS (reserved)", "STATE", "LOG"],
        &rows,
    );
    println!(
        "\nper node: node.toml (config), data/, node.log, pid. Stop: `cargo xtask cluster-down`; \
         check: `cargo xtask cluster-status`."
    );
    Ok(())
}

/// `cargo xtask cluster-down`.
pub fn down(args: &[String], root: &Path) -> Result<()> {
    let options = parse("cluster-down", args, root)?;
    if !options.dir.exists() {
        println!("no cluster in {}", options.dir.display());
        return Ok(());
    }
    down_nodes(&options.dir, &program_dir(root)?)
}

fn down_nodes(dir: &Path, bin_dir: &Path) -> Result<()> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut not_running = Vec::new();
    for (kind, id) in existing_nodes(dir)? {
        match Node::adopt(found_spec(dir, bin_dir, kind, id)) {
            Some(node) => nodes.push(node),
            None => not_running.push(kind.node_name(id)),
        }
    }
    if !nodes.is_empty() {
        println!(
            "stopping {} (SIGTERM; SIGKILL after {STOP_GRACE:?})",
            nodes.iter().map(Node::name).collect::<Vec<_>>().join(", ")
        );
    }
    let stopped = harness::stop_all(&mut nodes, STOP_GRACE)?;
    for (node, stopped) in nodes.iter().zip(stopped) {
        let how = match stopped {
            Stopped::Terminated | Stopped::AlreadyDown => "stopped",
            Stopped::Killed => "killed (SIGKILL: it did not stop within 30 s of SIGTERM)",
        };
        println!("{}: {how}", node.name());
    }
    for name in not_running {
        println!("{name}: was not running");
        let _ = std::fs::remove_file(dir.join(name).join("pid"));
    }
    Ok(())
}

/// `cargo xtask cluster-status`.
pub fn status(args: &[String], root: &Path) -> Result<()> {
    let options = parse("cluster-status", args, root)?;
    let bin_dir = program_dir(root)?;
    let nodes = if options.dir.exists() {
        existing_nodes(&options.dir)?
    } else {
        Vec::new()
    };
    if nodes.is_empty() {
        bail!(
            "no cluster in {} (start one: `cargo xtask cluster-up`)",
            options.dir.display()
        );
    }
    let mut down = 0;
    let mut rows = Vec::new();
    for (kind, id) in nodes {
        let spec = found_spec(&options.dir, &bin_dir, kind, id);
        let (pid, health) = match Node::adopt(spec.clone()) {
            Some(mut node) => {
                let pid = node.pid().map_or("-".into(), |pid| pid.to_string());
                let health = if spec.program.is_file() {
                    node.health()
                } else {
                    Health::NotServing(format!("cannot check: no {}", spec.program.display()))
                };
                (pid, health)
            }
            None => ("-".into(), Health::NotServing("not running".into())),
        };
        let state = match health {
            Health::Serving => "up (SERVING)".to_owned(),
            Health::NotServing(why) => {
                down += 1;
                format!("down: {why}")
            }
        };
        rows.push(vec![spec.name(), pid, spec.listen.to_string(), state]);
    }
    println!("cluster in {}\n", options.dir.display());
    print_table(&["NODE", "PID", "ADDRESS", "STATE"], &rows);
    if down > 0 {
        bail!("{down} of {} node(s) not SERVING", rows.len());
    }
    Ok(())
}

/// `cargo build --release -p tributary-coordinator`.
fn build(root: &Path) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let args = ["build", "--release", "-p", "tributary-coordinator"];
    eprintln!("xtask: running cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("could not start `{cargo}`"))?;
    if status.success() {
        return Ok(());
    }
    if !root
        .join("crates/tributary-coordinator/Cargo.toml")
        .is_file()
    {
        bail!(
            "there is no coordinator to start yet: crates/tributary-coordinator arrives with \
             issue 3 (`cargo build --release -p tributary-coordinator` failed: {status})"
        );
    }
    bail!(
        "`cargo {}` failed ({status}); see its output above. Nothing was started",
        args.join(" ")
    )
}

/// Where the node binaries are: `$TRIBUTARY_BIN_DIR`, else the release directory of the
/// workspace's target directory.
fn program_dir(root: &Path) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(root.join(dir));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| root.join("target"), |d| root.join(d));
    Ok(target.join("release"))
}

/// The gRPC address of a node of the local cluster: the defaults table on 127.0.0.1.
fn default_addr(kind: NodeKind, id: u64) -> SocketAddr {
    let port = kind
        .default_grpc_port(id)
        .expect("ids of the local cluster are in the defaults table");
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn coordinator_spec(dir: &Path, program: &Path, id: u64, members: &[(u64, String)]) -> NodeSpec {
    let kind = NodeKind::Coordinator;
    let mut spec = NodeSpec::new(
        kind,
        id,
        program,
        dir.join(kind.node_name(id)),
        default_addr(kind, id),
    );
    spec.coordinators = members.to_vec();
    spec.detached = true;
    spec.config = Some(coordinator_config(&spec));
    spec
}

/// The node's config file. It says what the flags say too (they win over it), so that the file
/// alone describes the node; the metrics port is a comment until the coordinator serves
/// metrics (it refuses keys it does not know).
fn coordinator_config(spec: &NodeSpec) -> String {
    let members: Vec<String> = spec
        .coordinators
        .iter()
        .map(|(id, addr)| format!("{id}={addr}"))
        .collect();
    let metrics = spec
        .kind
        .default_metrics_port(spec.id)
        .map_or("-".into(), |p| format!("127.0.0.1:{p}"));
    format!(
        "# {name}: written by `cargo xtask cluster-up` (rewritten on every run).\n\
         node_id = {id}\n\
         data_dir = {data_dir}\n\
         listen = {listen}\n\
         advertised_address = {advertised}\n\
         initial_members = {members}\n\
         # Metrics port reserved for this node: {metrics}\n",
        name = spec.name(),
        id = spec.id,
        data_dir = toml_path(&spec.data_dir()),
        listen = toml_string(&spec.listen.to_string()),
        advertised = toml_string(&spec.advertised_address),
        members = toml_string(&members.join(",")),
    )
}

/// A node found in the cluster's directory, as far as finding, checking and stopping it goes.
fn found_spec(dir: &Path, bin_dir: &Path, kind: NodeKind, id: u64) -> NodeSpec {
    NodeSpec::new(
        kind,
        id,
        bin_dir.join(kind.binary_name()),
        dir.join(kind.node_name(id)),
        default_addr(kind, id),
    )
}

/// The nodes that have a directory in `dir`, in start order (coordinators first, by id).
fn existing_nodes(dir: &Path) -> Result<Vec<(NodeKind, u64)>> {
    let mut nodes = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(nodes),
        Err(err) => return Err(err).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        if let Some((kind, id)) = entry
            .file_name()
            .to_str()
            .and_then(NodeKind::parse_node_name)
            .filter(|(kind, id)| kind.default_grpc_port(*id).is_some())
        {
            nodes.push((kind, id));
        }
    }
    nodes.sort();
    Ok(nodes)
}

fn names(nodes: &[(NodeKind, u64)]) -> String {
    nodes
        .iter()
        .map(|(kind, id)| kind.node_name(*id))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Lets the processes run on after this command.
fn detach_all(nodes: Vec<(Node, bool)>) {
    for (node, _) in nodes {
        node.detach();
    }
}

fn relative(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_are_parsed_and_paths_are_relative_to_the_root() {
        let root = Path::new("/ws");
        let o = parse("cluster-up", &[], root).unwrap();
        assert_eq!(o.dir, Path::new("/ws/.tributary"));
        assert_eq!((o.coordinators, o.clean, o.build), (3, false, true));
        let o = parse(
            "cluster-up",
            &args(&["--coordinators=1", "--dir", "x/y", "--clean", "--no-build"]),
            root,
        )
        .unwrap();
        assert_eq!(o.dir, Path::new("/ws/x/y"));
        assert_eq!((o.coordinators, o.clean, o.build), (1, true, false));
        assert_eq!(
            parse("cluster-down", &args(&["--dir", "/abs"]), root)
                .unwrap()
                .dir,
            Path::new("/abs")
        );
        for bad in [
            &["--coordinators", "0"][..],
            &["--coordinators"],
            &["--timeout", "x"],
            &["--bogus"],
        ] {
            assert!(parse("cluster-up", &args(bad), root).is_err(), "{bad:?}");
        }
        assert!(parse("cluster-down", &args(&["--clean"]), root).is_err());
    }

    #[test]
    fn a_coordinator_config_says_what_its_flags_say() {
        let members: Vec<(u64, String)> = (101..=103)
            .map(|id| (id, default_addr(NodeKind::Coordinator, id).to_string()))
            .collect();
        let spec = coordinator_spec(Path::new("/c"), Path::new("/bin/tc"), 102, &members);
        assert!(spec.detached);
        let config = spec.config.as_deref().unwrap();
        for line in [
            "node_id = 102\n",
            "data_dir = \"/c/coordinator-102/data\"\n",
            "listen = \"127.0.0.1:9192\"\n",
            "advertised_address = \"127.0.0.1:9192\"\n",
            "initial_members = \"101=127.0.0.1:9191,102=127.0.0.1:9192,103=127.0.0.1:9193\"\n",
            "# Metrics port reserved for this node: 127.0.0.1:10192\n",
        ] {
            assert!(config.contains(line), "{line:?} in\n{config}");
        }
        let flags: Vec<String> = spec
            .args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert!(flags.ends_with(&["--config".into(), "/c/coordinator-102/node.toml".into()]));
    }

    #[test]
    fn the_nodes_of_a_cluster_dir_are_its_node_directories() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "coordinator-103",
            "coordinator-101",
            "broker-1",
            "notes",
            "coordinator-7",
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        std::fs::write(dir.path().join("coordinator-102"), "a file").unwrap();
        assert_eq!(
            existing_nodes(dir.path()).unwrap(),
            [
                (NodeKind::Coordinator, 101),
                (NodeKind::Coordinator, 103),
                (NodeKind::Broker, 1)
            ]
        );
        assert!(existing_nodes(&dir.path().join("none")).unwrap().is_empty());
    }
}
