//! The plugins' behaviour, one module per action, as plain functions over JSON objects. Nothing
//! here knows gRPC or the cluster client: the framework hands each action its configuration and
//! items, and turns results and errors into Velero's wire messages.

pub mod pv_site_remap;

use std::collections::BTreeMap;

use serde_json::Value;

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

/// The plugin's ConfigMap data, found by Velero's plugin-config label convention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    /// `namespace/name` of the ConfigMap, for messages.
    pub origin: String,
    pub data: BTreeMap<String, String>,
}

/// Why an action could not be configured. The framework adds where it looked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The action needs a ConfigMap and none was found.
    #[error("the plugin needs a ConfigMap with keys {required_keys}, and none was found")]
    Missing { required_keys: &'static str },
    /// The ConfigMap exists but its content is wrong.
    #[error("ConfigMap {origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// Why one item could not be processed. The message is what the user sees in the restore.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ItemError(pub String);

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
}

/// A configured RestoreItemAction.
pub trait RestoreItemAction: Send + Sync + 'static {
    /// Processes one item.
    fn execute(&self, input: RestoreInput) -> Result<RestoreOutput, ItemError>;
}

/// How the framework builds an action: its selector (needed before any config is read) and a
/// constructor from the ConfigMap, called at most once per plugin process.
pub trait ActionFactory: Send + Sync + 'static {
    /// The action built from config.
    type Action: Send + Sync + 'static;
    /// Which items the action applies to.
    fn applies_to(&self) -> ResourceSelector;
    /// Builds the action from its ConfigMap (absent when none matched the label selector).
    fn build(&self, config: Option<&PluginConfig>) -> Result<Self::Action, ConfigError>;
}

/// Name, namespace and kind of an object, for messages: `PersistentVolume pv-1`.
pub fn describe(object: &Value) -> String {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("object");
    let meta = object.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    match meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
    {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    }
}
