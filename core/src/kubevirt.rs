//! What KubeVirt and CDI do with the objects a metadata-only restore brings back, as predicates
//! over backed-up objects: which are never restored (a VM's VMI, launcher and hotplug pods), and
//! which claims CDI would write into or adopt. The restore action, verification and `replicadr
//! plan` decide with these, so they agree. The upstream behaviour each follows is named on it.

use serde_json::Value;

use crate::wire::{
    ANNOTATION_CDI_IMPORT_ENDPOINT, ANNOTATION_CDI_IMPORT_SOURCE, ANNOTATION_CDI_POD_PHASE,
    ANNOTATION_CDI_POPULATED_FOR, ANNOTATION_KVP_IN_PROGRESS, ANNOTATION_KVP_VMI_OWNED,
    LABEL_KUBEVIRT, annotation_pointer, label_pointer,
};

/// The values of [`LABEL_KUBEVIRT`] on the pods KubeVirt makes for a running VMI.
const KUBEVIRT_POD_ROLES: [&str; 2] = ["virt-launcher", "hotplug-disk"];

fn annotation<'v>(object: &'v Value, key: &str) -> Option<&'v str> {
    object
        .pointer(&annotation_pointer(key))
        .and_then(Value::as_str)
}

/// The name of the owner of `kind` in `object`'s ownerReferences, as backed up.
pub fn owner_of_kind<'v>(object: &'v Value, kind: &str) -> Option<&'v str> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|owner| owner.get("kind").and_then(Value::as_str) == Some(kind))
        .and_then(|owner| owner.get("name").and_then(Value::as_str))
}

/// A pod KubeVirt makes for a VMI (`kubevirt.io: virt-launcher` or `hotplug-disk`): KubeVirt makes
/// it again when the VM starts; restored, it is an orphan a real cluster schedules, mounting the
/// claims before anyone promoted the export (virt-controller neither adopts nor deletes it).
pub fn is_kubevirt_pod(pod: &Value) -> Option<&str> {
    pod.pointer(&label_pointer(LABEL_KUBEVIRT))
        .and_then(Value::as_str)
        .filter(|role| KUBEVIRT_POD_ROLES.contains(role))
}

/// A VMI a VM owned (its ownerReferences, or kubevirt-velero-plugin's `isOwned` mark): restored
/// without its owner, virt-controller would boot it, racing the halted VM that deletes it. The
/// VM's own name when known.
pub fn vm_owning_vmi(vmi: &Value) -> Option<&str> {
    owner_of_kind(vmi, "VirtualMachine").or_else(|| {
        (annotation(vmi, ANNOTATION_KVP_VMI_OWNED) == Some("true"))
            .then(|| vmi.pointer("/metadata/name").and_then(Value::as_str))
            .flatten()
    })
}

/// Why the restore must not bring a claim back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimHazard {
    /// Marked at backup (by kubevirt-velero-plugin or `replicadr.io/kubevirt-backup`): its
    /// `DataVolume` (named) had not succeeded.
    MarkedInProgress(String),
    /// It carries CDI import annotations and its import had not completed when backed up: CDI's
    /// import controller (`shouldReconcilePVC`: an endpoint or source annotation, and no pod phase
    /// `Succeeded`) would start an importer writing into the replicated disk.
    ImportUnfinished {
        /// The pod phase recorded, if any.
        pod_phase: Option<String>,
    },
}

impl ClaimHazard {
    /// What it means, for a message about the claim.
    pub fn explain(&self) -> String {
        match self {
            ClaimHazard::MarkedInProgress(data_volume) => format!(
                "it is marked {ANNOTATION_KVP_IN_PROGRESS}={data_volume} (kubevirt-velero-plugin's mark, which replicadr.io/kubevirt-backup writes too): DataVolume {data_volume} had not succeeded when it was backed up, so the claim's disk was not complete"
            ),
            ClaimHazard::ImportUnfinished { pod_phase } => format!(
                "its CDI import had not completed when it was backed up ({ANNOTATION_CDI_POD_PHASE} is {}), and CDI starts an importer on such a claim that would write into the replicated disk",
                pod_phase
                    .as_deref()
                    .map_or_else(|| "not set".to_owned(), |p| format!("{p:?}"))
            ),
        }
    }
}

