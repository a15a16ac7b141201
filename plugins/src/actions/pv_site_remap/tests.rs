use std::collections::BTreeMap;

use serde_json::json;

use super::*;

const SITE_MAP: &str = r"
sites: [primary, dr]
exports:
  - name: vm-disks
    primary: {server: nfs-a.example.com, path: /exports/vms}
    dr:      {server: 10.20.0.5,         path: /replica/vms}
  - name: scratch
    primary: {server: nfs-a.example.com, path: /scratch}
    dr:      {server: nfs-b.example.com, path: /scratch}
";

fn config(local: &str, map: &str) -> PluginConfig {
    PluginConfig {
        origin: "velero/replicadr-pv-site-remap".into(),
        data: BTreeMap::from([
            (CONFIG_LOCAL_SITE.to_owned(), local.to_owned()),
            (CONFIG_SITE_MAP.to_owned(), map.to_owned()),
        ]),
    }
}

fn action(local: &str, map: &str) -> PvSiteRemap {
    PvSiteRemap::from_config(Some(&config(local, map))).expect("valid config")
}

fn in_tree_pv(name: &str, server: &str, path: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {"app": "vm"}},
        "spec": {
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "nfs": {"server": server, "path": path, "readOnly": false},
            "mountOptions": ["nfsvers=4.1"],
            "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "vms", "name": "disk-1"},
            "someFutureField": {"kept": true}
        }
    })
}

fn csi_pv(name: &str, server: &str, share: &str, sub_dir: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "csi": {
                "driver": NFS_CSI_DRIVER,
                "volumeHandle": format!("{server}#{}#{sub_dir}#{name}", share.trim_matches('/')),
                "volumeAttributes": {"server": server, "share": share, "subDir": sub_dir, "csi.storage.k8s.io/pv/name": name}
            }
        }
    })
}

fn run(action: &PvSiteRemap, item: Value) -> Result<Value, ItemError> {
    futures::executor::block_on(action.execute(RestoreInput {
        item,
        item_from_backup: None,
        restore: json!({}),
    }))
    .map(|out| out.item)
}

#[test]
fn applies_to_persistent_volumes_without_namespace_filters() {
    let selector = PvSiteRemapFactory.applies_to();
    assert_eq!(selector.included_resources, vec!["persistentvolumes"]);
    assert!(selector.included_namespaces.is_empty() && selector.excluded_namespaces.is_empty());
}

#[test]
fn in_tree_nfs_is_rewritten_and_annotated() {
    let out = run(
        &action("dr", SITE_MAP),
        in_tree_pv("pv-1", "nfs-a.example.com", "/exports/vms/ns/disk-1"),
    )
    .expect("rewritten");
    assert_eq!(
        out["spec"]["nfs"],
        json!({"server": "10.20.0.5", "path": "/replica/vms/ns/disk-1", "readOnly": false})
    );
    let annotations = &out["metadata"]["annotations"];
    assert_eq!(annotations[ANNOTATION_ORIGINAL_SERVER], "nfs-a.example.com");
    assert_eq!(
        annotations[ANNOTATION_ORIGINAL_PATH],
        "/exports/vms/ns/disk-1"
    );
    assert_eq!(annotations[ANNOTATION_ORIGINAL_SITE], "primary");
    assert_eq!(annotations[ANNOTATION_REMAP_RULE], "vm-disks");
}

#[test]
fn every_other_field_survives() {
    let input = in_tree_pv("pv-1", "nfs-a.example.com", "/exports/vms/disk-1");
    let mut out = run(&action("dr", SITE_MAP), input.clone()).expect("rewritten");
    // Undo exactly the documented changes; what remains must equal the input.
    out["spec"]["nfs"] = input["spec"]["nfs"].clone();
    out["metadata"]
        .as_object_mut()
        .expect("object")
        .remove("annotations");
    assert_eq!(out, input);
}

#[test]
fn csi_volumes_are_rewritten_with_a_consistent_handle() {
    let out = run(
        &action("dr", SITE_MAP),
        csi_pv("pv-2", "nfs-a.example.com", "/scratch", "pvc-2"),
    )
    .expect("rewritten");
    let csi = &out["spec"]["csi"];
    assert_eq!(csi["volumeAttributes"]["server"], "nfs-b.example.com");
    assert_eq!(csi["volumeAttributes"]["share"], "/scratch");
    assert_eq!(csi["volumeAttributes"]["subDir"], "pvc-2");
    assert_eq!(csi["volumeHandle"], "nfs-b.example.com#scratch#pvc-2#pv-2");
    assert_eq!(
        out["metadata"]["annotations"][ANNOTATION_ORIGINAL_HANDLE],
        "nfs-a.example.com#scratch#pvc-2#pv-2"
    );
}

