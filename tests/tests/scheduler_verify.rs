//! Backup verification against a real kube-apiserver and a real S3 server (s3s-fs, `SigV4`
//! enforced): what a good backup looks like, and a precise reason for each way one goes bad —
//! damaged or missing objects, storage that cannot be reached or refuses the credentials, a PV
//! or PVC left out, an unbound claim, a live VolumeSnapshot without its replica, an NFS export the
//! site map cannot fail over — with the reasons `replicadr plan` gives the same backup. Also
//! `replicadr gc`.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DynamicObject, PostParams};
use replicadr_cli::render;
use replicadr_core::contents::BackupContents;
use replicadr_core::sitemap::SiteMap;
use replicadr_e2e::backup_env::{BUCKET, BackupEnv};
use replicadr_lab::fixture::{self, ArchiveWriter, objects};
use replicadr_scheduler::clock::{Clock, ManualClock};
use replicadr_scheduler::gc::{self, GcAction};
use replicadr_scheduler::metrics::{self, Metrics};
use replicadr_scheduler::policy::condition;
use replicadr_scheduler::publish::Publisher;
use replicadr_scheduler::recovery::plan::{self, BackupFacts, PlanInput, Verification};
use replicadr_scheduler::service::{Service, ServiceConfig};
use replicadr_scheduler::velero::{self, BackupRequest, PhaseClass};
use replicadr_scheduler::verify::{LiveScope, Report, SiteMapSource, Verifier};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_mins(1);

/// Creates a Backup of policy `vms` as the scheduler would, then completes it as Velero would.
async fn backup_with(
    env: &BackupEnv,
    name: &str,
    archive: (Vec<u8>, Vec<u8>),
) -> anyhow::Result<()> {
    create_backup(env, name).await?;
    env.complete_backup(name, &archive.0, &archive.1, "Completed", Timestamp::now())
        .await
}

async fn create_backup(env: &BackupEnv, name: &str) -> anyhow::Result<()> {
    let policy =
        replicadr_scheduler::policy::ValidPolicy::from_policy(&serde_json::from_value(json!({
            "apiVersion": "replicadr.io/v1alpha1", "kind": "BackupPolicy",
            "metadata": {"name": "vms", "namespace": env.namespace, "uid": "u"},
            "spec": {"schedule": "@hourly", "template": {"includedNamespaces": ["vms"]}},
        }))?)?;
    let object = velero::build_backup(&BackupRequest {
        policy: &policy,
        site: "primary",
        name: name.into(),
        slot: None,
        attempt: 0,
    });
    env.backups()
        .create(&PostParams::default(), &object)
        .await?;
    Ok(())
}

/// Verifies as the scheduler does, with its shipped RBAC.
async fn verify(env: &BackupEnv, name: &str) -> anyhow::Result<Report> {
    Ok(Verifier::new(env.scheduler_client().await?, &env.namespace)
        .verify(name, &SiteMapSource::default())
        .await?)
}

fn reasons(report: &Report) -> Vec<String> {
    report.finding_counts.keys().cloned().collect()
}

fn build(objects: &[(&str, Value)]) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let mut writer = ArchiveWriter::new(Vec::new())?;
    for (group_resource, object) in objects {
        writer.add(group_resource, object)?;
    }
    Ok(writer.finish()?)
}

/// The blocking reasons `replicadr plan` gives a backup tarball at site `dr`.
fn plan_blocking(tarball: &[u8]) -> anyhow::Result<Vec<String>> {
    let map = SiteMap::from_yaml(fixture::SITE_MAP)?;
    let contents = BackupContents::read(tarball)?;
    let plan = plan::build(&PlanInput {
        backup: BackupFacts {
            name: "b".into(),
            policy: None,
            source: plan::SourceSite::labelled("primary"),
            recovery_point: None,
            verification: Verification::Passed,
        },
        contents: &contents,
        previous: None,
        site_map: &map,
        site: map.site("dr")?.clone(),
        now: Timestamp::now(),
        rpo: None,
        existing: None,
    });
    Ok(plan.blocking().map(|p| p.reason.to_owned()).collect())
}

