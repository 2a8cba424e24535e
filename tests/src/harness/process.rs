//! Process-level helpers: signals, liveness, ports, the `healthcheck` subcommand, log tails,
//! where the binaries are. [`Node`](super::Node) and `cargo xtask cluster-*` are built on these.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// Where the node binaries are looked for first (an absolute path, or relative to the current
/// directory, which for a test is its package's directory).
pub const BIN_DIR_ENV: &str = "TRIBUTARY_BIN_DIR";

/// How long one run of `<binary> healthcheck ADDR` may take before the harness kills it and
/// counts the node as not serving. The coordinator's own `healthcheck` gives up after 5 s; this
/// bound is only for a `healthcheck` that hangs.
pub const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The signals the harness sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: stop gracefully.
    Term,
    /// SIGKILL: kill -9.
    Kill,
    /// SIGSTOP: freeze (pause).
    Stop,
    /// SIGCONT: thaw (resume).
    Cont,
}

fn to_pid(pid: u32) -> io::Result<rustix::process::Pid> {
    i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{pid} is not a process id"),
            )
        })
}

/// Sends `signal` to the process `pid` (`kill(2)`).
pub fn send_signal(pid: u32, signal: Signal) -> io::Result<()> {
    use rustix::process::Signal as S;
    let signal = match signal {
        Signal::Term => S::TERM,
        Signal::Kill => S::KILL,
        Signal::Stop => S::STOP,
        Signal::Cont => S::CONT,
    };
    rustix::process::kill_process(to_pid(pid)?, signal).map_err(io::Error::from)
}

/// `kill(pid, 0)` finds the process (zombies included: a process that has exited but was not
/// yet reaped by its parent still has its id).
pub fn kill_0(pid: u32) -> bool {
    match to_pid(pid) {
        Ok(pid) => match rustix::process::test_kill_process(pid) {
            Ok(()) => true,
            // It exists but belongs to someone else.
            Err(err) => err == rustix::io::Errno::PERM,
        },
        Err(_) => false,
    }
}

/// The process exists and is not a zombie (a zombie has exited; only its parent has not
/// collected its status yet, which is what happens to a detached node under a container's
/// init that does not reap).
pub fn process_exists(pid: u32) -> bool {
    kill_0(pid) && process_state(pid) != Some('Z')
}

/// The one-letter state of a process from `/proc/<pid>/stat` (`R`, `S`, `T` stopped, `Z`
/// zombie, ...), or `None` where there is no `/proc` or no such process.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) S ...`: comm may hold spaces and parentheses, so look after the last `)`.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The process `pid` exists and runs a program whose file is named `binary_name` (checked
/// through `/proc/<pid>/cmdline` where there is a `/proc`). This is what makes a stale pid file
/// harmless: after a reboot its pid may belong to anything.
pub fn process_runs(pid: u32, binary_name: &str) -> bool {
    if !process_exists(pid) {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => {
            let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
            let argv0 = Path::new(std::str::from_utf8(argv0).unwrap_or_default());
            argv0.file_name().is_some_and(|name| name == binary_name)
        }
        // No /proc (not Linux): the pid is all there is to go on.
        Err(_) => true,
    }
}

/// Polls until `done()` or `timeout`; returns whether `done()` held. For waits on the kernel
/// (a process to vanish, to be stopped) where there is nothing to block on.
pub(crate) fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(2);
    loop {
        if done() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(interval.min(deadline - now));
        interval = (interval * 2).min(Duration::from_millis(50));
    }
}

/// Ports handed out by [`free_ports`] in this process: never handed out twice, so two clusters
/// of one test binary cannot be given the same port.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// `n` distinct loopback ports that were free a moment ago: each is bound with port 0 (the
/// kernel picks), all are held until every one is picked, then released. Another process can
/// still take one before the node binds it; [`Cluster`](super::Cluster) then starts the nodes
/// again on new ports.
pub fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let mut held = Vec::with_capacity(n);
    let mut repeats = 0;
    while held.len() < n {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        if handed_out.insert(port) {
            held.push((port, listener));
        } else {
            repeats += 1;
            if repeats > 10_000 {
                return Err(io::Error::other(
                    "the kernel keeps returning ports this process already used",
                ));
            }
        }
    }
    Ok(held.into_iter().map(|(port, _listener)| port).collect())
}

/// Nothing listens on `addr` right now (a bind succeeds).
pub fn port_is_free(addr: SocketAddr) -> bool {
    TcpListener::bind(addr).is_ok()
}

/// What a node's `healthcheck` said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Exit 0: the node reports SERVING.
    Serving,
    /// Anything else, with the reason (the `healthcheck`'s one line, or why it could not run).
    NotServing(String),
}

impl Health {
    /// Whether this is [`Health::Serving`].
    pub fn is_serving(&self) -> bool {
        matches!(self, Health::Serving)
    }
}

