//! Velero's plugin-config convention, read once per plugin process: the ConfigMap in Velero's
//! namespace labelled `velero.io/plugin-config` and `<plugin name>: <kind>`. Each action is built
//! from it on first use and kept; a broken config is kept too (and logged once), so every item
//! gets the same clear error. Failures to reach the API server are not kept: the next item retries.

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use kube::{Api, Client};
use tokio::sync::OnceCell;

use super::names::PluginKind;
use crate::actions::{ActionFactory, ConfigError, PluginConfig};

/// Label every plugin ConfigMap carries.
pub const PLUGIN_CONFIG_LABEL: &str = "velero.io/plugin-config";

/// Finds plugin ConfigMaps; holds the lazily created cluster client.
pub struct ConfigLoader {
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

impl std::fmt::Debug for ConfigLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigLoader")
            .field("namespace", &self.namespace)
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl ConfigLoader {
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
    pub async fn get(&self, loader: &ConfigLoader) -> Result<Arc<F::Action>, LoadError> {
        let outcome = self
            .built
            .get_or_try_init(|| async {
                let built = match loader.fetch(self.kind, self.name).await {
                    Err(LoadError::Cluster(e)) => return Err(LoadError::Cluster(e)),
                    Err(config_error) => Err(config_error),
                    Ok(config) => self.factory.build(config.as_ref()).map(Arc::new).map_err(|e| {
                        LoadError::Config(match e {
                            ConfigError::Missing { .. } => format!(
                                "plugin {}: {e} (looked in namespace {} for labels {})",
                                self.name,
                                loader.namespace(),
                                ConfigLoader::selector(self.kind, self.name)
                            ),
                            ConfigError::Invalid { .. } => format!("plugin {}: {e}", self.name),
                        })
                    }),
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