fn healthy_without(name: &str) -> Vec<(&'static str, Value)> {
    fixture::healthy_vm_objects()
        .into_iter()
        .filter(|(_, o)| o["metadata"]["name"] != name)
        .collect()
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one backup per reason, step by step")]
async fn verification_finds_each_problem_with_its_reason() -> anyhow::Result<()> {
    let env = BackupEnv::start("velero").await?;

    backup_with(&env, "good", fixture::healthy_vm_backup()?).await?;
    let report = verify(&env, "good").await?;
    assert!(report.verified, "{report:#?}");
    assert_eq!(report.stats.items, 9);
    assert_eq!(report.stats.nfs_persistent_volumes, 3);
    let table = render::verification(&report);
    assert!(table.contains("good") && table.contains("true"), "{table}");

    backup_with(&env, "no-pv", build(&healthy_without("pv-data"))?).await?;
    let report = verify(&env, "no-pv").await?;
    assert_eq!(reasons(&report), ["PvMissing"], "{report:#?}");
    assert!(
        report.findings[0]
            .message
            .contains("vms/db-data: it is bound to PersistentVolume pv-data"),
        "{report:#?}"
    );

    let mut stray = fixture::healthy_vm_objects();
    stray.push((
        "persistentvolumes",
        objects::nfs_pv("pv-stray", "nfs-z.example.com", "/other/x", "Retain"),
    ));
    backup_with(&env, "unmappable", build(&stray)?).await?;
    let report = verify(&env, "unmappable").await?;
    assert_eq!(reasons(&report), ["PvUnmappable"], "{report:#?}");
    assert!(
        report.findings[0]
            .message
            .contains("PersistentVolume pv-stray: cannot fail over to site"),
        "{report:#?}"
    );

    claims_and_volumes_get_the_plans_verdict(&env).await?;

    // Tampering after upload: one flipped byte, a cut-off end.
    backup_with(&env, "tampered", fixture::healthy_vm_backup()?).await?;
    let key = BackupEnv::key("tampered", "tampered.tar.gz");
    let mut bytes = env.s3.get(BUCKET, &key)?;
    let middle = bytes.len() / 3;
    bytes[middle] ^= 0x20;
    env.s3.put(BUCKET, &key, &bytes)?;
    let report = verify(&env, "tampered").await?;
    assert_eq!(reasons(&report), ["TarballCorrupt"], "{report:#?}");

    backup_with(&env, "truncated", fixture::healthy_vm_backup()?).await?;
    let key = BackupEnv::key("truncated", "truncated.tar.gz");
    let bytes = env.s3.get(BUCKET, &key)?;
    env.s3.put(BUCKET, &key, &bytes[..bytes.len() / 2])?;
    let report = verify(&env, "truncated").await?;
    assert_eq!(reasons(&report), ["TarballTruncated"], "{report:#?}");
    assert!(
        report.findings[0].message.contains("truncated"),
        "{report:#?}"
    );

    // A resource list that disagrees with the tarball: it names a PV the tarball lacks.
    let (tarball, _) = build(&healthy_without("pv-data"))?;
    let (_, list) = fixture::healthy_vm_backup()?;
    backup_with(&env, "list-off", (tarball, list)).await?;
    let report = verify(&env, "list-off").await?;
    assert!(
        reasons(&report).contains(&"ResourceListMismatch".to_owned()),
        "{report:#?}"
    );
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.reason.as_str() == "ResourceListMismatch" && f.message.contains("pv-data")),
        "{report:#?}"
    );
    // Verification only reads: every damaged backup and its files are still there.
    for name in ["tampered", "truncated", "list-off"] {
        assert!(env.backups().get_opt(name).await?.is_some(), "{name}");
        assert!(
            env.s3
                .object_path(BUCKET, &BackupEnv::key(name, &format!("{name}.tar.gz")))
                .is_file(),
            "{name}"
        );
    }

    backup_with(&env, "no-logs", fixture::healthy_vm_backup()?).await?;
    std::fs::remove_file(
        env.s3
            .object_path(BUCKET, &BackupEnv::key("no-logs", "no-logs-logs.gz")),
    )?;
    let report = verify(&env, "no-logs").await?;
    assert_eq!(reasons(&report), ["ObjectMissing"], "{report:#?}");
    assert!(
        report.findings[0].message.contains("no-logs-logs.gz"),
        "{report:#?}"
    );

    // A PVC in scope that existed when the backup started but is not in it.
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "forgotten", "namespace": "vms"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))?;
    Api::<PersistentVolumeClaim>::namespaced(env.client.clone(), "vms")
        .create(&PostParams::default(), &pvc)
        .await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    backup_with(&env, "no-pvc", fixture::healthy_vm_backup()?).await?;
    let report = verify(&env, "no-pvc").await?;
    assert_eq!(reasons(&report), ["PvcMissing"], "{report:#?}");
    assert!(
        report.findings[0].message.contains("vms/forgotten"),
        "{report:#?}"
    );
    Api::<PersistentVolumeClaim>::namespaced(env.client.clone(), "vms")
        .delete("forgotten", &kube::api::DeleteParams::default())
        .await?;

    live_snapshots_at_the_source_need_their_replica(&env).await?;

    // Volume data moved: a PodVolumeBackup of this backup exists.
    backup_with(&env, "moved", fixture::healthy_vm_backup()?).await?;
    let pvb: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "velero.io/v1", "kind": "PodVolumeBackup",
        "metadata": {"name": "moved-x", "namespace": env.namespace, "labels": {velero::LABEL_BACKUP_NAME: "moved"}},
        "spec": {"backupStorageLocation": "default", "node": "n", "pod": {"kind": "Pod", "name": "p", "namespace": "vms"}, "repoIdentifier": "", "volume": "v", "uploaderType": "kopia"},
    }))?;
    Api::<DynamicObject>::namespaced_with(
        env.client.clone(),
        &env.namespace,
        &velero::pod_volume_backup_resource(),
    )
    .create(&PostParams::default(), &pvb)
    .await?;
    let report = verify(&env, "moved").await?;
    assert_eq!(reasons(&report), ["DataMoverUsed"], "{report:#?}");
    Ok(())
}