/// Runs `<program> healthcheck <addr>` (the node binaries' own check of `grpc.health.v1`,
/// service ""), killing it after `timeout`.
pub fn healthcheck(program: &Path, addr: SocketAddr, timeout: Duration) -> Health {
    let mut child = match Command::new(program)
        .arg("healthcheck")
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            return Health::NotServing(format!(
                "cannot run `{} healthcheck`: {err}",
                program.display()
            ));
        }
    };
    let mut status = None;
    let exited = poll_until(timeout, || match child.try_wait() {
        Ok(Some(s)) => {
            status = Some(Ok(s));
            true
        }
        Ok(None) => false,
        Err(err) => {
            status = Some(Err(err));
            true
        }
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        return Health::NotServing(format!(
            "`healthcheck {addr}` gave no answer within {timeout:?}"
        ));
    }
    let mut out = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut out);
    }
    if out.trim().is_empty()
        && let Some(mut stdout) = child.stdout.take()
    {
        let _ = stdout.read_to_string(&mut out);
    }
    let said = out
        .trim()
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned();
    match status {
        Some(Ok(s)) if s.success() => Health::Serving,
        Some(Ok(s)) if said.is_empty() => Health::NotServing(format!("healthcheck {s}")),
        Some(Ok(_)) => Health::NotServing(said),
        Some(Err(err)) => Health::NotServing(format!("waiting for `healthcheck`: {err}")),
        None => Health::NotServing("`healthcheck` vanished".to_owned()),
    }
}

/// The last `lines` lines of the file at `path` (at most its last 64 KiB), or a note saying
/// why there are none.
pub fn log_tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let text = match read_from(path, None, MAX) {
        Ok(text) => text,
        Err(err) => return format!("(no log: {}: {err})", path.display()),
    };
    let all: Vec<&str> = text.lines().collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    if tail.is_empty() {
        "(the log is empty)".to_owned()
    } else {
        tail.join("\n")
    }
}

/// The text of `path` from byte `offset` on (`None`: the end minus `max`), at most `max` bytes
/// of it (the last ones), lossily decoded.
pub(crate) fn read_from(path: &Path, offset: Option<u64>, max: u64) -> io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = offset.unwrap_or(0).max(len.saturating_sub(max)).min(len);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The directory the node binaries are taken from: `$TRIBUTARY_BIN_DIR`, else the directory of
/// the running executable, one level up from `deps/` or `examples/` (a test runs as
/// `target/<profile>/deps/<test>-<hash>`, an example as `target/<profile>/examples/<name>`,
/// xtask as `target/<profile>/xtask`: all give `target/<profile>`, where cargo puts the
/// workspace's binaries).
pub fn bin_dir() -> io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|dir| !dir.is_empty()) {
        return std::path::absolute(PathBuf::from(dir));
    }
    Ok(bin_dir_of(&std::env::current_exe()?))
}

fn bin_dir_of(exe: &Path) -> PathBuf {
    let dir = exe.parent().unwrap_or(Path::new("."));
    if dir
        .file_name()
        .is_some_and(|name| name == "deps" || name == "examples")
    {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bin_dir_is_the_profile_dir() {
        assert_eq!(
            bin_dir_of(Path::new("/w/target/debug/deps/harness-0123abcd")),
            Path::new("/w/target/debug")
        );
        assert_eq!(
            bin_dir_of(Path::new("/w/target/release/xtask")),
            Path::new("/w/target/release")
        );
        assert_eq!(
            bin_dir_of(Path::new("/w/target/debug/examples/chaos")),
            Path::new("/w/target/debug")
        );
    }

    #[test]
    fn free_ports_are_distinct_and_never_repeat_in_a_process() {
        let a = free_ports(5).unwrap();
        let b = free_ports(5).unwrap();
        let all: BTreeSet<u16> = a.iter().chain(&b).copied().collect();
        assert_eq!(all.len(), 10, "{a:?} {b:?}");
        assert!(
            all.iter()
                .all(|&p| port_is_free((Ipv4Addr::LOCALHOST, p).into()))
        );
    }

    #[test]
    fn this_process_exists_runs_and_is_not_stopped() {
        let me = std::process::id();
        assert!(kill_0(me) && process_exists(me));
        let exe = std::env::current_exe().unwrap();
        assert!(process_runs(me, exe.file_name().unwrap().to_str().unwrap()));
        assert!(!process_runs(me, "tributary-coordinator"));
        // The main thread's state: it waits for the test threads.
        assert!(
            matches!(process_state(me), Some('R' | 'S')),
            "{:?}",
            process_state(me)
        );
    }

    #[test]
    fn a_log_tail_is_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.log");
        let text: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        assert_eq!(log_tail(&path, 2), "line 99\nline 100");
        assert!(log_tail(&dir.path().join("nope"), 2).starts_with("(no log: "));
        assert_eq!(
            read_from(&path, Some(7 * 9), 1 << 20).unwrap(),
            "line 10\n".to_owned()
                + &(11..=100)
                    .map(|i| format!("line {i}\n"))
                    .collect::<String>()
        );
    }
}
