//! `replicadr.io/kubevirt-backup`: at backup time, writes on the backed-up copies what only the
//! source site can tell about a `DataVolume`'s claim, so the restore at the other site decides
//! right:
//! - a claim a `DataVolume` owns gets kubevirt-velero-plugin's mark, exactly as that plugin writes
//!   it: `cdi.kubevirt.io/storage.populatedFor: <DataVolume>` when the `DataVolume` had
//!   succeeded (CDI adopts the claim at the other site), `kvp.kubevirt.io/storage.inprogress:
//!   <DataVolume>` when not (the restore leaves the claim out: its disk is not complete);
//! - a PV whose claim a restore would leave out (that mark, or an unfinished CDI import) gets
//!   `replicadr.io/claim-left-out`, and `replicadr.io/kubevirt-restore` leaves the PV out too:
//!   Velero restores PVs before claims, pre-bound to the claim's name, and a claim of that name
//!   made later (by CDI, for a `DataVolume` KubeVirt makes from a VM's `dataVolumeTemplates`)
//!   would bind to the replicated disk and be imported into.
//!
//! The live objects are only read: one `get` of the owning `DataVolume` per claim, and of the claim
//! (and its `DataVolume`) per PV. No operation is started; the action is served as a
//! `BackupItemActionV2` because that is the kind that reads the cluster here.

use std::sync::Arc;

use replicadr_core::kubevirt::{self, ClaimHazard};
use replicadr_core::wire::{
    ANNOTATION_CDI_POPULATED_FOR, ANNOTATION_CLAIM_LEFT_OUT, ANNOTATION_KVP_IN_PROGRESS,
    RESOURCE_PVCS, RESOURCE_PVS,
};
use serde_json::Value;

use super::{
    ActionFactory, AsyncBackupItemAction, BackupInput, BackupOutput, BuildContext, Cluster,
    ConfigError, ItemError, OperationProgress, PERSISTENT_VOLUME_CLAIMS, ResourceSelector,
    ResourceType, describe, object_at, string_at,
};

pub use replicadr_core::wire::PLUGIN_KUBEVIRT_BACKUP as NAME;

/// CDI's `DataVolumes`.
const DATA_VOLUMES: ResourceType = ResourceType {
    group: "cdi.kubevirt.io",
    version: "v1beta1",
    kind: "DataVolume",
    plural: "datavolumes",
    namespaced: true,
};

/// Builds [`KubevirtBackup`]; it has no configuration.
#[derive(Debug, Default, Clone, Copy)]
pub struct KubevirtBackupFactory;

impl ActionFactory for KubevirtBackupFactory {
    type Action = KubevirtBackup;

    fn applies_to(&self) -> ResourceSelector {
        ResourceSelector::resources(&[RESOURCE_PVCS, RESOURCE_PVS])
    }

    fn build(&self, context: BuildContext<'_>) -> Result<KubevirtBackup, ConfigError> {
        Ok(KubevirtBackup {
            cluster: context.cluster,
        })
    }

    /// Nothing to configure: never fails to build.
    fn keeps_without_config(&self, _item: &Value) -> bool {
        true
    }
}

/// The action.
pub struct KubevirtBackup {
    cluster: Arc<dyn Cluster>,
}

impl std::fmt::Debug for KubevirtBackup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubevirtBackup").finish_non_exhaustive()
    }
}

impl KubevirtBackup {
    /// An action reading `cluster`.
    pub fn new(cluster: Arc<dyn Cluster>) -> Self {
        Self { cluster }
    }

    /// The phase of `DataVolume` `namespace/name`; `None` when it does not exist.
    async fn data_volume_phase(
        &self,
        namespace: &str,
        name: &str,
        for_what: &str,
    ) -> Result<Option<String>, ItemError> {
        let data_volume = self
            .cluster
            .get(&DATA_VOLUMES, Some(namespace), name)
            .await
            .map_err(|error| {
                ItemError(format!(
                    "{for_what}: cannot read DataVolume {namespace}/{name}, which owns the claim: {error}"
                ))
            })?;
        Ok(data_volume.map(|dv| {
            string_at(&dv, "/status/phase")
                .unwrap_or_default()
                .to_owned()
        }))
    }

