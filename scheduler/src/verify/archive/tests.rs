use std::io::Cursor;

use serde_json::json;

use replicadr_core::invariants::Reason as Invariant;

use super::*;
use crate::verify::report::Report;
use replicadr_lab::fixture::{self, ArchiveWriter, objects};

fn checks() -> PvChecks {
    PvChecks::for_every_site(&SiteMap::from_yaml(fixture::SITE_MAP).expect("site map"))
}

fn build(objects: &[(&str, Value)]) -> (Vec<u8>, Vec<u8>) {
    let mut writer = ArchiveWriter::new(Vec::new()).expect("writer");
    for (group_resource, object) in objects {
        writer.add(group_resource, object).expect("add");
    }
    writer.finish().expect("finish")
}

/// Runs the pass and the cross checks; returns the reasons found, sorted.
fn verify(tarball: &[u8], list: &[u8]) -> (Inventory, Vec<Reason>) {
    let mut inventory = inspect(Cursor::new(tarball), &checks()).expect("readable");
    let list = ResourceList::parse(list.to_vec()).expect("list");
    cross_check(&mut inventory, Some(&list), &[], || {
        Ok(Cursor::new(tarball))
    });
    let mut reasons: Vec<Reason> = inventory.findings.counts().keys().copied().collect();
    reasons.sort();
    (inventory, reasons)
}

fn without(name: &str) -> Vec<(&'static str, Value)> {
    fixture::healthy_vm_objects()
        .into_iter()
        .filter(|(_, o)| o["metadata"]["name"] != name)
        .collect()
}

#[test]
fn a_healthy_backup_passes_and_counts_each_item_once() {
    let (tarball, list) = fixture::healthy_vm_backup().expect("fixture");
    let (inventory, reasons) = verify(&tarball, &list);
    assert_eq!(reasons, [], "{:?}", inventory.findings.kept());
    assert_eq!(inventory.stats.items, 9);
    assert_eq!(inventory.stats.persistent_volume_claims, 3);
    assert_eq!(inventory.stats.nfs_persistent_volumes, 3);
    assert_eq!(inventory.stats.virtual_machines, 1);
    assert_eq!(inventory.stats.volume_snapshots, 1);
    assert_eq!(inventory.format_version.as_deref(), Some("1.1.0"));
    assert_eq!(inventory.stats.compressed_bytes, tarball.len() as u64);
    assert!(inventory.stats.uncompressed_bytes > inventory.stats.compressed_bytes);
}

#[test]
fn a_pv_missing_from_the_backup_is_named() {
    let (tarball, list) = build(&without("pv-data"));
    let (inventory, reasons) = verify(&tarball, &list);
    assert_eq!(reasons, [Reason::Backup(Invariant::PvMissing)]);
    let message = &inventory.findings.kept()[0].message;
    assert!(
        message.contains("vms/db-data") && message.contains("pv-data"),
        "{message}"
    );
}

#[test]
fn a_vm_disk_missing_from_the_backup_is_named() {
    let (tarball, list) = build(&without("db-root"));
    let (inventory, reasons) = verify(&tarball, &list);
    assert_eq!(reasons, [Reason::Backup(Invariant::VmVolumeMissing)]);
    assert!(
        inventory.findings.kept()[0]
            .message
            .contains("VirtualMachine vms/db: its disk claim db-root is not in the backup")
    );
}

#[test]
fn a_snapshot_without_its_replica_pvc_is_named() {
    let (tarball, list) = build(&without("db-data-snap-replica"));
    let (inventory, reasons) = verify(&tarball, &list);
    assert_eq!(reasons, [Reason::Backup(Invariant::ReplicaPvcMissing)]);
    assert!(inventory.findings.kept()[0].message.contains("snap-uid-1"));
}

#[test]
fn an_nfs_pv_outside_the_site_map_is_unmappable() {
    let mut objects = fixture::healthy_vm_objects();
    objects.push((
        "persistentvolumes",
        objects::nfs_pv("pv-stray", "nfs-z.example.com", "/elsewhere/x", "Retain"),
    ));
    let (tarball, list) = build(&objects);
    let (inventory, reasons) = verify(&tarball, &list);
    assert_eq!(reasons, [Reason::Backup(Invariant::PvUnmappable)]);
    let messages: Vec<_> = inventory
        .findings
        .kept()
        .iter()
        .map(|f| &f.message)
        .collect();
    // One finding per site it cannot fail over to.
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[0].contains("pv-stray") && messages[0].contains("nfs-z.example.com"),
        "{messages:?}"
    );
}

