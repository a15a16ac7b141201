//! The scheduler service: a kube-runtime [`Controller`] over the `BackupPolicies` of the Velero
//! namespace. Reflector caches hold the policies and the Velero Backups labelled with a policy,
//! each Backup mapped to its policy by that label. A change to a policy or one of its Backups, this
//! replica winning the leadership, or the time the policy next needs attention runs that
//! policy's reconcile, which reads the caches, does what is due — report an invalid policy, follow
//! running backups to a final phase, verify finished ones, retry a failed one, start the backup
//! of a due slot — and returns when to look again. A failed reconcile is retried with a growing
//! backoff.
//!
//! All state lives in the cluster (status, labels, annotations, deterministic names), so a
//! restart or a second replica resumes exactly where the last one stopped and can never create a
//! slot's backup twice. Every replica keeps the RPO series; only the leader writes. A policy acts
//! only on the Backups made at its own site ([`crate::backup_site`]), and a paused policy creates
//! none, retries included. A policy that follows a Velero Schedule ([`crate::velero_schedule`])
//! creates none either: it verifies and publishes the Schedule's backups.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::{WatchStreamExt as _, reflector::store::WriterDropped};
use kube::{Client, ResourceExt as _};
use replicadr_core::plugin_config::SiteConfig;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backup_site::{self, SiteError};
use crate::clock::Clock;
use crate::environment;
use crate::lifecycle::{BackupLife, Created};
use crate::policy::{BackupPolicy, ValidPolicy, condition};
use crate::publish::Publisher;
use crate::recovery::standby;
use crate::schedule::{self, Decision, SlotState};
use crate::velero::{self, BackupView, PhaseClass};
use crate::velero_schedule;

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The Velero namespace: policies live there and backups are created there.
    pub namespace: String,
    /// The longest time between two reconciles of a policy (its RPO series are refreshed then).
    pub tick: Duration,
    /// Verification attempts for transient failures (object storage unreachable).
    pub verify_attempts: u32,
    /// Wait between transient verification attempts.
    pub verify_backoff: Duration,
}

impl ServiceConfig {
    /// Defaults for `namespace`.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            tick: Duration::from_secs(15),
            verify_attempts: 5,
            verify_backoff: Duration::from_secs(30),
        }
    }
}

/// The shortest requeue: a policy whose next moment is now is looked at again this soon.
const MIN_REQUEUE: Duration = Duration::from_millis(200);
/// The first wait after a failed reconcile; it doubles with each further failure.
const ERROR_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait after failed reconciles.
const MAX_ERROR_BACKOFF: Duration = Duration::from_mins(5);
/// How long a backup the standby refused (or could not restore) waits before it is tried again.
const STANDBY_RETRY: Duration = Duration::from_mins(5);
/// How long a stopping service waits for running verifications to publish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The scheduler service.
pub struct Service {
    client: Client,
    config: ServiceConfig,
    clock: Arc<dyn Clock>,
    life: Arc<BackupLife>,
    verifications: Verifications,
    /// Spawned verifications, waited for at shutdown.
    tasks: TaskTracker,
    /// Failures already counted, so a metric counts each backup once per process.
    counted: Mutex<HashSet<String>>,
    /// Consecutive failed reconciles per policy, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What one reconcile found for one policy, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyOutcome {
    Invalid {
        reason: String,
    },
    Paused,
    /// This site may not make backups now: another site is active (`SiteNotActive`), or the
    /// active-site record cannot be used (`ActiveSite…`).
    NotActive {
        reason: String,
    },
    Running {
        backup: String,
    },
    Created {
        backup: String,
    },
    AlreadyExists {
        backup: String,
    },
    /// The backup due has a name another site's Backup already has; nothing was created.
    Foreign {
        backup: String,
        site: Option<String>,
    },
    Waiting,
    /// The policy follows this Velero Schedule, which makes its backups; nothing was created.
    Following {
        schedule: String,
    },
}

/// Why a reconcile failed; it is retried with a backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("the Backup cache stopped")]
    CacheGone(#[from] WriterDropped),
}

