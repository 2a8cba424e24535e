//! HARNESS SELF-TEST FIXTURE. Not a mock of Tributary's services: no test of the coordinator,
//! the brokers or the client may use it. It exists so that the process harness
//! (`tributary_tests::harness`) can be tested before, and independently of, the real binaries.
//!
//! It honours the node binaries' command-line contract and nothing more:
//!
//! - `fake-node (--node-id ID | --broker-id ID) --data-dir DIR --listen ADDR
//!   --advertised-address ADDR [--initial-members ...] [--coordinators ...] [--config FILE]`
//!   binds ADDR, logs to stderr, appends a line to `DIR/starts` (so a test can see a restart
//!   reuse the data directory), and answers health checks until killed. SIGTERM's default
//!   action (exit) stands in for a graceful stop. An unknown flag exits 2, like clap.
//! - `fake-node healthcheck [ADDR]` exits 0 iff the node at ADDR answers SERVING, else prints
//!   one line saying why and exits 1. Its wire protocol is a line over TCP (`health\n` →
//!   `SERVING\n` / `NOT_SERVING\n`), not gRPC: the harness only ever runs the subcommand.
//!
//! Knobs for the harness's tests, from the environment:
//! - `FAKE_NODE_NEVER_SERVING=1`: answer NOT_SERVING forever.
//! - `FAKE_NODE_SERVING_AFTER_MS=N`: answer NOT_SERVING for the first N ms.
//! - `FAKE_NODE_ADDR_IN_USE_ONCE=PATH`: if PATH does not exist, create it and fail to bind
//!   (a real EADDRINUSE: the port is bound twice), as when another process took the port.
//! - `FAKE_NODE_IGNORE_TERM=1`: ignore SIGTERM, as a node stuck in its shutdown would (the
//!   process re-executes itself through `sh -c "trap '' TERM; exec ..."`: an ignored signal
//!   stays ignored across exec, and the pid stays the same).

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("healthcheck") {
        return healthcheck(args.get(1).map_or("127.0.0.1:9191", String::as_str));
    }
    if std::env::var_os("FAKE_NODE_IGNORE_TERM").is_some_and(|v| v == "1") {
        use std::os::unix::process::CommandExt;
        let err = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg("trap '' TERM; exec \"$0\" \"$@\"")
            // As invoked (not `current_exe`, which resolves symlinks): the process keeps the
            // name it was started under.
            .arg(
                std::env::args_os()
                    .next()
                    .unwrap_or_else(|| "fake-node".into()),
            )
            .args(&args)
            .env_remove("FAKE_NODE_IGNORE_TERM")
            .exec();
        eprintln!("fake-node: error: re-executing through /bin/sh: {err}");
        return ExitCode::FAILURE;
    }
    match run(&args) {
        Ok(never) => match never {},
        Err((code, message)) => {
            eprintln!("fake-node: error: {message}");
            ExitCode::from(code)
        }
    }
}

enum Never {}

