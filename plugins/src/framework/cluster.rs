//! The plugin process's access to the cluster: Velero's plugin-config convention (the ConfigMap
//! in Velero's namespace labelled `velero.io/plugin-config` and `<plugin name>: <kind>`), and the
//! JSON-level [`Cluster`] port the actions use. The client is created on first use, so a plugin
//! that is only listed or asked `AppliesTo` never touches the API server. Each action is built
//! from its config on first use and kept; a broken config is kept too (and logged once), so every
//! item gets the same clear error. Failures to reach the API server are not kept: the next item
//! retries.

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::OnceCell;

use super::names::PluginKind;
use crate::actions::{
    ActionFactory, BuildContext, Cluster, ClusterError, ConfigError, PluginConfig, ResourceType,
};

/// Label every plugin ConfigMap carries.
pub use replicadr_core::wire::LABEL_PLUGIN_CONFIG as PLUGIN_CONFIG_LABEL;

/// Finds plugin ConfigMaps and serves the actions' cluster requests; holds the lazily created client.
pub struct ClusterAccess {
    namespace: String,
    kubeconfig: Option<PathBuf>,
    client: OnceCell<Client>,
}

/// Why an action is not available.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// The configuration is wrong; retrying will not help until someone fixes it.
    #[error("{0}")]
    Config(String),
    /// The API server could not be reached or answered with an error.
    #[error("{0}")]
    Cluster(String),
}

impl std::fmt::Debug for ClusterAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterAccess")
            .field("namespace", &self.namespace)
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl ClusterAccess {
    /// A loader for ConfigMaps in `namespace`, using `kubeconfig` or the usual discovery
    /// (`$KUBECONFIG`, `~/.kube/config`, in-cluster).
    pub fn new(namespace: String, kubeconfig: Option<PathBuf>) -> Self {
        Self {
            namespace,
            kubeconfig,
            client: OnceCell::new(),
        }
    }

    /// The namespace searched.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    async fn client(&self) -> Result<&Client, LoadError> {
        self.client
            .get_or_try_init(|| async {
                let config = match &self.kubeconfig {
                    Some(path) => {
                        let kubeconfig = kube::config::Kubeconfig::read_from(path)
                            .map_err(|e| LoadError::Config(format!("cannot read --kubeconfig {}: {e}", path.display())))?;
                        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await
                            .map_err(|e| LoadError::Config(format!("invalid --kubeconfig {}: {e}", path.display())))?
                    }
                    None => kube::Config::infer().await.map_err(|e| {
                        LoadError::Config(format!("cannot find the Kubernetes API server (in-cluster, $KUBECONFIG or ~/.kube/config): {e}"))
                    })?,
                };
                Client::try_from(config).map_err(|e| LoadError::Config(format!("cannot create a Kubernetes client: {e}")))
            })
            .await
    }

    /// The label selector for a plugin's ConfigMap.
    pub fn selector(kind: PluginKind, name: &str) -> String {
        format!("{PLUGIN_CONFIG_LABEL},{name}={}", kind.as_str())
    }

    /// Reads the plugin's ConfigMap, if there is one. More than one match is an error, as in Velero.
    pub async fn fetch(
        &self,
        kind: PluginKind,
        name: &str,
    ) -> Result<Option<PluginConfig>, LoadError> {
        let selector = Self::selector(kind, name);
        let api: Api<ConfigMap> = Api::namespaced(self.client().await?.clone(), &self.namespace);
        let list = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| {
                LoadError::Cluster(format!(
                    "cannot list ConfigMaps in namespace {} with labels {selector}: {e}",
                    self.namespace
                ))
            })?;
        match list.items.as_slice() {
            [] => Ok(None),
            [config_map] => Ok(Some(PluginConfig {
                origin: format!(
                    "{}/{}",
                    self.namespace,
                    config_map.metadata.name.as_deref().unwrap_or_default()
                ),
                data: config_map.data.clone().unwrap_or_default(),
            })),
            many => {
                let names: Vec<&str> = many
                    .iter()
                    .filter_map(|c| c.metadata.name.as_deref())
                    .collect();
                Err(LoadError::Config(format!(
                    "found {} ConfigMaps in namespace {} with labels {selector} ({}); exactly one may configure {name}",
                    many.len(),
                    self.namespace,
                    names.join(", ")
                )))
            }
        }
    }
}

/// An action built from its ConfigMap on first use.
pub struct LazyAction<F: ActionFactory> {
    kind: PluginKind,
    name: &'static str,
    factory: F,
    built: OnceCell<Result<Arc<F::Action>, LoadError>>,
}

