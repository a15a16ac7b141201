//! Every name ReplicaDR reads or writes on the wire: labels, annotations, ConfigMap keys, plugin
//! names, driver names, Velero's resource names and phase strings, and the JSON pointers into
//! Kubernetes objects. One constant per name, so the plugins that write a label and the scheduler
//! that reads it cannot spell it two ways.

// Labels and annotations the project writes.

/// The standard managed-by label; [`MANAGED_BY`] on everything the project creates.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "replicadr";
/// On a replica PVC, as a label and an annotation: the UID of the VolumeSnapshot it was
/// provisioned from.
pub const LABEL_REPLICA_OF_SNAPSHOT_UID: &str = "replicadr.io/replica-of-snapshot-uid";
/// On a replica PVC: the name of that VolumeSnapshot (same namespace).
pub const ANNOTATION_REPLICA_OF_SNAPSHOT: &str = "replicadr.io/replica-of-snapshot";
/// On a replica PVC: the snapshot's source PVC.
pub const ANNOTATION_SOURCE_PVC: &str = "replicadr.io/source-pvc";
/// On a replica PVC: the source PVC's StorageClass, when `storageClassMap` replaced it.
pub const ANNOTATION_SOURCE_STORAGE_CLASS: &str = "replicadr.io/source-storage-class";
/// On a replica PVC, as a label (when a valid label value) and an annotation: the KubeVirt
/// VirtualMachine whose disk it is.
pub const LABEL_VM: &str = "replicadr.io/vm";
/// On a replica PVC: the KubeVirt `VirtualMachineSnapshotContent` owning the VolumeSnapshot.
pub const ANNOTATION_VM_SNAPSHOT_CONTENT: &str = "replicadr.io/vm-snapshot-content";
/// On a replica PVC: the CDI `DataVolume` owning the source PVC.
pub const ANNOTATION_SOURCE_DATA_VOLUME: &str = "replicadr.io/source-datavolume";
/// On a backed-up PV copy: the reclaim policy it had before `pv-retain` set `Retain`.
pub const ANNOTATION_ORIGINAL_RECLAIM_POLICY: &str = "replicadr.io/original-reclaim-policy";
/// On a restored PV: the NFS server before the rewrite.
pub const ANNOTATION_ORIGINAL_SERVER: &str = "replicadr.io/original-nfs-server";
/// On a restored PV: the path (in-tree) or share (CSI) before the rewrite.
pub const ANNOTATION_ORIGINAL_PATH: &str = "replicadr.io/original-nfs-path";
/// On a restored PV: the site its export belonged to before the rewrite.
pub const ANNOTATION_ORIGINAL_SITE: &str = "replicadr.io/original-site";
/// On a restored PV: the site map export that matched.
pub const ANNOTATION_REMAP_RULE: &str = "replicadr.io/remap-rule";
/// On a restored CSI PV: the volume handle before the rewrite.
pub const ANNOTATION_ORIGINAL_HANDLE: &str = "replicadr.io/original-volume-handle";
/// On a VM, as an annotation or a label: the order VMs start in after a failover, lower first.
pub const START_ORDER: &str = "replicadr.io/start-order";
/// On a VM that a planned failback halted at the site it leaves: the run strategy it had
/// before. Read in place of the `Halted` it carries in the final backup, so that the restore
/// starts it again; removed when the VM is started.
pub const ANNOTATION_HALTED_FOR_FAILBACK: &str = "replicadr.io/halted-for-failback";
/// On a Backup: the BackupPolicy it belongs to.
pub const LABEL_POLICY: &str = "replicadr.io/policy";
/// On Restores and reports: the operation, `failover`, `failback` or `drill`.
pub const LABEL_OPERATION: &str = "replicadr.io/operation";
/// On Restores and reports: the site restored to.
pub const LABEL_SITE: &str = "replicadr.io/site";
/// On Restores and reports: the backup restored.
pub const LABEL_BACKUP: &str = "replicadr.io/backup";
/// On a Backup: "true" or "false", its verification result.
pub const ANNOTATION_VERIFIED: &str = "replicadr.io/verified";
/// On a Backup: why it passed or failed verification (the first failure, or "Verified").
pub const ANNOTATION_VERIFICATION_REASON: &str = "replicadr.io/verification-reason";
/// On a Backup: when the verification result was written (RFC 3339).
pub const ANNOTATION_VERIFIED_AT: &str = "replicadr.io/verified-at";
/// On a Backup: verification attempts that failed for a transient reason.
pub const ANNOTATION_VERIFICATION_ATTEMPTS: &str = "replicadr.io/verification-attempts";
/// On a Backup: the schedule slot (RFC 3339) it belongs to.
pub const ANNOTATION_SLOT: &str = "replicadr.io/slot";
/// On a Backup: its retry number within the slot; on a Restore: its attempt number.
pub const ANNOTATION_ATTEMPT: &str = "replicadr.io/attempt";
/// On our Restores: how the failover or failback that followed it ended (`Succeeded`, `Failed`).
/// A Restore whose run failed its checks is not continued by a re-run: the next run restores
/// again with a new attempt.
/// On failover and failback Restores: the active-site epoch of the takeover they belong to. Only
/// the Restores of the current takeover count as this operation's own: objects a failover of the
/// same backup restored in an earlier epoch are stale, and their Restore is never continued.
pub const LABEL_EPOCH: &str = "replicadr.io/epoch";
pub const ANNOTATION_OUTCOME: &str = "replicadr.io/outcome";
/// On a VirtualMachine a failover or failback started: the Restore of that run. A re-run never
/// starts it again (an operator may have halted it since).
pub const ANNOTATION_STARTED_BY: &str = "replicadr.io/started-by";