/// A claim backed up before it was bound is blocked by the plan, so verification fails it; a
/// Delete PV of a driver the site map does not cover is a warning in both, and verifies.
async fn claims_and_volumes_get_the_plans_verdict(env: &BackupEnv) -> anyhow::Result<()> {
    // A claim backed up before it was bound: the plan blocks it, so verification fails it.
    let mut unbound = fixture::healthy_vm_objects();
    let mut pending = objects::pvc("vms", "pending", "");
    pending["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("volumeName");
    unbound.push(("persistentvolumeclaims", pending));
    let archive = build(&unbound)?;
    assert_eq!(plan_blocking(&archive.0)?, ["PvcNotBound"]);
    backup_with(env, "unbound", archive).await?;
    let report = verify(env, "unbound").await?;
    assert!(!report.verified);
    assert_eq!(reasons(&report), ["PvcNotBound"], "{report:#?}");
    assert!(
        report.findings[0]
            .message
            .starts_with("PersistentVolumeClaim vms/pending: the claim has no spec.volumeName"),
        "{report:#?}"
    );

    // A Delete PV of a driver the site map does not cover: a warning in both, and it verifies.
    let mut scratch = fixture::healthy_vm_objects();
    scratch.push((
        "persistentvolumes",
        json!({
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv-scratch"},
            "spec": {"persistentVolumeReclaimPolicy": "Delete",
                     "csi": {"driver": "rbd.csi.ceph.com", "volumeHandle": "0001-abc"}},
        }),
    ));
    scratch.push((
        "persistentvolumeclaims",
        objects::pvc("vms", "scratch", "pv-scratch"),
    ));
    let archive = build(&scratch)?;
    assert!(plan_blocking(&archive.0)?.is_empty());
    backup_with(env, "scratch", archive).await?;
    let report = verify(env, "scratch").await?;
    assert!(report.verified, "{report:#?}");
    assert_eq!(reasons(&report), ["PvReprovisioned"], "{report:#?}");
    Ok(())
}

/// Velero 1.17 and later leave VolumeSnapshots out of the tarball: at the site the backup was
/// taken, a live snapshot of a backed-up claim, taken before the backup started, must have its
/// replica in the backup, or verification fails with the reason the plan gives a snapshot in
/// the tarball without its replica.
async fn live_snapshots_at_the_source_need_their_replica(env: &BackupEnv) -> anyhow::Result<()> {
    let claims = Api::<PersistentVolumeClaim>::namespaced(env.client.clone(), "vms");
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "db-data", "namespace": "vms"},
        "spec": {"accessModes": ["ReadWriteMany"], "volumeName": "pv-data",
                 "resources": {"requests": {"storage": "10Gi"}}},
    }))?;
    let claim = claims.create(&PostParams::default(), &claim).await?;
    let claim_uid = claim.metadata.uid.clone().expect("uid");
    let snapshots = Api::<DynamicObject>::namespaced_with(
        env.client.clone(),
        "vms",
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "snapshot.storage.k8s.io",
            "v1",
            "VolumeSnapshot",
        )),
    );
    let snapshot: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "db-data-daily", "namespace": "vms"},
        "spec": {"source": {"persistentVolumeClaimName": "db-data"}},
    }))?;
    let snapshot = snapshots.create(&PostParams::default(), &snapshot).await?;
    let snapshot_uid = snapshot.metadata.uid.clone().expect("uid");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // The tarball as Velero 1.17 writes it, with the live claim's UID: this is its site.
    let objects = |replica_of: &str| {
        let mut objects: Vec<(&'static str, Value)> = fixture::healthy_vm_objects()
            .into_iter()
            .filter(|(r, _)| *r != "volumesnapshots.snapshot.storage.k8s.io")
            .collect();
        for (_, object) in &mut objects {
            if object["metadata"]["name"] == "db-data" {
                object["metadata"]["uid"] = json!(claim_uid);
            }
            if object["metadata"]["name"] == "db-data-snap-replica" {
                object["metadata"]["labels"][replicadr_core::wire::LABEL_REPLICA_OF_SNAPSHOT_UID] =
                    json!(replica_of);
            }
        }
        objects
    };
    backup_with(env, "live-no-replica", build(&objects("snap-uid-1"))?).await?;
    let report = verify(env, "live-no-replica").await?;
    assert_eq!(reasons(&report), ["ReplicaPvcMissing"], "{report:#?}");
    assert!(
        report.findings[0].message.starts_with(&format!(
            "VolumeSnapshot vms/db-data-daily: no replica PVC of this snapshot (uid {snapshot_uid}) is in the backup (the snapshot exists at the source site"
        )),
        "{report:#?}"
    );
    backup_with(env, "live-replica", build(&objects(&snapshot_uid))?).await?;
    let report = verify(env, "live-replica").await?;
    assert!(report.verified, "{report:#?}");

    snapshots
        .delete("db-data-daily", &kube::api::DeleteParams::default())
        .await?;
    Ok(())
}

