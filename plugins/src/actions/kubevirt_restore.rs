//! `replicadr.io/kubevirt-restore`: at restore time, keeps what KubeVirt and CDI would misuse out of
//! the restore, and makes what CDI must adopt adoptable, whether or not kubevirt-velero-plugin
//! runs too (it writes the same annotations, so the two agree):
//! - a VMI a VM owned, and `virt-launcher` and `hotplug-disk` pods, are skipped: KubeVirt makes
//!   them when the VM starts, and restored they would boot or mount the replicated disks before
//!   anyone started the VM;
//! - a claim whose CDI import had not finished when backed up is skipped: CDI would start an
//!   importer writing into the replicated disk; so is one marked `kvp.kubevirt.io/storage.inprogress`
//!   (its `DataVolume` had not succeeded), and a PV `replicadr.io/kubevirt-backup` marked as the
//!   volume of such a claim;
//! - a claim a `DataVolume` owned gets `cdi.kubevirt.io/storage.populatedFor`, so CDI's webhook
//!   accepts the restored `DataVolume` and CDI adopts the claim instead of importing;
//! - a `DataVolume` that had succeeded gets `cdi.kubevirt.io/storage.prePopulated`; one that had
//!   not, or whose claim is not at this site, is an error naming it (restored, CDI would import a
//!   new disk instead of using the replicated one), unless the ConfigMap key
//!   `restoreDataVolumesWithoutClaim` is `"true"`.
//!
//! Velero strips `ownerReferences` and `status` from what it restores: every decision reads the
//! item as backed up (`itemFromBackup`).

use std::sync::Arc;

use replicadr_core::kubevirt;
use replicadr_core::wire::{
    ANNOTATION_CDI_POPULATED_FOR, ANNOTATION_CDI_PRE_POPULATED, ANNOTATION_CLAIM_LEFT_OUT,
    RESOURCE_DATA_VOLUMES, RESOURCE_PODS, RESOURCE_PVCS, RESOURCE_PVS,
    RESOURCE_VIRTUAL_MACHINE_INSTANCES,
};
use serde_json::Value;

use super::{
    ActionFactory, BuildContext, Cluster, ConfigError, ItemError, PERSISTENT_VOLUME_CLAIMS,
    PluginConfig, ResourceSelector, ResourceType, RestoreInput, RestoreItemAction, RestoreOutput,
    describe, object_at, string_at,
};

pub use replicadr_core::wire::{
    CONFIG_RESTORE_DATA_VOLUMES_WITHOUT_CLAIM, PLUGIN_KUBEVIRT_RESTORE as NAME,
};

/// Core PersistentVolumes, read to see whether one is pre-bound to a missing claim's name.
const PERSISTENT_VOLUMES: ResourceType = ResourceType {
    group: "",
    version: "v1",
    kind: "PersistentVolume",
    plural: "persistentvolumes",
    namespaced: false,
};

/// The namespace `namespace` is restored into: the Restore's `spec.namespaceMapping`, if it maps
/// it (Velero applies the mapping after the actions ran, so the item still names the source).
fn restored_namespace<'a>(restore: &'a Value, namespace: &'a str) -> &'a str {
    restore
        .pointer("/spec/namespaceMapping")
        .and_then(|mapping| mapping.get(namespace))
        .and_then(Value::as_str)
        .unwrap_or(namespace)
}

/// Builds [`KubevirtRestore`]; the ConfigMap is optional.
#[derive(Debug, Default, Clone, Copy)]
pub struct KubevirtRestoreFactory;

impl ActionFactory for KubevirtRestoreFactory {
    type Action = KubevirtRestore;

    fn applies_to(&self) -> ResourceSelector {
        ResourceSelector::resources(&[
            RESOURCE_PODS,
            RESOURCE_VIRTUAL_MACHINE_INSTANCES,
            RESOURCE_PVCS,
            RESOURCE_PVS,
            RESOURCE_DATA_VOLUMES,
        ])
    }

