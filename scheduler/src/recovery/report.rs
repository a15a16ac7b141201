//! What a failover or failback did: the backup and the RPO it achieved, each precondition, the
//! time of each phase (the RTO breakdown), what was rewritten, which VMs started when, and what
//! failed. Printed, and stored next to the Restore.

use std::fmt::Write as _;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::plan::{Plan, VolumePlan};
use crate::velero::BackupView;

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Still going (never stored).
    Running,
    /// Everything restored, checked and started.
    Succeeded,
    /// Something is missing or did not start: see `failures`.
    Failed,
    /// A precondition failed and `--force` was not given, or could not override it: nothing
    /// was written.
    Refused,
}

/// One precondition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Precondition {
    pub name: &'static str,
    /// `None` when not checked.
    pub passed: Option<bool>,
    pub detail: String,
    /// What `--force` may do when it failed.
    pub forcing: Forcing,
}

/// Whether `--force` goes on past a failed precondition, and whether a refusal suggests it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Forcing {
    /// `--force` goes on and a refusal says so: what is restored is still right, only less
    /// checked or less complete than wanted (an unverified backup, an incomplete plan, NFS
    /// servers the machine running the command cannot reach but the nodes may).
    Safe,
    /// `--force` goes on, but a refusal names the real remedy instead: forcing would not help
    /// (no storage location, no VM API) or would stand in for the operator's own confirmation.
    Unadvised,
    /// `--force` never goes on: the restore would be wrong, e.g. the restore plugin would rewrite
    /// the PVs onto another site's exports.
    Never,
}

impl Forcing {
    /// How `--force` treats the precondition `name`: one table for every precondition the
    /// failover checks, so that the rule is read in one place. An unknown one is
    /// [`Forcing::Unadvised`], as every precondition was before forcing was told apart.
    pub fn of(name: &str) -> Self {
        match name {
            // The plugin ConfigMap's localSite is another site; the failover chose a backup that
            // shrank (named with --backup, it can be forced through PlanComplete).
            "PluginConfig" | "BackupNamed" => Forcing::Never,
            "BackupVerified" | "PlanComplete" | "ExportsReachable" => Forcing::Safe,
            // StorageLocationAvailable, VirtualMachineApi, ReplicationPromoted (its remedy is
            // `--yes` once replication is stopped).
            _ => Forcing::Unadvised,
        }
    }
}

impl Precondition {
    pub fn new(name: &'static str, passed: bool, detail: impl Into<String>) -> Self {
        Self {
            name,
            passed: Some(passed),
            detail: detail.into(),
            forcing: Forcing::of(name),
        }
    }

    pub fn skipped(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            passed: None,
            detail: detail.into(),
            forcing: Forcing::of(name),
        }
    }

    pub fn failed(&self) -> bool {
        self.passed == Some(false)
    }

    /// The failure line of a refused run: what failed, and whether `--force` would go on.
    pub fn refusal(&self) -> String {
        let hint = match self.forcing {
            Forcing::Safe => "; --force goes on regardless (and reports it)",
            Forcing::Unadvised => "",
            Forcing::Never => "; --force does not override this precondition",
        };
        format!("precondition {} failed: {}{hint}", self.name, self.detail)
    }
}

/// How long one phase took.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseTime {
    pub name: &'static str,
    pub seconds: f64,
}

impl PhaseTime {
    pub fn new(name: &'static str, took: Duration) -> Self {
        Self {
            name,
            seconds: took.as_secs_f64(),
        }
    }
}

/// A VM that came up.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmStart {
    pub namespace: String,
    pub name: String,
    /// 1 for the first group started.
    pub group: usize,
    pub start_order: Option<i64>,
    /// Seconds from its group's start until it was seen Running.
    pub running_after_seconds: f64,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryReport {
    pub operation: String,
    pub site: String,
    /// The BackupPolicy whose backup this restores, when it has one.
    pub policy: Option<String>,
    pub outcome: Outcome,
    pub started: Timestamp,
    pub finished: Option<Timestamp>,
    pub backup: String,
    pub recovery_point: Option<Timestamp>,
    /// The backup's age when the restore began: the RPO achieved.
    pub rpo_achieved_seconds: Option<u64>,
    pub preconditions: Vec<Precondition>,
    /// Went on although a precondition failed.
    pub forced: bool,
    /// What the takeover wrote to the active-site record of each storage location ("dr is the
    /// active site (epoch 2, was primary): s3://…"); empty for drills.
    pub active_site: Vec<String>,
    pub restore: Option<String>,
    pub restore_phase: Option<String>,
    pub restore_warnings: u64,
    pub restore_errors: u64,
    /// Items Velero restored (its `status.progress.itemsRestored`).
    pub restore_items: u64,
    /// Velero's restore results, `kind: scope: message`.
    pub restore_messages: Vec<String>,
    /// The RTO breakdown.
    pub phases: Vec<PhaseTime>,
    pub total_seconds: f64,
    pub rewritten: Vec<VolumePlan>,
    pub vm_starts: Vec<VmStart>,
    pub failures: Vec<String>,
    /// The plan's problems (warnings included).
    pub problems: Vec<super::plan::Problem>,
    /// The warm standby this run used instead of restoring the backup, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standby: Option<StandbyUse>,
}

/// How a failover used the warm standby at its site.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StandbyUse {
    /// The standby Restore whose objects this run took as restored.
    pub restore: String,
    pub backup: String,
    /// The backup the standby held before this run brought it up to date, when it was behind
    /// (`None` also when it held none).
    pub updated_from: Option<String>,
    /// How old the backup the standby held was when the run began (its recovery point's age).
    pub lag_seconds: Option<u64>,
    /// The Restore of what a standby leaves out (Deployments, pods, ...), when the backup held any.
    pub complement: Option<String>,
}