#[tokio::test]
async fn the_live_scope_is_checked_only_at_the_site_that_made_the_backup() -> anyhow::Result<()> {
    let env = BackupEnv::start("velero").await?;
    // A PVC in scope that existed when the backup started but is not in it.
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "forgotten", "namespace": "vms"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))?;
    Api::<PersistentVolumeClaim>::namespaced(env.client.clone(), "vms")
        .create(&PostParams::default(), &pvc)
        .await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    backup_with(&env, "no-pvc", fixture::healthy_vm_backup()?).await?;
    let report = verify(&env, "no-pvc").await?;
    assert_eq!(reasons(&report), ["PvcMissing"], "{report:#?}");
    assert_eq!(report.live_scope, LiveScope::Checked);
    assert_eq!(report.site.as_deref(), Some("primary"));

    // The same backup verified at the DR site, whose PVCs are not its scope: the check is
    // skipped, and the report says why.
    env.put_local_site("dr").await?;
    let report = verify(&env, "no-pvc").await?;
    assert!(report.verified, "{report:#?}");
    assert_eq!(report.site.as_deref(), Some("primary"));
    let LiveScope::Skipped { note } = &report.live_scope else {
        panic!("the live scope is checked at dr: {report:#?}");
    };
    assert!(
        note.contains("made at site primary") && note.contains("this is site dr"),
        "{note}"
    );
    let json = serde_json::to_string_pretty(&report)?;
    assert!(json.contains("\"result\": \"Skipped\""), "{json}");
    Ok(())
}

#[tokio::test]
async fn a_live_cluster_that_cannot_be_read_fails_verification_for_a_retry_never_passes_it()
-> anyhow::Result<()> {
    let env = BackupEnv::start("velero").await?;
    backup_with(&env, "healthy", fixture::healthy_vm_backup()?).await?;
    assert!(verify(&env, "healthy").await?.verified);
    // The scheduler loses its cluster-wide right to list claims and snapshots.
    env.scheduler_client().await?;
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "replicadr-scheduler"},
        "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list"]}],
    });
    env.cluster.apply_yaml(&role.to_string()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let report = loop {
        let report = verify(&env, "healthy").await?;
        if !report.verified || tokio::time::Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        !report.verified,
        "verified without reading the live cluster: {report:#?}"
    );
    assert_eq!(reasons(&report), ["LiveClusterUnreadable"], "{report:#?}");
    assert!(report.is_transient(), "{report:#?}");
    let messages: Vec<&str> = report.findings.iter().map(|f| f.message.as_str()).collect();
    assert!(
        messages
            .iter()
            .any(|m| m
                .contains("cannot list the PersistentVolumeClaims in the backup's scope (vms)")),
        "{messages:?}"
    );
    Ok(())
}