#[test]
fn an_nfs_pv_backed_up_with_delete_is_flagged() {
    let mut objects = without("pv-root");
    objects.push((
        "persistentvolumes",
        objects::nfs_pv(
            "pv-root",
            "nfs-a.example.com",
            "/exports/vms/root",
            "Delete",
        ),
    ));
    let (tarball, list) = build(&objects);
    let (_, reasons) = verify(&tarball, &list);
    assert_eq!(reasons, [Reason::Backup(Invariant::PvNotRetain)]);
}

#[test]
fn a_truncated_tarball_is_reported_as_truncated() {
    let (tarball, _) = fixture::healthy_vm_backup().expect("fixture");
    for cut in [tarball.len() / 3, tarball.len() / 2, tarball.len() - 4] {
        let error = inspect(Cursor::new(&tarball[..cut]), &checks()).expect_err("truncated");
        assert_eq!(
            Reason::from(&error),
            Reason::TarballTruncated,
            "cut at {cut}: {error}"
        );
        assert!(error.to_string().contains("truncated"), "{error}");
    }
}

#[test]
fn flipped_bytes_are_reported_as_corrupt() {
    let (tarball, _) = fixture::healthy_vm_backup().expect("fixture");
    // Every 37th byte from the gzip header to the trailer: each flip must be caught by gzip's
    // CRC, deflate's own structure, or tar's header checksum.
    for position in (10..tarball.len()).step_by(37) {
        let mut tampered = tarball.clone();
        tampered[position] ^= 0x55;
        let error = inspect(Cursor::new(&tampered), &checks())
            .expect_err(&format!("flip at {position} goes unnoticed"));
        assert!(
            matches!(
                Reason::from(&error),
                Reason::TarballCorrupt | Reason::TarballTruncated
            ),
            "flip at {position}: {error}"
        );
    }
    let mut trailer = tarball.clone();
    let crc = trailer.len() - 8;
    trailer[crc] ^= 1;
    let error = inspect(Cursor::new(&trailer), &checks()).expect_err("crc");
    assert_eq!(Reason::from(&error), Reason::TarballCorrupt, "{error}");
}

#[test]
fn a_failing_source_is_not_blamed_on_the_tarball() {
    struct Broken(usize);
    impl Read for Broken {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
            }
            self.0 -= 1;
            buf[0] = 0x1f;
            Ok(1)
        }
    }
    let error = inspect(Broken(1), &checks()).expect_err("source fails");
    assert_eq!(
        Reason::from(&error),
        Reason::ObjectStoreUnreachable,
        "{error}"
    );
}

#[test]
fn tampered_items_are_found() {
    let (tarball, list) = {
        let mut writer = ArchiveWriter::new(Vec::new()).expect("writer");
        for (group_resource, object) in fixture::healthy_vm_objects() {
            writer.add(group_resource, &object).expect("add");
        }
        writer
            .add_raw(
                "resources/configmaps/namespaces/vms/evil.json",
                b"{not json",
            )
            .expect("raw");
        writer
            .add_raw(
                "resources/secrets/namespaces/vms/renamed.json",
                br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"other","namespace":"vms"}}"#,
            )
            .expect("raw");
        writer.finish().expect("finish")
    };
    let (inventory, reasons) = verify(&tarball, &list);
    assert_eq!(reasons, [Reason::ItemInvalid, Reason::ResourceListMismatch]);
    let text = format!("{:?}", inventory.findings.kept());
    assert!(
        text.contains("evil.json is not a valid Kubernetes object"),
        "{text}"
    );
    assert!(text.contains("renamed.json holds vms/other"), "{text}");
}

#[test]
fn an_item_removed_from_the_tarball_but_listed_is_found() {
    let (_, full_list) = fixture::healthy_vm_backup().expect("fixture");
    let objects: Vec<_> = fixture::healthy_vm_objects()
        .into_iter()
        .filter(|(r, _)| *r != "namespaces")
        .collect();
    let (tarball, _) = build(&objects);
    let (inventory, reasons) = verify(&tarball, &full_list);
    assert_eq!(reasons, [Reason::ResourceListMismatch]);
    assert!(
        inventory.findings.kept()[0]
            .message
            .contains("v1/Namespace vms")
    );
}

