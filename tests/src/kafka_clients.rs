//! Third-party Kafka clients for the Kafka-protocol tests (`tests/kafka_clients.rs`): where
//! `cargo xtask kafka-clients` installed them, and bounded runs of them.
//!
//! - [`Kcat`]: apt's `kcat`, run with Debian's librdkafka or with the newer one bundled in the
//!   confluent-kafka wheel ([`Librdkafka`]; the latter through `LD_LIBRARY_PATH`).
//! - [`run_python`] / [`spawn_python`]: a script of `tests/kafka/` run by the virtual
//!   environment's interpreter (confluent-kafka and kafka-python installed).
//! - [`run_bounded`] / [`Background`]: every run has a deadline; a process past it is killed
//!   and the error names it and shows its stderr. A dropped [`Background`] kills its process.
//!
//! Everything is looked up in `<target>/kafka-clients` (`<target>`: `$CARGO_TARGET_DIR`, else
//! the workspace's `target/`; `$TRIBUTARY_KAFKA_CLIENTS_DIR` overrides the whole path), the
//! place the xtask installs to. Anything missing fails with "run `cargo xtask kafka-clients`
//! first".

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::harness::{Signal, send_signal};

/// Overrides where the installed clients are looked for.
pub const DIR_ENV: &str = "TRIBUTARY_KAFKA_CLIENTS_DIR";

/// What to do when a client is missing.
pub const INSTALL: &str = "run `cargo xtask kafka-clients` first";

/// Lines of stderr an error shows.
const STDERR_TAIL_LINES: usize = 30;

/// `<target>/kafka-clients`, as `cargo xtask kafka-clients` fills it.
pub fn clients_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let root = workspace_root();
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| root.join("target"), |d| root.join(d))
        .join("kafka-clients")
}

/// The workspace root (the tests crate is one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `kcat` on `PATH`.
pub fn kcat_program() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join("kcat"))
        .find(|file| file.is_file())
        .with_context(|| format!("no kcat on PATH: {INSTALL}"))
}

/// The virtual environment's interpreter.
pub fn python() -> Result<PathBuf> {
    python_in(&clients_dir())
}

fn python_in(dir: &Path) -> Result<PathBuf> {
    let python = dir.join("venv").join("bin").join("python");
    if !python.is_file() {
        bail!("no Python venv at {}: {INSTALL}", python.display());
    }
    Ok(python)
}

/// The directory holding `librdkafka.so.1`, a link to the librdkafka of the confluent-kafka
/// wheel (read from `<dir>/librdkafka-dir`).
pub fn bundled_librdkafka_dir() -> Result<PathBuf> {
    bundled_librdkafka_dir_in(&clients_dir())
}

fn bundled_librdkafka_dir_in(dir: &Path) -> Result<PathBuf> {
    let record = dir.join("librdkafka-dir");
    let text = std::fs::read_to_string(&record)
        .with_context(|| format!("reading {}: {INSTALL}", record.display()))?;
    let dir = PathBuf::from(text.trim());
    if !dir.join("librdkafka.so.1").is_file() {
        bail!(
            "{} names {}, which holds no librdkafka.so.1: {INSTALL}",
            record.display(),
            dir.display()
        );
    }
    Ok(dir)
}

/// `tests/kafka/<name>`, which must exist.
pub fn script(name: &str) -> Result<PathBuf> {
    let path = workspace_root().join("tests").join("kafka").join(name);
    if !path.is_file() {
        bail!("no script {}", path.display());
    }
    Ok(path)
}

/// Which librdkafka kcat loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Librdkafka {
    /// The one apt installed with kcat (2.0.2 on Debian 12).
    Debian,
    /// The one bundled in the confluent-kafka wheel, through `LD_LIBRARY_PATH`.
    Bundled,
}

impl Librdkafka {
    /// Both, Debian's first.
    pub const BOTH: [Librdkafka; 2] = [Librdkafka::Debian, Librdkafka::Bundled];
}

/// kcat with one of the two librdkafkas.
#[derive(Debug, Clone)]
pub struct Kcat {
    program: PathBuf,
    library_dir: Option<PathBuf>,
    librdkafka: Librdkafka,
}