    /// A claim: the owning `DataVolume`'s mark.
    async fn claim(&self, mut item: Value) -> Result<Value, ItemError> {
        let what = describe(&item);
        let namespace = string_at(&item, "/metadata/namespace")
            .unwrap_or_default()
            .to_owned();
        let Some(data_volume) = kubevirt::owner_of_kind(&item, "DataVolume").map(str::to_owned)
        else {
            return Ok(item);
        };
        let Some(phase) = self
            .data_volume_phase(&namespace, &data_volume, &what)
            .await?
        else {
            tracing::warn!(item = %what, data_volume = %data_volume, "the DataVolume owning the claim is gone; backed up unmarked");
            return Ok(item);
        };
        let mark = if phase == "Succeeded" {
            ANNOTATION_CDI_POPULATED_FOR
        } else {
            ANNOTATION_KVP_IN_PROGRESS
        };
        if let Some(object) = item.as_object_mut() {
            object_at(object, &["metadata", "annotations"])
                .insert(mark.to_owned(), Value::String(data_volume.clone()));
        }
        tracing::info!(item = %what, data_volume = %data_volume, phase = %phase, mark, "claim marked for its DataVolume");
        Ok(item)
    }

    /// A PV: marked when the restore would leave its claim out.
    async fn volume(&self, mut item: Value) -> Result<Value, ItemError> {
        let what = describe(&item);
        let (Some(namespace), Some(name)) = (
            string_at(&item, "/spec/claimRef/namespace").map(str::to_owned),
            string_at(&item, "/spec/claimRef/name").map(str::to_owned),
        ) else {
            return Ok(item);
        };
        let claim = self
            .cluster
            .get(&PERSISTENT_VOLUME_CLAIMS, Some(&namespace), &name)
            .await
            .map_err(|error| {
                ItemError(format!(
                    "{what}: cannot read its claim {namespace}/{name}: {error}"
                ))
            })?;
        let Some(claim) = claim else {
            return Ok(item);
        };
        let left_out = match kubevirt::claim_hazard(&claim) {
            Some(hazard) => Some(hazard),
            None => match kubevirt::owner_of_kind(&claim, "DataVolume") {
                Some(data_volume) => self
                    .data_volume_phase(&namespace, data_volume, &what)
                    .await?
                    .filter(|phase| phase != "Succeeded")
                    .map(|_| ClaimHazard::MarkedInProgress(data_volume.to_owned())),
                None => None,
            },
        };
        if let Some(hazard) = left_out
            && let Some(object) = item.as_object_mut()
        {
            let why = format!("claim {namespace}/{name}: {}", hazard.explain());
            tracing::warn!(item = %what, reason = %why, "the restore leaves this PV out with its claim");
            object_at(object, &["metadata", "annotations"])
                .insert(ANNOTATION_CLAIM_LEFT_OUT.to_owned(), Value::String(why));
        }
        Ok(item)
    }
}

#[async_trait::async_trait]
impl AsyncBackupItemAction for KubevirtBackup {
    async fn execute(&self, input: BackupInput) -> Result<BackupOutput, ItemError> {
        let item = match string_at(&input.item, "/kind") {
            Some("PersistentVolumeClaim") => self.claim(input.item).await?,
            Some("PersistentVolume") => self.volume(input.item).await?,
            _ => input.item,
        };
        Ok(BackupOutput::item(item))
    }

    async fn progress(
        &self,
        operation_id: &str,
        _: &Value,
    ) -> Result<OperationProgress, ItemError> {
        Err(ItemError(format!(
            "{NAME} starts no operations, so there is no operation {operation_id:?}"
        )))
    }

    async fn cancel(&self, _: &str, _: &Value) -> Result<(), ItemError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