#[test]
fn a_tarball_without_metadata_version_was_not_written_by_velero() {
    let mut raw = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let bytes = serde_json::to_vec(
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}),
    )
    .expect("json");
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    raw.append_data(
        &mut header,
        "resources/namespaces/cluster/x.json",
        bytes.as_slice(),
    )
    .expect("append");
    let tarball = raw.into_inner().expect("tar").finish().expect("gz");
    let mut inventory = inspect(Cursor::new(&tarball), &checks()).expect("readable");
    cross_check(&mut inventory, None, &[], || Ok(Cursor::new(&tarball)));
    assert_eq!(
        inventory
            .findings
            .counts()
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [Reason::ItemInvalid]
    );
}

#[test]
fn findings_are_capped_per_reason_but_counted() {
    let mut objects = Vec::new();
    for i in 0..100 {
        objects.push((
            "persistentvolumes",
            objects::nfs_pv(
                &format!("pv-{i}"),
                "nfs-a.example.com",
                &format!("/exports/vms/{i}"),
                "Delete",
            ),
        ));
    }
    let (tarball, list) = build(&objects);
    let (inventory, _) = verify(&tarball, &list);
    assert_eq!(
        inventory.findings.counts()[&Reason::Backup(Invariant::PvNotRetain)],
        100
    );
    assert_eq!(inventory.findings.kept().len(), 20);
}

#[test]
fn failures_found_on_hashes_are_named_from_a_second_pass() {
    let mut objects = without("pv-data");
    // A replica PVC left unbound, and a VM disk whose PVC is not in the backup.
    objects.retain(|(_, o)| o["metadata"]["name"] != "db-data-snap-replica");
    let mut unbound = objects::replica_pvc("vms", "db-data-snap-replica", "", "snap-uid-1");
    unbound["spec"]["volumeName"] = Value::String(String::new());
    // Its PV goes with it: Velero takes a claim's PV only when the claim is bound.
    objects.retain(|(_, o)| o["metadata"]["name"] != "pv-replica");
    objects.push(("persistentvolumeclaims", unbound));
    objects.push((
        "virtualmachines.kubevirt.io",
        objects::vm("vms", "web", &["web-root"]),
    ));
    let (tarball, list) = build(&objects);
    let mut inventory = inspect(Cursor::new(&tarball), &checks()).expect("readable");
    // The first pass keeps no names, only hashes.
    assert!(!inventory.has_pvc("vms", "web-root"));
    let list = ResourceList::parse(list).expect("list");
    let mut reopened = 0;
    cross_check(&mut inventory, Some(&list), &[], || {
        reopened += 1;
        Ok(Cursor::new(&tarball))
    });
    assert_eq!(reopened, 1, "one second pass for all the failures");
    let messages: Vec<_> = inventory
        .findings
        .kept()
        .iter()
        .map(|f| (f.reason, f.message.as_str()))
        .collect();
    assert_eq!(
        messages,
        [
            (
                Reason::Backup(Invariant::PvcNotBound),
                "PersistentVolumeClaim vms/db-data-snap-replica: the claim has no spec.volumeName in the backup, so the restore would provision it new and empty instead of binding it to its data; it is the replica PVC of VolumeSnapshot uid snap-uid-1, and replicadr.io/snapshot-to-pvc did not see it bound before the backup ended, so the snapshot's data is not in this backup"
            ),
            (
                Reason::Backup(Invariant::PvMissing),
                "PersistentVolumeClaim vms/db-data: it is bound to PersistentVolume pv-data, which is not in the backup: include cluster-scoped resources (the scheduler's backups do) and back up again"
            ),
            (
                Reason::Backup(Invariant::VmVolumeMissing),
                "VirtualMachine vms/web: its disk claim web-root is not in the backup"
            ),
        ]
    );
}

#[test]
fn a_healthy_backup_is_read_once() {
    let (tarball, list) = fixture::healthy_vm_backup().expect("fixture");
    let mut inventory = inspect(Cursor::new(&tarball), &checks()).expect("readable");
    let list = ResourceList::parse(list).expect("list");
    cross_check(
        &mut inventory,
        Some(&list),
        &[],
        || -> io::Result<Cursor<Vec<u8>>> {
            panic!("a backup that passes is not read a second time")
        },
    );
    assert!(
        inventory.findings.is_empty(),
        "{:?}",
        inventory.findings.kept()
    );
}

