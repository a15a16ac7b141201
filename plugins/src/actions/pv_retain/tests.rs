use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use replicadr_core::wire::{CONFIG_SITE_MAP, NFS_CSI_DRIVER};

const SITE_MAP: &str = r"
sites: [primary, dr]
exports:
  - name: vm-disks
    primary: {server: nfs-a.example.com, path: /exports/vms}
    dr:      {server: 10.20.0.5,         path: /replica/vms}
";

fn config(extra: &[(&str, &str)]) -> PluginConfig {
    let mut data = BTreeMap::from([(CONFIG_SITE_MAP.to_owned(), SITE_MAP.to_owned())]);
    for (key, value) in extra {
        data.insert((*key).to_owned(), (*value).to_owned());
    }
    PluginConfig {
        origin: "velero/replicadr-plugins".into(),
        data,
    }
}

fn action(extra: &[(&str, &str)]) -> PvRetain {
    PvRetain::from_config(Some(&config(extra))).expect("valid config")
}

fn nfs_pv(name: &str, server: &str, path: &str, policy: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": "nfs"}},
        "spec": {
            "capacity": {"storage": "10Gi"},
            "persistentVolumeReclaimPolicy": policy,
            "nfs": {"server": server, "path": path},
            "claimRef": {"namespace": "vms", "name": "disk-1"},
            "someFutureField": [1, 2]
        },
        "status": {"phase": "Bound"}
    })
}

fn run(action: &PvRetain, item: Value) -> Result<Value, ItemError> {
    action
        .execute(BackupInput {
            item,
            backup: json!({}),
        })
        .map(|out| out.item)
}

#[test]
fn applies_to_persistent_volumes_without_namespace_filters() {
    let selector = PvRetainFactory.applies_to();
    assert_eq!(selector.included_resources, vec!["persistentvolumes"]);
    assert!(selector.included_namespaces.is_empty() && selector.excluded_namespaces.is_empty());
}

#[test]
fn mapped_delete_pv_is_backed_up_as_retain_with_the_original_recorded() {
    let input = nfs_pv("pv-1", "nfs-a.example.com", "/exports/vms/disk-1", "Delete");
    let out = run(&action(&[]), input.clone()).expect("retained");
    assert_eq!(out["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(
        out["metadata"]["annotations"][ANNOTATION_ORIGINAL_RECLAIM_POLICY],
        "Delete"
    );
    // Exactly those two fields changed; everything else, unknown fields included, survives.
    let mut undone = out.clone();
    undone["spec"]["persistentVolumeReclaimPolicy"] = json!("Delete");
    undone["metadata"]["annotations"]
        .as_object_mut()
        .expect("annotations")
        .remove(ANNOTATION_ORIGINAL_RECLAIM_POLICY);
    assert_eq!(undone, input);
}

#[test]
fn dr_side_exports_count_as_covered_too() {
    let out = run(
        &action(&[]),
        nfs_pv("pv-2", "10.20.0.5", "/replica/vms/disk", "Recycle"),
    )
    .expect("retained");
    assert_eq!(out["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(
        out["metadata"]["annotations"][ANNOTATION_ORIGINAL_RECLAIM_POLICY],
        "Recycle"
    );
}

#[test]
fn csi_nfs_volumes_are_covered() {
    let pv = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "pv-csi"},
        "spec": {
            "persistentVolumeReclaimPolicy": "Delete",
            "csi": {"driver": NFS_CSI_DRIVER, "volumeHandle": "h", "volumeAttributes": {"server": "nfs-a.example.com", "share": "/exports/vms", "subDir": "pvc-1"}}
        }
    });
    let out = run(&action(&[]), pv).expect("retained");
    assert_eq!(out["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(
        out["metadata"]["annotations"][ANNOTATION_ORIGINAL_RECLAIM_POLICY],
        "Delete"
    );
}