#[test]
fn csi_share_below_an_export_keeps_its_remainder() {
    let out = run(
        &action("dr", SITE_MAP),
        csi_pv("pv-3", "nfs-a.example.com", "/exports/vms/team-a", "pvc-3"),
    )
    .expect("rewritten");
    assert_eq!(
        out["spec"]["csi"]["volumeAttributes"]["share"],
        "/replica/vms/team-a"
    );
    assert_eq!(
        out["spec"]["csi"]["volumeHandle"],
        "10.20.0.5#replica/vms/team-a#pvc-3#pv-3"
    );
}

#[test]
fn volume_handle_formats() {
    assert_eq!(
        rewrite_volume_handle("a#x#s#u#retain", "a", "/x", "b", "/y"),
        "b#y#s#u#retain"
    );
    assert_eq!(
        rewrite_volume_handle("a/x/pvc-1", "a", "/x", "b", "/y/z"),
        "b/y/z/pvc-1"
    );
    assert_eq!(
        rewrite_volume_handle("my-static-handle", "a", "/x", "b", "/y"),
        "my-static-handle"
    );
    // A handle naming another share is not ours to touch.
    assert_eq!(
        rewrite_volume_handle("a#other#s#u", "a", "/x", "b", "/y"),
        "a#other#s#u"
    );
}

#[test]
fn restores_are_idempotent() {
    let action = action("dr", SITE_MAP);
    let once = run(
        &action,
        in_tree_pv("pv-1", "nfs-a.example.com", "/exports/vms/disk"),
    )
    .expect("rewritten");
    let twice = run(&action, once.clone()).expect("unchanged");
    assert_eq!(once, twice);
}

#[test]
fn failback_uses_the_same_site_map() {
    let out = run(
        &action("primary", SITE_MAP),
        in_tree_pv("pv-1", "10.20.0.5", "/replica/vms/disk"),
    )
    .expect("rewritten");
    assert_eq!(out["spec"]["nfs"]["server"], "nfs-a.example.com");
    assert_eq!(out["spec"]["nfs"]["path"], "/exports/vms/disk");
    assert_eq!(
        out["metadata"]["annotations"][ANNOTATION_ORIGINAL_SITE],
        "dr"
    );
}

#[test]
fn non_nfs_volumes_pass_through_untouched() {
    let pv = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "local"}, "spec": {"hostPath": {"path": "/data"}}});
    assert_eq!(
        run(&action("dr", SITE_MAP), pv.clone()).expect("unchanged"),
        pv
    );
    let other_csi = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "rbd"}, "spec": {"csi": {"driver": "rbd.csi.ceph.com", "volumeHandle": "x"}}});
    assert_eq!(
        run(&action("dr", SITE_MAP), other_csi.clone()).expect("unchanged"),
        other_csi
    );
}

#[test]
fn unmapped_fail_names_the_pv_server_path_and_closest_export() {
    let err = run(
        &action("dr", SITE_MAP),
        in_tree_pv("pv-9", "other.example.com", "/exports/vms/x"),
    )
    .expect_err("unmapped");
    let text = err.to_string();
    for expected in [
        "PersistentVolume pv-9",
        "other.example.com:/exports/vms/x",
        "closest export: vm-disks",
        "unmapped: keep",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from {text}");
    }
}

#[test]
fn unmapped_keep_restores_unchanged() {
    let map = format!("{SITE_MAP}unmapped: keep\n");
    let pv = in_tree_pv("pv-9", "other.example.com", "/x");
    assert_eq!(run(&action("dr", &map), pv.clone()).expect("kept"), pv);
}

#[test]
fn bad_items_get_clear_errors() {
    let action = action("dr", SITE_MAP);
    let no_spec =
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-x"}});
    assert!(
        run(&action, no_spec)
            .expect_err("no spec")
            .to_string()
            .contains("PersistentVolume pv-x has no spec")
    );
    let empty_server = in_tree_pv("pv-e", "", "/exports/vms/a");
    let text = run(&action, empty_server)
        .expect_err("empty server")
        .to_string();
    assert!(
        text.contains("pv-e: spec.nfs.server \"\" is empty"),
        "{text}"
    );
    let relative = in_tree_pv("pv-r", "nfs-a.example.com", "exports/vms");
    assert!(
        run(&action, relative)
            .expect_err("relative")
            .to_string()
            .contains("spec.nfs.path \"exports/vms\" is relative")
    );
    let wrong_kind = json!({"kind": "Secret", "metadata": {"name": "s", "namespace": "n"}});
    assert!(
        run(&action, wrong_kind)
            .expect_err("kind")
            .to_string()
            .contains("Secret n/s")
    );
    let csi_no_server = json!({"kind": "PersistentVolume", "metadata": {"name": "c"}, "spec": {"csi": {"driver": NFS_CSI_DRIVER, "volumeHandle": "h"}}});
    assert!(
        run(&action, csi_no_server)
            .expect_err("csi")
            .to_string()
            .contains("spec.csi.volumeAttributes.server")
    );
}

