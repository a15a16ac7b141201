use std::collections::BTreeSet;
use std::io::Cursor;

use super::*;
use crate::verify::archive::{self, PvChecks};
use crate::verify::{Report, Stats};
use replicadr_lab::fixture::{self, ArchiveWriter, objects};
use serde_json::json;

fn tarball_of(objects: Vec<(&'static str, Value)>) -> (Vec<u8>, Vec<u8>) {
    let mut writer = ArchiveWriter::new(Vec::new()).expect("writer");
    for (group_resource, object) in objects {
        writer.add(group_resource, &object).expect("add");
    }
    writer.finish().expect("finish")
}

fn contents_of(objects: Vec<(&'static str, Value)>) -> BackupContents {
    let (tarball, _) = tarball_of(objects);
    BackupContents::read(tarball.as_slice()).expect("read")
}

fn now() -> Timestamp {
    "2026-11-22T12:00:00Z".parse().expect("timestamp")
}

fn plan_at(site: &str, contents: &BackupContents, map: &str) -> Plan {
    plan_with(site, contents, map, None, None)
}

fn plan_with(
    site: &str,
    contents: &BackupContents,
    map: &str,
    rpo: Option<Duration>,
    existing: Option<&BTreeMap<String, Value>>,
) -> Plan {
    let map = SiteMap::from_yaml(map).expect("site map");
    let site = map.site(site).expect("site").clone();
    build(&PlanInput {
        backup: BackupFacts {
            name: "vms-1".into(),
            policy: Some("vms".into()),
            recovery_point: Some("2026-11-22T10:00:00Z".parse().expect("timestamp")),
            verification: Verification::Passed,
        },
        contents,
        site_map: &map,
        site,
        now: now(),
        rpo,
        existing_pvs: existing,
    })
}

#[test]
fn a_healthy_backup_plans_every_pv_onto_the_dr_exports() {
    let contents = contents_of(fixture::healthy_vm_objects());
    let plan = plan_at("dr", &contents, fixture::SITE_MAP);
    assert!(plan.complete, "{plan:#?}");
    assert!(plan.problems.is_empty(), "{:#?}", plan.problems);
    assert_eq!(plan.age_seconds, Some(7200));
    let root = plan.volume("pv-root").expect("pv-root");
    assert_eq!(root.action, VolumeAction::Rewrite);
    assert_eq!(
        root.before.as_deref(),
        Some("nfs-a.example.com:/exports/vms/root")
    );
    assert_eq!(
        root.after.as_deref(),
        Some("nfs-b.example.com:/replica/vms/root")
    );
    assert_eq!(root.claim.as_deref(), Some("vms/db-root"));
    assert_eq!(plan.virtual_machines().count(), 1);
    assert_eq!(plan.claims().count(), 3);
}

#[test]
fn the_same_map_plans_the_failback_onto_the_primary_exports() {
    let mut objects = fixture::healthy_vm_objects();
    for (group_resource, object) in &mut objects {
        if *group_resource == "persistentvolumes" {
            let path = object["spec"]["nfs"]["path"]
                .as_str()
                .expect("path")
                .replace("/exports/vms", "/replica/vms");
            object["spec"]["nfs"] = json!({"server": "nfs-b.example.com", "path": path});
        }
    }
    let plan = plan_at("primary", &contents_of(objects), fixture::SITE_MAP);
    assert!(plan.complete, "{:#?}", plan.problems);
    assert_eq!(
        plan.volume("pv-data").and_then(|v| v.after.as_deref()),
        Some("nfs-a.example.com:/exports/vms/data")
    );
}

#[test]
fn every_kind_of_gap_is_a_blocking_problem_naming_the_object() {
    let mut objects = fixture::healthy_vm_objects();
    // A Delete-policy PV, an unmapped export, a claim whose PV is gone, a snapshot without replica,
    // a VM disk that was not backed up.
    objects.push((
        "persistentvolumes",
        objects::nfs_pv("pv-del", "nfs-a.example.com", "/exports/vms/del", "Delete"),
    ));
    objects.push((
        "persistentvolumes",
        objects::nfs_pv("pv-odd", "nfs-z.example.com", "/elsewhere/x", "Retain"),
    ));
    objects.push((
        "persistentvolumeclaims",
        objects::pvc("vms", "odd", "pv-odd"),
    ));
    objects.push((
        "persistentvolumeclaims",
        objects::pvc("vms", "lost", "pv-lost"),
    ));
    objects.push((
        "volumesnapshots.snapshot.storage.k8s.io",
        objects::volume_snapshot("vms", "orphan-snap", "snap-uid-2", "db-root"),
    ));
    objects.push((
        "virtualmachines.kubevirt.io",
        objects::vm("vms", "web", &["web-root"]),
    ));
    let plan = plan_at("dr", &contents_of(objects), fixture::SITE_MAP);
    assert!(!plan.complete);
    let reasons: Vec<(&str, &str)> = plan
        .blocking()
        .map(|p| (p.reason, p.object.as_str()))
        .collect();
    for expected in [
        ("PvNotRetain", "PersistentVolume pv-del"),
        ("PvUnmappable", "PersistentVolume pv-odd"),
        ("PvMissing", "PersistentVolumeClaim vms/lost"),
        ("ReplicaPvcMissing", "VolumeSnapshot vms/orphan-snap"),
        ("VmVolumeMissing", "VirtualMachine vms/web"),
    ] {
        assert!(
            reasons.contains(&expected),
            "{expected:?} not in {reasons:?}"
        );
    }
    let unmapped = plan
        .problems
        .iter()
        .find(|p| p.object == "PersistentVolume pv-odd")
        .expect("problem");
    assert!(
        unmapped.message.contains("nfs-z.example.com"),
        "{}",
        unmapped.message
    );
    assert_eq!(
        plan.volume("pv-del").map(|v| v.action),
        Some(VolumeAction::Reprovisioned)
    );
    assert_eq!(plan.blocking().count(), 5);
}

#[test]
fn keep_unmapped_and_an_old_backup_are_warnings_only() {
    let mut objects = fixture::healthy_vm_objects();
    objects.push((
        "persistentvolumes",
        objects::nfs_pv("pv-odd", "nfs-z.example.com", "/elsewhere/x", "Retain"),
    ));
    let map = format!("{}unmapped: keep\n", fixture::SITE_MAP);
    let plan = plan_with(
        "dr",
        &contents_of(objects),
        &map,
        Some(Duration::from_hours(1)),
        None,
    );
    assert!(plan.complete, "{:#?}", plan.problems);
    let reasons: Vec<&str> = plan.problems.iter().map(|p| p.reason).collect();
    assert_eq!(reasons, ["RpoExceeded", "PvKeptUnmapped"], "{plan:#?}");
    assert!(
        plan.problems[0].message.contains("2h"),
        "{:?}",
        plan.problems
    );
}

#[test]
fn a_stale_pv_at_the_site_pointing_elsewhere_blocks_and_a_restored_one_does_not() {
    let contents = contents_of(fixture::healthy_vm_objects());
    let stale = BTreeMap::from([(
        "pv-root".to_owned(),
        objects::nfs_pv(
            "pv-root",
            "nfs-a.example.com",
            "/exports/vms/root",
            "Retain",
        ),
    )]);
    let plan = plan_with("dr", &contents, fixture::SITE_MAP, None, Some(&stale));
    assert_eq!(
        plan.blocking().map(|p| p.reason).collect::<Vec<_>>(),
        ["PersistentVolumeExists"]
    );
    let restored = BTreeMap::from([(
        "pv-root".to_owned(),
        objects::nfs_pv(
            "pv-root",
            "nfs-b.example.com",
            "/replica/vms/root",
            "Retain",
        ),
    )]);
    let plan = plan_with("dr", &contents, fixture::SITE_MAP, None, Some(&restored));
    assert!(plan.complete, "{:#?}", plan.problems);
}

#[test]
fn json_output_names_every_field_for_scripts() {
    let contents = contents_of(fixture::healthy_vm_objects());
    let plan = plan_at("dr", &contents, fixture::SITE_MAP);
    let value = serde_json::to_value(&plan).expect("json");
    assert_eq!(value["complete"], true);
    assert_eq!(value["verification"]["result"], "Passed");
    assert_eq!(value["volumes"][0]["action"], "Rewrite");
    assert_eq!(value["namespaces"][0]["virtualMachines"][0]["name"], "db");
}

#[test]
fn an_unbound_claim_blocks_the_plan() {
    let mut objects = fixture::healthy_vm_objects();
    let mut pending = objects::pvc("vms", "pending", "");
    pending["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("volumeName");
    objects.push(("persistentvolumeclaims", pending));
    let plan = plan_at("dr", &contents_of(objects), fixture::SITE_MAP);
    assert!(!plan.complete);
    assert_eq!(
        plan.blocking()
            .map(|p| (p.reason, p.object.as_str()))
            .collect::<Vec<_>>(),
        [("PvcNotBound", "PersistentVolumeClaim vms/pending")]
    );
}

/// A PV of a driver the site map cannot cover, bound to a claim.
fn ceph_pv(name: &str, reclaim: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {"persistentVolumeReclaimPolicy": reclaim,
                 "csi": {"driver": "rbd.csi.ceph.com", "volumeHandle": "0001-abc"}},
    })
}

#[test]
fn a_delete_pv_outside_nfs_is_reprovisioned_with_a_warning() {
    let mut objects = fixture::healthy_vm_objects();
    objects.push(("persistentvolumes", ceph_pv("pv-scratch", "Delete")));
    objects.push((
        "persistentvolumeclaims",
        objects::pvc("vms", "scratch", "pv-scratch"),
    ));
    let plan = plan_at("dr", &contents_of(objects), fixture::SITE_MAP);
    assert!(plan.complete, "{:#?}", plan.problems);
    let volume = plan.volume("pv-scratch").expect("planned");
    assert_eq!(volume.action, VolumeAction::Reprovisioned);
    assert_eq!(volume.problems, [invariants::Reason::PvReprovisioned]);
    assert_eq!(
        plan.problems
            .iter()
            .map(|p| (p.severity, p.reason))
            .collect::<Vec<_>>(),
        [(Severity::Warning, "PvReprovisioned")]
    );
}

/// Verification of a tarball as the scheduler runs it, at every site of the map.
fn verification_of(tarball: &[u8], list: &[u8]) -> Report {
    let checks = PvChecks::for_every_site(&SiteMap::from_yaml(fixture::SITE_MAP).expect("map"));
    let mut inventory = archive::inspect(Cursor::new(tarball), &checks).expect("readable");
    let list = archive::ResourceList::parse(list.to_vec()).expect("list");
    archive::cross_check(&mut inventory, Some(&list), &[], || {
        Ok(Cursor::new(tarball))
    });
    Report::new("vms-1", &inventory.findings, Stats::default(), 0.0)
}

#[test]
fn verification_and_the_plan_give_every_backup_the_same_verdict_and_reasons() {
    let with = |extra: Vec<(&'static str, Value)>| {
        let mut objects = fixture::healthy_vm_objects();
        objects.extend(extra);
        objects
    };
    let without = |name: &str| {
        fixture::healthy_vm_objects()
            .into_iter()
            .filter(|(_, o)| o["metadata"]["name"] != name)
            .collect::<Vec<_>>()
    };
    let mut unbound = objects::pvc("vms", "pending", "");
    unbound["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("volumeName");
    let cases: Vec<(&str, Vec<(&'static str, Value)>)> = vec![
        ("healthy", fixture::healthy_vm_objects()),
        (
            "unbound claim",
            with(vec![("persistentvolumeclaims", unbound)]),
        ),
        (
            "Delete PV outside NFS",
            with(vec![
                ("persistentvolumes", ceph_pv("pv-scratch", "Delete")),
                (
                    "persistentvolumeclaims",
                    objects::pvc("vms", "scratch", "pv-scratch"),
                ),
            ]),
        ),
        (
            "Delete NFS PV",
            with(vec![(
                "persistentvolumes",
                objects::nfs_pv("pv-del", "nfs-a.example.com", "/exports/vms/del", "Delete"),
            )]),
        ),
        (
            "unmapped export",
            with(vec![(
                "persistentvolumes",
                objects::nfs_pv("pv-odd", "nfs-z.example.com", "/elsewhere/x", "Retain"),
            )]),
        ),
        ("PV missing", without("pv-data")),
        ("replica missing", without("db-data-snap-replica")),
        ("VM disk missing", without("db-root")),
    ];
    for (case, objects) in cases {
        let (tarball, list) = tarball_of(objects);
        let report = verification_of(&tarball, &list);
        let plan = plan_at(
            "dr",
            &BackupContents::read(tarball.as_slice()).expect("read"),
            fixture::SITE_MAP,
        );
        assert_eq!(
            report.verified, plan.complete,
            "{case}: verification {:#?}\nplan {:#?}",
            report.findings, plan.problems
        );
        let verified: BTreeSet<(String, Severity)> = report
            .findings
            .iter()
            .map(|f| (f.reason.as_str().to_owned(), f.reason.severity()))
            .collect();
        let planned: BTreeSet<(String, Severity)> = plan
            .problems
            .iter()
            .map(|p| (p.reason.to_owned(), p.severity))
            .collect();
        assert_eq!(verified, planned, "{case}");
    }
}
