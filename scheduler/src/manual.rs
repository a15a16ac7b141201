//! Backups and verifications an operator starts by hand: `replicadr backup now` and
//! `replicadr verify`. They return reports; the CLI renders them.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube::api::Api;

use crate::clock::Clock;
use crate::lifecycle::{BackupLife, LifeError, site_map_source};
use crate::policy::{BackupPolicy, ValidPolicy};
use crate::publish::Publisher;
use crate::velero::BackupView;
use crate::verify::{Report, SiteMapSource, Verifier, VerifyError};

/// Why a command failed (as opposed to finding a failed backup).
#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    #[error(transparent)]
    Backup(#[from] LifeError),
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
    api.get_opt(policy)
        .await
        .ok()
        .flatten()
        .and_then(|policy| ValidPolicy::from_policy(&policy).ok())
        .map_or_else(SiteMapSource::default, |valid| site_map_source(&valid))
}

/// `replicadr verify <backup>`: verifies without writing anything.
pub async fn verify(client: &Client, namespace: &str, backup: &str) -> Result<Report, ManualError> {
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
) -> Result<Report, ManualError> {
    let life = BackupLife::new(client.clone(), namespace, publisher, clock);
    Ok(life.run_now(policy_name, poll, progress).await?)
}
