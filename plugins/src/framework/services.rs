//! The gRPC services a Velero plugin process serves: discovery (`generated.PluginLister`), the
//! kind services that dispatch on each request's `plugin` field, and go-plugin's controller,
//! stdio and broker services.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use replicadr_proto::generated::{
    self, backup_item_action_server::BackupItemAction as BackupItemActionService,
    plugin_lister_server::PluginLister,
    restore_item_action_server::RestoreItemAction as RestoreItemActionService,
};
use replicadr_proto::goplugin::{
    self, grpc_broker_server::GrpcBroker, grpc_controller_server::GrpcController,
    grpc_stdio_server::GrpcStdio,
};
use replicadr_proto::v2::{
    self, backup_item_action_server::BackupItemAction as BackupItemActionV2Service,
};
use serde_json::Value;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use super::cluster::{ClusterAccess, LazyAction, LoadError};
use super::names::PluginKind;
use super::status;
use crate::actions::{
    ActionFactory, AsyncBackupItemAction, BackupInput, BackupItemAction, ItemError,
    OperationProgress, ResourceId, ResourceSelector, RestoreInput, RestoreItemAction,
};

/// A registered action, with its factory's concrete type erased to the kind's trait object `A`.
#[tonic::async_trait]
pub trait Entry<A: ?Sized>: Send + Sync {
    /// The selector, available without config.
    fn applies_to(&self) -> ResourceSelector;
    /// The configured action.
    async fn action(&self, access: &Arc<ClusterAccess>) -> Result<Arc<A>, LoadError>;
    /// See [`ActionFactory::keeps_without_config`].
    fn keeps_without_config(&self, item: &Value) -> bool;
}

macro_rules! erase_entry {
    ($bound:path) => {
        #[tonic::async_trait]
        impl<F> Entry<dyn $bound> for LazyAction<F>
        where
            F: ActionFactory,
            F::Action: $bound,
        {
            fn applies_to(&self) -> ResourceSelector {
                self.factory().applies_to()
            }

            async fn action(
                &self,
                access: &Arc<ClusterAccess>,
            ) -> Result<Arc<dyn $bound>, LoadError> {
                Ok(self.get(access).await? as Arc<dyn $bound>)
            }

            fn keeps_without_config(&self, item: &Value) -> bool {
                self.factory().keeps_without_config(item)
            }
        }
    };
}
erase_entry!(RestoreItemAction);
erase_entry!(BackupItemAction);
erase_entry!(AsyncBackupItemAction);

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

/// The actions of one kind, dispatched on each request's `plugin` field.
pub struct Actions<A: ?Sized> {
    pub kind: PluginKind,
    pub entries: BTreeMap<&'static str, Arc<dyn Entry<A>>>,
    pub access: Arc<ClusterAccess>,
}

impl<A: ?Sized> std::fmt::Debug for Actions<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actions")
            .field("kind", &self.kind)
            .field("entries", &self.entries.keys())
            .finish_non_exhaustive()
    }
}

impl<A: ?Sized> Actions<A> {
    fn entry(&self, plugin: &str) -> Result<&Arc<dyn Entry<A>>, Status> {
        self.entries.get(plugin).ok_or_else(|| {
            let served: Vec<&str> = self.entries.keys().copied().collect();
            status::unknown_plugin(self.kind, plugin, &served)
        })
    }

    fn selector(&self, plugin: &str) -> Result<Option<generated::ResourceSelector>, Status> {
        Ok(Some(to_proto_selector(self.entry(plugin)?.applies_to())))
    }

    async fn action(&self, plugin: &str) -> Result<Arc<A>, Status> {
        self.entry(plugin)?
            .action(&self.access)
            .await
            .map_err(|e| status::load_error(&e))
    }

    /// Resolves `plugin`'s action and makes one synchronous call on it; an error or a panic
    /// fails this item only.
    async fn call<T>(
        &self,
        plugin: &str,
        call: impl FnOnce(&A) -> Result<T, ItemError>,
    ) -> Result<T, Status> {
        let action = self.action(plugin).await?;
        status::guarded(plugin, || {
            call(&action).map_err(|e| status::item_error(plugin, &e))
        })
    }
}

