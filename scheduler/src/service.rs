//! The scheduler service: a level-triggered loop over every `BackupPolicy` of the Velero
//! namespace. Each pass reads the cluster (policies and their Backups, found by label) and does
//! what is due: report invalid policies, watch running backups to a final phase, verify finished
//! ones, retry failed ones, start the backup of a due slot. All state lives in the cluster
//! (status, labels, annotations, deterministic names), so a restart or a second replica resumes
//! exactly where the last one stopped and can never create a slot's backup twice.
//!
//! Watches on policies and Backups wake the loop early; it also wakes at the next slot and at
//! least every `tick`.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::runtime::watcher::{self, watcher};
use kube::{Client, ResourceExt as _};
use tokio::sync::{Notify, watch};

use crate::clock::Clock;
use crate::policy::{BackupPolicy, ValidPolicy, condition};
use crate::publish::Publisher;
use crate::schedule::{self, Decision, SlotState};
use crate::velero::{self, BackupRequest, BackupView, PhaseClass};
use crate::verify::{SiteMapSource, Verifier};

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The Velero namespace: policies live there and backups are created there.
    pub namespace: String,
    /// The longest sleep between passes.
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

/// The scheduler service.
pub struct Service {
    client: Client,
    config: ServiceConfig,
    clock: Arc<dyn Clock>,
    publisher: Arc<Publisher>,
    verifier: Verifier,
    /// Backups being verified by a spawned task.
    verifying: Arc<Mutex<HashSet<String>>>,
    /// Failures already counted, so a metric counts each backup once per process.
    counted: Mutex<HashSet<String>>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What one pass found for one policy, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyOutcome {
    Invalid { reason: String },
    Paused,
    Running { backup: String },
    Created { backup: String },
    AlreadyExists { backup: String },
    Waiting,
}

impl Service {
    /// A service; `publisher` carries the metrics.
    pub fn new(
        client: Client,
        config: ServiceConfig,
        clock: Arc<dyn Clock>,
        publisher: Arc<Publisher>,
    ) -> Self {
        Self {
            verifier: Verifier::new(client.clone(), config.namespace.clone()),
            client,
            config,
            clock,
            publisher,
            verifying: Arc::default(),
            counted: Mutex::default(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Wakes the loop now.
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

    /// Runs until `shutdown` fires. Writes only while `leader` is true; RPO metrics are kept on
    /// every replica.
    pub async fn run(self: Arc<Self>, mut leader: watch::Receiver<bool>, shutdown: Arc<Notify>) {
        let watches = tokio::spawn(Arc::clone(&self).watch_for_changes());
        loop {
            let is_leader = *leader.borrow_and_update();
            let sleep = match self.pass(is_leader).await {
                Ok(sleep) => sleep,
                Err(error) => {
                    tracing::warn!(%error, "pass failed; retrying");
                    self.config.tick
                }
            };
            tokio::select! {
                () = shutdown.notified() => break,
                () = self.wake.notified() => {}
                _ = leader.changed() => {}
                () = tokio::time::sleep(sleep) => {}
            }
        }
        watches.abort();
        // Let running verifications finish their writes before the process exits.
        for _ in 0..100 {
            if self.verifying.lock().expect("not poisoned").is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::info!("scheduler stopped");
    }

    async fn watch_for_changes(self: Arc<Self>) {
        let config = watcher::Config::default();
        let backups = watcher(
            self.backups(),
            config.clone().labels(&format!(
                "{}={}",
                velero::LABEL_MANAGED_BY,
                velero::MANAGED_BY
            )),
        )
        .map(|_| ());
        let policies = watcher(self.policies(), config).map(|_| ());
        let mut events = std::pin::pin!(futures::stream::select(backups, policies));
        while events.next().await.is_some() {
            self.wake.notify_one();
        }
    }

    /// One pass over every policy; returns how long to sleep.
    pub async fn pass(&self, is_leader: bool) -> Result<Duration, kube::Error> {
        let now = self.clock.now();
        let policies = self.policies().list(&ListParams::default()).await?.items;
        let mut sleep = self.config.tick;
        for policy in &policies {
            self.update_rpo(policy, now);
            if !is_leader {
                continue;
            }
            match self.reconcile(policy, now).await {
                Ok((outcome, next)) => {
                    tracing::debug!(policy = %policy.name_any(), ?outcome, "reconciled");
                    if let Some(next) = next {
                        let until = next.duration_since(now).unsigned_abs();
                        sleep = sleep.min(until.max(Duration::from_millis(200)));
                    }
                }
                Err(error) => {
                    tracing::warn!(policy = %policy.name_any(), %error, "reconcile failed");
                }
            }
        }
        Ok(sleep)
    }

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
        self.publisher
            .metrics
            .rpo
            .set(&valid.name, last, age, interval);
    }

    /// Brings one policy forward; returns what happened and when it next needs attention.
    #[expect(
        clippy::too_many_lines,
        reason = "one pass over a policy reads best as one list of steps, top to bottom"
    )]
    pub async fn reconcile(
        &self,
        policy: &BackupPolicy,
        now: Timestamp,
    ) -> Result<(PolicyOutcome, Option<Timestamp>), kube::Error> {
        let name = policy.name_any();
        let valid = match ValidPolicy::from_policy(policy) {
            Ok(valid) => valid,
            Err(error) => {
                let reason = error.reason().to_owned();
                self.not_ready(policy, &reason, &error.to_string(), now)
                    .await?;
                return Ok((PolicyOutcome::Invalid { reason }, None));
            }
        };
        if let Err((reason, message)) = self.check_environment(&valid).await? {
            self.not_ready(policy, reason, &message, now).await?;
            return Ok((
                PolicyOutcome::Invalid {
                    reason: reason.to_owned(),
                },
                None,
            ));
        }

        let mut backups: Vec<BackupView> = self
            .backups()
            .list(&ListParams::default().labels(&format!("{}={name}", velero::LABEL_POLICY)))
            .await?
            .items
            .iter()
            .map(BackupView::from_object)
            .collect();
        backups.sort_by_key(|b| (b.created, b.name.clone()));

        let mut next_attention: Option<Timestamp> = None;
        for backup in &backups {
            if let Some(at) = self.follow(policy, &valid, backup, now).await? {
                next_attention = Some(next_attention.map_or(at, |n| n.min(at)));
            }
        }

        if let Some(running) = backups.iter().find(|b| b.class == PhaseClass::Running) {
            // Forbid: never two running. The watch wakes the loop when it finishes.
            self.ready(
                policy,
                &valid,
                now,
                "BackupRunning",
                format!("backup {} is running", running.name),
            )
            .await?;
            return Ok((
                PolicyOutcome::Running {
                    backup: running.name.clone(),
                },
                Some(now + self.config.tick),
            ));
        }

        if let Some((request_name, slot, attempt, at)) = Self::due_retry(&valid, &backups, now) {
            if now < at {
                next_attention = Some(next_attention.map_or(at, |n| n.min(at)));
            } else {
                let outcome = self
                    .create(&valid, request_name, Some(slot), attempt)
                    .await?;
                return Ok((outcome, Some(now + self.config.tick)));
            }
        }

        if valid.paused {
            self.ready(
                policy,
                &valid,
                now,
                "Paused",
                "spec.paused is true: no new backups".to_owned(),
            )
            .await?;
            return Ok((PolicyOutcome::Paused, next_attention));
        }

        let last_slot = last_slot(policy, &backups);
        let jitter_for = |slot| schedule::jitter(&valid.uid, slot, valid.jitter_seconds);
        let slot_now = valid.schedule.slot_at_or_before(now, &valid.zone);
        let state = SlotState {
            schedule: &valid.schedule,
            zone: &valid.zone,
            last_slot,
            created: valid.created,
            missed_run_policy: valid.missed_run_policy,
            starting_deadline: crate::policy::DEFAULT_STARTING_DEADLINE,
            jitter: slot_now.map(jitter_for).unwrap_or_default(),
        };
        let (outcome, wake) = match schedule::decide(&state, now) {
            Decision::Wait { next } => (PolicyOutcome::Waiting, next.map(|n| n + jitter_for(n))),
            Decision::Jitter { at, .. } => (PolicyOutcome::Waiting, Some(at)),
            Decision::Skip { slot, missed, next } => {
                tracing::info!(policy = %name, %slot, missed, "slot too late under missedRunPolicy Skip");
                self.publisher.metrics.backup.missed(&name, missed);
                self.publisher
                    .update_status(&name, |_, status| {
                        status.last_schedule_time = Some(slot.to_string());
                    })
                    .await?;
                (PolicyOutcome::Waiting, next)
            }
            Decision::Run { slot, missed } => {
                if missed > 0 {
                    tracing::info!(policy = %name, %slot, missed, "slots were missed; running the newest");
                    self.publisher.metrics.backup.missed(&name, missed);
                }
                let backup_name = schedule::slot_backup_name(&name, slot);
                let outcome = self.create(&valid, backup_name, Some(slot), 0).await?;
                (outcome, Some(now + self.config.tick))
            }
        };
        let next_slot = valid.schedule.next_slot(now, &valid.zone);
        self.ready(
            policy,
            &valid,
            now,
            "Scheduled",
            next_slot.map_or_else(
                || "the schedule has no further slots".to_owned(),
                |n| format!("next backup at {n}"),
            ),
        )
        .await?;
        let wake = match (wake, next_attention) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok((outcome, wake))
    }

    /// Creates a backup; an existing one of that name means another replica (or an earlier run of
    /// this one) already did.
    async fn create(
        &self,
        valid: &ValidPolicy,
        backup_name: String,
        slot: Option<Timestamp>,
        attempt: u32,
    ) -> Result<PolicyOutcome, kube::Error> {
        let request = BackupRequest {
            policy: valid,
            name: backup_name.clone(),
            slot: slot.map(|s| s.to_string()),
            attempt,
        };
        let object = velero::build_backup(&request);
        let outcome = match self.backups().create(&PostParams::default(), &object).await {
            Ok(_) => {
                tracing::info!(policy = %valid.name, backup = %backup_name, attempt, "created backup");
                self.publisher.metrics.backup.run(&valid.name);
                PolicyOutcome::Created {
                    backup: backup_name.clone(),
                }
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::info!(policy = %valid.name, backup = %backup_name, "backup already exists");
                PolicyOutcome::AlreadyExists {
                    backup: backup_name.clone(),
                }
            }
            Err(error) => return Err(error),
        };
        self.publisher
            .update_status(&valid.name, |_, status| {
                if let Some(slot) = slot {
                    let newer = status
                        .last_schedule_time
                        .as_deref()
                        .and_then(|t| t.parse::<Timestamp>().ok())
                        .is_none_or(|previous| slot >= previous);
                    if newer {
                        status.last_schedule_time = Some(slot.to_string());
                    }
                }
                status.last_backup = Some(backup_name.clone());
            })
            .await?;
        Ok(outcome)
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
        let name = &valid.name;
        match backup.class {
            PhaseClass::Running => {
                let age = backup
                    .created
                    .map_or(Duration::ZERO, |c| now.duration_since(c).unsigned_abs());
                if age > valid.backup_timeout
                    && self.first_time(&format!("timeout/{}", backup.name))
                {
                    self.publisher.metrics.backup.failure(name, "TimedOut");
                    let message = format!(
                        "backup {} has not finished after {}s (phase {}); spec.backupTimeout is {}s",
                        backup.name,
                        age.as_secs(),
                        backup.phase.as_deref().unwrap_or("New"),
                        valid.backup_timeout.as_secs()
                    );
                    self.publisher
                        .update_status(name, |current, status| {
                            status.set_condition(
                                condition::BACKUP_SUCCEEDED,
                                false,
                                "BackupTimedOut",
                                message.clone(),
                                current.metadata.generation,
                                now,
                            );
                        })
                        .await?;
                    self.publisher
                        .event(policy, true, "BackupTimedOut", message)
                        .await;
                }
                Ok(None)
            }
            PhaseClass::Deleting => Ok(None),
            PhaseClass::Succeeded | PhaseClass::Failed => {
                if backup.verified.is_some() {
                    return Ok(None);
                }
                if self.first_time(&format!("finished/{}", backup.name)) {
                    self.backup_finished(policy, valid, backup, now).await?;
                }
                if backup.class == PhaseClass::Failed
                    && backup.phase.as_deref() != Some("PartiallyFailed")
                {
                    // Nothing to read: record the failure as the verification result.
                    let report = crate::verify::Report::new(
                        &backup.name,
                        &{
                            let mut findings = crate::verify::Findings::default();
                            findings.push(
                                crate::verify::Reason::BackupNotCompleted,
                                format!(
                                    "Velero finished backup {} as {}{}",
                                    backup.name,
                                    backup.phase.as_deref().unwrap_or_default(),
                                    backup
                                        .failure_reason
                                        .as_deref()
                                        .map(|r| format!(": {r}"))
                                        .unwrap_or_default()
                                ),
                            );
                            findings
                        },
                        crate::verify::Stats::default(),
                        0.0,
                    );
                    self.publisher
                        .verification(Some(policy), backup, &report, now, true)
                        .await?;
                    return Ok(None);
                }
                if backup.verification_attempts > 0 {
                    let retry_at = backup
                        .verification_attempts
                        .checked_sub(1)
                        .map(|n| self.config.verify_backoff * 2_u32.saturating_pow(n.min(8)));
                    let last = self.last_verification_time(backup).await;
                    if let (Some(wait), Some(last)) = (retry_at, last) {
                        let at = last + wait;
                        if now < at {
                            return Ok(Some(at));
                        }
                    }
                }
                self.spawn_verification(policy, valid, backup);
                Ok(None)
            }
        }
    }

    async fn last_verification_time(&self, backup: &BackupView) -> Option<Timestamp> {
        let object = self.backups().get_opt(&backup.name).await.ok()??;
        object
            .annotations()
            .get(velero::ANNOTATION_VERIFIED_AT)
            .and_then(|t| t.parse().ok())
    }

    fn first_time(&self, key: &str) -> bool {
        self.counted
            .lock()
            .expect("not poisoned")
            .insert(key.to_owned())
    }

    async fn backup_finished(
        &self,
        policy: &BackupPolicy,
        valid: &ValidPolicy,
        backup: &BackupView,
        now: Timestamp,
    ) -> Result<(), kube::Error> {
        let name = &valid.name;
        if let (Some(created), Some(completed)) = (backup.created, backup.completed) {
            self.publisher.metrics.backup.finished(
                name,
                completed.duration_since(created).as_secs_f64().max(0.0),
            );
        }
        let phase = backup.phase.clone().unwrap_or_default();
        let ok = backup.class == PhaseClass::Succeeded;
        if !ok {
            self.publisher.metrics.backup.failure(name, &phase);
            self.publisher
                .event(
                    policy,
                    true,
                    &format!("Backup{phase}"),
                    format!("Velero finished backup {} as {phase}", backup.name),
                )
                .await;
        }
        let message = format!("backup {} finished as {phase}", backup.name);
        self.publisher
            .update_status(name, |current, status| {
                status.set_condition(
                    condition::BACKUP_SUCCEEDED,
                    ok,
                    if ok { "Completed" } else { &phase },
                    message.clone(),
                    current.metadata.generation,
                    now,
                );
            })
            .await
    }

    fn spawn_verification(&self, policy: &BackupPolicy, valid: &ValidPolicy, backup: &BackupView) {
        if !self
            .verifying
            .lock()
            .expect("not poisoned")
            .insert(backup.name.clone())
        {
            return;
        }
        let verifier = self.verifier.clone();
        let publisher = Arc::clone(&self.publisher);
        let verifying = Arc::clone(&self.verifying);
        let clock = Arc::clone(&self.clock);
        let wake = Arc::clone(&self.wake);
        let policy = policy.clone();
        let backup = backup.clone();
        let attempts = self.config.verify_attempts;
        let source = SiteMapSource {
            configmap: valid.site_map.name.clone(),
            key: valid.site_map_key().to_owned(),
        };
        tokio::spawn(async move {
            match verifier.verify(&backup.name, &source).await {
                Ok(report) => {
                    let final_attempt = backup.verification_attempts + 1 >= attempts;
                    if let Err(error) = publisher
                        .verification(Some(&policy), &backup, &report, clock.now(), final_attempt)
                        .await
                    {
                        tracing::warn!(backup = %backup.name, %error, "cannot publish verification");
                    }
                }
                Err(error) => tracing::warn!(backup = %backup.name, %error, "cannot verify"),
            }
            verifying.lock().expect("not poisoned").remove(&backup.name);
            wake.notify_one();
        });
    }

    /// The retry due for the newest slot, if its newest attempt failed: (name, slot, attempt, at).
    fn due_retry(
        valid: &ValidPolicy,
        backups: &[BackupView],
        now: Timestamp,
    ) -> Option<(String, Timestamp, u32, Timestamp)> {
        if valid.retry_limit == 0 {
            return None;
        }
        let newest_slot = backups
            .iter()
            .filter_map(|b| b.slot.as_deref()?.parse::<Timestamp>().ok())
            .max()?;
        let newest = backups
            .iter()
            .filter(|b| b.slot.as_deref().and_then(|s| s.parse().ok()) == Some(newest_slot))
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
        let at = newest.completed.or(newest.created).unwrap_or(now) + backoff;
        Some((
            schedule::retry_backup_name(&valid.name, newest_slot, attempt),
            newest_slot,
            attempt,
            at,
        ))
    }

    /// Storage location, namespaces and selection must exist before backups are worth creating.
    async fn check_environment(
        &self,
        valid: &ValidPolicy,
    ) -> Result<Result<(), (&'static str, String)>, kube::Error> {
        let locations: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &self.config.namespace,
            &velero::storage_location_resource(),
        );
        let all = locations.list(&ListParams::default()).await?.items;
        let names: Vec<String> = all.iter().map(kube::ResourceExt::name_any).collect();
        let used = match &valid.template.storage_location {
            Some(location) => all.iter().find(|l| l.name_any() == *location),
            None => all.iter().find(|l| velero::StorageLocation::is_default(l)),
        };
        let Some(used) = used else {
            let message = match &valid.template.storage_location {
                Some(location) => format!(
                    "spec.template.storageLocation {location:?} is not a BackupStorageLocation in namespace {} (found: {})",
                    self.config.namespace,
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
                None => format!(
                    "spec.template.storageLocation is empty and namespace {} has no default BackupStorageLocation (found: {})",
                    self.config.namespace,
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
            };
            return Ok(Err(("UnknownStorageLocation", message)));
        };
        // Velero fails a backup as FailedValidation unless its location is Available.
        let phase = used
            .data
            .pointer("/status/phase")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        if phase != "Available" {
            return Ok(Err((
                "StorageLocationUnavailable",
                format!(
                    "BackupStorageLocation {} is {}: Velero would fail the backup's validation; waiting for it to become Available",
                    used.name_any(),
                    if phase.is_empty() {
                        "not validated yet"
                    } else {
                        phase
                    }
                ),
            )));
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let mut missing = Vec::new();
        for namespace in &valid.template.included_namespaces {
            if namespace != "*" && namespaces.get_opt(namespace).await?.is_none() {
                missing.push(namespace.as_str());
            }
        }
        if !missing.is_empty() && missing.len() == valid.template.included_namespaces.len() {
            return Ok(Err((
                "NothingSelected",
                format!(
                    "spec.template.includedNamespaces selects nothing: namespace(s) {} do not exist",
                    missing.join(", ")
                ),
            )));
        }
        if !valid.label_query.is_empty() && !self.selects_something(valid).await? {
            return Ok(Err((
                "NothingSelected",
                format!(
                    "spec.template.labelSelector {:?} matches no PersistentVolumeClaim or VirtualMachine in {}",
                    valid.label_query,
                    if valid.template.included_namespaces.is_empty() {
                        "any namespace".to_owned()
                    } else {
                        valid.template.included_namespaces.join(", ")
                    }
                ),
            )));
        }
        Ok(Ok(()))
    }

    async fn selects_something(&self, valid: &ValidPolicy) -> Result<bool, kube::Error> {
        let params = ListParams::default().labels(&valid.label_query).limit(1);
        let vm = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "kubevirt.io",
            "v1",
            "VirtualMachine",
        ));
        let scopes: Vec<Option<&str>> = if valid.template.included_namespaces.is_empty() {
            vec![None]
        } else {
            valid
                .template
                .included_namespaces
                .iter()
                .map(|n| Some(n.as_str()))
                .collect()
        };
        for scope in scopes {
            let (pvcs, vms): (Api<PersistentVolumeClaim>, Api<DynamicObject>) = match scope {
                Some(ns) => (
                    Api::namespaced(self.client.clone(), ns),
                    Api::namespaced_with(self.client.clone(), ns, &vm),
                ),
                None => (
                    Api::all(self.client.clone()),
                    Api::all_with(self.client.clone(), &vm),
                ),
            };
            if !pvcs.list_metadata(&params).await?.items.is_empty() {
                return Ok(true);
            }
            match vms.list_metadata(&params).await {
                Ok(list) if !list.items.is_empty() => return Ok(true),
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
        Ok(false)
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
        self.publisher
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
            self.publisher
                .event(policy, true, reason, message.to_owned())
                .await;
        }
        Ok(())
    }

    async fn ready(
        &self,
        policy: &BackupPolicy,
        valid: &ValidPolicy,
        now: Timestamp,
        reason: &str,
        message: String,
    ) -> Result<(), kube::Error> {
        let next = valid.schedule.next_slot(now, &valid.zone);
        let interval = valid.schedule.expected_interval(now, &valid.zone).as_secs();
        self.publisher
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
            })
            .await
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

/// Counts backups per phase class, for `status`.
pub fn summarize(backups: &[BackupView]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for backup in backups {
        let key = match backup.class {
            PhaseClass::Running => "running",
            PhaseClass::Succeeded => "completed",
            PhaseClass::Failed => "failed",
            PhaseClass::Deleting => "deleting",
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}