    fn build(&self, context: BuildContext<'_>) -> Result<KubevirtRestore, ConfigError> {
        KubevirtRestore::from_config(context.config, context.cluster)
    }
}

/// The configured action.
pub struct KubevirtRestore {
    cluster: Arc<dyn Cluster>,
    /// Restore a `DataVolume` whose claim is not at this site, or that had not succeeded (CDI
    /// then imports a new disk).
    without_claim: bool,
}

impl std::fmt::Debug for KubevirtRestore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubevirtRestore")
            .field("without_claim", &self.without_claim)
            .finish_non_exhaustive()
    }
}

impl KubevirtRestore {
    /// Reads `restoreDataVolumesWithoutClaim` (default `false`) when a ConfigMap matched.
    pub fn from_config(
        config: Option<&PluginConfig>,
        cluster: Arc<dyn Cluster>,
    ) -> Result<Self, ConfigError> {
        let without_claim = match config {
            Some(config) => config.flag(CONFIG_RESTORE_DATA_VOLUMES_WITHOUT_CLAIM, false)?,
            None => false,
        };
        Ok(Self {
            cluster,
            without_claim,
        })
    }

    /// A `DataVolume`: marked pre-populated when it had succeeded and its claim is here, holding
    /// its data (`populatedFor`, as CDI's webhook asks); otherwise an error (or, configured so,
    /// restored for CDI to import, unless a PV here is pre-bound to the claim's name).
    async fn data_volume(
        &self,
        mut item: Value,
        backed_up: &Value,
        restore: &Value,
    ) -> Result<Value, ItemError> {
        let what = describe(backed_up);
        let source = string_at(backed_up, "/metadata/namespace").unwrap_or_default();
        let namespace = restored_namespace(restore, source);
        let name = string_at(backed_up, "/metadata/name")
            .unwrap_or_default()
            .to_owned();
        let phase = string_at(backed_up, "/status/phase").unwrap_or_default();
        let unreadable = |error: super::ClusterError| {
            ItemError(format!(
                "{what}: cannot tell whether its claim {namespace}/{name} is at this site: {error}"
            ))
        };
        let claim = self
            .cluster
            .get(&PERSISTENT_VOLUME_CLAIMS, Some(namespace), &name)
            .await
            .map_err(unreadable)?;
        let problem = if phase != "Succeeded" {
            Some(format!(
                "it was {} when backed up, not Succeeded, so its disk was not complete",
                if phase.is_empty() {
                    "without a phase"
                } else {
                    phase
                }
            ))
        } else if let Some(claim) = &claim {
            (kubevirt::populated_for(claim) != Some(name.as_str())).then(|| format!(
                "its claim {namespace}/{name} at this site does not say it holds this DataVolume's data ({ANNOTATION_CDI_POPULATED_FOR} is not {name}): it was not restored from this backup, and CDI's webhook refuses the DataVolume next to it"
            ))
        } else {
            Some(format!(
                "its claim {namespace}/{name} is not at this site (not in the backup, or skipped because its import had not finished)"
            ))
        };
        let Some(problem) = problem else {
            if let Some(object) = item.as_object_mut() {
                object_at(object, &["metadata", "annotations"])
                    .entry(ANNOTATION_CDI_PRE_POPULATED)
                    .or_insert(Value::String(name));
            }
            tracing::info!(item = %what, "DataVolume marked pre-populated: CDI adopts its restored claim");
            return Ok(item);
        };
        if !self.without_claim {
            return Err(ItemError(format!(
                "{what} is not restored: {problem}; restored, CDI would import a new disk instead of using the replicated one. Restore the VM's disk from a backup where the DataVolume is Succeeded with its claim, or set {CONFIG_RESTORE_DATA_VOLUMES_WITHOUT_CLAIM}: \"true\" in the plugin ConfigMap of {NAME} to let CDI import it"
            )));
        }
        // CDI would make the claim, and a PV pre-bound to its name (restored from the backup
        // before the claims) would take it: the import would write into the replicated disk.
        let pre_bound: Vec<String> = self
            .cluster
            .list(&PERSISTENT_VOLUMES, None, "")
            .await
            .map_err(unreadable)?
            .iter()
            .filter(|pv| {
                string_at(pv, "/spec/claimRef/namespace") == Some(namespace)
                    && string_at(pv, "/spec/claimRef/name") == Some(name.as_str())
            })
            .map(describe)
            .collect();
        if !pre_bound.is_empty() {
            return Err(ItemError(format!(
                "{what} is not restored although {CONFIG_RESTORE_DATA_VOLUMES_WITHOUT_CLAIM} is \"true\": {problem}, and {} at this site is pre-bound to claim {namespace}/{name}, so the claim CDI makes would bind to it and the import would write into that volume. Delete that PersistentVolume first (it is Retain: its data stays on the export) if a new import is what you want",
                pre_bound.join(", ")
            )));
        }
        tracing::warn!(item = %what, problem = %problem, "restoring the DataVolume for CDI to import, as configured");
        Ok(item)
    }
}

