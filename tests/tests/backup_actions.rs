//! The backup actions against a real kube-apiserver, driven through the real plugin binary over its
//! go-plugin socket the way Velero drives them: `Execute` and the first `Progress` in one process,
//! every later `Progress` in a new process. No controllers run, so the tests play the snapshot
//! controller (VolumeSnapshot status) and the provisioner (a PV, the claim's `volumeName` and its
//! `Bound` status) themselves.
//!
//! Build the plugin first: `cargo build -p replicadr-velero-plugins`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Client, Resource as _};
use replicadr_e2e::TestCluster;
use replicadr_e2e::plugin::PluginProcess;
use replicadr_e2e::workspace::{repo_root, workspace_binary};
use replicadr_plugins::actions::snapshot_to_pvc::replica_pvc_name;
use replicadr_proto::generated::{self, backup_item_action_client::BackupItemActionClient};
use replicadr_proto::v2::{self, backup_item_action_client::BackupItemActionClient as V2Client};
use serde_json::{Value, json};
use tonic::transport::Channel;

const SNAPSHOT_TO_PVC: &str = "replicadr.io/snapshot-to-pvc";
const PV_RETAIN: &str = "replicadr.io/pv-retain";
const VELERO_NAMESPACE: &str = "velero";
const NS: &str = "vms";
const CRDS: [&str; 2] = [
    "snapshot.storage.k8s.io.yaml",
    "kubevirt.io_virtualmachines.yaml",
];
const SITE_MAP: &str = "sites: [primary, dr]\nexports:\n  - name: vm-disks\n    primary: {server: nfs-a.example.com, path: /exports/vms}\n    dr: {server: 10.20.0.5, path: /replica/vms}\n";

/// A cluster with the snapshot and VirtualMachine CRDs, storage classes, a VM with a disk PVC, and
/// one plugin ConfigMap carrying the labels of all three plugins.
struct Env {
    cluster: TestCluster,
    client: Client,
    plugin: PathBuf,
}

