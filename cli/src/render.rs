//! Every table and report the operator commands print: one table renderer ([`table`], kubectl's
//! layout: no borders, columns three spaces apart) and one duration formatter (the library's
//! [`human`]). The library returns data; only this module turns it into text.

use std::fmt::Write as _;
use std::time::Duration;

use comfy_table::{CellAlignment, ColumnConstraint, Table};
use replicadr_scheduler::active_site::Change;
use replicadr_scheduler::drill::{Check, LiveReport};
pub use replicadr_scheduler::duration::human;
use replicadr_scheduler::gc::{GcAction, Orphan};
use replicadr_scheduler::recovery::clean::{CleanReport, Target};
use replicadr_scheduler::recovery::every_policy::Recovery;
use replicadr_scheduler::recovery::plan::{Plan, Verification};
use replicadr_scheduler::recovery::planned::PlannedReport;
use replicadr_scheduler::recovery::report::RecoveryReport;
use replicadr_scheduler::recovery::standby::StandbyClean;
use replicadr_scheduler::status::{Overview, PolicyStatus};
use replicadr_scheduler::verify::Report;

/// Left-aligned columns separated by three spaces, the last one unpadded, no trailing blanks;
/// the first row is the header.
pub fn table(rows: &[Vec<String>]) -> String {
    let mut table = Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    for row in rows {
        table.add_row(row);
    }
    let columns = rows.iter().map(Vec::len).max().unwrap_or_default();
    for index in 0..columns {
        if let Some(column) = table.column_mut(index) {
            let right = if index + 1 == columns { 0 } else { 3 };
            column.set_padding((0, right));
            column.set_cell_alignment(CellAlignment::Left);
            column.set_constraint(ColumnConstraint::ContentWidth);
        }
    }
    let mut out = String::new();
    for line in table.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Rows of owned cells from string slices.
fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|&c| c.to_owned()).collect()
}

/// A verification report as `replicadr verify` and `backup now` print it.
pub fn verification(report: &Report) -> String {
    let stats = &report.stats;
    let mut out = table(&[
        row([
            "BACKUP",
            "VERIFIED",
            "REASON",
            "ITEMS",
            "PVCS",
            "PVS",
            "NFS PVS",
            "VMS",
            "SNAPSHOTS",
            "DURATION",
        ]),
        vec![
            report.backup.clone(),
            report.verified.to_string(),
            report.reason.clone(),
            stats.items.to_string(),
            stats.persistent_volume_claims.to_string(),
            stats.persistent_volumes.to_string(),
            stats.nfs_persistent_volumes.to_string(),
            stats.virtual_machines.to_string(),
            stats.volume_snapshots.to_string(),
            format!("{:.1}s", report.duration_seconds),
        ],
    ]);
    if !report.findings.is_empty() {
        let mut rows = vec![row(["REASON", "FINDING"])];
        rows.extend(
            report
                .findings
                .iter()
                .map(|f| vec![f.reason.to_string(), f.message.clone()]),
        );
        out.push('\n');
        out.push_str(&table(&rows));
        let listed = report.findings.len() as u64;
        let total: u64 = report.finding_counts.values().sum();
        if total > listed {
            let _ = writeln!(out, "… and {} more", total - listed);
        }
    }
    out
}

/// `replicadr status`: one row per policy.
pub fn overview(overview: &Overview) -> String {
    let mut out = String::new();
    match (&overview.local_site, &overview.local_site_error) {
        (Some(site), _) => {
            let _ = writeln!(out, "This site: {site}");
        }
        (None, error) => {
            let _ = writeln!(
                out,
                "This site: unknown ({})",
                error.as_deref().unwrap_or("-")
            );
        }
    }
    let mut rows = vec![row(["STORAGE LOCATION", "ACTIVE SITE", "RECORD"])];
    for location in &overview.active_site {
        let (site, detail) = match (&location.record, &location.error) {
            (Some(record), None) => (record.site.clone(), record.describe()),
            (_, error) => ("UNKNOWN".to_owned(), error.clone().unwrap_or_default()),
        };
        rows.push(vec![
            location.location.clone(),
            site,
            format!(
                "{detail}{}",
                location
                    .url
                    .as_ref()
                    .map(|u| format!(" [{u}]"))
                    .unwrap_or_default()
            ),
        ]);
    }
    out.push_str(&table(&rows));
    let _ = writeln!(out);
    out.push_str(&status(&overview.policies));
    out
}