/// A policy that may be scheduled: validated, at a known site, with its environment in place.
struct Admitted {
    valid: ValidPolicy,
    site: String,
    /// Whether this site may create backups: the `Ready` condition's reason and message when not.
    active: Result<(), (&'static str, String)>,
    /// The site the active-site record names, when it could be read.
    active_site: Option<String>,
}

/// What reconciles share: the service, the Backup cache, and whether this replica leads.
struct Context {
    service: Arc<Service>,
    backups: Store<DynamicObject>,
    /// A store's readiness wakes only the last of several concurrent waiters (one oneshot
    /// receiver behind it), so reconciles wait for the Backup cache one at a time.
    backups_ready: tokio::sync::Mutex<()>,
    leader: watch::Receiver<bool>,
}

impl Service {
    /// A service; `publisher` carries the metrics.
    pub fn new(
        client: Client,
        config: ServiceConfig,
        clock: Arc<dyn Clock>,
        publisher: Arc<Publisher>,
    ) -> Self {
        let life = BackupLife::new(
            client.clone(),
            config.namespace.clone(),
            publisher,
            Arc::clone(&clock),
        );
        Self {
            client,
            config,
            clock,
            life: Arc::new(life),
            verifications: Verifications::default(),
            tasks: TaskTracker::new(),
            counted: Mutex::default(),
            failures: Mutex::default(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Reconciles every policy now (the controller, once running, does).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn policies(&self) -> Api<BackupPolicy> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    fn backups(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.config.namespace,
            &velero::backup_resource(),
        )
    }

    fn publisher(&self) -> &Publisher {
        self.life.publisher()
    }

    /// Runs the controller until `shutdown` is cancelled, then waits for running verifications
    /// to publish. Writes only while `leader` is true; RPO metrics are kept on every replica.
    pub async fn run(self: Arc<Self>, leader: watch::Receiver<bool>, shutdown: CancellationToken) {
        let (policies, policy_cache) = reflector::store();
        let policy_events = watcher(self.policies(), watcher::Config::default())
            .default_backoff()
            .reflect(policy_cache)
            // Deletions too: a deleted policy's reconcile finds it gone and drops its series.
            .touched_objects();
        let backup_cache = reflector::store::Writer::new(velero::backup_resource());
        let backups = backup_cache.as_reader();
        // Every Backup labelled with a policy: the scheduler's own, and those of the Velero
        // Schedules policies follow ([`belongs`] sorts them out per policy).
        let backup_events = watcher(
            self.backups(),
            watcher::Config::default().labels(velero::LABEL_POLICY),
        )
        .default_backoff()
        .reflect(backup_cache)
        .touched_objects();
        let everything = futures::stream::select(
            changes(leader.clone()),
            notifications(Arc::clone(&self.wake)),
        );
        let context = Arc::new(Context {
            service: Arc::clone(&self),
            backups,
            backups_ready: tokio::sync::Mutex::new(()),
            leader,
        });
        Controller::for_stream(policy_events, policies)
            .watches_stream_with(backup_events, policy_of, velero::backup_resource())
            .reconcile_all_on(everything)
            .graceful_shutdown_on(shutdown.cancelled_owned())
            .run(reconcile, error_policy, context)
            .for_each(|result| {
                self.reconciled(result);
                std::future::ready(())
            })
            .await;
        self.tasks.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.tasks.len(),
                "verifications still running at shutdown"
            );
        }
        tracing::info!("scheduler stopped");
    }

    /// Logs a reconcile's end; a policy gone from the cache drops its series.
    fn reconciled(
        &self,
        result: Result<
            (ObjectRef<BackupPolicy>, Action),
            controller::Error<ReconcileError, watcher::Error>,
        >,
    ) {
        match result {
            Ok((policy, action)) => tracing::debug!(policy = %policy.name, ?action, "reconciled"),
            Err(controller::Error::ObjectNotFound(policy)) => self.forget(&policy.name),
            // Logged by the error policy, which also chose the backoff.
            Err(controller::Error::ReconcilerFailed(..)) => {}
            Err(error) => tracing::warn!(%error, "controller error"),
        }
    }

    /// Drops what this replica keeps about a deleted policy: its RPO series and error count.
    pub fn forget(&self, policy: &str) {
        self.publisher().metrics.rpo.forget(policy);
        self.publisher().metrics.standby.forget(policy);
        self.failures.lock().expect("not poisoned").remove(policy);
        tracing::info!(policy, "policy deleted; its RPO series are dropped");
    }

