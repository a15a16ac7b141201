use std::collections::BTreeSet;
use std::sync::Arc;

use replicadr_core::wire::{
    ANNOTATION_CDI_IMPORT_ENDPOINT, ANNOTATION_CDI_POD_PHASE, ANNOTATION_KVP_VMI_OWNED,
};
use serde_json::{Value, json};

use super::*;
use crate::actions::ClusterError;

/// The site: claims by `namespace/name` (each marked populated for the `DataVolume` of its name
/// unless listed in `foreign`), and PVs pre-bound to claims by `namespace/name`.
#[derive(Default)]
struct Site {
    claims: BTreeSet<String>,
    foreign: BTreeSet<String>,
    pre_bound: BTreeSet<String>,
}

#[async_trait::async_trait]
impl Cluster for Site {
    async fn get(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ClusterError> {
        assert_eq!(kind.plural, "persistentvolumeclaims");
        let key = format!("{}/{name}", namespace.unwrap_or_default());
        let annotations = if self.foreign.contains(&key) {
            json!({})
        } else {
            json!({ANNOTATION_CDI_POPULATED_FOR: name})
        };
        Ok(self
            .claims
            .contains(&key)
            .then(|| json!({"metadata": {"name": name, "annotations": annotations}})))
    }

    async fn create(
        &self,
        _: &ResourceType,
        _: Option<&str>,
        _: &Value,
    ) -> Result<Value, ClusterError> {
        unreachable!("the action creates nothing")
    }

    async fn list(
        &self,
        kind: &ResourceType,
        _: Option<&str>,
        _: &str,
    ) -> Result<Vec<Value>, ClusterError> {
        assert_eq!(kind.plural, "persistentvolumes");
        Ok(self
            .pre_bound
            .iter()
            .map(|key| {
                let (namespace, name) = key.split_once('/').expect("namespace/name");
                json!({"kind": "PersistentVolume", "metadata": {"name": format!("pv-{name}")},
                       "spec": {"claimRef": {"namespace": namespace, "name": name}}})
            })
            .collect())
    }
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

fn action(claims: &[&str], without_claim: bool) -> KubevirtRestore {
    on_site(
        Site {
            claims: set(claims),
            ..Site::default()
        },
        without_claim,
    )
}

fn on_site(site: Site, without_claim: bool) -> KubevirtRestore {
    let config = PluginConfig {
        origin: "velero/replicadr-kubevirt".to_owned(),
        data: [(
            CONFIG_RESTORE_DATA_VOLUMES_WITHOUT_CLAIM.to_owned(),
            without_claim.to_string(),
        )]
        .into(),
    };
    KubevirtRestore::from_config(Some(&config), Arc::new(site)).expect("config")
}

/// Runs the action on `backed_up` as Velero hands it: the item stripped of ownerReferences and
/// status, the backed-up copy whole.
fn run(action: &KubevirtRestore, backed_up: &Value) -> Result<RestoreOutput, ItemError> {
    run_in(action, backed_up, &json!({}))
}

/// [`run`] for the Restore `restore`.
fn run_in(
    action: &KubevirtRestore,
    backed_up: &Value,
    restore: &Value,
) -> Result<RestoreOutput, ItemError> {
    let mut item = backed_up.clone();
    item["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("ownerReferences");
    item.as_object_mut().expect("object").remove("status");
    futures::executor::block_on(action.execute(RestoreInput {
        item,
        item_from_backup: Some(backed_up.clone()),
        restore: restore.clone(),
    }))
}

fn annotation<'v>(object: &'v Value, key: &str) -> Option<&'v str> {
    object["metadata"]["annotations"][key].as_str()
}

#[test]
fn applies_to_pods_vmis_claims_and_data_volumes_everywhere() {
    let selector = KubevirtRestoreFactory.applies_to();
    assert_eq!(
        selector.included_resources,
        [
            "pods",
            "virtualmachineinstances.kubevirt.io",
            "persistentvolumeclaims",
            "persistentvolumes",
            "datavolumes.cdi.kubevirt.io"
        ]
    );
    assert!(selector.included_namespaces.is_empty());
}

#[test]
fn launcher_pods_and_vmis_a_vm_owned_are_skipped_and_the_rest_restored() {
    let action = action(&[], false);
    let launcher = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "virt-launcher-db-x7k2p", "namespace": "vms",
        "labels": {"kubevirt.io": "virt-launcher", "vm.kubevirt.io/name": "db"},
        "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                             "name": "db", "uid": "vmi-uid", "controller": true}]}});
    assert!(run(&action, &launcher).expect("pod").skip_restore);
    let app = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "web-1", "namespace": "vms", "labels": {"app": "web"}}});
    assert!(!run(&action, &app).expect("pod").skip_restore);
    let vmi = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {
        "name": "db", "namespace": "vms",
        "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                             "name": "db", "uid": "vm-uid", "controller": true}]}});
    assert!(
        run(&action, &vmi).expect("vmi").skip_restore,
        "decided on the backed-up copy: the item Velero hands has no owner"
    );
    let marked = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {
        "name": "db", "namespace": "vms", "annotations": {ANNOTATION_KVP_VMI_OWNED: "true"}}});
    assert!(run(&action, &marked).expect("vmi").skip_restore);
    let standalone = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "lone", "namespace": "vms"}});
    assert!(!run(&action, &standalone).expect("vmi").skip_restore);
}

fn dv_claim(annotations: &Value) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {
        "name": "db-root", "namespace": "vms", "annotations": annotations,
        "ownerReferences": [{"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
                             "name": "db-root", "uid": "dv-uid", "controller": true}]},
        "spec": {"volumeName": "pv-root"}})
}