#[tonic::async_trait]
impl RestoreItemActionService for Actions<dyn RestoreItemAction> {
    async fn applies_to(
        &self,
        request: Request<generated::RestoreItemActionAppliesToRequest>,
    ) -> Result<Response<generated::RestoreItemActionAppliesToResponse>, Status> {
        Ok(Response::new(
            generated::RestoreItemActionAppliesToResponse {
                resource_selector: self.selector(&request.get_ref().plugin)?,
            },
        ))
    }

    async fn execute(
        &self,
        request: Request<generated::RestoreItemActionExecuteRequest>,
    ) -> Result<Response<generated::RestoreItemActionExecuteResponse>, Status> {
        let request = request.into_inner();
        let plugin = request.plugin.as_str();
        self.entry(plugin)?;
        let _timer = super::stats::Timer::start(plugin);
        // Bad input is reported as such whatever the state of the configuration.
        let input = RestoreInput {
            item: decode(plugin, "item", &request.item)?,
            item_from_backup: decode_optional(plugin, "itemFromBackup", &request.item_from_backup)?,
            restore: decode_optional(plugin, "restore", &request.restore)?.unwrap_or(Value::Null),
        };
        let action = self.action(plugin).await?;
        let output = status::guarded_async(plugin, async {
            action
                .execute(input)
                .await
                .map_err(|e| status::item_error(plugin, &e))
        })
        .await?;
        Ok(Response::new(generated::RestoreItemActionExecuteResponse {
            item: encode(plugin, &output.item)?,
            additional_items: to_proto_ids(output.additional_items),
            skip_restore: output.skip_restore,
        }))
    }
}

fn backup_input(plugin: &str, item: &[u8], backup: &[u8]) -> Result<BackupInput, Status> {
    Ok(BackupInput {
        item: decode(plugin, "item", item)?,
        backup: decode_optional(plugin, "backup", backup)?.unwrap_or(Value::Null),
    })
}

#[tonic::async_trait]
impl BackupItemActionService for Actions<dyn BackupItemAction> {
    async fn applies_to(
        &self,
        request: Request<generated::BackupItemActionAppliesToRequest>,
    ) -> Result<Response<generated::BackupItemActionAppliesToResponse>, Status> {
        Ok(Response::new(
            generated::BackupItemActionAppliesToResponse {
                resource_selector: self.selector(&request.get_ref().plugin)?,
            },
        ))
    }

    async fn execute(
        &self,
        request: Request<generated::ExecuteRequest>,
    ) -> Result<Response<generated::ExecuteResponse>, Status> {
        let request = request.into_inner();
        let plugin = request.plugin.as_str();
        self.entry(plugin)?;
        let _timer = super::stats::Timer::start(plugin);
        let input = backup_input(plugin, &request.item, &request.backup)?;
        let output = self.call(plugin, |action| action.execute(input)).await?;
        Ok(Response::new(generated::ExecuteResponse {
            item: encode(plugin, &output.item)?,
            additional_items: to_proto_ids(output.additional_items),
        }))
    }
}

#[tonic::async_trait]
impl BackupItemActionV2Service for Actions<dyn AsyncBackupItemAction> {
    async fn applies_to(
        &self,
        request: Request<v2::BackupItemActionAppliesToRequest>,
    ) -> Result<Response<v2::BackupItemActionAppliesToResponse>, Status> {
        Ok(Response::new(v2::BackupItemActionAppliesToResponse {
            resource_selector: self.selector(&request.get_ref().plugin)?,
        }))
    }