    /// Refreshes a policy's RPO series from its status.
    fn update_rpo(&self, policy: &BackupPolicy, now: Timestamp) {
        let Ok(valid) = ValidPolicy::from_policy(policy) else {
            return;
        };
        let interval = valid
            .schedule
            .expected_interval(now, &valid.zone)
            .as_secs_f64();
        let last = policy
            .status
            .as_ref()
            .and_then(|s| s.last_verified_time.as_deref())
            .and_then(|t| t.parse::<Timestamp>().ok());
        let since = last.unwrap_or(valid.created);
        let age = now.duration_since(since).as_secs_f64().max(0.0);
        #[expect(
            clippy::cast_precision_loss,
            reason = "Unix seconds fit an f64 exactly"
        )]
        let last = last.map(|t| t.as_second() as f64);
        let rpo = &self.publisher().metrics.rpo;
        rpo.set(&valid.name, last, age, interval);
        rpo.set_paused(&valid.name, policy.spec.paused);
    }

    /// How long until `next`, within [`MIN_REQUEUE`] and the tick.
    fn requeue_after(&self, next: Option<Timestamp>, now: Timestamp) -> Duration {
        let until = next.map_or(self.config.tick, |next| {
            if next > now {
                next.duration_since(now).unsigned_abs()
            } else {
                Duration::ZERO
            }
        });
        until.clamp(MIN_REQUEUE, self.config.tick.max(MIN_REQUEUE))
    }

    /// Brings one policy forward, reading its Backups from the API server (the controller reads
    /// them from its cache); returns what happened and when it next needs attention.
    pub async fn reconcile(
        &self,
        policy: &BackupPolicy,
        now: Timestamp,
    ) -> Result<(PolicyOutcome, Option<Timestamp>), kube::Error> {
        // A name too long for a label value is refused in `admit`; it must not fail the list.
        let selector = format!(
            "{}={}",
            velero::LABEL_POLICY,
            replicadr_core::names::label_value(&policy.name_any())
        );
        let backups = self
            .backups()
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .iter()
            .filter(|b| {
                belongs(
                    b,
                    &policy.name_any(),
                    policy.spec.velero_schedule.as_deref(),
                )
            })
            .map(BackupView::from_object)
            .collect();
        self.reconcile_with(policy, backups, now).await
    }

    /// Brings one policy forward with `backups`, every Backup labelled with its name.
    async fn reconcile_with(
        &self,
        policy: &BackupPolicy,
        backups: Vec<BackupView>,
        now: Timestamp,
    ) -> Result<(PolicyOutcome, Option<Timestamp>), kube::Error> {
        let admitted = match self.admit(policy, now).await? {
            Ok(admitted) => admitted,
            Err(outcome) => return Ok((outcome, None)),
        };
        let standby = Box::pin(self.standby(policy, &admitted, &backups, now)).await?;
        let backups = own_backups(backups, &admitted.site);
        let attention = earliest(
            self.follow_all(policy, &admitted, &backups, now).await?,
            standby,
        );
        if let Some(schedule) = admitted.valid.follows() {
            let (outcome, wake) = self
                .follow_schedule(policy, &admitted, schedule, backups.last(), now)
                .await?;
            return Ok((outcome, earliest(attention, wake)));
        }
        if let Some(running) = backups.iter().find(|b| b.class == PhaseClass::Running) {
            // Forbid: never two running. The Backup's watch brings the policy back when it ends.
            let message = format!("backup {} is running", running.name);
            self.ready(policy, &admitted, now, "BackupRunning", message)
                .await?;
            let outcome = PolicyOutcome::Running {
                backup: running.name.clone(),
            };
            return Ok((outcome, Some(now + self.config.tick)));
        }
        if admitted.valid.paused {
            let message = "spec.paused is true: no new backups, retries included".to_owned();
            self.ready(policy, &admitted, now, "Paused", message)
                .await?;
            return Ok((PolicyOutcome::Paused, attention));
        }
        if let Err((reason, message)) = &admitted.active {
            // Looked at again every tick: a failback (or a repaired record) lets it go on.
            self.not_ready(policy, reason, message, now).await?;
            let outcome = PolicyOutcome::NotActive {
                reason: (*reason).to_owned(),
            };
            return Ok((outcome, earliest(attention, Some(now + self.config.tick))));
        }
        let retry = due_retry(&admitted.valid, &backups, now);
        if let Some(retry) = &retry
            && now >= retry.at
        {
            return self.start_retry(&admitted, retry, now).await;
        }
        let (outcome, wake) = self.schedule_slot(policy, &admitted, &backups, now).await?;
        let retry_at = retry.map(|r| r.at);
        Ok((outcome, earliest(earliest(wake, attention), retry_at)))
    }

    /// Validates the policy, finds this site's name and checks the environment; a refusal is
    /// written to the Ready condition and returned as the outcome.
    async fn admit(
        &self,
        policy: &BackupPolicy,
        now: Timestamp,
    ) -> Result<Result<Admitted, PolicyOutcome>, kube::Error> {
        let refuse = |reason: &str| {
            Err(PolicyOutcome::Invalid {
                reason: reason.to_owned(),
            })
        };
        let valid = match ValidPolicy::from_policy(policy) {
            Ok(valid) => valid,
            Err(error) => {
                let reason = error.reason();
                self.not_ready(policy, reason, &error.to_string(), now)
                    .await?;
                return Ok(refuse(reason));
            }
        };
        let config = match self.life.site_config(&valid).await {
            Ok(config) => config,
            Err(SiteError::Unreadable { source, .. }) => return Err(source),
            Err(error) => {
                let message = format!(
                    "{error}; every Backup is labelled {} with this site's name",
                    velero::LABEL_SITE
                );
                self.not_ready(policy, "UnknownLocalSite", &message, now)
                    .await?;
                return Ok(refuse("UnknownLocalSite"));
            }
        };
        let (active, active_site) = self.standing(&valid, &config).await;
        if let Err((reason, message)) =
            environment::check(&self.client, &self.config.namespace, &valid).await?
        {
            // At a site that is not active the policy's namespaces may not exist yet: only a
            // restore (its warm standby's, or a failover's) makes them there.
            let standby_site = matches!(active, Err(("SiteNotActive", _)));
            if !(standby_site && reason == "NothingSelected") {
                self.not_ready(policy, reason, &message, now).await?;
                return Ok(refuse(reason));
            }
        }
        let site = config.local_site.as_str().to_owned();
        Ok(Ok(Admitted {
            valid,
            site,
            active,
            active_site,
        }))
    }

    /// Whether this site may create `valid`'s backups, from the active-site record; exported as
    /// `replicadr_policy_standby` and `replicadr_active_site_record_error`.
    async fn standing(
        &self,
        valid: &ValidPolicy,
        config: &SiteConfig,
    ) -> (Result<(), (&'static str, String)>, Option<String>) {
        let local = config.local_site.as_str();
        let (standing, active_site) = match self.life.active_site(valid, &config.site_map).await {
            Ok(record) => (
                record
                    .allows(local)
                    .map_err(|message| ("SiteNotActive", message)),
                Some(record.site),
            ),
            Err(error) => (Err((error.reason(), error.to_string())), None),
        };
        let standby = matches!(standing, Err(("SiteNotActive", _)));
        self.publisher().metrics.rpo.set_standing(
            &valid.name,
            standby,
            standing.is_err() && !standby,
        );
        (standing, active_site)
    }

    /// The warm standby of a policy with `spec.standby.enabled`, at a site that is not active:
    /// when the active site's newest completed backup of the policy is not the one the standby
    /// holds (and was not refused lately), a refresh runs ([`standby::refresh`]) and its result
    /// goes to the status, an Event and the metrics. Returns when to look again.
    async fn standby(
        &self,
        policy: &BackupPolicy,
        admitted: &Admitted,
        backups: &[BackupView],
        now: Timestamp,
    ) -> Result<Option<Timestamp>, kube::Error> {
        let valid = &admitted.valid;
        let metrics = &self.publisher().metrics.standby;
        let status = policy.status.clone().unwrap_or_default();
        let had = status.condition(condition::STANDBY_READY).is_some();
        let source = match (&admitted.active, &admitted.active_site) {
            (Err(("SiteNotActive", _)), Some(source)) if valid.standby => source.clone(),
            _ => {
                metrics.forget(&valid.name);
                if had {
                    let message = if valid.standby {
                        "this site is the active one (or the active-site record cannot be read): a standby is kept only at a site that is not active"
                    } else {
                        "spec.standby.enabled is not true: nothing more is restored here; `replicadr clean --standby --policy <policy> --apply` removes what the standby made"
                    };
                    let reason = if valid.standby {
                        "SiteActive"
                    } else {
                        "StandbyDisabled"
                    };
                    self.standby_condition(policy, false, reason, message, now)
                        .await?;
                }
                return Ok(None);
            }
        };
        let held = status.standby.clone().unwrap_or_default();
        let since = held
            .recovery_point
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .unwrap_or(valid.created);
        let lag = now.duration_since(since).as_secs_f64().max(0.0);
        let ready = status
            .condition(condition::STANDBY_READY)
            .is_some_and(|c| c.status == "True");
        metrics.set(&valid.name, lag, ready);
        let newest = backups
            .iter()
            .filter(|b| b.class == PhaseClass::Succeeded)
            .filter(|b| {
                backup_site::site_name(b, &admitted.site).as_deref() == Some(source.as_str())
            })
            .max_by_key(|b| (b.recovery_point(), b.name.clone()));
        let Some(newest) = newest else {
            if !had {
                let message = format!(
                    "no completed backup of this policy made at the active site {source} is here yet (Velero syncs them from the bucket)"
                );
                self.standby_condition(policy, false, "NoBackupYet", &message, now)
                    .await?;
            }
            return Ok(Some(now + self.config.tick));
        };
        if held.backup.as_deref() == Some(newest.name.as_str()) {
            // Held, as long as its Restore is still the newest here (Velero deletes a Restore
            // with its expired Backup; someone may have deleted it): otherwise refreshed anew.
            let present = standby::held(
                &self.client,
                &self.config.namespace,
                &admitted.site,
                &valid.name,
            )
            .await?
            .is_some_and(|h| held.restore.as_ref() == Some(&h.restore));
            if present {
                return Ok(None);
            }
            tracing::warn!(policy = %valid.name, restore = ?held.restore, "the standby's Restore is gone: refreshing anew");
        }
        let refused_lately = held.refused_backup.as_deref() == Some(newest.name.as_str())
            && held
                .refused_time
                .as_deref()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .is_some_and(|t| now.duration_since(t).unsigned_abs() < STANDBY_RETRY);
        if refused_lately {
            return Ok(Some(now + STANDBY_RETRY));
        }
        let options = standby::StandbyOptions::new(&admitted.site, &valid.name, &source);
        let mut progress = |line: String| tracing::info!(policy = %valid.name, "standby: {line}");
        let refreshed = Box::pin(standby::refresh(
            &self.client,
            &self.config.namespace,
            &options,
            &mut progress,
        ))
        .await;
        self.standby_outcome(policy, &newest.name, refreshed, now)
            .await?;
        Ok(Some(now + self.config.tick))
    }

    /// Writes a refresh's outcome to the policy's status, an Event and the metrics.
    async fn standby_outcome(
        &self,
        policy: &BackupPolicy,
        newest: &str,
        refreshed: Result<standby::Refresh, crate::recovery::site::RecoveryError>,
        now: Timestamp,
    ) -> Result<(), kube::Error> {
        let name = policy.name_any();
        let earlier_problems = policy
            .status
            .as_ref()
            .and_then(|s| s.standby.as_ref())
            .map(|s| s.problems.clone())
            .unwrap_or_default();
        let (ok, reason, message) = match &refreshed {
            // Still the backup whose restore had problems: still not ready.
            Ok(standby::Refresh::UpToDate { backup, .. }) if !earlier_problems.is_empty() => (
                false,
                "StandbyProblems",
                format!(
                    "the standby holds backup {backup}, restored with problems: {}",
                    earlier_problems.join("; ")
                ),
            ),
            Ok(refresh) => refresh.condition(),
            Err(error) => (
                false,
                "StandbyRefreshFailed",
                format!("cannot refresh the standby with backup {newest}: {error}"),
            ),
        };
        self.publisher()
            .update_status(&name, |_, status| {
                let standby = status.standby.get_or_insert_with(Default::default);
                match &refreshed {
                    Ok(refresh) => refresh.record(standby, newest, now),
                    Err(_) => standby::refused(standby, newest, now),
                }
            })
            .await?;
        if let Ok(standby::Refresh::Restored(restored)) = &refreshed
            && restored.held
        {
            self.publisher()
                .metrics
                .standby
                .restored(&name, restored.seconds);
        }
        self.publisher()
            .event(policy, !ok, reason, message.clone())
            .await;
        self.standby_condition(policy, ok, reason, &message, now)
            .await
    }

    async fn standby_condition(
        &self,
        policy: &BackupPolicy,
        ok: bool,
        reason: &str,
        message: &str,
        now: Timestamp,
    ) -> Result<(), kube::Error> {
        self.publisher()
            .update_status(&policy.name_any(), |current, status| {
                status.set_condition(
                    condition::STANDBY_READY,
                    ok,
                    reason,
                    message,
                    current.metadata.generation,
                    now,
                );
            })
            .await
    }

    /// Follows each backup along; returns the earliest time one of them needs attention.
    async fn follow_all(
        &self,
        policy: &BackupPolicy,
        admitted: &Admitted,
        backups: &[BackupView],
        now: Timestamp,
    ) -> Result<Option<Timestamp>, kube::Error> {
        let mut attention = None;
        for backup in backups {
            let at = self.follow(policy, &admitted.valid, backup, now).await?;
            attention = earliest(attention, at);
        }
        Ok(attention)
    }

    /// Watches one backup along: reports its end, times it out, starts its verification.
    /// Returns when it next needs attention.
    async fn follow(
        &self,
        policy: &BackupPolicy,
        valid: &ValidPolicy,
        backup: &BackupView,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, kube::Error> {
        match backup.class {
            PhaseClass::Running => {
                self.check_timeout(policy, valid, backup, now).await?;
                Ok(None)
            }
            PhaseClass::Deleting => Ok(None),
            PhaseClass::Succeeded | PhaseClass::Failed => {
                if backup.verified.is_some() {
                    self.verifications.settled(&backup.name);
                    return Ok(None);
                }
                if self.first_time(&format!("finished/{}", backup.name)) {
                    self.life.finished(policy, valid, backup).await?;
                }
                if let Some(at) = self.verification_backoff(backup, now) {
                    return Ok(Some(at));
                }
                self.spawn_verification(policy, valid, backup);
                Ok(None)
            }
        }
    }

    /// A policy that follows a Velero Schedule creates nothing: its `Ready` condition says whether
    /// the Schedule makes backups that are the policy's, here and now.
    async fn follow_schedule(
        &self,
        policy: &BackupPolicy,
        admitted: &Admitted,
        schedule: &str,
        newest: Option<&BackupView>,
        now: Timestamp,
    ) -> Result<(PolicyOutcome, Option<Timestamp>), kube::Error> {
        let namespace = &self.config.namespace;
        let recorded = policy
            .status
            .as_ref()
            .and_then(|s| s.last_backup.as_deref());
        if let Some(newest) = newest
            && recorded != Some(newest.name.as_str())
        {
            // The Schedule's newest backup made here is the policy's newest, as its own would be.
            self.publisher()
                .update_status(&admitted.valid.name, |_, status| {
                    status.last_backup = Some(newest.name.clone());
                    status.site = Some(admitted.site.clone());
                })
                .await?;
        }
        let next = Some(now + self.config.tick);
        let refuse = |reason: &str| PolicyOutcome::Invalid {
            reason: reason.to_owned(),
        };
        let found = Api::<DynamicObject>::namespaced_with(
            self.client.clone(),
            namespace,
            &velero::schedule_resource(),
        )
        .get_opt(schedule)
        .await?;
        let standing = admitted.active.as_ref().err();
        let not_active = |reason: &str| PolicyOutcome::NotActive {
            reason: reason.to_owned(),
        };
        let Some(found) = found else {
            // At a standby site the Schedule may well exist only at the active one.
            if let Some((reason, message)) = standing {
                self.not_ready(policy, reason, message, now).await?;
                return Ok((not_active(reason), next));
            }
            let reason = "VeleroScheduleNotFound";
            let message = format!(
                "Velero Schedule {namespace}/{schedule} (spec.veleroSchedule) does not exist, so no backups are made for this policy: create it, or remove spec.veleroSchedule to let the policy make its own"
            );
            self.not_ready(policy, reason, &message, now).await?;
            return Ok((refuse(reason), next));
        };
        let paused = velero_schedule::paused(&found);
        // Checked at a standby site too: a Schedule there labelled with the other site's name
        // would make this site's state pass for the other's.
        let lacks = velero_schedule::lacks(
            &found,
            &policy.spec.schedule,
            &admitted.valid,
            &admitted.site,
        );
        if !lacks.is_empty() {
            let reason = "VeleroScheduleIncomplete";
            let message = format!(
                "Velero Schedule {namespace}/{schedule} (spec.veleroSchedule) makes backups this policy cannot take as its own: {}",
                lacks.join("; ")
            );
            self.not_ready(policy, reason, &message, now).await?;
            return Ok((refuse(reason), next));
        }
        if let Some((reason, message)) = standing {
            // Velero's Schedule runs whatever the record says; only its own pause stops it.
            let message = if *reason == "SiteNotActive" && !paused {
                format!(
                    "{message}; Velero Schedule {namespace}/{schedule} is not paused here, so it goes on backing up this site's state: pause it (velero schedule pause {schedule})"
                )
            } else {
                message.clone()
            };
            self.not_ready(policy, reason, &message, now).await?;
            return Ok((not_active(reason), next));
        }
        if paused {
            let reason = "VeleroSchedulePaused";
            let message = format!(
                "Velero Schedule {namespace}/{schedule} is paused (spec.paused), so this site, the active one, makes no backups for this policy: unpause it (velero schedule unpause {schedule})"
            );
            self.not_ready(policy, reason, &message, now).await?;
            return Ok((refuse(reason), next));
        }
        let valid = &admitted.valid;
        let message = valid.schedule.next_slot(now, &valid.zone).map_or_else(
            || format!("backups come from Velero Schedule {schedule}"),
            |n| format!("backups come from Velero Schedule {schedule}; the next is due at {n}"),
        );
        self.ready(policy, admitted, now, "FollowingVeleroSchedule", message)
            .await?;
        let outcome = PolicyOutcome::Following {
            schedule: schedule.to_owned(),
        };
        Ok((outcome, next))
    }

    /// Reports a running backup past `spec.backupTimeout`, once per process.
    async fn check_timeout(
        &self,
        policy: &BackupPolicy,
        valid: &ValidPolicy,
        backup: &BackupView,
        now: Timestamp,
    ) -> Result<(), kube::Error> {
        let age = backup
            .created
            .map_or(Duration::ZERO, |c| now.duration_since(c).unsigned_abs());
        if age > valid.backup_timeout && self.first_time(&format!("timeout/{}", backup.name)) {
            self.life.timed_out(policy, valid, backup, age).await?;
        }
        Ok(())
    }

    /// After a transient verification failure: when the next attempt is due, if not yet.
    fn verification_backoff(&self, backup: &BackupView, now: Timestamp) -> Option<Timestamp> {
        let failed = backup.verification_attempts.checked_sub(1)?;
        let wait = self.config.verify_backoff * 2_u32.saturating_pow(failed.min(8));
        let at = backup.verified_at? + wait;
        (now < at).then_some(at)
    }

    fn first_time(&self, key: &str) -> bool {
        self.counted
            .lock()
            .expect("not poisoned")
            .insert(key.to_owned())
    }

    /// Verifies `backup` in a task of its own, unless one is running or its result is not in
    /// the cache yet.
    fn spawn_verification(&self, policy: &BackupPolicy, valid: &ValidPolicy, backup: &BackupView) {
        if !self.verifications.start(backup) {
            return;
        }
        let life = Arc::clone(&self.life);
        let verifications = self.verifications.clone();
        let (policy, valid, backup) = (policy.clone(), valid.clone(), backup.clone());
        let final_attempt = backup.verification_attempts + 1 >= self.config.verify_attempts;
        self.tasks.spawn(async move {
            match life.verify(&policy, &valid, &backup, final_attempt).await {
                Ok(report) => {
                    let transient = report.is_transient() && !final_attempt;
                    verifications.published(&backup, transient);
                }
                Err(error) => {
                    tracing::warn!(backup = %backup.name, %error, "cannot verify");
                    verifications.settled(&backup.name);
                }
            }
        });
    }

    /// Creates the retry due.
    async fn start_retry(
        &self,
        admitted: &Admitted,
        retry: &Retry,
        now: Timestamp,
    ) -> Result<(PolicyOutcome, Option<Timestamp>), kube::Error> {
        let outcome = self
            .create(admitted, &retry.name, retry.slot, retry.attempt)
            .await?;
        Ok((outcome, Some(now + self.config.tick)))
    }

    async fn create(
        &self,
        admitted: &Admitted,
        name: &str,
        slot: Timestamp,
        attempt: u32,
    ) -> Result<PolicyOutcome, kube::Error> {
        let created = self
            .life
            .create(&admitted.valid, &admitted.site, name, Some(slot), attempt)
            .await?;
        let backup = name.to_owned();
        Ok(match created {
            Created::New => PolicyOutcome::Created { backup },
            Created::Existed => PolicyOutcome::AlreadyExists { backup },
            Created::Foreign { site } => PolicyOutcome::Foreign { backup, site },
        })
    }

    /// Decides the newest slot: waits for it, skips it or starts its backup; then reports the
    /// policy scheduled.
    async fn schedule_slot(
        &self,
        policy: &BackupPolicy,
        admitted: &Admitted,
        backups: &[BackupView],
        now: Timestamp,
    ) -> Result<(PolicyOutcome, Option<Timestamp>), kube::Error> {
        let valid = &admitted.valid;
        let jitter_for = |slot| schedule::jitter(&valid.uid, slot, valid.jitter_seconds);
        let slot_now = valid.schedule.slot_at_or_before(now, &valid.zone);
        let state = SlotState {
            schedule: &valid.schedule,
            zone: &valid.zone,
            last_slot: last_slot(policy, backups),
            created: valid.created,
            missed_run_policy: valid.missed_run_policy,
            starting_deadline: crate::policy::DEFAULT_STARTING_DEADLINE,
            jitter: slot_now.map(jitter_for).unwrap_or_default(),
        };
        let (outcome, wake) = match schedule::decide(&state, now) {
            Decision::Wait { next } => (PolicyOutcome::Waiting, next.map(|n| n + jitter_for(n))),
            Decision::Jitter { at, .. } => (PolicyOutcome::Waiting, Some(at)),
            Decision::Skip { slot, missed, next } => {
                self.skip_slot(valid, slot, missed).await?;
                (PolicyOutcome::Waiting, next)
            }
            Decision::Run { slot, missed } => {
                if missed > 0 {
                    tracing::info!(policy = %valid.name, %slot, missed, "slots were missed; running the newest");
                    self.publisher().metrics.backup.missed(&valid.name, missed);
                }
                let name = schedule::slot_backup_name(&valid.name, slot);
                let outcome = self.create(admitted, &name, slot, 0).await?;
                (outcome, Some(now + self.config.tick))
            }
        };
        let message = valid.schedule.next_slot(now, &valid.zone).map_or_else(
            || "the schedule has no further slots".to_owned(),
            |n| format!("next backup at {n}"),
        );
        self.ready(policy, admitted, now, "Scheduled", message)
            .await?;
        Ok((outcome, wake))
    }

    /// A slot too late under `missedRunPolicy: Skip`: counted, and recorded as the last one.
    async fn skip_slot(
        &self,
        valid: &ValidPolicy,
        slot: Timestamp,
        missed: u32,
    ) -> Result<(), kube::Error> {
        tracing::info!(policy = %valid.name, %slot, missed, "slot too late under missedRunPolicy Skip");
        self.publisher().metrics.backup.missed(&valid.name, missed);
        self.publisher()
            .update_status(&valid.name, |_, status| {
                status.last_schedule_time = Some(slot.to_string());
            })
            .await
    }

    async fn not_ready(
        &self,
        policy: &BackupPolicy,
        reason: &str,
        message: &str,
        now: Timestamp,
    ) -> Result<(), kube::Error> {
        let changed = policy
            .status
            .as_ref()
            .and_then(|s| s.condition(condition::READY))
            .is_none_or(|c| c.status != "False" || c.reason != reason || c.message != message);
        self.publisher()
            .update_status(&policy.name_any(), |current, status| {
                status.set_condition(
                    condition::READY,
                    false,
                    reason,
                    message,
                    current.metadata.generation,
                    now,
                );
                status.observed_generation = current.metadata.generation;
                status.next_schedule_time = None;
            })
            .await?;
        if changed {
            tracing::warn!(policy = %policy.name_any(), reason, message, "policy not ready");
            self.publisher()
                .event(policy, true, reason, message.to_owned())
                .await;
        }
        Ok(())
    }

    async fn ready(
        &self,
        policy: &BackupPolicy,
        admitted: &Admitted,
        now: Timestamp,
        reason: &str,
        message: String,
    ) -> Result<(), kube::Error> {
        let valid = &admitted.valid;
        let next = valid.schedule.next_slot(now, &valid.zone);
        let interval = valid.schedule.expected_interval(now, &valid.zone).as_secs();
        self.publisher()
            .update_status(&policy.name_any(), |current, status| {
                status.set_condition(
                    condition::READY,
                    true,
                    reason,
                    message,
                    current.metadata.generation,
                    now,
                );
                status.observed_generation = current.metadata.generation;
                status.next_schedule_time = next.map(|n| n.to_string());
                status.expected_interval_seconds = Some(interval);
                status.site = Some(admitted.site.clone());
            })
            .await
    }
}

/// One policy's reconcile under the controller: RPO series on every replica; the rest only on
/// the leader, from the caches.
async fn reconcile(
    policy: Arc<BackupPolicy>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let service = &context.service;
    let name = policy.name_any();
    if policy.metadata.deletion_timestamp.is_some() {
        service.forget(&name);
        return Ok(Action::await_change());
    }
    let now = service.clock.now();
    service.update_rpo(&policy, now);
    if !*context.leader.borrow() {
        return Ok(Action::requeue(service.config.tick));
    }
    {
        let _turn = context.backups_ready.lock().await;
        context.backups.wait_until_ready().await?;
    }
    let backups = backups_of(
        &context.backups,
        &name,
        policy.spec.velero_schedule.as_deref(),
    );
    let (outcome, next) = service.reconcile_with(&policy, backups, now).await?;
    tracing::debug!(policy = %name, ?outcome, "reconciled");
    service.failures.lock().expect("not poisoned").remove(&name);
    Ok(Action::requeue(service.requeue_after(next, now)))
}

/// After a failed reconcile: try again after a backoff that doubles with each failure in a row.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the signature the controller calls"
)]
fn error_policy(
    policy: Arc<BackupPolicy>,
    error: &ReconcileError,
    context: Arc<Context>,
) -> Action {
    let name = policy.name_any();
    let mut failures = context.service.failures.lock().expect("not poisoned");
    let count = failures.entry(name.clone()).or_default();
    let wait = ERROR_BACKOFF
        .saturating_mul(2_u32.saturating_pow((*count).min(16)))
        .min(MAX_ERROR_BACKOFF);
    *count += 1;
    tracing::warn!(policy = %name, %error, retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

/// The policy a Backup belongs to, by its label.
#[expect(
    clippy::needless_pass_by_value,
    reason = "the signature the controller calls"
)]
fn policy_of(backup: DynamicObject) -> Option<ObjectRef<BackupPolicy>> {
    let policy = backup.labels().get(velero::LABEL_POLICY)?;
    Some(ObjectRef::new(policy).within(&backup.namespace()?))
}

