//! The backup actions over the real binary's socket, without a cluster: what they apply to, and
//! how the v2 service answers a progress poll when the API server cannot be reached. The flows
//! that need a cluster run against a real kube-apiserver in `tests/tests/backup_actions.rs`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use hyper_util::rt::TokioIo;
use replicadr_proto::generated::{
    BackupItemActionAppliesToRequest, ExecuteRequest,
    backup_item_action_client::BackupItemActionClient,
};
use replicadr_proto::v2::{
    self, backup_item_action_client::BackupItemActionClient as BackupItemActionV2Client,
};
use tonic::transport::{Channel, Endpoint, Uri};

const BINARY: &str = env!("CARGO_BIN_EXE_replicadr-velero-plugins");
const PV_RETAIN: &str = "replicadr.io/pv-retain";
const SNAPSHOT_TO_PVC: &str = "replicadr.io/snapshot-to-pvc";

struct Plugin {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Plugin {
    /// Starts the binary as go-plugin does, reading the given kubeconfig.
    fn start(kubeconfig: impl FnOnce(&Path) -> PathBuf) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = kubeconfig(dir.path());
        let mut child = Command::new(BINARY)
            .env("VELERO_PLUGIN", "hello")
            .env("PLUGIN_PROTOCOL_VERSIONS", "2")
            .env("PLUGIN_UNIX_SOCKET_DIR", dir.path())
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("plugin starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("handshake line");
        let socket = PathBuf::from(line.trim_end().split('|').nth(3).expect("socket field"));
        Plugin {
            child,
            socket,
            _dir: dir,
        }
    }

    async fn channel(&self) -> Channel {
        let socket = self.socket.clone();
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
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn no_kubeconfig(dir: &Path) -> PathBuf {
    dir.join("no-such-kubeconfig")
}

/// A kubeconfig whose server is a closed port on loopback: the client builds, every call fails.
fn dead_server_kubeconfig(dir: &Path) -> PathBuf {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{port}', insecure-skip-tls-verify: true}}}}]\nusers: [{{name: u, user: {{token: t}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: u}}}}]\ncurrent-context: c\n"
        ),
    )
    .expect("write kubeconfig");
    path
}

#[tokio::test]
async fn backup_actions_apply_to_their_resources_only() {
    let plugin = Plugin::start(no_kubeconfig);
    let channel = plugin.channel().await;
    let retain = BackupItemActionClient::new(channel.clone())
        .applies_to(BackupItemActionAppliesToRequest {
            plugin: PV_RETAIN.into(),
        })
        .await
        .expect("AppliesTo")
        .into_inner()
        .resource_selector
        .expect("selector");
    assert_eq!(retain.included_resources, vec!["persistentvolumes"]);
    assert!(retain.included_namespaces.is_empty() && retain.excluded_namespaces.is_empty());
    let snapshots = BackupItemActionV2Client::new(channel)
        .applies_to(v2::BackupItemActionAppliesToRequest {
            plugin: SNAPSHOT_TO_PVC.into(),
        })
        .await
        .expect("AppliesTo")
        .into_inner()
        .resource_selector
        .expect("selector");
    assert_eq!(
        snapshots.included_resources,
        vec!["volumesnapshots.snapshot.storage.k8s.io"]
    );
}

#[tokio::test]
async fn without_a_kubeconfig_execute_and_progress_fail_clearly() {
    let plugin = Plugin::start(no_kubeconfig);
    let channel = plugin.channel().await;
    let status = BackupItemActionClient::new(channel.clone())
        .execute(ExecuteRequest {
            plugin: PV_RETAIN.into(),
            item: br#"{"apiVersion":"v1","kind":"PersistentVolume","metadata":{"name":"pv-1"},"spec":{}}"#.to_vec(),
            backup: b"{}".to_vec(),
        })
        .await
        .expect_err("no cluster");
    assert!(
        status.message().contains("Kubernetes"),
        "{}",
        status.message()
    );
    let status = BackupItemActionV2Client::new(channel)
        .progress(v2::BackupItemActionProgressRequest {
            plugin: SNAPSHOT_TO_PVC.into(),
            operation_id: "vms/snap-1/uid".into(),
            backup: b"{}".to_vec(),
        })
        .await
        .expect_err("a missing kubeconfig is a configuration error, not a blip");
    assert!(
        status.message().contains("Kubernetes"),
        "{}",
        status.message()
    );
}

/// Velero marks an operation Failed for good when Progress errors; an unreachable API server must
/// not do that.
#[tokio::test]
async fn progress_with_an_unreachable_api_server_reports_still_running() {
    let plugin = Plugin::start(dead_server_kubeconfig);
    let progress = BackupItemActionV2Client::new(plugin.channel().await)
        .progress(v2::BackupItemActionProgressRequest {
            plugin: SNAPSHOT_TO_PVC.into(),
            operation_id: "vms/snap-1/uid".into(),
            backup: b"{}".to_vec(),
        })
        .await
        .expect("progress answers")
        .into_inner()
        .progress
        .expect("progress is always set");
    assert!(
        !progress.completed && progress.err.is_empty(),
        "{progress:?}"
    );
    assert!(
        progress
            .description
            .contains("cannot read the plugin configuration"),
        "{progress:?}"
    );
    let started = progress.started.expect("started").seconds;
    assert!(started > 1_700_000_000, "{started}");
    assert!(progress.updated.expect("updated").seconds >= started);
}