/// `replicadr clean`: the stale and the absent objects, and what happened.
/// `clean --standby`: what the warm standby made here, and what was removed.
pub fn clean_standby(result: &StandbyClean) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Site {}; warm standby of policy {}: {} Restores, {} objects",
        result.report.site,
        result.policy,
        result.restores.len(),
        result.objects.len()
    );
    let mut rows = vec![row(["OBJECT", "ACTION"])];
    for object in &result.objects {
        let action = if result.report.removed.contains(object) {
            "removed"
        } else if result.report.applied {
            "kept"
        } else {
            "remove (with --apply)"
        };
        rows.push(vec![object.clone(), action.to_owned()]);
    }
    if result.objects.is_empty() {
        let _ = writeln!(out, "Nothing made by the standby is left here.");
    } else {
        out.push_str(&table(&rows));
    }
    if let Some(refused) = &result.refused {
        let _ = writeln!(out, "\nRefused: {refused}");
    }
    for failure in &result.report.failures {
        let _ = writeln!(out, "FAILED: {failure}");
    }
    out
}

pub fn clean(report: &CleanReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Site {}; backups compared: {}",
        report.site,
        if report.backups.is_empty() {
            "none".to_owned()
        } else {
            report.backups.join(", ")
        }
    );
    let removed = |t: &Target| report.removed.contains(&t.describe());
    for (title, targets, action) in [
        (
            "Stale (under the backup's names, not restored from it here)",
            &report.stale,
            "remove",
        ),
        (
            "Absent from the backup (removed only with --include-absent)",
            &report.absent,
            "keep",
        ),
    ] {
        if targets.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{title}:");
        let mut rows = vec![row(["KIND", "NAMESPACE", "NAME", "HERE", "ACTION"])];
        for target in targets {
            rows.push(vec![
                target.kind.as_str().to_owned(),
                target.namespace.clone().unwrap_or_else(|| "-".to_owned()),
                target.name.clone(),
                target.detail.clone(),
                if removed(target) {
                    "removed".to_owned()
                } else if report.applied {
                    "kept".to_owned()
                } else {
                    format!("would {action} (dry run; --apply)")
                },
            ]);
        }
        out.push_str(&table(&rows));
    }
    if report.stale.is_empty() && report.absent.is_empty() {
        let _ = writeln!(
            out,
            "\nnothing stale: no VM, claim or PV of the backups' names is here"
        );
    }
    if let Some(refused) = &report.refused {
        let _ = writeln!(out, "\nREFUSED: {refused}");
    }
    for failure in &report.failures {
        let _ = writeln!(out, "FAILURE: {failure}");
    }
    if let Some(configmap) = &report.report_configmap {
        let _ = writeln!(
            out,
            "\n{} objects removed; report in ConfigMap {configmap}",
            report.removed.len()
        );
    }
    out
}

/// `replicadr activate`: each storage location's record.
pub fn activated(changes: &[Change]) -> String {
    let mut rows = vec![row(["STORAGE LOCATION", "RECORD", "ACTION"])];
    for change in changes {
        rows.push(vec![
            change.location.clone(),
            change.url.clone(),
            if change.written {
                format!("written: {}", change.record.describe())
            } else {
                format!("already names {}", change.record.describe())
            },
        ]);
    }
    table(&rows)
}

/// The policies' rows of `replicadr status`.
pub fn status(policies: &[PolicyStatus]) -> String {
    let mut rows = vec![row([
        "POLICY",
        "SCHEDULE",
        "PAUSED",
        "READY",
        "LAST BACKUP",
        "LAST VERIFIED BACKUP",
        "RPO",
        "INTERVAL",
        "VERIFIED",
    ])];
    for p in policies {
        rows.push(vec![
            p.policy.clone(),
            p.schedule.clone(),
            p.paused.to_string(),
            p.ready.clone(),
            p.last_backup.clone().unwrap_or_else(|| "-".to_owned()),
            p.last_verified_backup
                .clone()
                .unwrap_or_else(|| "-".to_owned()),
            p.recovery_point_age_seconds
                .map_or_else(|| "none".to_owned(), |s| human(Duration::from_secs(s))),
            p.interval_seconds
                .map_or_else(|| "-".to_owned(), |s| human(Duration::from_secs(s))),
            p.verified.clone(),
        ]);
    }
    table(&rows)
}

