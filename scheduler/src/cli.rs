//! The operator commands behind `replicadr backup now`, `verify`, `status` and `gc`. Each returns
//! what to print; `main` prints it and turns the outcome into an exit code.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Preconditions,
};
use kube::{Client, ResourceExt as _};

use crate::clock::Clock;
use crate::lifecycle::{BackupLife, LifeError};
use crate::policy::{BackupPolicy, ValidPolicy, condition};
use crate::publish::Publisher;
use crate::velero::{self, BackupView};
use crate::verify::archive::LABEL_REPLICA_OF_SNAPSHOT_UID;
use crate::verify::{Report, SiteMapSource, Verifier, VerifyError};

/// Why a command failed (as opposed to finding a failed backup).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Backup(#[from] LifeError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error("cannot list VolumeSnapshots, so cannot tell which replica PVCs are orphaned")]
    NoSnapshots(#[source] kube::Error),
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

impl Output {
    /// `value` as JSON or YAML; `None` for a table, which each command renders itself.
    pub fn structured<T: serde::Serialize>(self, value: &T) -> Option<String> {
        match self {
            Output::Table => None,
            Output::Json => {
                Some(serde_json::to_string_pretty(value).expect("reports serialise") + "\n")
            }
            Output::Yaml => Some(serde_yaml_ng::to_string(value).expect("reports serialise")),
        }
    }
}

/// Renders a verification report.
pub fn render_report(report: &Report, output: Output) -> String {
    if let Some(text) = output.structured(report) {
        return text;
    }
    let mut text = String::new();
    let stats = &report.stats;
    let _ = writeln!(
        text,
        "BACKUP\tVERIFIED\tREASON\tITEMS\tPVCS\tPVS\tNFS PVS\tVMS\tSNAPSHOTS\tDURATION"
    );
    let _ = writeln!(
        text,
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.1}s",
        report.backup,
        report.verified,
        report.reason,
        stats.items,
        stats.persistent_volume_claims,
        stats.persistent_volumes,
        stats.nfs_persistent_volumes,
        stats.virtual_machines,
        stats.volume_snapshots,
        report.duration_seconds
    );
    if !report.findings.is_empty() {
        let _ = writeln!(text, "\nREASON\tFINDING");
        for finding in &report.findings {
            let _ = writeln!(text, "{}\t{}", finding.reason, finding.message);
        }
        let listed = report.findings.len() as u64;
        let total: u64 = report.finding_counts.values().sum();
        if total > listed {
            let _ = writeln!(text, "… and {} more", total - listed);
        }
    }
    align(&text)
}

/// Aligns tab-separated columns like kubectl's tables.
fn align(text: &str) -> String {
    let mut out = String::new();
    for block in text.split("\n\n") {
        let rows: Vec<Vec<&str>> = block.lines().map(|l| l.split('\t').collect()).collect();
        let columns = rows.iter().map(Vec::len).max().unwrap_or_default();
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                rows.iter()
                    .filter(|r| r.len() > 1)
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or_default()
            })
            .collect();
        if !out.is_empty() {
            out.push('\n');
        }
        for row in rows {
            let mut line = String::new();
            for (index, cell) in row.iter().enumerate() {
                if index + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}   ", width = widths[index]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
}

/// The site map a backup is verified with: its policy's, else the plugin ConfigMap's.
pub async fn site_map_for(client: &Client, namespace: &str, backup: &BackupView) -> SiteMapSource {
    let Some(policy) = &backup.policy else {
        return SiteMapSource::default();
    };
    let api: Api<BackupPolicy> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(policy).await {
        Ok(Some(policy)) => match ValidPolicy::from_policy(&policy) {
            Ok(valid) => SiteMapSource {
                configmap: valid.site_map.name.clone(),
                key: valid.site_map_key().to_owned(),
            },
            Err(_) => SiteMapSource::default(),
        },
        _ => SiteMapSource::default(),
    }
}

/// `replicadr verify <backup>`: verifies without writing anything.
pub async fn verify(client: &Client, namespace: &str, backup: &str) -> Result<Report, CliError> {
    let verifier = Verifier::new(client.clone(), namespace);
    let (_, view) = verifier.backup(backup).await?;
    let source = site_map_for(client, namespace, &view).await;
    Ok(verifier.verify(backup, &source).await?)
}

/// `replicadr backup now <policy>`: creates a backup named for now, waits for Velero to finish
/// it, verifies it and publishes the result like a scheduled run ([`BackupLife::run_now`]).
pub async fn backup_now(
    client: &Client,
    namespace: &str,
    policy_name: &str,
    clock: Arc<dyn Clock>,
    publisher: &Publisher,
    poll: Duration,
    progress: impl FnMut(&str),
) -> Result<Report, CliError> {
    let life = BackupLife::new(client.clone(), namespace, publisher, clock);
    Ok(life.run_now(policy_name, poll, progress).await?)
}

