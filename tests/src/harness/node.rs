//! [`Node`]: one node process, started from a [`NodeSpec`] (or adopted from its pid file), and
//! everything a test does to it.

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::process::{
    self, HEALTHCHECK_TIMEOUT, Health, Signal, healthcheck, log_tail, poll_until, send_signal,
};
use super::spec::{NodeKind, NodeSpec};

/// How long [`Node::restart`] lets a running node stop gracefully before it kills it.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(30);

/// How many lines of a node's log an error message carries.
pub const LOG_TAIL_LINES: usize = 40;

/// How long the kernel gets to carry out a SIGKILL, SIGSTOP or SIGCONT before the harness
/// reports it as failed.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);

/// How a node was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// It was not running.
    AlreadyDown,
    /// It exited after SIGTERM, within the grace period.
    Terminated,
    /// It was still running at the end of the grace period, and was killed with SIGKILL.
    Killed,
}

#[derive(Debug)]
enum Process {
    /// Started by this `Node`: ours to wait for, and killed when the `Node` is dropped.
    Child(Child),
    /// Found running from its pid file (`cargo xtask cluster-*`): signalled, never reaped, not
    /// killed on drop.
    Adopted(u32),
}

/// One node process.
///
/// A `Node` that started its process kills it (SIGKILL) and reaps it when dropped, panicking
/// test or not, unless [`Node::detach`]ed. Methods that wait are bounded: they take a timeout
/// or use [`SIGNAL_TIMEOUT`]-like bounds of their own.
///
/// The API is synchronous (blocking `std::process`, short sleeps between polls). From an async
/// test, call it directly when nothing else on the test's runtime has to run meanwhile (the
/// nodes are other processes), or through `tokio::task::spawn_blocking` when something does.
#[derive(Debug)]
pub struct Node {
    spec: NodeSpec,
    process: Option<Process>,
    paused: bool,
    starts: u32,
    /// The length of the log when the current process started: what follows is its output.
    log_start: u64,
    last_exit: Option<ExitStatus>,
}

impl Node {
    /// Starts a node process from `spec` (creating its directories, writing its config, its pid
    /// file and a header line in its log) and returns without waiting for it to serve: see
    /// [`Node::wait_serving`].
    pub fn start(spec: NodeSpec) -> Result<Node> {
        let mut node = Node {
            spec,
            process: None,
            paused: false,
            starts: 0,
            log_start: 0,
            last_exit: None,
        };
        node.spawn()?;
        Ok(node)
    }

    /// A `Node` for the process whose pid is in `spec`'s pid file, if that process is alive
    /// and runs `spec`'s binary (a stale pid file gives `None`). An adopted node is not a child
    /// of this process: it is signalled and watched, never reaped, and not killed on drop.
    pub fn adopt(spec: NodeSpec) -> Option<Node> {
        let pid: u32 = fs::read_to_string(spec.pid_path())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let binary = spec.program.file_name()?.to_str()?;
        if !process::process_runs(pid, binary) {
            return None;
        }
        Some(Node {
            spec,
            process: Some(Process::Adopted(pid)),
            paused: false,
            starts: 0,
            log_start: 0,
            last_exit: None,
        })
    }