/// `replicadr gc`: each orphaned replica PVC and what happened to it.
pub fn gc(orphans: &[Orphan]) -> String {
    if orphans.is_empty() {
        return "no orphaned replica PVCs\n".to_owned();
    }
    let mut rows = vec![row(["NAMESPACE", "PVC", "SNAPSHOT UID", "ACTION"])];
    for orphan in orphans {
        let action = match &orphan.action {
            GcAction::WouldDelete => "would delete (dry run; --apply deletes)".to_owned(),
            GcAction::Deleted => match &orphan.volume {
                Some(volume) => format!("deleted; PersistentVolume {volume} set to Retain first"),
                None => "deleted".to_owned(),
            },
            GcAction::SkippedRestored(restore) => {
                format!("kept: restored by Restore {restore} (a replica made at another site)")
            }
            GcAction::Failed(error) => format!("not deleted: {error}"),
        };
        rows.push(vec![
            orphan.namespace.clone(),
            orphan.name.clone(),
            orphan.snapshot_uid.clone(),
            action,
        ]);
    }
    table(&rows)
}

/// A drill's checks.
pub fn checks(checks: &[Check]) -> String {
    let mut rows = vec![row(["CHECK", "RESULT", "DETAIL"])];
    for c in checks {
        rows.push(vec![
            c.name.clone(),
            if c.passed { "passed" } else { "FAILED" }.to_owned(),
            c.detail.clone(),
        ]);
    }
    table(&rows)
}

