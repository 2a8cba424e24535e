//! Tests of the process harness itself, on the `fake-node` fixture (`src/bin/fake-node.rs`),
//! which honours the node binaries' command line so these run before and apart from the real
//! services. Every wait is bounded; nothing sleeps to synchronise.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tributary_tests::harness::{
    Cluster, ClusterBuilder, Health, Node, NodeKind, NodeSpec, Signal, Stopped, free_ports,
    healthcheck, kill_0, process_exists, process_state, send_signal,
};

const FAKE: &str = env!("CARGO_BIN_EXE_fake-node");

/// Generous for a fake node on a busy 2-core machine; a passing test takes a fraction of it.
const T: Duration = Duration::from_secs(30);

fn fake_cluster() -> ClusterBuilder {
    Cluster::builder()
        .program(NodeKind::Coordinator, FAKE)
        .program(NodeKind::Broker, FAKE)
        .start_timeout(T)
}

/// A lone fake coordinator 101 in `dir`, on a free port.
fn lone_spec(dir: &Path) -> NodeSpec {
    let port = free_ports(1).unwrap()[0];
    NodeSpec::new(
        NodeKind::Coordinator,
        101,
        FAKE,
        dir.join("coordinator-101"),
        ([127, 0, 0, 1], port).into(),
    )
}

fn starts(node: &Node) -> usize {
    std::fs::read_to_string(node.data_dir().join("starts"))
        .unwrap()
        .lines()
        .count()
}

#[test]
fn three_nodes_serve_and_one_killed_with_9_comes_back_on_its_port_and_data() {
    let mut cluster = fake_cluster().coordinators(3).start().unwrap();
    let root = cluster.root().to_path_buf();

    let ports: BTreeSet<u16> = cluster.nodes().iter().map(|n| n.addr().port()).collect();
    assert_eq!(ports.len(), 3, "one port each");
    let members = cluster.coordinator_addresses();
    for node in cluster.nodes_mut() {
        assert!(node.health().is_serving(), "{}", node.name());
        assert!(node.data_dir().starts_with(root.join(node.name())));
        let log = node.log_tail(50);
        assert!(log.contains("fake-node: listening on"), "{log}");
        // Every coordinator is told about all three.
        assert!(
            node.spec()
                .args()
                .iter()
                .any(|a| a.to_str().unwrap().split(',').count() == 3),
            "{members}"
        );
    }

    let victim = cluster.coordinator(102);
    let pid = victim.pid().unwrap();
    let addr = victim.addr();
    victim.kill_9().unwrap();
    assert!(!kill_0(pid), "kill(pid, 0) still finds {pid}");
    assert!(!victim.is_running());
    assert_eq!(victim.exit_status().unwrap().signal(), Some(9));
    assert!(matches!(victim.health(), Health::NotServing(why) if why.contains("exited")));
    assert!(
        !healthcheck(Path::new(FAKE), addr, T).is_serving(),
        "nothing answers at {addr}"
    );
    for id in [101, 103] {
        assert!(cluster.coordinator(id).health().is_serving());
    }

    // Waiting on the whole cluster fails at once, naming the dead node.
    let started = Instant::now();
    let err = format!("{:#}", cluster.wait_serving(T).unwrap_err());
    assert!(started.elapsed() < T / 2, "took {:?}", started.elapsed());
    assert!(
        err.contains("coordinator-102") && err.contains("exited"),
        "{err}"
    );

    let victim = cluster.coordinator(102);
    victim.restart().unwrap();
    victim.wait_serving(T).unwrap();
    assert_eq!(victim.addr(), addr, "same port");
    assert_ne!(victim.pid(), Some(pid));
    assert_eq!(starts(victim), 2, "same data directory");
    let log = victim.log_tail(100);
    assert_eq!(
        log.matches("--- harness: starting coordinator-102").count(),
        2,
        "{log}"
    );
    cluster.wait_serving(T).unwrap();
}

