//! [`VeleroServer`]: the real, pinned Velero server (built by `hack/build-velero-peers.sh`) run out
//! of cluster against a [`crate::TestCluster`], with a plugin directory holding
//! velero-plugin-for-aws and the project's plugin binary. Backups and restores of API objects
//! need no nodes, so everything but volume data works.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use tempfile::TempDir;

use crate::peers::cache_dir;
use crate::process::PeerProcess;
use crate::peers::require_pinned as pinned;

/// The cached `velero` binary (`$REPLICADR_VELERO` overrides).
pub fn velero_binary() -> anyhow::Result<PathBuf> {
    locate(
        "REPLICADR_VELERO",
        &format!("velero-{}", pinned("VELERO_VERSION")?),
        "velero",
    )
}

/// The cached velero-plugin-for-aws binary (`$REPLICADR_VELERO_PLUGIN_FOR_AWS` overrides).
pub fn plugin_for_aws_binary() -> anyhow::Result<PathBuf> {
    locate(
        "REPLICADR_VELERO_PLUGIN_FOR_AWS",
        &format!(
            "velero-plugin-for-aws-{}",
            pinned("VELERO_PLUGIN_FOR_AWS_VERSION")?
        ),
        "velero-plugin-for-aws",
    )
}

fn locate(var: &str, dir: &str, name: &str) -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => cache_dir()?.join(dir).join(name),
    };
    if !path.is_file() {
        bail!(
            "{name} not found at {}: run `bash hack/build-velero-peers.sh`, or set {var}",
            path.display()
        );
    }
    Ok(path)
}

/// Velero's CRDs as the pinned Velero installs them (`velero install --crds-only --dry-run`),
/// generated once per Velero version and kept beside the binary.
pub fn velero_crds() -> anyhow::Result<String> {
    let velero = velero_binary()?;
    let cached = velero.with_file_name("crds.yaml");
    if let Ok(text) = std::fs::read_to_string(&cached) {
        return Ok(text);
    }
    let output = std::process::Command::new(&velero)
        .args(["install", "--crds-only", "--dry-run", "-o", "yaml"])
        .output()
        .with_context(|| format!("cannot run {}", velero.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "velero install --crds-only failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout)?;
    let staging = cached.with_extension(format!("yaml.{}", std::process::id()));
    std::fs::write(&staging, &text)?;
    std::fs::rename(&staging, &cached)?;
    Ok(text)
}
/// A running `velero server`, stopped on drop.
#[derive(Debug)]
pub struct VeleroServer {
    process: PeerProcess,
    dir: TempDir,
}

impl VeleroServer {
    /// Starts Velero for `namespace` with the given plugin binaries (linked into its plugin dir).
    pub fn start(kubeconfig: &Path, namespace: &str, plugins: &[PathBuf]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("replicadr-velero-")
            .tempdir()?;
        let plugin_dir = dir.path().join("plugins");
        std::fs::create_dir_all(&plugin_dir)?;
        for plugin in plugins {
            let name = plugin
                .file_name()
                .context("a plugin path has a file name")?;
            std::os::unix::fs::symlink(plugin, plugin_dir.join(name))?;
        }
        let port = || -> anyhow::Result<u16> {
            Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
                .local_addr()?
                .port())
        };
        let args = vec![
            "server".to_owned(),
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--namespace={namespace}"),
            format!("--plugin-dir={}", plugin_dir.display()),
            "--features=".to_owned(),
            format!("--metrics-address=127.0.0.1:{}", port()?),
            format!("--profiler-address=127.0.0.1:{}", port()?),
            "--store-validation-frequency=5s".to_owned(),
            "--backup-sync-period=0s".to_owned(),
            "--log-level=debug".to_owned(),
        ];
        let log = dir.path().join("velero.log");
        let process = PeerProcess::spawn("velero", &velero_binary()?, &args, log)?;
        Ok(Self { process, dir })
    }

    /// The last lines of Velero's log.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// Every error line Velero logged.
    pub fn errors(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("velero.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("level=error"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The directory holding the plugin dir and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the server has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process.exit_status()
    }
}