#[test]
fn many_failures_keep_the_first_in_name_order_and_count_all() {
    let mut objects = Vec::new();
    for i in (0..50).rev() {
        objects.push((
            "persistentvolumeclaims",
            objects::pvc("vms", &format!("claim-{i:02}"), &format!("pv-{i:02}")),
        ));
    }
    let (tarball, list) = build(&objects);
    let (inventory, reasons) = verify(&tarball, &list);
    assert_eq!(reasons, [Reason::Backup(Invariant::PvMissing)]);
    assert_eq!(
        inventory.findings.counts()[&Reason::Backup(Invariant::PvMissing)],
        50
    );
    let named: Vec<_> = inventory
        .findings
        .kept()
        .iter()
        .filter(|f| f.reason == Reason::Backup(Invariant::PvMissing))
        .map(|f| f.message.as_str())
        .collect();
    assert_eq!(named.len(), 20);
    for (i, message) in named.iter().enumerate() {
        assert!(
            message.starts_with(&format!(
                "PersistentVolumeClaim vms/claim-{i:02}: it is bound to PersistentVolume pv-{i:02},"
            )),
            "{message}"
        );
    }
}

#[test]
fn failures_keep_their_reason_when_the_second_pass_cannot_read() {
    let (tarball, list) = build(&without("pv-data"));
    let mut inventory = inspect(Cursor::new(&tarball), &checks()).expect("readable");
    let list = ResourceList::parse(list).expect("list");
    cross_check(
        &mut inventory,
        Some(&list),
        &[],
        || -> io::Result<Cursor<Vec<u8>>> {
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"))
        },
    );
    let kept = inventory.findings.kept();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].reason, Reason::Backup(Invariant::PvMissing));
    assert!(
        kept[0].message.contains("could not be read") && kept[0].message.contains("reset"),
        "{}",
        kept[0].message
    );
}

#[test]
fn an_unbound_claim_fails_verification_as_it_blocks_the_plan() {
    let mut objects = fixture::healthy_vm_objects();
    let mut pending = objects::pvc("vms", "pending", "");
    pending["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("volumeName");
    objects.push(("persistentvolumeclaims", pending));
    let (tarball, list) = build(&objects);
    let (inventory, reasons) = verify(&tarball, &list);
    assert_eq!(reasons, [Reason::Backup(Invariant::PvcNotBound)]);
    assert!(
        inventory.findings.kept()[0]
            .message
            .starts_with("PersistentVolumeClaim vms/pending: the claim has no spec.volumeName"),
        "{:?}",
        inventory.findings.kept()
    );
    let report = Report::new("b", &inventory.findings, Stats::default(), 0.0);
    assert!(!report.verified);
    assert_eq!(report.reason, "PvcNotBound");
}

/// The backup as Velero 1.17 and later write it: no VolumeSnapshot in the tarball.
fn without_snapshots() -> Vec<(&'static str, Value)> {
    fixture::healthy_vm_objects()
        .into_iter()
        .filter(|(r, _)| *r != "volumesnapshots.snapshot.storage.k8s.io")
        .collect()
}

fn live_snapshot(uid: &str, source_claim_uid: &str) -> LiveVolumeSnapshot {
    LiveVolumeSnapshot {
        namespace: "vms".into(),
        name: "db-data-daily".into(),
        uid: uid.into(),
        source_claim: "db-data".into(),
        source_claim_uid: source_claim_uid.into(),
    }
}

fn verify_with_live(tarball: &[u8], list: &[u8], live: &[LiveVolumeSnapshot]) -> Inventory {
    let mut inventory = inspect(Cursor::new(tarball), &checks()).expect("readable");
    let list = ResourceList::parse(list.to_vec()).expect("list");
    cross_check(&mut inventory, Some(&list), live, || {
        Ok(Cursor::new(tarball))
    });
    inventory
}

#[test]
fn a_live_snapshot_at_the_source_without_its_replica_fails_verification() {
    let (tarball, list) = build(&without_snapshots());
    // The backed-up claim's UID, as the fixture writes it: this is the site it was taken at.
    let inventory = verify_with_live(
        &tarball,
        &list,
        &[live_snapshot("snap-uid-9", "uid-db-data")],
    );
    let kept = inventory.findings.kept();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].reason, Reason::Backup(Invariant::ReplicaPvcMissing));
    assert!(
        kept[0].message.starts_with(
            "VolumeSnapshot vms/db-data-daily: no replica PVC of this snapshot (uid snap-uid-9) is in the backup (the snapshot exists at the source site"
        ),
        "{}",
        kept[0].message
    );
}

#[test]
fn live_snapshots_with_their_replica_or_of_another_claim_pass() {
    let (tarball, list) = build(&without_snapshots());
    // Replicated: the backup holds the replica of snap-uid-1.
    let replicated = verify_with_live(
        &tarball,
        &list,
        &[live_snapshot("snap-uid-1", "uid-db-data")],
    );
    assert!(
        replicated.findings.is_empty(),
        "{:?}",
        replicated.findings.kept()
    );
    // Same claim name, another UID: not the site the backup was taken at (a restored copy).
    let elsewhere = verify_with_live(
        &tarball,
        &list,
        &[live_snapshot("snap-uid-9", "restored-uid")],
    );
    assert!(
        elsewhere.findings.is_empty(),
        "{:?}",
        elsewhere.findings.kept()
    );
}

