//! `replicadr.io/snapshot-to-pvc`: at backup time, turns each VolumeSnapshot into a PVC
//! provisioned from it, in the snapshot's namespace, on a storage class whose provisioner lives on
//! the replicated array. Arrays replicate volumes, not snapshots: this is how a VM snapshot
//! reaches the DR site.
//!
//! Velero calls `execute` once per item, then `progress` from a new plugin process every few
//! seconds. The action applies to two resources. A VolumeSnapshot item is replicated itself; a
//! PersistentVolumeClaim item has every snapshot taken of it replicated (`pvc_item`), because
//! Velero 1.17 and later exclude VolumeSnapshots from every backup and never hand them to an
//! action. Older Velero hands both, and both paths land on the same replica. Nothing is kept in
//! memory: the operation ID is `<namespace>/<snapshot>/<uid>`, the replica's name derives from
//! the snapshot's name and UID, and every call re-reads the cluster and moves the replica one step
//! on: snapshot ready → PVC created → PVC bound. A replica is recognised by its labels, reused by
//! later backups, and never overwritten when a PVC of that name is someone else's. The snapshot,
//! its content and its source PVC are only ever read.

mod naming;
mod objects;
mod pvc_item;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

pub use naming::{BadOperationId, NAME_PREFIX, OperationId, replica_pvc_name};
pub use objects::{
    ANNOTATION_SNAPSHOT, ANNOTATION_SOURCE_DATA_VOLUME, ANNOTATION_SOURCE_PVC,
    ANNOTATION_SOURCE_STORAGE_CLASS, ANNOTATION_VM_SNAPSHOT_CONTENT, LABEL_MANAGED_BY,
    LABEL_SNAPSHOT_UID, LABEL_VM, MANAGED_BY, ReplicaPvc, Snapshot, SnapshotSource, SourcePvc,
};
use objects::{PERSISTENT_VOLUME_CLAIMS, STORAGE_CLASSES, VOLUME_SNAPSHOTS, pvc_resource_id};

use super::{
    ActionFactory, AsyncBackupItemAction, BackupInput, BackupOutput, BuildContext, Cluster,
    ClusterError, ConfigError, ItemError, OperationProgress, PluginConfig, ResourceId,
    ResourceSelector, ResourceType, string_at,
};

pub use replicadr_core::wire::{
    CONFIG_CREATED_NOT_BOUND_IS_DONE, CONFIG_REPLICA_BIND_WAIT_SECONDS, CONFIG_STORAGE_CLASS_MAP,
    PLUGIN_SNAPSHOT_TO_PVC as NAME,
};
use replicadr_core::wire::{
    PHASE_FINALIZING, PHASE_FINALIZING_PARTIALLY_FAILED, POINTER_STATUS_PHASE,
};

/// The item kinds `execute` dispatches on.
const PERSISTENT_VOLUME_CLAIMS_KIND: &str = PERSISTENT_VOLUME_CLAIMS.kind;
const VOLUME_SNAPSHOTS_KIND: &str = VOLUME_SNAPSHOTS.kind;

/// A provisioner usually binds within a second or two.
const DEFAULT_BIND_WAIT: Duration = Duration::from_secs(5);
/// Each replica's `execute` may wait this long, and Velero backs items up one at a time by
/// default, so a longer wait would stall the whole backup; a slower provisioner's replica is in the
/// next backup.
const MAX_BIND_WAIT_SECONDS: u64 = 60;
const BIND_POLL: Duration = Duration::from_millis(250);

/// The steps an operation reports: snapshot ready, PVC created, PVC bound.
const STEPS: i64 = 3;
const STEP_UNITS: &str = "steps";

/// Builds [`SnapshotToPvc`] from the (optional) plugin ConfigMap.
#[derive(Debug, Default, Clone, Copy)]
pub struct SnapshotToPvcFactory;

impl ActionFactory for SnapshotToPvcFactory {
    type Action = SnapshotToPvc;

    /// A claim is the user's data: a broken ConfigMap costs its replicas, never the claim.
    fn keeps_without_config(&self, item: &Value) -> bool {
        item.get("kind").and_then(Value::as_str) == Some("PersistentVolumeClaim")
    }

    fn applies_to(&self) -> ResourceSelector {
        // One plugin name for both, so the ConfigMap labelled with it configures both paths.
        ResourceSelector::resources(&[
            "volumesnapshots.snapshot.storage.k8s.io",
            "persistentvolumeclaims",
        ])
    }