// The plugins and their ConfigMap.

/// The restore plugin.
pub const PLUGIN_PV_SITE_REMAP: &str = "replicadr.io/pv-site-remap";
/// The backup plugin forcing `Retain` on replicated NFS PVs.
pub const PLUGIN_PV_RETAIN: &str = "replicadr.io/pv-retain";
/// The backup plugin turning VolumeSnapshots into replica PVCs.
pub const PLUGIN_SNAPSHOT_TO_PVC: &str = "replicadr.io/snapshot-to-pvc";
/// The restore plugin that keeps VMIs, launcher pods and unfinished imports out of a restore and
/// makes `DataVolumes` adoptable.
pub const PLUGIN_KUBEVIRT_RESTORE: &str = "replicadr.io/kubevirt-restore";
/// The backup action that records, on the backed-up copies, whether a `DataVolume`'s claim is
/// complete (kubevirt-velero-plugin's marks) and which PVs belong to claims a restore leaves out.
pub const PLUGIN_KUBEVIRT_BACKUP: &str = "replicadr.io/kubevirt-backup";
/// On a backed-up PV: its claim is left out of a restore, and why; the restore leaves the PV out
/// too, so that no claim of that name made later binds to the replicated disk.
pub const ANNOTATION_CLAIM_LEFT_OUT: &str = "replicadr.io/claim-left-out";
/// Its ConfigMap key: restore a `DataVolume` whose claim is not at the site, or that had not
/// succeeded, and let CDI import it (`"true"`; default `"false"`: an error naming it).
pub const CONFIG_RESTORE_DATA_VOLUMES_WITHOUT_CLAIM: &str = "restoreDataVolumesWithoutClaim";
/// Velero's label on every plugin ConfigMap; the ConfigMap also carries `<plugin>: <kind>`.
pub const LABEL_PLUGIN_CONFIG: &str = "velero.io/plugin-config";
/// The plugin kind that `<plugin>: <kind>` names for the restore plugin.
pub const KIND_RESTORE_ITEM_ACTION: &str = "RestoreItemAction";
/// ConfigMap key: the site map YAML.
pub const CONFIG_SITE_MAP: &str = "siteMap";
/// ConfigMap key: the site this Velero runs at.
pub const CONFIG_LOCAL_SITE: &str = "localSite";
/// ConfigMap key: the restored PV's reclaim policy, `retain` or `original`.
pub const CONFIG_RESTORE_RECLAIM_POLICY: &str = "restoreReclaimPolicy";
/// ConfigMap key: also force `Retain` on NFS PVs the site map does not cover.
pub const CONFIG_RETAIN_UNMAPPED: &str = "retainUnmapped";
/// ConfigMap key: source StorageClass → replica StorageClass.
pub const CONFIG_STORAGE_CLASS_MAP: &str = "storageClassMap";
/// ConfigMap key: count a created but unbound replica PVC as done.
pub const CONFIG_CREATED_NOT_BOUND_IS_DONE: &str = "createdNotBoundIsDone";
/// ConfigMap key: seconds to wait for a created replica to bind.
pub const CONFIG_REPLICA_BIND_WAIT_SECONDS: &str = "replicaBindWaitSeconds";

