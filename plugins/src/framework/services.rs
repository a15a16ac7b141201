//! The gRPC services a Velero plugin process serves: discovery (`generated.PluginLister`), the
//! kind services that dispatch on each request's `plugin` field, and go-plugin's controller,
//! stdio and broker services.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use replicadr_proto::generated::{
    self, plugin_lister_server::PluginLister,
    restore_item_action_server::RestoreItemAction as RestoreItemActionService,
};
use replicadr_proto::goplugin::{
    self, grpc_broker_server::GrpcBroker, grpc_controller_server::GrpcController,
    grpc_stdio_server::GrpcStdio,
};
use serde_json::Value;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use super::config::{ConfigLoader, LazyAction, LoadError};
use super::names::PluginKind;
use super::status;
use crate::actions::{
    ActionFactory, ResourceId, ResourceSelector, RestoreInput, RestoreItemAction,
};

/// A registered RestoreItemAction, with its factory's concrete type erased.
#[tonic::async_trait]
pub trait RestoreEntry: Send + Sync {
    /// The selector, available without config.
    fn applies_to(&self) -> ResourceSelector;
    /// The configured action.
    async fn action(&self, loader: &ConfigLoader) -> Result<Arc<dyn RestoreItemAction>, LoadError>;
}

#[tonic::async_trait]
impl<F> RestoreEntry for LazyAction<F>
where
    F: ActionFactory,
    F::Action: RestoreItemAction,
{
    fn applies_to(&self) -> ResourceSelector {
        self.factory().applies_to()
    }

    async fn action(&self, loader: &ConfigLoader) -> Result<Arc<dyn RestoreItemAction>, LoadError> {
        Ok(self.get(loader).await? as Arc<dyn RestoreItemAction>)
    }
}

/// `generated.PluginLister`: what this binary serves, under which command.
#[derive(Debug)]
pub struct Lister {
    pub command: String,
    pub plugins: Vec<(PluginKind, &'static str)>,
}

#[tonic::async_trait]
impl PluginLister for Lister {
    async fn list_plugins(
        &self,
        _: Request<generated::Empty>,
    ) -> Result<Response<generated::ListPluginsResponse>, Status> {
        let plugins = self
            .plugins
            .iter()
            .map(|(kind, name)| generated::PluginIdentifier {
                command: self.command.clone(),
                kind: kind.as_str().to_owned(),
                name: (*name).to_owned(),
            })
            .collect();
        Ok(Response::new(generated::ListPluginsResponse { plugins }))
    }
}

/// `generated.RestoreItemAction` (v1) for every registered RestoreItemAction.
pub struct RestoreItemActions {
    pub actions: BTreeMap<&'static str, Arc<dyn RestoreEntry>>,
    pub loader: Arc<ConfigLoader>,
}

impl std::fmt::Debug for RestoreItemActions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreItemActions")
            .field("actions", &self.actions.keys())
            .finish_non_exhaustive()
    }
}

impl RestoreItemActions {
    fn entry(&self, plugin: &str) -> Result<&Arc<dyn RestoreEntry>, Status> {
        self.actions.get(plugin).ok_or_else(|| {
            let served: Vec<&str> = self.actions.keys().copied().collect();
            status::unknown_plugin(PluginKind::RestoreItemAction, plugin, &served)
        })
    }
}

#[tonic::async_trait]
impl RestoreItemActionService for RestoreItemActions {
    async fn applies_to(
        &self,
        request: Request<generated::RestoreItemActionAppliesToRequest>,
    ) -> Result<Response<generated::RestoreItemActionAppliesToResponse>, Status> {
        let selector = self.entry(&request.get_ref().plugin)?.applies_to();
        Ok(Response::new(
            generated::RestoreItemActionAppliesToResponse {
                resource_selector: Some(to_proto_selector(selector)),
            },
        ))
    }