impl Env {
    async fn start(storage_class_map: &str) -> anyhow::Result<Self> {
        let plugin = workspace_binary("replicadr-velero-plugins")
            .context("build the plugin first: cargo build -p replicadr-velero-plugins")?;
        let cluster = TestCluster::start().await?;
        let client = cluster.client().await?;
        for crd in CRDS {
            let path = repo_root().join("tests/crds").join(crd);
            cluster
                .apply_yaml(
                    &std::fs::read_to_string(&path).with_context(|| path.display().to_string())?,
                )
                .await?;
        }
        cluster.create_namespace(VELERO_NAMESPACE).await?;
        cluster.create_namespace(NS).await?;
        cluster
            .apply_yaml(
                r"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: fast}
provisioner: example.com/array-a
volumeBindingMode: Immediate
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: replicated-nfs}
provisioner: nfs.csi.k8s.io
volumeBindingMode: Immediate
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: replicated-nfs-wffc}
provisioner: nfs.csi.k8s.io
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: vm-1, namespace: vms}
spec: {runStrategy: Halted, template: {spec: {domain: {devices: {}}}}}
",
            )
            .await?;
        let env = Self {
            cluster,
            client,
            plugin,
        };
        env.configure(&[("storageClassMap", storage_class_map)])
            .await?;
        let vm = env.dynamic(&vm_resource(), NS).get("vm-1").await?;
        let disk = json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "disk-1", "namespace": NS, "ownerReferences": [{
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "vm-1",
                "uid": vm.metadata.uid.clone().unwrap_or_default()
            }]},
            "spec": {"accessModes": ["ReadWriteMany"], "volumeMode": "Filesystem", "storageClassName": "fast", "resources": {"requests": {"storage": "4Gi"}}}
        });
        env.pvcs()
            .create(&PostParams::default(), &serde_json::from_value(disk)?)
            .await?;
        Ok(env)
    }

    /// Replaces the shared plugin ConfigMap's data (keys of every plugin). No provisioner runs
    /// here, so `execute` does not wait for a replica to bind unless `extra` says so.
    async fn configure(&self, extra: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut data =
            json!({"localSite": "dr", "siteMap": SITE_MAP, "replicaBindWaitSeconds": "0"});
        for (key, value) in extra {
            data[*key] = json!(value);
        }
        let config_map = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "replicadr-plugins", "namespace": VELERO_NAMESPACE, "labels": {
                "velero.io/plugin-config": "",
                SNAPSHOT_TO_PVC: "BackupItemActionV2",
                PV_RETAIN: "BackupItemAction",
                "replicadr.io/pv-site-remap": "RestoreItemAction",
            }},
            "data": data
        });
        Api::<ConfigMap>::namespaced(self.client.clone(), VELERO_NAMESPACE)
            .patch(
                "replicadr-plugins",
                &PatchParams::apply("backup-actions-test").force(),
                &Patch::Apply(&config_map),
            )
            .await?;
        Ok(())
    }

    fn dynamic(&self, resource: &ApiResource, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, resource)
    }

    fn snapshots(&self) -> Api<DynamicObject> {
        self.dynamic(&snapshot_resource(), NS)
    }

    fn pvcs(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Creates a VolumeSnapshot of `source` as KubeVirt's VM snapshot controller would, and
    /// returns it as read back.
    async fn create_snapshot(&self, name: &str, source: &str) -> anyhow::Result<DynamicObject> {
        let snapshot = json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {
                "name": name, "namespace": NS,
                "labels": {"snapshot.kubevirt.io/source-vm-name": "vm-1", "snapshot.kubevirt.io/source-vm-namespace": NS},
                "ownerReferences": [{"apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshotContent", "name": "vmsnapshot-content-1", "uid": "0b0e6a52-0000-4000-8000-000000000001", "controller": true}]
            },
            "spec": {"source": {"persistentVolumeClaimName": source}, "volumeSnapshotClassName": "array-a"}
        });
        Ok(self
            .snapshots()
            .create(&PostParams::default(), &serde_json::from_value(snapshot)?)
            .await?)
    }

    /// Plays the snapshot controller: the snapshot becomes ready to use.
    async fn make_ready(&self, name: &str) -> anyhow::Result<DynamicObject> {
        let status = json!({"status": {"readyToUse": true, "restoreSize": "5Gi", "boundVolumeSnapshotContentName": format!("snapcontent-{name}"), "creationTime": "2025-01-02T03:04:05Z"}});
        Ok(self
            .snapshots()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await?)
    }

    /// Plays the provisioner: a PV for the claim, the claim's `volumeName`, its `Bound` status.
    async fn bind(&self, claim: &str, volume: &str) -> anyhow::Result<()> {
        let pvc = self.pvcs().get(claim).await?;
        let pv = json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "replicated-nfs",
                "nfs": {"server": "nfs-a.example.com", "path": format!("/exports/vms/{volume}")},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": NS, "name": claim, "uid": pvc.metadata.uid}
            }
        });
        Api::<PersistentVolume>::all(self.client.clone())
            .create(&PostParams::default(), &serde_json::from_value(pv)?)
            .await?;
        self.pvcs()
            .patch(
                claim,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"volumeName": volume}})),
            )
            .await?;
        self.pvcs()
            .patch_status(
                claim,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Bound", "accessModes": ["ReadWriteMany"], "capacity": {"storage": "5Gi"}}})),
            )
            .await?;
        Ok(())
    }

    /// The claims carrying our label for `snapshot_uid`.
    async fn replicas_of(&self, snapshot_uid: &str) -> anyhow::Result<Vec<PersistentVolumeClaim>> {
        Ok(self
            .pvcs()
            .list(&ListParams::default().labels(&format!(
                "app.kubernetes.io/managed-by=replicadr,replicadr.io/replica-of-snapshot-uid={snapshot_uid}"
            )))
            .await?
            .items)
    }

    fn start_plugin(&self) -> Plugin {
        Plugin::start(&self.plugin, self.cluster.kubeconfig_path())
    }

    /// One Velero poll: a new plugin process, one Progress call.
    async fn poll(&self, operation_id: &str) -> anyhow::Result<generated::OperationProgress> {
        self.start_plugin().progress(operation_id).await
    }
}

fn snapshot_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshot",
    ))
}

fn vm_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "kubevirt.io",
        "v1",
        "VirtualMachine",
    ))
}

/// `status.startTimestamp` of the test backup, which operations report as their start.
const BACKUP_STARTED: &str = "2026-11-22T10:00:00Z";
const BACKUP_STARTED_UNIX: i64 = 1_795_341_600;

fn backup() -> Vec<u8> {
    json!({"apiVersion": "velero.io/v1", "kind": "Backup", "metadata": {"name": "b1", "namespace": VELERO_NAMESPACE}, "status": {"phase": "InProgress", "startTimestamp": BACKUP_STARTED}})
        .to_string()
        .into_bytes()
}

fn uid(object: &DynamicObject) -> String {
    object.metadata.uid.clone().unwrap_or_default()
}

fn names(ids: &[generated::ResourceIdentifier]) -> Vec<(String, String)> {
    ids.iter()
        .map(|id| (id.resource.clone(), id.name.clone()))
        .collect()
}

