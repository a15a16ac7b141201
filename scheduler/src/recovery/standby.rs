//! The warm standby: at a site that is not the active one, a policy with `spec.standby.enabled`
//! keeps its newest verified backup restored — VMs halted, nothing that runs a pod — so that a
//! failover there restores nothing and only checks and starts the VMs.
//!
//! One refresh: plan the newest backup of the policy that verifies at this site, made at the
//! active site ([`super::site::plan_at_site`]); refuse when the plan blocks (an object under the
//! backup's names that no standby restore made, a reference missing, ...); otherwise restore it
//! with Velero, `existingResourcePolicy: update`, so what earlier standby restores made is
//! patched to the new backup and relabelled with the new Restore; check the result as a failover
//! does; then prune what is still labelled with an earlier standby Restore — what the new backup
//! no longer holds — each PV set to `Retain` first, VMs before `DataVolumes` before claims before
//! PVs before the objects VMs name, nothing the new backup holds and nothing no standby made.
//!
//! Every object is found again through labels: the Restores carry `replicadr.io/operation:
//! standby`, the site and the policy; Velero labels what they made `velero.io/restore-name`.
//! [`clean_standby`] removes all of it once the standby is switched off.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams};
use kube::{Client, ResourceExt as _};
use serde::Serialize;

use replicadr_core::contents::{BackupContents, parse_reference_key, reference_key};
use replicadr_core::kubevirt::ReferencedKind;
use replicadr_core::wire::{PHASE_COMPLETED, PHASE_PARTIALLY_FAILED};

use super::checks;
use super::clean::{self, CleanOptions, CleanReport, Kind, Target};
use super::failover::{Operation, Options};
use super::plan::LABEL_RESTORE_NAME;
use super::report::RecoveryReport;
use super::restore::{RestoreView, Restores, summarize_results};
use super::site::{self, BackupChoice, Planned, RecoveryError, Scope};
use super::vm_start::{vm_resource, vm_running};
use crate::policy::{BackupPolicy, StandbyStatus, ValidPolicy};
use crate::verify::Verifier;

/// How a refresh runs.
#[derive(Debug, Clone)]
pub struct StandbyOptions {
    /// This site (the plugin ConfigMap's `localSite`).
    pub site: String,
    pub policy: String,
    /// The active site, whose backups the standby follows.
    pub source_site: String,
    /// Restore exactly this backup (a failover catching the standby up to the backup it
    /// planned); the newest that verifies here when `None`.
    pub backup: Option<String>,
    pub restore_timeout: Duration,
    pub bind_timeout: Duration,
    /// How long pruning waits for each kind to be gone.
    pub prune_timeout: Duration,
    pub poll: Duration,
    /// A failover at this site runs the refresh, after recording this site as the active one.
    /// Otherwise (the scheduler at a site that is not active) the active-site record is read
    /// again right before the Restore is created and before anything is pruned, and a site the
    /// record names active is left alone.
    pub takeover: bool,
}

impl StandbyOptions {
    /// Defaults for `policy` at `site`, following `source_site`.
    pub fn new(site: &str, policy: &str, source_site: &str) -> Self {
        Self {
            site: site.to_owned(),
            policy: policy.to_owned(),
            source_site: source_site.to_owned(),
            backup: None,
            restore_timeout: Duration::from_hours(1),
            bind_timeout: Duration::from_mins(2),
            prune_timeout: Duration::from_mins(5),
            poll: Duration::from_secs(1),
            takeover: false,
        }
    }

    /// The recovery options the standby's Restore is made with.
    fn restore_options(&self) -> Options {
        let mut options = Options::new(Operation::Standby, &self.site);
        options.policy = Some(self.policy.clone());
        options.source_site = Some(self.source_site.clone());
        options.restore_timeout = self.restore_timeout;
        options.bind_timeout = self.bind_timeout;
        options.poll = self.poll;
        options.start_vms = false;
        // A refresh runs only when the standby does not hold the backup as its newest Restore:
        // an earlier finished attempt of the same backup is restored again, not reused.
        options.new_attempt = true;
        options
    }
}

