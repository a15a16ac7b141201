//! The planned failback (`replicadr failback --site primary --from-context <dr>`), for the day
//! both sites are reachable: halt the VMs at the site being left, take a final backup there and
//! verify it, wait until it is in this site's Velero, have the operator confirm the array steps,
//! clean this site's stale workload, restore, check and start. Each step is written to a step
//! record (ConfigMap [`RECORD`] at this site) before the next one begins, so a re-run continues
//! where the last one stopped; once a failback succeeded, the next one starts afresh.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt as _};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use replicadr_core::contents::run_strategy;
use replicadr_core::wire::{ANNOTATION_HALTED_FOR_FAILBACK, LABEL_MANAGED_BY, MANAGED_BY};

use super::clean::{self, CleanOptions, CleanReport};
use super::every_policy::{self, Recovery};
use super::failover::Options;
use super::report::{Outcome, PhaseTime};
use super::site::{self, BackupChoice, RecoveryError};
use super::vm_start::{vm_resource, vm_running};
use crate::clock::Clock;
use crate::manual::{self, ManualError};
use crate::policy::BackupPolicy;
use crate::publish::Publisher;
use crate::velero;

/// The step record's ConfigMap, in the Velero namespace of the site failed back to.
pub const RECORD: &str = "replicadr-planned-failback";
const RECORD_KEY: &str = "record.json";

/// What the operator asked for, beyond the failback itself.
#[derive(Debug, Clone)]
pub struct PlannedOptions {
    /// The failback at this site (`site`, timeouts, `--yes`, `--no-start`, …).
    pub recovery: Options,
    /// How long the VMs at the site being left may take to stop.
    pub halt_timeout: Duration,
    /// How long this site's Velero may take to list the final backups (its backup sync).
    pub sync_timeout: Duration,
}

/// Why the planned failback could not run.
#[derive(Debug, thiserror::Error)]
pub enum PlannedError {
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    #[error(transparent)]
    Backup(#[from] ManualError),
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("the step record ConfigMap {RECORD}: {0}")]
    Record(#[from] serde_json::Error),
}

/// The step record: what is done, so that a re-run goes on from there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    pub from_site: String,
    /// When the first halt began: the start of the downtime.
    pub halt_started: Option<Timestamp>,
    /// When every VM at the site being left was seen stopped.
    pub halted_at: Option<Timestamp>,
    /// Each policy's final backup, made after `halted_at` and verified.
    pub final_backups: BTreeMap<String, String>,
    /// This site's stale workload was removed.
    pub cleaned: bool,
    /// The failback succeeded: the next one starts a new record.
    pub finished: Option<Timestamp>,
}

/// What the planned failback did, at both sites.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedReport {
    pub site: String,
    pub from_site: String,
    pub outcome: Outcome,
    /// This run continued a record an earlier run left.
    pub resumed: bool,
    /// The VMs this run halted at `from_site` (`namespace/name was <strategy>`).
    pub halted: Vec<String>,
    pub record: StepRecord,
    /// The phases at the site being left (halt, final-backup) and at this one (sync, clean).
    pub from_site_phases: Vec<PhaseTime>,
    pub site_phases: Vec<PhaseTime>,
    pub clean: Vec<CleanReport>,
    pub recovery: Option<Recovery>,
    /// Zero when every restored backup was made after the halt; else how much earlier the oldest
    /// was.
    pub rpo_seconds: Option<u64>,
    /// From the first halt to the end of this run.
    pub rto_seconds: Option<f64>,
    pub failures: Vec<String>,
}

impl PlannedReport {
    /// Stops the failback at `record`'s step with `outcome`, saying why.
    fn stop(mut self, record: &StepRecord, outcome: Outcome, failure: String) -> Self {
        self.record = record.clone();
        self.outcome = outcome;
        self.failures.push(failure);
        self
    }
}

