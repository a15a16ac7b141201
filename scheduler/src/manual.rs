//! Backups and verifications an operator starts by hand: `replicadr backup now` and
//! `replicadr verify`. They return reports; the CLI renders them.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::api::{Api, DynamicObject, PostParams};

use crate::clock::Clock;
use crate::policy::{BackupPolicy, ValidPolicy, condition};
use crate::publish::Publisher;
use crate::schedule;
use crate::velero::{self, BackupRequest, BackupView, PhaseClass};
use crate::verify::{Report, SiteMapSource, Verifier, VerifyError};

/// Why a command failed (as opposed to finding a failed backup).
#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    #[error("BackupPolicy {namespace}/{name} does not exist")]
    NoPolicy { namespace: String, name: String },
    #[error("BackupPolicy {name} is invalid: {message}")]
    InvalidPolicy { name: String, message: String },
    #[error("backup {name} did not finish within {timeout:?} (phase {phase})")]
    Timeout {
        name: String,
        timeout: Duration,
        phase: String,
    },
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Kube(#[from] kube::Error),
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
pub async fn verify(client: &Client, namespace: &str, backup: &str) -> Result<Report, ManualError> {
    let verifier = Verifier::new(client.clone(), namespace);
    let (_, view) = verifier.backup(backup).await?;
    let source = site_map_for(client, namespace, &view).await;
    Ok(verifier.verify(backup, &source).await?)
}

/// `replicadr backup now <policy>`: creates a backup named for now, waits for Velero to finish
/// it, verifies it and publishes the result like a scheduled run.
pub async fn backup_now(
    client: &Client,
    namespace: &str,
    policy_name: &str,
    clock: Arc<dyn Clock>,
    publisher: &Publisher,
    poll: Duration,
    mut progress: impl FnMut(&str),
) -> Result<Report, ManualError> {
    let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), namespace);
    let policy = policies
        .get_opt(policy_name)
        .await?
        .ok_or_else(|| ManualError::NoPolicy {
            namespace: namespace.to_owned(),
            name: policy_name.to_owned(),
        })?;
    let valid = ValidPolicy::from_policy(&policy).map_err(|e| ManualError::InvalidPolicy {
        name: policy_name.to_owned(),
        message: e.to_string(),
    })?;
    let name = schedule::manual_backup_name(policy_name, clock.now());
    let object = velero::build_backup(&BackupRequest {
        policy: &valid,
        name: name.clone(),
        slot: None,
        attempt: 0,
    });
    let backups: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &velero::backup_resource());
    backups.create(&PostParams::default(), &object).await?;
    publisher.metrics.backup.run(policy_name);
    publisher
        .update_status(policy_name, |_, status| {
            status.last_backup = Some(name.clone());
        })
        .await?;
    progress(&format!("created backup {namespace}/{name}"));
    let started = tokio::time::Instant::now();
    let view = loop {
        let view = BackupView::from_object(&backups.get(&name).await?);
        if view.class != PhaseClass::Running {
            break view;
        }
        if started.elapsed() > valid.backup_timeout {
            return Err(ManualError::Timeout {
                name,
                timeout: valid.backup_timeout,
                phase: view.phase.unwrap_or_else(|| "New".into()),
            });
        }
        tokio::time::sleep(poll).await;
    };
    progress(&format!(
        "backup {name} finished as {}",
        view.phase.as_deref().unwrap_or_default()
    ));
    let now = clock.now();
    let ok = view.class == PhaseClass::Succeeded;
    let phase = view.phase.clone().unwrap_or_default();
    publisher
        .update_status(policy_name, |current, status| {
            status.set_condition(
                condition::BACKUP_SUCCEEDED,
                ok,
                if ok { "Completed" } else { &phase },
                format!("backup {name} finished as {phase}"),
                current.metadata.generation,
                now,
            );
        })
        .await?;
    let verifier = Verifier::new(client.clone(), namespace);
    let source = SiteMapSource {
        configmap: valid.site_map.name.clone(),
        key: valid.site_map_key().to_owned(),
    };
    let report = verifier.verify(&name, &source).await?;
    publisher
        .verification(Some(&policy), &view, &report, clock.now(), true)
        .await?;
    Ok(report)
}