/// The standby Restore a site holds: the newest of the policy that finished restoring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    pub restore: String,
    pub backup: String,
    /// Every standby Restore of the policy at the site (what they made counts as the standby's).
    pub restores: Vec<String>,
}

/// The newest finished standby Restore of `policy` at `site`, if any.
pub async fn held(
    client: &Client,
    namespace: &str,
    site: &str,
    policy: &str,
) -> Result<Option<Held>, kube::Error> {
    let restores = Restores::new(client, namespace)
        .standby(site, policy)
        .await?;
    let names = restores.iter().map(|r| r.name.clone()).collect();
    Ok(restores.iter().rev().find(|r| restored(r)).map(|r| Held {
        restore: r.name.clone(),
        backup: r.backup.clone(),
        restores: names,
    }))
}

/// Velero restored it (some items may have failed: the refresh's problems say which).
fn restored(view: &RestoreView) -> bool {
    matches!(
        view.phase.as_deref(),
        Some(PHASE_COMPLETED | PHASE_PARTIALLY_FAILED)
    )
}

/// What one refresh did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "result")]
pub enum Refresh {
    /// The standby already holds the newest backup that verifies here.
    UpToDate {
        backup: String,
        restore: String,
        recovery_point: Option<Timestamp>,
        /// Newer backups passed over, each with why.
        passed_over: Vec<String>,
    },
    /// No backup of the policy from the active site can be restored here.
    NoBackup { message: String },
    /// The plan of the backup blocks: nothing was restored.
    Refused {
        backup: String,
        problems: Vec<String>,
    },
    /// Restored; `problems` is empty when Velero and the checks found nothing wrong.
    Restored(Restored),
}

impl Refresh {
    /// The `StandbyReady` condition it makes: status, reason, message.
    pub fn condition(&self) -> (bool, &'static str, String) {
        match self {
            Refresh::NoBackup { message } => (false, "NoVerifiedBackup", message.clone()),
            Refresh::UpToDate {
                backup,
                passed_over,
                ..
            } => (
                true,
                "StandbyRestored",
                format!(
                    "the standby holds backup {backup}, the newest that verifies here; passed over: {}",
                    passed_over.join("; ")
                ),
            ),
            Refresh::Refused { backup, problems } => (
                false,
                "StandbyBlocked",
                format!(
                    "backup {backup} was not restored as the standby, because its plan here blocks: {}",
                    problems.join("; ")
                ),
            ),
            Refresh::Restored(restored) if !restored.held => (
                false,
                "StandbyRestoreFailed",
                format!(
                    "backup {} was not restored as the standby: {}",
                    restored.backup,
                    restored.problems.join("; ")
                ),
            ),
            Refresh::Restored(restored) => {
                let ok = restored.problems.is_empty();
                let pruned = if restored.pruned.is_empty() {
                    "nothing pruned".to_owned()
                } else {
                    format!("pruned {}", restored.pruned.join(", "))
                };
                let problems = if ok {
                    String::new()
                } else {
                    format!("; problems: {}", restored.problems.join("; "))
                };
                let message = format!(
                    "backup {} restored as the standby by Restore {} in {:.1} s ({} items, VMs halted; was {}); {pruned}{problems}",
                    restored.backup,
                    restored.restore,
                    restored.seconds,
                    restored.items,
                    restored.previous.as_deref().unwrap_or("nothing"),
                );
                let reason = if ok {
                    "StandbyRestored"
                } else {
                    "StandbyProblems"
                };
                (ok, reason, message)
            }
        }
    }

    /// Records it in the policy's `status.standby`; `newest` is the backup the refresh was for.
    pub fn record(&self, standby: &mut StandbyStatus, newest: &str, now: Timestamp) {
        match self {
            Refresh::UpToDate {
                backup,
                restore,
                recovery_point,
                ..
            } => {
                // A status lost since (or never written) is made whole again.
                standby.backup = Some(backup.clone());
                standby.restore = Some(restore.clone());
                if let Some(point) = recovery_point {
                    standby.recovery_point = Some(point.to_string());
                }
                if backup != newest {
                    refused(standby, newest, now);
                }
            }
            Refresh::Restored(restored) if restored.held => {
                *standby = StandbyStatus {
                    backup: Some(restored.backup.clone()),
                    restore: Some(restored.restore.clone()),
                    recovery_point: restored.recovery_point.map(|t| t.to_string()),
                    restored_time: Some(now.to_string()),
                    items: restored.items,
                    problems: restored.problems.clone(),
                    pruned: restored.pruned.clone(),
                    refused_backup: None,
                    refused_time: None,
                };
            }
            Refresh::Restored(Restored { problems, .. }) | Refresh::Refused { problems, .. } => {
                refused(standby, newest, now);
                standby.problems.clone_from(problems);
            }
            Refresh::NoBackup { .. } => refused(standby, newest, now),
        }
    }
}