/// `replicadr status`: every policy, its newest verified backup and its RPO.
pub async fn status(client: &Client, namespace: &str, now: Timestamp) -> Result<String, CliError> {
    let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), namespace);
    let mut text = String::from(
        "POLICY\tSCHEDULE\tPAUSED\tREADY\tLAST BACKUP\tLAST VERIFIED BACKUP\tRPO\tINTERVAL\tVERIFIED\n",
    );
    for policy in policies.list(&ListParams::default()).await?.items {
        let status = policy.status.clone().unwrap_or_default();
        let condition_text = |type_: &str| {
            status.condition(type_).map_or_else(
                || "-".to_owned(),
                |c| {
                    if c.status == "True" {
                        "True".to_owned()
                    } else {
                        format!("{} ({})", c.status, c.reason)
                    }
                },
            )
        };
        let rpo = status
            .last_verified_time
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .map_or_else(
                || "none".to_owned(),
                |t| human(now.duration_since(t).unsigned_abs()),
            );
        let interval = status
            .expected_interval_seconds
            .map_or_else(|| "-".to_owned(), |s| human(Duration::from_secs(s)));
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            policy.name_any(),
            policy.spec.schedule,
            policy.spec.paused,
            condition_text(condition::READY),
            status.last_backup.as_deref().unwrap_or("-"),
            status.last_verified_backup.as_deref().unwrap_or("-"),
            rpo,
            interval,
            condition_text(condition::VERIFIED),
        );
    }
    Ok(align(&text))
}

/// A duration as kubectl prints ages: `45s`, `12m`, `3h20m`, `2d4h`.
pub fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// A replica PVC whose VolumeSnapshot is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub snapshot_uid: String,
}

/// `replicadr gc`: replica PVCs (labelled managed-by replicadr) whose source VolumeSnapshot (by
/// UID) no longer exists. With `apply`, deletes exactly those PVCs, each guarded by its UID.
pub async fn gc(client: &Client, apply: bool) -> Result<(Vec<Orphan>, String), CliError> {
    let snapshots: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "snapshot.storage.k8s.io",
            "v1",
            "VolumeSnapshot",
        )),
    );
    let live: HashSet<String> = snapshots
        .list_metadata(&ListParams::default())
        .await
        .map_err(CliError::NoSnapshots)?
        .items
        .into_iter()
        .filter_map(|s| s.metadata.uid)
        .collect();
    let pvcs: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let selector = format!(
        "{}={},{LABEL_REPLICA_OF_SNAPSHOT_UID}",
        velero::LABEL_MANAGED_BY,
        velero::MANAGED_BY
    );
    let mut orphans = Vec::new();
    for pvc in pvcs
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
    {
        let snapshot_uid = pvc
            .labels()
            .get(LABEL_REPLICA_OF_SNAPSHOT_UID)
            .cloned()
            .unwrap_or_default();
        if pvc.metadata.deletion_timestamp.is_some() || live.contains(&snapshot_uid) {
            continue;
        }
        orphans.push(Orphan {
            namespace: pvc.namespace().unwrap_or_default(),
            name: pvc.name_any(),
            uid: pvc.metadata.uid.clone().unwrap_or_default(),
            snapshot_uid,
        });
    }
    let mut text = String::from("NAMESPACE\tPVC\tSNAPSHOT UID\tACTION\n");
    for orphan in &orphans {
        let action = if apply {
            let api: Api<PersistentVolumeClaim> =
                Api::namespaced(client.clone(), &orphan.namespace);
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(orphan.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&orphan.name, &params).await {
                Ok(_) => "deleted".to_owned(),
                Err(error) => format!("not deleted: {error}"),
            }
        } else {
            "would delete (dry run; --apply deletes)".to_owned()
        };
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{action}",
            orphan.namespace, orphan.name, orphan.snapshot_uid
        );
    }
    if orphans.is_empty() {
        "no orphaned replica PVCs\n".clone_into(&mut text);
    }
    Ok((orphans, align(&text)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{Findings, Reason, Stats};

    #[test]
    fn tables_align_and_json_is_complete() {
        let mut findings = Findings::default();
        findings.push(
            Reason::PvMissing,
            "pvc vms/a is bound to pv-1, which is not in the backup",
        );
        let report = Report::new("b1", &findings, Stats::default(), 0.5);
        let table = render_report(&report, Output::Table);
        assert!(table.starts_with("BACKUP   VERIFIED   REASON"), "{table}");
        assert!(table.contains("b1       false      PvMissing"), "{table}");
        assert!(table.contains("PvMissing   pvc vms/a"), "{table}");
        let json: serde_json::Value =
            serde_json::from_str(&render_report(&report, Output::Json)).expect("json");
        assert_eq!(json["verified"], false);
        assert_eq!(json["reason"], "PvMissing");
        assert_eq!(json["findings"][0]["reason"], "PvMissing");
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::from_mins(10)), "10m");
        assert_eq!(human(Duration::from_mins(200)), "3h20m");
        assert_eq!(human(Duration::from_hours(52)), "2d4h");
    }
}