/// The cached Backups of `policy` ([`belongs`]).
fn backups_of(
    cache: &Store<DynamicObject>,
    policy: &str,
    follows: Option<&str>,
) -> Vec<BackupView> {
    cache
        .state()
        .iter()
        .filter(|b| belongs(b, policy, follows))
        .map(|b| BackupView::from_object(b))
        .collect()
}

/// Whether `backup` is one of `policy`'s ([`velero::is_policy_backup`]): any other Backup that
/// happens to carry the policy label is never followed, retried or published.
fn belongs(backup: &DynamicObject, policy: &str, follows: Option<&str>) -> bool {
    velero::is_policy_backup(backup.labels(), policy, follows)
}

/// The Backups made at `site`, oldest first. Another site's Backups (synced through the shared
/// bucket) are never followed, retried, verified or published here.
fn own_backups(backups: Vec<BackupView>, site: &str) -> Vec<BackupView> {
    let mut own: Vec<BackupView> = backups
        .into_iter()
        .filter(|b| backup_site::origin(b, site).is_here())
        .collect();
    own.sort_by_key(|b| (b.created, b.name.clone()));
    own
}

/// A unit on every change of `leader` (winning the lease reconciles everything at once).
fn changes(leader: watch::Receiver<bool>) -> impl futures::Stream<Item = ()> + Send {
    futures::stream::unfold(leader, |mut leader| async move {
        leader.changed().await.ok()?;
        Some(((), leader))
    })
}

