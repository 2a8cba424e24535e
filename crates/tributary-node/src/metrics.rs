//! Prometheus metrics: counters, gauges and histograms over atomics, the text exposition format
//! (version 0.0.4), and a minimal HTTP endpoint serving `GET /metrics` on a node's metrics
//! port. No dependency: the format is a few lines of text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Request-latency histogram buckets, in seconds (Prometheus' convention).
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A monotonically rising count, per label set.
#[derive(Debug, Default)]
pub struct Counter(Mutex<BTreeMap<Vec<(String, String)>, u64>>);

impl Counter {
    /// Adds `n` to the series with `labels`.
    pub fn add(&self, labels: &[(&str, &str)], n: u64) {
        let key = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert(0) += n;
    }

    /// Writes every series as `name`.
    pub fn render(&self, out: &mut Exposition, name: &str, help: &str) {
        out.header(name, help, "counter");
        for (labels, value) in self.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let labels: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            out.sample(name, &labels, *value as f64);
        }
    }
}

/// A latency histogram per label set, with [`LATENCY_BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram(Mutex<BTreeMap<Vec<(String, String)>, HistogramSeries>>);

#[derive(Debug, Default, Clone)]
struct HistogramSeries {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    /// Records one observation of `value` in the series with `labels`.
    pub fn observe(&self, labels: &[(&str, &str)], value: Duration) {
        let key = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let secs = value.as_secs_f64();
        let mut series = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let s = series.entry(key).or_default();
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                s.buckets[i] += 1;
            }
        }
        s.count += 1;
        s.sum += secs;
    }

    /// Writes every series as `name` (`_bucket`, `_sum`, `_count`).
    pub fn render(&self, out: &mut Exposition, name: &str, help: &str) {
        out.header(name, help, "histogram");
        for (labels, s) in self.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let base: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                let le = bound.to_string();
                let mut l = base.clone();
                l.push(("le", &le));
                out.sample(&format!("{name}_bucket"), &l, s.buckets[i] as f64);
            }
            let mut l = base.clone();
            l.push(("le", "+Inf"));
            out.sample(&format!("{name}_bucket"), &l, s.count as f64);
            out.sample(&format!("{name}_sum"), &base, s.sum);
            out.sample(&format!("{name}_count"), &base, s.count as f64);
        }
    }
}

/// A counter without labels, for hot paths.
#[derive(Debug, Default)]
pub struct FastCounter(AtomicU64);

impl FastCounter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Prometheus text being written.
#[derive(Debug, Default)]
pub struct Exposition(String);

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Exposition {
    /// `# HELP` and `# TYPE` lines.
    pub fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A gauge with one sample.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.header(name, help, "gauge");
        self.sample(name, labels, value);
    }

    /// The text.
    pub fn finish(self) -> String {
        self.0
    }
}

/// The series [`process_metrics`] renders.
pub const PROCESS_METRICS: [&str; 2] = ["process_resident_memory_bytes", "process_open_fds"];

/// Every series of `families`, each histogram's as `_bucket`, `_sum` and `_count`.
pub fn series_names(families: &[&str], histograms: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = families.iter().map(|f| f.to_string()).collect();
    for h in histograms {
        out.extend(["_bucket", "_sum", "_count"].map(|s| format!("{h}{s}")));
    }
    out
}

/// The process's resident memory in bytes and open file descriptors (Linux `/proc/self`).
pub fn process_metrics(out: &mut Exposition) {
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm")
        && let Some(rss_pages) = statm
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<f64>().ok())
    {
        out.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            &[],
            rss_pages * 4096.0,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            &[],
            fds.count() as f64,
        );
    }
}

/// Binds `addr` (when a metrics endpoint is configured) and serves `render`'s text there in a
/// task of its own; `None` when `addr` is.
pub async fn spawn(
    addr: Option<std::net::SocketAddr>,
    render: impl Fn() -> String + Send + Sync + 'static,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    use anyhow::Context;
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint {addr}"))?;
    Ok(Some(tokio::spawn(serve(listener, Arc::new(render)))))
}

/// Serves `GET /metrics` with `render`'s text on `listener` until the task is dropped. Any
/// other request gets 404; each connection answers one request and closes.
pub async fn serve(listener: TcpListener, render: Arc<dyn Fn() -> String + Send + Sync>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let mut request = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => {
                            request.extend_from_slice(&buf[..n]);
                            if request.windows(4).any(|w| w == b"\r\n\r\n") {
                                return true;
                            }
                            if request.len() > 8192 {
                                return false;
                            }
                        }
                    }
                }
            })
            .await;
            if !matches!(read, Ok(true)) {
                return;
            }
            let line = request.split(|&b| b == b'\n').next().unwrap_or_default();
            let (status, body) = if line.starts_with(b"GET /metrics") {
                ("200 OK", render())
            } else {
                ("404 Not Found", "only /metrics is served here\n".to_owned())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Checks that every metric family named in `source` (a file's text: each string literal that
/// starts with `tributary_`) is in `families` or `histograms`, so `--print-metric-names` lists
/// whole what the file renders. For the servers' tests; panics naming the first one missing.
pub fn assert_every_family_listed(source: &str, families: &[&str], histograms: &[&str]) {
    let mut found = 0;
    for literal in source.split('"').skip(1).step_by(2) {
        if literal.starts_with("tributary_") && !literal.contains(' ') {
            found += 1;
            assert!(
                families.contains(&literal) || histograms.contains(&literal),
                "{literal} is rendered but not in FAMILIES or HISTOGRAMS"
            );
        }
    }
    assert!(
        found > families.len(),
        "only {found} metric names found in the source"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format() {
        let c = Counter::default();
        c.add(&[("api", "produce")], 2);
        c.add(&[("api", "produce")], 1);
        let h = Histogram::default();
        h.observe(&[("api", "fetch")], Duration::from_millis(3));
        let mut out = Exposition::default();
        c.render(&mut out, "requests_total", "Requests.");
        h.render(&mut out, "request_seconds", "Latency.");
        out.gauge("up", "Up.", &[("a", "x\"y")], 1.0);
        let text = out.finish();
        assert!(
            text.contains("# TYPE requests_total counter\nrequests_total{api=\"produce\"} 3\n")
        );
        assert!(text.contains("request_seconds_bucket{api=\"fetch\",le=\"0.0025\"} 0\n"));
        assert!(text.contains("request_seconds_bucket{api=\"fetch\",le=\"0.005\"} 1\n"));
        assert!(text.contains("request_seconds_bucket{api=\"fetch\",le=\"+Inf\"} 1\n"));
        assert!(text.contains("request_seconds_count{api=\"fetch\"} 1\n"));
        assert!(text.contains("up{a=\"x\\\"y\"} 1\n"));
    }

    #[tokio::test]
    async fn the_endpoint_serves_metrics_and_404s_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(|| "up 1\n".to_owned())));
        for (path, expect) in [("/metrics", "200 OK"), ("/other", "404")] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut response = String::new();
            s.read_to_string(&mut response).await.unwrap();
            assert!(response.contains(expect), "{response}");
            if path == "/metrics" {
                assert!(response.ends_with("\r\n\r\nup 1\n"));
            }
        }
        server.abort();
    }
}