// Names other components own.

/// The NFS CSI driver (csi-driver-nfs) whose volumes count as NFS volumes.
pub const NFS_CSI_DRIVER: &str = "nfs.csi.k8s.io";
/// Velero's API group and version.
pub const VELERO_API_VERSION: &str = "velero.io/v1";
/// Velero's label on objects belonging to a backup (`PodVolumeBackups`, `DataUploads`, the
/// VolumeSnapshots its CSI plugin takes, restored objects).
pub const LABEL_VELERO_BACKUP_NAME: &str = "velero.io/backup-name";
/// Velero's label on every object it restores.
pub const LABEL_VELERO_RESTORE_NAME: &str = "velero.io/restore-name";
/// Velero keys its per-schedule metrics and `restore --from-schedule` on this label.
pub const LABEL_VELERO_SCHEDULE_NAME: &str = "velero.io/schedule-name";
/// kubevirt-velero-plugin accepts running VMs without their disks' data when this is "true".
pub const LABEL_KUBEVIRT_METADATA_BACKUP: &str = "velero.kubevirt.io/metadataBackup";
/// KubeVirt's label on the VolumeSnapshots of a `VirtualMachineSnapshot`: the VM's name.
pub const LABEL_KUBEVIRT_SOURCE_VM_NAME: &str = "snapshot.kubevirt.io/source-vm-name";
/// KubeVirt's label on the VolumeSnapshots of a `VirtualMachineSnapshot`: the VM's namespace.
pub const LABEL_KUBEVIRT_SOURCE_VM_NAMESPACE: &str = "snapshot.kubevirt.io/source-vm-namespace";

/// CDI's mark on a claim that holds a `DataVolume`'s data (value: the `DataVolume`'s name): CDI's
/// admission webhook lets the `DataVolume` be created next to it, and CDI adopts the claim.
pub const ANNOTATION_CDI_POPULATED_FOR: &str = "cdi.kubevirt.io/storage.populatedFor";
/// On a `DataVolume` (value: its own name): its claim is already populated.
pub const ANNOTATION_CDI_PRE_POPULATED: &str = "cdi.kubevirt.io/storage.prePopulated";
/// CDI's import annotations on a claim: the import controller starts an importer on any claim
/// carrying one of them whose import did not complete ([`ANNOTATION_CDI_POD_PHASE`]).
pub const ANNOTATION_CDI_IMPORT_ENDPOINT: &str = "cdi.kubevirt.io/storage.import.endpoint";
/// See [`ANNOTATION_CDI_IMPORT_ENDPOINT`].
pub const ANNOTATION_CDI_IMPORT_SOURCE: &str = "cdi.kubevirt.io/storage.import.source";
/// The phase of the claim's CDI pod (`Succeeded` once its import is complete).
pub const ANNOTATION_CDI_POD_PHASE: &str = "cdi.kubevirt.io/storage.pod.phase";
/// kubevirt-velero-plugin's mark, at backup, on a claim whose `DataVolume` had not succeeded; it
/// skips such claims at restore.
pub const ANNOTATION_KVP_IN_PROGRESS: &str = "kvp.kubevirt.io/storage.inprogress";
/// kubevirt-velero-plugin's mark, at backup, on a VMI a VM owned ("true"); skipped at restore.
pub const ANNOTATION_KVP_VMI_OWNED: &str = "cdi.kubevirt.io/velero.isOwned";
/// KubeVirt's label naming what a pod is for: `virt-launcher`, `hotplug-disk`.
pub const LABEL_KUBEVIRT: &str = "kubevirt.io";
/// Velero's tarball directory of KubeVirt `VirtualMachineInstances`.
pub const RESOURCE_VIRTUAL_MACHINE_INSTANCES: &str = "virtualmachineinstances.kubevirt.io";
/// Velero's tarball directory of pods.
pub const RESOURCE_PODS: &str = "pods";