    fn spawn(&mut self) -> Result<()> {
        let name = self.name().to_owned();
        let spec = &self.spec;
        if !spec.program.is_file() {
            bail!(
                "cannot start {name}: there is no {}\n(build it: `cargo build -p {bin}`, or `cargo \
                 xtask test`, which builds every binary of the workspace before the tests; or \
                 point ${} at the directory that has it)",
                spec.program.display(),
                process::BIN_DIR_ENV,
                bin = spec.kind.binary_name(),
            );
        }
        fs::create_dir_all(spec.data_dir())
            .with_context(|| format!("{name}: creating {}", spec.data_dir().display()))?;
        if let Some(config) = &spec.config {
            fs::write(spec.config_path(), config)
                .with_context(|| format!("{name}: writing {}", spec.config_path().display()))?;
        }
        let log_path = spec.log_path();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("{name}: opening {}", log_path.display()))?;
        self.starts += 1;
        writeln!(log, "--- harness: starting {name}: {}", spec.command_line())?;
        self.log_start = log.metadata()?.len();
        let mut command = spec.command();
        command.stdout(log.try_clone()?).stderr(log);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}: {}", spec.command_line()))?;
        let pid = child.id();
        self.process = Some(Process::Child(child));
        self.paused = false;
        self.last_exit = None;
        fs::write(spec.pid_path(), format!("{pid}\n"))
            .with_context(|| format!("{name}: writing {}", spec.pid_path().display()))?;
        Ok(())
    }

    /// The spec the node runs from.
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// `coordinator-101`, `broker-1`.
    pub fn name(&self) -> String {
        self.spec.name()
    }

    /// The node's kind.
    pub fn kind(&self) -> NodeKind {
        self.spec.kind
    }

    /// The node's id.
    pub fn id(&self) -> u64 {
        self.spec.id
    }

    /// The address it listens on (gRPC).
    pub fn addr(&self) -> SocketAddr {
        self.spec.listen
    }

    /// Where the node serves Prometheus `GET /metrics`, if it was given an endpoint.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.spec.metrics_listen
    }

    /// Its `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.spec.data_dir()
    }

    /// Its log file (stdout and stderr of every start, appended).
    pub fn log_path(&self) -> PathBuf {
        self.spec.log_path()
    }

    /// The pid of its process, while it has one (also while paused).
    pub fn pid(&mut self) -> Option<u32> {
        self.poll_exit();
        match self.process.as_ref()? {
            Process::Child(child) => Some(child.id()),
            Process::Adopted(pid) => Some(*pid),
        }
    }

    /// Whether it is paused by [`Node::pause`].
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Whether its process is alive (paused counts as alive).
    pub fn is_running(&mut self) -> bool {
        self.poll_exit();
        self.process.is_some()
    }

    /// How its last process exited, once it has (`None` while running, and for an adopted
    /// node, whose status only its parent gets).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.poll_exit();
        self.last_exit
    }

    /// Notices an exit: reaps a child, forgets an adopted process that has gone.
    fn poll_exit(&mut self) {
        let exited = match &mut self.process {
            None => return,
            Some(Process::Child(child)) => match child.try_wait() {
                Ok(Some(status)) => {
                    self.last_exit = Some(status);
                    true
                }
                Ok(None) => false,
                // The child is ours, so waiting cannot fail but for a bug; count it as gone.
                Err(_) => true,
            },
            Some(Process::Adopted(pid)) => !process::process_exists(*pid),
        };
        if exited {
            self.process = None;
            self.paused = false;
            // The pid file names a live process or none.
            let _ = fs::remove_file(self.spec.pid_path());
        }
    }

    /// Why the node is not running, for messages.
    fn down_reason(&mut self) -> String {
        match self.exit_status() {
            Some(status) => format!("its process exited ({status})"),
            None if self.starts == 0 && self.process.is_none() => {
                "its process is gone (it was not started by this harness)".to_owned()
            }
            None => "it is not running".to_owned(),
        }
    }

    /// What its `healthcheck` says now (not serving, without running it, when the process is
    /// not alive).
    pub fn health(&mut self) -> Health {
        if !self.is_running() {
            return Health::NotServing(self.down_reason());
        }
        healthcheck(&self.spec.program, self.spec.listen, HEALTHCHECK_TIMEOUT)
    }

    /// Waits until its `healthcheck` reports SERVING (for a coordinator: it has joined Raft and
    /// knows a leader), polling at most every 250 ms. Fails at once if the process exits, and
    /// after `timeout` otherwise; the error names the node and ends with the tail of its log.
    pub fn wait_serving(&mut self, timeout: Duration) -> Result<()> {
        wait_all_serving(std::slice::from_mut(self), timeout)
    }

    /// Waits until it does not report SERVING (down, paused, or not ready), at most `timeout`.
    pub fn wait_not_serving(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let check = remaining.clamp(Duration::from_millis(100), HEALTHCHECK_TIMEOUT);
            if !self.is_running()
                || !healthcheck(&self.spec.program, self.spec.listen, check).is_serving()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.failure(&format!("still SERVING after {timeout:?}")));
            }
            thread::sleep(Duration::from_millis(50).min(remaining));
        }
    }

    /// Kills it with SIGKILL (kill -9) and waits until the process is gone. A node that is not
    /// running is left alone.
    pub fn kill_9(&mut self) -> Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        let name = self.name();
        match self.process.as_mut() {
            Some(Process::Child(child)) => {
                child
                    .kill()
                    .with_context(|| format!("{name}: sending SIGKILL"))?;
                let status = child
                    .wait()
                    .with_context(|| format!("{name}: waiting after SIGKILL"))?;
                self.last_exit = Some(status);
                self.process = None;
                self.paused = false;
                let _ = fs::remove_file(self.spec.pid_path());
            }
            Some(Process::Adopted(pid)) => {
                let pid = *pid;
                send_signal(pid, Signal::Kill)
                    .with_context(|| format!("{name}: sending SIGKILL to {pid}"))?;
                if !poll_until(SIGNAL_TIMEOUT, || !self.is_running()) {
                    bail!("{name}: pid {pid} still alive {SIGNAL_TIMEOUT:?} after SIGKILL");
                }
            }
            None => {}
        }
        Ok(())
    }

    /// Freezes it with SIGSTOP and waits until the kernel reports it stopped: its sockets stay
    /// open but it answers nothing, like a node stuck in a long GC pause or swapped out.
    pub fn pause(&mut self) -> Result<()> {
        let pid = self.running_pid("pause")?;
        send_signal(pid, Signal::Stop).with_context(|| format!("{}: SIGSTOP", self.name()))?;
        self.paused = true;
        if process::process_state(pid).is_some()
            && !poll_until(SIGNAL_TIMEOUT, || {
                matches!(process::process_state(pid), Some('T' | 't') | None)
            })
        {
            bail!(
                "{}: not stopped {SIGNAL_TIMEOUT:?} after SIGSTOP",
                self.name()
            );
        }
        Ok(())
    }

    /// Thaws it with SIGCONT and waits until the kernel reports it no longer stopped.
    pub fn resume(&mut self) -> Result<()> {
        let pid = self.running_pid("resume")?;
        send_signal(pid, Signal::Cont).with_context(|| format!("{}: SIGCONT", self.name()))?;
        self.paused = false;
        if !poll_until(SIGNAL_TIMEOUT, || {
            !matches!(process::process_state(pid), Some('T' | 't'))
        }) {
            bail!(
                "{}: still stopped {SIGNAL_TIMEOUT:?} after SIGCONT",
                self.name()
            );
        }
        Ok(())
    }

    fn running_pid(&mut self, what: &str) -> Result<u32> {
        match self.pid() {
            Some(pid) => Ok(pid),
            None => bail!("cannot {what} {}: {}", self.name(), self.down_reason()),
        }
    }

    /// Stops it: SIGTERM (then SIGCONT, so a paused node can act on it), and SIGKILL if it has
    /// not exited after `grace`. Returns how it went; [`Node::exit_status`] has the status.
    pub fn stop(&mut self, grace: Duration) -> Result<Stopped> {
        self.begin_stop()?;
        self.finish_stop(Instant::now() + grace)
    }

    /// Sends SIGTERM and SIGCONT, if it runs.
    pub(crate) fn begin_stop(&mut self) -> Result<()> {
        if let Some(pid) = self.pid() {
            for signal in [Signal::Term, Signal::Cont] {
                // It may exit in between; only a failure while it is still there counts.
                if let Err(err) = send_signal(pid, signal)
                    && self.is_running()
                {
                    return Err(err).with_context(|| format!("{}: {signal:?}", self.name()));
                }
            }
            self.paused = false;
        }
        Ok(())
    }

    /// Waits until `deadline` for the process to exit after [`Node::begin_stop`], then kills it.
    pub(crate) fn finish_stop(&mut self, deadline: Instant) -> Result<Stopped> {
        if self.process.is_none() {
            return Ok(Stopped::AlreadyDown);
        }
        let grace = deadline.saturating_duration_since(Instant::now());
        if poll_until(grace, || !self.is_running()) {
            return Ok(Stopped::Terminated);
        }
        self.kill_9()?;
        Ok(Stopped::Killed)
    }

    /// Starts it again with the same spec: same data directory, same port, same flags (after
    /// stopping it with [`Node::stop`] and [`DEFAULT_STOP_GRACE`] if it still runs). Does not
    /// wait for it to serve. Should another process have taken the port meanwhile, the node
    /// exits and [`Node::wait_serving`] reports it with the log's "Address already in use".
    pub fn restart(&mut self) -> Result<()> {
        if self.is_running() {
            self.stop(DEFAULT_STOP_GRACE)?;
        }
        self.spawn()
    }

    /// Leaves the process running when this `Node` is dropped, and returns its pid (`cargo
    /// xtask cluster-up`).
    pub fn detach(mut self) -> Option<u32> {
        let pid = self.pid();
        self.process = None;
        pid
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.spec.log_path(), lines)
    }

    /// What the current (or last) process wrote to the log.
    pub fn log_of_this_start(&self) -> String {
        process::read_from(&self.spec.log_path(), Some(self.log_start), 1 << 20).unwrap_or_default()
    }

    /// Whether its process exited because it could not bind its port.
    pub(crate) fn failed_to_bind(&mut self) -> bool {
        if self.is_running() || self.starts == 0 {
            return false;
        }
        let log = self.log_of_this_start().to_ascii_lowercase();
        log.contains("address already in use") || log.contains("address in use")
    }

    /// An error about this node: its name and address, `what`, its log's path and tail.
    pub fn failure(&self, what: &str) -> anyhow::Error {
        failure_message(&self.name(), self.addr(), what, &self.spec.log_path())
    }
}

