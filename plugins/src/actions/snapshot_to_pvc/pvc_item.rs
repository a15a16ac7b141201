//! `execute` for a PersistentVolumeClaim item: replicates every VolumeSnapshot taken of the claim.
//! Velero 1.17 and later leave `volumesnapshots.snapshot.storage.k8s.io` out of every backup
//! (even when listed in `includedResources`), so an action on snapshots never runs there; the
//! snapshots' source claims are still backed up, and this is where the replicas come from then.
//!
//! The claim itself is always backed up unchanged, and nothing here fails it: Velero leaves an item
//! out of the backup when an action on it errors, and losing the user's claim is worse than
//! losing its replica. Problems with no operation to carry them are logged as errors instead,
//! which Velero counts as backup errors (the backup ends `PartiallyFailed`).

use std::cmp::Reverse;

use serde_json::Value;

use super::objects::{LABEL_MANAGED_BY, LABEL_SNAPSHOT_UID, MANAGED_BY, VOLUME_SNAPSHOTS};
use super::{OperationId, Replication, Snapshot, SnapshotToPvc, finalizing};
use crate::actions::{BackupInput, BackupOutput, ClusterError, ResourceId, describe, string_at};

impl SnapshotToPvc {
    /// `execute` for a PersistentVolumeClaim item.
    pub(super) async fn execute_pvc(&self, input: BackupInput) -> BackupOutput {
        let mut output = BackupOutput::item(input.item);
        if finalizing(&input.backup) {
            return output;
        }
        let claim = &output.item;
        let what = describe(claim);
        if is_replica(claim) {
            tracing::debug!(pvc = %what, "replica pvc made by this action; not a snapshot source");
            return output;
        }
        let (Some(namespace), Some(name)) = (
            string_at(claim, "/metadata/namespace"),
            string_at(claim, "/metadata/name"),
        ) else {
            tracing::warn!(pvc = %what, "pvc without namespace or name; no snapshots looked for");
            return output;
        };
        let snapshots = match self.snapshots_of(namespace, name).await {
            Ok(snapshots) => snapshots,
            Err(e) => {
                // No snapshot known, so no operation to report this; the next backup tries again.
                tracing::error!(pvc = %what, error = %e, "cannot list the pvc's volume snapshots; no replica of them in this backup");
                return output;
            }
        };
        let mut replications = Vec::with_capacity(snapshots.len());
        for snapshot in snapshots {
            let snapshot_name = format!("{}/{}", snapshot.namespace, snapshot.name);
            replications.push((snapshot_name, self.replicate(snapshot).await));
        }
        let Merged {
            additional_items,
            operation,
            not_followed,
        } = follow_one(replications);
        output.additional_items = additional_items;
        if let Some(id) = operation {
            if !not_followed.is_empty() {
                tracing::warn!(pvc = %what, operation = %id, snapshots = %not_followed.join(", "), "one operation per item: replicas of these other snapshots are not followed in this backup; the next backup takes them bound");
            }
            output.operation_id = Some(id.to_string());
        }
        output
    }

    /// The VolumeSnapshots in `namespace` taken of claim `pvc`, newest first, leaving out the
    /// ones Velero would not back up either (being deleted) and Velero's own temporary ones.
    async fn snapshots_of(
        &self,
        namespace: &str,
        pvc: &str,
    ) -> Result<Vec<Snapshot>, ClusterError> {
        // Snapshot CRDs declare no selectable fields, so the source is matched here.
        let objects = self
            .cluster
            .list(&VOLUME_SNAPSHOTS, Some(namespace), "")
            .await?;
        let mut snapshots: Vec<Snapshot> = objects
            .iter()
            .filter(|o| string_at(o, "/spec/source/persistentVolumeClaimName") == Some(pvc))
            .filter(|o| string_at(o, "/metadata/deletionTimestamp").is_none())
            .filter_map(|object| match Snapshot::from_item(object) {
                Ok(snapshot) => Some(snapshot),
                Err(e) => {
                    tracing::warn!(snapshot = %describe(object), error = %e, "malformed snapshot of a backed-up pvc; no replica");
                    None
                }
            })
            .filter(|snapshot| {
                if snapshot.velero_temporary {
                    tracing::debug!(snapshot = %snapshot.describe(), "snapshot taken by Velero for this backup; no replica");
                }
                !snapshot.velero_temporary
            })
            .collect();
        snapshots.sort_by(|a, b| (Reverse(a.created), &a.name).cmp(&(Reverse(b.created), &b.name)));
        Ok(snapshots)
    }
}

/// Whether `claim` is a replica this action made (it is never itself a snapshot source worth
/// replicating, and it comes back here as an additional item of its source).
fn is_replica(claim: &Value) -> bool {
    let labels = claim.pointer("/metadata/labels");
    let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    label(LABEL_MANAGED_BY) == Some(MANAGED_BY) || label(LABEL_SNAPSHOT_UID).is_some()
}

/// The output of one claim whose snapshots were replicated.
#[derive(Debug, Default)]
struct Merged {
    additional_items: Vec<ResourceId>,
    operation: Option<OperationId>,
    /// `namespace/name` of pending snapshots whose operation is not returned.
    not_followed: Vec<String>,
}

/// Merges the replications of one claim's snapshots (newest first) into one output. Velero takes
/// at most one operation per item: the newest snapshot still pending is followed, being the
/// recovery point the DR site wants most. A failure is followed only when nothing is pending: an
/// error log counts against the backup just as a failed operation does, and following the failure
/// would leave a pending replica unfollowed.
fn follow_one(replications: Vec<(String, Replication)>) -> Merged {
    let chosen = replications
        .iter()
        .position(|(_, r)| r.operation.is_some() && r.failure.is_none())
        .or_else(|| replications.iter().position(|(_, r)| r.operation.is_some()));
    let mut merged = Merged::default();
    for (index, (snapshot, replication)) in replications.into_iter().enumerate() {
        merged.additional_items.extend(replication.additional_items);
        let Some(operation) = replication.operation else {
            continue;
        };
        if Some(index) == chosen {
            merged.operation = Some(operation);
        } else if let Some(message) = replication.failure {
            tracing::error!(snapshot = %snapshot, error = %message, "no replica, and no operation reports it: another snapshot of the pvc is followed");
        } else {
            merged.not_followed.push(snapshot);
        }
    }
    merged
}
