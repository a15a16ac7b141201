//! [`VeleroServer`]: the real, pinned Velero server (built by `hack/build-velero-peers.sh`) run out
//! of cluster against a [`crate::TestCluster`], with a plugin directory holding
//! velero-plugin-for-aws and the project's plugin binary. Backups and restores of API objects
//! need no nodes, so everything but volume data works.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams,
};
use serde_json::json;
use tempfile::TempDir;

use crate::peers::cache_dir;
use crate::peers::require_pinned as pinned;
use crate::process::PeerProcess;

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
/// The field manager of what the harness applies.
const FIELD_MANAGER: &str = "replicadr-lab";

/// Velero's plugin-config labels for the project's plugins.
pub const PLUGIN_CONFIG_LABELS: [(&str, &str); 6] = [
    ("velero.io/plugin-config", ""),
    ("replicadr.io/pv-retain", "BackupItemAction"),
    ("replicadr.io/snapshot-to-pvc", "BackupItemActionV2"),
    ("replicadr.io/pv-site-remap", "RestoreItemAction"),
    ("replicadr.io/kubevirt-restore", "RestoreItemAction"),
    ("replicadr.io/kubevirt-backup", "BackupItemActionV2"),
];

/// The name of the plugins' ConfigMap.
pub const PLUGIN_CONFIGMAP: &str = "replicadr-plugins";

/// Creates or replaces the Secret `name` in `namespace` holding `text` under `key`.
pub async fn put_credentials(
    client: &Client,
    namespace: &str,
    name: &str,
    key: &str,
    text: &str,
) -> anyhow::Result<()> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            key.to_owned(),
            ByteString(text.as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .with_context(|| format!("cannot write Secret {namespace}/{name}"))?;
    Ok(())
}

/// Where a BackupStorageLocation points.
#[derive(Debug, Clone)]
pub struct ObjectStorage<'a> {
    pub endpoint: &'a str,
    pub bucket: &'a str,
    pub prefix: &'a str,
    /// The PEM CA bundle of an HTTPS endpoint's certificate (`spec.objectStorage.caCert`).
    pub ca_cert: Option<&'a str>,
}

/// `BackupStorageLocation` as a dynamic resource.
pub fn storage_location_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "velero.io",
        "v1",
        "BackupStorageLocation",
    ))
}

/// Creates or replaces an AWS-provider BackupStorageLocation on an S3 endpoint (path style),
/// the default one when named `default`.
pub async fn put_storage_location(
    client: &Client,
    namespace: &str,
    name: &str,
    storage: &ObjectStorage<'_>,
    credential: Option<(&str, &str)>,
) -> anyhow::Result<()> {
    let mut spec = json!({
        "provider": "aws",
        "default": name == "default",
        "objectStorage": {"bucket": storage.bucket, "prefix": storage.prefix},
        "config": {
            "region": "us-east-1",
            "s3Url": storage.endpoint,
            "s3ForcePathStyle": "true",
            "checksumAlgorithm": "",
        },
    });
    if let Some((secret, key)) = credential {
        spec["credential"] = json!({"name": secret, "key": key});
    }
    if let Some(pem) = storage.ca_cert {
        spec["objectStorage"]["caCert"] =
            serde_json::to_value(ByteString(pem.as_bytes().to_vec()))?;
    }
    let object = json!({
        "apiVersion": "velero.io/v1", "kind": "BackupStorageLocation",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    });
    Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &storage_location_resource())
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .with_context(|| format!("cannot write BackupStorageLocation {namespace}/{name}"))?;
    Ok(())
}

/// Creates or replaces the plugins' ConfigMap (with Velero's plugin-config labels) in `namespace`.
pub async fn put_plugin_config(
    client: &Client,
    namespace: &str,
    data: &[(&str, &str)],
) -> anyhow::Result<()> {
    let configmap = ConfigMap {
        metadata: ObjectMeta {
            name: Some(PLUGIN_CONFIGMAP.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(
                PLUGIN_CONFIG_LABELS
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .patch(
            PLUGIN_CONFIGMAP,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&configmap),
        )
        .await
        .with_context(|| format!("cannot write ConfigMap {namespace}/{PLUGIN_CONFIGMAP}"))?;
    Ok(())
}

/// Creates the `velero` Deployment `velero install` would create, with the pinned image. Nothing
/// runs it (Velero runs as a local process), but Velero's restores read it: the pod-volume restore
/// action takes its restore-helper image from it and fails every restore when it is missing.
pub async fn put_server_deployment(client: &Client, namespace: &str) -> anyhow::Result<()> {
    let version = pinned("VELERO_VERSION")?;
    let labels = json!({"component": "velero", "deploy": "velero"});
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "velero", "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "velero", "image": format!("velero/velero:{version}"), "command": ["/velero"], "args": ["server"]}]},
            },
        },
    });
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment")),
    );
    api.patch(
        "velero",
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&deployment),
    )
    .await
    .with_context(|| format!("cannot write Deployment {namespace}/velero"))?;
    Ok(())
}

/// A running `velero server`, stopped on drop.
#[derive(Debug)]
pub struct VeleroServer {
    process: PeerProcess,
    dir: TempDir,
}

impl VeleroServer {
    /// Starts Velero for `namespace` with the given plugin binaries (linked into its plugin dir),
    /// debug logging, and backup sync off.
    pub fn start(kubeconfig: &Path, namespace: &str, plugins: &[PathBuf]) -> anyhow::Result<Self> {
        Self::start_with(
            kubeconfig,
            namespace,
            plugins,
            &[
                "--backup-sync-period=0s".to_owned(),
                "--log-level=debug".to_owned(),
            ],
        )
    }

    /// Starts Velero with more flags after the harness's own (a later flag wins).
    pub fn start_with(
        kubeconfig: &Path,
        namespace: &str,
        plugins: &[PathBuf],
        extra_args: &[String],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("replicadr-velero-")
            .tempdir()?;
        let plugin_dir = dir.path().join("plugins");
        std::fs::create_dir_all(&plugin_dir)?;
        for plugin in plugins {
            let name = plugin
                .file_name()
                .context("a plugin path has a file name")?;
            // The link lives elsewhere: a relative path would dangle.
            let target = plugin
                .canonicalize()
                .with_context(|| format!("plugin binary {}", plugin.display()))?;
            std::os::unix::fs::symlink(target, plugin_dir.join(name))?;
        }
        let port = || -> anyhow::Result<u16> {
            Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
                .local_addr()?
                .port())
        };
        let mut args = vec![
            "server".to_owned(),
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--namespace={namespace}"),
            format!("--plugin-dir={}", plugin_dir.display()),
            "--features=".to_owned(),
            format!("--metrics-address=127.0.0.1:{}", port()?),
            format!("--profiler-address=127.0.0.1:{}", port()?),
            "--store-validation-frequency=5s".to_owned(),
        ];
        args.extend_from_slice(extra_args);
        let log = dir.path().join("velero.log");
        // Velero keeps credentials files under $TMPDIR/credentials and rewrites them in place
        // (truncate, then write) on every use: servers sharing a directory read each other's
        // half-written files. Each server gets its own.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp)?;
        let process = PeerProcess::spawn_with_env(
            "velero",
            &velero_binary()?,
            &args,
            &[("TMPDIR", &tmp)],
            log,
        )?;
        Ok(Self { process, dir })
    }

    /// Kills the server at once (SIGKILL), as a crash or a lost node would.
    pub fn kill(&mut self) {
        self.process.stop();
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("velero.log")
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
