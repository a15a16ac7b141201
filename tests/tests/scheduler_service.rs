//! The scheduler service against a real kube-apiserver with Velero's CRDs and a real S3 server.
//! The tests play Velero (they write Backup status and upload the files), and drive time with a
//! hand-moved clock, so slots come when the test says.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use replicadr_e2e::backup_env::{BUCKET, BackupEnv};
use replicadr_lab::fixture;
use replicadr_scheduler::active_site::Takeover;
use replicadr_scheduler::clock::{Clock, ManualClock};
use replicadr_scheduler::leader::Election;
use replicadr_scheduler::metrics::{self, Metrics, Registry};
use replicadr_scheduler::policy::{BackupPolicy, ValidPolicy, condition};
use replicadr_scheduler::publish::Publisher;
use replicadr_scheduler::schedule::slot_backup_name;
use replicadr_scheduler::service::{PolicyOutcome, Service, ServiceConfig};
use replicadr_scheduler::velero::{self, BackupRequest, PhaseClass};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

/// The top of the next hour after (real) now: later than any policy's creation time.
fn next_hour() -> Timestamp {
    let now = Timestamp::now().as_second();
    Timestamp::from_second(now - now.rem_euclid(3600) + 3600).expect("valid")
}

fn service(env: &BackupEnv, clock: &Arc<ManualClock>, instance: &str) -> (Arc<Service>, Registry) {
    let (registry, metrics) = Metrics::new_registry();
    let publisher = Arc::new(Publisher::new(
        env.client.clone(),
        &env.namespace,
        instance,
        metrics,
    ));
    let mut config = ServiceConfig::new(&env.namespace);
    config.tick = Duration::from_millis(300);
    config.verify_backoff = Duration::from_millis(200);
    let clock: Arc<dyn Clock> = Arc::clone(clock) as Arc<dyn Clock>;
    (
        Arc::new(Service::new(env.client.clone(), config, clock, publisher)),
        registry,
    )
}

