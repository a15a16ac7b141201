//! End to end with the real Velero server (run out of cluster with velero-plugin-for-aws and the
//! project's plugins): the scheduler creates a slot's Backup, Velero writes it to the real S3
//! server, and the verifier passes it from object storage. Then a policy that follows a user's
//! Velero Schedule: refused while the Schedule lacks what its backups need, then creating nothing
//! and verifying the backup Velero makes from the Schedule. Needs `hack/build-velero-peers.sh`
//! and `cargo build -p replicadr-velero-plugins`.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DynamicObject, PostParams};
use replicadr_e2e::backup_env::{BUCKET, BackupEnv};
use replicadr_e2e::velero::{self as velero_peer, VeleroServer};
use replicadr_lab::fixture::objects;
use replicadr_scheduler::clock::{Clock, ManualClock};
use replicadr_scheduler::metrics::Metrics;
use replicadr_scheduler::publish::Publisher;
use replicadr_scheduler::schedule::slot_backup_name;
use replicadr_scheduler::service::{PolicyOutcome, Service, ServiceConfig};
use replicadr_scheduler::velero::PhaseClass;
use replicadr_scheduler::verify::{SiteMapSource, Verifier};
use serde_json::json;

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn velero_backs_up_what_the_scheduler_asks_and_the_verifier_passes_it() -> anyhow::Result<()>
{
    let env = BackupEnv::start("velero").await?;
    // A VM's disk: a PVC bound to an NFS PV the site map covers (Retain, as the backup plugin or the
    // operator makes it).
    let pv: PersistentVolume = serde_json::from_value(objects::nfs_pv(
        "pv-db",
        "nfs-a.example.com",
        "/exports/vms/db",
        "Retain",
    ))?;
    Api::<PersistentVolume>::all(env.client.clone())
        .create(&PostParams::default(), &pv)
        .await?;
    let mut pvc = objects::pvc("vms", "db-root", "pv-db");
    pvc.as_object_mut().expect("object").remove("status");
    let pvc: PersistentVolumeClaim = serde_json::from_value(pvc)?;
    let claims = Api::<PersistentVolumeClaim>::namespaced(env.client.clone(), "vms");
    claims.create(&PostParams::default(), &pvc).await?;
    // Plays the PV controller: Velero's PVC action brings the PV along only for a Bound claim.
    claims
        .patch_status(
            "db-root",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"phase": "Bound"}})),
        )
        .await?;
    let vm: DynamicObject = serde_json::from_value(objects::vm("vms", "db", &["db-root"]))?;
    Api::<DynamicObject>::namespaced_with(
        env.client.clone(),
        "vms",
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "kubevirt.io",
            "v1",
            "VirtualMachine",
        )),
    )
    .create(&PostParams::default(), &vm)
    .await?;

    // Until Velero has validated the location, the scheduler waits instead of creating a backup
    // Velero would fail as FailedValidation.
    env.set_storage_location_phase("default", "Unavailable")
        .await?;
    env.create_policy(
        "vms",
        json!({"schedule": "@hourly", "template": {"includedNamespaces": ["vms"], "ttl": "24h"}}),
    )
    .await?;
    let now = Timestamp::now();
    let slot = Timestamp::from_second(now.as_second() - now.as_second().rem_euclid(3600) + 3600)?;
    let clock = Arc::new(ManualClock::new(slot + Duration::from_secs(1)));
    // Everything the scheduler does here, it does with the shipped RBAC and nothing more.
    let scheduler = env.scheduler_client().await?;
    let (_, metrics) = Metrics::new_registry();
    let publisher = Arc::new(Publisher::new(scheduler.clone(), "velero", "e2e", metrics));
    let dyn_clock: Arc<dyn Clock> = Arc::clone(&clock) as Arc<dyn Clock>;
    let service = Service::new(
        scheduler.clone(),
        ServiceConfig::new("velero"),
        dyn_clock,
        Arc::clone(&publisher),
    );
    let policy = env.policies().get("vms").await?;
    assert_eq!(
        service.reconcile(&policy, clock.now()).await?.0,
        PolicyOutcome::Invalid {
            reason: "StorageLocationUnavailable".into()
        }
    );

    let mut velero = env.start_velero().await?;

    let policy = env.policies().get("vms").await?;
    let name = slot_backup_name("vms", slot);
    assert_eq!(
        service.reconcile(&policy, clock.now()).await?.0,
        PolicyOutcome::Created {
            backup: name.clone()
        }
    );

    let finished = tokio::time::timeout(Duration::from_mins(3), async {
        loop {
            if let Some(status) = velero.exited() {
                anyhow::bail!("velero exited ({status}):\n{}", velero.log_tail());
            }
            let view = env
                .wait_backup(&name, Duration::from_secs(5), |_| true)
                .await?;
            if view.class != PhaseClass::Running {
                return Ok(view);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "velero did not finish the backup in 180s:\n{}",
            velero.log_tail()
        )
    })??;
    assert_eq!(
        finished.phase.as_deref(),
        Some("Completed"),
        "{finished:?}\n{}",
        velero.errors()
    );
    assert!(
        env.s3
            .object_path(BUCKET, &BackupEnv::key(&name, &format!("{name}.tar.gz")))
            .is_file()
    );

    let report = Verifier::new(scheduler.clone(), "velero")
        .verify(&name, &SiteMapSource::default())
        .await?;
    assert!(report.verified, "{report:#?}");
    // The result is published with the same rights: the Backup's annotations, the policy's
    // status and an Event (whose failure is only logged, so it is looked up).
    publisher
        .verification(Some(&policy), &finished, &report, Timestamp::now(), true)
        .await?;
    let view = env
        .wait_backup(&name, Duration::from_secs(5), |_| true)
        .await?;
    assert_eq!(view.verified, Some(true), "{view:?}");
    let status = env.policies().get("vms").await?.status.unwrap_or_default();
    assert_eq!(
        status.last_verified_backup.as_deref(),
        Some(name.as_str()),
        "{status:?}"
    );
    let events =
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(env.client.clone(), "velero")
            .list(&kube::api::ListParams::default())
            .await?;
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("BackupVerified")),
        "no BackupVerified Event: {:?}",
        events.items.iter().map(|e| &e.reason).collect::<Vec<_>>()
    );

    // What the scheduler's RBAC must not allow: deleting Backups or PVCs.
    let forbidden = |result: Result<_, kube::Error>, what: &str| match result {
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(()),
        other => Err(anyhow::anyhow!(
            "the scheduler's ServiceAccount could {what}: {other:?}"
        )),
    };
    forbidden(
        Api::<DynamicObject>::namespaced_with(
            scheduler.clone(),
            "velero",
            &replicadr_scheduler::velero::backup_resource(),
        )
        .delete(&name, &kube::api::DeleteParams::default())
        .await
        .map(|_| ()),
        "delete a Backup",
    )?;
    forbidden(
        Api::<PersistentVolumeClaim>::namespaced(scheduler.clone(), "vms")
            .delete("db-root", &kube::api::DeleteParams::default())
            .await
            .map(|_| ()),
        "delete a PVC",
    )?;
    assert!(
        report.stats.persistent_volume_claims >= 1 && report.stats.nfs_persistent_volumes >= 1,
        "{report:#?}"
    );
    assert_eq!(report.stats.virtual_machines, 1, "{report:#?}");
    Box::pin(follows_a_velero_schedule(
        &env, &service, &clock, &velero, &scheduler, &publisher,
    ))
    .await
}

