use serde_json::{Value, json};

use super::*;
use crate::kubevirt::{ReferencedKind, VmReference};
use crate::sitemap::SiteMap;
use crate::wire::NFS_CSI_DRIVER;

const SITE_MAP: &str = "sites: [primary, dr]
exports:
  - name: vm-disks
    primary: {server: nfs-a.example.com, path: /exports/vms}
    dr: {server: nfs-b.example.com, path: /replica/vms}
";

fn map(text: &str) -> SiteMap {
    SiteMap::from_yaml(text).expect("valid site map")
}

fn every_site() -> Vec<SiteRemap> {
    SiteRemap::every_site(&map(SITE_MAP))
}

fn nfs_pv(name: &str, server: &str, path: &str, reclaim: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {"persistentVolumeReclaimPolicy": reclaim, "nfs": {"server": server, "path": path}},
    })
}

fn other_pv(name: &str, reclaim: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {"persistentVolumeReclaimPolicy": reclaim,
                 "csi": {"driver": "rbd.csi.ceph.com", "volumeHandle": "h"}},
    })
}

fn reasons(violations: &[Violation]) -> Vec<Reason> {
    violations.iter().map(|v| v.reason).collect()
}

#[test]
fn every_reason_has_a_distinct_stable_name_and_a_severity() {
    let names: HashSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names.len(), Reason::ALL.len());
    for reason in Reason::ALL {
        assert_eq!(reason.to_string(), format!("{reason:?}"));
    }
    let warnings: Vec<Reason> = Reason::ALL
        .into_iter()
        .filter(|r| r.severity() == Severity::Warning)
        .collect();
    assert_eq!(
        warnings,
        [
            Reason::PvReprovisioned,
            Reason::PvKeptUnmapped,
            Reason::VmMissingFromBackup
        ]
    );
}

#[test]
fn a_retained_nfs_pv_in_the_map_passes_and_is_rewritten_to_every_site() {
    let pv = nfs_pv("pv-1", "nfs-a.example.com", "/exports/vms/disk-1", "Retain");
    let check = check_volume("pv-1", &pv, &every_site());
    assert!(check.violations.is_empty(), "{:?}", check.violations);
    assert!(check.nfs && !check.reprovisioned);
    let outcomes: Vec<(&str, &Outcome)> = check
        .rewrites
        .iter()
        .map(|(site, outcome)| (site.as_str(), outcome.as_ref().expect("rewrites")))
        .collect();
    assert_eq!(outcomes[0], ("primary", &Outcome::AlreadyLocal));
    assert_eq!(
        outcomes[1],
        (
            "dr",
            &Outcome::Remapped {
                export: "vm-disks".into(),
                from: "nfs-a.example.com:/exports/vms/disk-1".into(),
                to: "nfs-b.example.com:/replica/vms/disk-1".into()
            }
        )
    );
}

#[test]
fn an_nfs_pv_with_delete_is_blocking_and_not_handed_to_the_rewrite() {
    let pv = nfs_pv("pv-1", "nfs-a.example.com", "/exports/vms/disk-1", "Delete");
    let check = check_volume("pv-1", &pv, &every_site());
    assert_eq!(reasons(&check.violations), [Reason::PvNotRetain]);
    assert_eq!(check.violations[0].severity(), Severity::Blocking);
    assert_eq!(check.violations[0].object, "PersistentVolume pv-1");
    assert!(
        check.violations[0]
            .message
            .contains("reclaim policy Delete, so Velero would provision a new, empty volume"),
        "{}",
        check.violations[0].message
    );
    assert!(check.reprovisioned);
    assert!(
        check.rewrites.is_empty(),
        "Velero never hands a Delete PV to the plugin"
    );
}

#[test]
fn an_nfs_pv_with_recycle_is_blocking_and_still_rewritten() {
    let pv = nfs_pv(
        "pv-1",
        "nfs-a.example.com",
        "/exports/vms/disk-1",
        "Recycle",
    );
    let check = check_volume("pv-1", &pv, &every_site());
    assert_eq!(reasons(&check.violations), [Reason::PvNotRetain]);
    assert!(check.violations[0].message.contains("scrubbed"));
    assert!(!check.reprovisioned);
    assert_eq!(check.rewrites.len(), 2);
}