impl RecoveryReport {
    pub fn new(operation: &str, site: &str, started: Timestamp) -> Self {
        Self {
            operation: operation.to_owned(),
            site: site.to_owned(),
            policy: None,
            outcome: Outcome::Running,
            started,
            finished: None,
            backup: String::new(),
            recovery_point: None,
            rpo_achieved_seconds: None,
            preconditions: Vec::new(),
            forced: false,
            active_site: Vec::new(),
            restore: None,
            restore_phase: None,
            restore_warnings: 0,
            restore_errors: 0,
            restore_items: 0,
            restore_messages: Vec::new(),
            phases: Vec::new(),
            total_seconds: 0.0,
            rewritten: Vec::new(),
            vm_starts: Vec::new(),
            failures: Vec::new(),
            problems: Vec::new(),
            standby: None,
        }
    }

    pub fn precondition(&mut self, precondition: Precondition) {
        self.preconditions.push(precondition);
    }

    /// The failure lines when the preconditions refuse the run: one failed and `force` is not
    /// given, or one failed that `--force` never overrides. `None` when the run goes on.
    pub fn refusal(&self, force: bool) -> Option<Vec<String>> {
        let mut failed = self.preconditions.iter().filter(|p| p.failed()).peekable();
        failed.peek()?;
        let failed: Vec<&Precondition> = failed.collect();
        if force && failed.iter().all(|p| p.forcing != Forcing::Never) {
            return None;
        }
        Some(failed.iter().map(|p| p.refusal()).collect())
    }

    pub fn phase(&mut self, phase: PhaseTime) {
        self.phases.push(phase);
    }

    pub fn fail(&mut self, failure: String) {
        tracing::error!(%failure, "recovery problem");
        self.failures.push(failure);
    }

    pub fn set_backup(&mut self, backup: &BackupView, plan: &Plan) {
        self.backup.clone_from(&backup.name);
        self.recovery_point = backup.recovery_point();
        self.rpo_achieved_seconds = plan.age_seconds;
        self.problems.clone_from(&plan.problems);
    }

    /// One line: what happened.
    pub fn summary(&self) -> String {
        let rpo = self.rpo_achieved_seconds.map_or_else(
            || "unknown".to_owned(),
            |s| crate::duration::human(Duration::from_secs(s)),
        );
        let mut line = format!(
            "{} to site {} {:?}: backup {} (RPO {rpo}), {} PVs rewritten, {} VMs running, {:.1}s",
            self.operation,
            self.site,
            self.outcome,
            self.backup,
            self.rewritten.len(),
            self.vm_starts.len(),
            self.total_seconds
        );
        if let Some(first) = self.failures.first() {
            let _ = write!(line, "; {} problem(s), first: {first}", self.failures.len());
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(preconditions: Vec<Precondition>) -> RecoveryReport {
        let mut report = RecoveryReport::new("failover", "dr", Timestamp::UNIX_EPOCH);
        for precondition in preconditions {
            report.precondition(precondition);
        }
        report
    }

    fn wrong_site() -> Precondition {
        Precondition::new(
            "PluginConfig",
            false,
            "ConfigMap velero/p names localSite \"primary\"",
        )
    }

    #[test]
    fn force_goes_past_every_failure_but_the_wrong_site() {
        let unverified = Precondition::new("BackupVerified", false, "backup b: Failed");
        let unconfirmed = Precondition::new("ReplicationPromoted", false, "not confirmed");
        let passed = Precondition::new("PlanComplete", true, "2 VMs");
        let skipped = Precondition::skipped("ExportsReachable", "not checked");

        let forcible = report(vec![
            unverified.clone(),
            unconfirmed.clone(),
            passed,
            skipped,
        ]);
        assert_eq!(forcible.refusal(true), None);
        assert_eq!(
            forcible.refusal(false),
            Some(vec![
                "precondition BackupVerified failed: backup b: Failed; --force goes on regardless (and reports it)".to_owned(),
                "precondition ReplicationPromoted failed: not confirmed".to_owned(),
            ])
        );

        let at_the_wrong_site = report(vec![wrong_site(), unverified]);
        let expected = vec![
            "precondition PluginConfig failed: ConfigMap velero/p names localSite \"primary\"; --force does not override this precondition".to_owned(),
            "precondition BackupVerified failed: backup b: Failed; --force goes on regardless (and reports it)".to_owned(),
        ];
        assert_eq!(at_the_wrong_site.refusal(true), Some(expected.clone()));
        assert_eq!(at_the_wrong_site.refusal(false), Some(expected));
        assert_eq!(
            report(vec![wrong_site()]).refusal(true).map(|f| f.len()),
            Some(1)
        );
    }

    #[test]
    fn each_precondition_has_its_forcing() {
        for (name, forcing) in [
            ("PluginConfig", Forcing::Never),
            ("StorageLocationAvailable", Forcing::Unadvised),
            ("BackupVerified", Forcing::Safe),
            ("PlanComplete", Forcing::Safe),
            ("VirtualMachineApi", Forcing::Unadvised),
            ("ExportsReachable", Forcing::Safe),
            ("ReplicationPromoted", Forcing::Unadvised),
        ] {
            assert_eq!(
                Precondition::new(name, false, "").forcing,
                forcing,
                "{name}"
            );
        }
    }

    #[test]
    fn nothing_failed_nothing_refused() {
        let all_passed = report(vec![Precondition::new("PluginConfig", true, "ok")]);
        assert_eq!(all_passed.refusal(false), None);
        assert_eq!(report(Vec::new()).refusal(false), None);
    }
}
