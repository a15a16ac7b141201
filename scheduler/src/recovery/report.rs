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
    /// A precondition failed and `--force` was not given: nothing was written.
    Refused,
}

/// One precondition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Precondition {
    pub name: &'static str,
    /// `None` when not checked.
    pub passed: Option<bool>,
    pub detail: String,
}

impl Precondition {
    pub fn new(name: &'static str, passed: bool, detail: impl Into<String>) -> Self {
        Self {
            name,
            passed: Some(passed),
            detail: detail.into(),
        }
    }

    pub fn skipped(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            passed: None,
            detail: detail.into(),
        }
    }

    pub fn failed(&self) -> bool {
        self.passed == Some(false)
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
            restore_messages: Vec::new(),
            phases: Vec::new(),
            total_seconds: 0.0,
            rewritten: Vec::new(),
            vm_starts: Vec::new(),
            failures: Vec::new(),
            problems: Vec::new(),
        }
    }

    pub fn precondition(&mut self, precondition: Precondition) {
        self.preconditions.push(precondition);
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
