//! The plugins' behaviour, one module per action, as plain functions over JSON objects. Nothing
//! here knows gRPC or the cluster client: the framework hands each action its configuration and
//! items, and turns results and errors into Velero's wire messages.

pub mod kubevirt_backup;
pub mod kubevirt_restore;
pub mod pv_retain;
pub mod pv_site_remap;
pub mod snapshot_to_pvc;

use serde_json::Value;

pub use replicadr_core::objects::{describe, object_at, string_at};
pub use replicadr_core::plugin_config::{ConfigError, PluginConfig};

/// Which items an action wants, in Velero's `ResourceSelector` terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceSelector {
    pub included_namespaces: Vec<String>,
    pub excluded_namespaces: Vec<String>,
    pub included_resources: Vec<String>,
    pub excluded_resources: Vec<String>,
    /// A Kubernetes label selector; empty selects everything.
    pub label_selector: String,
}

impl ResourceSelector {
    /// Selects every item of the given resources in every namespace. Cluster-scoped resources
    /// such as PersistentVolumes need exactly this: Velero skips an action for them when any
    /// namespace filter is set.
    pub fn resources(resources: &[&str]) -> Self {
        Self {
            included_resources: resources.iter().map(|r| (*r).to_owned()).collect(),
            ..Self::default()
        }
    }
}

/// A Kubernetes object reference as Velero's `ResourceIdentifier`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceId {
    pub group: String,
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

/// Why one item could not be processed. The message is what the user sees in the restore.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ItemError(pub String);

impl From<replicadr_core::nfs::NotAVolume> for ItemError {
    fn from(error: replicadr_core::nfs::NotAVolume) -> Self {
        ItemError(error.0)
    }
}

impl From<replicadr_core::remap::RemapError> for ItemError {
    fn from(error: replicadr_core::remap::RemapError) -> Self {
        ItemError(error.0)
    }
}

/// Input of a RestoreItemAction's `Execute`.
#[derive(Debug, Clone)]
pub struct RestoreInput {
    /// The object about to be created, after Velero's own processing and earlier actions.
    pub item: Value,
    /// The object exactly as it was backed up.
    pub item_from_backup: Option<Value>,
    /// The Velero `Restore`.
    pub restore: Value,
}

/// Output of a RestoreItemAction's `Execute`.
#[derive(Debug, Clone)]
pub struct RestoreOutput {
    /// The full object to create.
    pub item: Value,
    pub additional_items: Vec<ResourceId>,
    pub skip_restore: bool,
}

impl RestoreOutput {
    /// Restore `item` with no other effect.
    pub fn item(item: Value) -> Self {
        Self {
            item,
            additional_items: Vec::new(),
            skip_restore: false,
        }
    }

    /// Do not restore `item`.
    pub fn skip(item: Value) -> Self {
        Self {
            skip_restore: true,
            ..Self::item(item)
        }
    }
}

/// A configured RestoreItemAction (served as v1; it may read the cluster while it runs).
#[async_trait::async_trait]
pub trait RestoreItemAction: Send + Sync + 'static {
    /// Processes one item.
    async fn execute(&self, input: RestoreInput) -> Result<RestoreOutput, ItemError>;
}

/// Input of a BackupItemAction's `Execute`.
#[derive(Debug, Clone)]
pub struct BackupInput {
    /// The object as read from the cluster, possibly changed by earlier actions.
    pub item: Value,
    /// The Velero `Backup`.
    pub backup: Value,
}

/// Output of a BackupItemAction's `Execute`.
#[derive(Debug, Clone, Default)]
pub struct BackupOutput {
    /// The full object to store in the backup.
    pub item: Value,
    /// Objects to back up along with this one.
    pub additional_items: Vec<ResourceId>,
    /// Set when an asynchronous operation was started (v2 only); Velero polls `progress` with it.
    pub operation_id: Option<String>,
    /// Objects to back up again once the operation completes (v2 only).
    pub post_operation_items: Vec<ResourceId>,
}

impl BackupOutput {
    /// Back up `item` with no other effect.
    pub fn item(item: Value) -> Self {
        Self {
            item,
            ..Self::default()
        }
    }
}