fn failure_message(name: &str, addr: SocketAddr, what: &str, log: &Path) -> anyhow::Error {
    let mut message = format!("{name} ({addr}): {what}\n  log: {}", log.display());
    let _ = write!(
        message,
        "\n  --- last lines of the log ---\n{}",
        log_tail(log, LOG_TAIL_LINES)
    );
    anyhow!(message)
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(Process::Child(child)) = &mut self.process {
            // SIGKILL works on a stopped process too. Reaping leaves no zombie behind.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until every node reports SERVING, checking them in turns (so a node that exits is
/// noticed at once whichever it is), at most `timeout` in all. Fails at once when a node is not
/// running or exits, naming it and showing its log; after `timeout`, names every node still not
/// serving and shows the first one's log.
pub fn wait_all_serving<'a>(
    nodes: impl IntoIterator<Item = &'a mut Node>,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<(&mut Node, String)> = nodes
        .into_iter()
        .map(|node| (node, String::from("not checked yet")))
        .collect();
    let mut interval = Duration::from_millis(20);
    loop {
        let mut i = 0;
        while i < pending.len() {
            let (node, last) = &mut pending[i];
            if !node.is_running() {
                let reason = node.down_reason();
                return Err(node.failure(&format!("{reason} before it reported SERVING")));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let check = remaining.clamp(Duration::from_secs(1), HEALTHCHECK_TIMEOUT);
            match healthcheck(&node.spec.program, node.spec.listen, check) {
                Health::Serving => {
                    pending.swap_remove(i);
                }
                Health::NotServing(why) => {
                    *last = why;
                    i += 1;
                }
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            let others: Vec<String> = pending[1..]
                .iter()
                .map(|(node, last)| format!("{} ({last})", node.name()))
                .collect();
            let (first, last) = &pending[0];
            let paused = if first.is_paused() {
                " (it is paused)"
            } else {
                ""
            };
            let mut what =
                format!("not SERVING after {timeout:?}{paused}; its last answer: {last}");
            if !others.is_empty() {
                let _ = write!(what, "\n  not SERVING either: {}", others.join(", "));
            }
            return Err(first.failure(&what));
        }
        thread::sleep(interval.min(deadline - now));
        interval = (interval * 2).min(Duration::from_millis(250));
    }
}