/// Notes that `backup` was not taken, so it is tried again only after a while.
pub fn refused(standby: &mut StandbyStatus, backup: &str, now: Timestamp) {
    standby.refused_backup = Some(backup.to_owned());
    standby.refused_time = Some(now.to_string());
}

/// A standby restore that ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Restored {
    pub backup: String,
    pub restore: String,
    /// The backup's recovery point.
    pub recovery_point: Option<Timestamp>,
    /// Velero restored the backup (Completed or `PartiallyFailed`): the standby holds it now.
    pub held: bool,
    pub items: u64,
    pub seconds: f64,
    /// Velero's errors and the checks' failures, each naming the object.
    pub problems: Vec<String>,
    /// What pruning removed, `Kind namespace/name`, in order.
    pub pruned: Vec<String>,
    /// The backup the standby held before, if any.
    pub previous: Option<String>,
}

/// Brings the standby of `options.policy` at `options.site` to the newest backup that verifies
/// here (or to `options.backup`); `progress` gets a line per step.
pub async fn refresh(
    client: &Client,
    namespace: &str,
    options: &StandbyOptions,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<Refresh, RecoveryError> {
    let choice = options
        .backup
        .clone()
        .map_or(BackupChoice::LatestVerified, BackupChoice::Named);
    let mut passed_over = Vec::new();
    let mut noting = |line: String| {
        if let Some(skipped) = line.trim_start().strip_prefix("skipped ") {
            passed_over.push(skipped.to_owned());
        }
        progress(line);
    };
    let planned = match Box::pin(site::plan_at_site(
        client,
        namespace,
        &options.site,
        &choice,
        Scope {
            policy: Some(&options.policy),
            source_site: Some(options.source_site.as_str()).filter(|s| !s.is_empty()),
        },
        Timestamp::now(),
        &mut noting,
    ))
    .await
    {
        Ok(planned) => planned,
        Err(RecoveryError::NoBackup(message)) => return Ok(Refresh::NoBackup { message }),
        Err(error) => return Err(error),
    };
    let held = held(client, namespace, &options.site, &options.policy).await?;
    let newest = Restores::new(client, namespace)
        .standby(&options.site, &options.policy)
        .await?
        .pop()
        .map(|r| r.name);
    // Held only if no newer standby Restore (a failed one may have changed objects part-way).
    if let Some(held) = &held
        && held.backup == planned.backup.name
        && newest.as_ref() == Some(&held.restore)
    {
        return Ok(Refresh::UpToDate {
            backup: held.backup.clone(),
            restore: held.restore.clone(),
            recovery_point: planned.backup.recovery_point(),
            passed_over,
        });
    }
    let mut problems: Vec<String> = planned
        .plan
        .blocking()
        .map(|p| format!("{}: {}", p.object, p.message))
        .collect();
    let own: BTreeSet<String> = Restores::new(client, namespace)
        .standby(&options.site, &options.policy)
        .await?
        .into_iter()
        .map(|r| r.name)
        .collect();
    problems.extend(not_made_here(client, &planned.contents, &own).await?);
    problems.extend(running_here(client, &planned.contents, &own).await?);
    if let Some(active) = active_here(client, namespace, options).await {
        problems.push(active);
    }
    if !problems.is_empty() {
        return Ok(Refresh::Refused {
            backup: planned.backup.name.clone(),
            problems,
        });
    }
    let restored = restore(client, namespace, options, &planned, held, progress).await?;
    Ok(Refresh::Restored(restored))
}

/// Restores `planned` as the standby, checks it and prunes what earlier standby restores made
/// that it no longer holds.
async fn restore(
    client: &Client,
    namespace: &str,
    options: &StandbyOptions,
    planned: &Planned,
    held: Option<Held>,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<Restored, RecoveryError> {
    let started = Instant::now();
    let backup = &planned.backup.name;
    let restore_options = options.restore_options();
    let restores = Restores::new(client, namespace);
    let restore = restores
        .ensure(&restore_options, backup, &planned.plan, None, progress)
        .await?;
    let mut report = RecoveryReport::new("standby", &options.site, Timestamp::now());
    let mut done = Restored {
        backup: backup.clone(),
        restore: restore.clone(),
        recovery_point: planned.backup.recovery_point(),
        held: false,
        items: 0,
        seconds: 0.0,
        problems: Vec::new(),
        pruned: Vec::new(),
        previous: held.map(|h| h.backup),
    };
    let view = match restores
        .watch(&restore, options.restore_timeout, options.poll, progress)
        .await
    {
        Ok(view) => view,
        Err(message) => {
            done.problems.push(message);
            done.seconds = started.elapsed().as_secs_f64();
            return Ok(done);
        }
    };
    done.items = view.items_restored;
    done.held = restored(&view);
    if !done.held {
        done.problems.push(format!(
            "Velero finished Restore {namespace}/{restore} as {}{}; the next refresh starts a new attempt",
            view.phase.as_deref().unwrap_or("?"),
            view.failure_reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
        done.seconds = started.elapsed().as_secs_f64();
        return Ok(done);
    }
    // Under `update` a patch Velero could not apply is a warning, and the object keeps its old
    // content with the new label: every warning and error is a problem of the standby.
    if view.errors > 0 || view.warnings > 0 {
        match Verifier::new(client.clone(), namespace)
            .restore_results(&planned.backup, &restore)
            .await
        {
            Ok(results) => done.problems.extend(summarize_results(&results)),
            Err(error) => done.problems.push(format!(
                "Velero reported {} errors and {} warnings for Restore {namespace}/{restore}, and its results cannot be read: {error}",
                view.errors, view.warnings
            )),
        }
    }
    checks::check_volumes(client, &planned.plan, &mut report).await?;
    checks::check_claims(
        client,
        &planned.plan,
        &restore_options,
        &mut report,
        progress,
    )
    .await?;
    checks::check_vms(client, &planned.plan, &mut report).await?;
    done.problems.extend(report.failures);
    let pruned = prune(
        client,
        namespace,
        options,
        &restore,
        &planned.contents,
        progress,
    )
    .await?;
    done.pruned = pruned.removed;
    done.problems.extend(pruned.failures);
    done.seconds = started.elapsed().as_secs_f64();
    Ok(done)
}

/// Removes what standby Restores of the policy other than `current` made and the backup of
/// `contents` does not hold; once all of it is gone, those Restores are deleted too.
async fn prune(
    client: &Client,
    namespace: &str,
    options: &StandbyOptions,
    current: &str,
    contents: &BackupContents,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<CleanReport, kube::Error> {
    let restores = Restores::new(client, namespace);
    if let Some(active) = active_here(client, namespace, options).await {
        return Ok(CleanReport {
            failures: vec![format!("nothing was pruned: {active}")],
            ..CleanReport::default()
        });
    }
    // Only what finished Restores made before this one: never a newer one's, nor one still
    // restoring.
    let earlier: BTreeSet<String> = restores
        .standby(&options.site, &options.policy)
        .await?
        .into_iter()
        .take_while(|r| r.name != current)
        .filter(RestoreView::finished)
        .map(|r| r.name)
        .collect();
    let (held, targets): (Vec<Made>, Vec<Made>) = made_by(client, &earlier)
        .await?
        .into_iter()
        .partition(|(t, _)| still_held(contents, t));
    let targets: Vec<Target> = targets.into_iter().map(|(t, _)| t).collect();
    let mut report = removal(client, &options.site, &targets, options, progress).await?;
    if report.failures.is_empty() {
        // An object the new backup holds that Velero did not relabel (a ServiceAccount it
        // merged, one whose label patch failed) keeps its Restore: it stays the standby's own.
        let still_named: BTreeSet<&String> = held.iter().map(|(_, by)| by).collect();
        for restore in earlier.iter().filter(|r| !still_named.contains(r)) {
            restores.delete(restore).await?;
        }
    } else {
        report.failures.insert(
            0,
            "pruning stopped: the earlier standby Restores are kept until what they made is gone"
                .to_owned(),
        );
    }
    Ok(report)
}

/// Removes `targets` the way `clean` does (PVs `Retain` first, in kind order, each kind gone
/// before the next).
async fn removal(
    client: &Client,
    site: &str,
    targets: &[Target],
    options: &StandbyOptions,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<CleanReport, kube::Error> {
    let mut report = CleanReport {
        site: site.to_owned(),
        applied: true,
        ..CleanReport::default()
    };
    if targets.is_empty() {
        return Ok(report);
    }
    let pace = CleanOptions {
        site: site.to_owned(),
        backup: BackupChoice::LatestVerified,
        policy: Some(options.policy.clone()),
        apply: true,
        force: false,
        include_absent: false,
        timeout: options.prune_timeout,
        poll: options.poll,
    };
    let busy = clean::in_use(client, targets).await?;
    if !busy.is_empty() {
        report.failures.push(format!(
            "nothing was removed: {}; a warm standby never removes what runs or is mounted (is this site in use?)",
            busy.join("; ")
        ));
        return Ok(report);
    }
    let mut sorted = targets.to_vec();
    sorted.sort();
    Box::pin(clean::remove(client, &sorted, &pace, &mut report, progress)).await?;
    Ok(report)
}

/// The objects VMs name that the backup holds and that exist here, made by something other than
/// the policy's standby (`own`, its Restores): an update restore would overwrite them, and a
/// later prune delete them.
async fn not_made_here(
    client: &Client,
    contents: &BackupContents,
    own: &BTreeSet<String>,
) -> Result<Vec<String>, kube::Error> {
    let mut found = Vec::new();
    for key in &contents.referenceable {
        let Some((kind, object_namespace, name)) = parse_reference_key(key) else {
            continue;
        };
        if site_managed(kind, name) {
            continue;
        }
        let target = Target::new(
            Kind::Referenced(kind),
            kind.namespaced().then_some(object_namespace),
            name,
            String::new(),
            String::new(),
        );
        let api: Api<DynamicObject> = if kind.namespaced() {
            Api::namespaced_with(
                client.clone(),
                object_namespace,
                &Kind::Referenced(kind).resource(),
            )
        } else {
            Api::all_with(client.clone(), &Kind::Referenced(kind).resource())
        };
        let existing = match api.get_metadata_opt(name).await {
            Ok(existing) => existing,
            Err(kube::Error::Api(status)) if status.code == 404 => None,
            Err(error) => return Err(error),
        };
        if let Some(existing) = existing
            && !existing
                .labels()
                .get(LABEL_RESTORE_NAME)
                .is_some_and(|r| own.contains(r))
        {
            found.push(format!(
                "{}: exists here and was not made by this policy's warm standby; its update restore would overwrite it with the backup's copy. Remove it if the backup's copy is the one wanted here, or leave spec.standby off for this policy",
                target.describe()
            ));
        }
    }
    Ok(found)
}

/// Objects every namespace gets from the site's own controllers, whatever a backup holds: the
/// cluster's CA bundles (kube-controller-manager's root CA publisher; OpenShift's service CA
/// operator, which puts its bundle back when it is changed) and the namespace's default
/// service accounts (Velero merges a service account rather than replacing it). Their existence
/// here does not block a refresh.
fn site_managed(kind: ReferencedKind, name: &str) -> bool {
    match kind {
        ReferencedKind::ConfigMap => {
            matches!(name, "kube-root-ca.crt" | "openshift-service-ca.crt")
        }
        ReferencedKind::ServiceAccount => {
            matches!(name, "default" | "builder" | "deployer" | "pipeline")
        }
        _ => false,
    }
}

/// The VMs the policy's standby made here that run or are not halted: a standby never changes a
/// site whose VMs run.
async fn running_here(
    client: &Client,
    contents: &BackupContents,
    own: &BTreeSet<String>,
) -> Result<Vec<String>, kube::Error> {
    let mut found = Vec::new();
    for namespace in contents.namespaces() {
        for vm in site::list_optional(client, &namespace, &vm_resource()).await? {
            if !vm
                .labels()
                .get(LABEL_RESTORE_NAME)
                .is_some_and(|r| own.contains(r))
            {
                continue;
            }
            let value = serde_json::to_value(&vm).unwrap_or_default();
            let strategy = replicadr_core::contents::run_strategy(&value);
            if strategy != "Halted" || vm_running(&value) {
                found.push(format!(
                    "VirtualMachine {namespace}/{}: run strategy {strategy}{} here, though a warm standby keeps its VMs halted; a refresh would halt it. Is this site active without the active-site record saying so (a failover with --force)? Halt it if this site is not the one in use",
                    vm.name_any(),
                    if vm_running(&value) { ", running" } else { "" }
                ));
            }
        }
    }
    Ok(found)
}

/// Why a refresh by the scheduler must not go on: the active-site record names this site now (a
/// takeover happened during the refresh), or cannot be read. `None` for a refresh a failover runs.
async fn active_here(client: &Client, namespace: &str, options: &StandbyOptions) -> Option<String> {
    if options.takeover {
        return None;
    }
    let config = match site::site_config(client, namespace).await {
        Ok(config) => config,
        Err(error) => return Some(error.to_string()),
    };
    clean::active_here(client, namespace, &config.site_map, &options.site).await
}

/// Whether the backup of `contents` holds `target`'s object: never pruned, whatever its label.
fn still_held(contents: &BackupContents, target: &Target) -> bool {
    let namespace = target.namespace.as_deref().unwrap_or_default();
    let named = |ns: &str, name: &str| ns == namespace && name == target.name;
    match target.kind {
        Kind::VirtualMachine => contents.vms.iter().any(|v| named(&v.namespace, &v.name)),
        Kind::DataVolume => contents
            .data_volumes
            .iter()
            .any(|d| named(&d.namespace, &d.name)),
        Kind::PersistentVolumeClaim => contents.pvcs.iter().any(|c| named(&c.namespace, &c.name)),
        Kind::PersistentVolume => contents.pvs.contains_key(&target.name),
        Kind::Referenced(kind) => {
            contents
                .referenceable
                .contains(&reference_key(kind, namespace, &target.name))
        }
    }
}

/// An object a standby Restore made, with that Restore's name.
type Made = (Target, String);

/// Every object of the kinds a standby makes that is labelled as made by one of `restores`.
async fn made_by(client: &Client, restores: &BTreeSet<String>) -> Result<Vec<Made>, kube::Error> {
    let mut targets = Vec::new();
    if restores.is_empty() {
        return Ok(targets);
    }
    for kind in Kind::every() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.resource());
        // Metadata only: a Secret's data is never requested.
        let listed = match api
            .list_metadata(&ListParams::default().labels(LABEL_RESTORE_NAME))
            .await
        {
            Ok(list) => list.items,
            // The kind's API is not served here: nothing of it was restored.
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(error) => return Err(error),
        };
        for object in listed {
            let Some(by) = object.labels().get(LABEL_RESTORE_NAME) else {
                continue;
            };
            if !restores.contains(by) || object.metadata.deletion_timestamp.is_some() {
                continue;
            }
            // What the site's own controllers keep in every namespace is never removed.
            if let Kind::Referenced(referenced) = kind
                && site_managed(referenced, &object.name_any())
            {
                continue;
            }
            targets.push((
                Target::new(
                    kind,
                    object.namespace().as_deref(),
                    &object.name_any(),
                    format!("made by standby Restore {by}"),
                    object.uid().unwrap_or_default(),
                ),
                by.clone(),
            ));
        }
    }
    Ok(targets)
}

/// What `replicadr clean --standby` found and did for one policy.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StandbyClean {
    pub policy: String,
    /// Why nothing was removed, when refused.
    pub refused: Option<String>,
    /// The standby Restores whose objects these are.
    pub restores: Vec<String>,
    /// What they made, `Kind namespace/name`.
    pub objects: Vec<String>,
    pub report: CleanReport,
}

/// Lists, and with `apply` removes, everything the standby restores of `policy` made at `site`,
/// then those Restores. Refused while the policy's standby is enabled: its next refresh would
/// restore it all again.
pub async fn clean_standby(
    client: &Client,
    namespace: &str,
    site: &str,
    policy: &str,
    apply: bool,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<StandbyClean, RecoveryError> {
    let restores = Restores::new(client, namespace);
    let names: BTreeSet<String> = restores
        .standby(site, policy)
        .await?
        .into_iter()
        .map(|r| r.name)
        .collect();
    let targets: Vec<Target> = made_by(client, &names)
        .await?
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let mut result = StandbyClean {
        policy: policy.to_owned(),
        refused: None,
        restores: names.iter().cloned().collect(),
        objects: targets.iter().map(Target::describe).collect(),
        report: CleanReport {
            site: site.to_owned(),
            ..CleanReport::default()
        },
    };
    // At the active site what the standby made is the workload in use (a failover took it over).
    let config = site::site_config(client, namespace).await?;
    if let Some(refusal) = clean::active_here(client, namespace, &config.site_map, site).await {
        result.refused = Some(refusal);
        return Ok(result);
    }
    if config.local_site.as_str() != site {
        result.refused = Some(format!(
            "--site is {site:?} but ConfigMap {namespace}/{} names localSite {:?}: run clean against the cluster of site {site}",
            config.configmap,
            config.local_site.as_str()
        ));
        return Ok(result);
    }
    let enabled = Api::<BackupPolicy>::namespaced(client.clone(), namespace)
        .get_opt(policy)
        .await?
        .and_then(|p| ValidPolicy::from_policy(&p).ok())
        .is_some_and(|p| p.standby);
    if enabled {
        result.refused = Some(format!(
            "BackupPolicy {namespace}/{policy} has spec.standby.enabled: true, so its scheduler here would restore all of it again: set it to false first (kubectl -n {namespace} patch backuppolicy {policy} --type merge -p '{{\"spec\":{{\"standby\":{{\"enabled\":false}}}}}}'), then run clean --standby again"
        ));
        return Ok(result);
    }
    if !apply {
        return Ok(result);
    }
    let options = StandbyOptions::new(site, policy, site);
    result.report = removal(client, site, &targets, &options, progress).await?;
    if result.report.failures.is_empty() {
        for restore in &names {
            restores.delete(restore).await?;
            progress(format!("removed standby Restore {namespace}/{restore}"));
        }
    }
    if !result.report.removed.is_empty() {
        clean::store(client, namespace, &mut result.report).await?;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use replicadr_lab::fixture::{self, ArchiveWriter};
    use serde_json::json;

    fn contents() -> BackupContents {
        let mut writer = ArchiveWriter::new(Vec::new()).expect("writer");
        let mut objects = fixture::healthy_vm_objects();
        objects.push((
            "secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-cloudinit", "namespace": "vms"}}),
        ));
        for (group_resource, object) in objects {
            writer.add(group_resource, &object).expect("add");
        }
        let (tarball, _) = writer.finish().expect("finish");
        BackupContents::read(tarball.as_slice()).expect("read")
    }

    fn target(kind: Kind, namespace: Option<&str>, name: &str) -> Target {
        Target::new(kind, namespace, name, String::new(), "uid".into())
    }

    #[test]
    fn pruning_never_takes_what_the_new_backup_holds() {
        let contents = contents();
        for held in [
            target(Kind::VirtualMachine, Some("vms"), "db"),
            target(Kind::PersistentVolumeClaim, Some("vms"), "db-root"),
            target(Kind::PersistentVolume, None, "pv-root"),
            target(
                Kind::Referenced(ReferencedKind::Secret),
                Some("vms"),
                "db-cloudinit",
            ),
        ] {
            assert!(still_held(&contents, &held), "{}", held.describe());
        }
        for gone in [
            target(Kind::VirtualMachine, Some("vms"), "tools"),
            target(Kind::VirtualMachine, Some("other"), "db"),
            target(Kind::DataVolume, Some("vms"), "db-root"),
            target(Kind::PersistentVolumeClaim, Some("vms"), "tools-root"),
            target(Kind::PersistentVolume, None, "pv-tools"),
            target(
                Kind::Referenced(ReferencedKind::ConfigMap),
                Some("vms"),
                "db-cloudinit",
            ),
        ] {
            assert!(!still_held(&contents, &gone), "{}", gone.describe());
        }
    }

    fn restored(held: bool, problems: &[&str]) -> Refresh {
        Refresh::Restored(Restored {
            backup: "vms-2".into(),
            restore: "standby-dr-vms-2".into(),
            recovery_point: Some("2026-12-01T02:00:00Z".parse().expect("time")),
            held,
            items: 40,
            seconds: 3.5,
            problems: problems.iter().map(|p| (*p).to_owned()).collect(),
            pruned: vec!["VirtualMachine vms/tools".into()],
            previous: Some("vms-1".into()),
        })
    }

    fn holding(backup: &str) -> StandbyStatus {
        StandbyStatus {
            backup: Some(backup.into()),
            restore: Some(format!("standby-dr-{backup}")),
            ..StandbyStatus::default()
        }
    }

    #[test]
    fn each_outcome_says_whether_the_standby_is_ready_and_what_it_holds() {
        let now: Timestamp = "2026-12-01T03:00:00Z".parse().expect("time");

        let done = restored(true, &[]);
        let (ok, reason, message) = done.condition();
        assert!(ok);
        assert_eq!(reason, "StandbyRestored");
        assert!(
            message.contains("pruned VirtualMachine vms/tools") && message.contains("was vms-1"),
            "{message}"
        );
        let mut status = holding("vms-1");
        status.refused_backup = Some("vms-2".into());
        done.record(&mut status, "vms-2", now);
        assert_eq!(status.backup.as_deref(), Some("vms-2"));
        assert_eq!(status.refused_backup, None);
        assert_eq!(status.pruned, ["VirtualMachine vms/tools"]);

        // Restored with problems: held, but not ready.
        let troubled = restored(true, &["PersistentVolumeClaim vms/db-root is not Bound"]);
        assert_eq!(troubled.condition().1, "StandbyProblems");
        assert!(!troubled.condition().0);

        // Velero did not restore it: the standby still holds the older backup.
        let failed = restored(
            false,
            &["Velero finished Restore velero/standby-dr-vms-2 as Failed"],
        );
        assert_eq!(
            failed.condition(),
            (false, "StandbyRestoreFailed", failed.condition().2)
        );
        let mut status = holding("vms-1");
        failed.record(&mut status, "vms-2", now);
        assert_eq!(status.backup.as_deref(), Some("vms-1"));
        assert_eq!(status.refused_backup.as_deref(), Some("vms-2"));
        assert_eq!(status.refused_time, Some(now.to_string()));

        // Refused by its plan: nothing restored, the objects named.
        let refused = Refresh::Refused {
            backup: "vms-2".into(),
            problems: vec!["VirtualMachine vms/db: already exists at site dr".into()],
        };
        let (ok, reason, message) = refused.condition();
        assert!(!ok);
        assert_eq!(reason, "StandbyBlocked");
        assert!(message.contains("VirtualMachine vms/db"), "{message}");
        let mut status = holding("vms-1");
        refused.record(&mut status, "vms-2", now);
        assert_eq!(status.backup.as_deref(), Some("vms-1"));
        assert_eq!(
            status.problems,
            ["VirtualMachine vms/db: already exists at site dr"]
        );

        // The newest did not verify here: the standby keeps the one that did, and the newest is
        // not tried again at once.
        let kept = Refresh::UpToDate {
            backup: "vms-1".into(),
            restore: "standby-dr-vms-1".into(),
            recovery_point: Some("2026-11-30T02:00:00Z".parse().expect("time")),
            passed_over: vec!["vms-2: PvMissing".into()],
        };
        assert!(kept.condition().0);
        let mut status = StandbyStatus::default();
        kept.record(&mut status, "vms-2", now);
        assert_eq!(status.backup.as_deref(), Some("vms-1"));
        assert_eq!(
            status.recovery_point.as_deref(),
            Some("2026-11-30T02:00:00Z"),
            "the lag is measured from it"
        );
        assert_eq!(status.refused_backup.as_deref(), Some("vms-2"));
    }
}