/// A unit each time `notify` is notified.
fn notifications(notify: Arc<Notify>) -> impl futures::Stream<Item = ()> + Send {
    futures::stream::unfold(notify, |notify| async move {
        notify.notified().await;
        Some(((), notify))
    })
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The newest slot started: from the status, or from the Backups if the status write was lost.
fn last_slot(policy: &BackupPolicy, backups: &[BackupView]) -> Option<Timestamp> {
    let from_status = policy
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_deref())
        .and_then(|t| t.parse::<Timestamp>().ok());
    let from_backups = backups
        .iter()
        .filter_map(|b| b.slot.as_deref()?.parse::<Timestamp>().ok())
        .max();
    match (from_status, from_backups) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// A retry of the newest slot's failed backup.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Retry {
    name: String,
    slot: Timestamp,
    attempt: u32,
    /// When its backoff is over.
    at: Timestamp,
}

/// The retry due for the newest slot, if its newest attempt failed.
fn due_retry(valid: &ValidPolicy, backups: &[BackupView], now: Timestamp) -> Option<Retry> {
    if valid.retry_limit == 0 {
        return None;
    }
    let slot_of = |b: &BackupView| b.slot.as_deref()?.parse::<Timestamp>().ok();
    let newest_slot = backups.iter().filter_map(slot_of).max()?;
    let newest = backups
        .iter()
        .filter(|b| slot_of(b) == Some(newest_slot))
        .max_by_key(|b| b.attempt)?;
    if newest.class != PhaseClass::Failed || newest.attempt >= valid.retry_limit {
        return None;
    }
    // Past the next slot a retry would only delay it.
    if valid
        .schedule
        .next_slot(newest_slot, &valid.zone)
        .is_some_and(|next| now >= next)
    {
        return None;
    }
    let attempt = newest.attempt + 1;
    let backoff = valid.retry_backoff * 2_u32.saturating_pow(newest.attempt.min(8));
    Some(Retry {
        name: schedule::retry_backup_name(&valid.name, newest_slot, attempt),
        slot: newest_slot,
        attempt,
        at: newest.completed.or(newest.created).unwrap_or(now) + backoff,
    })
}