#[test]
fn a_delete_pv_outside_nfs_is_a_warning_only() {
    let check = check_volume("ceph-1", &other_pv("ceph-1", "Delete"), &every_site());
    assert_eq!(reasons(&check.violations), [Reason::PvReprovisioned]);
    assert_eq!(check.violations[0].severity(), Severity::Warning);
    assert!(check.reprovisioned && !check.nfs);
    let retained = check_volume("ceph-2", &other_pv("ceph-2", "Retain"), &every_site());
    assert!(retained.violations.is_empty());
    assert!(
        retained
            .rewrites
            .iter()
            .all(|(_, o)| o.as_ref() == Ok(&Outcome::NotNfs))
    );
}

#[test]
fn an_absent_reclaim_policy_reads_as_the_api_default_retain() {
    let mut pv = nfs_pv("pv-1", "nfs-a.example.com", "/exports/vms/d", "Retain");
    pv["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("persistentVolumeReclaimPolicy");
    assert_eq!(reclaim_policy(&pv), "Retain");
    assert!(
        check_volume("pv-1", &pv, &every_site())
            .violations
            .is_empty()
    );
}

#[test]
fn an_unmapped_nfs_pv_is_blocking_per_site_with_the_plugins_message() {
    let pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-x"},
        "spec": {"persistentVolumeReclaimPolicy": "Retain",
                 "csi": {"driver": NFS_CSI_DRIVER, "volumeHandle": "h",
                         "volumeAttributes": {"server": "nfs-z", "share": "/elsewhere"}}},
    });
    let check = check_volume("pv-x", &pv, &every_site());
    assert_eq!(
        reasons(&check.violations),
        [Reason::PvUnmappable, Reason::PvUnmappable]
    );
    let message = &check.violations[1].message;
    assert!(
        message.starts_with("cannot fail over to site dr: PersistentVolume pv-x: nfs export nfs-z:/elsewhere is not in the site map"),
        "{message}"
    );
}

#[test]
fn an_unmapped_nfs_pv_kept_by_the_map_is_a_warning() {
    let keep = map(&format!("{SITE_MAP}unmapped: keep\n"));
    let pv = nfs_pv("pv-x", "nfs-z", "/elsewhere", "Retain");
    let check = check_volume("pv-x", &pv, &SiteRemap::every_site(&keep));
    assert_eq!(
        reasons(&check.violations),
        [Reason::PvKeptUnmapped, Reason::PvKeptUnmapped]
    );
    assert!(
        check.violations[0]
            .message
            .contains("so it still points at nfs-z:/elsewhere")
    );
}

