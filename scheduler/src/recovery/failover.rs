//! `replicadr failover` and `failback`: one command that checks its preconditions, restores the
//! chosen backup with Velero at this site, checks the result against the plan, starts the VMs in
//! order and stores a report. Safe to re-run: it finds its own Restore of the same backup at the
//! same site and continues from it; it never deletes and never overwrites what exists (Velero's
//! `existingResourcePolicy: none`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::Client;

use replicadr_core::wire::{PHASE_COMPLETED, PHASE_PARTIALLY_FAILED};

use super::preconditions::{plan_with_preconditions, preconditions_allow};
use super::report::{Outcome, PhaseTime, RecoveryReport};
pub use super::restore::RestoreScope;
pub(crate) use super::restore::Restores;
use super::restore::summarize_results;
use super::site::{BackupChoice, Planned, RecoveryError};
pub(crate) use super::store::finish;
use super::{checks, vm_start};
use crate::active_site::{Record, Takeover};
use crate::verify::Verifier;

/// On our Restores: the attempt number, 1 for the first Restore of a backup at a site.
pub use replicadr_core::wire::{ANNOTATION_ATTEMPT, ANNOTATION_OUTCOME};

/// The field manager and event reporter of what the recovery commands write.
pub const FIELD_MANAGER: &str = "replicadr-recovery";
/// How many times one run starts a new Restore after Velero restarted during the previous one.
const MAX_RESTARTS: u32 = 3;
pub use super::restore::{HALT_VMS_CONFIGMAP, RestoreView, restore_name};
pub use super::store::report_name;
pub use super::vm_start::{data_volume_resource, vm_resource, vm_running};

/// Which way the sites swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Failover,
    Failback,
    /// A restore into scratch namespaces, to prove a backup restorable at a live site.
    Drill,
    /// The warm standby's restore at a site that is not active: existing objects updated, VMs
    /// halted, nothing that runs pods ([`super::standby`]).
    Standby,
}

impl Operation {
    /// How this operation makes its site the active one; drills take nothing over.
    pub fn takeover(self) -> Option<Takeover> {
        match self {
            Operation::Failover => Some(Takeover::Failover),
            Operation::Failback => Some(Takeover::Failback),
            Operation::Drill | Operation::Standby => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Failover => "failover",
            Operation::Failback => "failback",
            Operation::Drill => "drill",
            Operation::Standby => "standby",
        }
    }
}

/// What the operator asked for.
#[derive(Debug, Clone)]
#[expect(clippy::struct_excessive_bools, reason = "the command's switches")]
pub struct Options {
    pub operation: Operation,
    /// The site this runs at (the restore plugin's `localSite` must say the same).
    pub site: String,
    pub backup: BackupChoice,
    pub policy: Option<String>,
    /// The site the backups come from (`--source-site`): backups labelled with another site are
    /// passed over, and unlabelled ones are taken as made there.
    pub source_site: Option<String>,
    /// Go on although preconditions fail (each is logged and reported), except one that
    /// `--force` never overrides ([`Forcing::Never`](super::report::Forcing::Never)).
    pub force: bool,
    /// The operator confirmed that replication to this site was stopped and its exports promoted.
    pub replication_confirmed: bool,
    /// Connect to port 2049 of each of this site's NFS servers before restoring.
    pub check_exports: bool,
    /// Stop at the first start-order group that does not come up, instead of starting the later
    /// groups all the same.
    pub stop_on_failure: bool,
    /// Start a new Restore attempt even when the last one completed (`--new-attempt`).
    pub new_attempt: bool,
    /// Leave the VMs halted.
    pub start_vms: bool,
    pub restore_timeout: Duration,
    pub bind_timeout: Duration,
    pub vm_timeout: Duration,
    pub poll: Duration,
    /// The backup to restore of each of these policies, by name, instead of its newest verified
    /// one (a planned failback's final backups).
    pub pinned: BTreeMap<String, String>,
    /// Velero's `namespaceMapping` (drills restore into scratch namespaces).
    pub namespace_mapping: BTreeMap<String, String>,
    /// Which of the backup's kinds the Restore takes (a failover from a warm standby restores
    /// what the standby leaves out).
    pub scope: RestoreScope,
    /// Group-resources the Restore leaves out besides (every item of them is one the restore
    /// plugin would skip anyway).
    pub skip_kinds: Vec<String>,
    /// How the report reads as text in the stored report's `summary.txt` (the CLI's renderer);
    /// without one the report's one-line summary is stored.
    pub summary: Option<fn(&RecoveryReport) -> String>,
}

impl Options {
    /// Defaults for `operation` at `site`: newest verified backup, VMs started, generous timeouts.
    pub fn new(operation: Operation, site: &str) -> Self {
        Self {
            operation,
            site: site.to_owned(),
            backup: BackupChoice::LatestVerified,
            policy: None,
            source_site: None,
            force: false,
            replication_confirmed: false,
            check_exports: false,
            stop_on_failure: false,
            new_attempt: false,
            start_vms: true,
            restore_timeout: Duration::from_hours(1),
            bind_timeout: Duration::from_mins(5),
            vm_timeout: Duration::from_mins(10),
            poll: Duration::from_secs(1),
            pinned: BTreeMap::new(),
            namespace_mapping: BTreeMap::new(),
            scope: RestoreScope::All,
            skip_kinds: Vec::new(),
            summary: None,
        }
    }
}