    fn build(&self, context: BuildContext<'_>) -> Result<SnapshotToPvc, ConfigError> {
        Ok(SnapshotToPvc::new(
            context.cluster,
            SnapshotToPvcConfig::from_config(context.config)?,
        ))
    }
}

/// The action's settings; every key is optional.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotToPvcConfig {
    /// Source StorageClass → replica StorageClass; classes not listed are kept.
    pub storage_class_map: BTreeMap<String, String>,
    /// Count "created, not bound" as done instead of waiting for the claim to bind.
    pub created_not_bound_is_done: bool,
    /// How long `execute` waits for a replica it created to bind; zero does not wait.
    pub replica_bind_wait: Duration,
}

impl Default for SnapshotToPvcConfig {
    fn default() -> Self {
        Self {
            storage_class_map: BTreeMap::new(),
            created_not_bound_is_done: false,
            replica_bind_wait: DEFAULT_BIND_WAIT,
        }
    }
}

impl SnapshotToPvcConfig {
    /// Reads the settings; keys of other plugins sharing the ConfigMap are ignored.
    pub fn from_config(config: Option<&PluginConfig>) -> Result<Self, ConfigError> {
        let Some(config) = config else {
            return Ok(Self::default());
        };
        let storage_class_map = match config.data.get(CONFIG_STORAGE_CLASS_MAP) {
            None => BTreeMap::new(),
            Some(text) if text.trim().is_empty() => BTreeMap::new(),
            Some(text) => parse_class_map(text).map_err(|problem| {
                config.invalid(format!(
                    "key {CONFIG_STORAGE_CLASS_MAP:?}: {problem} in {text:?}; expected a YAML mapping of source StorageClass to replica StorageClass, one `from: to` per line, e.g. \"fast: replicated-nfs\""
                ))
            })?,
        };
        let replica_bind_wait = match config.data.get(CONFIG_REPLICA_BIND_WAIT_SECONDS) {
            None => DEFAULT_BIND_WAIT,
            Some(text) => parse_bind_wait(text).ok_or_else(|| {
                config.invalid(format!(
                    "key {CONFIG_REPLICA_BIND_WAIT_SECONDS:?}: {text:?} is not a whole number of seconds from 0 to {MAX_BIND_WAIT_SECONDS}; expected e.g. \"5\" (the default) or \"0\" to not wait"
                ))
            })?,
        };
        Ok(Self {
            storage_class_map,
            created_not_bound_is_done: config.flag(CONFIG_CREATED_NOT_BOUND_IS_DONE, false)?,
            replica_bind_wait,
        })
    }

    /// The replica's class for a source class (`None`: the default class, left to the cluster).
    fn replica_class<'a>(&'a self, source: Option<&'a str>) -> Option<&'a str> {
        let source = source?;
        Some(
            self.storage_class_map
                .get(source)
                .map_or(source, String::as_str),
        )
    }
}

fn parse_class_map(text: &str) -> Result<BTreeMap<String, String>, String> {
    let map: BTreeMap<String, String> = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    if let Some((from, to)) = map.iter().find(|(_, to)| !is_dns_subdomain(to)) {
        return Err(format!(
            "{from:?} maps to {to:?}, which is not a StorageClass name (lowercase letters, digits, '-' and '.')"
        ));
    }
    Ok(map)
}

fn parse_bind_wait(text: &str) -> Option<Duration> {
    let seconds: u64 = text.trim().parse().ok()?;
    (seconds <= MAX_BIND_WAIT_SECONDS).then(|| Duration::from_secs(seconds))
}

fn is_dns_subdomain(value: &str) -> bool {
    !value.is_empty() && value.len() <= 253 && value.split('.').all(naming::is_dns_label)
}

/// The configured action.
pub struct SnapshotToPvc {
    cluster: Arc<dyn Cluster>,
    config: SnapshotToPvcConfig,
}

impl std::fmt::Debug for SnapshotToPvc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotToPvc")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Where a snapshot's replica stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// The snapshot is not ready to use yet; nothing created.
    WaitingForSnapshot(Snapshot),
    /// The replica exists and is not bound; `wait_for_first_consumer` when its class only binds
    /// for a pod.
    Created {
        pvc: ReplicaPvc,
        wait_for_first_consumer: bool,
    },
    /// The replica is bound to its volume.
    Bound(ReplicaPvc),
}

/// Why a step could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// It will not get better by waiting; the operation fails with this message.
    Failed {
        message: String,
        /// The replica PVC exists and is ours (so it can still be backed up).
        replica_exists: bool,
    },
    /// The cluster could not be read or written; the next poll retries.
    Unavailable(String),
}

