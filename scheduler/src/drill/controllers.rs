//! The controllers a local site does not run, played by the drill: no pods run there, so nothing
//! binds volumes, takes snapshots or boots VMs. Every few hundred milliseconds the drill does
//! what they would, by writing objects and status:
//! - the PV controller: a claim naming a PV whose claimRef is empty or names it is bound to it;
//! - the NFS CSI provisioner: a claim of the drill's StorageClass gets a new PV on this site's
//!   export (reclaim policy Delete, as provisioned volumes have);
//! - the snapshot controller: a VolumeSnapshot gets a VolumeSnapshotContent and becomes ready;
//! - KubeVirt: a VM whose run strategy runs is reported Running, any other Stopped;
//! - the PV/PVC protection and namespace controllers: a deleted claim or volume loses its
//!   protection finalizer (no pod uses anything here), and a deleted namespace is finalized once
//!   it holds no claim or VM.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::recovery::contents::{run_strategy, strategy_runs};
use crate::recovery::failover::vm_resource;

/// The StorageClass the played provisioner serves.
pub const STORAGE_CLASS: &str = "drill-nfs-csi";
/// csi-driver-nfs's name.
pub const NFS_CSI_DRIVER: &str = "nfs.csi.k8s.io";
const INTERVAL: Duration = Duration::from_millis(300);

/// Where the played provisioner creates volumes.
#[derive(Debug, Clone)]
pub struct Export {
    pub server: String,
    pub share: String,
}

/// The played controllers of one site, stopped on drop.
#[derive(Debug)]
pub struct Played {
    stop: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Played {
    /// Starts playing the controllers against `client`.
    pub fn start(client: Client, export: Export) -> Self {
        let stop = Arc::new(Notify::new());
        let task = {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                loop {
                    if let Err(error) = pass(&client, &export).await {
                        tracing::debug!(%error, "played controllers: pass failed, retrying");
                    }
                    tokio::select! {
                        () = stop.notified() => return,
                        () = tokio::time::sleep(INTERVAL) => {}
                    }
                }
            })
        };
        Self { stop, task }
    }
}

impl Drop for Played {
    fn drop(&mut self) {
        self.stop.notify_one();
        self.task.abort();
    }
}

async fn pass(client: &Client, export: &Export) -> Result<(), kube::Error> {
    finish_deletions(client).await?;
    bind_claims(client, export).await?;
    snapshots(client).await?;
    vms(client).await
}

fn is_bound<T: serde::Serialize>(object: &T) -> bool {
    serde_json::to_value(object)
        .ok()
        .and_then(|v| {
            v.pointer("/status/phase")
                .and_then(Value::as_str)
                .map(|p| p == "Bound")
        })
        .unwrap_or(false)
}

#[expect(
    clippy::too_many_lines,
    reason = "bind, or provision then bind, one claim after the other"
)]
async fn bind_claims(client: &Client, export: &Export) -> Result<(), kube::Error> {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Vec<PersistentVolumeClaim> = Api::<PersistentVolumeClaim>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|pvc| pvc.metadata.deletion_timestamp.is_none() && !is_bound(pvc))
        .collect();
    if claims.is_empty() {
        return Ok(());
    }
    let pvs: HashMap<String, PersistentVolume> = volumes
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|pv| (pv.name_any(), pv))
        .collect();
    for pvc in claims {
        let namespace = pvc.namespace().unwrap_or_default();
        let name = pvc.name_any();
        let uid = pvc.uid().unwrap_or_default();
        let spec = pvc.spec.clone().unwrap_or_default();
        let volume = match spec.volume_name.as_deref().filter(|v| !v.is_empty()) {
            Some(volume) => {
                let Some(pv) = pvs.get(volume) else { continue };
                let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
                let names_other = claim_ref.is_some_and(|r| {
                    r.namespace.as_deref() != Some(namespace.as_str())
                        || r.name.as_deref() != Some(name.as_str())
                });
                if names_other {
                    continue;
                }
                volume.to_owned()
            }
            None if spec.storage_class_name.as_deref() == Some(STORAGE_CLASS) => {
                let volume = format!("pvc-{uid}");
                let size = spec
                    .resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get("storage"))
                    .map_or_else(|| "1Gi".to_owned(), |q| q.0.clone());
                let share = export.share.trim_matches('/');
                let pv: PersistentVolume = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "PersistentVolume",
                    "metadata": {"name": volume, "annotations": {"pv.kubernetes.io/provisioned-by": NFS_CSI_DRIVER}},
                    "spec": {
                        "capacity": {"storage": size},
                        "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteMany".to_owned()]),
                        "persistentVolumeReclaimPolicy": "Delete",
                        "storageClassName": STORAGE_CLASS,
                        "csi": {
                            "driver": NFS_CSI_DRIVER,
                            "volumeHandle": format!("{}#{share}#{volume}#{volume}", export.server),
                            "volumeAttributes": {"server": export.server, "share": export.share, "subdir": volume},
                        },
                    },
                }))
                .expect("a valid PV");
                volumes.create(&PostParams::default(), &pv).await?;
                Api::<PersistentVolumeClaim>::namespaced(client.clone(), &namespace)
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"volumeName": volume}})),
                    )
                    .await?;
                volume
            }
            None => continue,
        };
        volumes
            .patch(
                &volume,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"claimRef": {
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "namespace": namespace, "name": name, "uid": uid,
                }}})),
            )
            .await?;
        volumes
            .patch_status(
                &volume,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Bound"}})),
            )
            .await?;
        let pv = volumes.get(&volume).await?;
        let pv_spec = pv.spec.unwrap_or_default();
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), &namespace)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "phase": "Bound",
                    "accessModes": pv_spec.access_modes,
                    "capacity": pv_spec.capacity,
                }})),
            )
            .await?;
    }
    Ok(())
}

