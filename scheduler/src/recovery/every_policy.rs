//! `failover` and `failback` without `--backup` or `--policy`: every policy is restored. The
//! policies are those whose backups this site may restore (completed, made at another site); each
//! gets the newest of its backups that verifies here, a Restore and a report of its own, and the
//! VMs of all of them start in one sequence of start-order groups. Either every policy can be
//! restored and all are, or none is (unless `--force`): a failover that restored one policy of
//! two and printed Succeeded would be the worst outcome.

use kube::Client;
use serde::Serialize;

use super::failover::{self, Options, Run};
use super::report::{Outcome, Precondition, RecoveryReport};
use super::site::{self, BackupChoice, RecoveryError};

/// Every policy's report, and the outcome of the whole.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Recovery {
    /// `Succeeded` only when every report did; `Refused` when nothing was restored because a
    /// precondition failed; else `Failed`.
    pub outcome: Outcome,
    pub reports: Vec<RecoveryReport>,
}

impl Recovery {
    fn of(reports: Vec<RecoveryReport>) -> Self {
        let all = |outcome| reports.iter().all(|r| r.outcome == outcome);
        let outcome = if all(Outcome::Succeeded) {
            Outcome::Succeeded
        } else if all(Outcome::Refused) {
            Outcome::Refused
        } else {
            Outcome::Failed
        };
        Self { outcome, reports }
    }
}

/// Runs the failover or failback: one backup when `options` names a backup or a policy (or no
/// backup at this site carries a policy label), else every policy's newest verified backup.
pub async fn run(
    client: &Client,
    namespace: &str,
    options: &Options,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<Recovery, RecoveryError> {
    let single = options.policy.is_some() || matches!(options.backup, BackupChoice::Named(_));
    let (policies, unlabelled) = if single {
        (Vec::new(), Vec::new())
    } else {
        site::policies_to_restore(client, namespace, &options.site).await?
    };
    if policies.is_empty() {
        let report = Box::pin(failover::run(client, namespace, options, progress)).await?;
        return Ok(Recovery::of(vec![report]));
    }
    for line in &unlabelled {
        progress(format!("  passed over: {line}"));
    }
    progress(format!(
        "restoring {} BackupPolicies: {}",
        policies.len(),
        policies.join(", ")
    ));
    let mut runs = Vec::new();
    let mut missing = Vec::new();
    for policy in &policies {
        progress(format!("policy {policy}:"));
        let for_policy = options_for(options, policy);
        match Box::pin(failover::prepare(client, namespace, &for_policy, progress)).await {
            Ok(run) => runs.push(run),
            Err(RecoveryError::NoBackup(message)) => {
                missing.push(no_backup(options, policy, &message));
            }
            Err(error) => return Err(error),
        }
    }
    let unready: Vec<String> = runs
        .iter()
        .filter(|r| r.report.preconditions.iter().any(Precondition::failed))
        .map(|r| r.report.policy.clone().unwrap_or_default())
        .chain(missing.iter().filter_map(|r| r.policy.clone()))
        .collect();
    if !unready.is_empty() && !options.force {
        return Ok(refuse_all(options, runs, missing, &unready, progress));
    }
    for run in &mut runs {
        let mut for_policy = options_for(options, run.policy.as_deref().unwrap_or_default());
        for_policy.policy.clone_from(&run.policy);
        if failover::admit(client, namespace, &for_policy, run, progress).await {
            Box::pin(failover::restore_and_check(
                client,
                namespace,
                &for_policy,
                run,
                progress,
            ))
            .await?;
        }
    }
    failover::start_every(client, namespace, options, &mut runs, progress).await?;
    let mut reports = Vec::new();
    for run in runs {
        let report = if run.report.outcome == Outcome::Refused {
            run.report
        } else {
            failover::finish(client, namespace, options, run.report, run.started).await?
        };
        reports.push(report);
    }
    reports.extend(missing);
    Ok(Recovery::of(reports))
}

/// `options` for one policy: its pinned backup, else its newest verified one.
fn options_for(options: &Options, policy: &str) -> Options {
    let mut for_policy = options.clone();
    for_policy.policy = Some(policy.to_owned());
    if let Some(backup) = options.pinned.get(policy) {
        for_policy.backup = BackupChoice::Named(backup.clone());
    }
    for_policy
}

/// The report of a policy none of whose backups can be restored here: a blocking problem.
fn no_backup(options: &Options, policy: &str, message: &str) -> RecoveryReport {
    let mut report = RecoveryReport::new(
        options.operation.as_str(),
        &options.site,
        jiff::Timestamp::now(),
    );
    report.policy = Some(policy.to_owned());
    report.outcome = Outcome::Refused;
    report.failures.push(format!(
        "BackupPolicy {policy} has no backup that can be restored at site {}: {message}",
        options.site
    ));
    report
}

/// Nothing is restored: every policy's report says which policies could not be and why.
fn refuse_all(
    options: &Options,
    runs: Vec<Run>,
    missing: Vec<RecoveryReport>,
    unready: &[String],
    progress: &mut (dyn FnMut(String) + Send),
) -> Recovery {
    let why = format!(
        "nothing was restored: a {} restores every BackupPolicy or none, and {} cannot be restored now (see {}); fix that, or restore one policy alone with --policy <name>, or pass --force to restore the others",
        options.operation.as_str(),
        unready.join(", "),
        if unready.len() == 1 {
            "its report"
        } else {
            "their reports"
        }
    );
    progress(why.clone());
    let mut reports = Vec::new();
    for run in runs {
        let mut report = run.report;
        report.outcome = Outcome::Refused;
        report.failures = report.refusal(false).unwrap_or_default();
        report.failures.push(why.clone());
        reports.push(report);
    }
    for mut report in missing {
        report.failures.push(why.clone());
        reports.push(report);
    }
    Recovery::of(reports)
}
