//! The real Prometheus, built from its Go module by `hack/build-prometheus.sh`: [`promtool`]
//! (offline checks and rule unit tests) and [`PrometheusServer`], a server on loopback that
//! scrapes what a test points it at and evaluates rule files, read back through its HTTP API.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tempfile::TempDir;

use crate::process::PeerProcess;

/// The build script, which pins the version.
pub const BUILD_SCRIPT: &str = "hack/build-prometheus.sh";

/// One of the two binaries the build script makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// The server.
    Prometheus,
    /// The command-line tool.
    Promtool,
}

impl Binary {
    fn name(self) -> &'static str {
        match self {
            Binary::Prometheus => "prometheus",
            Binary::Promtool => "promtool",
        }
    }

    fn override_var(self) -> &'static str {
        match self {
            Binary::Prometheus => "REPLICADR_PROMETHEUS",
            Binary::Promtool => "REPLICADR_PROMTOOL",
        }
    }
}

/// The Prometheus module version hack/versions.env pins.
pub fn pinned_version() -> anyhow::Result<&'static str> {
    crate::peers::require_pinned("PROMETHEUS_VERSION")
}

/// The binary: `$REPLICADR_PROMETHEUS` / `$REPLICADR_PROMTOOL`, or the cached build
/// (`prometheus_bin` / `promtool_bin` in `hack/lib.sh`). Fails, naming the path, when it is missing.
pub fn locate(binary: Binary) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(binary.override_var()).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let path = crate::peers::cache_dir()?
        .join(format!("prometheus-{}", pinned_version()?))
        .join(binary.name());
    if !path.is_file() {
        bail!(
            "{} not found at {}: run `bash {BUILD_SCRIPT}` to build it, or set {}",
            binary.name(),
            path.display(),
            binary.override_var()
        );
    }
    Ok(path)
}

/// What one `promtool` run printed.
#[derive(Debug)]
pub struct PromtoolOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl PromtoolOutput {
    /// Both streams, for assertion messages.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `promtool args…` in `dir`, feeding `stdin` when given.
pub fn promtool<S: AsRef<OsStr>>(
    args: &[S],
    dir: &Path,
    stdin: Option<&str>,
) -> anyhow::Result<PromtoolOutput> {
    let mut child = Command::new(locate(Binary::Promtool)?)
        .args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start promtool")?;
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().context("promtool's stdin")?;
        pipe.write_all(text.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    Ok(PromtoolOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// One sample of an instant query: its labels (with `__name__`) and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A running Prometheus server on 127.0.0.1, stopped on drop. Its data lives in a temporary
/// directory removed with it.
#[derive(Debug)]
pub struct PrometheusServer {
    process: PeerProcess,
    port: u16,
    dir: TempDir,
}

impl PrometheusServer {
    /// Starts a server with `config` (prometheus.yml) after writing `files` (name, text) next to
    /// it (Prometheus resolves relative `rule_files` against the config's directory); waits until
    /// it reports ready.
    pub async fn start(config: &str, files: &[(&str, &str)]) -> anyhow::Result<Self> {
        let binary = locate(Binary::Prometheus)?;
        let dir = tempfile::Builder::new()
            .prefix("replicadr-prometheus-")
            .tempdir()
            .context("cannot create the Prometheus server's directory")?;
        std::fs::write(dir.path().join("prometheus.yml"), config)?;
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text)?;
        }
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let args = [
            format!("--config.file={}", path("prometheus.yml")),
            format!("--storage.tsdb.path={}", path("data")),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=info".to_owned(),
        ];
        let mut process = PeerProcess::spawn(
            "prometheus",
            &binary,
            &args,
            dir.path().join("prometheus.log"),
        )?;
        let started = Instant::now();
        loop {
            if let Some(status) = process.exit_status() {
                bail!("prometheus exited ({status}):\n{}", process.log_tail());
            }
            if http_get(port, "/-/ready").is_ok_and(|(status, _)| status == 200) {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!(
                    "prometheus is not ready on port {port} after 30s:\n{}",
                    process.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self { process, port, dir })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The directory holding the config, the rule files and the TSDB.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// `data` of a successful API response to `GET /api/v1/<path>`.
    pub fn api(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let (status, body) = http_get(self.port, &format!("/api/v1/{path}"))?;
        let mut response: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("GET /api/v1/{path} answered {status}: {body}"))?;
        if response["status"] != "success" {
            bail!("GET /api/v1/{path} answered {status}: {body}");
        }
        Ok(response["data"].take())
    }

    /// The result of the instant query `expr` now, which must be a vector.
    pub fn query(&self, expr: &str) -> anyhow::Result<Vec<Sample>> {
        let data = self.api(&format!("query?query={}", percent_encode(expr)))?;
        if data["resultType"] != "vector" {
            bail!("query {expr} is not a vector: {data}");
        }
        let samples = data["result"]
            .as_array()
            .context("result is a list")?
            .iter()
            .map(|item| {
                let labels = serde_json::from_value(item["metric"].clone())?;
                let value = item["value"][1]
                    .as_str()
                    .context("a sample's value is a string")?
                    .parse::<f64>()?;
                Ok(Sample { labels, value })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(samples)
    }

    /// The alerts now pending or firing, each as the API reports it (`labels`, `state`, …).
    pub fn alerts(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut data = self.api("alerts")?;
        Ok(serde_json::from_value(data["alerts"].take())?)
    }

    /// The health of every scrape target (`"up"`, `"down"`, `"unknown"`), by scrape URL.
    pub fn target_health(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let data = self.api("targets?state=active")?;
        data["activeTargets"]
            .as_array()
            .context("activeTargets is a list")?
            .iter()
            .map(|target| {
                Ok((
                    target["scrapeUrl"].as_str().unwrap_or_default().to_owned(),
                    target["health"].as_str().unwrap_or_default().to_owned(),
                ))
            })
            .collect()
    }
}

/// `GET path` over HTTP/1.0 to 127.0.0.1:`port`: the status code and the body.
fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP header in the answer to {path}: {response}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status in the answer to {path}: {head}"))?;
    Ok((status, body.to_owned()))
}

/// `text` as a URL query value: unreserved characters as they are, every other byte `%XX`.
fn percent_encode(text: &str) -> String {
    use std::fmt::Write as _;
    let mut encoded = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            percent_encode("max by (policy) (x{a=\"b\"}) > 1"),
            "max%20by%20%28policy%29%20%28x%7Ba%3D%22b%22%7D%29%20%3E%201"
        );
    }
}