#[test]
fn retain_and_defaulted_policies_are_unchanged() {
    let action = action(&[]);
    let retain = nfs_pv("pv-r", "nfs-a.example.com", "/exports/vms/a", "Retain");
    assert_eq!(run(&action, retain.clone()).expect("unchanged"), retain);
    let mut absent = retain;
    absent["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("persistentVolumeReclaimPolicy");
    assert_eq!(run(&action, absent.clone()).expect("unchanged"), absent);
}

#[test]
fn unmapped_nfs_pvs_pass_through_unless_configured() {
    let pv = nfs_pv("pv-u", "other.example.com", "/data/x", "Delete");
    assert_eq!(run(&action(&[]), pv.clone()).expect("unchanged"), pv);
    let out = run(&action(&[(CONFIG_RETAIN_UNMAPPED, "true")]), pv).expect("retained");
    assert_eq!(out["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(
        out["metadata"]["annotations"][ANNOTATION_ORIGINAL_RECLAIM_POLICY],
        "Delete"
    );
    assert_eq!(
        action(&[(CONFIG_RETAIN_UNMAPPED, "false")])
            .retain(&mut nfs_pv(
                "pv-u",
                "other.example.com",
                "/data/x",
                "Delete"
            ))
            .expect("unmapped"),
        Outcome::Unmapped {
            reason: "nfs export other.example.com:/data/x is not in the site map".into(),
            policy: "Delete".into()
        }
    );
}

#[test]
fn unreadable_nfs_locations_count_as_unmapped() {
    let pv = json!({"kind": "PersistentVolume", "metadata": {"name": "c"}, "spec": {"persistentVolumeReclaimPolicy": "Delete", "csi": {"driver": NFS_CSI_DRIVER, "volumeHandle": "h"}}});
    let outcome = action(&[]).retain(&mut pv.clone()).expect("passed");
    assert!(
        matches!(&outcome, Outcome::Unmapped { reason, .. } if reason.contains("spec.csi.volumeAttributes.server")),
        "{outcome:?}"
    );
    let out = run(&action(&[(CONFIG_RETAIN_UNMAPPED, "true")]), pv).expect("retained");
    assert_eq!(out["spec"]["persistentVolumeReclaimPolicy"], "Retain");
}

#[test]
fn non_nfs_volumes_pass_through_untouched() {
    let action = action(&[(CONFIG_RETAIN_UNMAPPED, "true")]);
    for pv in [
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "local"}, "spec": {"persistentVolumeReclaimPolicy": "Delete", "hostPath": {"path": "/data"}}}),
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "rbd"}, "spec": {"persistentVolumeReclaimPolicy": "Delete", "csi": {"driver": "rbd.csi.ceph.com", "volumeHandle": "x"}}}),
    ] {
        assert_eq!(run(&action, pv.clone()).expect("unchanged"), pv);
    }
}

#[test]
fn bad_items_get_clear_errors() {
    let text = run(
        &action(&[]),
        json!({"kind": "Secret", "metadata": {"name": "s", "namespace": "n"}}),
    )
    .expect_err("kind")
    .to_string();
    assert!(text.contains("Secret n/s") && text.contains(NAME), "{text}");
}

#[test]
fn config_errors_name_the_object_key_and_accepted_values() {
    assert_eq!(
        PvRetain::from_config(None).expect_err("missing"),
        ConfigError::Missing {
            required_keys: "siteMap"
        }
    );
    let text = PvRetain::from_config(Some(&config(&[(CONFIG_RETAIN_UNMAPPED, "yes")])))
        .expect_err("bad flag")
        .to_string();
    for expected in [
        "velero/replicadr-plugins",
        "\"retainUnmapped\"",
        "\"yes\"",
        "\"true\" or \"false\"",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from {text}");
    }
    let mut no_map = config(&[]);
    no_map.data.remove(CONFIG_SITE_MAP);
    assert!(
        PvRetain::from_config(Some(&no_map))
            .expect_err("no map")
            .to_string()
            .contains("key \"siteMap\" is missing")
    );
    // Keys of the other plugins sharing the ConfigMap are fine.
    action(&[
        ("localSite", "dr"),
        ("storageClassMap", "a: b"),
        (CONFIG_RETAIN_UNMAPPED, " TRUE "),
    ]);
}
