//! `replicadr gc`: replica PVCs whose VolumeSnapshot is gone, and their removal.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, Preconditions,
};
use kube::{Client, ResourceExt as _};
use serde::Serialize;

use crate::velero::{self, LABEL_RESTORE_NAME};
use replicadr_core::wire::LABEL_REPLICA_OF_SNAPSHOT_UID;

/// Why gc could not look.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("cannot list VolumeSnapshots, so cannot tell which replica PVCs are orphaned")]
    NoSnapshots(#[source] kube::Error),
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// A replica PVC whose VolumeSnapshot is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Orphan {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub snapshot_uid: String,
    /// The PV the claim is bound to, if any.
    pub volume: Option<String>,
    /// Flattened: `"action": "skippedRestored", "detail": "<restore>"` beside the claim's fields.
    #[serde(flatten)]
    pub action: GcAction,
    /// The claim as it was listed: the delete is refused if it changed since (e.g. it bound to
    /// a PV whose policy was not set to `Retain`).
    #[serde(skip)]
    pub resource_version: Option<String>,
}

/// What gc did, or would do, with one replica PVC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", content = "detail", rename_all = "camelCase")]
pub enum GcAction {
    /// Dry run: `--apply` would delete it.
    WouldDelete,
    /// Deleted; its PV (if any) was set to `Retain` first, so the replica's data stays on the
    /// export until a storage admin removes the Released PV.
    Deleted,
    /// Left in place: a Velero restore created it, so it holds replicated data of another site.
    SkippedRestored(String),
    /// Deleting failed.
    Failed(String),
}

/// `replicadr gc`: replica PVCs (labelled managed-by replicadr) whose source VolumeSnapshot (by
/// UID) no longer exists at this site. Claims a Velero restore created (label
/// `velero.io/restore-name`) are replicas made at another site and are never deleted: their
/// snapshot is not here by design. With `apply`, each orphan's PV is set to `Retain` first, then
/// exactly that claim is deleted, guarded by its UID.
pub async fn gc(client: &Client, apply: bool) -> Result<Vec<Orphan>, GcError> {
    let snapshots: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "snapshot.storage.k8s.io",
            "v1",
            "VolumeSnapshot",
        )),
    );
    let live: HashSet<String> = snapshots
        .list_metadata(&ListParams::default())
        .await
        .map_err(GcError::NoSnapshots)?
        .items
        .into_iter()
        .filter_map(|s| s.metadata.uid)
        .collect();
    let pvcs: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let selector = format!(
        "{}={},{LABEL_REPLICA_OF_SNAPSHOT_UID}",
        velero::LABEL_MANAGED_BY,
        velero::MANAGED_BY
    );
    let mut orphans = Vec::new();
    for pvc in pvcs
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
    {
        let snapshot_uid = pvc
            .labels()
            .get(LABEL_REPLICA_OF_SNAPSHOT_UID)
            .cloned()
            .unwrap_or_default();
        if pvc.metadata.deletion_timestamp.is_some() || live.contains(&snapshot_uid) {
            continue;
        }
        let volume = pvc.spec.as_ref().and_then(|s| s.volume_name.clone());
        let mut orphan = Orphan {
            namespace: pvc.namespace().unwrap_or_default(),
            name: pvc.name_any(),
            uid: pvc.metadata.uid.clone().unwrap_or_default(),
            snapshot_uid,
            volume,
            action: GcAction::WouldDelete,
            resource_version: pvc.metadata.resource_version.clone(),
        };
        if let Some(restore) = pvc.labels().get(LABEL_RESTORE_NAME) {
            orphan.action = GcAction::SkippedRestored(restore.clone());
        } else if apply {
            orphan.action = match delete_keeping_volume(client, &orphan).await {
                Ok(()) => GcAction::Deleted,
                Err(error) => GcAction::Failed(error.to_string()),
            };
        }
        orphans.push(orphan);
    }
    Ok(orphans)
}

/// Sets the claim's PV to `Retain`, then deletes the claim (only that UID).
async fn delete_keeping_volume(client: &Client, orphan: &Orphan) -> Result<(), kube::Error> {
    if let Some(volume) = &orphan.volume {
        retain_volume(client, volume).await?;
    }
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &orphan.namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(orphan.uid.clone()),
            resource_version: orphan.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    api.delete(&orphan.name, &params).await?;
    Ok(())
}

/// Sets a PV's reclaim policy to `Retain`, so deleting its claim never deletes its data. A PV
/// that is already gone needs nothing.
pub async fn retain_volume(client: &Client, name: &str) -> Result<(), kube::Error> {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let patch = serde_json::json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}