#[tokio::test]
async fn storage_problems_are_named() -> anyhow::Result<()> {
    let mut env = BackupEnv::start("velero").await?;
    backup_with(&env, "b", fixture::healthy_vm_backup()?).await?;
    assert!(verify(&env, "b").await?.verified);

    env.put_credentials(
        "cloud-credentials",
        "cloud",
        "[default]\naws_access_key_id=replicadr-e2e\naws_secret_access_key=wrong\n",
    )
    .await?;
    let report = verify(&env, "b").await?;
    assert_eq!(reasons(&report), ["CredentialsRejected"], "{report:#?}");

    env.put_credentials(
        "cloud-credentials",
        "cloud",
        "[other]\naws_access_key_id=a\naws_secret_access_key=b\n",
    )
    .await?;
    let report = verify(&env, "b").await?;
    assert_eq!(reasons(&report), ["CredentialsMissing"], "{report:#?}");
    assert!(
        report.findings[0].message.contains("no [default] profile"),
        "{report:#?}"
    );

    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(env.client.clone(), &env.namespace)
        .delete("cloud-credentials", &kube::api::DeleteParams::default())
        .await?;
    let report = verify(&env, "b").await?;
    assert_eq!(reasons(&report), ["CredentialsMissing"], "{report:#?}");
    assert!(
        report.findings[0]
            .message
            .contains("cloud-credentials key cloud does not exist"),
        "{report:#?}"
    );
    env.put_credentials("cloud-credentials", "cloud", &env.s3.credentials_file())
        .await?;

    env.put_storage_location(
        "default",
        "no-such-bucket",
        Some(("cloud-credentials", "cloud")),
    )
    .await?;
    let report = verify(&env, "b").await?;
    assert_eq!(reasons(&report), ["BucketNotFound"], "{report:#?}");
    env.put_storage_location("default", BUCKET, Some(("cloud-credentials", "cloud")))
        .await?;

    env.backups()
        .patch(
            "b",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"storageLocation": "gone"}})),
        )
        .await?;
    let report = verify(&env, "b").await?;
    assert_eq!(reasons(&report), ["StorageLocationNotFound"], "{report:#?}");
    env.backups()
        .patch(
            "b",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"storageLocation": "default"}})),
        )
        .await?;

    // Object storage down: reported as transient, and the failure names the endpoint.
    env.s3.pause();
    let report = Verifier::new(env.client.clone(), &env.namespace)
        .verify("b", &SiteMapSource::default())
        .await?;
    assert_eq!(reasons(&report), ["ObjectStoreUnreachable"], "{report:#?}");
    assert!(report.is_transient());
    assert!(
        report.findings[0].message.contains("127.0.0.1"),
        "{report:#?}"
    );
    env.s3.resume().await?;
    assert!(verify(&env, "b").await?.verified);
    Ok(())
}

/// A fault: object storage stops in the middle of reading the tarball (not before it). The bytes
/// come through a link slow enough to stop it at a chosen point; storage stops and the link cuts
/// the download once 1 MiB of the tarball has arrived. The partial read is not judged as the
/// backup's fault (not `TarballTruncated`) and never passes: it is retried, the later attempts
/// cannot reach storage, and after the last one the backup is marked not verified with
/// `ObjectStoreUnreachable`. Nothing of the backup is deleted, and it verifies once storage is back.
#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn storage_stopping_mid_verification_is_retried_and_never_passes() -> anyhow::Result<()> {
    const MIB: u64 = 1024 * 1024;
    let mut env = BackupEnv::start("velero").await?;
    env.create_policy(
        "vms",
        json!({"schedule": "@hourly", "template": {"includedNamespaces": ["vms"]}}),
    )
    .await?;
    // A backup of over 2 MiB compressed: a ConfigMap of 4 MiB of random text beside the VM.
    let mut objects = fixture::healthy_vm_objects();
    objects.push((
        "configmaps",
        incompressible_config_map("vms", "blob", 4 * MIB),
    ));
    create_backup(&env, "big").await?;
    let (tarball, list) = build(&objects)?;
    assert!(tarball.len() as u64 > 2 * MIB, "{} bytes", tarball.len());
    let now = Timestamp::now();
    env.complete_backup("big", &tarball, &list, "Completed", now)
        .await?;
    let link = env.s3.behind_slow_link(MIB).await?;
    patch_storage_location(&env, json!({}), json!({"s3Url": link.endpoint()})).await?;

    let (service, clock, registry) = verifying_service(&env, now, 3);
    service
        .reconcile(&env.policies().get("vms").await?, clock.now())
        .await?;
    link.wait_forwarded(MIB, WAIT).await?;
    let started = std::time::Instant::now();
    env.s3.pause();
    link.cut();
    let first = env
        .wait_backup("big", WAIT, |b| {
            b.verification_attempts >= 1 || b.verified.is_some()
        })
        .await?;
    let cut_to_reported = started.elapsed();
    assert_eq!(
        first.verified, None,
        "not marked on a partial read: {first:?}"
    );
    assert_eq!(
        first.verification_reason.as_deref(),
        Some("ObjectStoreUnreachable"),
        "{first:?}"
    );
    let policy = env.policies().get("vms").await?;
    let condition = policy
        .status
        .as_ref()
        .and_then(|s| s.condition(condition::VERIFIED))
        .expect("a Verified condition");
    assert!(
        condition
            .message
            .contains("reading the tarball failed after")
            && condition.message.contains("will retry"),
        "{}",
        condition.message
    );
    let read = link.forwarded();
    assert!(
        read < tarball.len() as u64,
        "the first attempt read {read} of {} bytes",
        tarball.len()
    );

    // The later attempts find storage gone; the last one settles it.
    let deadline = tokio::time::Instant::now() + WAIT;
    let settled = loop {
        clock.set(clock.now() + Duration::from_mins(1));
        service
            .reconcile(&env.policies().get("vms").await?, clock.now())
            .await?;
        let view = velero::BackupView::from_object(&env.backups().get("big").await?);
        if view.verified.is_some() {
            break view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never settled: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(settled.verified, Some(false), "{settled:?}");
    assert_eq!(
        settled.verification_reason.as_deref(),
        Some("ObjectStoreUnreachable")
    );
    assert!(
        metrics::encode(&registry).contains(
            "replicadr_verification_failures_total{policy=\"vms\",reason=\"ObjectStoreUnreachable\"} 3"
        ),
        "three attempts counted:\n{}",
        metrics::encode(&registry)
    );

    // Nothing was deleted: the Backup and every file of it are still there, and verify.
    env.s3.resume().await?;
    assert_eq!(
        env.s3.get(BUCKET, &BackupEnv::key("big", "big.tar.gz"))?,
        tarball
    );
    assert!(env.backups().get_opt("big").await?.is_some());
    let report = verify(&env, "big").await?;
    assert!(report.verified, "{report:#?}");
    eprintln!(
        "fault figures: cut after {read} of {} bytes; reported {cut_to_reported:?} after the cut",
        tarball.len()
    );
    Ok(())
}

/// A ConfigMap of `size` bytes of pseudo-random text (64 letters, xorshift), which gzip cannot
/// shrink below three quarters.
fn incompressible_config_map(namespace: &str, name: &str, size: u64) -> Value {
    const LETTERS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let payload: String = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(LETTERS[usize::try_from(state % 64).expect("below 64")])
        })
        .collect();
    let mut object = objects::config_map(namespace, name, 0);
    object["data"]["payload"] = json!(payload);
    object
}

