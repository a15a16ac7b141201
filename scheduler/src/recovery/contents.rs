//! What a failover restores, read from a backup tarball: every VM, PVC, PV and VolumeSnapshot,
//! with the fields the plan and the failover use. Other items are counted, not kept.

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::Value;

use crate::verify::archive::{self, ArchiveError};

/// The annotation (or label) that orders VM starts after a failover: lower starts first.
pub const START_ORDER: &str = "replicadr.io/start-order";

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
}

/// A VolumeSnapshot in the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotItem {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The backup's VMs, PVCs, PVs and snapshots.
#[derive(Debug, Default, Clone)]
pub struct BackupContents {
    pub vms: Vec<VmItem>,
    pub pvcs: Vec<PvcItem>,
    /// Whole PV objects by name: the plan runs the restore plugin's rewrite on them.
    pub pvs: BTreeMap<String, Value>,
    pub snapshots: Vec<SnapshotItem>,
    /// Every item in the tarball.
    pub items: u64,
    /// Items that are not valid JSON objects, by path-like name.
    pub unreadable: Vec<String>,
}

const WANTED: [&str; 4] = [
    "persistentvolumeclaims",
    "persistentvolumes",
    "volumesnapshots.snapshot.storage.k8s.io",
    "virtualmachines.kubevirt.io",
];

impl BackupContents {
    /// Reads a `<backup>.tar.gz` to its end.
    pub fn read(source: impl Read) -> Result<Self, ArchiveError> {
        let mut contents = Self::default();
        contents.items = archive::read_items(
            source,
            |group_resource| WANTED.contains(&group_resource),
            |group_resource, bytes| contents.add(group_resource, bytes),
        )?;
        contents
            .vms
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
            "virtualmachines.kubevirt.io" => self.vms.push(VmItem {
                start_order: start_order(&object),
                run_strategy: run_strategy(&object),
                disks: archive::vm_claims(&object).map(str::to_owned).collect(),
                namespace,
                name,
            }),
            "persistentvolumeclaims" => self.pvcs.push(PvcItem {
                volume: archive::volume_name(&object).map(str::to_owned),
                replica_of_snapshot: archive::replica_of(&object).map(str::to_owned),
                namespace,
                name,
            }),
            "persistentvolumes" => {
                self.pvs.insert(name, object);
            }
            _ => self.snapshots.push(SnapshotItem {
                uid: text("/metadata/uid"),
                namespace,
                name,
            }),
        }
    }

    /// The namespaces holding a VM or PVC, sorted.
    pub fn namespaces(&self) -> Vec<String> {
        let mut namespaces: Vec<String> = self
            .vms
            .iter()
            .map(|vm| vm.namespace.clone())
            .chain(self.pvcs.iter().map(|pvc| pvc.namespace.clone()))
            .collect();
        namespaces.sort();
        namespaces.dedup();
        namespaces
    }
}

/// [`START_ORDER`] from the VM's annotations or labels, if it is an integer.
pub fn start_order(vm: &Value) -> Option<i64> {
    let key = START_ORDER.replace('/', "~1");
    ["annotations", "labels"].iter().find_map(|place| {
        vm.pointer(&format!("/metadata/{place}/{key}"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::fixture::{self, objects};
    use serde_json::json;

    #[test]
    fn reads_vms_claims_volumes_and_snapshots_from_a_tarball() {
        let (tarball, _) = fixture::healthy_vm_backup().expect("fixture");
        let contents = BackupContents::read(tarball.as_slice()).expect("reads");
        assert_eq!(contents.vms.len(), 1);
        assert_eq!(contents.vms[0].run_strategy, "Always");
        assert!(contents.vms[0].runs());
        assert!(!contents.pvcs.is_empty() && !contents.pvs.is_empty());
        assert!(
            contents
                .pvcs
                .iter()
                .any(|p| p.replica_of_snapshot.is_some())
        );
        assert_eq!(contents.snapshots.len(), 1);
        assert_eq!(contents.namespaces(), vec!["vms".to_owned()]);
        assert!(contents.items > 5, "{}", contents.items);
    }

    #[test]
    fn start_order_and_run_strategy_read_every_spelling() {
        let mut vm = objects::vm("vms", "db", &["db-root"]);
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
}