impl Problem {
    fn failed(message: String) -> Self {
        Problem::Failed {
            message,
            replica_exists: false,
        }
    }
}

impl From<ClusterError> for Problem {
    fn from(error: ClusterError) -> Self {
        match error {
            ClusterError::Api(message) => Problem::Unavailable(message),
            ClusterError::Rejected(message) => Problem::failed(message),
            ClusterError::AlreadyExists(what) => Problem::failed(format!("{what} already exists")),
        }
    }
}

impl SnapshotToPvc {
    /// An action working on `cluster` with `config`.
    pub fn new(cluster: Arc<dyn Cluster>, config: SnapshotToPvcConfig) -> Self {
        Self { cluster, config }
    }

    async fn get(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, Problem> {
        Ok(self.cluster.get(kind, namespace, name).await?)
    }

    /// Takes the next step for the snapshot behind `id`. `known` is the snapshot when the caller
    /// already has it (Execute gets it as the item); otherwise it is read when needed.
    pub async fn advance(
        &self,
        id: &OperationId,
        known: Option<Snapshot>,
    ) -> Result<State, Problem> {
        let name = id.replica_name();
        if let Some(existing) = self
            .get(&PERSISTENT_VOLUME_CLAIMS, Some(&id.namespace), &name)
            .await?
        {
            return self.assess_existing(id, &existing).await;
        }
        let snapshot = match known {
            Some(snapshot) => snapshot,
            None => self.fetch_snapshot(id).await?,
        };
        if !snapshot.ready {
            return Ok(State::WaitingForSnapshot(snapshot));
        }
        let SnapshotSource::Pvc(source_name) = &snapshot.source else {
            return Err(Problem::failed(format!(
                "{} is pre-provisioned and has no source PersistentVolumeClaim to copy",
                snapshot.describe()
            )));
        };
        let source = self
            .get(&PERSISTENT_VOLUME_CLAIMS, Some(&id.namespace), source_name)
            .await?
            .ok_or_else(|| {
                Problem::failed(format!(
                    "{}: its source PersistentVolumeClaim {}/{source_name} does not exist; the replica takes its storage class, access modes and volume mode from it",
                    snapshot.describe(), id.namespace
                ))
            })?;
        let source = SourcePvc::read(&source).map_err(Problem::failed)?;
        let class = self.config.replica_class(source.storage_class.as_deref());
        if class == Some("") {
            return Err(Problem::failed(format!(
                "{}: its source PersistentVolumeClaim {}/{source_name} has storageClassName \"\" (statically bound), so no provisioner could create a replica; map \"\" to a StorageClass in {CONFIG_STORAGE_CLASS_MAP}",
                snapshot.describe(),
                id.namespace
            )));
        }
        if snapshot.restore_size.is_none() && source.requested_storage.is_none() {
            return Err(Problem::failed(format!(
                "{}: neither its status.restoreSize nor its source PersistentVolumeClaim {}/{source_name} gives a size for the replica",
                snapshot.describe(),
                id.namespace
            )));
        }
        let wait_for_first_consumer = self.waits_for_first_consumer(class, &name, id).await?;
        let object = objects::replica_object(&snapshot, &source, class, &name);
        let created = match self
            .cluster
            .create(&PERSISTENT_VOLUME_CLAIMS, Some(&id.namespace), &object)
            .await
        {
            Ok(created) => created,
            // Another backup created it in between: judge it like any existing PVC.
            Err(ClusterError::AlreadyExists(_)) => {
                let existing = self
                    .get(&PERSISTENT_VOLUME_CLAIMS, Some(&id.namespace), &name)
                    .await?
                    .ok_or_else(|| {
                        Problem::Unavailable(format!(
                            "PersistentVolumeClaim {}/{name} was reported to exist but cannot be read",
                            id.namespace
                        ))
                    })?;
                return self.assess_existing(id, &existing).await;
            }
            Err(e) => return Err(e.into()),
        };
        let pvc = ReplicaPvc::read(&created).map_err(Problem::failed)?;
        tracing::info!(snapshot = %snapshot.describe(), pvc = %pvc.describe(), class = class.unwrap_or("<default>"), "created replica pvc from snapshot");
        Ok(Self::unbound_or_bound(pvc, wait_for_first_consumer))
    }

    async fn fetch_snapshot(&self, id: &OperationId) -> Result<Snapshot, Problem> {
        let object = self
            .get(&VOLUME_SNAPSHOTS, Some(&id.namespace), &id.name)
            .await?
            .ok_or_else(|| {
                Problem::failed(format!(
                    "VolumeSnapshot {}/{} (uid {}) no longer exists and no replica PersistentVolumeClaim was created from it",
                    id.namespace, id.name, id.uid
                ))
            })?;
        let snapshot = Snapshot::from_item(&object).map_err(|e| Problem::failed(e.0))?;
        if snapshot.uid != id.uid {
            return Err(Problem::failed(format!(
                "{} was deleted and recreated (uid {} now, {} when backed up); no replica was created from the backed-up one",
                snapshot.describe(),
                snapshot.uid,
                id.uid
            )));
        }
        Ok(snapshot)
    }

    /// Judges a PVC found under the replica's name.
    async fn assess_existing(&self, id: &OperationId, object: &Value) -> Result<State, Problem> {
        let pvc = ReplicaPvc::read(object).map_err(Problem::failed)?;
        if let Some(reason) = pvc.not_ours(id) {
            return Err(Problem::failed(format!(
                "{} is in the way of the replica of VolumeSnapshot {}/{} (uid {}): {reason}. It was left untouched; rename or delete it so the replica can be created",
                pvc.describe(),
                id.namespace,
                id.name,
                id.uid
            )));
        }
        if pvc.is_bound() {
            return Ok(State::Bound(pvc));
        }
        if pvc.phase == "Lost" {
            return Err(Problem::Failed {
                message: format!(
                    "{} (replica of VolumeSnapshot {}/{}) is Lost: its PersistentVolume {} is gone",
                    pvc.describe(),
                    id.namespace,
                    id.name,
                    pvc.volume_name.as_deref().unwrap_or("<none>")
                ),
                replica_exists: true,
            });
        }
        let class = pvc.storage_class.clone();
        let wait_for_first_consumer = self
            .waits_for_first_consumer(class.as_deref(), &pvc.name, id)
            .await
            .map_err(|problem| match problem {
                Problem::Failed { message, .. } => Problem::Failed {
                    message,
                    replica_exists: true,
                },
                unavailable @ Problem::Unavailable(_) => unavailable,
            })?;
        Ok(Self::unbound_or_bound(pvc, wait_for_first_consumer))
    }

    fn unbound_or_bound(pvc: ReplicaPvc, wait_for_first_consumer: bool) -> State {
        if pvc.is_bound() {
            State::Bound(pvc)
        } else {
            State::Created {
                pvc,
                wait_for_first_consumer,
            }
        }
    }

    /// Whether `class` binds only for a pod. Without `createdNotBoundIsDone` such a replica would
    /// wait until Velero's operation timeout (4 h by default) for nothing, so that is an error.
    async fn waits_for_first_consumer(
        &self,
        class: Option<&str>,
        pvc_name: &str,
        id: &OperationId,
    ) -> Result<bool, Problem> {
        // No class: the cluster's default applies, which the claim alone cannot tell.
        let Some(class) = class else {
            return Ok(false);
        };
        let storage_class = self.get(&STORAGE_CLASSES, None, class).await?.ok_or_else(|| {
            Problem::failed(format!(
                "StorageClass {class} for the replica of VolumeSnapshot {}/{} does not exist; create it or map the source class to an existing one in {CONFIG_STORAGE_CLASS_MAP}",
                id.namespace, id.name
            ))
        })?;
        let waits = string_at(&storage_class, "/volumeBindingMode") == Some("WaitForFirstConsumer");
        if waits && !self.config.created_not_bound_is_done {
            return Err(Problem::failed(format!(
                "StorageClass {class} has volumeBindingMode WaitForFirstConsumer, so the replica PersistentVolumeClaim {}/{pvc_name} of VolumeSnapshot {}/{} would never bind without a pod; map the class to one with volumeBindingMode Immediate in {CONFIG_STORAGE_CLASS_MAP}, or set {CONFIG_CREATED_NOT_BOUND_IS_DONE}: \"true\" to accept an unbound replica",
                id.namespace, id.namespace, id.name
            )));
        }
        Ok(waits)
    }

    /// The progress Velero records for `state` (or `problem`), observed at `now`. `started` is the
    /// backup's start: the same in every poll and every plugin process, so Velero's record of when
    /// the operation started never moves.
    pub fn report(
        &self,
        outcome: &Result<State, Problem>,
        started: Option<i64>,
        now: i64,
    ) -> OperationProgress {
        let progress = |n_completed, description: String| OperationProgress {
            completed: false,
            error: None,
            n_completed,
            n_total: STEPS,
            operation_units: STEP_UNITS.to_owned(),
            description,
            started_unix: started.unwrap_or(now),
            updated_unix: now,
        };
        match outcome {
            Ok(State::WaitingForSnapshot(snapshot)) => progress(
                0,
                match &snapshot.error {
                    Some(error) => format!(
                        "waiting for {} to become ready (snapshot controller reports: {error})",
                        snapshot.describe()
                    ),
                    None => format!("waiting for {} to become ready", snapshot.describe()),
                },
            ),
            Ok(State::Created {
                pvc,
                wait_for_first_consumer,
            }) if self.config.created_not_bound_is_done => OperationProgress {
                completed: true,
                ..progress(
                    2,
                    format!(
                        "{} created; not waiting for it to bind ({CONFIG_CREATED_NOT_BOUND_IS_DONE}){}",
                        pvc.describe(),
                        if *wait_for_first_consumer {
                            format!(
                                "; StorageClass {} binds only when a pod uses the claim",
                                pvc.storage_class.as_deref().unwrap_or_default()
                            )
                        } else {
                            String::new()
                        }
                    ),
                )
            },
            Ok(State::Created { pvc, .. }) => progress(
                2,
                format!(
                    "{} created; waiting for it to bind (StorageClass {})",
                    pvc.describe(),
                    pvc.storage_class.as_deref().unwrap_or("<default>")
                ),
            ),
            Ok(State::Bound(pvc)) => OperationProgress {
                completed: true,
                ..progress(
                    STEPS,
                    format!(
                        "{} is bound to PersistentVolume {}",
                        pvc.describe(),
                        pvc.volume_name.as_deref().unwrap_or_default()
                    ),
                )
            },
            Err(Problem::Failed { message, .. }) => OperationProgress {
                completed: true,
                error: Some(message.clone()),
                ..progress(0, message.clone())
            },
            Err(Problem::Unavailable(message)) => progress(
                0,
                format!("cannot read the cluster ({message}); retrying on the next poll"),
            ),
        }
    }
}

/// When the backup started (`status.startTimestamp`), in seconds since the epoch.
fn backup_started(backup: &Value) -> Option<i64> {
    string_at(backup, "/status/startTimestamp")
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(k8s_openapi::jiff::Timestamp::as_second)
}

/// Whether Velero is re-running actions at finalize, when returning an operation is an error.
fn finalizing(backup: &Value) -> bool {
    matches!(
        string_at(backup, POINTER_STATUS_PHASE),
        Some(PHASE_FINALIZING | PHASE_FINALIZING_PARTIALLY_FAILED)
    )
}

fn now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

/// What one snapshot's replica adds to the output of the item that led to it.
#[derive(Debug, Default)]
struct Replication {
    additional_items: Vec<ResourceId>,
    /// The operation to follow until the replica is bound (or has failed).
    operation: Option<OperationId>,
    /// Set when the operation would only report this failure.
    failure: Option<String>,
}

impl SnapshotToPvc {
    /// Takes the first step for `snapshot` within `execute`, and says what the item's output gets.
    /// The snapshot path and the PVC path both come here, so they create identical replicas.
    async fn replicate(&self, snapshot: Snapshot) -> Replication {
        let what = snapshot.describe();
        let id = snapshot.operation_id();
        let replica = pvc_resource_id(&id.namespace, &id.replica_name());
        let mut replication = Replication::default();
        match self.advance(&id, Some(snapshot)).await {
            Ok(State::Bound(pvc)) => {
                replication.additional_items.push(pvc.resource_id());
                replication
                    .additional_items
                    .extend(pvc.volume_resource_id());
                return replication;
            }
            Ok(State::Created {
                pvc,
                wait_for_first_consumer,
            }) => {
                // A class that binds only for a pod is not worth waiting for.
                let bound = if wait_for_first_consumer {
                    None
                } else {
                    self.wait_bound(&id).await
                };
                if let Some(bound) = bound {
                    replication.additional_items.push(bound.resource_id());
                    replication
                        .additional_items
                        .extend(bound.volume_resource_id());
                    return replication;
                }
                replication.additional_items.push(pvc.resource_id());
            }
            Ok(State::WaitingForSnapshot(_)) => {
                tracing::info!(snapshot = %what, "snapshot not ready; replica follows as an operation");
            }
            Err(Problem::Failed {
                message,
                replica_exists,
            }) => {
                tracing::warn!(snapshot = %what, error = %message, "no replica; the operation reports the error");
                replication.failure = Some(message);
                if replica_exists {
                    replication.additional_items.push(replica);
                } else {
                    replication.operation = Some(id);
                    return replication;
                }
            }
            Err(Problem::Unavailable(message)) => {
                tracing::warn!(snapshot = %what, error = %message, "cannot read the cluster; the operation retries");
            }
        }
        // The replica is not handed back as a post-operation item: Velero 1.18's backup finalizer
        // backs such items up with an item backupper that has no volume helper, and a PVC (whose
        // PV Velero's PVC action adds) or a PV makes it panic, leaving the backup in Finalizing
        // for good. The operation still reports progress and errors; a replica that binds after
        // this backup is in the next one.
        tracing::info!(snapshot = %what, pvc = %id.replica_name(), "replica not bound yet; the operation follows it and the next backup carries it");
        replication.operation = Some(id);
        replication
    }