#[test]
fn a_claim_of_a_data_volume_is_marked_populated_and_an_unfinished_import_is_skipped() {
    let action = action(&[], false);
    let done = dv_claim(&json!({
        ANNOTATION_CDI_IMPORT_ENDPOINT: "https://images.example.com/disk.qcow2",
        ANNOTATION_CDI_POD_PHASE: "Succeeded",
    }));
    let out = run(&action, &done).expect("claim");
    assert!(!out.skip_restore);
    assert_eq!(
        annotation(&out.item, ANNOTATION_CDI_POPULATED_FOR),
        Some("db-root")
    );
    assert_eq!(
        out.item["spec"]["volumeName"], "pv-root",
        "the rest as it came"
    );
    let running = dv_claim(&json!({
        ANNOTATION_CDI_IMPORT_ENDPOINT: "https://images.example.com/disk.qcow2",
        ANNOTATION_CDI_POD_PHASE: "Running",
    }));
    assert!(
        run(&action, &running).expect("claim").skip_restore,
        "an importer would write into the replicated disk"
    );
    let plain = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "vms"}});
    let out = run(&action, &plain).expect("claim");
    assert!(!out.skip_restore);
    assert_eq!(annotation(&out.item, ANNOTATION_CDI_POPULATED_FOR), None);
}

fn data_volume(phase: &str) -> Value {
    json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "db-root", "namespace": "vms"},
        "spec": {"source": {"http": {"url": "https://images.example.com/disk.qcow2"}}},
        "status": {"phase": phase}})
}

#[test]
fn a_succeeded_data_volume_with_its_claim_here_is_marked_pre_populated() {
    let out = run(&action(&["vms/db-root"], false), &data_volume("Succeeded")).expect("dv");
    assert!(!out.skip_restore);
    assert_eq!(
        annotation(&out.item, ANNOTATION_CDI_PRE_POPULATED),
        Some("db-root")
    );
}

#[test]
fn a_data_volume_without_its_claim_or_not_succeeded_is_an_error_naming_it() {
    let error = run(&action(&[], false), &data_volume("Succeeded")).expect_err("no claim");
    assert!(
        error.0.contains("DataVolume vms/db-root is not restored")
            && error
                .0
                .contains("its claim vms/db-root is not at this site")
            && error.0.contains("restoreDataVolumesWithoutClaim"),
        "{error}"
    );
    let error = run(
        &action(&["vms/db-root"], false),
        &data_volume("ImportInProgress"),
    )
    .expect_err("not succeeded");
    assert!(
        error
            .0
            .contains("it was ImportInProgress when backed up, not Succeeded"),
        "{error}"
    );
    // Configured to let CDI import: restored, unmarked.
    let out = run(&action(&[], true), &data_volume("Succeeded")).expect("allowed");
    assert!(!out.skip_restore);
    assert_eq!(annotation(&out.item, ANNOTATION_CDI_PRE_POPULATED), None);
}

#[test]
fn a_bad_config_value_is_refused_naming_the_key() {
    let config = PluginConfig {
        origin: "velero/replicadr-kubevirt".to_owned(),
        data: [(
            CONFIG_RESTORE_DATA_VOLUMES_WITHOUT_CLAIM.to_owned(),
            "yes".to_owned(),
        )]
        .into(),
    };
    let error = KubevirtRestore::from_config(Some(&config), Arc::new(Site::default()))
        .expect_err("refused");
    assert!(
        error.to_string().contains("restoreDataVolumesWithoutClaim")
            && error.to_string().contains("\"yes\""),
        "{error}"
    );
}

#[test]
fn the_claim_is_looked_up_where_the_restore_maps_its_namespace_and_must_hold_the_data() {
    let restore = json!({"spec": {"namespaceMapping": {"vms": "vms-drill"}}});
    let mapped = run_in(
        &action(&["vms-drill/db-root"], false),
        &data_volume("Succeeded"),
        &restore,
    );
    assert!(mapped.is_ok(), "{mapped:?}");
    let unmapped = run_in(
        &action(&["vms/db-root"], false),
        &data_volume("Succeeded"),
        &restore,
    );
    assert!(
        unmapped.is_err(),
        "a claim of the source namespace is not the restored one"
    );
    let foreign = on_site(
        Site {
            claims: set(&["vms/db-root"]),
            foreign: set(&["vms/db-root"]),
            ..Site::default()
        },
        false,
    );
    let error = run(&foreign, &data_volume("Succeeded")).expect_err("not its data");
    assert!(
        error
            .0
            .contains("does not say it holds this DataVolume's data"),
        "{error}"
    );
}

#[test]
fn importing_without_a_claim_is_refused_while_a_pv_is_pre_bound_to_its_name() {
    let pre_bound = on_site(
        Site {
            pre_bound: set(&["vms/db-root"]),
            ..Site::default()
        },
        true,
    );
    let error = run(&pre_bound, &data_volume("Succeeded")).expect_err("refused");
    assert!(
        error
            .0
            .contains("PersistentVolume pv-db-root at this site is pre-bound to claim vms/db-root"),
        "{error}"
    );
}

#[test]
fn a_pv_marked_as_the_volume_of_a_left_out_claim_is_skipped() {
    let action = action(&[], false);
    let marked = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {
        "name": "pv-scratch",
        "annotations": {ANNOTATION_CLAIM_LEFT_OUT: "claim vms/scratch: it is marked"}}});
    assert!(run(&action, &marked).expect("pv").skip_restore);
    let plain =
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-root"}});
    assert!(!run(&action, &plain).expect("pv").skip_restore);
}