    async fn execute(
        &self,
        request: Request<v2::ExecuteRequest>,
    ) -> Result<Response<v2::ExecuteResponse>, Status> {
        let request = request.into_inner();
        let plugin = request.plugin.as_str();
        self.entry(plugin)?;
        let _timer = super::stats::Timer::start(plugin);
        let input = backup_input(plugin, &request.item, &request.backup)?;
        let entry = self.entry(plugin)?;
        let action = match entry.action(&self.access).await {
            Ok(action) => action,
            Err(error) if entry.keeps_without_config(&input.item) => {
                // Logged as an error, which Velero counts against the backup: loud, and the
                // item is still in it.
                tracing::error!(plugin, item = %crate::actions::describe(&input.item), error = %error, "the action cannot be configured; the item is backed up unchanged, without what the action adds");
                return Ok(Response::new(v2::ExecuteResponse {
                    item: encode(plugin, &input.item)?,
                    ..Default::default()
                }));
            }
            Err(error) => return Err(status::load_error(&error)),
        };
        let output = status::guarded_async(plugin, async {
            action
                .execute(input)
                .await
                .map_err(|e| status::item_error(plugin, &e))
        })
        .await?;
        Ok(Response::new(v2::ExecuteResponse {
            item: encode(plugin, &output.item)?,
            additional_items: to_proto_ids(output.additional_items),
            operation_id: output.operation_id.unwrap_or_default(),
            post_operation_items: to_proto_ids(output.post_operation_items),
        }))
    }

    async fn progress(
        &self,
        request: Request<v2::BackupItemActionProgressRequest>,
    ) -> Result<Response<v2::BackupItemActionProgressResponse>, Status> {
        let request = request.into_inner();
        let plugin = request.plugin.as_str();
        self.entry(plugin)?;
        let backup = decode_optional(plugin, "backup", &request.backup)?.unwrap_or(Value::Null);
        let action = match self.entry(plugin)?.action(&self.access).await {
            Ok(action) => action,
            // Velero fails an operation for good when Progress errors. A configuration that could
            // not be read because the API server was unreachable is no verdict on the operation:
            // report it as still running, and the next poll (a new process) tries again.
            Err(LoadError::Cluster(message)) => {
                return Ok(Response::new(v2::BackupItemActionProgressResponse {
                    progress: Some(to_proto_progress(OperationProgress::unknown(format!(
                        "cannot read the plugin configuration ({message}); retrying on the next poll"
                    )))),
                }));
            }
            Err(e) => return Err(status::load_error(&e)),
        };
        let progress = status::guarded_async(plugin, async {
            action
                .progress(&request.operation_id, &backup)
                .await
                .map_err(|e| status::item_error(plugin, &e))
        })
        .await?;
        Ok(Response::new(v2::BackupItemActionProgressResponse {
            progress: Some(to_proto_progress(progress)),
        }))
    }

    async fn cancel(
        &self,
        request: Request<v2::BackupItemActionCancelRequest>,
    ) -> Result<Response<()>, Status> {
        let request = request.into_inner();
        let plugin = request.plugin.as_str();
        self.entry(plugin)?;
        let backup = decode_optional(plugin, "backup", &request.backup)?.unwrap_or(Value::Null);
        let action = self.action(plugin).await?;
        status::guarded_async(plugin, async {
            action
                .cancel(&request.operation_id, &backup)
                .await
                .map_err(|e| status::item_error(plugin, &e))
        })
        .await?;
        Ok(Response::new(()))
    }
}

fn to_proto_progress(progress: OperationProgress) -> generated::OperationProgress {
    let timestamp = |seconds: i64| Some(prost_types::Timestamp { seconds, nanos: 0 });
    generated::OperationProgress {
        completed: progress.completed,
        err: progress.error.unwrap_or_default(),
        n_completed: progress.n_completed,
        n_total: progress.n_total,
        operation_units: progress.operation_units,
        description: progress.description,
        started: timestamp(progress.started_unix),
        updated: timestamp(progress.updated_unix),
    }
}

fn encode(plugin: &str, item: &Value) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(item).map_err(|e| status::encode_error(plugin, &e))
}

fn to_proto_ids(ids: Vec<ResourceId>) -> Vec<generated::ResourceIdentifier> {
    ids.into_iter().map(to_proto_id).collect()
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