/// References built by name, as `replicadr plan` builds them.
#[derive(Default)]
struct Backup(References<&'static str>);

impl Backup {
    fn claim(mut self, key: &'static str, volume: Option<&'static str>) -> Self {
        self.0.claims.insert(
            key,
            ClaimRef {
                volume,
                uid: key,
                replica: false,
                left_out: false,
            },
        );
        self
    }

    fn replica(mut self, key: &'static str, volume: &'static str, of: &'static str) -> Self {
        self.0.claims.insert(
            key,
            ClaimRef {
                volume: Some(volume),
                uid: key,
                replica: true,
                left_out: false,
            },
        );
        self.0.replicated.insert(of);
        self
    }

    fn volume(mut self, name: &'static str) -> Self {
        self.0.volumes.insert(name);
        self
    }

    fn snapshot(mut self, key: &'static str) -> Self {
        self.0.snapshots.push(key);
        self
    }

    fn vm_disk(mut self, claim: &'static str) -> Self {
        self.0.vm_volumes.push(claim);
        self
    }

    fn data_volume(mut self, claim: &'static str, succeeded: bool) -> Self {
        self.0.data_volumes.push(DataVolumeRef { claim, succeeded });
        self
    }

    fn left_out(mut self, key: &'static str) -> Self {
        if let Some(claim) = self.0.claims.get_mut(key) {
            claim.left_out = true;
        }
        self
    }
}

fn healthy() -> Backup {
    Backup::default()
        .claim("vms/db-root", Some("pv-root"))
        .volume("pv-root")
        .replica("vms/replica-1", "pv-replica", "vms/snap-uid")
        .volume("pv-replica")
        .snapshot("vms/snap-uid")
        .vm_disk("vms/db-root")
}

#[test]
fn a_complete_backup_breaks_no_cross_check() {
    assert!(cross_check(&healthy().0, &[]).is_empty());
}

#[test]
fn an_unbound_claim_is_found() {
    let backup = healthy().claim("vms/pending", None);
    let broken = cross_check(&backup.0, &[]);
    assert_eq!(broken.unbound_claims, ["vms/pending"]);
    assert!(broken.claims_without_pv.is_empty());
    let violation = Violation::pvc_not_bound("vms", "pending", None);
    assert_eq!(violation.reason, Reason::PvcNotBound);
    assert_eq!(violation.severity(), Severity::Blocking);
    assert_eq!(violation.object, "PersistentVolumeClaim vms/pending");
}

#[test]
fn a_claim_whose_pv_is_not_in_the_backup_is_found() {
    let backup = healthy().claim("vms/data", Some("pv-gone"));
    let broken = cross_check(&backup.0, &[]);
    assert_eq!(broken.claims_without_pv, ["vms/data"]);
    let violation = Violation::pv_missing("vms", "data", "pv-gone");
    assert_eq!(
        violation.to_string(),
        "PersistentVolumeClaim vms/data: it is bound to PersistentVolume pv-gone, which is not in the backup: include cluster-scoped resources (the scheduler's backups do) and back up again"
    );
}

#[test]
fn a_snapshot_in_the_backup_without_its_replica_is_found_by_position() {
    let backup = healthy().snapshot("vms/other-uid");
    let broken = cross_check(&backup.0, &[]);
    assert_eq!(broken.snapshots_without_replica, [1]);
    let violation =
        Violation::replica_pvc_missing("vms", "snap-2", "other-uid", SnapshotSeen::InBackup);
    assert_eq!(violation.reason, Reason::ReplicaPvcMissing);
    assert!(
        violation
            .message
            .contains(&format!("{LABEL_REPLICA_OF_SNAPSHOT_UID}=other-uid"))
    );
}

#[test]
fn a_live_snapshot_of_a_backed_up_claim_without_its_replica_is_found() {
    // Velero 1.17 and later: no VolumeSnapshot in the backup, only the live one at the source.
    let backup = Backup::default()
        .claim("vms/db-root", Some("pv-root"))
        .volume("pv-root");
    let live = [LiveSnapshot {
        snapshot: "vms/live-uid",
        source_claim: "vms/db-root",
        source_claim_uid: "vms/db-root",
    }];
    let broken = cross_check(&backup.0, &live);
    assert_eq!(broken.live_snapshots_without_replica, [0]);
    assert!(broken.snapshots_without_replica.is_empty());
    let message =
        Violation::replica_pvc_missing("vms", "daily", "live-uid", SnapshotSeen::LiveAtSource)
            .message;
    assert!(message.contains("exists at the source site"), "{message}");
}

#[test]
fn live_snapshots_the_backup_did_not_see_are_not_held_against_it() {
    let backup = healthy();
    let live = [
        // Replicated: the replica is in the backup.
        LiveSnapshot {
            snapshot: "vms/snap-uid",
            source_claim: "vms/db-root",
            source_claim_uid: "vms/db-root",
        },
        // Its claim is not in the backup.
        LiveSnapshot {
            snapshot: "vms/u2",
            source_claim: "vms/not-backed-up",
            source_claim_uid: "vms/not-backed-up",
        },
        // A claim of the same name with another UID: not the site the backup was taken at.
        LiveSnapshot {
            snapshot: "vms/u3",
            source_claim: "vms/db-root",
            source_claim_uid: "restored-uid",
        },
        // Taken of a replica PVC: the plugin never replicates replicas.
        LiveSnapshot {
            snapshot: "vms/u4",
            source_claim: "vms/replica-1",
            source_claim_uid: "vms/replica-1",
        },
    ];
    assert!(cross_check(&backup.0, &live).is_empty());
}

#[test]
fn a_vm_disk_whose_claim_is_not_in_the_backup_is_found_by_position() {
    let backup = healthy().vm_disk("vms/db-data");
    let broken = cross_check(&backup.0, &[]);
    assert_eq!(broken.vm_volumes_without_claim, [1]);
    assert_eq!(
        Violation::vm_volume_missing("vms", "db", "db-data").to_string(),
        "VirtualMachine vms/db: its disk claim db-data is not in the backup"
    );
}

#[test]
fn only_snapshots_the_plugin_replicates_count_live() {
    let snapshot = json!({"metadata": {"name": "s", "namespace": "vms", "uid": "u"}});
    assert!(is_replicated_at_backup(&snapshot));
    let deleting = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}});
    assert!(!is_replicated_at_backup(&deleting));
    let temporary = json!({"metadata": {"labels": {"velero.io/backup-name": "b"}}});
    assert!(!is_replicated_at_backup(&temporary));
    let restored = json!({"metadata": {"labels": {
        "velero.io/backup-name": "b", "velero.io/restore-name": "r"}}});
    assert!(is_replicated_at_backup(&restored));
}

