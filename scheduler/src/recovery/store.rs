//! The end of a failover or failback: its outcome decided, its report stored as a ConfigMap named
//! after the Restore, an Event on the Restore, and the outcome written onto the Restore so that a
//! re-run after failed checks restores again.

use std::time::Instant;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource as _};
use serde_json::json;

use replicadr_core::names::{self, label_value};
use replicadr_core::wire::{
    LABEL_BACKUP, LABEL_MANAGED_BY, LABEL_OPERATION, LABEL_SITE, MANAGED_BY,
};

use super::failover::{ANNOTATION_OUTCOME, FIELD_MANAGER, Options};
use super::report::{Outcome, RecoveryReport};
use super::site::RecoveryError;
use crate::velero;

/// Ends the report, stores it, records an Event on the Restore.
pub(crate) async fn finish(
    client: &Client,
    namespace: &str,
    options: &Options,
    mut report: RecoveryReport,
    started: Instant,
) -> Result<RecoveryReport, RecoveryError> {
    if report.outcome == Outcome::Running {
        report.outcome = if report.failures.is_empty() {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        };
    }
    report.total_seconds = started.elapsed().as_secs_f64();
    report.finished = Some(Timestamp::now());
    let summary = options
        .summary
        .map_or_else(|| report.summary(), |render| render(&report));
    store(client, namespace, &report, &summary).await?;
    record_outcome(client, namespace, &report).await;
    Ok(report)
}

/// Writes how the run ended onto its Restore, so that a re-run after failed checks restores
/// again. A failure to write it is logged: the next run then continues with this Restore.
async fn record_outcome(client: &Client, namespace: &str, report: &RecoveryReport) {
    let Some(restore) = &report.restore else {
        return;
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &velero::restore_resource());
    let patch =
        json!({"metadata": {"annotations": {ANNOTATION_OUTCOME: format!("{:?}", report.outcome)}}});
    if let Err(error) = api
        .patch(restore, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::warn!(%restore, %error, "cannot record the run's outcome on its Restore; a re-run continues with it");
    }
}

/// The report ConfigMap of a Restore: `<restore>-report`, at most 63 characters like the Restore
/// name, cut with a hash ([`names::fitted`]) so that Restores alike in their first 56 characters
/// keep reports of their own.
pub fn report_name(restore: &str) -> String {
    const SUFFIX: &str = "-report";
    names::fitted(restore, names::MAX_LABEL_VALUE - SUFFIX.len()).into_owned() + SUFFIX
}

/// Stores the report as a ConfigMap named after the Restore and records an Event on the Restore.
async fn store(
    client: &Client,
    namespace: &str,
    report: &RecoveryReport,
    summary: &str,
) -> Result<(), kube::Error> {
    let Some(restore) = &report.restore else {
        return Ok(());
    };
    let name = report_name(restore);
    let configmap: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": {
                LABEL_MANAGED_BY: MANAGED_BY,
                LABEL_OPERATION: report.operation,
                LABEL_SITE: report.site,
                LABEL_BACKUP: label_value(&report.backup),
            },
        },
        "data": {
            "report.json": serde_json::to_string_pretty(report).unwrap_or_default(),
            "summary.txt": summary,
        },
    }))
    .expect("a valid ConfigMap");
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&configmap),
        )
        .await?;
    let restores: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &velero::restore_resource());
    if let Some(object) = restores.get_opt(restore).await? {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_owned(),
                instance: None,
            },
        );
        let reference = object.object_ref(&velero::restore_resource());
        let succeeded = report.outcome == Outcome::Succeeded;
        let event = Event {
            type_: if succeeded {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: format!(
                "{}{}",
                capitalize(&report.operation),
                if succeeded { "Succeeded" } else { "Failed" }
            ),
            note: Some(report.summary().chars().take(1000).collect()),
            action: capitalize(&report.operation),
            secondary: None,
        };
        if let Err(error) = recorder.publish(&event, &reference).await {
            tracing::warn!(%error, "cannot record the report Event");
        }
    }
    Ok(())
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::failover::{Operation, restore_name};
    #[test]
    fn report_names_stay_apart_when_restore_names_are_long() {
        assert_eq!(report_name("failover-dr-b"), "failover-dr-b-report");
        let first = restore_name(Operation::Failover, "dr", &"b".repeat(60), 1);
        let second = restore_name(Operation::Failover, "dr", &"b".repeat(60), 2);
        let (first, second) = (report_name(&first), report_name(&second));
        assert_eq!((first.len(), second.len()), (63, 63));
        assert_ne!(first, second);
        assert!(first.ends_with("-report"), "{first}");
    }
}