/// Merges `object_storage` into the default BSL's `spec.objectStorage` and `config` into its
/// `spec.config` (a null value removes a field).
async fn patch_storage_location(
    env: &BackupEnv,
    object_storage: Value,
    config: Value,
) -> anyhow::Result<()> {
    Api::<DynamicObject>::namespaced_with(
        env.client.clone(),
        &env.namespace,
        &velero::storage_location_resource(),
    )
    .patch(
        "default",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(
            json!({"spec": {"objectStorage": object_storage, "config": config}}),
        ),
    )
    .await?;
    Ok(())
}

/// The reason and message of the only finding of a report that did not verify.
fn only_finding(report: &Report) -> (&'static str, String) {
    assert!(!report.verified, "{report:#?}");
    assert_eq!(report.findings.len(), 1, "{report:#?}");
    (
        report.findings[0].reason.as_str(),
        report.findings[0].message.clone(),
    )
}

/// Creates or replaces Secret `s3-ca` with `pem` under key `ca.crt`.
async fn put_ca_secret(env: &BackupEnv, pem: &str) -> anyhow::Result<()> {
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "s3-ca", "namespace": env.namespace},
                        "stringData": {"ca.crt": pem}});
    env.cluster.apply_yaml(&secret.to_string()).await
}

/// s3s-fs behind a TLS front whose certificate a throwaway CA signed: the verifier trusts it only
/// with that CA from the BSL (inline `caCert` or a Secret named by `caCertRef`), and refuses
/// `insecureSkipTLSVerify` and a CA bundle it cannot load, naming where the bundle came from.
#[tokio::test]
async fn object_storage_over_tls_is_trusted_only_with_the_locations_ca() -> anyhow::Result<()> {
    let env = BackupEnv::start("velero").await?;
    backup_with(&env, "b", fixture::healthy_vm_backup()?).await?;
    let front = env.s3.serve_tls().await?;
    let other_ca = env.s3.serve_tls().await?.ca_cert().to_owned();
    patch_storage_location(&env, json!({}), json!({"s3Url": front.endpoint()})).await?;

    let report = verify(&env, "b").await?;
    let (reason, message) = only_finding(&report);
    assert_eq!(reason, "ObjectStoreUntrusted", "{message}");
    assert!(message.contains(&front.endpoint()), "{message}");
    assert!(message.contains("caCertRef"), "{message}");
    assert!(
        !report.is_transient(),
        "an untrusted certificate is not retried as an outage"
    );

    let inline = |pem: &str| json!({"caCert": k8s_openapi::ByteString(pem.as_bytes().to_vec())});
    patch_storage_location(&env, inline(&other_ca), json!({})).await?;
    let (reason, message) = only_finding(&verify(&env, "b").await?);
    assert_eq!(reason, "ObjectStoreUntrusted", "another CA: {message}");

    patch_storage_location(&env, inline(front.ca_cert()), json!({})).await?;
    let report = verify(&env, "b").await?;
    assert!(report.verified, "inline caCert: {report:#?}");

    put_ca_secret(&env, front.ca_cert()).await?;
    patch_storage_location(
        &env,
        json!({"caCert": null, "caCertRef": {"name": "s3-ca", "key": "ca.crt"}}),
        json!({}),
    )
    .await?;
    let report = verify(&env, "b").await?;
    assert!(report.verified, "caCertRef: {report:#?}");

    put_ca_secret(
        &env,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )
    .await?;
    let (reason, message) = only_finding(&verify(&env, "b").await?);
    assert_eq!(reason, "StorageLocationInvalid", "{message}");
    assert!(
        message.contains("Secret velero/s3-ca key ca.crt") && message.contains("trust anchor"),
        "{message}"
    );
    put_ca_secret(&env, "").await?;
    let (_, message) = only_finding(&verify(&env, "b").await?);
    assert!(message.contains("holds no certificate"), "{message}");

    put_ca_secret(&env, front.ca_cert()).await?;
    patch_storage_location(&env, json!({}), json!({"insecureSkipTLSVerify": "true"})).await?;
    let (reason, message) = only_finding(&verify(&env, "b").await?);
    assert_eq!(reason, "StorageLocationInvalid", "{message}");
    assert!(message.contains("insecureSkipTLSVerify"), "{message}");
    Ok(())
}

