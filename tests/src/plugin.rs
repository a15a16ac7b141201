//! The plugin binary started the way Velero starts it (cookie, protocol version, socket directory,
//! Velero's namespace and a kubeconfig), and a gRPC channel to the socket it announces.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, bail};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// A running plugin process, killed on drop.
#[derive(Debug)]
pub struct PluginProcess {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl PluginProcess {
    /// Starts `binary` as go-plugin does and waits for its handshake line. Its JSON logs are
    /// discarded (they would interleave with test output); what the tests check comes back in
    /// responses.
    pub fn start(binary: &Path, kubeconfig: &Path, velero_namespace: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut child = Command::new(binary)
            .env("VELERO_PLUGIN", "hello")
            .env("PLUGIN_PROTOCOL_VERSIONS", "2")
            .env("PLUGIN_UNIX_SOCKET_DIR", dir.path())
            .env("VELERO_NAMESPACE", velero_namespace)
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("no stdout pipe")?).read_line(&mut line)?;
        let Some(socket) = line.trim_end().split('|').nth(3) else {
            bail!("unexpected handshake line {line:?}");
        };
        Ok(Self {
            child,
            socket: PathBuf::from(socket),
            _dir: dir,
        })
    }

    /// A channel to the plugin's socket (authority `unused`, as go-plugin dials).
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let socket = self.socket.clone();
        Ok(Endpoint::try_from("http://unused")?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await?)
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
