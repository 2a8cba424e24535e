//! The process harness: real node processes for tests and for `cargo xtask cluster-up`.
//!
//! ```no_run
//! use std::time::Duration;
//! use tributary_tests::harness::Cluster;
//!
//! # fn main() -> anyhow::Result<()> {
//! let mut cluster = Cluster::start(3)?; // coordinators 101, 102, 103, all SERVING
//! let leader = cluster.coordinator(101);
//! leader.kill_9()?;
//! // ... the others elect a new leader; talk to them at `cluster.coordinator(102).addr()` ...
//! cluster.coordinator(101).restart()?; // same data directory, same port
//! cluster.wait_serving(Duration::from_secs(30))?;
//! # Ok(())
//! # }
//! ```
//!
//! # The processes
//!
//! Nodes run the workspace's own binaries, already built: the harness never runs cargo. It
//! takes them from `$TRIBUTARY_BIN_DIR`, else from the directory of the running executable (for
//! a test, `target/debug`, one level above `target/debug/deps/`). Note that `cargo test` builds
//! a package's binaries only for that package's own integration tests: `cargo test -p
//! tributary-tests` does not build `tributary-coordinator`. `cargo xtask test` runs `cargo build
//! --workspace --bins` first, so every binary is in `target/debug` when the integration tests
//! run; otherwise build the binary first (`cargo build -p tributary-coordinator`).
//!
//! Each node gets a port picked by binding 127.0.0.1:0 (see [`free_ports`]; a cluster whose
//! node cannot bind its port starts again on new ones), its own directory (data, log, pid,
//! config: see [`NodeSpec`]) under the cluster's root, and its stdout and stderr in
//! `<dir>/node.log`, appended to across restarts with a header line per start. Errors about a
//! node name it and carry the tail of its log. A [`Node`] or [`Cluster`] kills its processes
//! when dropped, so a panicking test leaves none behind (a test process killed with SIGKILL
//! does; Ctrl-C reaches the nodes, which share the test's process group).
//!
//! # One cluster at a time
//!
//! A [`Cluster`] holds a [`ClusterPermit`] while it lives: a lock file in the temp directory,
//! one of `$TRIBUTARY_TEST_CLUSTERS` (default 1) machine-wide, shared by every test thread and
//! test process. On two cores, two 3-node clusters at once make Raft elections and the tests'
//! timeouts misfire; with the permit, tests with clusters queue, and a test's timeouts start
//! counting only once it has the machine. A single [`Node`] started on its own takes no permit.
//!
//! # The contract with the binaries
//!
//! See [`NodeKind`]: the flags each kind takes, `healthcheck [ADDR]`, logs on stderr, SIGTERM
//! for a graceful stop, and a non-zero exit that logs the OS error ("Address already in use")
//! when the listen port is taken. The harness health-checks by running `<binary> healthcheck
//! ADDR` ([`healthcheck`]), so it needs no gRPC client of its own and tests the same check the
//! container images use. `src/bin/fake-node.rs` honours this contract for the harness's own
//! tests; it is not a stand-in for a service in any other test.

mod cluster;
mod node;
mod process;
mod spec;

pub use cluster::{
    CLUSTERS_ENV, Cluster, ClusterBuilder, ClusterPermit, DEFAULT_CONCURRENT_CLUSTERS,
    KEEP_DIRS_ENV, PERMIT_WAIT, stop_all,
};
pub use node::{DEFAULT_STOP_GRACE, LOG_TAIL_LINES, Node, Stopped, wait_all_serving};
pub use process::{
    BIN_DIR_ENV, HEALTHCHECK_TIMEOUT, Health, Signal, bin_dir, free_ports, healthcheck, kill_0,
    log_tail, port_is_free, process_exists, process_runs, process_state, send_signal,
};
pub use spec::{NodeKind, NodeSpec, toml_path, toml_string};
