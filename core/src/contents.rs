//! What a failover restores, read from a backup tarball: every VM, `DataVolume`, PVC, PV and
//! VolumeSnapshot, and the VMIs and KubeVirt pods it leaves out,
//! with the fields the plan and the failover use. Other items are counted, not kept. The readers
//! of single fields (a PVC's volume, a replica's snapshot, a VM's disks) are the ones every check
//! of a backup uses, whether it keeps the objects or only hashes of their names.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use serde_json::Value;

use crate::invariants::{ClaimRef, DataVolumeRef, References};
use crate::kubevirt::{
    ClaimHazard, ReferencedKind, VmReference, claim_hazard, is_kubevirt_pod, vm_owning_vmi,
    vm_references,
};
use crate::tarball::{self, TarballError};
pub use crate::wire::START_ORDER;
use crate::wire::{
    ANNOTATION_HALTED_FOR_FAILBACK, LABEL_MANAGED_BY, LABEL_REPLICA_OF_SNAPSHOT_UID, MANAGED_BY,
    POINTER_STATUS_PHASE, POINTER_UID, POINTER_VOLUME_NAME, RESOURCE_DATA_VOLUMES, RESOURCE_PODS,
    RESOURCE_PVCS, RESOURCE_PVS, RESOURCE_VIRTUAL_MACHINE_INSTANCES, RESOURCE_VIRTUAL_MACHINES,
    RESOURCE_VOLUME_SNAPSHOTS, annotation_pointer, label_pointer,
};

/// A VirtualMachine in the backup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmItem {
    pub namespace: String,
    pub name: String,
    /// [`START_ORDER`]; `None` starts after every ordered VM.
    pub start_order: Option<i64>,
    /// The run strategy the VM had when backed up (`spec.running` read as Always/Halted).
    pub run_strategy: String,
    /// The PVCs and `DataVolumes` its disks name.
    pub disks: Vec<String>,
    /// KubeVirt reported it running when it was backed up (`status.printableStatus` Running, or
    /// `status.ready`).
    pub was_running: bool,
    /// The other objects it needs to start ([`vm_references`]).
    #[serde(skip)]
    pub references: Vec<VmReference>,
}

impl VmItem {
    /// Whether the VM was meant to run: it is started after the restore.
    pub fn runs(&self) -> bool {
        strategy_runs(&self.run_strategy)
    }
}

/// Whether KubeVirt keeps a VM with this run strategy running.
pub fn strategy_runs(run_strategy: &str) -> bool {
    !matches!(run_strategy, "Halted" | "Manual")
}

/// A PersistentVolumeClaim in the backup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PvcItem {
    pub namespace: String,
    pub name: String,
    pub volume: Option<String>,
    /// For a replica PVC made from a VolumeSnapshot: that snapshot's UID.
    pub replica_of_snapshot: Option<String>,
    /// Its UID when backed up.
    #[serde(skip)]
    pub uid: String,
    /// Why the restore leaves it out, if it does: CDI would write into it.
    #[serde(skip)]
    pub left_out: Option<ClaimHazard>,
}

/// A CDI `DataVolume` in the backup. CDI keeps a claim of the same name for it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeItem {
    pub namespace: String,
    pub name: String,
    /// `status.phase` when backed up (`Succeeded` once its claim holds the data); empty if unset.
    pub phase: String,
}

/// An object in the backup that the restore leaves out, because KubeVirt makes it again when
/// the VM starts ([`crate::kubevirt`]): a VM's VMI, its launcher or hotplug pods.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeftOutItem {
    pub namespace: String,
    pub kind: &'static str,
    pub name: String,
    /// Why, for a person: `VMI of VM db`, `virt-launcher pod`.
    pub why: String,
}

/// A VolumeSnapshot in the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotItem {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The backup's VMs, `DataVolumes`, PVCs, PVs and snapshots.
#[derive(Debug, Default, Clone)]
pub struct BackupContents {
    pub vms: Vec<VmItem>,
    pub data_volumes: Vec<DataVolumeItem>,
    pub pvcs: Vec<PvcItem>,
    /// Whole PV objects by name: the plan runs the restore plugin's rewrite on them.
    pub pvs: BTreeMap<String, Value>,
    pub snapshots: Vec<SnapshotItem>,
    /// The VMIs and KubeVirt pods the restore leaves out.
    pub left_out: Vec<LeftOutItem>,
    /// Every object of a kind a VM can name ([`ReferencedKind`]), by [`reference_key`].
    pub referenceable: BTreeSet<String>,
    /// Every item in the tarball.
    pub items: u64,
    /// How many items of each group-resource (`deployments.apps`, `pods`) the tarball holds.
    pub kinds: BTreeMap<String, u64>,
    /// Items that are not valid JSON objects, by path-like name.
    pub unreadable: Vec<String>,
}

