use std::collections::BTreeMap;
use std::sync::Arc;

use replicadr_core::wire::{ANNOTATION_CDI_IMPORT_ENDPOINT, ANNOTATION_CDI_POD_PHASE};
use serde_json::{Value, json};

use super::*;
use crate::actions::ClusterError;

/// The live objects the action reads, by `plural/namespace/name`.
#[derive(Default)]
struct Live(BTreeMap<String, Value>);

impl Live {
    fn with(mut self, plural: &str, object: Value) -> Self {
        let key = format!(
            "{plural}/{}/{}",
            object["metadata"]["namespace"].as_str().unwrap_or_default(),
            object["metadata"]["name"].as_str().unwrap_or_default()
        );
        self.0.insert(key, object);
        self
    }
}

#[async_trait::async_trait]
impl Cluster for Live {
    async fn get(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ClusterError> {
        let key = format!("{}/{}/{name}", kind.plural, namespace.unwrap_or_default());
        Ok(self.0.get(&key).cloned())
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
        _: &ResourceType,
        _: Option<&str>,
        _: &str,
    ) -> Result<Vec<Value>, ClusterError> {
        unreachable!("the action lists nothing")
    }
}

fn data_volume(name: &str, phase: &str) -> Value {
    json!({"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
           "metadata": {"name": name, "namespace": "vms"}, "status": {"phase": phase}})
}

fn claim(name: &str, annotations: &Value) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": name, "namespace": "vms", "annotations": annotations,
                        "ownerReferences": [{"apiVersion": "cdi.kubevirt.io/v1beta1",
                                             "kind": "DataVolume", "name": name, "uid": "u"}]},
           "spec": {"volumeName": format!("pv-{name}")}})
}

fn pv(claim: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolume",
           "metadata": {"name": format!("pv-{claim}")},
           "spec": {"claimRef": {"namespace": "vms", "name": claim},
                    "nfs": {"server": "nfs-a.example.com", "path": format!("/exports/vms/{claim}")}}})
}

fn run(live: Live, item: Value) -> Result<Value, ItemError> {
    let action = KubevirtBackup::new(Arc::new(live));
    futures::executor::block_on(action.execute(BackupInput {
        item,
        backup: json!({}),
    }))
    .map(|out| out.item)
}

fn annotation<'v>(object: &'v Value, key: &str) -> Option<&'v str> {
    object["metadata"]["annotations"][key].as_str()
}

#[test]
fn a_claim_is_marked_as_kubevirt_velero_plugin_marks_it() {
    let live = || {
        Live::default()
            .with("datavolumes", data_volume("root", "Succeeded"))
            .with("datavolumes", data_volume("scratch", "ImportInProgress"))
    };
    let root = run(live(), claim("root", &json!({}))).expect("claim");
    assert_eq!(
        annotation(&root, ANNOTATION_CDI_POPULATED_FOR),
        Some("root")
    );
    assert_eq!(annotation(&root, ANNOTATION_KVP_IN_PROGRESS), None);
    let scratch = run(live(), claim("scratch", &json!({}))).expect("claim");
    assert_eq!(
        annotation(&scratch, ANNOTATION_KVP_IN_PROGRESS),
        Some("scratch")
    );
    assert_eq!(annotation(&scratch, ANNOTATION_CDI_POPULATED_FOR), None);
    let plain = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {"name": "data", "namespace": "vms"}});
    assert_eq!(
        run(live(), plain.clone()).expect("claim"),
        plain,
        "no DataVolume: unchanged"
    );
}

#[test]
fn the_pv_of_a_claim_the_restore_leaves_out_is_marked() {
    let importing = claim(
        "import",
        &json!({ANNOTATION_CDI_IMPORT_ENDPOINT: "https://images.example.com/disk.qcow2",
                ANNOTATION_CDI_POD_PHASE: "Running"}),
    );
    let live = || {
        Live::default()
            .with("datavolumes", data_volume("root", "Succeeded"))
            .with("datavolumes", data_volume("scratch", "Pending"))
            .with("persistentvolumeclaims", claim("root", &json!({})))
            .with("persistentvolumeclaims", claim("scratch", &json!({})))
            .with("persistentvolumeclaims", importing.clone())
    };
    let root = run(live(), pv("root")).expect("pv");
    assert_eq!(annotation(&root, ANNOTATION_CLAIM_LEFT_OUT), None);
    let scratch = run(live(), pv("scratch")).expect("pv");
    assert!(
        annotation(&scratch, ANNOTATION_CLAIM_LEFT_OUT).is_some_and(|why| why.starts_with(
            "claim vms/scratch: it is marked kvp.kubevirt.io/storage.inprogress=scratch"
        )),
        "{scratch:#}"
    );
    let import = run(live(), pv("import")).expect("pv");
    assert!(
        annotation(&import, ANNOTATION_CLAIM_LEFT_OUT)
            .is_some_and(|why| why.contains("its CDI import had not completed")),
        "{import:#}"
    );
    let unclaimed = run(live(), pv("gone")).expect("pv");
    assert_eq!(annotation(&unclaimed, ANNOTATION_CLAIM_LEFT_OUT), None);
}