#[derive(Default)]
struct Flags {
    kind: Option<&'static str>,
    id: Option<u64>,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    advertised_address: Option<String>,
    initial_members: Option<String>,
    coordinators: Option<String>,
    config: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Flags, String> {
    let mut flags = Flags::default();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .cloned()
                .ok_or_else(|| format!("`{flag}` needs a value"))
        };
        match flag.as_str() {
            "--node-id" | "--broker-id" => {
                flags.kind = Some(if flag == "--node-id" {
                    "coordinator"
                } else {
                    "broker"
                });
                let v = value()?;
                flags.id = Some(v.parse().map_err(|_| format!("bad id `{v}`"))?);
            }
            "--data-dir" => flags.data_dir = Some(value()?.into()),
            "--listen" => {
                let v = value()?;
                flags.listen = Some(v.parse().map_err(|_| format!("bad address `{v}`"))?);
            }
            "--advertised-address" => flags.advertised_address = Some(value()?),
            "--initial-members" => flags.initial_members = Some(value()?),
            "--coordinators" => flags.coordinators = Some(value()?),
            "--config" => flags.config = Some(value()?.into()),
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    Ok(flags)
}

fn run(args: &[String]) -> Result<Never, (u8, String)> {
    let usage = |message: String| (2, message);
    let failure = |message: String| (1, message);
    let flags = parse(args).map_err(usage)?;
    let (Some(kind), Some(id)) = (flags.kind, flags.id) else {
        return Err(usage("--node-id or --broker-id is required".into()));
    };
    let data_dir = flags
        .data_dir
        .ok_or_else(|| usage("--data-dir is required".into()))?;
    let listen = flags
        .listen
        .ok_or_else(|| usage("--listen is required".into()))?;
    eprintln!(
        "fake-node: {kind} {id} starting, pid {}, advertised {:?}, initial members {:?}, \
         coordinators {:?}",
        std::process::id(),
        flags.advertised_address,
        flags.initial_members,
        flags.coordinators,
    );
    if let Some(config) = &flags.config {
        let text = fs::read_to_string(config)
            .map_err(|e| failure(format!("reading {}: {e}", config.display())))?;
        eprintln!(
            "fake-node: config {} ({} bytes)",
            config.display(),
            text.len()
        );
    }
    fs::create_dir_all(&data_dir)
        .map_err(|e| failure(format!("creating {}: {e}", data_dir.display())))?;
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join("starts"))
        .and_then(|mut f| writeln!(f, "{}", std::process::id()))
        .map_err(|e| failure(format!("writing {}/starts: {e}", data_dir.display())))?;

    let _taken = match std::env::var_os("FAKE_NODE_ADDR_IN_USE_ONCE") {
        Some(marker) if fs::File::create_new(&marker).is_ok() => {
            eprintln!("fake-node: FAKE_NODE_ADDR_IN_USE_ONCE: taking {listen} first");
            Some(TcpListener::bind(listen).map_err(|e| failure(format!("{listen}: {e}")))?)
        }
        _ => None,
    };
    let listener =
        TcpListener::bind(listen).map_err(|e| failure(format!("failed to bind {listen}: {e}")))?;
    eprintln!("fake-node: listening on {listen}");

    let started = Instant::now();
    let never = std::env::var_os("FAKE_NODE_NEVER_SERVING").is_some_and(|v| v == "1");
    let after = std::env::var("FAKE_NODE_SERVING_AFTER_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::ZERO, Duration::from_millis);
    let mut said_serving = false;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let serving = !never && started.elapsed() >= after;
        if serving && !said_serving {
            eprintln!("fake-node: reporting SERVING");
            said_serving = true;
        }
        // A client that sends nothing is given up on; the loop must not stall.
        let _ = answer(stream, serving);
    }
    Err(failure("the listener stopped accepting".into()))
}

fn answer(stream: TcpStream, serving: bool) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.set_write_timeout(Some(Duration::from_secs(1)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    if line.trim() == "health" {
        let reply = if serving {
            "SERVING\n"
        } else {
            "NOT_SERVING\n"
        };
        (&stream).write_all(reply.as_bytes())?;
    }
    Ok(())
}

fn healthcheck(addr: &str) -> ExitCode {
    match check(addr) {
        Ok(()) => {
            println!("SERVING");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("{why}");
            ExitCode::FAILURE
        }
    }
}

fn check(addr: &str) -> Result<(), String> {
    let timeout = Duration::from_secs(1);
    let sock = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("bad address {addr}"))?;
    let stream = TcpStream::connect_timeout(&sock, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .and_then(|()| (&stream).write_all(b"health\n"))
        .map_err(|e| format!("health check failed: {e}"))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| format!("no answer from {addr}: {e}"))?;
    match line.trim() {
        "SERVING" => Ok(()),
        "" => Err(format!("{addr} closed the connection without answering")),
        other => Err(format!("{addr} is not serving ({other})")),
    }
}