/// Runs a failover or failback of one backup; `progress` receives a line per step. The report
/// is returned whatever happened after the preconditions (and stored in the cluster once a
/// Restore exists). [`super::every_policy::run`] runs one of these per policy.
pub async fn run(
    client: &Client,
    namespace: &str,
    options: &Options,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<RecoveryReport, RecoveryError> {
    let mut run = Box::pin(prepare(client, namespace, options, progress)).await?;
    if !admit(client, namespace, options, &mut run, progress).await {
        return Ok(run.report);
    }
    Box::pin(restore_and_check(
        client, namespace, options, &mut run, progress,
    ))
    .await?;
    let mut runs = [run];
    start_every(client, namespace, options, &mut runs, progress).await?;
    let [run] = runs;
    finish(client, namespace, options, run.report, run.started).await
}

/// One backup's restore on its way: what was planned, its report, and how far it got.
pub(crate) struct Run {
    pub planned: Planned,
    pub report: RecoveryReport,
    /// The policy whose backup this is, if any.
    pub policy: Option<String>,
    pub started: Instant,
    /// Restored and checked: its VMs may start.
    pub restored: bool,
    /// Every Restore of this takeover (any attempt, failover or failback) of the backup here: the
    /// objects labelled with one of them are the ones this operation restored.
    pub own_restores: Vec<String>,
    /// The active-site epoch of this takeover, once recorded; `None` for drills and when the
    /// record could not be written (`--force`).
    pub epoch: Option<u64>,
}

/// Plans the restore and checks every precondition, into the run's report.
pub(crate) async fn prepare(
    client: &Client,
    namespace: &str,
    options: &Options,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<Run, RecoveryError> {
    let started = Instant::now();
    let mut report =
        RecoveryReport::new(options.operation.as_str(), &options.site, Timestamp::now());
    let planned =
        plan_with_preconditions(client, namespace, options, &mut report, progress).await?;
    report.phase(PhaseTime::new("plan", started.elapsed()));
    let policy = options
        .policy
        .clone()
        .or_else(|| planned.backup.policy.clone());
    report.policy.clone_from(&policy);
    Ok(Run {
        planned,
        report,
        policy,
        started,
        restored: false,
        own_restores: Vec::new(),
        epoch: None,
    })
}

/// Whether the run may restore: its preconditions hold (or `--force`), and this site is recorded
/// as the active one. A refusal is in the report.
pub(crate) async fn admit(
    client: &Client,
    namespace: &str,
    options: &Options,
    run: &mut Run,
    progress: &mut (dyn FnMut(String) + Send),
) -> bool {
    preconditions_allow(options, &mut run.report, progress)
        && take_over(client, namespace, options, run, progress).await
}

/// Restores the run's backup with Velero (following a Restore Velero's restart failed into the
/// next attempt) and checks what was restored against the plan. A restore that did not finish
/// is a failure in the report, and the run is not `restored`.
pub(crate) async fn restore_and_check(
    client: &Client,
    namespace: &str,
    options: &Options,
    run: &mut Run,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<(), RecoveryError> {
    if Box::pin(super::from_standby::restore(
        client, namespace, options, run, progress,
    ))
    .await?
    {
        if run.report.failures.is_empty() {
            check_restored(client, options, run, progress).await?;
        }
        if let Some(policy) = run.policy.clone()
            && let Some(failure) = super::from_standby::refreshed_since(
                client,
                namespace,
                &options.site,
                &policy,
                &run.own_restores,
            )
            .await?
        {
            run.report.fail(failure);
            run.restored = false;
        }
        return Ok(());
    }
    let Planned { backup, plan, .. } = &run.planned;
    let report = &mut run.report;
    let restore_started = Instant::now();
    let restores = Restores::new(client, namespace);
    let mut restarts = 0;
    let (restore, finished) = loop {
        let restore = restores
            .ensure(options, &backup.name, plan, run.epoch, progress)
            .await?;
        let finished = restores
            .watch(&restore, options.restore_timeout, options.poll, progress)
            .await;
        // Velero marks the restore it was running Failed when it restarts: that attempt is
        // over, not wrong, so the next one starts (what is restored already is skipped).
        let restarted = finished.as_ref().is_ok_and(|view| {
            view.failed()
                && view
                    .failure_reason
                    .as_deref()
                    .is_some_and(|r| r.contains("during the server starting"))
        });
        if restarted && restarts < MAX_RESTARTS {
            restarts += 1;
            progress(format!(
                "Velero restarted during Restore {restore}; starting the next attempt"
            ));
            continue;
        }
        break (restore, finished);
    };
    report.restore = Some(restore.clone());
    run.own_restores = restores
        .of_epoch(&options.site, run.epoch)
        .await?
        .into_iter()
        .filter_map(|(restore, of)| (of == backup.name).then_some(restore))
        .collect();
    if !run.own_restores.contains(&restore) {
        run.own_restores.push(restore.clone());
    }
    report.phase(PhaseTime::new("restore", restore_started.elapsed()));
    let view = match finished {
        Ok(view) => view,
        Err(message) => {
            report.fail(message);
            return Ok(());
        }
    };
    report.restore_phase.clone_from(&view.phase);
    report.restore_warnings = view.warnings;
    report.restore_items = view.items_restored;
    report.restore_errors = view.errors;
    if let Ok(results) = Verifier::new(client.clone(), namespace)
        .restore_results(backup, &restore)
        .await
    {
        report.restore_messages = summarize_results(&results);
    }
    if !matches!(
        view.phase.as_deref(),
        Some(PHASE_COMPLETED | PHASE_PARTIALLY_FAILED)
    ) {
        report.fail(format!(
            "Velero finished Restore {namespace}/{restore} as {}{}; re-run the same command to retry with a new Restore",
            view.phase.as_deref().unwrap_or("?"),
            view.failure_reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
        return Ok(());
    }

    check_restored(client, options, run, progress).await
}

/// Checks what was restored against the plan; the run may then start its VMs.
pub(crate) async fn check_restored(
    client: &Client,
    options: &Options,
    run: &mut Run,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<(), RecoveryError> {
    let plan = &run.planned.plan;
    let report = &mut run.report;
    let binding_started = Instant::now();
    checks::check_volumes(client, plan, report).await?;
    checks::check_claims(client, plan, options, report, progress).await?;
    checks::check_vms(client, plan, report).await?;
    report.phase(PhaseTime::new("binding", binding_started.elapsed()));
    run.restored = true;
    Ok(())
}

/// Starts the VMs of every run restored (unless `--no-start`, or its policy keeps them halted),
/// group by group across all runs; each run's report gets its VMs' starts and the phase's time.
pub(crate) async fn start_every(
    client: &Client,
    namespace: &str,
    options: &Options,
    runs: &mut [Run],
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<(), RecoveryError> {
    let start_started = Instant::now();
    let mut wanted = Vec::new();
    for (index, run) in runs.iter().enumerate() {
        if run.restored
            && vm_start::start_wanted(client, namespace, options, run.policy.as_deref(), progress)
                .await
        {
            wanted.push(index);
        }
    }
    vm_start::start_vms(client, options, runs, &wanted, progress).await?;
    for run in runs.iter_mut().filter(|r| r.restored) {
        run.report
            .phase(PhaseTime::new("vm-start", start_started.elapsed()));
    }
    Ok(())
}

/// Makes this site the active one in the active-site record of every storage location, before
/// anything is restored: from then on the site that was active makes no backups, even if it comes
/// back. Whether to go on: a record that cannot be written refuses the run, unless `--force`.
async fn take_over(
    client: &Client,
    namespace: &str,
    options: &Options,
    run: &mut Run,
    progress: &mut (dyn FnMut(String) + Send),
) -> bool {
    let Some(takeover) = options.operation.takeover() else {
        return true;
    };
    let backup = run.planned.backup.name.clone();
    let report = &mut run.report;
    let failure = match record_takeover(
        client, namespace, options, takeover, &backup, report, progress,
    )
    .await
    {
        Ok(epoch) => {
            run.epoch = epoch;
            return true;
        }
        Err(failure) => failure,
    };
    if !options.force {
        report.outcome = Outcome::Refused;
        report.failures = vec![failure];
        return false;
    }
    tracing::warn!(%failure, "--force: going on without recording the active site");
    progress(format!("WARNING --force: going on although {failure}"));
    report.forced = true;
    true
}

/// Writes the takeover to every storage location's record; the failure as the report says it.
async fn record_takeover(
    client: &Client,
    namespace: &str,
    options: &Options,
    takeover: Takeover,
    backup: &str,
    report: &mut RecoveryReport,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<Option<u64>, String> {
    let consequence = "without it, the site that was active would make backups again as soon as it is back; fix access to the bucket, or pass --force to restore anyway and run the same command again later to record the takeover";
    let records = Record::every(client, namespace)
        .await
        .map_err(|e| format!("{e}; {consequence}"))?;
    let mut epoch = None;
    for record in records {
        let change = record
            .take_over(&options.site, takeover, Some(backup), Timestamp::now())
            .await
            .map_err(|e| {
                let written = if report.active_site.is_empty() {
                    String::new()
                } else {
                    format!(" (already written: {})", report.active_site.join("; "))
                };
                format!("{e}{written}; {consequence}")
            })?;
        epoch = epoch.or(Some(change.record.epoch));
        let line = format!(
            "{} is the active site (epoch {}{}) in {} (BackupStorageLocation {})",
            change.record.site,
            change.record.epoch,
            match (&change.previous, change.written) {
                (_, false) => ", unchanged".to_owned(),
                (Some(previous), true) => format!(", was {previous}"),
                (None, true) => ", first record".to_owned(),
            },
            change.url,
            change.location
        );
        progress(line.clone());
        report.active_site.push(line);
    }
    Ok(epoch)
}
