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
    existing: Option<&Existing>,
) -> Plan {
    let map = SiteMap::from_yaml(map).expect("site map");
    let site = map.site(site).expect("site").clone();
    build(&PlanInput {
        backup: BackupFacts {
            name: "vms-1".into(),
            policy: Some("vms".into()),
            source: SourceSite::labelled("primary"),
            recovery_point: Some("2026-11-22T10:00:00Z".parse().expect("timestamp")),
            verification: Verification::Passed,
        },
        contents,
        previous: None,
        site_map: &map,
        site,
        now: now(),
        rpo,
        existing,
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

/// `object` as a restore of `restore` labels it.
fn restored_by(mut object: Value, restore: &str) -> Value {
    object["metadata"]["labels"][LABEL_RESTORE_NAME] = json!(restore);
    object
}

#[test]
fn a_stale_pv_at_the_site_blocks_and_one_this_operation_restored_does_not() {
    let contents = contents_of(fixture::healthy_vm_objects());
    let on_replica =
        |name: &str| objects::nfs_pv(name, "nfs-b.example.com", "/replica/vms/root", "Retain");
    // Left from before (no restore made it): blocked even where it points at the right export,
    // since its claim and data are not the backup's.
    let stale = Existing {
        pvs: BTreeMap::from([("pv-root".to_owned(), on_replica("pv-root"))]),
        ..Existing::default()
    };
    let plan = plan_with("dr", &contents, fixture::SITE_MAP, None, Some(&stale));
    assert_eq!(
        plan.blocking().map(|p| p.reason).collect::<Vec<_>>(),
        ["ObjectExists"]
    );
    let problem = plan.blocking().next().expect("a problem");
    assert_eq!(problem.object, "PersistentVolume pv-root");
    assert!(
        problem
            .message
            .contains("was not restored from backup vms-1")
            && problem
                .message
                .contains("the backup's is claimed by vms/db-root"),
        "{}",
        problem.message
    );
    // Restored by this backup's failover here, pointing at this site's export: fine.
    let own = Existing {
        pvs: BTreeMap::from([(
            "pv-root".to_owned(),
            restored_by(on_replica("pv-root"), "failover-dr-vms-1"),
        )]),
        own_restores: BTreeSet::from(["failover-dr-vms-1".to_owned()]),
        ..Existing::default()
    };
    let plan = plan_with("dr", &contents, fixture::SITE_MAP, None, Some(&own));
    assert!(plan.complete, "{:#?}", plan.problems);
    // Restored by this operation but pointing elsewhere: still PersistentVolumeExists.
    let elsewhere = Existing {
        pvs: BTreeMap::from([(
            "pv-root".to_owned(),
            restored_by(
                objects::nfs_pv(
                    "pv-root",
                    "nfs-a.example.com",
                    "/exports/vms/root",
                    "Retain",
                ),
                "failover-dr-vms-1",
            ),
        )]),
        own_restores: BTreeSet::from(["failover-dr-vms-1".to_owned()]),
        ..Existing::default()
    };
    let plan = plan_with("dr", &contents, fixture::SITE_MAP, None, Some(&elsewhere));
    assert_eq!(
        plan.blocking().map(|p| p.reason).collect::<Vec<_>>(),
        ["PersistentVolumeExists"]
    );
    // A drill's Restore is not this operation's: its PV, bound to a scratch namespace, blocks.
    let drill = Existing {
        pvs: BTreeMap::from([(
            "pv-root".to_owned(),
            restored_by(on_replica("pv-root"), "drill-dr-vms-1"),
        )]),
        own_restores: BTreeSet::from(["failover-dr-vms-1".to_owned()]),
        ..Existing::default()
    };
    let plan = plan_with("dr", &contents, fixture::SITE_MAP, None, Some(&drill));
    assert_eq!(
        plan.blocking().map(|p| p.reason).collect::<Vec<_>>(),
        ["ObjectExists"]
    );
}

#[test]
fn what_another_backup_restored_in_this_takeover_is_named_with_the_command_to_go_on() {
    let contents = contents_of(fixture::healthy_vm_objects());
    let restored = |name: &str| {
        restored_by(
            objects::nfs_pv(name, "nfs-b.example.com", "/replica/vms/root", "Retain"),
            "failover-dr-vms-0",
        )
    };
    let existing = Existing {
        pvs: BTreeMap::from([("pv-root".to_owned(), restored("pv-root"))]),
        takeover_restores: BTreeMap::from([("failover-dr-vms-0".to_owned(), "vms-0".to_owned())]),
        ..Existing::default()
    };
    let plan = plan_with("dr", &contents, fixture::SITE_MAP, None, Some(&existing));
    let problem = plan.blocking().next().expect("a problem");
    assert_eq!(problem.reason, "ObjectExists");
    assert!(
        problem
            .message
            .contains("by Restore failover-dr-vms-0 of backup vms-0 in this same takeover")
            && problem
                .message
                .contains("run the same command with `--backup vms-0`"),
        "{}",
        problem.message
    );
}

#[test]
fn stale_vms_and_claims_at_the_site_block_naming_what_they_are_bound_to() {
    let contents = contents_of(fixture::healthy_vm_objects());
    let mut stale_claim = objects::pvc("vms", "db-root", "pv-root-new");
    stale_claim["metadata"]["labels"] = json!({});
    let existing = Existing {
        claims: BTreeMap::from([(("vms".to_owned(), "db-root".to_owned()), stale_claim)]),
        vms: BTreeMap::from([(
            ("vms".to_owned(), "db".to_owned()),
            objects::vm("vms", "db", &["db-root", "db-data"]),
        )]),
        ..Existing::default()
    };
    let plan = plan_with("dr", &contents, fixture::SITE_MAP, None, Some(&existing));
    let blocking: Vec<(&str, &str)> = plan
        .blocking()
        .map(|p| (p.reason, p.object.as_str()))
        .collect();
    assert!(
        blocking.contains(&("ObjectExists", "PersistentVolumeClaim vms/db-root")),
        "{blocking:?}"
    );
    let claim = plan
        .blocking()
        .find(|p| p.object == "PersistentVolumeClaim vms/db-root")
        .expect("the claim");
    assert!(
        claim
            .message
            .contains("bound to pv-root-new here; the backup binds it to pv-root"),
        "{}",
        claim.message
    );
    assert!(
        blocking.contains(&("ObjectExists", "VirtualMachine vms/db")),
        "{blocking:?}"
    );
    assert_eq!(blocking.len(), 2, "{blocking:?}");
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

/// `vms` VMs in namespace `vms`, each with a disk claim bound to an NFS PV, and `extra` more
/// claims no VM uses.
fn workload(vms: &[usize], extra: &[usize]) -> BackupContents {
    let mut items = Vec::new();
    let claim = |items: &mut Vec<(&'static str, Value)>, name: String| {
        let volume = format!("pv-{name}");
        items.push((
            "persistentvolumeclaims",
            objects::pvc("vms", &name, &volume),
        ));
        items.push((
            "persistentvolumes",
            objects::nfs_pv(
                &volume,
                "nfs-a.example.com",
                &format!("/exports/vms/{name}"),
                "Retain",
            ),
        ));
    };
    for i in vms {
        let disk = format!("vm-{i}-root");
        items.push((
            "virtualmachines.kubevirt.io",
            objects::vm("vms", &format!("vm-{i}"), &[&disk]),
        ));
        claim(&mut items, disk);
    }
    for i in extra {
        claim(&mut items, format!("shared-{i}"));
    }
    contents_of(items)
}

/// The plan of `contents` as backup `vms-2`, compared with `previous` as backup `vms-1`.
fn plan_after(contents: &BackupContents, previous: &BackupContents) -> Plan {
    let map = SiteMap::from_yaml(fixture::SITE_MAP).expect("site map");
    let site = map.site("dr").expect("site").clone();
    build(&PlanInput {
        backup: BackupFacts {
            name: "vms-2".into(),
            policy: Some("vms".into()),
            source: SourceSite::labelled("primary"),
            recovery_point: Some("2026-11-22T11:00:00Z".parse().expect("timestamp")),
            verification: Verification::Passed,
        },
        contents,
        previous: Some(PreviousBackup {
            name: "vms-1",
            contents: previous,
        }),
        site_map: &map,
        site,
        now: now(),
        rpo: None,
        existing: None,
    })
}

fn reasons_of(plan: &Plan) -> Vec<(Severity, &str, &str)> {
    plan.problems
        .iter()
        .map(|p| (p.severity, p.reason, p.object.as_str()))
        .collect()
}

#[test]
fn an_empty_backup_after_a_full_one_is_refused_naming_both_backups_and_what_is_missing() {
    let previous = workload(&[0, 1, 2, 3], &[]);
    let plan = plan_after(&BackupContents::default(), &previous);
    assert!(!plan.complete);
    assert_eq!(plan.compared_with.as_deref(), Some("vms-1"));
    let shrank: Vec<&Problem> = plan.blocking().collect();
    assert_eq!(shrank.len(), 1, "{:#?}", plan.problems);
    assert_eq!(
        (shrank[0].reason, shrank[0].object.as_str()),
        ("BackupShrank", "Backup vms-2")
    );
    let message = &shrank[0].message;
    assert!(
        message.starts_with("backup vms-2 holds none of the 4 VMs and 4 claims of backup vms-1"),
        "{message}"
    );
    for missing in [
        "VirtualMachine vms/vm-0",
        "VirtualMachine vms/vm-3",
        "PersistentVolumeClaim vms/vm-2-root",
    ] {
        assert!(message.contains(missing), "{missing}: {message}");
    }
    assert!(
        message.ends_with(
            "restore vms-1 with `--backup vms-1`, or vms-2 with `--backup vms-2 --force`"
        ),
        "{message}"
    );
    let warned: Vec<&str> = plan
        .problems
        .iter()
        .filter(|p| p.reason == "VmMissingFromBackup")
        .map(|p| p.object.as_str())
        .collect();
    assert_eq!(
        warned,
        [
            "VirtualMachine vms/vm-0",
            "VirtualMachine vms/vm-1",
            "VirtualMachine vms/vm-2",
            "VirtualMachine vms/vm-3"
        ]
    );
}

#[test]
fn losing_more_than_half_of_the_vms_is_blocking_and_exactly_half_is_not() {
    let previous = workload(&[0, 1, 2, 3], &[]);
    let plan = plan_after(&workload(&[2], &[]), &previous);
    assert_eq!(
        plan.blocking()
            .map(|p| (p.reason, p.message.as_str()))
            .next()
            .map(|(reason, message)| (reason, message.split(',').next().unwrap_or_default())),
        Some((
            "BackupShrank",
            "backup vms-2 holds 1 of the 4 VMs and 1 of the 4 claims of backup vms-1"
        )),
        "{:#?}",
        plan.problems
    );
    let plan = plan_after(&workload(&[0, 3], &[]), &previous);
    assert!(plan.complete, "{:#?}", plan.problems);
    assert_eq!(
        reasons_of(&plan),
        [
            (
                Severity::Warning,
                "VmMissingFromBackup",
                "VirtualMachine vms/vm-1"
            ),
            (
                Severity::Warning,
                "VmMissingFromBackup",
                "VirtualMachine vms/vm-2"
            ),
        ]
    );
}

#[test]
fn losing_more_than_half_of_the_claims_is_blocking_with_every_vm_still_there() {
    let previous = workload(&[0], &[0, 1, 2]);
    let plan = plan_after(&workload(&[0], &[]), &previous);
    assert_eq!(
        reasons_of(&plan),
        [(Severity::Blocking, "BackupShrank", "Backup vms-2")]
    );
    let message = &plan.problems[0].message;
    assert!(
        message.starts_with("backup vms-2 holds 1 of the 1 VMs and 1 of the 4 claims"),
        "{message}"
    );
    assert!(
        message.contains(
            "missing: PersistentVolumeClaim vms/shared-0, PersistentVolumeClaim vms/shared-1, PersistentVolumeClaim vms/shared-2)"
        ),
        "{message}"
    );
}

#[test]
fn one_vm_lost_of_four_is_a_warning_naming_it() {
    let previous = workload(&[0, 1, 2, 3], &[]);
    let plan = plan_after(&workload(&[0, 1, 2], &[]), &previous);
    assert!(plan.complete, "{:#?}", plan.problems);
    assert_eq!(
        reasons_of(&plan),
        [(
            Severity::Warning,
            "VmMissingFromBackup",
            "VirtualMachine vms/vm-3"
        )]
    );
    assert!(
        plan.problems[0]
            .message
            .starts_with("backup vms-1, the previous verified backup of the policy, holds this VM and backup vms-2 does not"),
        "{}",
        plan.problems[0].message
    );
}

#[test]
fn a_backup_holding_what_the_previous_one_held_has_no_problem() {
    let previous = workload(&[0, 1], &[0]);
    let plan = plan_after(&workload(&[0, 1], &[0]), &previous);
    assert!(plan.problems.is_empty(), "{:#?}", plan.problems);
    assert_eq!(plan.compared_with.as_deref(), Some("vms-1"));
    // Replica PVCs follow the snapshots of the day: a new one or a gone one is no loss.
    let with_replica = contents_of(fixture::healthy_vm_objects());
    let mut without = fixture::healthy_vm_objects();
    without.retain(|(resource, object)| {
        !(*resource == "persistentvolumeclaims"
            && object["metadata"]["name"] == "db-data-snap-replica")
            && *resource != "volumesnapshots.snapshot.storage.k8s.io"
    });
    let plan = plan_after(&contents_of(without), &with_replica);
    assert!(
        plan.problems
            .iter()
            .all(|p| p.reason != "BackupShrank" && p.reason != "VmMissingFromBackup"),
        "{:#?}",
        plan.problems
    );
}

#[test]
fn an_assumed_source_site_and_a_backup_of_this_site_are_warnings_naming_why() {
    let map = SiteMap::from_yaml(fixture::SITE_MAP).expect("site map");
    let contents = contents_of(vec![]);
    let plan_from = |source: SourceSite| {
        build(&PlanInput {
            backup: BackupFacts {
                name: "by-hand".into(),
                policy: None,
                source,
                recovery_point: None,
                verification: Verification::Passed,
            },
            contents: &contents,
            previous: None,
            site_map: &map,
            site: map.site("dr").expect("site").clone(),
            now: now(),
            rpo: None,
            existing: None,
        })
    };
    let reasons = |plan: &Plan| {
        plan.problems
            .iter()
            .map(|p| (p.severity, p.reason, p.message.clone()))
            .collect::<Vec<_>>()
    };
    let assumed = plan_from(SourceSite {
        site: Some("primary".into()),
        assumed: true,
        how: "no label; synced".into(),
    });
    assert_eq!(
        reasons(&assumed),
        [(
            Severity::Warning,
            reason::SOURCE_SITE_ASSUMED,
            "no label; synced".to_owned()
        )]
    );
    assert!(assumed.complete);
    let own = plan_from(SourceSite::labelled("dr"));
    let found = reasons(&own);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].1, reason::BACKUP_FROM_THIS_SITE);
    assert!(
        found[0]
            .2
            .starts_with("made at site dr itself (its label replicadr.io/site=dr)"),
        "{found:?}"
    );
    assert!(reasons(&plan_from(SourceSite::labelled("primary"))).is_empty());
}

#[test]
fn a_manual_vm_that_ran_when_backed_up_is_a_warning_that_it_stays_stopped() {
    let vm = |name: &str, running: bool| {
        let mut vm = objects::vm("vms", name, &[]);
        vm["spec"]["runStrategy"] = json!("Manual");
        if running {
            vm["status"] = json!({"printableStatus": "Running", "ready": true});
        }
        vm
    };
    let contents = contents_of(vec![
        ("virtualmachines.kubevirt.io", vm("ran", true)),
        ("virtualmachines.kubevirt.io", vm("stopped", false)),
    ]);
    let plan = plan_at("dr", &contents, fixture::SITE_MAP);
    let manual: Vec<_> = plan
        .problems
        .iter()
        .filter(|p| p.reason == reason::MANUAL_VM_NOT_STARTED)
        .collect();
    assert_eq!(manual.len(), 1, "{:#?}", plan.problems);
    assert_eq!(manual[0].object, "VirtualMachine vms/ran");
    assert_eq!(manual[0].severity, Severity::Warning);
    assert!(
        manual[0].message.contains("virtctl start ran -n vms"),
        "{}",
        manual[0].message
    );
    assert!(plan.complete);
}

#[test]
fn a_stale_data_volume_at_the_site_blocks_naming_both_phases() {
    let mut backed_up = fixture::healthy_vm_objects();
    backed_up.push((
        "datavolumes.cdi.kubevirt.io",
        objects::data_volume("vms", "db-root", "Succeeded"),
    ));
    let contents = contents_of(backed_up);
    assert_eq!(contents.data_volumes.len(), 1, "read from the tarball");
    assert_eq!(contents.data_volumes[0].phase, "Succeeded");
    let live = objects::data_volume("vms", "db-root", "ImportInProgress");
    let existing = Existing {
        data_volumes: BTreeMap::from([(("vms".to_owned(), "db-root".to_owned()), live.clone())]),
        ..Existing::default()
    };
    let plan = plan_with("dr", &contents, fixture::SITE_MAP, None, Some(&existing));
    let problem = plan
        .blocking()
        .find(|p| p.object == "DataVolume vms/db-root")
        .expect("the DataVolume blocks");
    assert_eq!(problem.reason, "ObjectExists");
    assert!(
        problem.message.contains(
            "ImportInProgress here, Succeeded in the backup; CDI keeps claim db-root for it"
        ),
        "{}",
        problem.message
    );
    // Restored by this operation: not stale.
    let own = Existing {
        data_volumes: BTreeMap::from([(
            ("vms".to_owned(), "db-root".to_owned()),
            restored_by(live, "failover-dr-vms-1"),
        )]),
        own_restores: BTreeSet::from(["failover-dr-vms-1".to_owned()]),
        ..Existing::default()
    };
    let plan = plan_with("dr", &contents, fixture::SITE_MAP, None, Some(&own));
    assert!(plan.complete, "{:#?}", plan.problems);
}

#[test]
fn data_volumes_cdi_would_import_block_the_plan_as_verification_does() {
    let contents = contents_of(fixture::data_volume_objects());
    let plan = plan_at("dr", &contents, fixture::SITE_MAP);
    let blocking: Vec<(&str, &str)> = plan
        .blocking()
        .map(|p| (p.reason, p.object.as_str()))
        .collect();
    assert_eq!(
        blocking,
        [
            ("DataVolumeWouldImport", "DataVolume vms/scratch"),
            ("DataVolumeWouldImport", "PersistentVolumeClaim vms/scratch"),
        ],
        "{:#?}",
        plan.problems
    );
    let vms = &plan.namespaces[0];
    assert_eq!(vms.data_volumes.len(), 2);
    assert_eq!(
        vms.left_out
            .iter()
            .map(|item| format!("{} {}", item.kind, item.name))
            .collect::<Vec<_>>(),
        ["PersistentVolumeClaim scratch"]
    );
}

#[test]
fn vmis_and_launcher_pods_are_listed_as_left_out() {
    let mut backed_up = fixture::healthy_vm_objects();
    backed_up.push((
        "virtualmachineinstances.kubevirt.io",
        json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
               "metadata": {"name": "db", "namespace": "vms", "ownerReferences": [
                   {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "db", "uid": "u"}]}}),
    ));
    backed_up.push((
        "pods",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "virt-launcher-db-abcde", "namespace": "vms",
                            "labels": {"kubevirt.io": "virt-launcher"}}}),
    ));
    backed_up.push((
        "pods",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "web-1", "namespace": "vms", "labels": {"app": "web"}}}),
    ));
    let contents = contents_of(backed_up);
    let plan = plan_at("dr", &contents, fixture::SITE_MAP);
    assert!(plan.complete, "{:#?}", plan.problems);
    let left_out: Vec<String> = plan.namespaces[0]
        .left_out
        .iter()
        .map(|item| format!("{} {}: {}", item.kind, item.name, item.why))
        .collect();
    assert_eq!(
        left_out,
        [
            "VirtualMachineInstance db: VMI of VM db",
            "Pod virt-launcher-db-abcde: virt-launcher pod"
        ]
    );
}