#[test]
fn a_paused_node_stops_serving_and_serves_again_when_resumed() {
    let mut cluster = fake_cluster().coordinators(3).start().unwrap();
    let node = cluster.coordinator(101);
    let pid = node.pid().unwrap();

    node.pause().unwrap();
    assert!(node.is_paused() && node.is_running());
    assert_eq!(process_state(pid), Some('T'));
    node.wait_not_serving(T).unwrap();
    let err = format!(
        "{:#}",
        node.wait_serving(Duration::from_millis(1500)).unwrap_err()
    );
    assert!(
        err.contains("coordinator-101") && err.contains("paused"),
        "{err}"
    );

    node.resume().unwrap();
    assert!(!node.is_paused());
    node.wait_serving(T).unwrap();
    assert_eq!(node.pid(), Some(pid), "the same process");
    cluster.wait_serving(T).unwrap();
}

#[test]
fn dropping_a_cluster_kills_every_process_even_when_the_test_panics() {
    let root = tempfile::tempdir().unwrap();
    let pids = Mutex::new(Vec::new());
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut cluster = fake_cluster()
            .coordinators(3)
            .brokers(1)
            .root(root.path())
            .start()
            .unwrap();
        // A stopped process must die too.
        cluster.coordinator(103).pause().unwrap();
        for node in cluster.nodes_mut() {
            pids.lock().unwrap().push(node.pid().unwrap());
        }
        panic!("a test failing with its cluster up");
    }));
    assert!(outcome.is_err());
    let pids = pids.into_inner().unwrap();
    assert_eq!(pids.len(), 4);
    for pid in pids {
        assert!(!kill_0(pid), "pid {pid} outlived its cluster");
    }
    // A given root is kept, logs and all.
    assert!(root.path().join("coordinator-101/node.log").is_file());
}

#[test]
fn dropping_a_node_kills_it_and_a_temporary_root_goes_with_its_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(lone_spec(dir.path())).unwrap();
    node.wait_serving(T).unwrap();
    let pid = node.pid().unwrap();
    drop(node);
    assert!(!kill_0(pid));

    let mut cluster = fake_cluster().coordinators(1).start().unwrap();
    let pid = cluster.coordinator(101).pid().unwrap();
    let root = cluster.root().to_path_buf();
    drop(cluster);
    assert!(!kill_0(pid));
    assert!(!root.exists(), "{} was left behind", root.display());
}

#[test]
fn stop_is_sigterm_then_sigkill_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(lone_spec(dir.path())).unwrap();
    node.wait_serving(T).unwrap();
    assert_eq!(node.stop(T).unwrap(), Stopped::Terminated);
    assert_eq!(node.exit_status().unwrap().signal(), Some(15));
    assert_eq!(node.stop(T).unwrap(), Stopped::AlreadyDown);

    let mut spec = lone_spec(&dir.path().join("stubborn"));
    spec.env.push(("FAKE_NODE_IGNORE_TERM".into(), "1".into()));
    let mut stubborn = Node::start(spec).unwrap();
    stubborn.wait_serving(T).unwrap();
    let grace = Duration::from_millis(300);
    let started = Instant::now();
    assert_eq!(stubborn.stop(grace).unwrap(), Stopped::Killed);
    assert!(started.elapsed() >= grace);
    assert_eq!(stubborn.exit_status().unwrap().signal(), Some(9));
}

#[test]
fn a_node_that_never_serves_times_out_with_its_name_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = lone_spec(dir.path());
    spec.env
        .push(("FAKE_NODE_NEVER_SERVING".into(), "1".into()));
    let mut node = Node::start(spec).unwrap();
    let err = format!(
        "{:#}",
        node.wait_serving(Duration::from_secs(1)).unwrap_err()
    );
    assert!(err.contains("coordinator-101"), "{err}");
    assert!(err.contains("not SERVING after 1s"), "{err}");
    assert!(
        err.contains("NOT_SERVING"),
        "the healthcheck's answer: {err}"
    );
    assert!(err.contains("node.log"), "the log's path: {err}");
    assert!(
        err.contains("fake-node: listening on"),
        "the log's tail: {err}"
    );
    assert!(node.is_running(), "a timeout leaves the node alone");
}

