//! The plugin process: everything between Velero's go-plugin client and the actions. It checks
//! that Velero started us, binds the socket, prints the handshake, serves discovery, the kind
//! services, health and go-plugin's controller/stdio/broker, and exits promptly when Velero
//! says so. It knows gRPC and the cluster client; it does not know what the actions do.

mod cluster;
pub mod logging;
mod names;
pub mod process;
mod services;
pub mod stats;
mod status;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use replicadr_proto::generated::backup_item_action_server::BackupItemActionServer;
use replicadr_proto::generated::plugin_lister_server::PluginListerServer;
use replicadr_proto::generated::restore_item_action_server::RestoreItemActionServer;
use replicadr_proto::goplugin::grpc_broker_server::GrpcBrokerServer;
use replicadr_proto::goplugin::grpc_controller_server::GrpcControllerServer;
use replicadr_proto::goplugin::grpc_stdio_server::GrpcStdioServer;
use replicadr_proto::v2::backup_item_action_server::BackupItemActionServer as BackupItemActionV2Server;
use tokio::sync::watch;

pub use cluster::{ClusterAccess, LoadError, PLUGIN_CONFIG_LABEL};
pub use names::{PluginKind, validate_name};
use process::HostArgs;
use services::{Actions, Broker, Controller, Entry, Lister, SHUTDOWN_GRACE, Stdio};

use crate::actions::{ActionFactory, AsyncBackupItemAction, BackupItemAction, RestoreItemAction};

/// Largest request or response accepted: an item, its backed-up copy and the restore together.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Velero's namespace when neither `--namespace` nor `VELERO_NAMESPACE` says otherwise.
const DEFAULT_VELERO_NAMESPACE: &str = "velero";

type Table<A> = BTreeMap<&'static str, Arc<dyn Entry<A>>>;

/// The table of plugins one binary serves, and the process that serves them.
#[derive(Default)]
pub struct PluginServer {
    restore: Table<dyn RestoreItemAction>,
    backup: Table<dyn BackupItemAction>,
    async_backup: Table<dyn AsyncBackupItemAction>,
}

impl std::fmt::Debug for PluginServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginServer")
            .field("plugins", &self.listing())
            .finish()
    }
}

fn lazy<F: ActionFactory>(
    kind: PluginKind,
    name: &'static str,
    factory: F,
) -> cluster::LazyAction<F> {
    cluster::LazyAction::new(kind, name, factory)
}