/// Whether restoring `claim` (as backed up) would let CDI write into its volume.
pub fn claim_hazard(claim: &Value) -> Option<ClaimHazard> {
    if let Some(data_volume) = annotation(claim, ANNOTATION_KVP_IN_PROGRESS) {
        return Some(ClaimHazard::MarkedInProgress(data_volume.to_owned()));
    }
    let imports = [ANNOTATION_CDI_IMPORT_ENDPOINT, ANNOTATION_CDI_IMPORT_SOURCE]
        .iter()
        .any(|key| annotation(claim, key).is_some());
    let pod_phase = annotation(claim, ANNOTATION_CDI_POD_PHASE);
    (imports && pod_phase != Some("Succeeded")).then(|| ClaimHazard::ImportUnfinished {
        pod_phase: pod_phase.map(str::to_owned),
    })
}

/// The `DataVolume` a claim holds the data of, so CDI adopts it at the other site: the one it
/// already says ([`ANNOTATION_CDI_POPULATED_FOR`]), else the `DataVolume` that owned it.
pub fn populated_for(claim: &Value) -> Option<&str> {
    annotation(claim, ANNOTATION_CDI_POPULATED_FOR).or_else(|| owner_of_kind(claim, "DataVolume"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_import_is_a_hazard_until_its_pod_succeeded() {
        let mut claim = json!({"metadata": {"name": "root", "annotations": {
            ANNOTATION_CDI_IMPORT_ENDPOINT: "https://images.example.com/disk.qcow2"}}});
        assert_eq!(
            claim_hazard(&claim),
            Some(ClaimHazard::ImportUnfinished { pod_phase: None })
        );
        claim["metadata"]["annotations"][ANNOTATION_CDI_POD_PHASE] = json!("Running");
        assert!(claim_hazard(&claim).is_some_and(|h| h.explain().contains("\"Running\"")));
        claim["metadata"]["annotations"][ANNOTATION_CDI_POD_PHASE] = json!("Succeeded");
        assert_eq!(claim_hazard(&claim), None);
        claim["metadata"]["annotations"][ANNOTATION_KVP_IN_PROGRESS] = json!("root");
        assert_eq!(
            claim_hazard(&claim),
            Some(ClaimHazard::MarkedInProgress("root".to_owned())),
            "kubevirt-velero-plugin's mark wins"
        );
        let plain = json!({"metadata": {"name": "data"}});
        assert_eq!(claim_hazard(&plain), None);
    }

    #[test]
    fn launcher_pods_and_owned_vmis_are_recognised() {
        let launcher = json!({"metadata": {"labels": {LABEL_KUBEVIRT: "virt-launcher"}}});
        assert_eq!(is_kubevirt_pod(&launcher), Some("virt-launcher"));
        let app = json!({"metadata": {"labels": {"app": "web"}}});
        assert_eq!(is_kubevirt_pod(&app), None);
        let owned = json!({"metadata": {"name": "db", "ownerReferences": [
            {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "db", "uid": "u"}]}});
        assert_eq!(vm_owning_vmi(&owned), Some("db"));
        let marked =
            json!({"metadata": {"name": "db", "annotations": {ANNOTATION_KVP_VMI_OWNED: "true"}}});
        assert_eq!(vm_owning_vmi(&marked), Some("db"));
        let standalone = json!({"metadata": {"name": "lone"}});
        assert_eq!(vm_owning_vmi(&standalone), None);
    }

    #[test]
    fn a_claim_is_populated_for_its_annotation_or_its_owner() {
        let owned = json!({"metadata": {"ownerReferences": [
            {"kind": "DataVolume", "name": "db-root", "uid": "u"}]}});
        assert_eq!(populated_for(&owned), Some("db-root"));
        let annotated = json!({"metadata": {"annotations": {ANNOTATION_CDI_POPULATED_FOR: "dv"}}});
        assert_eq!(populated_for(&annotated), Some("dv"));
        assert_eq!(populated_for(&json!({"metadata": {}})), None);
    }
}