/// The scheduler service on a hand-moved clock starting at `now`, verifying with a short backoff
/// and at most `attempts` attempts per backup.
fn verifying_service(
    env: &BackupEnv,
    now: Timestamp,
    attempts: u32,
) -> (Arc<Service>, Arc<ManualClock>, metrics::Registry) {
    let clock = Arc::new(ManualClock::new(now));
    let (registry, metrics_set) = Metrics::new_registry();
    let publisher = Arc::new(Publisher::new(
        env.client.clone(),
        &env.namespace,
        "only",
        metrics_set,
    ));
    let mut config = ServiceConfig::new(&env.namespace);
    config.tick = Duration::from_millis(200);
    config.verify_backoff = Duration::from_millis(100);
    config.verify_attempts = attempts;
    let dyn_clock: Arc<dyn Clock> = Arc::clone(&clock) as Arc<dyn Clock>;
    let service = Arc::new(Service::new(
        env.client.clone(),
        config,
        dyn_clock,
        publisher,
    ));
    (service, clock, registry)
}

#[tokio::test]
async fn unreachable_storage_is_retried_then_verified_never_marked_before() -> anyhow::Result<()> {
    let mut env = BackupEnv::start("velero").await?;
    env.create_policy(
        "vms",
        json!({"schedule": "@hourly", "template": {"includedNamespaces": ["vms"]}}),
    )
    .await?;
    let now = Timestamp::now();
    let (service, clock, registry) = verifying_service(&env, now, 50);

    create_backup(&env, "vms-manual-1").await?;
    let (tarball, list) = fixture::healthy_vm_backup()?;
    env.complete_backup("vms-manual-1", &tarball, &list, "Completed", now)
        .await?;
    env.s3.pause();
    let p = env.policies().get("vms").await?;
    service.reconcile(&p, clock.now()).await?;
    let first = env
        .wait_backup("vms-manual-1", WAIT, |b| b.verification_attempts >= 1)
        .await?;
    assert_eq!(
        first.verified, None,
        "not marked while storage is unreachable: {first:?}"
    );
    assert_eq!(
        first.verification_reason.as_deref(),
        Some("ObjectStoreUnreachable")
    );
    let p = env
        .wait_policy("vms", WAIT, |p| {
            p.status
                .as_ref()
                .and_then(|s| s.condition(condition::VERIFIED))
                .is_some()
        })
        .await?;
    let verified = p
        .status
        .as_ref()
        .and_then(|s| s.condition(condition::VERIFIED))
        .expect("condition");
    assert_eq!(
        (verified.status.as_str(), verified.reason.as_str()),
        ("False", "ObjectStoreUnreachable")
    );
    assert!(
        verified.message.contains("will retry"),
        "{}",
        verified.message
    );

    // Retried on later passes; once storage is back, verified.
    clock.set(now + Duration::from_secs(5));
    let p = env.policies().get("vms").await?;
    service.reconcile(&p, clock.now()).await?;
    env.s3.resume().await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    let done = loop {
        clock.set(clock.now() + Duration::from_mins(1));
        let p = env.policies().get("vms").await?;
        service.reconcile(&p, clock.now()).await?;
        let view = velero::BackupView::from_object(&env.backups().get("vms-manual-1").await?);
        if view.verified.is_some() {
            break view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never verified: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(done.verified, Some(true), "{done:?}");
    assert!(done.verification_attempts >= 1);
    let text = metrics::encode(&registry);
    assert!(
        text.contains("replicadr_verification_failures_total{policy=\"vms\",reason=\"ObjectStoreUnreachable\"}"),
        "{text}"
    );
    assert_eq!(
        env.backup_views()
            .await?
            .iter()
            .filter(|b| b.class == PhaseClass::Succeeded)
            .count(),
        1
    );
    Ok(())
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn gc_lists_orphaned_replica_pvcs_and_deletes_only_them_with_apply() -> anyhow::Result<()> {
    let env = BackupEnv::start("velero").await?;
    let snapshots: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        "vms",
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "snapshot.storage.k8s.io",
            "v1",
            "VolumeSnapshot",
        )),
    );
    let live: DynamicObject = serde_json::from_value(objects::volume_snapshot(
        "vms", "live", "ignored", "db-data",
    ))?;
    let live = snapshots.create(&PostParams::default(), &live).await?;
    let live_uid = live.metadata.uid.clone().expect("uid");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), "vms");
    // The orphan's PV has reclaim policy Delete: gc must set it to Retain before the claim goes.
    let volumes: Api<PersistentVolume> = Api::all(env.client.clone());
    let orphan_pv = objects::nfs_pv(
        "pv-orphan",
        "nfs-a.example.com",
        "/exports/vms/orphan",
        "Delete",
    );
    volumes
        .create(&PostParams::default(), &serde_json::from_value(orphan_pv)?)
        .await?;
    for (name, uid, managed) in [
        ("kept", live_uid.as_str(), true),
        ("orphan", "gone-uid", true),
        ("foreign", "gone-uid", false),
        ("restored", "gone-uid", true),
    ] {
        let mut pvc = objects::replica_pvc("vms", name, "", uid);
        if !managed {
            pvc["metadata"]["labels"][velero::LABEL_MANAGED_BY] = json!("someone-else");
        }
        if name == "restored" {
            // A replica made at the other site and restored here: its snapshot is not here by design.
            pvc["metadata"]["labels"][velero::LABEL_RESTORE_NAME] = json!("failover-1");
        }
        if name == "orphan" {
            pvc["spec"]["volumeName"] = json!("pv-orphan");
        } else {
            pvc["spec"]
                .as_object_mut()
                .expect("spec")
                .remove("volumeName");
        }
        pvc.as_object_mut().expect("pvc").remove("status");
        let pvc: PersistentVolumeClaim = serde_json::from_value(pvc)?;
        pvcs.create(&PostParams::default(), &pvc).await?;
    }
    let orphans = gc::gc(&env.client, false).await?;
    let text = render::gc(&orphans);
    assert_eq!(
        orphans
            .iter()
            .map(|o| (o.name.as_str(), &o.action))
            .collect::<Vec<_>>(),
        [
            ("orphan", &GcAction::WouldDelete),
            (
                "restored",
                &GcAction::SkippedRestored("failover-1".to_owned())
            )
        ],
        "{text}"
    );
    assert!(text.contains("would delete"), "{text}");
    assert!(
        pvcs.get_opt("orphan").await?.is_some(),
        "dry run deletes nothing"
    );
    let orphans = gc::gc(&env.client, true).await?;
    let text = render::gc(&orphans);
    assert_eq!(
        orphans.iter().map(|o| &o.action).collect::<Vec<_>>(),
        [
            &GcAction::Deleted,
            &GcAction::SkippedRestored("failover-1".to_owned())
        ],
        "{text}"
    );
    let retained = volumes.get("pv-orphan").await?;
    assert_eq!(
        retained
            .spec
            .and_then(|s| s.persistent_volume_reclaim_policy)
            .as_deref(),
        Some("Retain"),
        "the orphan's PV is set to Retain before its claim is deleted"
    );
    assert!(
        pvcs.get("restored")
            .await?
            .metadata
            .deletion_timestamp
            .is_none(),
        "a restored replica is never deleted"
    );
    // No finalizer-running controller here: the delete is accepted; the object is gone or going.
    let orphan = pvcs.get_opt("orphan").await?;
    assert!(
        orphan.is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
        "orphan deleted"
    );
    assert!(
        pvcs.get("kept")
            .await?
            .metadata
            .deletion_timestamp
            .is_none()
    );
    assert!(
        pvcs.get("foreign")
            .await?
            .metadata
            .deletion_timestamp
            .is_none()
    );
    Ok(())
}