#[test]
fn an_object_a_vm_needs_blocks_unless_the_backup_or_the_site_has_it() {
    let mut objects = fixture::healthy_vm_objects();
    let (_, vm) = objects
        .iter_mut()
        .find(|(resource, _)| *resource == replicadr_core::wire::RESOURCE_VIRTUAL_MACHINES)
        .expect("the fixture has a VM");
    vm["spec"]["instancetype"] = json!({"name": "u1.large"});
    vm["spec"]["template"]["spec"]["networks"] =
        json!([{"name": "storage", "multus": {"networkName": "storage-net"}}]);
    objects.push((
        "network-attachment-definitions.k8s.cni.cncf.io",
        json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"namespace": "vms", "name": "storage-net"}}),
    ));
    let contents = contents_of(objects);

    let offline = plan_at("dr", &contents, fixture::SITE_MAP);
    let missing: Vec<&Problem> = offline
        .problems
        .iter()
        .filter(|p| p.reason == "ReferenceMissing")
        .collect();
    assert_eq!(
        missing.len(),
        1,
        "the network is in the backup: {missing:#?}"
    );
    assert_eq!(missing[0].severity, Severity::Blocking);
    assert_eq!(missing[0].object, "VirtualMachine vms/db");
    assert!(
        missing[0].message.starts_with(
            "it needs VirtualMachineClusterInstancetype u1.large (spec.instancetype), which is not in the backup: "
        ),
        "{}",
        missing[0].message
    );
    assert!(!offline.complete);

    let mut existing = Existing::default();
    let at_dr = plan_with("dr", &contents, fixture::SITE_MAP, None, Some(&existing));
    let problem = at_dr
        .problems
        .iter()
        .find(|p| p.reason == "ReferenceMissing")
        .expect("still missing");
    assert!(
        problem
            .message
            .contains("which is not in the backup and not at site dr"),
        "{}",
        problem.message
    );
    existing
        .referenced
        .insert(replicadr_core::contents::reference_key(
            ReferencedKind::VirtualMachineClusterInstancetype,
            "",
            "u1.large",
        ));
    let at_dr = plan_with("dr", &contents, fixture::SITE_MAP, None, Some(&existing));
    assert!(at_dr.complete, "{:#?}", at_dr.problems);

    // The network is in the backup, but a site without Multus cannot restore it.
    existing
        .unserved
        .insert(ReferencedKind::NetworkAttachmentDefinition);
    let at_dr = plan_with("dr", &contents, fixture::SITE_MAP, None, Some(&existing));
    let problem = at_dr
        .problems
        .iter()
        .find(|p| p.reason == "ReferenceMissing")
        .expect("the network cannot be restored");
    assert_eq!(problem.severity, Severity::Blocking);
    assert_eq!(problem.object, "VirtualMachine vms/db");
    assert!(
        problem.message.starts_with(
            "it needs NetworkAttachmentDefinition vms/storage-net (network storage (multus.networkName)), which is in the backup but cannot be restored at site dr: the API k8s.cni.cncf.io/v1 network-attachment-definitions is not served there"
        ),
        "{}",
        problem.message
    );
    assert!(!at_dr.complete);
}