#[test]
fn a_node_that_exits_is_reported_at_once_with_its_status_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = lone_spec(dir.path());
    spec.extra_args.push("--bogus".into());
    let mut node = Node::start(spec).unwrap();
    let started = Instant::now();
    let err = format!("{:#}", node.wait_serving(T).unwrap_err());
    assert!(started.elapsed() < T / 2, "took {:?}", started.elapsed());
    assert!(
        err.contains("coordinator-101") && err.contains("exit status: 2"),
        "{err}"
    );
    assert!(err.contains("unexpected argument `--bogus`"), "{err}");

    // In a cluster, the error says which node and the cluster's processes are gone.
    let err = fake_cluster()
        .coordinators(3)
        .arg(NodeKind::Coordinator, "--bogus")
        .start()
        .unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("starting 3 coordinator(s)"), "{err}");
    assert!(err.contains("unexpected argument `--bogus`"), "{err}");

    let err = fake_cluster()
        .program(
            NodeKind::Coordinator,
            dir.path().join("tributary-coordinator"),
        )
        .start()
        .unwrap_err();
    assert!(format!("{err:#}").contains("there is no"), "{err:#}");
}

#[test]
fn a_cluster_starts_again_on_new_ports_when_a_node_cannot_bind_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("port-taken-once");
    let mut cluster = fake_cluster()
        .coordinators(3)
        .env("FAKE_NODE_ADDR_IN_USE_ONCE", &marker)
        .start()
        .unwrap();
    assert!(marker.exists(), "one node was refused its port");
    let mut logs = String::new();
    for node in cluster.nodes_mut() {
        assert!(node.health().is_serving());
        assert_eq!(starts(node), 1, "{}: a fresh data directory", node.name());
        logs += &node.log_tail(100);
    }
    assert!(logs.contains("Address already in use"), "{logs}");
}

#[test]
fn brokers_start_after_the_coordinators_and_are_given_their_addresses() {
    let mut cluster = fake_cluster().coordinators(3).brokers(2).start().unwrap();
    assert_eq!(cluster.nodes().len(), 5);
    let addresses = cluster.coordinator_addresses();
    assert_eq!(addresses.split(',').count(), 3);
    let broker = cluster.broker(2);
    assert!(broker.health().is_serving());
    let log = broker.log_tail(20);
    assert!(log.contains("broker 2 starting"), "{log}");
    assert!(
        log.contains(&format!("coordinators Some({addresses:?})")),
        "{log}"
    );
    let log = cluster.coordinator(101).log_tail(20);
    assert!(
        log.contains("initial members Some(\"101=127.0.0.1:"),
        "{log}"
    );
}

/// What `cargo xtask cluster-up` and `cluster-down` do: start a node detached, let go of it,
/// find it again from its pid file, stop it.
#[test]
fn a_detached_node_outlives_its_handle_and_is_adopted_from_its_pid_file() {
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = send_signal(self.0, Signal::Kill);
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let mut spec = lone_spec(dir.path());
    spec.detached = true;
    let mut node = Node::start(spec.clone()).unwrap();
    node.wait_serving(T).unwrap();
    let pid = node.detach().unwrap();
    let _guard = KillOnDrop(pid);
    assert!(process_exists(pid), "detach leaves it running");
    let pgid = rustix::process::getpgid(rustix::process::Pid::from_raw(pid as i32)).unwrap();
    assert_eq!(
        pgid.as_raw_nonzero().get() as u32,
        pid,
        "a process group of its own"
    );

    let mut adopted = Node::adopt(spec.clone()).expect("found from its pid file");
    assert_eq!(adopted.pid(), Some(pid));
    adopted.wait_serving(T).unwrap();
    assert_eq!(adopted.stop(T).unwrap(), Stopped::Terminated);
    // Not our child to reap, but gone (a zombie until this test process exits).
    assert!(!process_exists(pid));
    assert!(
        Node::adopt(spec.clone()).is_none(),
        "its pid file went with it"
    );

    // A pid file naming a live process that is not the node's binary is stale.
    std::fs::write(spec.pid_path(), format!("{}\n", std::process::id())).unwrap();
    assert!(Node::adopt(spec).is_none());
}