/// Velero's phase of a Backup or Restore that finished well.
pub const PHASE_COMPLETED: &str = "Completed";
/// Velero's phase of a Backup or Restore that finished with errors.
pub const PHASE_PARTIALLY_FAILED: &str = "PartiallyFailed";
/// Velero's phase of a Backup or Restore that failed.
pub const PHASE_FAILED: &str = "Failed";
/// Velero's phase of a Backup or Restore that it refused.
pub const PHASE_FAILED_VALIDATION: &str = "FailedValidation";
/// Velero's phase of a Backup or Restore being worked on.
pub const PHASE_IN_PROGRESS: &str = "InProgress";
/// Velero's phase of a Backup whose actions run again at the end.
pub const PHASE_FINALIZING: &str = "Finalizing";
/// [`PHASE_FINALIZING`] after errors.
pub const PHASE_FINALIZING_PARTIALLY_FAILED: &str = "FinalizingPartiallyFailed";
/// Velero's phase of a Backup being deleted.
pub const PHASE_DELETING: &str = "Deleting";
/// The phase of a bound PVC or PV.
pub const PHASE_BOUND: &str = "Bound";
/// A BackupStorageLocation Velero can use.
pub const PHASE_AVAILABLE: &str = "Available";

/// A PV reclaim policy: the volume outlives its claim.
pub const RECLAIM_RETAIN: &str = "Retain";
/// A PV reclaim policy: the volume is deleted with its claim; Velero re-provisions such a PV.
pub const RECLAIM_DELETE: &str = "Delete";
/// A PV reclaim policy (deprecated): the volume is scrubbed when its claim goes.
pub const RECLAIM_RECYCLE: &str = "Recycle";

/// Velero's tarball directory of PersistentVolumeClaims.
pub const RESOURCE_PVCS: &str = "persistentvolumeclaims";
/// Velero's tarball directory of PersistentVolumes.
pub const RESOURCE_PVS: &str = "persistentvolumes";
/// Velero's tarball directory of VolumeSnapshots.
pub const RESOURCE_VOLUME_SNAPSHOTS: &str = "volumesnapshots.snapshot.storage.k8s.io";
/// Velero's tarball directory of `VolumeSnapshotContents`.
pub const RESOURCE_VOLUME_SNAPSHOT_CONTENTS: &str =
    "volumesnapshotcontents.snapshot.storage.k8s.io";
/// Velero's tarball directory of KubeVirt VirtualMachines.
pub const RESOURCE_VIRTUAL_MACHINES: &str = "virtualmachines.kubevirt.io";
/// Velero's tarball directory of CDI `DataVolumes`.
pub const RESOURCE_DATA_VOLUMES: &str = "datavolumes.cdi.kubevirt.io";

// JSON pointers into objects.

/// Any object's `status.phase`.
pub const POINTER_STATUS_PHASE: &str = "/status/phase";
/// A PV's reclaim policy.
pub const POINTER_RECLAIM_POLICY: &str = "/spec/persistentVolumeReclaimPolicy";
/// A PVC's bound PV.
pub const POINTER_VOLUME_NAME: &str = "/spec/volumeName";
/// An object's UID.
pub const POINTER_UID: &str = "/metadata/uid";
/// A VolumeSnapshot's source PVC.
pub const POINTER_SNAPSHOT_SOURCE_PVC: &str = "/spec/source/persistentVolumeClaimName";

/// The JSON pointer to label `key` of an object: `/metadata/labels/<key, escaped>`.
pub fn label_pointer(key: &str) -> String {
    format!("/metadata/labels/{}", escape(key))
}

/// The JSON pointer to annotation `key` of an object.
pub fn annotation_pointer(key: &str) -> String {
    format!("/metadata/annotations/{}", escape(key))
}

/// JSON pointer escaping (RFC 6901) of one reference token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn label_and_annotation_pointers_escape_the_key() {
        let object = json!({"metadata": {
            "labels": {LABEL_REPLICA_OF_SNAPSHOT_UID: "u1"},
            "annotations": {"a~b/c": "x"},
        }});
        assert_eq!(
            object.pointer(&label_pointer(LABEL_REPLICA_OF_SNAPSHOT_UID)),
            Some(&json!("u1"))
        );
        assert_eq!(
            object.pointer(&annotation_pointer("a~b/c")),
            Some(&json!("x"))
        );
    }
}