/// The plugin binary started as Velero starts it, killed on drop.
struct Plugin(PluginProcess);

impl Plugin {
    fn start(binary: &Path, kubeconfig: &Path) -> Self {
        Self(PluginProcess::start(binary, kubeconfig, VELERO_NAMESPACE).expect("plugin starts"))
    }

    async fn channel(&self) -> Channel {
        self.0.channel().await.expect("connect to plugin socket")
    }

    /// Execute on a VolumeSnapshot or (as Velero 1.17+ hands them) a PersistentVolumeClaim.
    async fn execute(
        &self,
        item: &impl serde::Serialize,
    ) -> Result<v2::ExecuteResponse, tonic::Status> {
        V2Client::new(self.channel().await)
            .execute(v2::ExecuteRequest {
                plugin: SNAPSHOT_TO_PVC.into(),
                item: serde_json::to_vec(item).expect("json"),
                backup: backup(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn progress(&self, operation_id: &str) -> anyhow::Result<generated::OperationProgress> {
        let progress = V2Client::new(self.channel().await)
            .progress(v2::BackupItemActionProgressRequest {
                plugin: SNAPSHOT_TO_PVC.into(),
                operation_id: operation_id.into(),
                backup: backup(),
            })
            .await?
            .into_inner()
            .progress
            .context("progress is always set")?;
        anyhow::ensure!(
            progress.started.is_some() && progress.updated.is_some(),
            "started and updated are always set: {progress:?}"
        );
        Ok(progress)
    }
}

/// The replica copies the source claim of vm-1's disk, mapped to `replicated-nfs`, and says whose
/// copy it is.
fn assert_replica_of_vm_disk(
    replica: &PersistentVolumeClaim,
    snapshot: &str,
) -> anyhow::Result<()> {
    let spec = serde_json::to_value(&replica.spec)?;
    assert_eq!(
        spec["storageClassName"], "replicated-nfs",
        "mapped from fast"
    );
    assert_eq!(spec["accessModes"], json!(["ReadWriteMany"]));
    assert_eq!(spec["volumeMode"], "Filesystem");
    assert_eq!(
        spec["resources"]["requests"]["storage"], "5Gi",
        "the snapshot's restoreSize"
    );
    assert_eq!(
        spec["dataSource"],
        json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": snapshot})
    );
    let labels = replica.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "replicadr");
    assert_eq!(labels["replicadr.io/vm"], "vm-1");
    let annotations = replica.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(annotations["replicadr.io/replica-of-snapshot"], snapshot);
    assert_eq!(annotations["replicadr.io/source-pvc"], "disk-1");
    assert_eq!(annotations["replicadr.io/source-storage-class"], "fast");
    assert_eq!(
        annotations["replicadr.io/vm-snapshot-content"],
        "vmsnapshot-content-1"
    );

    Ok(())
}

#[tokio::test]
async fn first_backup_creates_a_bound_replica_and_the_next_backup_reuses_it() -> anyhow::Result<()>
{
    let env = Env::start("fast: replicated-nfs").await?;
    env.create_snapshot("snap-1", "disk-1").await?;
    let snapshot = env.make_ready("snap-1").await?;
    let source_before = env.pvcs().get("disk-1").await?;

    let plugin = env.start_plugin();
    let out = plugin.execute(&snapshot).await?;
    let item: Value = serde_json::from_slice(&out.item)?;
    assert_eq!(
        item,
        serde_json::to_value(&snapshot)?,
        "the snapshot is backed up unchanged"
    );
    let replicas = env.replicas_of(&uid(&snapshot)).await?;
    assert_eq!(replicas.len(), 1);
    let replica = &replicas[0];
    let replica_name = replica.metadata.name.clone().unwrap_or_default();
    assert!(replica_name.starts_with("replica-snap-1-") && replica_name.len() <= 63);
    assert_eq!(replica_name, replica_pvc_name("snap-1", &uid(&snapshot)));
    assert_eq!(
        names(&out.additional_items),
        [("persistentvolumeclaims".to_owned(), replica_name.clone())]
    );
    assert!(
        out.post_operation_items.is_empty(),
        "Velero 1.18's finalizer panics on a PVC or PV"
    );
    assert_eq!(out.operation_id, format!("{NS}/snap-1/{}", uid(&snapshot)));

    assert_replica_of_vm_disk(replica, "snap-1")?;

    // Velero's first poll runs on the Execute process.
    let progress = plugin.progress(&out.operation_id).await?;
    assert!(
        !progress.completed && progress.err.is_empty(),
        "{progress:?}"
    );
    assert_eq!((progress.n_completed, progress.n_total), (2, 3));
    assert!(
        progress.description.contains("waiting for it to bind"),
        "{progress:?}"
    );
    drop(plugin);

    env.bind(&replica_name, "pv-replica-1").await?;
    let progress = env.poll(&out.operation_id).await?;
    assert!(
        progress.completed && progress.err.is_empty(),
        "{progress:?}"
    );
    assert_eq!(progress.n_completed, 3);
    assert!(
        progress
            .description
            .contains("bound to PersistentVolume pv-replica-1")
    );

    // The next scheduled backup: same claim, now bound, and its volume along with it.
    let again = env
        .start_plugin()
        .execute(&env.snapshots().get("snap-1").await?)
        .await?;
    assert_eq!(again.operation_id, "", "nothing left to wait for");
    assert_eq!(
        names(&again.additional_items),
        [
            ("persistentvolumeclaims".to_owned(), replica_name.clone()),
            ("persistentvolumes".to_owned(), "pv-replica-1".to_owned())
        ]
    );
    assert_eq!(
        env.replicas_of(&uid(&snapshot)).await?.len(),
        1,
        "no second replica"
    );
    assert_eq!(
        env.pvcs().list(&ListParams::default()).await?.items.len(),
        2
    );

    // Only read: the snapshot and the source claim are exactly as they were.
    let snapshot_after = env.snapshots().get("snap-1").await?;
    assert_eq!(
        snapshot_after.metadata.resource_version,
        snapshot.metadata.resource_version
    );
    let source_after = env.pvcs().get("disk-1").await?;
    assert_eq!(
        source_after.metadata.resource_version,
        source_before.metadata.resource_version
    );
    Ok(())
}

/// Velero 1.17+ excludes VolumeSnapshots from every backup, so the action only ever sees their
/// source claims; Velero 1.14–1.16 hands both in one backup.
#[tokio::test]
async fn a_source_claim_brings_the_replica_of_its_snapshot() -> anyhow::Result<()> {
    let env = Env::start("fast: replicated-nfs").await?;
    env.create_snapshot("snap-c", "disk-1").await?;
    let snapshot = env.make_ready("snap-c").await?;
    let claim = env.pvcs().get("disk-1").await?;

    let plugin = env.start_plugin();
    let out = plugin.execute(&claim).await?;
    let item: Value = serde_json::from_slice(&out.item)?;
    assert_eq!(
        item,
        serde_json::to_value(&claim)?,
        "the claim is backed up unchanged"
    );
    let replicas = env.replicas_of(&uid(&snapshot)).await?;
    assert_eq!(replicas.len(), 1);
    let replica = &replicas[0];
    let replica_name = replica.metadata.name.clone().unwrap_or_default();
    assert!(
        replica_name.starts_with("replica-snap-c-"),
        "{replica_name}"
    );
    assert_replica_of_vm_disk(replica, "snap-c")?;
    assert_eq!(
        names(&out.additional_items),
        [("persistentvolumeclaims".to_owned(), replica_name.clone())]
    );
    assert!(out.post_operation_items.is_empty());
    assert_eq!(out.operation_id, format!("{NS}/snap-c/{}", uid(&snapshot)));

    // Velero 1.16 and earlier: the snapshot in the same backup lands on the same replica.
    let from_snapshot = plugin.execute(&snapshot).await?;
    assert_eq!(from_snapshot.operation_id, out.operation_id);
    assert_eq!(
        names(&from_snapshot.additional_items),
        names(&out.additional_items)
    );
    assert_eq!(env.replicas_of(&uid(&snapshot)).await?.len(), 1);

    // The replica comes back as an additional item of its source: it is not a source itself.
    let replica_object = env.pvcs().get(&replica_name).await?;
    let skipped = plugin.execute(&replica_object).await?;
    assert_eq!(
        serde_json::from_slice::<Value>(&skipped.item)?,
        serde_json::to_value(&replica_object)?
    );
    assert!(skipped.operation_id.is_empty() && skipped.additional_items.is_empty());
    drop(plugin);

    env.bind(&replica_name, "pv-replica-c").await?;
    let progress = env.poll(&out.operation_id).await?;
    assert!(
        progress.completed && progress.err.is_empty(),
        "{progress:?}"
    );

    // The next backup: the bound replica and its volume, nothing to wait for.
    let again = env.start_plugin().execute(&claim).await?;
    assert_eq!(again.operation_id, "");
    assert_eq!(
        names(&again.additional_items),
        [
            ("persistentvolumeclaims".to_owned(), replica_name.clone()),
            ("persistentvolumes".to_owned(), "pv-replica-c".to_owned())
        ]
    );
    assert_eq!(env.replicas_of(&uid(&snapshot)).await?.len(), 1);
    let source_after = env.pvcs().get("disk-1").await?;
    assert_eq!(
        source_after.metadata.resource_version,
        claim.metadata.resource_version
    );
    Ok(())
}

/// Two snapshots of one claim, neither replica bound: both replicas are made, and the one
/// operation Velero takes per item follows one of them.
#[tokio::test]
async fn a_claim_with_two_pending_snapshots_returns_one_operation() -> anyhow::Result<()> {
    let env = Env::start("fast: replicated-nfs").await?;
    env.create_snapshot("snap-a", "disk-1").await?;
    let a = env.make_ready("snap-a").await?;
    env.create_snapshot("snap-b", "disk-1").await?;
    let b = env.make_ready("snap-b").await?;
    let out = env
        .start_plugin()
        .execute(&env.pvcs().get("disk-1").await?)
        .await?;
    let mut replicas = Vec::new();
    for snapshot in [&a, &b] {
        let found = env.replicas_of(&uid(snapshot)).await?;
        assert_eq!(
            found.len(),
            1,
            "one replica of {:?}",
            snapshot.metadata.name
        );
        let operation_id = format!(
            "{NS}/{}/{}",
            snapshot.metadata.name.clone().unwrap_or_default(),
            uid(snapshot)
        );
        replicas.push((
            operation_id,
            found[0].metadata.name.clone().unwrap_or_default(),
        ));
    }
    let mut additional: Vec<&str> = out
        .additional_items
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    additional.sort_unstable();
    let mut expected: Vec<&str> = replicas.iter().map(|(_, name)| name.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(
        additional, expected,
        "both replicas exist and are backed up"
    );
    assert!(
        replicas
            .iter()
            .any(|(operation_id, _)| *operation_id == out.operation_id),
        "the operation follows one of the two snapshots: {}",
        out.operation_id
    );
    assert!(out.post_operation_items.is_empty());
    Ok(())
}

/// The common case with a live provisioner: the replica binds within `replicaBindWaitSeconds`, so
/// `execute` returns it bound, with its PV, and no operation (whose post-operation items Velero
/// 1.18's finalizer could not back up).
#[tokio::test]
async fn a_replica_bound_while_execute_waits_comes_with_its_volume() -> anyhow::Result<()> {
    let env = Env::start("fast: replicated-nfs").await?;
    env.configure(&[
        ("storageClassMap", "fast: replicated-nfs"),
        ("replicaBindWaitSeconds", "20"),
    ])
    .await?;
    env.create_snapshot("snap-q", "disk-1").await?;
    let snapshot = env.make_ready("snap-q").await?;
    let replica_name = replica_pvc_name("snap-q", &uid(&snapshot));

    // Plays the provisioner: binds the replica as soon as it appears.
    let provisioner = async {
        for _ in 0..200 {
            if env.pvcs().get_opt(&replica_name).await?.is_some() {
                return env.bind(&replica_name, "pv-replica-q").await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        anyhow::bail!("the plugin never created {replica_name}")
    };
    let plugin = env.start_plugin();
    let started = std::time::Instant::now();
    let (out, bound) = tokio::join!(plugin.execute(&snapshot), provisioner);
    bound?;
    let out = out?;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "returns once bound, not at the end of the wait: {:?}",
        started.elapsed()
    );
    assert_eq!(
        names(&out.additional_items),
        [
            ("persistentvolumeclaims".to_owned(), replica_name.clone()),
            ("persistentvolumes".to_owned(), "pv-replica-q".to_owned())
        ]
    );
    assert_eq!(out.operation_id, "", "bound: nothing to follow");
    assert!(out.post_operation_items.is_empty());
    assert_replica_of_vm_disk(&env.pvcs().get(&replica_name).await?, "snap-q")?;
    Ok(())
}

#[tokio::test]
async fn a_snapshot_that_becomes_ready_later_is_followed_across_processes() -> anyhow::Result<()> {
    let env = Env::start("fast: replicated-nfs").await?;
    let snapshot = env.create_snapshot("snap-late", "disk-1").await?;
    let out = env.start_plugin().execute(&snapshot).await?;
    assert!(out.additional_items.is_empty(), "nothing exists yet");
    assert!(out.post_operation_items.is_empty());
    assert!(!out.operation_id.is_empty());
    let replica_name = replica_pvc_name("snap-late", &uid(&snapshot));
    assert!(env.replicas_of(&uid(&snapshot)).await?.is_empty());

    let progress = env.poll(&out.operation_id).await?;
    assert!(
        !progress.completed && progress.n_completed == 0,
        "{progress:?}"
    );
    assert!(
        progress
            .description
            .contains("waiting for VolumeSnapshot vms/snap-late")
    );
    assert_eq!(
        progress.started.map(|t| t.seconds),
        Some(BACKUP_STARTED_UNIX),
        "started: the backup's start, the same in every poll"
    );

    env.make_ready("snap-late").await?;
    let progress = env.poll(&out.operation_id).await?;
    assert_eq!(progress.n_completed, 2, "{progress:?}");
    assert_eq!(
        progress.started.map(|t| t.seconds),
        Some(BACKUP_STARTED_UNIX),
        "started does not move once the replica exists"
    );
    let replicas = env.replicas_of(&uid(&snapshot)).await?;
    assert_eq!(
        replicas[0].metadata.name.as_deref(),
        Some(replica_name.as_str())
    );
    assert_replica_of_vm_disk(&replicas[0], "snap-late")?;
    let progress = env.poll(&out.operation_id).await?;
    assert_eq!(progress.n_completed, 2, "{progress:?}");
    env.bind(&replica_name, "pv-late").await?;
    let progress = env.poll(&out.operation_id).await?;
    assert!(
        progress.completed && progress.err.is_empty(),
        "{progress:?}"
    );
    assert_eq!(env.replicas_of(&uid(&snapshot)).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn wait_for_first_consumer_is_reported_and_optionally_accepted() -> anyhow::Result<()> {
    let env = Env::start("fast: replicated-nfs-wffc").await?;
    env.create_snapshot("snap-w", "disk-1").await?;
    let snapshot = env.make_ready("snap-w").await?;
    let out = env.start_plugin().execute(&snapshot).await?;
    assert!(
        out.additional_items.is_empty() && out.post_operation_items.is_empty(),
        "no claim that would never bind"
    );
    let progress = env.poll(&out.operation_id).await?;
    assert!(progress.completed, "{progress:?}");
    for expected in [
        "StorageClass replicated-nfs-wffc",
        "WaitForFirstConsumer",
        "would never bind",
        "createdNotBoundIsDone",
    ] {
        assert!(
            progress.err.contains(expected),
            "{expected:?} missing from {}",
            progress.err
        );
    }
    assert!(env.replicas_of(&uid(&snapshot)).await?.is_empty());

    env.configure(&[
        ("storageClassMap", "fast: replicated-nfs-wffc"),
        ("createdNotBoundIsDone", "true"),
    ])
    .await?;
    let progress = env.poll(&out.operation_id).await?;
    assert!(
        progress.completed && progress.err.is_empty(),
        "{progress:?}"
    );
    assert_eq!(progress.n_completed, 2);
    assert!(
        progress
            .description
            .contains("binds only when a pod uses the claim"),
        "{progress:?}"
    );
    let replicas = env.replicas_of(&uid(&snapshot)).await?;
    assert_eq!(replicas.len(), 1);
    assert_eq!(
        replicas[0]
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref()),
        Some("replicated-nfs-wffc")
    );
    Ok(())
}

#[tokio::test]
async fn a_foreign_claim_with_the_replica_name_fails_and_stays_untouched() -> anyhow::Result<()> {
    let env = Env::start("").await?;
    let snapshot = env.create_snapshot("snap-f", "disk-1").await?;
    // The operation is returned while the snapshot is not ready; then a claim takes the name the
    // replica would get.
    let out = env.start_plugin().execute(&snapshot).await?;
    assert!(out.post_operation_items.is_empty());
    let replica_name = replica_pvc_name("snap-f", &uid(&snapshot));
    let foreign = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": replica_name, "namespace": NS, "labels": {"app": "someone-else"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}}}
    });
    let foreign = env
        .pvcs()
        .create(&PostParams::default(), &serde_json::from_value(foreign)?)
        .await?;
    env.make_ready("snap-f").await?;
    let progress = env.poll(&out.operation_id).await?;
    assert!(progress.completed, "{progress:?}");
    for expected in [
        format!("PersistentVolumeClaim vms/{replica_name}"),
        "VolumeSnapshot vms/snap-f".to_owned(),
        "no label app.kubernetes.io/managed-by=replicadr".to_owned(),
        "left untouched".to_owned(),
    ] {
        assert!(
            progress.err.contains(&expected),
            "{expected:?} missing from {}",
            progress.err
        );
    }
    let after = env.pvcs().get(&replica_name).await?;
    assert_eq!(
        after.metadata.resource_version,
        foreign.metadata.resource_version
    );
    assert_eq!(after.meta().labels, foreign.meta().labels);
    Ok(())
}

#[tokio::test]
async fn a_missing_source_claim_is_named_in_the_error() -> anyhow::Result<()> {
    let env = Env::start("").await?;
    env.create_snapshot("snap-m", "gone-disk").await?;
    let snapshot = env.make_ready("snap-m").await?;
    let out = env.start_plugin().execute(&snapshot).await?;
    assert!(!out.operation_id.is_empty());
    assert!(out.post_operation_items.is_empty());
    let progress = env.poll(&out.operation_id).await?;
    assert!(progress.completed, "{progress:?}");
    assert!(
        progress.err.contains("VolumeSnapshot vms/snap-m")
            && progress
                .err
                .contains("source PersistentVolumeClaim vms/gone-disk does not exist"),
        "{}",
        progress.err
    );
    Ok(())
}

/// A poll that could not reach the API server: still waiting, no error, and saying it retries.
fn assert_retrying(progress: &generated::OperationProgress) {
    assert!(
        !progress.completed && progress.err.is_empty(),
        "{progress:?}"
    );
    assert!(
        progress.description.contains("retrying on the next poll"),
        "{progress:?}"
    );
}

#[tokio::test]
async fn an_unreachable_api_server_delays_the_operation_without_failing_or_duplicating_it()
-> anyhow::Result<()> {
    let mut env = Env::start("fast: replicated-nfs").await?;
    let snapshot = env.create_snapshot("snap-u", "disk-1").await?;
    let out = env.start_plugin().execute(&snapshot).await?;
    env.make_ready("snap-u").await?;

    // One poll while the API server cannot be reached: a kubeconfig pointing at a closed port.
    let dead = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let kubeconfig = std::fs::read_to_string(env.cluster.kubeconfig_path())?.replace(
        &env.cluster.server_url(),
        &format!("https://127.0.0.1:{port}"),
    );
    let dead_kubeconfig = dead.path().join("kubeconfig");
    std::fs::write(&dead_kubeconfig, kubeconfig)?;
    let progress = Plugin::start(&env.plugin, &dead_kubeconfig)
        .progress(&out.operation_id)
        .await?;
    assert_retrying(&progress);
    assert!(env.replicas_of(&uid(&snapshot)).await?.is_empty());

    // The server is back: the operation resumes where it stands.
    let progress = env.poll(&out.operation_id).await?;
    assert_eq!(progress.n_completed, 2, "{progress:?}");
    let replica_name = replica_pvc_name("snap-u", &uid(&snapshot));

    // A fault: the kube-apiserver itself stops while the operation waits for the replica to
    // bind, and a poll comes in the outage. It is reported as waiting, never as failed.
    env.cluster.stop_apiserver();
    let outage = std::time::Instant::now();
    let progress = env.poll(&out.operation_id).await?;
    assert_retrying(&progress);
    env.cluster.restart_apiserver().await?;
    eprintln!(
        "fault figure: kube-apiserver down for {:?}",
        outage.elapsed()
    );
    let progress = env.poll(&out.operation_id).await?;
    assert!(!progress.completed, "still waiting to bind: {progress:?}");
    assert_eq!(env.replicas_of(&uid(&snapshot)).await?.len(), 1);
    env.bind(&replica_name, "pv-u").await?;
    let progress = env.poll(&out.operation_id).await?;
    assert!(
        progress.completed && progress.err.is_empty(),
        "{progress:?}"
    );
    assert_eq!(env.replicas_of(&uid(&snapshot)).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn pv_retain_changes_the_backed_up_copy_only() -> anyhow::Result<()> {
    let env = Env::start("").await?;
    let pvs = Api::<PersistentVolume>::all(env.client.clone());
    let pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "pv-nfs-1"},
        "spec": {
            "capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Delete",
            "nfs": {"server": "nfs-a.example.com", "path": "/exports/vms/pv-nfs-1"}
        }
    });
    let live = pvs
        .create(&PostParams::default(), &serde_json::from_value(pv)?)
        .await?;
    let plugin = env.start_plugin();
    let out = BackupItemActionClient::new(plugin.channel().await)
        .execute(generated::ExecuteRequest {
            plugin: PV_RETAIN.into(),
            item: serde_json::to_vec(&live)?,
            backup: backup(),
        })
        .await?
        .into_inner();
    let copy: Value = serde_json::from_slice(&out.item)?;
    assert_eq!(copy["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(
        copy["metadata"]["annotations"]["replicadr.io/original-reclaim-policy"],
        "Delete"
    );
    assert!(out.additional_items.is_empty());
    let after = pvs.get("pv-nfs-1").await?;
    assert_eq!(
        after.metadata.resource_version,
        live.metadata.resource_version
    );
    assert_eq!(
        after.spec.and_then(|s| s.persistent_volume_reclaim_policy),
        Some("Delete".to_owned()),
        "the live PV keeps its policy"
    );
    Ok(())
}

/// Velero's service account with every permission snapshot-to-pvc needs except creating PVCs.
const RBAC_WITHOUT_PVC_CREATE: &str = r"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: velero-without-pvc-create}
rules:
  - {apiGroups: [''], resources: [configmaps], verbs: [list]}
  - {apiGroups: [''], resources: [persistentvolumeclaims, persistentvolumes], verbs: [get, list]}
  - {apiGroups: [snapshot.storage.k8s.io], resources: [volumesnapshots], verbs: [get]}
  - {apiGroups: [storage.k8s.io], resources: [storageclasses], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: velero-without-pvc-create}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: velero-without-pvc-create}
subjects:
  - {kind: ServiceAccount, name: velero, namespace: velero}
";

#[tokio::test]
async fn a_missing_permission_fails_the_operation_at_once_naming_it() -> anyhow::Result<()> {
    let env = Env::start("fast: replicated-nfs").await?;
    env.cluster.apply_yaml(RBAC_WITHOUT_PVC_CREATE).await?;
    let snapshot = env.create_snapshot("snap-p", "disk-1").await?;
    env.make_ready("snap-p").await?;

    // The plugin process acts as Velero's service account (kubeconfig `as:`), as it would in the
    // Velero pod.
    let mut kubeconfig: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(env.cluster.kubeconfig_path())?)?;
    let user = &mut kubeconfig["users"][0]["user"];
    user["as"] = "system:serviceaccount:velero:velero".into();
    user["as-groups"] =
        serde_yaml_ng::to_value(["system:serviceaccounts", "system:authenticated"])?;
    let dir = tempfile::tempdir()?;
    let restricted = dir.path().join("kubeconfig");
    std::fs::write(&restricted, serde_yaml_ng::to_string(&kubeconfig)?)?;

    let plugin = Plugin::start(&env.plugin, &restricted);
    let out = plugin.execute(&snapshot).await?;
    let progress = plugin.progress(&out.operation_id).await?;
    assert!(progress.completed, "failed, not retrying: {progress:?}");
    assert!(
        progress
            .err
            .contains("cannot create PersistentVolumeClaim vms/")
            && progress.err.contains("forbidden")
            && progress
                .err
                .contains("grant that permission to Velero's service account"),
        "{}",
        progress.err
    );
    assert!(env.replicas_of(&uid(&snapshot)).await?.is_empty());

    // The claim path cannot even list snapshots with these grants. The claim is still backed up,
    // unchanged: an error would make Velero leave it out of the backup (the refusal is logged as
    // an error instead, which Velero counts against the backup).
    let claim = env.pvcs().get("disk-1").await?;
    let out = plugin.execute(&claim).await?;
    assert_eq!(
        serde_json::from_slice::<Value>(&out.item)?,
        serde_json::to_value(&claim)?
    );
    assert!(out.operation_id.is_empty() && out.additional_items.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_broken_config_keeps_claims_in_the_backup_and_fails_snapshots_naming_the_key()
-> anyhow::Result<()> {
    let env = Env::start("").await?;
    env.configure(&[("replicaBindWaitSeconds", "soon")]).await?;
    env.create_snapshot("snap-b", "disk-1").await?;
    let snapshot = env.make_ready("snap-b").await?;
    let claim = env.pvcs().get("disk-1").await?;
    let plugin = env.start_plugin();

    // Velero leaves an item whose action fails out of the backup: the claim must not be lost.
    let out = plugin.execute(&claim).await?;
    let item: Value = serde_json::from_slice(&out.item)?;
    assert_eq!(item, serde_json::to_value(&claim)?);
    assert!(out.operation_id.is_empty() && out.additional_items.is_empty());
    assert!(env.replicas_of(&uid(&snapshot)).await?.is_empty());

    // The snapshot path still says what is wrong, naming the key and the value.
    let error = plugin
        .execute(&snapshot)
        .await
        .expect_err("a broken ConfigMap fails the snapshot item");
    assert!(
        error.message().contains("replicaBindWaitSeconds") && error.message().contains("soon"),
        "{}",
        error.message()
    );
    Ok(())
}
