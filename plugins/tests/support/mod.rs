//! The plugin binary started the way go-plugin starts it, and a channel to the socket it
//! announces; shared by the protocol tests of this crate.

#![allow(dead_code, reason = "each test file uses part of the support module")]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

pub const BINARY: &str = env!("CARGO_BIN_EXE_replicadr-velero-plugins");

pub struct Plugin {
    child: Child,
    stdout: BufReader<ChildStdout>,
    stderr: Option<ChildStderr>,
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Plugin {
    /// Starts the binary as go-plugin does, with Velero ≥ 1.15's habit of passing server flags,
    /// and no cluster: configuration lookups fail fast and clearly.
    pub fn start() -> Self {
        Self::start_with_kubeconfig(|dir| dir.join("no-such-kubeconfig"))
    }

    /// Starts the binary with the kubeconfig `kubeconfig` writes into the process's temp dir.
    pub fn start_with_kubeconfig(kubeconfig: impl FnOnce(&Path) -> PathBuf) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = kubeconfig(dir.path());
        let mut command = Command::new(BINARY);
        command
            .args([
                "--log-level",
                "debug",
                "--uploader-type=kopia",
                "--features",
                "EnableCSI",
                "--default-volumes-to-fs-backup",
            ])
            .env("VELERO_PLUGIN", "hello")
            .env("PLUGIN_PROTOCOL_VERSIONS", "2")
            .env("PLUGIN_MIN_PORT", "10000")
            .env("PLUGIN_MAX_PORT", "25000")
            .env("PLUGIN_UNIX_SOCKET_DIR", dir.path())
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("plugin starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("handshake line");
        let fields: Vec<&str> = line.trim_end().split('|').collect();
        assert_eq!(fields.len(), 6, "handshake {line:?}");
        assert_eq!(&fields[..3], &["1", "2", "unix"], "handshake {line:?}");
        assert_eq!(&fields[4..], &["grpc", ""], "handshake {line:?}");
        let socket = PathBuf::from(fields[3]);
        assert!(
            socket.starts_with(dir.path()),
            "socket {} not in PLUGIN_UNIX_SOCKET_DIR",
            socket.display()
        );
        let stderr = child.stderr.take();
        Plugin {
            child,
            stdout,
            stderr,
            socket,
            _dir: dir,
        }
    }

    pub async fn channel(&self) -> Channel {
        let socket = self.socket.clone();
        // go-plugin dials with authority "unused"; any valid authority works the same.
        Endpoint::try_from("http://unused")
            .expect("endpoint")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await
            .expect("connect to plugin socket")
    }

    /// Waits for the process to exit, returning how long it took and the rest of its output.
    pub fn wait_exit(mut self, limit: Duration) -> (Duration, String, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "plugin exited with {status}");
                let mut rest = String::new();
                self.stdout.read_to_string(&mut rest).expect("stdout");
                let mut stderr = String::new();
                self.stderr
                    .take()
                    .expect("stderr")
                    .read_to_string(&mut stderr)
                    .expect("stderr");
                return (start.elapsed(), rest, stderr);
            }
            assert!(
                start.elapsed() < limit,
                "plugin still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
