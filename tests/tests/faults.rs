//! Faults a DR day brings, each survived end to end with nothing duplicated or lost, against a
//! real kube-apiserver + etcd and s3s-fs:
//! - the leading scheduler replica (the real `replicadr scheduler` binary) is killed mid-slot
//!   while a second replica runs: the second takes the Lease, leaves the slot's running Backup
//!   alone, and once Velero finishes it verifies and publishes it; the slot has exactly one Backup;
//! - the real Velero server is killed while it writes a backup: restarted, it marks the backup
//!   Failed, and the scheduler retries it within its slot; the retry completes and verifies.
//!
//! Each test prints its figures (`fault figure: …`). Build the binaries first:
//! `cargo build --workspace --bins`; the Velero test needs `hack/build-velero-peers.sh`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use replicadr_e2e::backup_env::BackupEnv;
use replicadr_e2e::scheduler_process::SchedulerProcess;
use replicadr_lab::fixture;
use replicadr_scheduler::clock::{Clock, ManualClock};
use replicadr_scheduler::leader::LEASE_NAME;
use replicadr_scheduler::metrics::Metrics;
use replicadr_scheduler::publish::Publisher;
use replicadr_scheduler::schedule::slot_backup_name;
use replicadr_scheduler::service::{PolicyOutcome, Service, ServiceConfig};
use replicadr_scheduler::velero::{BackupView, PhaseClass};
use serde_json::json;

const NAMESPACE: &str = "velero";

/// The holder of the scheduler's leader Lease, if any.
async fn lease_holder(env: &BackupEnv) -> anyhow::Result<Option<String>> {
    Ok(Api::<Lease>::namespaced(env.client.clone(), NAMESPACE)
        .get_opt(LEASE_NAME)
        .await?
        .and_then(|lease| lease.spec?.holder_identity))
}

/// Waits up to `timeout` for `check` to give a value, polling every 100 ms.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        ensure!(Instant::now() < deadline, "{what} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_leader_killed_mid_slot_hands_the_slot_to_the_other_replica() -> anyhow::Result<()> {
    let env = BackupEnv::start(NAMESPACE).await?;
    env.create_policy(
        "vms",
        json!({"schedule": "@every 1m", "template": {"includedNamespaces": ["vms"]}}),
    )
    .await?;
    let mut replicas = [
        SchedulerProcess::start(&env, "replica-a", 5)?,
        SchedulerProcess::start(&env, "replica-b", 5)?,
    ];
    let context = |replicas: &[SchedulerProcess]| {
        replicas
            .iter()
            .map(|r| format!("{}:\n{}", r.identity, r.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    };

    // The slot comes (real time: within a minute) and the leader creates its Backup, which the
    // test, playing Velero, leaves running.
    let at = &env;
    let backup = eventually(
        "a backup of the slot",
        Duration::from_secs(90),
        move || async move { Ok(at.backup_views().await?.into_iter().next()) },
    )
    .await
    .map_err(|e| e.context(context(&replicas)))?;
    let leader = lease_holder(&env).await?.unwrap_or_default();
    let (killed, survivor) = if leader == replicas[0].identity {
        (0, 1)
    } else {
        (1, 0)
    };
    ensure!(
        leader == replicas[killed].identity,
        "the Lease names {leader:?}, neither replica"
    );
    replicas[killed].kill();
    let killed_at = Instant::now();

    let survivor_name = replicas[survivor].identity.clone();
    let wanted = Some(survivor_name.clone());
    eventually(
        "the other replica takes the Lease",
        Duration::from_secs(30),
        || {
            let wanted = wanted.clone();
            async move { Ok((lease_holder(at).await? == wanted).then_some(())) }
        },
    )
    .await
    .map_err(|e| e.context(context(&replicas)))?;
    let took_over = killed_at.elapsed();

    // The new leader finds the slot's Backup still running: over a few of its ticks (1 s) it
    // makes neither a second one nor a retry.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        env.backup_names().await?,
        std::slice::from_ref(&backup.name),
        "the new leader left the running backup alone"
    );
    // Then Velero finishes it.
    let (tarball, list) = fixture::healthy_vm_backup()?;
    env.complete_backup(&backup.name, &tarball, &list, "Completed", Timestamp::now())
        .await?;
    let verified = eventually(
        "the slot's backup verified and published",
        Duration::from_mins(1),
        || {
            let name = backup.name.clone();
            async move {
                let status = at.policies().get("vms").await?.status.unwrap_or_default();
                Ok((status.last_verified_backup == Some(name)).then_some(()))
            }
        },
    )
    .await
    .map_err(|e| e.context(context(&replicas)));
    verified?;
    let finished = killed_at.elapsed();

    let of_the_slot: Vec<BackupView> = env
        .backup_views()
        .await?
        .into_iter()
        .filter(|b| b.slot == backup.slot)
        .collect();
    assert_eq!(
        of_the_slot
            .iter()
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>(),
        [backup.name.as_str()],
        "exactly one Backup for slot {:?}",
        backup.slot
    );
    assert_eq!(of_the_slot[0].verified, Some(true), "{:?}", of_the_slot[0]);
    eprintln!(
        "fault figure: leader {leader} killed; {survivor_name} held the Lease after {took_over:?} \
         and had verified and published {} after {finished:?}",
        backup.name
    );
    Ok(())
}