/// A claim: skipped when CDI would write into it, marked populated for its `DataVolume`.
fn claim(mut item: Value, backed_up: &Value) -> RestoreOutput {
    let what = describe(backed_up);
    if let Some(hazard) = kubevirt::claim_hazard(backed_up) {
        tracing::warn!(item = %what, reason = %hazard.explain(), "claim not restored");
        return RestoreOutput::skip(item);
    }
    if let Some(data_volume) = kubevirt::populated_for(backed_up).map(str::to_owned)
        && let Some(object) = item.as_object_mut()
    {
        object_at(object, &["metadata", "annotations"])
            .entry(ANNOTATION_CDI_POPULATED_FOR)
            .or_insert(Value::String(data_volume));
        tracing::info!(item = %what, "claim marked populated for its DataVolume");
    }
    RestoreOutput::item(item)
}

#[async_trait::async_trait]
impl RestoreItemAction for KubevirtRestore {
    async fn execute(&self, input: RestoreInput) -> Result<RestoreOutput, ItemError> {
        let backed_up = input
            .item_from_backup
            .as_ref()
            .unwrap_or(&input.item)
            .clone();
        let what = describe(&backed_up);
        match string_at(&backed_up, "/kind").unwrap_or_default() {
            "Pod" => match kubevirt::is_kubevirt_pod(&backed_up) {
                Some(role) => {
                    tracing::info!(item = %what, role, "KubeVirt pod not restored: KubeVirt makes it when the VM starts");
                    Ok(RestoreOutput::skip(input.item))
                }
                None => Ok(RestoreOutput::item(input.item)),
            },
            "VirtualMachineInstance" => match kubevirt::vm_owning_vmi(&backed_up) {
                Some(vm) => {
                    tracing::info!(item = %what, vm, "VMI not restored: KubeVirt makes it when its VM starts");
                    Ok(RestoreOutput::skip(input.item))
                }
                None => Ok(RestoreOutput::item(input.item)),
            },
            "PersistentVolumeClaim" => Ok(claim(input.item, &backed_up)),
            "PersistentVolume" => {
                match string_at(
                    &backed_up,
                    &replicadr_core::wire::annotation_pointer(ANNOTATION_CLAIM_LEFT_OUT),
                ) {
                    Some(why) => {
                        tracing::warn!(item = %what, reason = %why, "PV not restored: its claim is left out, and a claim of that name made later would bind to it");
                        Ok(RestoreOutput::skip(input.item))
                    }
                    None => Ok(RestoreOutput::item(input.item)),
                }
            }
            "DataVolume" => Ok(RestoreOutput::item(
                self.data_volume(input.item, &backed_up, &input.restore)
                    .await?,
            )),
            _ => Ok(RestoreOutput::item(input.item)),
        }
    }
}

#[cfg(test)]
mod tests;