/// Lets deletions finish as the controllers would.
async fn finish_deletions(client: &Client) -> Result<(), kube::Error> {
    let unprotect = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    let params = PatchParams::default();
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    for claim in claims.list(&ListParams::default()).await?.items {
        if claim.metadata.deletion_timestamp.is_some() && !claim.finalizers().is_empty() {
            Api::<PersistentVolumeClaim>::namespaced(
                client.clone(),
                &claim.namespace().unwrap_or_default(),
            )
            .patch(&claim.name_any(), &params, &unprotect)
            .await?;
        }
    }
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    for volume in volumes.list(&ListParams::default()).await?.items {
        if volume.metadata.deletion_timestamp.is_some() && !volume.finalizers().is_empty() {
            volumes
                .patch(&volume.name_any(), &params, &unprotect)
                .await?;
        }
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for namespace in namespaces.list(&ListParams::default()).await?.items {
        let name = namespace.name_any();
        let finalizers = namespace.spec.as_ref().and_then(|s| s.finalizers.as_ref());
        if namespace.metadata.deletion_timestamp.is_none() || finalizers.is_none_or(Vec::is_empty) {
            continue;
        }
        let claims_left = !Api::<PersistentVolumeClaim>::namespaced(client.clone(), &name)
            .list(&ListParams::default().limit(1))
            .await?
            .items
            .is_empty();
        let vms_left =
            !Api::<DynamicObject>::namespaced_with(client.clone(), &name, &vm_resource())
                .list(&ListParams::default().limit(1))
                .await?
                .items
                .is_empty();
        if claims_left || vms_left {
            continue;
        }
        let mut finalized = namespace.clone();
        if let Some(spec) = finalized.spec.as_mut() {
            spec.finalizers = Some(Vec::new());
        }
        namespaces
            .replace_subresource("finalize", &name, &PostParams::default(), &finalized)
            .await?;
    }
    Ok(())
}

fn resource(group: &str, kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, "v1", kind))
}

async fn snapshots(client: &Client) -> Result<(), kube::Error> {
    let snapshot_resource = resource("snapshot.storage.k8s.io", "VolumeSnapshot");
    let content_resource = resource("snapshot.storage.k8s.io", "VolumeSnapshotContent");
    let contents: Api<DynamicObject> = Api::all_with(client.clone(), &content_resource);
    let pending: Vec<DynamicObject> =
        Api::<DynamicObject>::all_with(client.clone(), &snapshot_resource)
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|s| {
                s.data
                    .pointer("/status/readyToUse")
                    .and_then(Value::as_bool)
                    != Some(true)
            })
            .collect();
    for snapshot in pending {
        let namespace = snapshot.namespace().unwrap_or_default();
        let name = snapshot.name_any();
        let uid = snapshot.uid().unwrap_or_default();
        let content_name = format!("snapcontent-{uid}");
        let handle = format!("drill-snapshot-{uid}");
        let source = snapshot
            .data
            .pointer("/spec/source/persistentVolumeClaimName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if contents.get_opt(&content_name).await?.is_none() {
            let mut content = DynamicObject::new(&content_name, &content_resource);
            content.data = json!({"spec": {
                "deletionPolicy": "Delete",
                "driver": NFS_CSI_DRIVER,
                "source": {"volumeHandle": format!("{namespace}/{source}")},
                "volumeSnapshotRef": {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "namespace": namespace, "name": name, "uid": uid},
            }});
            contents.create(&PostParams::default(), &content).await?;
        }
        contents
            .patch_status(
                &content_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"readyToUse": true, "snapshotHandle": handle, "restoreSize": 1_073_741_824_i64}})),
            )
            .await?;
        Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &snapshot_resource)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "readyToUse": true,
                    "boundVolumeSnapshotContentName": content_name,
                    "restoreSize": "1Gi",
                    "creationTime": jiff::Timestamp::now().to_string(),
                }})),
            )
            .await?;
    }
    Ok(())
}

async fn vms(client: &Client) -> Result<(), kube::Error> {
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &vm_resource());
    for vm in all.list(&ListParams::default()).await?.items {
        let runs = strategy_runs(&run_strategy(&vm.data));
        let status = if runs { "Running" } else { "Stopped" };
        if vm
            .data
            .pointer("/status/printableStatus")
            .and_then(Value::as_str)
            == Some(status)
        {
            continue;
        }
        Api::<DynamicObject>::namespaced_with(
            client.clone(),
            &vm.namespace().unwrap_or_default(),
            &vm_resource(),
        )
        .patch_status(
            &vm.name_any(),
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"printableStatus": status, "ready": runs, "created": runs}}),
            ),
        )
        .await?;
    }
    Ok(())
}