#[test]
fn a_delete_pv_outside_nfs_is_a_warning_and_the_backup_verifies() {
    let mut objects = fixture::healthy_vm_objects();
    objects.push((
        "persistentvolumes",
        json!({
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-scratch"},
            "spec": {"persistentVolumeReclaimPolicy": "Delete",
                     "csi": {"driver": "rbd.csi.ceph.com", "volumeHandle": "0001-abc"}},
        }),
    ));
    objects.push((
        "persistentvolumeclaims",
        objects::pvc("vms", "scratch", "pv-scratch"),
    ));
    let (tarball, list) = build(&objects);
    let (inventory, reasons) = verify(&tarball, &list);
    assert_eq!(reasons, [Reason::Backup(Invariant::PvReprovisioned)]);
    let report = Report::new("b", &inventory.findings, Stats::default(), 0.0);
    assert!(report.verified, "{report:#?}");
    assert_eq!(report.reason, "Verified");
    assert_eq!(report.first_reason(), None);
    assert_eq!(report.warnings().count(), 1);
    assert!(
        report.summary().ends_with(", 1 warning(s)"),
        "{}",
        report.summary()
    );
}

#[test]
fn data_volumes_cdi_would_import_are_named_after_the_hashed_pass() {
    let (tarball, list) = build(&fixture::data_volume_objects());
    let (inventory, reasons) = verify(&tarball, &list);
    assert_eq!(reasons, [Reason::Backup(Invariant::DataVolumeWouldImport)]);
    let messages: Vec<&str> = inventory
        .findings
        .kept()
        .iter()
        .map(|f| f.message.as_str())
        .collect();
    assert_eq!(messages.len(), 2, "{messages:#?}");
    assert!(
        messages[0].starts_with("PersistentVolumeClaim vms/scratch: its CDI import had not completed when it was backed up (cdi.kubevirt.io/storage.pod.phase is \"Running\")"),
        "{}",
        messages[0]
    );
    assert!(
        messages[1].starts_with(
            "DataVolume vms/scratch: it was ImportInProgress when backed up, not Succeeded"
        ),
        "{}",
        messages[1]
    );
    // db-root, Succeeded with its claim, is adopted: not named.
    assert!(
        !messages.iter().any(|m| m.contains("db-root")),
        "{messages:#?}"
    );
}

#[test]
fn an_object_a_vm_needs_is_named_when_the_backup_lacks_it() {
    let mut objects = fixture::healthy_vm_objects();
    let (_, vm) = objects
        .iter_mut()
        .find(|(resource, _)| *resource == RESOURCE_VIRTUAL_MACHINES)
        .expect("the fixture has a VM");
    vm["spec"]["instancetype"] = json!({"name": "db-large", "revisionName": "db-large-v1"});
    // Cluster-wide: a namespace backup never holds it, so only the plan checks it, at the site.
    vm["spec"]["preference"] = json!({"name": "rhel.9"});
    vm["spec"]["template"]["spec"]["volumes"]
        .as_array_mut()
        .expect("volumes")
        .push(json!({"name": "cloudinit", "cloudInitNoCloud": {"secretRef": {"name": "db-init"}}}));
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"namespace": "vms", "name": "db-init"}});
    objects.push(("secrets", secret));
    let (tarball, list) = build(&objects);
    let (inventory, reasons) = verify(&tarball, &list);
    assert_eq!(reasons, [Reason::Backup(Invariant::ReferenceMissing)]);
    let kept = inventory.findings.kept();
    assert_eq!(kept.len(), 1, "the Secret is in the backup: {kept:#?}");
    assert!(
        kept[0].message.starts_with(
            "VirtualMachine vms/db: it needs ControllerRevision vms/db-large-v1 (spec.instancetype.revisionName), which is not in the backup"
        ),
        "{}",
        kept[0].message
    );

    let revision = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"namespace": "vms", "name": "db-large-v1"}, "revision": 1});
    objects.push(("controllerrevisions.apps", revision));
    let (tarball, list) = build(&objects);
    let (inventory, reasons) = verify(&tarball, &list);
    assert_eq!(reasons, [], "{:?}", inventory.findings.kept());
}