impl Kcat {
    /// kcat from `PATH`, loading `librdkafka`.
    pub fn new(librdkafka: Librdkafka) -> Result<Kcat> {
        let library_dir = match librdkafka {
            Librdkafka::Debian => None,
            Librdkafka::Bundled => Some(bundled_librdkafka_dir()?),
        };
        Ok(Kcat {
            program: kcat_program()?,
            library_dir,
            librdkafka,
        })
    }

    /// Which librdkafka it loads.
    pub fn librdkafka(&self) -> Librdkafka {
        self.librdkafka
    }

    /// A command for kcat with `args` (and `LD_LIBRARY_PATH` for the bundled librdkafka).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program);
        command.args(args);
        match &self.library_dir {
            Some(dir) => command.env("LD_LIBRARY_PATH", dir),
            None => command.env_remove("LD_LIBRARY_PATH"),
        };
        command
    }

    fn describe(&self, args: &[&str]) -> String {
        format!("kcat ({:?} librdkafka) {}", self.librdkafka, args.join(" "))
    }

    /// Runs kcat to its end (killed after `timeout`), feeding it `stdin`.
    pub fn run(&self, args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> Result<Finished> {
        run_bounded(
            self.command(args),
            stdin.map(<[u8]>::to_vec),
            timeout,
            &self.describe(args),
        )
    }

    /// Runs kcat to its end and fails unless it exits 0; returns its stdout.
    pub fn run_ok(&self, args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> Result<String> {
        self.run(args, stdin, timeout)?.success()
    }

    /// Starts kcat in the background (stdin closed).
    pub fn spawn(&self, args: &[&str]) -> Result<Background> {
        Background::spawn(self.command(args), self.describe(args))
    }

    /// The librdkafka version kcat runs with (from `kcat -V`: `librdkafka 2.0.2`).
    pub fn librdkafka_version(&self) -> Result<String> {
        let out = self.run_ok(&["-V"], None, Duration::from_secs(10))?;
        out.split(['(', ',', ')'])
            .map(str::trim)
            .find_map(|part| part.strip_prefix("librdkafka "))
            .map(|v| v.split_whitespace().next().unwrap_or(v).to_owned())
            .with_context(|| format!("`kcat -V` names no librdkafka version: {out}"))
    }
}

/// A command for the venv's interpreter running `tests/kafka/<script>` with `args`.
pub fn python_command(script_name: &str, args: &[&str]) -> Result<Command> {
    let mut command = Command::new(python()?);
    // Unbuffered, so a background script's progress lines arrive when printed.
    command.arg("-u").arg(script(script_name)?).args(args);
    // No __pycache__ in the source tree.
    command.env("PYTHONDONTWRITEBYTECODE", "1");
    Ok(command)
}

/// Runs `tests/kafka/<script>` to its end (killed after `timeout`) and fails unless it exits 0;
/// returns its stdout.
pub fn run_python(script_name: &str, args: &[&str], timeout: Duration) -> Result<String> {
    run_bounded(
        python_command(script_name, args)?,
        None,
        timeout,
        &format!("tests/kafka/{script_name} {}", args.join(" ")),
    )?
    .success()
}

/// Starts `tests/kafka/<script>` in the background, its stdin open ([`Background::write_line`]).
pub fn spawn_python(script_name: &str, args: &[&str]) -> Result<Background> {
    let mut command = python_command(script_name, args)?;
    command.stdin(Stdio::piped());
    Background::spawn(
        command,
        format!("tests/kafka/{script_name} {}", args.join(" ")),
    )
}

/// A process that ended.
#[derive(Debug)]
pub struct Finished {
    /// What ran (for messages).
    pub what: String,
    /// How it ended.
    pub status: ExitStatus,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
}

impl Finished {
    /// Its stdout if it exited 0, else an error naming it with its status and stderr.
    pub fn success(self) -> Result<String> {
        if !self.status.success() {
            bail!(
                "`{}` failed ({}); stderr:\n{}",
                self.what,
                self.status,
                tail(&self.stderr, STDERR_TAIL_LINES)
            );
        }
        Ok(self.stdout)
    }
}

/// Runs `command` to its end, with `stdin` (else none), killing it after `timeout`; `what`
/// names it in errors.
pub fn run_bounded(
    mut command: Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    what: &str,
) -> Result<Finished> {
    command.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut process = Background::spawn(command, what.to_owned())?;
    if let Some(bytes) = stdin {
        let mut pipe = process.stdin.take().context("stdin")?;
        // From a thread: a process that fills its stdout before reading all of stdin must not
        // block the feeder (the readers drain stdout).
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    process.finish(timeout)
}

/// One of a process's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Output collected by a reader thread, with a flag for its end.
#[derive(Default)]
struct Collected {
    text: String,
    closed: bool,
}

type Shared = Arc<(Mutex<Collected>, Condvar)>;

/// A running process whose stdout and stderr are collected as they come; killed (-9) when
/// dropped.
pub struct Background {
    what: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stdout: Shared,
    stderr: Shared,
    readers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Background")
            .field("what", &self.what)
            .finish()
    }
}

impl Background {
    /// Starts `command` (stdout and stderr piped; stdin as the command says).
    pub fn spawn(mut command: Command, what: String) -> Result<Background> {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting `{what}`"))?;
        let stdout: Shared = Arc::default();
        let stderr: Shared = Arc::default();
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(collect(out, stdout.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(collect(err, stderr.clone()));
        }
        Ok(Background {
            what,
            stdin: child.stdin.take(),
            child: Some(child),
            stdout,
            stderr,
            readers,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        lock(&self.stdout).text.clone()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        lock(&self.stderr).text.clone()
    }

    /// Waits until a stdout line satisfies `matches` (lines already printed count); returns it.
    /// Fails after `timeout`, or when stdout closes first, naming the process, `what` it
    /// waited for, and its stderr.
    pub fn wait_for_line(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Result<String> {
        self.wait_for(Stream::Stdout, what, timeout, |text| {
            text.lines().find(|l| matches(l)).map(str::to_owned)
        })
    }

    /// Waits until `probe`, given everything printed on `stream` so far, returns `Some` (each
    /// time more arrives); returns that. Fails after `timeout`, or when the stream closes
    /// first, naming the process, `what` it waited for, and its output.
    pub fn wait_for<T>(
        &self,
        stream: Stream,
        what: &str,
        timeout: Duration,
        probe: impl Fn(&str) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let shared = match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        let (mutex, ready) = &**shared;
        let mut seen = mutex.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(value) = probe(&seen.text) {
                return Ok(value);
            }
            let now = Instant::now();
            if seen.closed || now >= deadline {
                let why = if seen.closed {
                    format!("its {stream:?} closed (it exited?) first")
                } else {
                    format!("timed out after {timeout:?}")
                };
                let closed = seen.closed;
                drop(seen);
                if closed {
                    // The process is ending: let the other stream's last lines in, so the
                    // error shows them.
                    let other = match stream {
                        Stream::Stdout => &self.stderr,
                        Stream::Stderr => &self.stdout,
                    };
                    wait_closed(other, Duration::from_secs(2));
                }
                bail!(
                    "`{}`: waiting for {what}: {why}; stdout (tail):\n{}\nstderr (tail):\n{}",
                    self.what,
                    tail(&self.stdout(), 10),
                    tail(&self.stderr(), STDERR_TAIL_LINES)
                );
            }
            seen = ready
                .wait_timeout(seen, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Writes `line` and a newline to its stdin.
    pub fn write_line(&mut self, line: &str) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .with_context(|| format!("`{}` has no stdin to write to", self.what))?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("writing to the stdin of `{}`", self.what))
    }

    /// Closes its stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        send_signal(self.pid(), signal)
            .with_context(|| format!("signalling `{}` ({signal:?})", self.what))
    }

    /// Waits for it to exit by itself, at most `timeout` (then it is killed and this fails,
    /// showing its stderr); returns how it ended and all it printed.
    pub fn finish(mut self, timeout: Duration) -> Result<Finished> {
        self.stdin = None;
        let mut child = self.child.take().context("already finished")?;
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child
                .try_wait()
                .with_context(|| format!("waiting for `{}`", self.what))?
            {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.join_readers();
                bail!(
                    "`{}` did not finish within {timeout:?} and was killed; stderr:\n{}",
                    self.what,
                    tail(&self.stderr(), STDERR_TAIL_LINES)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.join_readers();
        Ok(Finished {
            what: self.what.clone(),
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        })
    }

    /// Sends `signal`, then waits for the exit as [`Background::finish`] does.
    pub fn stop(self, signal: Signal, timeout: Duration) -> Result<Finished> {
        self.signal(signal)?;
        self.finish(timeout)
    }

    fn join_readers(&mut self) {
        // The readers end when the pipes close, which the exit (or kill) has done; a grandchild
        // holding a pipe open could keep one alive, so do not wait for it forever.
        let deadline = Instant::now() + Duration::from_secs(5);
        for reader in self.readers.drain(..) {
            while !reader.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn collect(mut pipe: impl Read + Send + 'static, into: Shared) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(&mut pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    lock(&into).text.push_str(&String::from_utf8_lossy(&line));
                    into.1.notify_all();
                }
            }
        }
        lock(&into).closed = true;
        into.1.notify_all();
    })
}

/// Waits until the reader of `shared` has seen its stream end, at most `timeout`.
fn wait_closed(shared: &Shared, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut collected = lock(shared);
    while !collected.closed {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        collected = shared
            .1
            .wait_timeout(collected, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Collected> {
    shared.0.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_past_its_deadline_is_killed_and_named() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo started >&2; exec sleep 30"]);
        let started = Instant::now();
        let err = run_bounded(command, None, Duration::from_millis(300), "the sleeper")
            .unwrap_err()
            .to_string();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(err.contains("`the sleeper` did not finish"), "{err}");
        assert!(err.contains("started"), "shows stderr: {err}");
    }

    #[test]
    fn a_failed_run_shows_its_stderr_and_stdin_is_fed() -> Result<()> {
        let mut command = Command::new("sh");
        command.args(["-c", "cat; echo oops >&2; exit 3"]);
        let finished = run_bounded(
            command,
            Some(b"fed\n".to_vec()),
            Duration::from_secs(10),
            "sh",
        )?;
        assert_eq!(finished.stdout, "fed\n");
        let err = finished.success().unwrap_err().to_string();
        assert!(err.contains("`sh` failed") && err.contains("oops"), "{err}");
        Ok(())
    }

    #[test]
    fn waiting_for_a_line_ends_at_the_line_or_at_eof() -> Result<()> {
        let mut command = Command::new("sh");
        command.args(["-c", "echo one; echo two; sleep 30"]);
        let background = Background::spawn(command, "lines".into())?;
        let line = background.wait_for_line("two", Duration::from_secs(10), |l| l == "two")?;
        assert_eq!(line, "two");
        drop(background); // killed

        let mut command = Command::new("sh");
        command.args(["-c", "echo one; echo bye >&2"]);
        let background = Background::spawn(command, "short".into())?;
        let err = background
            .wait_for_line("three", Duration::from_secs(10), |l| l == "three")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Stdout closed") && err.contains("bye"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn missing_clients_say_how_to_install_them() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let err = python_in(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("run `cargo xtask kafka-clients` first"),
            "{err}"
        );
        let err = bundled_librdkafka_dir_in(dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("librdkafka-dir") && err.contains(INSTALL),
            "{err}"
        );
        std::fs::write(dir.path().join("librdkafka-dir"), "/nowhere\n")?;
        let err = bundled_librdkafka_dir_in(dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no librdkafka.so.1"), "{err}");
        let ld = dir.path().join("ld");
        std::fs::create_dir(&ld)?;
        std::fs::write(ld.join("librdkafka.so.1"), "elf")?;
        std::fs::write(
            dir.path().join("librdkafka-dir"),
            format!("{}\n", ld.display()),
        )?;
        assert_eq!(bundled_librdkafka_dir_in(dir.path())?, ld);
        Ok(())
    }
}