/// Runs the planned failback to `options.recovery.site` from the cluster `from`. `confirm` asks
/// the operator about the array (unless `--yes` confirmed it already); `publisher` publishes the
/// final backups at `from` as `replicadr backup now` does.
#[expect(clippy::too_many_lines, reason = "the failback's steps, in order")]
pub async fn run(
    client: &Client,
    from: &Client,
    namespace: &str,
    options: &PlannedOptions,
    context: (&Publisher, Arc<dyn Clock>),
    confirm: &mut (dyn FnMut(&str, &str) -> bool + Send),
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<PlannedReport, PlannedError> {
    let (publisher, clock) = context;
    let site = options.recovery.site.clone();
    let from_site = site::site_config(from, namespace).await?.local_site;
    let mut report = PlannedReport {
        site: site.clone(),
        from_site: from_site.clone(),
        outcome: Outcome::Running,
        resumed: false,
        halted: Vec::new(),
        record: StepRecord::default(),
        from_site_phases: Vec::new(),
        site_phases: Vec::new(),
        clean: Vec::new(),
        recovery: None,
        rpo_seconds: None,
        rto_seconds: None,
        failures: Vec::new(),
    };
    if from_site == site {
        return Ok(report.stop(
            &StepRecord::default(),
            Outcome::Refused,
            format!(
                "the cluster given with --from-context is site {from_site} (its plugin ConfigMap's localSite), the site this failback restores to; give the context of the site being left"
            ),
        ));
    }
    let records: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut record = match read_record(&records).await? {
        Some(r) if r.finished.is_none() && r.from_site == from_site => {
            progress(format!(
                "continuing the planned failback from {from_site} begun {} (ConfigMap {RECORD})",
                r.halt_started
                    .map_or_else(|| "-".to_owned(), |t| t.to_string())
            ));
            report.resumed = true;
            r
        }
        _ => StepRecord {
            from_site: from_site.clone(),
            ..StepRecord::default()
        },
    };

    let policies: Vec<BackupPolicy> = Api::<BackupPolicy>::namespaced(from.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .items;
    if policies.is_empty() {
        return Ok(report.stop(
            &record,
            Outcome::Refused,
            format!(
                "site {from_site} has no BackupPolicy in namespace {namespace}: there is nothing to take a final backup of; run failback without --from-context to restore the newest backup"
            ),
        ));
    }
    if let Some((follower, schedule)) = policies
        .iter()
        .find_map(|p| Some((p.name_any(), p.spec.velero_schedule.clone()?)))
    {
        return Ok(report.stop(
            &record,
            Outcome::Refused,
            format!(
                "BackupPolicy {follower} at site {from_site} follows Velero Schedule {schedule}, so the planned failback cannot take its final backup: halt the VMs at {from_site}, run velero backup create --from-schedule {schedule} there, and run failback without --from-context",
            ),
        ));
    }

    // 1. Halt at the site being left. Always run: a VM started there since an earlier run's
    // halt wrote after its final backup, which is then taken again.
    let halt_began = Instant::now();
    // Velero reads no includedNamespaces as every namespace.
    let namespaces: BTreeSet<String> = policies
        .iter()
        .flat_map(|p| {
            let named = &p.spec.template.included_namespaces;
            if named.is_empty() {
                vec!["*".to_owned()]
            } else {
                named.clone()
            }
        })
        .collect();
    record.halt_started.get_or_insert_with(|| clock.now());
    report.halted = halt(from, &namespaces).await?;
    if !report.halted.is_empty() {
        for vm in &report.halted {
            progress(format!("halted at {from_site}: VirtualMachine {vm}"));
        }
        record.final_backups.clear();
        record.cleaned = false;
        record.halted_at = None;
    }
    if let Err(running) = wait_stopped(from, &namespaces, options).await? {
        write_record(&records, &record).await?;
        return Ok(report.stop(&record,
            Outcome::Failed,
            format!(
                "{} still run at site {from_site} {}s after they were halted; nothing was backed up or restored. Find out why they do not stop, then run the same command again",
                running.join(", "),
                options.halt_timeout.as_secs()
            ),
        ));
    }
    if record.halted_at.is_none() {
        record.halted_at = Some(clock.now());
    }
    report
        .from_site_phases
        .push(PhaseTime::new("halt", halt_began.elapsed()));
    write_record(&records, &record).await?;

    // 2. The final backups, one per policy, each verified.
    let backup_began = Instant::now();
    for policy in &policies {
        let name = policy.name_any();
        if let Some(backup) = record.final_backups.get(&name) {
            progress(format!(
                "policy {name}: final backup {backup} already taken"
            ));
            continue;
        }
        progress(format!("policy {name}: final backup at {from_site}"));
        let verified = manual::backup_now(
            from,
            namespace,
            &name,
            clock.clone(),
            publisher,
            options.recovery.poll,
            |line| progress(format!("  {line}")),
        )
        .await?;
        if !verified.verified {
            write_record(&records, &record).await?;
            return Ok(report.stop(&record,
                Outcome::Failed,
                format!(
                    "the final backup {} of BackupPolicy {name} at site {from_site} did not verify ({}); nothing was restored at {site}. The VMs at {from_site} stay halted: fix what the verification names, then run the same command again (or start them with virtctl start to call the failback off)",
                    verified.backup, verified.reason
                ),
            ));
        }
        record.final_backups.insert(name, verified.backup.clone());
        write_record(&records, &record).await?;
    }
    report
        .from_site_phases
        .push(PhaseTime::new("final-backup", backup_began.elapsed()));

    // 3. This site's Velero lists them (its backup sync).
    let sync_began = Instant::now();
    if let Err(missing) = wait_synced(client, namespace, &record, options).await? {
        return Ok(report.stop(&record,
            Outcome::Failed,
            format!(
                "the final backups {} are not in site {site}'s Velero {}s after they completed at {from_site}: Velero at {site} lists them at its next backup sync (--backup-sync-period, 1 minute by default; check that its BackupStorageLocation is Available and names the same bucket). Nothing was restored; run the same command again, it continues from here",
                missing.join(", "),
                options.sync_timeout.as_secs()
            ),
        ));
    }
    report
        .site_phases
        .push(PhaseTime::new("sync", sync_began.elapsed()));

    // 4. The array: only people can do it.
    let mut recovery_options = options.recovery.clone();
    if !recovery_options.replication_confirmed {
        recovery_options.replication_confirmed = confirm(&from_site, &site);
    }
    if !recovery_options.replication_confirmed {
        return Ok(report.stop(&record,
            Outcome::Refused,
            format!(
                "not confirmed that replication {from_site} → {site} caught up after the final backup, was stopped, and that {site}'s exports were promoted read-write; the VMs at {from_site} stay halted. Do that, then run the same command again (with --yes)"
            ),
        ));
    }

    // Nothing may have been started at the site being left since the final backups.
    if let Some(failed) =
        started_since(from, &namespaces, &mut record, &records, &from_site).await?
    {
        return Ok(report.stop(&record, Outcome::Failed, failed));
    }

    // 5. This site's stale workload, per policy, against its final backup.
    if !record.cleaned {
        let clean_began = Instant::now();
        for (policy, backup) in &record.final_backups {
            let cleaned = Box::pin(clean::clean(
                client,
                namespace,
                &CleanOptions {
                    site: site.clone(),
                    backup: BackupChoice::Named(backup.clone()),
                    policy: Some(policy.clone()),
                    apply: true,
                    force: false,
                    include_absent: false,
                    timeout: options.recovery.bind_timeout,
                    poll: options.recovery.poll,
                },
                progress,
            ))
            .await?;
            let refused = cleaned.refused.clone();
            let failures = cleaned.failures.clone();
            report.clean.push(cleaned);
            if let Some(why) = refused {
                return Ok(report.stop(
                    &record,
                    Outcome::Refused,
                    format!("cleaning site {site} for backup {backup} was refused: {why}"),
                ));
            }
            if !failures.is_empty() {
                return Ok(report.stop(
                    &record,
                    Outcome::Failed,
                    format!(
                        "cleaning site {site} for backup {backup} failed: {}",
                        failures.join("; ")
                    ),
                ));
            }
        }
        record.cleaned = true;
        write_record(&records, &record).await?;
        report
            .site_phases
            .push(PhaseTime::new("clean", clean_began.elapsed()));
    }

    // 6. Restore, check, start: the failback itself, each policy's final backup, and no other
    // policy than those.
    let (restorable, _) = site::policies_to_restore(client, namespace, &site).await?;
    let others: Vec<&String> = restorable
        .iter()
        .filter(|p| !record.final_backups.contains_key(*p))
        .collect();
    if !others.is_empty() {
        return Ok(report.stop(&record,
            Outcome::Refused,
            format!(
                "site {site} would also restore BackupPolicies {} (backups of them are here), which have no BackupPolicy at site {from_site} and so no final backup; restore them on their own with failback --policy, or delete their old backups, then run the same command again",
                others.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    if let Some(failed) =
        started_since(from, &namespaces, &mut record, &records, &from_site).await?
    {
        return Ok(report.stop(&record, Outcome::Failed, failed));
    }
    recovery_options.pinned.clone_from(&record.final_backups);
    let recovery = Box::pin(every_policy::run(
        client,
        namespace,
        &recovery_options,
        progress,
    ))
    .await?;
    let halted_at = record.halted_at.unwrap_or_else(|| clock.now());
    for restored in &recovery.reports {
        let Some(policy) = &restored.policy else {
            continue;
        };
        if record
            .final_backups
            .get(policy)
            .is_some_and(|b| *b != restored.backup)
            && restored.recovery_point.is_none_or(|at| at < halted_at)
        {
            report.failures.push(format!(
                "BackupPolicy {policy}: restored backup {} is not its final backup {}, and was made before the VMs at {from_site} were halted",
                restored.backup, record.final_backups[policy]
            ));
        }
    }
    report.rpo_seconds = recovery
        .reports
        .iter()
        .filter_map(|r| r.recovery_point)
        .min()
        .map(|oldest| u64::try_from((halted_at - oldest).get_seconds().max(0)).unwrap_or_default());
    report.rto_seconds = record
        .halt_started
        .and_then(|began| (clock.now() - began).total(jiff::Unit::Second).ok());
    report.outcome = if report.failures.is_empty() {
        recovery.outcome
    } else {
        Outcome::Failed
    };
    if report.outcome == Outcome::Succeeded {
        record.finished = Some(clock.now());
    }
    write_record(&records, &record).await?;
    report.record = record;
    report.recovery = Some(recovery);
    Ok(report)
}

/// A VM of `namespaces` at the site being left that no longer has run strategy `Halted`: someone
/// started it after its final backup, whose writes since that backup would be lost. The final
/// backups are dropped from the record (a re-run halts again and takes new ones) and the
/// failure names it.
async fn started_since(
    from: &Client,
    namespaces: &BTreeSet<String>,
    record: &mut StepRecord,
    records: &Api<ConfigMap>,
    from_site: &str,
) -> Result<Option<String>, PlannedError> {
    let started: Vec<String> = vms_in_scope(from, namespaces)
        .await?
        .iter()
        .filter(|vm| run_strategy(&vm.data) != "Halted" || vm_running(&vm.data))
        .map(|vm| format!("{} ({})", describe_vm(vm), run_strategy(&vm.data)))
        .collect();
    if started.is_empty() {
        return Ok(None);
    }
    record.final_backups.clear();
    record.cleaned = false;
    record.halted_at = None;
    write_record(records, record).await?;
    Ok(Some(format!(
        "{} at site {from_site} run again since the planned failback halted them, so their final backups miss what they wrote since; nothing more was done at this site. Run the same command again: it halts them and takes new final backups",
        started.join(", ")
    )))
}

/// Halts every VM of `namespaces` (every namespace for `*`) that is not halted, noting the run
/// strategy it had in [`ANNOTATION_HALTED_FOR_FAILBACK`]; returns those it halted.
async fn halt(from: &Client, namespaces: &BTreeSet<String>) -> Result<Vec<String>, kube::Error> {
    let mut halted = Vec::new();
    for vm in vms_in_scope(from, namespaces).await? {
        let strategy = run_strategy(&vm.data);
        if strategy == "Halted" {
            continue;
        }
        // A Manual or RerunOnFailure VM that is not running now is not meant to run after the
        // failback either: it is halted without the note.
        let note = (strategy == "Always" || vm_running(&vm.data)).then_some(&strategy);
        let namespace = vm.namespace().unwrap_or_default();
        Api::<DynamicObject>::namespaced_with(from.clone(), &namespace, &vm_resource())
            .patch(
                &vm.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({
                    "metadata": {"annotations": {ANNOTATION_HALTED_FOR_FAILBACK: note}},
                    "spec": {"running": null, "runStrategy": "Halted"},
                })),
            )
            .await?;
        halted.push(format!("{namespace}/{} (was {strategy})", vm.name_any()));
    }
    Ok(halted)
}

/// The VMs of `namespaces` (every namespace for `*`) at the site being left.
async fn vms_in_scope(
    from: &Client,
    namespaces: &BTreeSet<String>,
) -> Result<Vec<DynamicObject>, kube::Error> {
    if namespaces.contains("*") {
        let api: Api<DynamicObject> = Api::all_with(from.clone(), &vm_resource());
        return Ok(api.list(&ListParams::default()).await?.items);
    }
    let mut vms = Vec::new();
    for namespace in namespaces {
        let api: Api<DynamicObject> = Api::namespaced_with(from.clone(), namespace, &vm_resource());
        vms.extend(api.list(&ListParams::default()).await?.items);
    }
    Ok(vms)
}

/// `VirtualMachine namespace/name`.
fn describe_vm(vm: &DynamicObject) -> String {
    format!(
        "VirtualMachine {}/{}",
        vm.namespace().unwrap_or_default(),
        vm.name_any()
    )
}

/// Waits until no VM of `namespaces` runs; the ones still running when the time is up.
async fn wait_stopped(
    from: &Client,
    namespaces: &BTreeSet<String>,
    options: &PlannedOptions,
) -> Result<Result<(), Vec<String>>, kube::Error> {
    let deadline = Instant::now() + options.halt_timeout;
    loop {
        let running: Vec<String> = vms_in_scope(from, namespaces)
            .await?
            .iter()
            .filter(|vm| vm_running(&vm.data))
            .map(describe_vm)
            .collect();
        if running.is_empty() {
            return Ok(Ok(()));
        }
        if Instant::now() >= deadline {
            return Ok(Err(running));
        }
        tokio::time::sleep(options.recovery.poll).await;
    }
}

/// Waits until every final backup is a Completed Backup in this site's Velero; the missing ones
/// when the time is up.
async fn wait_synced(
    client: &Client,
    namespace: &str,
    record: &StepRecord,
    options: &PlannedOptions,
) -> Result<Result<(), Vec<String>>, kube::Error> {
    let backups: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &velero::backup_resource());
    let deadline = Instant::now() + options.sync_timeout;
    loop {
        let mut missing = Vec::new();
        for backup in record.final_backups.values() {
            let completed = backups.get_opt(backup).await?.is_some_and(|b| {
                b.data.pointer("/status/phase").and_then(Value::as_str) == Some("Completed")
            });
            if !completed {
                missing.push(backup.clone());
            }
        }
        if missing.is_empty() {
            return Ok(Ok(()));
        }
        if Instant::now() >= deadline {
            return Ok(Err(missing));
        }
        tokio::time::sleep(options.recovery.poll).await;
    }
}

async fn read_record(records: &Api<ConfigMap>) -> Result<Option<StepRecord>, PlannedError> {
    let Some(configmap) = records.get_opt(RECORD).await? else {
        return Ok(None);
    };
    let Some(text) = configmap.data.as_ref().and_then(|d| d.get(RECORD_KEY)) else {
        return Ok(None);
    };
    Ok(Some(serde_json::from_str(text)?))
}

async fn write_record(records: &Api<ConfigMap>, record: &StepRecord) -> Result<(), PlannedError> {
    let configmap = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": RECORD, "labels": {LABEL_MANAGED_BY: MANAGED_BY}},
        "data": {RECORD_KEY: serde_json::to_string_pretty(record)?},
    });
    records
        .patch(
            RECORD,
            &PatchParams::apply(MANAGED_BY).force(),
            &Patch::Apply(configmap),
        )
        .await?;
    Ok(())
}
