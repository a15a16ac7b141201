//! Leader election on a `coordination.k8s.io/v1` Lease (kube-lease-manager): only the holder
//! writes; every replica serves metrics. Deterministic backup names make a brief overlap of two
//! leaders harmless: the second create of a slot's backup is refused as `AlreadyExists`.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The Lease's name.
pub const LEASE_NAME: &str = "replicadr-scheduler";

/// A running election: `is_leader` follows the lock; cancelling its token releases it.
#[derive(Debug)]
pub struct Election {
    pub is_leader: watch::Receiver<bool>,
    task: JoinHandle<()>,
    stop: CancellationToken,
}

impl Election {
    /// Joins the election for the Lease in `namespace` as `identity`.
    pub async fn start(
        client: Client,
        namespace: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> Result<Self, LeaseManagerError> {
        let manager = LeaseManagerBuilder::new(client, LEASE_NAME)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(lease_duration.as_secs())
            .with_grace((lease_duration.as_secs() / 3).max(1))
            .build()
            .await?;
        let (mut lock, manager_task) = manager.watch().await;
        let (out, is_leader) = watch::channel(false);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let identity = identity.to_owned();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = lock.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let leading = *lock.borrow_and_update();
                        tracing::info!(identity = %identity, leading, "leadership changed");
                        let _ = out.send(leading);
                    }
                    () = stopped.cancelled() => break,
                }
            }
            let _ = out.send(false);
            // Closing the channel makes the manager release the lease and return.
            drop(lock);
            match manager_task.await {
                Ok(Ok(_)) => tracing::info!("lease released"),
                Ok(Err(error)) => tracing::warn!(%error, "lease manager failed"),
                Err(error) => tracing::warn!(%error, "lease manager task failed"),
            }
        });
        Ok(Self {
            is_leader,
            task,
            stop,
        })
    }

    /// Gives the lease up and waits until it is released.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