impl PluginServer {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `factory`'s action as a RestoreItemAction (v1) named `name`.
    #[must_use]
    pub fn restore_item_action<F>(mut self, name: &'static str, factory: F) -> Self
    where
        F: ActionFactory,
        F::Action: RestoreItemAction,
    {
        let entry = lazy(PluginKind::RestoreItemAction, name, factory);
        self.restore.insert(name, Arc::new(entry));
        self
    }

    /// Serves `factory`'s action as a BackupItemAction (v1) named `name`.
    #[must_use]
    pub fn backup_item_action<F>(mut self, name: &'static str, factory: F) -> Self
    where
        F: ActionFactory,
        F::Action: BackupItemAction,
    {
        let entry = lazy(PluginKind::BackupItemAction, name, factory);
        self.backup.insert(name, Arc::new(entry));
        self
    }

    /// Serves `factory`'s action as a `BackupItemActionV2` (asynchronous operations) named `name`.
    #[must_use]
    pub fn async_backup_item_action<F>(mut self, name: &'static str, factory: F) -> Self
    where
        F: ActionFactory,
        F::Action: AsyncBackupItemAction,
    {
        let entry = lazy(PluginKind::BackupItemActionV2, name, factory);
        self.async_backup.insert(name, Arc::new(entry));
        self
    }

    /// What `ListPlugins` answers, in Velero's own order (kind, then name).
    fn listing(&self) -> Vec<(PluginKind, &'static str)> {
        let names = |kind: PluginKind, names: Vec<&'static str>| {
            names.into_iter().map(move |name| (kind, name))
        };
        let mut plugins: Vec<_> = names(
            PluginKind::RestoreItemAction,
            self.restore.keys().copied().collect(),
        )
        .chain(names(
            PluginKind::BackupItemAction,
            self.backup.keys().copied().collect(),
        ))
        .chain(names(
            PluginKind::BackupItemActionV2,
            self.async_backup.keys().copied().collect(),
        ))
        .collect();
        plugins.sort();
        plugins
    }

    /// Runs the plugin process to completion, as go-plugin's `Serve` does for Go plugins.
    pub fn run(self) -> ExitCode {
        let env = |key: &str| std::env::var(key).ok();
        let mut argv = std::env::args_os().skip(1);
        if env(process::MAGIC_COOKIE_KEY).is_none() && argv.next().is_some_and(|a| a == "install") {
            return install(argv.next().map(std::path::PathBuf::from));
        }
        if let Err(message) = process::check_started_by_velero(
            env(process::MAGIC_COOKIE_KEY).as_deref(),
            env("PLUGIN_PROTOCOL_VERSIONS").as_deref(),
        ) {
            eprintln!("{message}");
            return ExitCode::from(1);
        }
        let host = HostArgs::from_argv(std::env::args_os());
        logging::init(logging::level_filter(host.log_level.as_deref()));
        install_panic_logger();
        if let Some(problem) = self
            .listing()
            .iter()
            .find_map(|(_, name)| validate_name(name).err())
        {
            tracing::error!(error = %problem, "invalid plugin registration");
            return ExitCode::from(1);
        }
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the async runtime");
                return ExitCode::from(1);
            }
        };
        match runtime.block_on(self.serve(host)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "plugin server failed");
                ExitCode::from(1)
            }
        }
    }

    async fn serve(self, host: HostArgs) -> anyhow::Result<()> {
        let namespace = host
            .namespace
            .clone()
            .or_else(|| {
                std::env::var("VELERO_NAMESPACE")
                    .ok()
                    .filter(|ns| !ns.is_empty())
            })
            .unwrap_or_else(|| DEFAULT_VELERO_NAMESPACE.to_owned());
        let access = Arc::new(ClusterAccess::new(namespace, host.kubeconfig.clone()));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);

        let dir = process::socket_dir(std::env::var_os("PLUGIN_UNIX_SOCKET_DIR"));
        let group = std::env::var("PLUGIN_UNIX_SOCKET_GROUP").ok();
        let socket = process::bind_socket(&dir, group.as_deref())
            .with_context(|| format!("cannot create the plugin socket in {}", dir.display()))?;
        socket.listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(socket.listener)?;
        let socket_path = socket.path;

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("plugin", tonic_health::ServingStatus::Serving)
            .await;

        let lister = Lister {
            command: host.command.clone(),
            plugins: self.listing(),
        };
        let restore_item_actions = Actions {
            kind: PluginKind::RestoreItemAction,
            entries: self.restore,
            access: Arc::clone(&access),
        };
        let backup_item_actions = Actions {
            kind: PluginKind::BackupItemAction,
            entries: self.backup,
            access: Arc::clone(&access),
        };
        let async_backup_item_actions = Actions {
            kind: PluginKind::BackupItemActionV2,
            entries: self.async_backup,
            access,
        };
        let router = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(PluginListerServer::new(lister))
            .add_service(
                RestoreItemActionServer::new(restore_item_actions)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                BackupItemActionServer::new(backup_item_actions)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                BackupItemActionV2Server::new(async_backup_item_actions)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(GrpcControllerServer::new(Controller {
                shutdown: shutdown_tx.clone(),
            }))
            .add_service(GrpcStdioServer::new(Stdio {
                shutdown: shutdown_rx.clone(),
            }))
            .add_service(GrpcBrokerServer::new(Broker {
                shutdown: shutdown_rx.clone(),
            }));

        announce(&process::handshake_line(&socket_path));
        tracing::debug!(socket = %socket_path.display(), command = %host.command, "plugin serving");

        watch_signals(shutdown_tx.clone())?;
        exit_after_grace(shutdown_rx.clone(), socket_path.to_path_buf());

        let mut stop = shutdown_rx;
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        router
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|stop| *stop).await;
            })
            .await
            .context("grpc server failed")?;
        drop(socket_path);
        Ok(())
    }
}

/// The plugin image's entrypoint: copy this binary into Velero's plugins volume and exit.
fn install(dir: Option<std::path::PathBuf>) -> ExitCode {
    let dir = dir.unwrap_or_else(|| process::DEFAULT_INSTALL_DIR.into());
    let result = std::env::current_exe().and_then(|exe| process::install_self(&exe, &dir));
    match result {
        Ok(path) => {
            eprintln!("installed {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot install the plugin into {}: {e}", dir.display());
            ExitCode::from(1)
        }
    }
}

/// Prints the go-plugin handshake: the first and only line this process writes to stdout.
fn announce(line: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    #[expect(
        clippy::print_stdout,
        reason = "the go-plugin handshake is the one line stdout carries"
    )]
    {
        println!("{line}");
    }
    let _ = stdout.flush();
}

/// Ignores SIGINT, as Go plugins do (the host handles Ctrl-C and tells us to stop), and treats
/// SIGTERM as a request to shut down.
fn watch_signals(shutdown: watch::Sender<bool>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = interrupt.recv() => tracing::debug!("ignoring SIGINT; the plugin host decides when to stop"),
                _ = terminate.recv() => {
                    shutdown.send_replace(true);
                    break;
                }
            }
        }
    });
    Ok(())
}

/// Once shutdown starts, exits after a short grace period even if a connection lingers, so
/// Velero never has to kill the process ("plugin failed to exit gracefully").
fn exit_after_grace(mut shutdown: watch::Receiver<bool>, socket: std::path::PathBuf) {
    tokio::spawn(async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
        stats::log_summary();
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        let _ = std::fs::remove_file(&socket);
        std::process::exit(0);
    });
}

/// Sends panic reports through the JSON logger instead of plain text on stderr.
fn install_panic_logger() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        tracing::error!(location = %location, panic = %info, "panic");
    }));
}
