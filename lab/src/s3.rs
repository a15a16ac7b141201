//! [`S3Server`]: a real S3 server (s3s-fs, built by `hack/build-s3-peer.sh`) on loopback, with
//! `SigV4` enforced for one access key. s3s-fs keeps each object as a plain file
//! `<root>/<bucket>/<key>`, so tests can also place, damage or remove objects directly, as a
//! tampering attacker or a broken replication would.
//!
//! The server can be stopped and started again on the same port and data, to make object storage
//! unreachable for a while.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tempfile::TempDir;

use crate::process::PeerProcess;

/// The build script, which pins the version.
pub const BUILD_SCRIPT: &str = "hack/build-s3-peer.sh";
/// Overrides the located binary.
pub const OVERRIDE_VAR: &str = "REPLICADR_S3S_FS";

/// The access key every test server accepts.
pub const ACCESS_KEY: &str = "replicadr-e2e";
/// Its secret.
pub const SECRET_KEY: &str = "replicadr-e2e-secret-key";

/// The s3s-fs version hack/versions.env pins.
pub fn pinned_version() -> anyhow::Result<&'static str> {
    crate::peers::require_pinned("S3S_FS_VERSION")
}

/// The s3s-fs binary: `$REPLICADR_S3S_FS`, or the cached build.
pub fn locate() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(OVERRIDE_VAR).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let path = crate::peers::cache_dir()?
        .join(format!("s3s-fs-{}", pinned_version()?))
        .join("bin")
        .join("s3s-fs");
    if !path.is_file() {
        bail!(
            "s3s-fs not found at {}: run `bash {BUILD_SCRIPT}` to build it, or set {OVERRIDE_VAR}",
            path.display()
        );
    }
    Ok(path)
}

/// A running s3s-fs on 127.0.0.1, stopped on drop.
#[derive(Debug)]
pub struct S3Server {
    process: Option<PeerProcess>,
    binary: PathBuf,
    port: u16,
    root: PathBuf,
    dir: TempDir,
}

impl S3Server {
    /// Starts a server with an empty store.
    pub async fn start() -> anyhow::Result<Self> {
        let binary = locate()?;
        let dir = tempfile::Builder::new()
            .prefix("replicadr-s3-")
            .tempdir()
            .context("cannot create the S3 server's directory")?;
        let root = dir.path().join("data");
        std::fs::create_dir_all(&root)?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let mut server = Self {
            process: None,
            binary,
            port,
            root,
            dir,
        };
        server.resume().await?;
        Ok(server)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An HTTPS endpoint in front of this server, its certificate signed by a CA of its own
    /// ([`crate::tls_front::TlsFront::ca_cert`]). It forwards to the port, so it follows
    /// [`Self::pause`] and [`Self::resume`].
    pub async fn serve_tls(&self) -> anyhow::Result<crate::tls_front::TlsFront> {
        crate::tls_front::TlsFront::start("s3s-fs", self.port).await
    }

    /// This server behind a [`crate::slow_link::SlowLink`] handing replies over at
    /// `bytes_per_second`, so a test can stop it in the middle of a download.
    pub async fn behind_slow_link(
        &self,
        bytes_per_second: u64,
    ) -> anyhow::Result<crate::slow_link::SlowLink> {
        crate::slow_link::SlowLink::start(self.port, bytes_per_second).await
    }

    /// The directory holding the buckets.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stops the server (connections are refused until [`Self::resume`]).
    pub fn pause(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// Starts the server again on the same port and data.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        if self.process.is_some() {
            return Ok(());
        }
        let log = self.dir.path().join("s3s-fs.log");
        let args = [
            "--host".to_owned(),
            "127.0.0.1".to_owned(),
            "--port".to_owned(),
            self.port.to_string(),
            "--access-key".to_owned(),
            ACCESS_KEY.to_owned(),
            "--secret-key".to_owned(),
            SECRET_KEY.to_owned(),
            self.root.display().to_string(),
        ];
        let mut process = PeerProcess::spawn("s3s-fs", &self.binary, &args, log)?;
        for _ in 0..100 {
            if let Some(status) = process.exit_status() {
                bail!("s3s-fs exited ({status}):\n{}", process.log_tail());
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                self.process = Some(process);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "s3s-fs does not listen on {} after 5s:\n{}",
            self.port,
            process.log_tail()
        )
    }

    /// Creates a bucket (a directory of the store).
    pub fn create_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.root.join(bucket))?;
        Ok(())
    }

    /// The file holding `key` in `bucket`.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    /// Stores an object.
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let path = self.object_path(bucket, key);
        std::fs::create_dir_all(path.parent().context("a key has a parent")?)?;
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Reads an object.
    pub fn get(&self, bucket: &str, key: &str) -> anyhow::Result<Vec<u8>> {
        let path = self.object_path(bucket, key);
        std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
    }

    /// The AWS shared-credentials file for the server's key, as Velero's Secret holds it.
    pub fn credentials_file(&self) -> String {
        format!("[default]\naws_access_key_id={ACCESS_KEY}\naws_secret_access_key={SECRET_KEY}\n")
    }
}