const WANTED: [&str; 7] = [
    RESOURCE_DATA_VOLUMES,
    RESOURCE_PODS,
    RESOURCE_VIRTUAL_MACHINE_INSTANCES,
    RESOURCE_PVCS,
    RESOURCE_PVS,
    RESOURCE_VOLUME_SNAPSHOTS,
    RESOURCE_VIRTUAL_MACHINES,
];

impl BackupContents {
    /// Reads a `<backup>.tar.gz` to its end.
    pub fn read(source: impl Read) -> Result<Self, TarballError> {
        let mut contents = Self::default();
        let kinds = std::cell::RefCell::new(BTreeMap::<String, u64>::new());
        contents.items = tarball::read_items(
            source,
            |group_resource| {
                *kinds
                    .borrow_mut()
                    .entry(group_resource.to_owned())
                    .or_default() += 1;
                WANTED.contains(&group_resource)
                    || ReferencedKind::from_group_resource(group_resource).is_some()
            },
            |group_resource, bytes| contents.add(group_resource, bytes),
        )?;
        contents.kinds = kinds.into_inner();
        contents
            .vms
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        contents
            .data_volumes
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        contents
            .pvcs
            .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(contents)
    }

    fn add(&mut self, group_resource: &str, bytes: &[u8]) {
        let Ok(object) = serde_json::from_slice::<Value>(bytes) else {
            self.unreadable.push(format!(
                "{group_resource}: {}",
                String::from_utf8_lossy(bytes)
                    .chars()
                    .take(80)
                    .collect::<String>()
            ));
            return;
        };
        let text = |pointer: &str| {
            object
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let (namespace, name) = (text("/metadata/namespace"), text("/metadata/name"));
        match group_resource {
            RESOURCE_VIRTUAL_MACHINES => {
                let halted_for_failback = halted_for_failback(&object);
                self.vms.push(VmItem {
                    start_order: start_order(&object),
                    run_strategy: halted_for_failback
                        .clone()
                        .unwrap_or_else(|| run_strategy(&object)),
                    disks: vm_claims(&object).map(str::to_owned).collect(),
                    references: vm_references(&object),
                    was_running: halted_for_failback.is_some()
                        || object
                            .pointer("/status/printableStatus")
                            .and_then(Value::as_str)
                            == Some("Running")
                        || object.pointer("/status/ready").and_then(Value::as_bool) == Some(true),
                    namespace,
                    name,
                });
            }
            RESOURCE_PODS => {
                if let Some(role) = is_kubevirt_pod(&object) {
                    self.left_out.push(LeftOutItem {
                        why: format!("{role} pod"),
                        namespace,
                        kind: "Pod",
                        name,
                    });
                }
            }
            RESOURCE_VIRTUAL_MACHINE_INSTANCES => {
                if let Some(vm) = vm_owning_vmi(&object) {
                    self.left_out.push(LeftOutItem {
                        why: format!("VMI of VM {vm}"),
                        namespace,
                        kind: "VirtualMachineInstance",
                        name,
                    });
                }
            }
            RESOURCE_DATA_VOLUMES => self.data_volumes.push(DataVolumeItem {
                phase: text(POINTER_STATUS_PHASE),
                namespace,
                name,
            }),
            RESOURCE_PVCS => self.pvcs.push(PvcItem {
                left_out: claim_hazard(&object),
                volume: volume_name(&object).map(str::to_owned),
                replica_of_snapshot: replica_of(&object).map(str::to_owned),
                uid: uid(&object).to_owned(),
                namespace,
                name,
            }),
            RESOURCE_PVS => {
                self.pvs.insert(name, object);
            }
            RESOURCE_VOLUME_SNAPSHOTS => self.snapshots.push(SnapshotItem {
                uid: uid(&object).to_owned(),
                namespace,
                name,
            }),
            other => {
                if let Some(kind) = ReferencedKind::from_group_resource(other) {
                    self.referenceable
                        .insert(reference_key(kind, &namespace, &name));
                }
            }
        }
    }

    /// The namespaces holding a VM, `DataVolume` or PVC, sorted.
    pub fn namespaces(&self) -> Vec<String> {
        let mut namespaces: Vec<String> = self
            .vms
            .iter()
            .map(|vm| vm.namespace.clone())
            .chain(self.data_volumes.iter().map(|dv| dv.namespace.clone()))
            .chain(self.pvcs.iter().map(|pvc| pvc.namespace.clone()))
            .collect();
        namespaces.sort();
        namespaces.dedup();
        namespaces
    }

    /// The cross references of the contents, keyed by name: `namespace/name` for claims, the
    /// name for PVs, `namespace/uid` for snapshots.
    pub fn references(&self) -> References<String> {
        let mut references = References::default();
        for pvc in &self.pvcs {
            references.claims.insert(
                format!("{}/{}", pvc.namespace, pvc.name),
                ClaimRef {
                    volume: pvc.volume.clone(),
                    uid: pvc.uid.clone(),
                    replica: pvc.replica_of_snapshot.is_some(),
                    left_out: pvc.left_out.is_some(),
                },
            );
            if let Some(uid) = &pvc.replica_of_snapshot {
                references
                    .replicated
                    .insert(format!("{}/{uid}", pvc.namespace));
            }
        }
        references.volumes = self.pvs.keys().cloned().collect();
        references.snapshots = self
            .snapshots
            .iter()
            .map(|s| format!("{}/{}", s.namespace, s.uid))
            .collect();
        references.data_volumes = self
            .data_volumes
            .iter()
            .map(|dv| DataVolumeRef {
                claim: format!("{}/{}", dv.namespace, dv.name),
                succeeded: dv.phase == "Succeeded",
            })
            .collect();
        references.vm_references = self.vm_references().map(|(_, r)| r.key()).collect();
        references.referenceable = self.referenceable.iter().cloned().collect();
        references.vm_volumes = self
            .vms
            .iter()
            .flat_map(|vm| {
                vm.disks
                    .iter()
                    .map(|disk| format!("{}/{disk}", vm.namespace))
            })
            .collect();
        references
    }

    /// Each object a VM needs, in the order of [`BackupContents::references`]: (VM, reference).
    pub fn vm_references(&self) -> impl Iterator<Item = (&VmItem, &VmReference)> {
        self.vms
            .iter()
            .flat_map(|vm| vm.references.iter().map(move |r| (vm, r)))
    }

    /// Each VM disk in the order of [`BackupContents::references`]: (VM, claim).
    pub fn vm_volumes(&self) -> impl Iterator<Item = (&VmItem, &str)> {
        self.vms
            .iter()
            .flat_map(|vm| vm.disks.iter().map(move |disk| (vm, disk.as_str())))
    }
}

/// The key of an object a VM can name: its tarball directory, namespace (empty when
/// cluster-wide) and name.
pub fn reference_key(kind: ReferencedKind, namespace: &str, name: &str) -> String {
    format!("{}/{namespace}/{name}", kind.group_resource())
}

/// The kind, namespace (empty for a cluster-wide kind) and name a [`reference_key`] names.
pub fn parse_reference_key(key: &str) -> Option<(ReferencedKind, &str, &str)> {
    let mut parts = key.splitn(3, '/');
    let kind = ReferencedKind::from_group_resource(parts.next()?)?;
    Some((kind, parts.next()?, parts.next()?))
}

/// A PVC's `spec.volumeName`, if set.
pub fn volume_name(pvc: &Value) -> Option<&str> {
    pvc.pointer(POINTER_VOLUME_NAME)
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
}

/// An object's UID, empty when it has none.
pub fn uid(object: &Value) -> &str {
    object
        .pointer(POINTER_UID)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// For a replica PVC the project made, the UID of the VolumeSnapshot it copies: the
/// [`LABEL_REPLICA_OF_SNAPSHOT_UID`] label, or the annotation of that name when the UID is not a
/// valid label value, on a PVC labelled [`LABEL_MANAGED_BY`]=[`MANAGED_BY`].
pub fn replica_of(pvc: &Value) -> Option<&str> {
    let str_at = |pointer: &str| pvc.pointer(pointer).and_then(Value::as_str);
    str_at(&label_pointer(LABEL_MANAGED_BY))
        .filter(|v| *v == MANAGED_BY)
        .and_then(|_| {
            str_at(&label_pointer(LABEL_REPLICA_OF_SNAPSHOT_UID))
                .or_else(|| str_at(&annotation_pointer(LABEL_REPLICA_OF_SNAPSHOT_UID)))
        })
}

/// The PVC or `DataVolume` names of a VM's disks, in order.
pub fn vm_claims(vm: &Value) -> impl Iterator<Item = &str> {
    vm.pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|volume| {
            volume
                .pointer("/persistentVolumeClaim/claimName")
                .or_else(|| volume.pointer("/dataVolume/name"))
                .and_then(Value::as_str)
        })
}

/// [`START_ORDER`] from the VM's annotations or labels, if it is an integer.
pub fn start_order(vm: &Value) -> Option<i64> {
    [annotation_pointer(START_ORDER), label_pointer(START_ORDER)]
        .iter()
        .find_map(|pointer| {
            vm.pointer(pointer)
                .and_then(Value::as_str)
                .and_then(|v| v.trim().parse().ok())
        })
}

/// The VM's run strategy: `spec.runStrategy`, else `spec.running` as Always or Halted.
pub fn run_strategy(vm: &Value) -> String {
    if let Some(strategy) = vm.pointer("/spec/runStrategy").and_then(Value::as_str) {
        return strategy.to_owned();
    }
    match vm.pointer("/spec/running").and_then(Value::as_bool) {
        Some(true) => "Always".to_owned(),
        _ => "Halted".to_owned(),
    }
}

/// The run strategy a planned failback halted the VM from
/// ([`ANNOTATION_HALTED_FOR_FAILBACK`]), while the VM is still `Halted`; a VM started or changed
/// by hand since says what it says itself.
pub fn halted_for_failback(vm: &Value) -> Option<String> {
    let before = vm
        .pointer(&annotation_pointer(ANNOTATION_HALTED_FOR_FAILBACK))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())?;
    (run_strategy(vm) == "Halted").then(|| before.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn start_order_and_run_strategy_read_every_spelling() {
        let mut vm =
            json!({"kind": "VirtualMachine", "metadata": {"name": "db", "namespace": "vms"}});
        assert_eq!(start_order(&vm), None);
        vm["metadata"]["labels"] = json!({START_ORDER: "2"});
        assert_eq!(start_order(&vm), Some(2));
        vm["metadata"]["annotations"] = json!({START_ORDER: " -1 "});
        assert_eq!(start_order(&vm), Some(-1), "the annotation wins");
        vm["metadata"]["annotations"] = json!({START_ORDER: "first"});
        assert_eq!(
            start_order(&vm),
            Some(2),
            "a non-integer annotation is ignored"
        );
        vm["spec"] = json!({"running": true});
        assert_eq!(run_strategy(&vm), "Always");
        vm["spec"] = json!({"running": false});
        assert_eq!(run_strategy(&vm), "Halted");
        vm["spec"] = json!({"runStrategy": "RerunOnFailure"});
        assert_eq!(run_strategy(&vm), "RerunOnFailure");
    }

    #[test]
    fn a_vm_halted_for_failback_reads_as_it_ran_only_while_halted() {
        let mut vm = json!({
            "metadata": {"name": "db", "annotations": {ANNOTATION_HALTED_FOR_FAILBACK: "Always"}},
            "spec": {"runStrategy": "Halted"},
        });
        assert_eq!(halted_for_failback(&vm).as_deref(), Some("Always"));
        vm["spec"]["runStrategy"] = json!("Always");
        assert_eq!(
            halted_for_failback(&vm),
            None,
            "started since: its own strategy"
        );
        vm["spec"]["runStrategy"] = json!("Halted");
        vm["metadata"]["annotations"][ANNOTATION_HALTED_FOR_FAILBACK] = json!("");
        assert_eq!(halted_for_failback(&vm), None);
    }

    #[test]
    fn replicas_are_recognised_by_label_or_annotation_on_a_managed_pvc() {
        let managed = json!({"metadata": {"labels": {
            LABEL_MANAGED_BY: MANAGED_BY, LABEL_REPLICA_OF_SNAPSHOT_UID: "u1"}}});
        assert_eq!(replica_of(&managed), Some("u1"));
        let annotated = json!({"metadata": {
            "labels": {LABEL_MANAGED_BY: MANAGED_BY},
            "annotations": {LABEL_REPLICA_OF_SNAPSHOT_UID: "u2"}}});
        assert_eq!(replica_of(&annotated), Some("u2"));
        let foreign = json!({"metadata": {"labels": {LABEL_REPLICA_OF_SNAPSHOT_UID: "u3"}}});
        assert_eq!(replica_of(&foreign), None, "not made by the project");
    }

    #[test]
    fn vm_disks_name_claims_and_data_volumes_in_order() {
        let vm = json!({"spec": {"template": {"spec": {"volumes": [
            {"name": "root", "dataVolume": {"name": "db-root"}},
            {"name": "init", "cloudInitNoCloud": {}},
            {"name": "data", "persistentVolumeClaim": {"claimName": "db-data"}},
        ]}}}});
        assert_eq!(vm_claims(&vm).collect::<Vec<_>>(), ["db-root", "db-data"]);
    }
}