async fn wait_for_metric(registry: &Registry, needle: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = metrics::encode(registry);
        if text.contains(needle) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("{needle} not in\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until no line of the metrics holds `needle`.
async fn wait_for_no_metric(registry: &Registry, needle: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = metrics::encode(registry);
        if !text.contains(needle) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("{needle} still in\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Backup of policy `vms` made at `site`, in `phase`: at another site, what Velero's sync
/// brings from the shared bucket.
async fn backup_from(
    env: &BackupEnv,
    site: &str,
    name: &str,
    slot: Option<Timestamp>,
    phase: &str,
) -> anyhow::Result<()> {
    let valid = ValidPolicy::from_policy(&policy(env, "vms").await?)?;
    let object = velero::build_backup(&BackupRequest {
        policy: &valid,
        site,
        name: name.to_owned(),
        slot: slot.map(|s| s.to_string()),
        attempt: 0,
    });
    env.backups()
        .create(&kube::api::PostParams::default(), &object)
        .await?;
    let started = slot.unwrap_or_else(Timestamp::now);
    if phase == "Completed" {
        let (tarball, list) = fixture::healthy_vm_backup()?;
        env.complete_backup(name, &tarball, &list, phase, started)
            .await
    } else {
        env.set_phase(name, phase, Some(started)).await
    }
}

/// Runs the controller as leader for `period`, then stops it.
async fn run_for(service: &Arc<Service>, period: Duration) -> anyhow::Result<()> {
    let (_leader, leader) = watch::channel(true);
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn(Arc::clone(service).run(leader, shutdown.clone()));
    tokio::time::sleep(period).await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, runner).await??;
    Ok(())
}

async fn policy(env: &BackupEnv, name: &str) -> anyhow::Result<BackupPolicy> {
    Ok(env.policies().get(name).await?)
}

fn condition_of(policy: &BackupPolicy, type_: &str) -> Option<(String, String, String)> {
    policy
        .status
        .as_ref()?
        .condition(type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn a_slot_makes_one_backup_across_restarts_and_its_watch_resumes() -> anyhow::Result<()> {
    let env = BackupEnv::start("velero").await?;
    env.create_policy(
        "vms",
        json!({"schedule": "@hourly", "template": {"includedNamespaces": ["vms"], "ttl": "72h"}}),
    )
    .await?;
    let slot = next_hour();
    let clock = Arc::new(ManualClock::new(slot - Duration::from_secs(30)));

    let (first, _) = service(&env, &clock, "first");
    let p = policy(&env, "vms").await?;
    let (outcome, wake) = first.reconcile(&p, clock.now()).await?;
    assert_eq!(outcome, PolicyOutcome::Waiting);
    assert_eq!(wake, Some(slot), "wakes at the slot (no jitter)");
    assert!(env.backup_views().await?.is_empty());
    let ready = condition_of(&policy(&env, "vms").await?, condition::READY).expect("ready");
    assert_eq!(
        (ready.0.as_str(), ready.1.as_str()),
        ("True", "Scheduled"),
        "{ready:?}"
    );

    clock.set(slot + Duration::from_secs(5));
    let p = policy(&env, "vms").await?;
    let name = slot_backup_name("vms", slot);
    assert_eq!(
        first.reconcile(&p, clock.now()).await?.0,
        PolicyOutcome::Created {
            backup: name.clone()
        }
    );
    let backups = env.backup_views().await?;
    assert_eq!(backups.len(), 1);
    assert_eq!(backups[0].name, name);
    assert_eq!(backups[0].policy.as_deref(), Some("vms"));
    let status = policy(&env, "vms").await?.status.expect("status");
    assert_eq!(status.last_schedule_time, Some(slot.to_string()));
    assert_eq!(status.last_backup.as_deref(), Some(name.as_str()));
    let object = env.backups().get(&name).await?;
    assert_eq!(object.data["spec"]["snapshotVolumes"], false);
    assert_eq!(object.data["spec"]["ttl"], "72h0m0s");
    let labels = object.metadata.labels.as_ref().expect("labels");
    assert_eq!(labels[velero::LABEL_SCHEDULE_NAME], "vms");
    assert_eq!(
        labels[velero::LABEL_SITE],
        "primary",
        "labelled with the plugin ConfigMap's localSite"
    );
    assert_eq!(status.site.as_deref(), Some("primary"));

    // A restart: a new process with no memory. The running backup blocks a second one, and a
    // lost status write cannot cause a duplicate either (the slot comes from the Backup).
    drop(first);
    env.policies()
        .patch_status(
            "vms",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"lastScheduleTime": null}})),
        )
        .await?;
    let (second, metrics) = service(&env, &clock, "second");
    let p = policy(&env, "vms").await?;
    assert_eq!(
        second.reconcile(&p, clock.now()).await?.0,
        PolicyOutcome::Running {
            backup: name.clone()
        }
    );
    env.set_phase(&name, "InProgress", None).await?;
    env.set_phase(&name, "WaitingForPluginOperations", None)
        .await?;
    let p = policy(&env, "vms").await?;
    assert_eq!(
        second.reconcile(&p, clock.now()).await?.0,
        PolicyOutcome::Running {
            backup: name.clone()
        }
    );

    // The controller watches the Backup: Velero finishing it brings its policy's reconcile,
    // which starts the verification.
    let (leader_tx, leader) = watch::channel(true);
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn(Arc::clone(&second).run(leader, shutdown.clone()));
    let (tarball, list) = fixture::healthy_vm_backup()?;
    env.complete_backup(
        &name,
        &tarball,
        &list,
        "Completed",
        slot + Duration::from_secs(6),
    )
    .await?;
    let verified = env
        .wait_backup(&name, WAIT, |b| b.verified.is_some())
        .await?;
    assert_eq!(verified.verified, Some(true), "{verified:?}");
    assert_eq!(verified.verification_reason.as_deref(), Some("Verified"));
    let p = env
        .wait_policy("vms", WAIT, |p| {
            condition_of(p, condition::VERIFIED).is_some_and(|c| c.0 == "True")
        })
        .await?;
    let status = p.status.expect("status");
    assert_eq!(status.last_verified_backup.as_deref(), Some(name.as_str()));
    assert_eq!(status.expected_interval_seconds, Some(3600));
    assert_eq!(
        condition_of(&policy(&env, "vms").await?, condition::BACKUP_SUCCEEDED)
            .expect("c")
            .0,
        "True"
    );
    // The pass after verification refreshes the RPO series from the status.
    wait_for_metric(
        &metrics,
        "replicadr_verification_runs_total{policy=\"vms\"} 1",
    )
    .await?;
    wait_for_metric(&metrics, "replicadr_has_verified_backup{policy=\"vms\"} 1").await?;

    // Still inside the slot: nothing new. The next slot: the next backup.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(env.backup_views().await?.len(), 1);
    clock.set(slot + Duration::from_hours(1));
    second.wake();
    let next = slot_backup_name("vms", slot + Duration::from_hours(1));
    env.wait_backup(&next, WAIT, |b| b.class == PhaseClass::Running)
        .await?;
    assert_eq!(env.backup_views().await?.len(), 2);

    let _ = leader_tx.send(false);
    shutdown.cancel();
    tokio::time::timeout(WAIT, runner).await??;
    Ok(())
}

#[tokio::test]
async fn two_replicas_create_exactly_one_backup_per_slot() -> anyhow::Result<()> {
    let env = BackupEnv::start("velero").await?;
    env.create_policy(
        "vms",
        json!({"schedule": "@every 30m", "template": {"includedNamespaces": ["vms"]}}),
    )
    .await?;
    let slot = next_hour();
    let clock = Arc::new(ManualClock::new(slot + Duration::from_secs(1)));
    let (a, _) = service(&env, &clock, "a");
    let (b, _) = service(&env, &clock, "b");
    let p = policy(&env, "vms").await?;
    // Both act as leaders at once (the worst case of a lease hand-over).
    let (ra, rb) = tokio::join!(a.reconcile(&p, clock.now()), b.reconcile(&p, clock.now()));
    let outcomes = [ra?.0, rb?.0];
    let created = outcomes
        .iter()
        .filter(|o| matches!(o, PolicyOutcome::Created { .. }))
        .count();
    let existed = outcomes
        .iter()
        .filter(|o| {
            matches!(
                o,
                PolicyOutcome::AlreadyExists { .. } | PolicyOutcome::Running { .. }
            )
        })
        .count();
    assert_eq!((created, existed), (1, 1), "{outcomes:?}");
    assert_eq!(env.backup_views().await?.len(), 1);

    // With leader election only one replica leads; when it leaves, the other takes over.
    let first = Election::start(
        env.client.clone(),
        &env.namespace,
        "replica-1",
        Duration::from_secs(3),
    )
    .await?;
    let second = Election::start(
        env.client.clone(),
        &env.namespace,
        "replica-2",
        Duration::from_secs(3),
    )
    .await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let leaders = [*first.is_leader.borrow(), *second.is_leader.borrow()];
        assert!(!(leaders[0] && leaders[1]), "two leaders at once");
        if leaders[0] || leaders[1] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "nobody leads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (leader, mut follower) = if *first.is_leader.borrow() {
        (first, second)
    } else {
        (second, first)
    };
    leader.stop().await;
    tokio::time::timeout(WAIT, async {
        while !*follower.is_leader.borrow_and_update() {
            follower
                .is_leader
                .changed()
                .await
                .expect("election running");
        }
    })
    .await?;
    follower.stop().await;
    Ok(())
}

#[tokio::test]
async fn bad_policies_get_a_clear_condition_and_no_backup() -> anyhow::Result<()> {
    let env = BackupEnv::start("velero").await?;
    let cases = [
        (
            "bad-cron",
            json!({"schedule": "0 25 * * *"}),
            "InvalidSchedule",
            "hour field \"25\"",
        ),
        (
            "six-fields",
            json!({"schedule": "0 0 2 * * *"}),
            "InvalidSchedule",
            "@every 30m",
        ),
        (
            "bad-zone",
            json!({"schedule": "@daily", "timeZone": "Mars/Olympus"}),
            "UnknownTimeZone",
            "Mars/Olympus",
        ),
        (
            "bad-location",
            json!({"schedule": "@daily", "template": {"storageLocation": "nowhere"}}),
            "UnknownStorageLocation",
            "\"nowhere\"",
        ),
        (
            "no-namespace",
            json!({"schedule": "@daily", "template": {"includedNamespaces": ["ghost"]}}),
            "NothingSelected",
            "ghost",
        ),
        (
            "no-match",
            json!({"schedule": "@daily", "template": {"includedNamespaces": ["vms"], "labelSelector": {"matchLabels": {"dr": "gold"}}}}),
            "NothingSelected",
            "dr=gold",
        ),
        (
            "bad-ttl",
            json!({"schedule": "@daily", "template": {"ttl": "30 days"}}),
            "InvalidSpec",
            "spec.template.ttl",
        ),
        (
            "no-site",
            json!({"schedule": "@daily", "siteMap": {"name": "nowhere-map"}}),
            "UnknownLocalSite",
            "velero/nowhere-map",
        ),
    ];
    for (name, spec, _, _) in &cases {
        env.create_policy(name, spec.clone()).await?;
    }
    let clock = Arc::new(ManualClock::new(next_hour() + Duration::from_hours(48)));
    let (service, _) = service(&env, &clock, "only");
    let (_leader, leader) = watch::channel(true);
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn(Arc::clone(&service).run(leader, shutdown.clone()));
    for (name, _, reason, needle) in cases {
        let p = env
            .wait_policy(name, WAIT, |p| condition_of(p, condition::READY).is_some())
            .await?;
        let ready = condition_of(&p, condition::READY).expect("condition");
        assert_eq!(ready.0, "False", "{name}: {ready:?}");
        assert_eq!(ready.1, reason, "{name}: {ready:?}");
        assert!(ready.2.contains(needle), "{name}: {}", ready.2);
    }
    shutdown.cancel();
    tokio::time::timeout(WAIT, runner).await??;
    assert!(
        env.backup_views().await?.is_empty(),
        "no backups for bad policies"
    );
    Ok(())
}