#[test]
fn config_errors_name_the_key_and_the_accepted_values() {
    assert_eq!(
        PvSiteRemap::from_config(None).expect_err("missing"),
        ConfigError::Missing {
            required_keys: "localSite and siteMap"
        }
    );
    let text = PvSiteRemap::from_config(Some(&config("nowhere", SITE_MAP)))
        .expect_err("bad site")
        .to_string();
    assert!(
        text.contains("velero/replicadr-pv-site-remap")
            && text.contains("\"localSite\"")
            && text.contains("\"nowhere\"")
            && text.contains("primary, dr"),
        "{text}"
    );
    let mut no_local = config("dr", SITE_MAP);
    no_local.data.remove(CONFIG_LOCAL_SITE);
    assert!(
        PvSiteRemap::from_config(Some(&no_local))
            .expect_err("no local")
            .to_string()
            .contains("key \"localSite\" is missing")
    );
    let text = PvSiteRemap::from_config(Some(&config("dr", "sites: [primary, dr]\nexports: {")))
        .expect_err("yaml")
        .to_string();
    assert!(
        text.contains("\"siteMap\"") && text.contains("line"),
        "{text}"
    );
}

fn with_policy(local: &str, policy: &str) -> PvSiteRemap {
    let mut config = config(local, SITE_MAP);
    config
        .data
        .insert(CONFIG_RESTORE_RECLAIM_POLICY.to_owned(), policy.to_owned());
    PvSiteRemap::from_config(Some(&config)).expect("valid config")
}

fn retained_at_backup(pv: Value, original: &str) -> Value {
    let mut pv = pv;
    pv["spec"]["persistentVolumeReclaimPolicy"] = json!("Retain");
    pv["metadata"]["annotations"] = json!({ANNOTATION_ORIGINAL_RECLAIM_POLICY: original});
    pv
}

#[test]
fn restored_pvs_keep_retain_by_default() {
    let pv = retained_at_backup(
        in_tree_pv("pv-1", "nfs-a.example.com", "/exports/vms/disk"),
        "Delete",
    );
    for action in [action("dr", SITE_MAP), with_policy("dr", "retain")] {
        let out = run(&action, pv.clone()).expect("rewritten");
        assert_eq!(out["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(
            out["metadata"]["annotations"][ANNOTATION_ORIGINAL_RECLAIM_POLICY], "Delete",
            "the record stays for the operator"
        );
    }
}

#[test]
fn original_policy_is_put_back_when_asked() {
    let action = with_policy("dr", "Original");
    let pv = retained_at_backup(
        in_tree_pv("pv-1", "nfs-a.example.com", "/exports/vms/disk"),
        "Delete",
    );
    let out = run(&action, pv).expect("rewritten");
    assert_eq!(out["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(out["spec"]["nfs"]["server"], "10.20.0.5");
    let annotations = &out["metadata"]["annotations"];
    assert!(
        annotations
            .get(ANNOTATION_ORIGINAL_RECLAIM_POLICY)
            .is_none()
    );
    assert_eq!(annotations[ANNOTATION_REMAP_RULE], "vm-disks");

    // Without a record (or with a nonsense one) the backed-up policy stays.
    let plain = in_tree_pv("pv-2", "10.20.0.5", "/replica/vms/disk");
    assert_eq!(run(&action, plain.clone()).expect("local"), plain);
    let mut odd = retained_at_backup(plain, "Sometimes");
    assert_eq!(
        action.apply_reclaim_policy(&mut odd),
        ReclaimPolicyOutcome::Unknown("Sometimes".into())
    );
    assert_eq!(odd["spec"]["persistentVolumeReclaimPolicy"], "Retain");
}

#[test]
fn original_policy_drops_an_emptied_annotation_map() {
    let action = with_policy("dr", "original");
    let pv = json!({"kind": "PersistentVolume", "metadata": {"name": "h", "annotations": {ANNOTATION_ORIGINAL_RECLAIM_POLICY: "Recycle"}}, "spec": {"persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": "/x"}}});
    let out = run(&action, pv).expect("not nfs");
    assert_eq!(
        out,
        json!({"kind": "PersistentVolume", "metadata": {"name": "h"}, "spec": {"persistentVolumeReclaimPolicy": "Recycle", "hostPath": {"path": "/x"}}})
    );
}

#[test]
fn restore_reclaim_policy_errors_name_the_key_value_and_choices() {
    let mut bad = config("dr", SITE_MAP);
    bad.data.insert(
        CONFIG_RESTORE_RECLAIM_POLICY.to_owned(),
        "delete".to_owned(),
    );
    let text = PvSiteRemap::from_config(Some(&bad))
        .expect_err("bad policy")
        .to_string();
    for expected in [
        "velero/replicadr-pv-site-remap",
        "\"restoreReclaimPolicy\"",
        "\"delete\"",
        "\"retain\"",
        "\"original\"",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from {text}");
    }
}