    async fn execute(
        &self,
        request: Request<generated::RestoreItemActionExecuteRequest>,
    ) -> Result<Response<generated::RestoreItemActionExecuteResponse>, Status> {
        let request = request.into_inner();
        let plugin = request.plugin.as_str();
        let entry = self.entry(plugin)?;
        // Bad input is reported as such whatever the state of the configuration.
        let input = RestoreInput {
            item: decode(plugin, "item", &request.item)?,
            item_from_backup: decode_optional(plugin, "itemFromBackup", &request.item_from_backup)?,
            restore: decode_optional(plugin, "restore", &request.restore)?.unwrap_or(Value::Null),
        };
        let action = entry
            .action(&self.loader)
            .await
            .map_err(|e| status::load_error(&e))?;
        let output = status::guarded(plugin, || {
            action
                .execute(input)
                .map_err(|e| status::item_error(plugin, &e))
        })?;
        Ok(Response::new(generated::RestoreItemActionExecuteResponse {
            item: serde_json::to_vec(&output.item).map_err(|e| status::encode_error(plugin, &e))?,
            additional_items: output
                .additional_items
                .into_iter()
                .map(to_proto_id)
                .collect(),
            skip_restore: output.skip_restore,
        }))
    }
}

fn decode(plugin: &str, field: &str, bytes: &[u8]) -> Result<Value, Status> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(status::bad_json(
            plugin,
            field,
            &serde::de::Error::custom("expected a JSON object"),
        )),
        Err(e) => Err(status::bad_json(plugin, field, &e)),
    }
}

fn decode_optional(plugin: &str, field: &str, bytes: &[u8]) -> Result<Option<Value>, Status> {
    if bytes.is_empty() {
        return Ok(None);
    }
    decode(plugin, field, bytes).map(Some)
}

fn to_proto_selector(selector: ResourceSelector) -> generated::ResourceSelector {
    generated::ResourceSelector {
        included_namespaces: selector.included_namespaces,
        excluded_namespaces: selector.excluded_namespaces,
        included_resources: selector.included_resources,
        excluded_resources: selector.excluded_resources,
        selector: selector.label_selector,
    }
}

fn to_proto_id(id: ResourceId) -> generated::ResourceIdentifier {
    generated::ResourceIdentifier {
        group: id.group,
        resource: id.resource,
        namespace: id.namespace,
        name: id.name,
    }
}

/// How long the process may take to exit after Velero asks it to; Velero kills it after 2 s.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(800);

/// `plugin.GRPCController`: Velero's request to exit.
#[derive(Debug)]
pub struct Controller {
    pub shutdown: watch::Sender<bool>,
}

#[tonic::async_trait]
impl GrpcController for Controller {
    async fn shutdown(
        &self,
        _: Request<goplugin::Empty>,
    ) -> Result<Response<goplugin::Empty>, Status> {
        tracing::debug!("shutdown requested by the plugin host");
        self.shutdown.send_replace(true);
        Ok(Response::new(goplugin::Empty {}))
    }
}

type EndlessStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A stream that sends nothing and ends at shutdown, so open streams never delay the exit.
fn until_shutdown<T: Send + 'static>(mut shutdown: watch::Receiver<bool>) -> EndlessStream<T> {
    Box::pin(
        futures::stream::once(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .filter_map(|()| async { None }),
    )
}

use futures::StreamExt as _;

/// `plugin.GRPCStdio`: go-plugin relays a Go plugin's stdout/stderr here. We log straight to
/// stderr, so the stream stays open and empty, as in go-plugin's non-Go examples.
#[derive(Debug)]
pub struct Stdio {
    pub shutdown: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl GrpcStdio for Stdio {
    type StreamStdioStream = EndlessStream<goplugin::StdioData>;

    async fn stream_stdio(
        &self,
        _: Request<()>,
    ) -> Result<Response<Self::StreamStdioStream>, Status> {
        Ok(Response::new(until_shutdown(self.shutdown.clone())))
    }
}

/// `plugin.GRPCBroker`: go-plugin opens it on connect; Velero never brokers connections.
#[derive(Debug)]
pub struct Broker {
    pub shutdown: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl GrpcBroker for Broker {
    type StartStreamStream = EndlessStream<goplugin::ConnInfo>;

    async fn start_stream(
        &self,
        _: Request<Streaming<goplugin::ConnInfo>>,
    ) -> Result<Response<Self::StartStreamStream>, Status> {
        Ok(Response::new(until_shutdown(self.shutdown.clone())))
    }
}