#[tokio::test]
async fn a_failed_backup_is_retried_within_its_slot_and_reported() -> anyhow::Result<()> {
    let env = BackupEnv::start("velero").await?;
    env.create_policy(
        "vms",
        json!({"schedule": "@hourly", "retries": {"limit": 1, "backoff": "1m"}, "template": {"includedNamespaces": ["vms"]}}),
    )
    .await?;
    let slot = next_hour();
    let clock = Arc::new(ManualClock::new(slot + Duration::from_secs(2)));
    let (service, metrics) = service(&env, &clock, "only");
    let p = policy(&env, "vms").await?;
    service.reconcile(&p, clock.now()).await?;
    let name = slot_backup_name("vms", slot);
    env.set_phase(&name, "Failed", Some(slot + Duration::from_secs(3)))
        .await?;
    let p = policy(&env, "vms").await?;
    service.reconcile(&p, clock.now()).await?;
    let failed = env
        .wait_backup(&name, WAIT, |b| b.verified.is_some())
        .await?;
    assert_eq!(failed.verified, Some(false));
    assert_eq!(
        failed.verification_reason.as_deref(),
        Some("BackupNotCompleted")
    );
    assert_eq!(
        condition_of(&policy(&env, "vms").await?, condition::BACKUP_SUCCEEDED)
            .expect("c")
            .1,
        "Failed"
    );
    assert_eq!(env.backup_views().await?.len(), 1, "backoff not over yet");
    // The backoff (1m) counts from completion (slot + 4s).
    clock.set(slot + Duration::from_secs(70));
    let p = policy(&env, "vms").await?;
    let (outcome, _) = service.reconcile(&p, clock.now()).await?;
    assert_eq!(
        outcome,
        PolicyOutcome::Created {
            backup: format!("{name}-r1")
        }
    );
    let text = metrics::encode(&metrics);
    assert!(
        text.contains("replicadr_backup_failures_total{policy=\"vms\",reason=\"Failed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("replicadr_backup_runs_total{policy=\"vms\"} 2"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn the_shipped_rbac_is_enough_for_the_scheduler() -> anyhow::Result<()> {
    let env = BackupEnv::start("velero").await?;
    env.create_policy(
        "vms",
        json!({"schedule": "@hourly", "template": {"includedNamespaces": ["vms"]}}),
    )
    .await?;
    let client = env.scheduler_client().await?;
    // Nothing but the grant: listing Secrets is not part of it.
    assert!(
        kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), "velero")
            .list(&kube::api::ListParams::default())
            .await
            .is_err(),
        "the impersonated client is really limited"
    );

    let slot = next_hour();
    let clock = Arc::new(ManualClock::new(slot + Duration::from_secs(1)));
    let (registry, metrics_set) = Metrics::new_registry();
    let publisher = Arc::new(Publisher::new(
        client.clone(),
        "velero",
        "rbac",
        metrics_set,
    ));
    let mut config = ServiceConfig::new("velero");
    config.tick = Duration::from_millis(300);
    let dyn_clock: Arc<dyn Clock> = Arc::clone(&clock) as Arc<dyn Clock>;
    let service = Arc::new(Service::new(client.clone(), config, dyn_clock, publisher));
    let p = kube::Api::<BackupPolicy>::namespaced(client.clone(), "velero")
        .get("vms")
        .await?;
    let name = slot_backup_name("vms", slot);
    assert_eq!(
        service.reconcile(&p, clock.now()).await?.0,
        PolicyOutcome::Created {
            backup: name.clone()
        }
    );
    let (tarball, list) = fixture::healthy_vm_backup()?;
    env.complete_backup(&name, &tarball, &list, "Completed", slot)
        .await?;
    let p = kube::Api::<BackupPolicy>::namespaced(client.clone(), "velero")
        .get("vms")
        .await?;
    service.reconcile(&p, clock.now()).await?;
    let verified = env
        .wait_backup(&name, WAIT, |b| b.verified.is_some())
        .await?;
    assert_eq!(verified.verified, Some(true), "{verified:?}");
    env.wait_policy("vms", WAIT, |p| {
        condition_of(p, condition::VERIFIED).is_some_and(|c| c.0 == "True")
    })
    .await?;
    wait_for_metric(
        &registry,
        "replicadr_verification_runs_total{policy=\"vms\"} 1",
    )
    .await?;

    // The Event was written (with the grant's events.k8s.io create).
    let events =
        kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(env.client.clone(), "velero");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = events.list(&kube::api::ListParams::default()).await?;
        if list
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("BackupVerified"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no BackupVerified event: {:?}",
            list.items
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let election = Election::start(
        client.clone(),
        "velero",
        "rbac-replica",
        Duration::from_secs(5),
    )
    .await?;
    let mut leading = election.is_leader.clone();
    tokio::time::timeout(WAIT, async {
        while !*leading.borrow_and_update() {
            leading.changed().await.expect("election running");
        }
    })
    .await?;
    election.stop().await;

    let policies = replicadr_scheduler::status::policies(&client, "velero", clock.now()).await?;
    let table = replicadr_cli::render::status(&policies);
    assert!(table.contains(&name), "{table}");
    let orphans = replicadr_scheduler::gc::gc(&client, false).await?;
    assert!(orphans.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_backup_that_never_finishes_times_out_and_blocks_the_next_slot() -> anyhow::Result<()> {
    let env = BackupEnv::start("velero").await?;
    env.create_policy(
        "vms",
        json!({"schedule": "@every 30m", "backupTimeout": "10m", "template": {"includedNamespaces": ["vms"]}}),
    )
    .await?;
    let slot = next_hour();
    let clock = Arc::new(ManualClock::new(slot + Duration::from_secs(1)));
    let (service, metrics) = service(&env, &clock, "only");
    let p = policy(&env, "vms").await?;
    let name = slot_backup_name("vms", slot);
    assert_eq!(
        service.reconcile(&p, clock.now()).await?.0,
        PolicyOutcome::Created {
            backup: name.clone()
        }
    );
    env.set_phase(&name, "InProgress", None).await?;
    // Past the timeout (counted from the Backup's creation) and past the next slot.
    clock.set(slot + Duration::from_mins(31));
    let p = policy(&env, "vms").await?;
    assert_eq!(
        service.reconcile(&p, clock.now()).await?.0,
        PolicyOutcome::Running {
            backup: name.clone()
        },
        "Forbid: no second backup while one runs"
    );
    let c =
        condition_of(&policy(&env, "vms").await?, condition::BACKUP_SUCCEEDED).expect("condition");
    assert_eq!(
        (c.0.as_str(), c.1.as_str()),
        ("False", "BackupTimedOut"),
        "{c:?}"
    );
    assert!(c.2.contains("spec.backupTimeout is 600s"), "{}", c.2);
    assert_eq!(env.backup_views().await?.len(), 1);
    wait_for_metric(
        &metrics,
        "replicadr_backup_failures_total{policy=\"vms\",reason=\"TimedOut\"} 1",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn backup_now_creates_waits_verifies_and_publishes() -> anyhow::Result<()> {
    let env = BackupEnv::start("velero").await?;
    env.create_policy(
        "vms",
        json!({"schedule": "@daily", "template": {"includedNamespaces": ["vms"]}}),
    )
    .await?;
    let (registry, metrics_set) = Metrics::new_registry();
    let publisher = Publisher::new(env.client.clone(), "velero", "cli", metrics_set);
    let manual = Arc::new(ManualClock::new(Timestamp::now()));
    let clock: Arc<dyn Clock> = Arc::clone(&manual) as Arc<dyn Clock>;
    let expected = replicadr_scheduler::schedule::manual_backup_name("vms", clock.now());
    let play_velero = async {
        env.wait_backup(&expected, WAIT, |_| true).await?;
        let (tarball, list) = fixture::healthy_vm_backup()?;
        env.complete_backup(&expected, &tarball, &list, "Completed", Timestamp::now())
            .await
    };
    let (report, played) = tokio::join!(
        replicadr_scheduler::manual::backup_now(
            &env.client,
            "velero",
            "vms",
            Arc::clone(&clock),
            &publisher,
            Duration::from_millis(100),
            |_| {},
        ),
        play_velero
    );
    played?;
    let report = report?;
    assert!(report.verified, "{report:#?}");
    assert_eq!(report.backup, expected);
    let view = env
        .wait_backup(&expected, WAIT, |b| b.verified.is_some())
        .await?;
    assert_eq!(view.verified, Some(true));
    let status = policy(&env, "vms").await?.status.expect("status");
    assert_eq!(
        status.last_verified_backup.as_deref(),
        Some(expected.as_str())
    );
    assert_eq!(view.site.as_deref(), Some("primary"));
    assert!(metrics::encode(&registry).contains("replicadr_backup_runs_total{policy=\"vms\"} 1"));

    // A backup Velero fails: counted as a failure, with an Event, like a scheduled one.
    manual.advance(Duration::from_secs(1));
    let failing = replicadr_scheduler::schedule::manual_backup_name("vms", clock.now());
    let play_velero = async {
        env.wait_backup(&failing, WAIT, |_| true).await?;
        env.set_phase(&failing, "Failed", Some(Timestamp::now()))
            .await
    };
    let (report, played) = tokio::join!(
        replicadr_scheduler::manual::backup_now(
            &env.client,
            "velero",
            "vms",
            Arc::clone(&clock),
            &publisher,
            Duration::from_millis(100),
            |_| {},
        ),
        play_velero
    );
    played?;
    let report = report?;
    assert!(!report.verified, "{report:#?}");
    assert_eq!(report.reason, "BackupNotCompleted");
    let text = metrics::encode(&registry);
    assert!(
        text.contains("replicadr_backup_failures_total{policy=\"vms\",reason=\"Failed\"} 1"),
        "{text}"
    );
    let events =
        kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(env.client.clone(), "velero")
            .list(&kube::api::ListParams::default())
            .await?;
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("BackupFailed")),
        "no BackupFailed Event: {:?}",
        events.items.iter().map(|e| &e.reason).collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test]
async fn at_the_dr_site_the_primarys_failed_slot_is_never_retried() -> anyhow::Result<()> {
    let env = BackupEnv::start("velero").await?;
    env.put_local_site("dr").await?;
    env.create_policy(
        "vms",
        json!({"schedule": "@hourly", "paused": true, "retries": {"limit": 2, "backoff": "1m"},
               "template": {"includedNamespaces": ["vms"]}}),
    )
    .await?;
    // The primary's slot failed partially; Velero's sync at dr brought the Backup here.
    let slot = next_hour();
    let name = slot_backup_name("vms", slot);
    backup_from(&env, "primary", &name, Some(slot), "PartiallyFailed").await?;
    // Well past the retry backoff, still inside the slot.
    let clock = Arc::new(ManualClock::new(slot + Duration::from_mins(10)));
    let (service, metrics) = service(&env, &clock, "dr");
    let p = policy(&env, "vms").await?;
    assert_eq!(
        service.reconcile(&p, clock.now()).await?.0,
        PolicyOutcome::Paused
    );
    run_for(&service, Duration::from_secs(2)).await?;
    let names: Vec<String> = env
        .backup_views()
        .await?
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(
        names,
        std::slice::from_ref(&name),
        "a paused policy creates nothing"
    );
    let ready = condition_of(&policy(&env, "vms").await?, condition::READY).expect("ready");
    assert_eq!(ready.1, "Paused", "{ready:?}");
    assert!(ready.2.contains("retries included"), "{ready:?}");

    // Unpaused while the primary is the active site: still nothing, and the condition says why.
    env.policies()
        .patch(
            "vms",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await?;
    let p = policy(&env, "vms").await?;
    assert_eq!(
        service.reconcile(&p, clock.now()).await?.0,
        PolicyOutcome::NotActive {
            reason: "SiteNotActive".into()
        }
    );
    assert_eq!(env.backup_views().await?.len(), 1);

    // The DR site takes over: the primary's Backup is still not this site's to retry, verify or
    // publish, and the slot it took is not run again under the same name.
    env.make_active("dr", Takeover::Failover).await?;
    env.policies()
        .patch(
            "vms",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await?;
    let p = policy(&env, "vms").await?;
    assert_eq!(
        service.reconcile(&p, clock.now()).await?.0,
        PolicyOutcome::Foreign {
            backup: name.clone(),
            site: Some("primary".into())
        }
    );
    run_for(&service, Duration::from_secs(2)).await?;
    let views = env.backup_views().await?;
    assert_eq!(views.len(), 1, "no retry of another site's slot: {views:?}");
    assert_eq!(views[0].verified, None, "not verified as dr's: {views:?}");
    assert_eq!(views[0].verification_reason, None, "{views:?}");
    let status = policy(&env, "vms").await?.status.expect("status");
    assert_eq!(status.last_backup, None, "{status:?}");
    assert_eq!(status.last_verified_backup, None, "{status:?}");
    assert_eq!(status.last_schedule_time, Some(slot.to_string()));
    assert!(
        !metrics::encode(&metrics).contains("replicadr_backup_runs_total{policy=\"vms\"}"),
        "{}",
        metrics::encode(&metrics)
    );

    // The next slot is dr's own, labelled so.
    clock.set(slot + Duration::from_hours(1));
    let p = policy(&env, "vms").await?;
    let next = slot_backup_name("vms", slot + Duration::from_hours(1));
    assert_eq!(
        service.reconcile(&p, clock.now()).await?.0,
        PolicyOutcome::Created {
            backup: next.clone()
        }
    );
    let created = env.wait_backup(&next, WAIT, |_| true).await?;
    assert_eq!(created.site.as_deref(), Some("dr"));
    let status = policy(&env, "vms").await?.status.expect("status");
    assert_eq!(status.last_backup.as_deref(), Some(next.as_str()));
    assert_eq!(status.site.as_deref(), Some("dr"));
    Ok(())
}

#[tokio::test]
async fn another_sites_backups_are_never_verified_or_published_as_this_sites() -> anyhow::Result<()>
{
    let env = BackupEnv::start("velero").await?;
    env.create_policy(
        "vms",
        json!({"schedule": "@hourly", "retries": {"limit": 1, "backoff": "1m"},
               "template": {"includedNamespaces": ["vms"]}}),
    )
    .await?;
    let slot = next_hour();
    let clock = Arc::new(ManualClock::new(slot + Duration::from_secs(5)));
    let (service, _) = service(&env, &clock, "primary");
    let own = slot_backup_name("vms", slot);
    let p = policy(&env, "vms").await?;
    assert_eq!(
        service.reconcile(&p, clock.now()).await?.0,
        PolicyOutcome::Created {
            backup: own.clone()
        }
    );
    // Copies of dr's Backups, newer than this site's: a healthy one, and a failed one.
    backup_from(&env, "dr", "vms-manual-dr", None, "Completed").await?;
    backup_from(&env, "dr", "vms-dr-failed", Some(slot), "Failed").await?;
    // And an unlabelled copy from before the label existed: created after it completed.
    let valid = ValidPolicy::from_policy(&policy(&env, "vms").await?)?;
    let mut legacy = velero::build_backup(&BackupRequest {
        policy: &valid,
        site: "dr",
        name: "vms-legacy-copy".to_owned(),
        slot: None,
        attempt: 0,
    });
    legacy
        .metadata
        .labels
        .as_mut()
        .expect("labels")
        .remove(velero::LABEL_SITE);
    env.backups()
        .create(&kube::api::PostParams::default(), &legacy)
        .await?;
    let (tarball, list) = fixture::healthy_vm_backup()?;
    env.complete_backup(
        "vms-legacy-copy",
        &tarball,
        &list,
        "Completed",
        Timestamp::now() - Duration::from_hours(2),
    )
    .await?;

    let (leader_tx, leader) = watch::channel(true);
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn(Arc::clone(&service).run(leader, shutdown.clone()));
    env.complete_backup(
        &own,
        &tarball,
        &list,
        "Completed",
        slot + Duration::from_secs(6),
    )
    .await?;
    let verified = env
        .wait_backup(&own, WAIT, |b| b.verified.is_some())
        .await?;
    assert_eq!(verified.verified, Some(true), "{verified:?}");
    let p = env
        .wait_policy("vms", WAIT, |p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.last_verified_backup.is_some())
        })
        .await?;
    // A few more reconciles: none of them touches the other site's Backups.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = leader_tx.send(false);
    shutdown.cancel();
    tokio::time::timeout(WAIT, runner).await??;
    let status = p.status.expect("status");
    assert_eq!(status.last_verified_backup.as_deref(), Some(own.as_str()));
    assert_eq!(status.last_backup.as_deref(), Some(own.as_str()));
    let status = policy(&env, "vms").await?.status.expect("status");
    assert_eq!(status.last_verified_backup.as_deref(), Some(own.as_str()));
    assert_eq!(status.last_backup.as_deref(), Some(own.as_str()));
    assert_eq!(status.site.as_deref(), Some("primary"));
    for other in ["vms-manual-dr", "vms-dr-failed", "vms-legacy-copy"] {
        let view = env.wait_backup(other, WAIT, |_| true).await?;
        assert_eq!(view.verified, None, "{other} verified here: {view:?}");
        assert_eq!(view.verification_reason, None, "{other}: {view:?}");
    }
    let retries: Vec<String> = env
        .backup_views()
        .await?
        .into_iter()
        .map(|b| b.name)
        .filter(|n| n.contains("-r"))
        .collect();
    assert!(
        retries.is_empty(),
        "retried another site's backup: {retries:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_deleted_policys_rpo_series_are_dropped() -> anyhow::Result<()> {
    let env = BackupEnv::start("velero").await?;
    for name in ["kept", "gone"] {
        env.create_policy(
            name,
            json!({"schedule": "@hourly", "template": {"includedNamespaces": ["vms"]}}),
        )
        .await?;
    }
    let clock = Arc::new(ManualClock::new(next_hour()));
    let (service, registry) = service(&env, &clock, "follower");
    // A follower keeps the RPO series too, and drops them too.
    let (_leader, leader) = watch::channel(false);
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn(Arc::clone(&service).run(leader, shutdown.clone()));
    wait_for_metric(&registry, "replicadr_rpo_seconds{policy=\"gone\"}").await?;
    wait_for_metric(&registry, "replicadr_rpo_seconds{policy=\"kept\"}").await?;
    env.policies()
        .delete("gone", &kube::api::DeleteParams::default())
        .await?;
    wait_for_no_metric(&registry, "policy=\"gone\"").await?;
    let text = metrics::encode(&registry);
    for series in [
        "replicadr_rpo_seconds{policy=\"kept\"}",
        "replicadr_rpo_ratio{policy=\"kept\"}",
        "replicadr_expected_interval_seconds{policy=\"kept\"}",
        "replicadr_has_verified_backup{policy=\"kept\"}",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    shutdown.cancel();
    tokio::time::timeout(WAIT, runner).await??;
    assert!(
        env.backup_views().await?.is_empty(),
        "a follower creates nothing"
    );
    Ok(())
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn a_returning_primary_makes_no_backup_until_failback_makes_it_active() -> anyhow::Result<()>
{
    let env = BackupEnv::start("velero").await?;
    env.create_policy(
        "vms",
        json!({"schedule": "@hourly", "missedRunPolicy": "RunOnce",
               "template": {"includedNamespaces": ["vms"]}}),
    )
    .await?;
    // The failover to dr happened while the primary was down.
    env.make_active("dr", Takeover::Failover).await?;
    // The primary comes back three slots later: RunOnce would run the newest missed slot now.
    let slot = next_hour() + Duration::from_hours(3);
    let clock = Arc::new(ManualClock::new(slot + Duration::from_secs(5)));
    let (service, registry) = service(&env, &clock, "primary");
    let p = policy(&env, "vms").await?;
    assert_eq!(
        service.reconcile(&p, clock.now()).await?.0,
        PolicyOutcome::NotActive {
            reason: "SiteNotActive".into()
        }
    );
    run_for(&service, Duration::from_secs(2)).await?;
    assert!(
        env.backup_views().await?.is_empty(),
        "the returning primary created a backup"
    );
    let (status, reason, message) =
        condition_of(&policy(&env, "vms").await?, condition::READY).expect("ready");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "SiteNotActive")
    );
    for needle in [
        "names site dr, active since",
        "(failover, epoch 2)",
        "this site, primary, makes no backups",
        "replicadr failback --site primary",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
    wait_for_metric(&registry, "replicadr_policy_standby{policy=\"vms\"} 1").await?;
    wait_for_metric(
        &registry,
        "replicadr_active_site_record_error{policy=\"vms\"} 0",
    )
    .await?;
    let events = env.cluster.client().await?;
    let events: kube::Api<k8s_openapi::api::core::v1::Event> =
        kube::Api::namespaced(events, &env.namespace);
    let reasons: Vec<String> = events
        .list(&kube::api::ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.iter().any(|r| r == "SiteNotActive"), "{reasons:?}");

    // `backup now` is refused there too, naming the active site.
    let publisher = Publisher::new(
        env.client.clone(),
        &env.namespace,
        "cli",
        Metrics::new_registry().1,
    );
    let refused = replicadr_scheduler::manual::backup_now(
        &env.client,
        &env.namespace,
        "vms",
        Arc::clone(&clock) as Arc<dyn Clock>,
        &publisher,
        Duration::from_millis(100),
        |_| {},
    )
    .await
    .expect_err("backup now at the standby site")
    .to_string();
    assert!(
        refused.contains("BackupPolicy vms makes no backup here") && refused.contains("site dr"),
        "{refused}"
    );
    assert!(env.backup_views().await?.is_empty());

    // Failback makes the primary active again: the slot due runs.
    env.make_active("primary", Takeover::Failback).await?;
    let p = policy(&env, "vms").await?;
    let name = slot_backup_name("vms", slot);
    assert_eq!(
        service.reconcile(&p, clock.now()).await?.0,
        PolicyOutcome::Created {
            backup: name.clone()
        }
    );
    let record = env
        .active_site_record()
        .await?
        .read()
        .await?
        .expect("record");
    assert_eq!(
        (
            record.site.as_str(),
            record.epoch,
            record.previous_site.as_deref()
        ),
        ("primary", 3, Some("dr"))
    );
    run_for(&service, Duration::from_secs(1)).await?;
    wait_for_metric(&registry, "replicadr_policy_standby{policy=\"vms\"} 0").await?;
    Ok(())
}

#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn without_a_usable_active_site_record_neither_site_makes_a_backup() -> anyhow::Result<()> {
    let env = BackupEnv::start("velero").await?;
    env.create_policy(
        "vms",
        json!({"schedule": "@hourly", "template": {"includedNamespaces": ["vms"]}}),
    )
    .await?;
    let key = BackupEnv::active_site_key();
    let slot = next_hour();
    let clock = Arc::new(ManualClock::new(slot + Duration::from_secs(5)));
    let record = String::from_utf8(env.s3.get(BUCKET, &key)?)?;
    let unknown = record.replace("\"primary\"", "\"moon\"");
    assert_ne!(record, unknown);
    let cases: [(&str, Option<&str>, &str, &[&str]); 3] = [
        (
            "missing",
            None,
            "ActiveSiteMissing",
            &[
                "there is no active-site record at s3://fresh/site-a/metadata/replicadr-active-site.json (BackupStorageLocation velero/default)",
                "replicadr activate --site",
            ],
        ),
        (
            "not JSON",
            Some("{ half a record"),
            "ActiveSiteInvalid",
            &["is not valid", "replicadr.io/active-site/v1"],
        ),
        (
            "an unknown site",
            Some(&unknown),
            "ActiveSiteUnknown",
            &["names site \"moon\"", "its sites: primary, dr"],
        ),
    ];
    for (case, content, reason, needles) in cases {
        match content {
            // A location whose bucket holds no record (as at installation).
            None => {
                env.s3.create_bucket("fresh")?;
                env.put_storage_location("default", "fresh", Some(("cloud-credentials", "cloud")))
                    .await?;
            }
            Some(text) => {
                env.put_storage_location("default", BUCKET, Some(("cloud-credentials", "cloud")))
                    .await?;
                env.put_through_s3(&key, text.as_bytes()).await?;
            }
        }
        for site in ["primary", "dr"] {
            env.put_local_site(site).await?;
            let (service, registry) = service(&env, &clock, site);
            let p = policy(&env, "vms").await?;
            let outcome = service.reconcile(&p, clock.now()).await?.0;
            let (_, got, message) =
                condition_of(&policy(&env, "vms").await?, condition::READY).expect("ready");
            assert_eq!(
                outcome,
                PolicyOutcome::NotActive {
                    reason: reason.into()
                },
                "{case} at {site}: {message}"
            );
            assert_eq!(got, reason, "{case} at {site}: {message}");
            for needle in needles {
                assert!(
                    message.contains(needle),
                    "{case} at {site}: {needle:?} not in {message}"
                );
            }
            wait_for_metric(
                &registry,
                "replicadr_active_site_record_error{policy=\"vms\"} 1",
            )
            .await?;
            wait_for_metric(&registry, "replicadr_policy_standby{policy=\"vms\"} 0").await?;
        }
        assert!(
            env.backup_views().await?.is_empty(),
            "{case}: a backup was made"
        );
    }

    // Unreadable: the store rejects the credentials.
    env.put_through_s3(&key, record.as_bytes()).await?;
    env.put_local_site("primary").await?;
    env.put_credentials(
        "cloud-credentials",
        "cloud",
        "[default]\naws_access_key_id=nobody\naws_secret_access_key=wrong\n",
    )
    .await?;
    let (service, _) = service(&env, &clock, "primary");
    let p = policy(&env, "vms").await?;
    assert_eq!(
        service.reconcile(&p, clock.now()).await?.0,
        PolicyOutcome::NotActive {
            reason: "ActiveSiteUnreadable".into()
        }
    );
    let (_, _, message) =
        condition_of(&policy(&env, "vms").await?, condition::READY).expect("ready");
    assert!(
        message.contains("cannot read the active-site record"),
        "{message}"
    );
    assert!(env.backup_views().await?.is_empty());

    // Repaired: the active site backs up again.
    env.put_credentials("cloud-credentials", "cloud", &env.s3.credentials_file())
        .await?;
    let p = policy(&env, "vms").await?;
    assert_eq!(
        service.reconcile(&p, clock.now()).await?.0,
        PolicyOutcome::Created {
            backup: slot_backup_name("vms", slot)
        }
    );
    Ok(())
}

/// The longest policy name accepted goes all the way: the API server refuses one character more
/// (the CRD's `maxLength`), the scheduler's Backup and a manual backup name of 63 characters are
/// accepted with their labels, and a failover of it creates a Restore whose name and labels the
/// API server accepts and that a re-run finds again by those labels. No Velero runs here, so the
/// Restore never finishes: the failover stops at its restore timeout. A forced failover at the
/// wrong site is refused before anything is written.
#[tokio::test]
#[expect(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn the_longest_policy_name_makes_valid_backups_and_restores() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DynamicObject, ListParams};
    use replicadr_scheduler::policy::MAX_POLICY_NAME;
    use replicadr_scheduler::recovery::failover::{self, Operation};
    use replicadr_scheduler::recovery::report::Outcome;
    use replicadr_scheduler::recovery::site::BackupChoice;
    use replicadr_scheduler::schedule::manual_backup_name;

    let env = BackupEnv::start("velero").await?;
    let spec = json!({"schedule": "@hourly", "template": {"includedNamespaces": ["vms"]}});
    let too_long = "p".repeat(MAX_POLICY_NAME + 1);
    let refused = env
        .create_policy(&too_long, spec.clone())
        .await
        .expect_err("one character more than accepted");
    match refused.downcast_ref::<kube::Error>() {
        Some(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(
                status.message.contains(&format!(
                    "\"{too_long}\" is invalid: metadata.name: Too long: may not be more than 41"
                )),
                "{status:?}"
            );
        }
        other => panic!("not refused by the API server: {other:?}"),
    }

    let longest = "p".repeat(MAX_POLICY_NAME);
    env.create_policy(&longest, spec).await?;
    let slot = next_hour();
    let clock = Arc::new(ManualClock::new(slot + Duration::from_secs(5)));
    let (scheduler, _) = service(&env, &clock, "primary");
    let slot_name = slot_backup_name(&longest, slot);
    assert_eq!(
        scheduler
            .reconcile(&policy(&env, &longest).await?, clock.now())
            .await?
            .0,
        PolicyOutcome::Created {
            backup: slot_name.clone()
        }
    );
    let object = env.backups().get(&slot_name).await?;
    let labels = object.metadata.labels.as_ref().expect("labels");
    assert_eq!(labels[velero::LABEL_POLICY], longest);
    assert_eq!(labels[velero::LABEL_SCHEDULE_NAME], longest);
    let (tarball, list) = fixture::healthy_vm_backup()?;
    env.complete_backup(&slot_name, &tarball, &list, "Completed", slot)
        .await?;

    // The longest backup name a policy makes: a manual backup's, exactly 63 characters.
    let manual = manual_backup_name(&longest, slot + Duration::from_mins(1));
    assert_eq!(manual.len(), 63);
    let valid = ValidPolicy::from_policy(&policy(&env, &longest).await?)?;
    env.backups()
        .create(
            &kube::api::PostParams::default(),
            &velero::build_backup(&BackupRequest {
                policy: &valid,
                site: "primary",
                name: manual.clone(),
                slot: None,
                attempt: 0,
            }),
        )
        .await?;
    env.complete_backup(
        &manual,
        &tarball,
        &list,
        "Completed",
        slot + Duration::from_mins(1),
    )
    .await?;

    // It verifies under its 63-character name.
    let report = replicadr_scheduler::verify::Verifier::new(env.client.clone(), &env.namespace)
        .verify(
            &manual,
            &replicadr_scheduler::verify::SiteMapSource::default(),
        )
        .await?;
    assert!(report.verified, "{report:#?}");

    // This cluster becomes the DR site and fails over to the manual backup.
    env.put_local_site("dr").await?;
    let mut options = failover::Options::new(Operation::Failover, "dr");
    options.backup = BackupChoice::Named(manual.clone());
    options.policy = Some(longest.clone());
    options.replication_confirmed = true;
    options.start_vms = false;
    options.restore_timeout = Duration::from_secs(2);
    options.poll = Duration::from_millis(200);
    let mut log = |line: String| eprintln!("failover: {line}");
    let report = Box::pin(failover::run(
        &env.client,
        &env.namespace,
        &options,
        &mut log,
    ))
    .await?;
    let restore = report.restore.clone().expect("a Restore was created");
    assert!(
        report.preconditions.iter().all(|p| p.passed != Some(false)),
        "{report:#?}"
    );
    assert_eq!(report.outcome, Outcome::Failed, "no Velero: {report:#?}");
    assert!(
        restore.len() <= 63 && restore.starts_with("failover-dr-ppp"),
        "{restore}"
    );
    let restores = Api::<DynamicObject>::namespaced_with(
        env.client.clone(),
        &env.namespace,
        &velero::restore_resource(),
    );
    let created = restores.get(&restore).await?;
    assert_eq!(created.data["spec"]["backupName"], manual.as_str());
    let labels = created.metadata.labels.as_ref().expect("labels");
    assert_eq!(
        labels["replicadr.io/backup"], manual,
        "63 characters fit as they are"
    );
    let stored = Api::<ConfigMap>::namespaced(env.client.clone(), &env.namespace)
        .get(&failover::report_name(&restore))
        .await?;
    assert_eq!(
        stored.metadata.labels.as_ref().expect("labels")["replicadr.io/backup"],
        manual
    );

    // A re-run finds its Restore by the labels and follows it instead of making another.
    let again = Box::pin(failover::run(
        &env.client,
        &env.namespace,
        &options,
        &mut log,
    ))
    .await?;
    assert_eq!(
        again.restore.as_deref(),
        Some(restore.as_str()),
        "{again:#?}"
    );
    assert_eq!(restores.list(&ListParams::default()).await?.items.len(), 1);

    // A backup made by hand may have a name too long for a label: the Restore's label holds it
    // cut with Velero's hash, and a re-run finds the Restore by that value.
    let by_hand = format!("made-by-hand-{}", "h".repeat(70));
    let mut object = velero::build_backup(&BackupRequest {
        policy: &valid,
        site: "primary",
        name: by_hand.clone(),
        slot: None,
        attempt: 0,
    });
    object.metadata.labels = None;
    env.backups()
        .create(&kube::api::PostParams::default(), &object)
        .await?;
    env.complete_backup(&by_hand, &tarball, &list, "Completed", slot)
        .await?;
    let mut long_named = options.clone();
    long_named.backup = BackupChoice::Named(by_hand.clone());
    long_named.policy = None;
    let report = Box::pin(failover::run(
        &env.client,
        &env.namespace,
        &long_named,
        &mut log,
    ))
    .await?;
    let long_restore = report.restore.clone().expect("a Restore was created");
    assert!(long_restore.len() <= 63, "{long_restore}");
    assert_ne!(long_restore, restore);
    let labels = restores
        .get(&long_restore)
        .await?
        .metadata
        .labels
        .expect("labels");
    // What Velero v1.18.3's `label.GetValidName` makes of the name.
    assert_eq!(
        labels["replicadr.io/backup"],
        format!("made-by-hand-{}507c53", "h".repeat(44))
    );
    let again = Box::pin(failover::run(
        &env.client,
        &env.namespace,
        &long_named,
        &mut log,
    ))
    .await?;
    assert_eq!(
        again.restore.as_deref(),
        Some(long_restore.as_str()),
        "{again:#?}"
    );
    assert_eq!(restores.list(&ListParams::default()).await?.items.len(), 2);

    // The failback: primary takes back over from a backup dr made under the same policy, its
    // name 63 characters too.
    env.put_local_site("primary").await?;
    let from_dr = manual_backup_name(&longest, slot + Duration::from_mins(2));
    assert_eq!(from_dr.len(), 63);
    env.backups()
        .create(
            &kube::api::PostParams::default(),
            &velero::build_backup(&BackupRequest {
                policy: &valid,
                site: "dr",
                name: from_dr.clone(),
                slot: None,
                attempt: 0,
            }),
        )
        .await?;
    env.complete_backup(
        &from_dr,
        &tarball,
        &list,
        "Completed",
        slot + Duration::from_mins(2),
    )
    .await?;
    let mut back = failover::Options::new(Operation::Failback, "primary");
    back.backup = BackupChoice::Named(from_dr.clone());
    back.policy = Some(longest.clone());
    back.replication_confirmed = true;
    back.start_vms = false;
    back.restore_timeout = Duration::from_secs(2);
    back.poll = Duration::from_millis(200);
    let report = Box::pin(failover::run(&env.client, &env.namespace, &back, &mut log)).await?;
    let failback_restore = report
        .restore
        .clone()
        .expect("a failback Restore was created");
    assert!(
        report.preconditions.iter().all(|p| p.passed != Some(false)),
        "{report:#?}"
    );
    assert!(
        failback_restore.len() <= 63 && failback_restore.starts_with("failback-primary-ppp"),
        "{failback_restore}"
    );
    let labels = restores
        .get(&failback_restore)
        .await?
        .metadata
        .labels
        .expect("labels");
    assert_eq!(labels["replicadr.io/backup"], from_dr);
    env.put_local_site("dr").await?;

    // At the wrong site --force does not help: the restore plugin would rewrite onto dr.
    let mut wrong = failover::Options::new(Operation::Failover, "primary");
    wrong.backup = BackupChoice::Named(manual.clone());
    wrong.replication_confirmed = true;
    wrong.force = true;
    let refused = Box::pin(failover::run(&env.client, &env.namespace, &wrong, &mut log)).await?;
    assert_eq!(refused.outcome, Outcome::Refused, "{refused:#?}");
    assert!(!refused.forced && refused.restore.is_none(), "{refused:#?}");
    let first = refused.failures.first().expect("a failure");
    assert!(
        first.starts_with("precondition PluginConfig failed: ConfigMap velero/")
            && first.contains("names localSite \"dr\"")
            && first.ends_with("--force does not override this precondition"),
        "{first}"
    );
    assert_eq!(restores.list(&ListParams::default()).await?.items.len(), 3);
    Ok(())
}

/// A fault: the scheduler's clock jumps forward a day (a host suspended, NTP stepping a clock that
/// was far behind). Under `missedRunPolicy: RunOnce` (the default) the 23 slots that passed
/// unseen are counted as missed and one backup is made, for the newest slot: not one per slot.
#[tokio::test]
async fn a_clock_jumping_a_day_ahead_makes_one_backup_not_one_per_missed_slot() -> anyhow::Result<()>
{
    let env = BackupEnv::start("velero").await?;
    env.create_policy(
        "vms",
        json!({"schedule": "@hourly", "template": {"includedNamespaces": ["vms"]}}),
    )
    .await?;
    let slot = next_hour();
    let clock = Arc::new(ManualClock::new(slot + Duration::from_secs(5)));
    let (service, metrics) = service(&env, &clock, "only");
    let first = slot_backup_name("vms", slot);
    assert_eq!(
        service
            .reconcile(&policy(&env, "vms").await?, clock.now())
            .await?
            .0,
        PolicyOutcome::Created {
            backup: first.clone()
        }
    );
    let (tarball, list) = fixture::healthy_vm_backup()?;
    env.complete_backup(&first, &tarball, &list, "Completed", slot)
        .await?;

    // The jump: a day and ten seconds later. The controller runs on its own for a while, as it
    // does in the service, waking on its tick and on the Backup watch.
    let day_later = slot + Duration::from_hours(24);
    clock.set(day_later + Duration::from_secs(10));
    run_for(&service, Duration::from_secs(3)).await?;
    let newest = slot_backup_name("vms", day_later);
    assert_eq!(
        env.backup_names().await?,
        [first, newest.clone()],
        "one backup for the jump"
    );
    let text = metrics::encode(&metrics);
    assert!(
        text.contains("replicadr_backup_missed_runs_total{policy=\"vms\"} 23"),
        "the 23 slots in between are counted as missed:\n{text}"
    );
    let status = policy(&env, "vms").await?.status.expect("status");
    assert_eq!(status.last_schedule_time, Some(day_later.to_string()));
    assert_eq!(status.last_backup.as_deref(), Some(newest.as_str()));

    // And the reconciles after it make nothing more for the slots in between.
    run_for(&service, Duration::from_secs(2)).await?;
    assert_eq!(env.backup_views().await?.len(), 2);
    Ok(())
}