/// A configured synchronous BackupItemAction (served as v1).
pub trait BackupItemAction: Send + Sync + 'static {
    /// Processes one item.
    fn execute(&self, input: BackupInput) -> Result<BackupOutput, ItemError>;
}

/// Progress of an asynchronous operation, as Velero records it on the backup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperationProgress {
    pub completed: bool,
    /// Set (with `completed`) when the operation failed.
    pub error: Option<String>,
    pub n_completed: i64,
    pub n_total: i64,
    pub operation_units: String,
    pub description: String,
    /// When the operation started (seconds since the epoch); Velero needs it to move it to `InProgress`.
    pub started_unix: i64,
    /// When this progress was observed (seconds since the epoch).
    pub updated_unix: i64,
}

impl OperationProgress {
    /// A running operation whose state could not be observed now: not completed, no error,
    /// started and updated set to now (Velero reads an absent time as 1970).
    pub fn unknown(description: String) -> Self {
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        Self {
            description,
            started_unix: now,
            updated_unix: now,
            ..Self::default()
        }
    }
}

/// A configured BackupItemAction with asynchronous operations (served as v2). Velero starts a
/// new plugin process for every progress poll, so implementations keep no state in memory:
/// everything needed is in the operation ID, the backup and the cluster.
#[async_trait::async_trait]
pub trait AsyncBackupItemAction: Send + Sync + 'static {
    /// Processes one item, possibly starting an operation.
    async fn execute(&self, input: BackupInput) -> Result<BackupOutput, ItemError>;
    /// Reports an operation's progress.
    async fn progress(
        &self,
        operation_id: &str,
        backup: &Value,
    ) -> Result<OperationProgress, ItemError>;
    /// Gives up on an operation (Velero's item-operation timeout passed).
    async fn cancel(&self, operation_id: &str, backup: &Value) -> Result<(), ItemError>;
}

/// A Kubernetes resource type, enough to address it through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

/// Core PersistentVolumeClaims, as the actions read and create them.
pub const PERSISTENT_VOLUME_CLAIMS: ResourceType = ResourceType {
    group: "",
    version: "v1",
    kind: "PersistentVolumeClaim",
    plural: "persistentvolumeclaims",
    namespaced: true,
};

/// Why a cluster request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// Creating an object whose name is taken.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The API server could not be reached or failed; retrying may help.
    #[error("{0}")]
    Api(String),
    /// The API server refused the request for good (no permission, invalid object, unknown
    /// resource type); retrying will not help until someone fixes the cause.
    #[error("{0}")]
    Rejected(String),
}

/// The cluster as the actions see it: JSON objects by type, namespace and name. The framework
/// implements it with the Kubernetes client; tests can implement it over real API servers too.
#[async_trait::async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// Reads an object; `None` when it does not exist.
    async fn get(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ClusterError>;
    /// Creates an object and returns it as stored.
    async fn create(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
        object: &Value,
    ) -> Result<Value, ClusterError>;
    /// Lists objects matching a label selector (all namespaces when `namespace` is `None`).
    async fn list(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
        label_selector: &str,
    ) -> Result<Vec<Value>, ClusterError>;
}

/// What an action's factory gets: its ConfigMap (absent when none matched) and the cluster.
#[derive(Clone)]
pub struct BuildContext<'a> {
    pub config: Option<&'a PluginConfig>,
    pub cluster: std::sync::Arc<dyn Cluster>,
}

impl std::fmt::Debug for BuildContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildContext")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How the framework builds an action: its selector (needed before any config is read) and a
/// constructor from the ConfigMap, called at most once per plugin process.
pub trait ActionFactory: Send + Sync + 'static {
    /// The action built from config.
    type Action: Send + Sync + 'static;
    /// Which items the action applies to.
    fn applies_to(&self) -> ResourceSelector;
    /// Builds the action from its ConfigMap and the cluster.
    fn build(&self, context: BuildContext<'_>) -> Result<Self::Action, ConfigError>;
    /// Whether `item` goes into the backup unchanged when the action cannot be built (a broken
    /// ConfigMap): Velero leaves an item out of the backup when its action fails, which for
    /// some items loses more than the action would add.
    fn keeps_without_config(&self, _item: &Value) -> bool {
        false
    }
}