/// Verifications this process started, until the cache shows their result: a reconcile reading
/// a cache that has not seen the result yet must not verify the same backup again.
#[derive(Debug, Clone, Default)]
struct Verifications(Arc<Mutex<HashMap<String, Verification>>>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verification {
    Running,
    /// Published; a transient failure shows once the Backup has this many attempts, a final
    /// result (`None`) once it is marked verified.
    Published {
        attempts: Option<u32>,
    },
}

impl Verifications {
    /// Whether to start verifying `backup`; if so, it is marked running.
    fn start(&self, backup: &BackupView) -> bool {
        let mut map = self.0.lock().expect("not poisoned");
        let startable = match map.get(&backup.name) {
            None => true,
            Some(Verification::Running) => false,
            Some(Verification::Published { attempts }) => {
                attempts.is_some_and(|seen| backup.verification_attempts >= seen)
            }
        };
        if startable {
            map.insert(backup.name.clone(), Verification::Running);
        }
        startable
    }

    /// The result for `backup` (read with its attempts so far) was published.
    fn published(&self, backup: &BackupView, transient: bool) {
        let attempts = transient.then_some(backup.verification_attempts + 1);
        self.0
            .lock()
            .expect("not poisoned")
            .insert(backup.name.clone(), Verification::Published { attempts });
    }

    /// Nothing more to wait for about `backup`.
    fn settled(&self, backup: &str) {
        self.0.lock().expect("not poisoned").remove(backup);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(name: &str, site: Option<&str>, phase: &str, attempt: u32) -> BackupView {
        let mut labels = json!({});
        if let Some(site) = site {
            labels[velero::LABEL_SITE] = json!(site);
        }
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "velero.io/v1", "kind": "Backup",
            "metadata": {
                "name": name, "namespace": "velero", "labels": labels,
                "creationTimestamp": "2026-01-01T02:00:01Z",
                "annotations": {
                    velero::ANNOTATION_SLOT: "2026-01-01T02:00:00Z",
                    velero::ANNOTATION_ATTEMPT: attempt.to_string(),
                },
            },
            "status": {"phase": phase, "completionTimestamp": "2026-01-01T02:00:09Z"},
        }))
        .expect("backup");
        BackupView::from_object(&object)
    }

    #[test]
    fn only_this_sites_backups_are_acted_on() {
        let backups = vec![
            view("vms-202601010200", Some("primary"), "Failed", 0),
            view("vms-legacy", None, "Completed", 0),
            view("vms-dr", Some("dr"), "Completed", 0),
        ];
        let own: Vec<String> = own_backups(backups, "dr")
            .into_iter()
            .map(|b| b.name)
            .collect();
        assert_eq!(own, ["vms-dr", "vms-legacy"]);
    }

    #[test]
    fn a_verification_is_not_started_twice_before_the_cache_shows_its_result() {
        let verifications = Verifications::default();
        let backup = view("b", Some("primary"), "Completed", 0);
        assert!(verifications.start(&backup));
        assert!(!verifications.start(&backup), "running");
        verifications.published(&backup, true);
        assert!(
            !verifications.start(&backup),
            "the cache has no attempt yet"
        );
        let mut seen = backup.clone();
        seen.verification_attempts = 1;
        assert!(verifications.start(&seen), "the attempt is in the cache");
        verifications.published(&seen, false);
        seen.verification_attempts = 5;
        assert!(!verifications.start(&seen), "final: wait to see it marked");
        verifications.settled("b");
        assert!(verifications.start(&seen));
    }
}