    /// Polls the replica of `id` for up to `replicaBindWaitSeconds`, as a provisioner usually
    /// binds within a second or two: the bound replica and its PV then go into this backup.
    async fn wait_bound(&self, id: &OperationId) -> Option<ReplicaPvc> {
        let deadline = tokio::time::Instant::now() + self.config.replica_bind_wait;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(BIND_POLL).await;
            match self.advance(id, None).await {
                Ok(State::Bound(pvc)) => return Some(pvc),
                Ok(State::Created {
                    wait_for_first_consumer: false,
                    ..
                }) => {}
                Ok(_) | Err(_) => return None,
            }
        }
        None
    }

    /// `execute` for a VolumeSnapshot item (Velero 1.16 and earlier hand them over).
    async fn execute_snapshot(&self, input: BackupInput) -> Result<BackupOutput, ItemError> {
        let snapshot = Snapshot::from_item(&input.item)?;
        // The snapshot itself is always backed up exactly as it came.
        let mut output = BackupOutput::item(input.item);
        let what = snapshot.describe();
        if finalizing(&input.backup) {
            return Ok(output);
        }
        if snapshot.velero_temporary {
            tracing::debug!(snapshot = %what, "snapshot taken by Velero for this backup; no replica");
            return Ok(output);
        }
        if let SnapshotSource::PreProvisioned(content) = &snapshot.source {
            tracing::warn!(snapshot = %what, content = %content, "pre-provisioned snapshot has no source pvc to copy; backed up without a replica");
            return Ok(output);
        }
        let replication = self.replicate(snapshot).await;
        output.additional_items = replication.additional_items;
        if let Some(id) = replication.operation {
            output.operation_id = Some(id.to_string());
        }
        Ok(output)
    }
}