impl<F: ActionFactory> std::fmt::Debug for LazyAction<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyAction")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<F: ActionFactory> LazyAction<F> {
    /// Wraps `factory` for plugin `name` of `kind`.
    pub fn new(kind: PluginKind, name: &'static str, factory: F) -> Self {
        Self {
            kind,
            name,
            factory,
            built: OnceCell::new(),
        }
    }

    /// The factory (for `AppliesTo`, which needs no config).
    pub fn factory(&self) -> &F {
        &self.factory
    }

    /// The built action, building it on first call.
    pub async fn get(&self, loader: &Arc<ClusterAccess>) -> Result<Arc<F::Action>, LoadError> {
        let outcome = self
            .built
            .get_or_try_init(|| async {
                let built = match loader.fetch(self.kind, self.name).await {
                    Err(LoadError::Cluster(e)) => return Err(LoadError::Cluster(e)),
                    Err(config_error) => Err(config_error),
                    Ok(config) => {
                        let context = BuildContext { config: config.as_ref(), cluster: Arc::clone(loader) as Arc<dyn Cluster> };
                        self.factory.build(context).map(Arc::new).map_err(|e| {
                        LoadError::Config(match e {
                            ConfigError::Missing { .. } => format!(
                                "plugin {}: {e} (looked in namespace {} for labels {})",
                                self.name,
                                loader.namespace(),
                                ClusterAccess::selector(self.kind, self.name)
                            ),
                            ConfigError::Invalid { .. } => format!("plugin {}: {e}", self.name),
                        })
                        })
                    }
                };
                if let Err(e) = &built {
                    tracing::error!(plugin = self.name, error = %e, "plugin configuration is invalid; every item will fail until it is fixed");
                }
                Ok(built)
            })
            .await;
        match outcome {
            Ok(built) => built.clone(),
            Err(e) => {
                tracing::warn!(plugin = self.name, error = %e, "cannot read plugin configuration; will retry on the next item");
                Err(e.clone())
            }
        }
    }
}

fn api_resource(kind: &ResourceType) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(kind.group, kind.version, kind.kind),
        kind.plural,
    )
}

impl ClusterAccess {
    async fn api(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
    ) -> Result<Api<DynamicObject>, ClusterError> {
        let client = self
            .client()
            .await
            .map_err(|e| ClusterError::Api(e.to_string()))?
            .clone();
        let resource = api_resource(kind);
        Ok(match namespace.filter(|_| kind.namespaced) {
            Some(ns) => Api::namespaced_with(client, ns, &resource),
            None => Api::all_with(client, &resource),
        })
    }
}

fn describe_target(kind: &ResourceType, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if kind.namespaced => format!("{} {ns}/{name}", kind.kind),
        _ => format!("{} {name}", kind.kind),
    }
}

/// Sorts an API failure into "retry later" and "refused until someone fixes it", so an action
/// can fail at once on a missing permission instead of retrying until Velero's timeout.
fn classify(context: &str, error: &kube::Error) -> ClusterError {
    match error {
        kube::Error::Api(status) => {
            let message = format!("{context}: {} ({})", status.message, status.reason);
            match status.code {
                403 => ClusterError::Rejected(format!(
                    "{message}; grant that permission to Velero's service account"
                )),
                400 | 401 | 404 | 405 | 422 => ClusterError::Rejected(message),
                _ => ClusterError::Api(message),
            }
        }
        other => ClusterError::Api(format!("{context}: {other}")),
    }
}

fn to_json(object: DynamicObject) -> Result<Value, ClusterError> {
    serde_json::to_value(object)
        .map_err(|e| ClusterError::Api(format!("cannot encode object as JSON: {e}")))
}

#[async_trait::async_trait]
impl Cluster for ClusterAccess {
    async fn get(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ClusterError> {
        let api = self.api(kind, namespace).await?;
        match api.get_opt(name).await {
            Ok(found) => found.map(to_json).transpose(),
            Err(e) => Err(classify(
                &format!("cannot read {}", describe_target(kind, namespace, name)),
                &e,
            )),
        }
    }

    async fn create(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
        object: &Value,
    ) -> Result<Value, ClusterError> {
        let api = self.api(kind, namespace).await?;
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let target = describe_target(kind, namespace, name);
        let typed: DynamicObject = serde_json::from_value(object.clone()).map_err(|e| {
            ClusterError::Api(format!("cannot create {target}: not a valid object: {e}"))
        })?;
        match api.create(&PostParams::default(), &typed).await {
            Ok(created) => to_json(created),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Err(ClusterError::AlreadyExists(target))
            }
            Err(e) => Err(classify(&format!("cannot create {target}"), &e)),
        }
    }

    async fn list(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
        label_selector: &str,
    ) -> Result<Vec<Value>, ClusterError> {
        let api = self.api(kind, namespace).await?;
        let list = api
            .list(&ListParams::default().labels(label_selector))
            .await
            .map_err(|e| {
                classify(
                    &format!("cannot list {} with labels {label_selector:?}", kind.plural),
                    &e,
                )
            })?;
        list.items.into_iter().map(to_json).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str) -> kube::Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "code": code, "reason": reason, "message": "refused"
        }))
        .expect("status");
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn permanent_refusals_are_told_from_passing_failures() {
        for code in [400, 401, 404, 405, 422] {
            assert!(
                matches!(
                    classify("x", &api_error(code, "Invalid")),
                    ClusterError::Rejected(_)
                ),
                "{code}"
            );
        }
        for code in [429, 500, 503, 504] {
            assert!(
                matches!(
                    classify("x", &api_error(code, "Busy")),
                    ClusterError::Api(_)
                ),
                "{code}"
            );
        }
        let ClusterError::Rejected(message) =
            classify("cannot create PVC vms/r", &api_error(403, "Forbidden"))
        else {
            panic!("403 is a refusal");
        };
        assert_eq!(
            message,
            "cannot create PVC vms/r: refused (Forbidden); grant that permission to Velero's service account"
        );
    }
}
