//! Where results become visible, in one place: annotations on the Backup, the policy's status and
//! conditions, a Kubernetes Event on the policy, and metrics. Never deletes anything.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource as _};
use serde_json::json;
use tokio::sync::Mutex;

use crate::metrics::Metrics;
use crate::policy::{BackupPolicy, BackupPolicyStatus};
use crate::velero::{self, BackupView};
use crate::verify::Report;

/// The field manager and event reporter of everything the scheduler writes.
pub const FIELD_MANAGER: &str = "replicadr-scheduler";

/// Writes results for policies in one namespace.
pub struct Publisher {
    client: Client,
    namespace: String,
    recorder: Recorder,
    pub metrics: Metrics,
    /// Status writes read, change and write the whole status: one at a time.
    status_lock: Mutex<()>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher; `instance` names this replica in Events.
    pub fn new(client: Client, namespace: &str, instance: &str, metrics: Metrics) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: Some(instance.to_owned()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            namespace: namespace.to_owned(),
            metrics,
            status_lock: Mutex::new(()),
        }
    }

    fn policies(&self) -> Api<BackupPolicy> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn backups(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &velero::backup_resource(),
        )
    }

    /// Reads the policy fresh, lets `change` edit its status, and writes the status back.
    pub async fn update_status(
        &self,
        policy: &str,
        change: impl FnOnce(&BackupPolicy, &mut BackupPolicyStatus),
    ) -> Result<(), kube::Error> {
        let _guard = self.status_lock.lock().await;
        let api = self.policies();
        let Some(current) = api.get_opt(policy).await? else {
            return Ok(());
        };
        let before = current.status.clone().unwrap_or_default();
        let mut status = before.clone();
        change(&current, &mut status);
        if status == before {
            return Ok(());
        }
        api.patch_status(
            policy,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
        Ok(())
    }

    /// Merges annotations into a Backup.
    pub async fn annotate_backup(
        &self,
        backup: &str,
        annotations: BTreeMap<&str, String>,
    ) -> Result<(), kube::Error> {
        self.backups()
            .patch(
                backup,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
            )
            .await?;
        Ok(())
    }

    /// Records an Event on the policy; failures to record are logged, never fatal.
    pub async fn event(&self, policy: &BackupPolicy, warning: bool, reason: &str, note: String) {
        let reference: ObjectReference = policy.object_ref(&());
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(truncate(&note, 1000)),
            action: "Verify".to_owned(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(%error, reason, "cannot record event");
        }
    }

    /// Publishes a verification result of `backup` for `policy`.
    pub async fn verification(
        &self,
        policy: Option<&BackupPolicy>,
        backup: &BackupView,
        report: &Report,
        now: Timestamp,
        final_attempt: bool,
    ) -> Result<(), kube::Error> {
        let policy_name = backup.policy.clone().unwrap_or_default();
        let transient = report.is_transient() && !final_attempt;
        self.metrics.verification.observe(
            &policy_name,
            report
                .first_reason()
                .map(super::verify::report::Reason::as_str),
            report.duration_seconds,
        );
        let mut annotations = BTreeMap::from([
            (
                velero::ANNOTATION_VERIFICATION_REASON,
                report.reason.clone(),
            ),
            (velero::ANNOTATION_VERIFIED_AT, now.to_string()),
        ]);
        if transient {
            annotations.insert(
                velero::ANNOTATION_VERIFICATION_ATTEMPTS,
                (backup.verification_attempts + 1).to_string(),
            );
        } else {
            annotations.insert(velero::ANNOTATION_VERIFIED, report.verified.to_string());
        }
        self.annotate_backup(&backup.name, annotations).await?;
        let Some(policy) = policy else {
            return Ok(());
        };
        let summary = report.summary();
        let summary = if transient {
            format!("{summary}; will retry")
        } else {
            summary
        };
        let recovery_point = backup.recovery_point();
        self.update_status(&policy_name, |current, status| {
            let generation = current.metadata.generation;
            if report.verified {
                status.set_condition(
                    crate::policy::condition::VERIFIED,
                    true,
                    "Verified",
                    summary.clone(),
                    generation,
                    now,
                );
                let newer = match (
                    recovery_point,
                    status
                        .last_verified_time
                        .as_deref()
                        .and_then(|t| t.parse::<Timestamp>().ok()),
                ) {
                    (Some(point), Some(previous)) => point >= previous,
                    _ => true,
                };
                if newer {
                    status.last_verified_backup = Some(backup.name.clone());
                    status.last_verified_time = recovery_point.map(|t| t.to_string());
                    if report.site.is_some() {
                        status.site.clone_from(&report.site);
                    }
                }
            } else {
                status.set_condition(
                    crate::policy::condition::VERIFIED,
                    false,
                    &report.reason,
                    summary.clone(),
                    generation,
                    now,
                );
            }
        })
        .await?;
        let reason = if report.verified {
            "BackupVerified".to_owned()
        } else if transient {
            "VerificationRetrying".to_owned()
        } else {
            format!("VerificationFailed{}", report.reason)
        };
        self.event(policy, !report.verified, &reason, summary).await;
        Ok(())
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