#[async_trait::async_trait]
impl AsyncBackupItemAction for SnapshotToPvc {
    async fn execute(&self, input: BackupInput) -> Result<BackupOutput, ItemError> {
        match string_at(&input.item, "/kind") {
            Some(PERSISTENT_VOLUME_CLAIMS_KIND) => Ok(self.execute_pvc(input).await),
            None | Some(VOLUME_SNAPSHOTS_KIND) => self.execute_snapshot(input).await,
            Some(kind) => Err(ItemError(format!(
                "{}: {NAME} only handles VolumeSnapshots and PersistentVolumeClaims, got kind {kind:?}",
                super::describe(&input.item)
            ))),
        }
    }

    async fn progress(
        &self,
        operation_id: &str,
        backup: &Value,
    ) -> Result<OperationProgress, ItemError> {
        let id: OperationId = operation_id
            .parse()
            .map_err(|e: BadOperationId| ItemError(e.to_string()))?;
        let outcome = self.advance(&id, None).await;
        Ok(self.report(&outcome, backup_started(backup), now()))
    }

    async fn cancel(&self, operation_id: &str, _backup: &Value) -> Result<(), ItemError> {
        let id: OperationId = operation_id
            .parse()
            .map_err(|e: BadOperationId| ItemError(e.to_string()))?;
        // Deleting a half-provisioned claim could race its provisioner, and the next backup reuses
        // it anyway; it carries our labels for anyone cleaning up by hand.
        tracing::warn!(operation = %id, pvc = %format!("{}/{}", id.namespace, id.replica_name()), "operation timed out; the replica pvc, if any, is left for the next backup");
        Ok(())
    }
}

#[cfg(test)]
mod tests;