/// A policy with `spec.veleroSchedule`, against the real Velero's Schedule and the backup its
/// `backup create --from-schedule` makes (the same builder its schedule controller uses).
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn follows_a_velero_schedule(
    env: &BackupEnv,
    service: &Service,
    clock: &ManualClock,
    velero: &VeleroServer,
    scheduler: &kube::Client,
    publisher: &Publisher,
) -> anyhow::Result<()> {
    // Reconciled at a time the policy's own cron is due (02:00 UTC, after the policy exists):
    // a policy that made its own backups would create one then.
    let now = clock.now().as_second();
    let due = Timestamp::from_second(now - now.rem_euclid(86_400) + 86_400 + 2 * 3600 + 1)?;
    let velero_schedules: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        "velero",
        &replicadr_scheduler::velero::schedule_resource(),
    );
    // As many OADP users have it: a nightly Schedule with no snapshots, but neither the labels
    // ReplicaDR needs nor the data-mover switch set.
    let schedule: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "velero.io/v1",
        "kind": "Schedule",
        "metadata": {"name": "nightly", "namespace": "velero"},
        "spec": {
            "schedule": "0 2 * * *",
            "skipImmediately": true,
            "template": {
                "includedNamespaces": ["vms"],
                "snapshotVolumes": false,
                "defaultVolumesToFsBackup": false,
                "ttl": "24h0m0s",
            },
        },
    }))?;
    velero_schedules
        .create(&PostParams::default(), &schedule)
        .await?;
    env.create_policy(
        "nightly-vms",
        json!({"schedule": "0 2 * * *", "veleroSchedule": "nightly"}),
    )
    .await?;
    let ready = |policy: &replicadr_scheduler::policy::BackupPolicy| {
        policy
            .status
            .as_ref()
            .and_then(|s| s.condition(replicadr_scheduler::policy::condition::READY))
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
            .unwrap_or_default()
    };
    let policy = env.policies().get("nightly-vms").await?;
    assert_eq!(
        service.reconcile(&policy, due).await?.0,
        PolicyOutcome::Invalid {
            reason: "VeleroScheduleIncomplete".into()
        }
    );
    let (status, _, message) = ready(&env.policies().get("nightly-vms").await?);
    assert_eq!(status, "False");
    for lack in [
        "Velero Schedule velero/nightly (spec.veleroSchedule)",
        "spec.template.snapshotMoveData is unset",
        "its backups get no label replicadr.io/policy (metadata.labels (the template sets no labels)); set replicadr.io/policy: \"nightly-vms\"",
        "no label replicadr.io/site",
        "no label velero.kubevirt.io/metadataBackup",
    ] {
        assert!(message.contains(lack), "{lack:?} not in {message}");
    }

    // Completed as the condition says: the policy then creates nothing and says where its
    // backups come from.
    velero_schedules
        .patch(
            "nightly",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"template": {
                "snapshotMoveData": false,
                "metadata": {"labels": {
                    "replicadr.io/policy": "nightly-vms",
                    "replicadr.io/site": "primary",
                    "velero.kubevirt.io/metadataBackup": "true",
                }},
            }}})),
        )
        .await?;
    let policy = env.policies().get("nightly-vms").await?;
    assert_eq!(
        service.reconcile(&policy, due).await?.0,
        PolicyOutcome::Following {
            schedule: "nightly".into()
        }
    );
    let (status, reason, message) = ready(&env.policies().get("nightly-vms").await?);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "FollowingVeleroSchedule"),
        "{message}"
    );
    let of_policy = || async {
        anyhow::Ok(
            env.backup_views()
                .await?
                .into_iter()
                .filter(|b| b.policy.as_deref() == Some("nightly-vms"))
                .map(|b| b.name)
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        of_policy().await?,
        Vec::<String>::new(),
        "the policy created a backup"
    );
    // `backup now` makes none either, and says how to make one.
    let refused = replicadr_scheduler::manual::backup_now(
        scheduler,
        "velero",
        "nightly-vms",
        Arc::new(ManualClock::new(clock.now())),
        publisher,
        Duration::from_millis(200),
        |_| {},
    )
    .await
    .expect_err("backup now of a policy that follows a Velero Schedule");
    assert!(
        refused
            .to_string()
            .contains("velero backup create --from-schedule nightly"),
        "{refused}"
    );
    assert_eq!(of_policy().await?, Vec::<String>::new());

    // Velero makes a backup of the Schedule with the real client's builder; the policy verifies
    // and publishes it as its own.
    let output = std::process::Command::new(velero_peer::velero_binary()?)
        .args([
            "backup",
            "create",
            "nightly-manual",
            "--from-schedule",
            "nightly",
            "--namespace",
            "velero",
        ])
        .env("KUBECONFIG", env.cluster.kubeconfig_path())
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "velero backup create --from-schedule: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let made = env
        .wait_backup("nightly-manual", Duration::from_mins(3), |b| {
            b.class != PhaseClass::Running
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", velero.log_tail()))?;
    assert_eq!(made.phase.as_deref(), Some("Completed"), "{made:?}");
    assert_eq!(
        (made.policy.as_deref(), made.site.as_deref()),
        (Some("nightly-vms"), Some("primary"))
    );
    let deadline = tokio::time::Instant::now() + Duration::from_mins(1);
    let status = loop {
        let policy = env.policies().get("nightly-vms").await?;
        let status = policy.status.clone().unwrap_or_default();
        if status.last_verified_backup.as_deref() == Some("nightly-manual") {
            break status;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the Schedule's backup was not verified and published: {status:?}"
        );
        service.reconcile(&policy, due).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        status.last_backup.as_deref(),
        Some("nightly-manual"),
        "{status:?}"
    );
    let view = env
        .wait_backup("nightly-manual", Duration::from_secs(5), |_| true)
        .await?;
    assert_eq!(view.verified, Some(true), "{view:?}");
    assert_eq!(of_policy().await?, vec!["nightly-manual".to_owned()]);
    Ok(())
}