/// ConfigMaps the namespace gets, so that Velero is still writing the backup when it is killed.
const FILLER: usize = 1500;

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn velero_killed_mid_backup_fails_it_on_restart_and_the_slot_is_retried() -> anyhow::Result<()>
{
    let env = BackupEnv::start(NAMESPACE).await?;
    let config_maps = Api::<ConfigMap>::namespaced(env.client.clone(), "vms");
    let mut creating = tokio::task::JoinSet::new();
    for chunk in 0..10 {
        let config_maps = config_maps.clone();
        creating.spawn(async move {
            for i in (chunk..FILLER).step_by(10) {
                let object = serde_json::from_value(fixture::objects::config_map(
                    "vms",
                    &format!("filler-{i:04}"),
                    64,
                ))?;
                let mut object: ConfigMap = object;
                object.metadata.uid = None;
                config_maps.create(&PostParams::default(), &object).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = creating.join_next().await {
        done??;
    }
    env.create_policy(
        "vms",
        json!({"schedule": "@hourly", "retries": {"limit": 1, "backoff": "1m"},
               "template": {"includedNamespaces": ["vms"]}}),
    )
    .await?;
    let mut velero = env.start_velero().await?;
    let now = Timestamp::now();
    let slot = Timestamp::from_second(now.as_second() - now.as_second().rem_euclid(3600) + 3600)?;
    let clock = Arc::new(ManualClock::new(slot + Duration::from_secs(1)));
    let (_, metrics) = Metrics::new_registry();
    let publisher = Arc::new(Publisher::new(
        env.client.clone(),
        NAMESPACE,
        "e2e",
        metrics,
    ));
    let mut config = ServiceConfig::new(NAMESPACE);
    config.verify_backoff = Duration::from_millis(200);
    let service = Service::new(
        env.client.clone(),
        config,
        Arc::clone(&clock) as Arc<dyn Clock>,
        publisher,
    );
    let name = slot_backup_name("vms", slot);
    assert_eq!(
        service
            .reconcile(&env.policies().get("vms").await?, clock.now())
            .await?
            .0,
        PolicyOutcome::Created {
            backup: name.clone()
        }
    );

    // Killed as soon as the backup is being written.
    let created = Instant::now();
    loop {
        let view = env
            .wait_backup(&name, Duration::from_secs(5), |_| true)
            .await?;
        match view.phase.as_deref() {
            Some("InProgress") => break,
            // Velero 1.17 and later queue a backup before they start it.
            None | Some("New" | "Queued" | "ReadyToStart") => {}
            other => bail!(
                "backup {name} reached {other:?} before Velero could be killed: make it bigger\n{}",
                velero.log_tail()
            ),
        }
        ensure!(
            created.elapsed() < Duration::from_mins(1),
            "Velero never started backup {name}:\n{}",
            velero.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    velero.kill();
    let killed_at = Instant::now();
    let in_progress_for = created.elapsed();

    // Restarted, Velero fails what it had been writing.
    let mut velero = env.start_velero().await?;
    let failed = env
        .wait_backup(&name, Duration::from_mins(1), |b| {
            b.class != PhaseClass::Running
        })
        .await?;
    let failed_after = killed_at.elapsed();
    assert_eq!(failed.phase.as_deref(), Some("Failed"), "{failed:?}");

    // The scheduler sees the failure and, once the backoff has passed, retries within the slot.
    let retry = format!("{name}-r1");
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let (outcome, _) = service
            .reconcile(&env.policies().get("vms").await?, clock.now())
            .await?;
        if outcome
            == (PolicyOutcome::Created {
                backup: retry.clone(),
            })
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no retry of {name} within a minute; last outcome {outcome:?}"
        );
        clock.set(clock.now() + Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let completed = env
        .wait_backup(&retry, Duration::from_mins(3), |b| {
            b.class != PhaseClass::Running
        })
        .await?;
    assert_eq!(
        completed.phase.as_deref(),
        Some("Completed"),
        "{completed:?}\n{}",
        velero.errors()
    );
    let deadline = Instant::now() + Duration::from_mins(1);
    let verified = loop {
        service
            .reconcile(&env.policies().get("vms").await?, clock.now())
            .await?;
        let view = env
            .wait_backup(&retry, Duration::from_secs(5), |_| true)
            .await?;
        if view.verified.is_some() {
            break view;
        }
        ensure!(
            Instant::now() < deadline,
            "{retry} never verified: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(verified.verified, Some(true), "{verified:?}");

    assert_eq!(
        env.backup_names().await?,
        [name.clone(), retry.clone()],
        "nothing duplicated"
    );
    if let Some(status) = velero.exited() {
        bail!("velero exited ({status}):\n{}", velero.log_tail());
    }
    eprintln!(
        "fault figure: Velero killed {in_progress_for:?} into backup {name} ({FILLER} filler items); \
         restarted, it marked it Failed ({}) after {failed_after:?}; retry {retry} completed and verified",
        failed.failure_reason.unwrap_or_default()
    );
    Ok(())
}