/// `replicadr drill --dr-context`: the drill on real clusters.
pub fn live_drill(report: &LiveReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n=== ReplicaDR drill at site {} (nothing failed over): {} ===",
        report.site,
        if report.passed() { "PASSED" } else { "FAILED" }
    );
    let _ = writeln!(
        out,
        "Backup {}, Restore {} into {}",
        report.backup,
        report.restore.as_deref().unwrap_or("-"),
        report
            .scratch_namespaces
            .iter()
            .map(|(from, to)| format!("{from} → {to}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(out, "\n{}", plan(&report.plan));
    out.push_str(&checks(&report.checks));
    let _ = writeln!(
        out,
        "\nrestore {:.1}s; cleaned up {} objects",
        report.restore_seconds,
        report.deleted.len()
    );
    out
}

/// A plan as `replicadr plan` prints it.
pub fn plan(plan: &Plan) -> String {
    let mut out = String::new();
    let age = plan
        .age_seconds
        .map(|s| format!(", {} ago", human(Duration::from_secs(s))))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "Backup:        {}{}",
        plan.backup,
        plan.policy
            .as_deref()
            .map(|p| format!(" (policy {p})"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "Recovery point: {}{age}",
        plan.recovery_point
            .map_or_else(|| "unknown".to_owned(), |t| t.to_string())
    );
    let verification = match &plan.verification {
        Verification::Passed => "passed".to_owned(),
        Verification::Failed(why) => format!("FAILED: {why}"),
        Verification::NotRun(why) => format!("not run ({why})"),
    };
    let _ = writeln!(out, "Verification:  {verification}");
    if let Some(previous) = &plan.compared_with {
        let _ = writeln!(
            out,
            "Compared with: {previous}, the previous verified backup of the policy"
        );
    }
    let source = &plan.source;
    let from = source.site.as_deref().unwrap_or("unknown");
    let _ = if source.assumed {
        writeln!(
            out,
            "Made at:       site {from} (assumed: the warnings below say why)"
        )
    } else {
        writeln!(out, "Made at:       site {from} ({})", source.how)
    };
    let _ = writeln!(out, "Restore at:    site {}", plan.site);
    let _ = writeln!(out);

    out.push_str(&objects_table(plan));
    let _ = writeln!(out);
    out.push_str(&volumes_table(plan));
    let _ = writeln!(out);

    if plan.problems.is_empty() {
        let _ = writeln!(out, "No problems.");
    } else {
        let mut rows = vec![vec![
            "SEVERITY".to_owned(),
            "REASON".to_owned(),
            "OBJECT".to_owned(),
            "MESSAGE".to_owned(),
        ]];
        for p in &plan.problems {
            rows.push(vec![
                format!("{:?}", p.severity),
                p.reason.to_owned(),
                p.object.clone(),
                p.message.clone(),
            ]);
        }
        out.push_str(&table(&rows));
    }
    let blocking = plan.blocking().count();
    let _ = writeln!(
        out,
        "\n{}",
        if plan.complete {
            format!(
                "The restore would be complete: {} VMs, {} PVCs, {} PVs.",
                plan.virtual_machines().count(),
                plan.claims().count(),
                plan.volumes.len()
            )
        } else {
            format!("The restore would be INCOMPLETE: {blocking} blocking problem(s) above.")
        }
    );
    out
}

/// Every VM and PVC, by namespace.
fn objects_table(plan: &Plan) -> String {
    let mut rows = vec![vec![
        "NAMESPACE".to_owned(),
        "KIND".to_owned(),
        "NAME".to_owned(),
        "DETAILS".to_owned(),
    ]];
    for namespace in &plan.namespaces {
        for vm in &namespace.virtual_machines {
            rows.push(vec![
                namespace.name.clone(),
                "VirtualMachine".to_owned(),
                vm.name.clone(),
                format!(
                    "start-order {}, {}, disks {}",
                    vm.start_order
                        .map_or_else(|| "last".to_owned(), |o| o.to_string()),
                    vm.run_strategy,
                    vm.disks.join(",")
                ),
            ]);
        }
        for dv in &namespace.data_volumes {
            rows.push(vec![
                namespace.name.clone(),
                "DataVolume".to_owned(),
                dv.name.clone(),
                format!(
                    "{}, claim {}",
                    if dv.phase.is_empty() {
                        "no phase"
                    } else {
                        &dv.phase
                    },
                    dv.name
                ),
            ]);
        }
        for pvc in &namespace.claims {
            let mut details = format!("volume {}", pvc.volume.as_deref().unwrap_or("<none>"));
            if pvc.replica_of_snapshot.is_some() {
                details.push_str(", replica of a VolumeSnapshot");
            }
            rows.push(vec![
                namespace.name.clone(),
                "PersistentVolumeClaim".to_owned(),
                pvc.name.clone(),
                details,
            ]);
        }
        for item in &namespace.left_out {
            rows.push(vec![
                namespace.name.clone(),
                item.kind.to_owned(),
                item.name.clone(),
                format!("left out of the restore: {}", item.why),
            ]);
        }
    }
    table(&rows)
}

/// Every PV before and after.
fn volumes_table(plan: &Plan) -> String {
    let mut rows = vec![vec![
        "PERSISTENTVOLUME".to_owned(),
        "CLAIM".to_owned(),
        "RECLAIM".to_owned(),
        "ACTION".to_owned(),
        "BEFORE".to_owned(),
        "AFTER".to_owned(),
    ]];
    for volume in &plan.volumes {
        rows.push(vec![
            volume.name.clone(),
            volume.claim.clone().unwrap_or_else(|| "-".to_owned()),
            volume.reclaim_policy.clone(),
            format!("{:?}", volume.action),
            volume.before.clone().unwrap_or_else(|| "-".to_owned()),
            volume.after.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    table(&rows)
}

/// Each precondition and its result.
fn preconditions_table(report: &RecoveryReport) -> String {
    let mut rows = vec![vec![
        "PRECONDITION".to_owned(),
        "RESULT".to_owned(),
        "DETAIL".to_owned(),
    ]];
    for p in &report.preconditions {
        rows.push(vec![
            p.name.to_owned(),
            match p.passed {
                Some(true) => "passed",
                Some(false) => "FAILED",
                None => "skipped",
            }
            .to_owned(),
            p.detail.clone(),
        ]);
    }
    table(&rows)
}

/// Every policy's report, then, when there are several, one row per policy.
pub fn recoveries(recovery: &Recovery) -> String {
    let mut out = String::new();
    for (index, report) in recovery.reports.iter().enumerate() {
        if index > 0 {
            let _ = writeln!(out, "\n---\n");
        }
        out.push_str(&self::recovery(report));
    }
    if recovery.reports.len() > 1 {
        let mut rows = vec![row(["POLICY", "BACKUP", "AGE", "RESTORE", "OUTCOME"])];
        for report in &recovery.reports {
            rows.push(vec![
                report.policy.clone().unwrap_or_else(|| "-".to_owned()),
                if report.backup.is_empty() {
                    "none".to_owned()
                } else {
                    report.backup.clone()
                },
                report
                    .rpo_achieved_seconds
                    .map_or_else(|| "-".to_owned(), |s| human(Duration::from_secs(s))),
                report.restore.clone().unwrap_or_else(|| "-".to_owned()),
                format!("{:?}", report.outcome),
            ]);
        }
        let _ = writeln!(out, "\n===\n");
        out.push_str(&table(&rows));
        let _ = writeln!(
            out,
            "\n{} of {} policies: {:?}",
            recovery
                .reports
                .first()
                .map_or("recovery", |r| r.operation.as_str()),
            recovery.reports.len(),
            recovery.outcome
        );
    }
    out
}

/// A failover's or failback's report as the CLI prints it (and stores it in `summary.txt`).
#[expect(clippy::too_many_lines, reason = "one section after the other")]
pub fn recovery(report: &RecoveryReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} to site {}: {:?}{}",
        report.operation,
        report.site,
        report.outcome,
        if report.forced { " (FORCED)" } else { "" }
    );
    if let Some(policy) = &report.policy {
        let _ = writeln!(out, "BackupPolicy {policy}");
    }
    let _ = writeln!(
        out,
        "Backup {} (recovery point {}; RPO achieved {})",
        report.backup,
        report
            .recovery_point
            .map_or_else(|| "unknown".to_owned(), |t| t.to_string()),
        report
            .rpo_achieved_seconds
            .map_or_else(|| "unknown".to_owned(), |s| human(Duration::from_secs(s)))
    );
    if let Some(restore) = &report.restore {
        let _ = writeln!(
            out,
            "Restore {restore}: {} ({} warnings, {} errors)",
            report.restore_phase.as_deref().unwrap_or("not finished"),
            report.restore_warnings,
            report.restore_errors
        );
    }
    if let Some(standby) = &report.standby {
        let _ = writeln!(
            out,
            "Warm standby: Restore {} held backup {}{}{}; {}",
            standby.restore,
            standby.backup,
            standby
                .updated_from
                .as_deref()
                .map(|from| format!(" (brought up to date from {from} first)"))
                .unwrap_or_default(),
            standby
                .lag_seconds
                .map(|s| format!(", {} old", human(Duration::from_secs(s))))
                .unwrap_or_default(),
            standby.complement.as_deref().map_or_else(
                || "nothing was restored".to_owned(),
                |r| format!("Restore {r} restored what the standby leaves out")
            )
        );
    }
    for line in &report.active_site {
        let _ = writeln!(out, "Active site: {line}");
    }
    let _ = writeln!(out);
    out.push_str(&preconditions_table(report));
    if !report.phases.is_empty() {
        let _ = writeln!(out);
        let mut rows = vec![vec!["PHASE".to_owned(), "SECONDS".to_owned()]];
        for phase in &report.phases {
            rows.push(vec![phase.name.to_owned(), format!("{:.1}", phase.seconds)]);
        }
        rows.push(vec![
            "total".to_owned(),
            format!("{:.1}", report.total_seconds),
        ]);
        out.push_str(&table(&rows));
    }
    if !report.rewritten.is_empty() {
        let _ = writeln!(out);
        let mut rows = vec![vec![
            "PERSISTENTVOLUME".to_owned(),
            "CLAIM".to_owned(),
            "BEFORE".to_owned(),
            "AFTER".to_owned(),
        ]];
        for v in &report.rewritten {
            rows.push(vec![
                v.name.clone(),
                v.claim.clone().unwrap_or_else(|| "-".to_owned()),
                v.before.clone().unwrap_or_default(),
                v.after.clone().unwrap_or_default(),
            ]);
        }
        out.push_str(&table(&rows));
    }
    if !report.vm_starts.is_empty() {
        let _ = writeln!(out);
        let mut rows = vec![vec![
            "GROUP".to_owned(),
            "START-ORDER".to_owned(),
            "VIRTUALMACHINE".to_owned(),
            "RUNNING AFTER".to_owned(),
        ]];
        for vm in &report.vm_starts {
            rows.push(vec![
                vm.group.to_string(),
                vm.start_order
                    .map_or_else(|| "-".to_owned(), |o| o.to_string()),
                format!("{}/{}", vm.namespace, vm.name),
                format!("{:.1}s", vm.running_after_seconds),
            ]);
        }
        out.push_str(&table(&rows));
    }
    for (title, lines) in [
        (
            "Plan problems:",
            report
                .problems
                .iter()
                .map(|p| format!("{:?} {} {}: {}", p.severity, p.reason, p.object, p.message))
                .collect::<Vec<_>>(),
        ),
        (
            "Velero's restore messages:",
            report.restore_messages.clone(),
        ),
        ("FAILURES:", report.failures.clone()),
    ] {
        if !lines.is_empty() {
            let _ = writeln!(out, "\n{title}");
            for line in lines {
                let _ = writeln!(out, "  - {line}");
            }
        }
    }
    let _ = writeln!(out, "\n{}", report.summary());
    out
}

/// The planned failback: both sites' steps, the final backups, RPO and RTO, then the clean and
/// the failback's own reports.
pub fn planned(report: &PlannedReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "planned failback from site {} to site {}: {:?}{}",
        report.from_site,
        report.site,
        report.outcome,
        if report.resumed {
            " (continued from an earlier run)"
        } else {
            ""
        }
    );
    let seconds = |s: f64| human(Duration::from_secs_f64(s.max(0.0)));
    let _ = writeln!(
        out,
        "RPO {}; RTO {} (from the halt at {})",
        report.rpo_seconds.map_or_else(
            || "-".to_owned(),
            |s| if s == 0 {
                "0s (every restored backup was made after the halt)".to_owned()
            } else {
                human(Duration::from_secs(s))
            }
        ),
        report.rto_seconds.map_or_else(|| "-".to_owned(), seconds),
        report.from_site,
    );
    for vm in &report.halted {
        let _ = writeln!(out, "Halted at {}: VirtualMachine {vm}", report.from_site);
    }
    let mut rows = vec![row(["SITE", "STEP", "TOOK"])];
    for (site, phases) in [
        (&report.from_site, &report.from_site_phases),
        (&report.site, &report.site_phases),
    ] {
        for phase in phases {
            rows.push(vec![
                site.clone(),
                phase.name.to_owned(),
                seconds(phase.seconds),
            ]);
        }
    }
    if rows.len() > 1 {
        let _ = writeln!(out);
        out.push_str(&table(&rows));
    }
    if !report.record.final_backups.is_empty() {
        let mut rows = vec![row(["POLICY", "FINAL BACKUP"])];
        for (policy, backup) in &report.record.final_backups {
            rows.push(vec![policy.clone(), backup.clone()]);
        }
        let _ = writeln!(out);
        out.push_str(&table(&rows));
    }
    for cleaned in &report.clean {
        let _ = writeln!(
            out,
            "
--- clean at site {}
",
            report.site
        );
        out.push_str(&clean(cleaned));
    }
    if let Some(recovery) = &report.recovery {
        let _ = writeln!(
            out,
            "
--- failback at site {}
",
            report.site
        );
        out.push_str(&recoveries(recovery));
    }
    if !report.failures.is_empty() {
        let _ = writeln!(
            out,
            "
FAILURES:"
        );
        for failure in &report.failures {
            let _ = writeln!(out, "  - {failure}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use replicadr_scheduler::verify::{Findings, Reason, Stats};

    use super::*;

    #[test]
    fn tables_align_like_kubectl() {
        let text = table(&[
            row(["NAME", "STATUS", "DETAIL"]),
            row(["a-long-name", "ok", "last column is not padded"]),
            row(["b", "FAILED", ""]),
        ]);
        assert_eq!(
            text,
            "NAME          STATUS   DETAIL\n\
             a-long-name   ok       last column is not padded\n\
             b             FAILED\n"
        );
    }

    #[test]
    fn a_verification_report_names_each_finding() {
        let mut findings = Findings::default();
        findings.push(
            Reason::Backup(replicadr_core::invariants::Reason::PvMissing),
            "pvc vms/a is bound to pv-1, which is not in the backup",
        );
        let report = Report::new("b1", &findings, Stats::default(), 0.5);
        let text = verification(&report);
        assert!(text.starts_with("BACKUP   VERIFIED   REASON"), "{text}");
        assert!(text.contains("b1       false      PvMissing"), "{text}");
        assert!(text.contains("PvMissing   pvc vms/a"), "{text}");
    }
}