#[test]
fn a_data_volume_is_adopted_only_succeeded_with_its_claim_restored() {
    let backup = healthy().data_volume("vms/db-root", true);
    assert!(cross_check(&backup.0, &[]).is_empty(), "adopted");
    let backup = healthy()
        .data_volume("vms/db-root", false)
        .data_volume("vms/gone", true)
        .claim("vms/scratch", Some("pv-root"))
        .left_out("vms/scratch")
        .data_volume("vms/scratch", true);
    let broken = cross_check(&backup.0, &[]);
    assert_eq!(
        broken.data_volumes_would_import,
        [
            (0, ImportCause::NotSucceeded),
            (1, ImportCause::ClaimMissing),
            (2, ImportCause::ClaimLeftOut)
        ]
    );
    assert_eq!(broken.claims_left_out, ["vms/scratch"]);
    let violation = Violation::data_volume_would_import(
        "vms",
        "db-root",
        "ImportInProgress",
        ImportCause::NotSucceeded,
    );
    assert_eq!(violation.reason, Reason::DataVolumeWouldImport);
    assert_eq!(violation.severity(), Severity::Blocking);
    assert_eq!(violation.object, "DataVolume vms/db-root");
    assert!(
        violation
            .message
            .starts_with("it was ImportInProgress when backed up, not Succeeded"),
        "{violation}"
    );
    let hazard = ClaimHazard::ImportUnfinished {
        pod_phase: Some("Running".to_owned()),
    };
    let violation = Violation::claim_would_import("vms", "scratch", &hazard);
    assert_eq!(violation.object, "PersistentVolumeClaim vms/scratch");
    assert!(
        violation
            .message
            .contains("the restore leaves the claim out"),
        "{violation}"
    );
}

#[test]
fn an_object_a_vm_needs_is_missing_unless_the_backup_holds_it() {
    let mut backup = healthy();
    backup.0.vm_references = vec!["secrets/vms/db-init", "controllerrevisions.apps/vms/db-v1"];
    backup.0.referenceable.insert("secrets/vms/db-init");
    backup.0.referenceable.insert("secrets/vms/other");
    let broken = cross_check(&backup.0, &[]);
    assert_eq!(broken.references_not_in_backup, [1]);
    assert!(!broken.is_empty());
    backup
        .0
        .referenceable
        .insert("controllerrevisions.apps/vms/db-v1");
    assert!(cross_check(&backup.0, &[]).is_empty());

    let reference = VmReference {
        kind: ReferencedKind::ControllerRevision,
        namespace: "vms".to_owned(),
        name: "db-v1".to_owned(),
        field: "spec.instancetype.revisionName".to_owned(),
    };
    let verified = Violation::reference_missing("vms", "db", &reference, None);
    assert_eq!(verified.reason, Reason::ReferenceMissing);
    assert_eq!(verified.severity(), Severity::Blocking);
    assert_eq!(verified.object, "VirtualMachine vms/db");
    assert!(
        verified.message.starts_with(
            "it needs ControllerRevision vms/db-v1 (spec.instancetype.revisionName), which is not in the backup: restored without it, KubeVirt cannot find the VM's instance type (FailedFindInstancetype)"
        ),
        "{verified}"
    );
    assert!(
        verified.message.contains("controllerrevisions.apps"),
        "{verified}"
    );
    let sites = map(SITE_MAP);
    let planned = Violation::reference_missing("vms", "db", &reference, sites.site("dr").ok());
    assert!(
        planned
            .message
            .contains("which is not in the backup and not at site dr"),
        "{planned}"
    );
}
