//! [`SchedulerProcess`]: the real `replicadr scheduler` binary run against a [`BackupEnv`], on a
//! loopback metrics port, killed on drop. Build the binaries first: `cargo build --workspace --bins`.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};

use crate::backup_env::BackupEnv;
use crate::workspace::workspace_binary;

/// One replica of the scheduler.
#[derive(Debug)]
pub struct SchedulerProcess {
    child: Child,
    /// Its metrics and health port on 127.0.0.1.
    pub port: u16,
    /// Its identity in the leader Lease.
    pub identity: String,
    log: std::path::PathBuf,
}

impl SchedulerProcess {
    /// Starts replica `identity` (reconciling every second, with a leader Lease of
    /// `lease_seconds`) and returns once it answers `/readyz`.
    pub fn start(env: &BackupEnv, identity: &str, lease_seconds: u64) -> anyhow::Result<Self> {
        let port = free_port()?;
        let log = env.cluster.dir().join(format!("scheduler-{identity}.err"));
        let child = Command::new(workspace_binary("replicadr")?)
            .args([
                "scheduler",
                "--metrics-address",
                &format!("127.0.0.1:{port}"),
                "--identity",
                identity,
                "--tick-seconds",
                "1",
                "--lease-seconds",
                &lease_seconds.to_string(),
            ])
            .env("KUBECONFIG", env.cluster.kubeconfig_path())
            .env("VELERO_NAMESPACE", &env.namespace)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(
                env.cluster.dir().join(format!("scheduler-{identity}.log")),
            )?)
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let scheduler = Self {
            child,
            port,
            identity: identity.to_owned(),
            log,
        };
        let started = Instant::now();
        while !http_get(port, "/readyz", "").is_ok_and(|r| r.contains(" 200 ")) {
            ensure!(
                started.elapsed() < Duration::from_secs(20),
                "scheduler {identity} is not ready after 20s:\n{}",
                scheduler.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(scheduler)
    }

    /// The body of `GET /metrics` with `accept`.
    pub fn scrape(&self, accept: &str) -> anyhow::Result<String> {
        let response = http_get(self.port, "/metrics", &format!("Accept: {accept}\r\n"))?;
        let (_, body) = response.split_once("\r\n\r\n").context("an HTTP answer")?;
        Ok(body.to_owned())
    }

    /// The last lines the scheduler logged, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Kills the process with SIGKILL, as a node loss or an OOM kill does: no shutdown, no Lease
    /// released.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SchedulerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// `GET path` over HTTP/1.0 with `headers` (each line ending in CRLF).
pub fn http_get(port: u16, path: &str, headers: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{headers}\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}
