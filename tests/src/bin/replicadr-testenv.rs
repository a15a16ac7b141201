//! `replicadr-testenv`: runs a command against a throwaway etcd + kube-apiserver, so Go test
//! binaries and scripts can use the same real API server as the Rust tests.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitCode, ExitStatus};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use replicadr_e2e::TestCluster;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Exit code when the harness itself fails (as `env` and `timeout` use 125).
const HARNESS_FAILED: u8 = 125;
/// How long the command may take to finish after Ctrl-C before it is killed.
const CHILD_GRACE: Duration = Duration::from_secs(10);

/// Run a command against a throwaway etcd + kube-apiserver on 127.0.0.1.
///
/// The command gets KUBECONFIG pointing at a kubeconfig for a system:masters token user; the
/// cluster is torn down when it exits, and its exit code is returned.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Keep the cluster's files (kubeconfig, certificates, etcd data, peer logs) in DIR instead of
    /// a temporary directory that is removed afterwards.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,

    /// Without a command: print the kubeconfig path and keep the cluster up until Ctrl-C.
    #[arg(long, conflicts_with = "command")]
    keep: bool,

    /// The command to run, after `--`.
    #[arg(last = true, required_unless_present = "keep", value_name = "COMMAND")]
    command: Vec<OsString>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "replicadr_e2e=info,replicadr_testenv=info".into()),
        )
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("replicadr-testenv: {error:#}");
            ExitCode::from(HARNESS_FAILED)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut shutdown = Shutdown::listen()?;
    let mut builder = TestCluster::builder();
    if let Some(dir) = args.dir {
        builder = builder.dir(dir);
    }
    // Dropping the start on a signal kills whatever peers were already running.
    let cluster = tokio::select! {
        cluster = builder.start() => cluster?,
        signal = shutdown.recv() => anyhow::bail!("{signal} while the cluster was starting"),
    };

    let Some((program, program_args)) = args.command.split_first() else {
        println!("{}", cluster.kubeconfig_path().display());
        eprintln!(
            "cluster ready: export KUBECONFIG={}; Ctrl-C stops it",
            cluster.kubeconfig_path().display()
        );
        let signal = shutdown.recv().await;
        tracing::info!(signal, "stopping test cluster");
        return Ok(ExitCode::SUCCESS);
    };

    let mut child = tokio::process::Command::new(program)
        .args(program_args)
        .env("KUBECONFIG", cluster.kubeconfig_path())
        .spawn()
        .with_context(|| format!("cannot run {}", program.to_string_lossy()))?;
    let status = tokio::select! {
        status = child.wait() => status?,
        signal = shutdown.recv() => {
            // A terminal's Ctrl-C reaches the whole foreground process group, the command
            // included: let it finish. A SIGTERM was meant for this process alone.
            let grace = if signal == "SIGINT" { CHILD_GRACE } else { Duration::ZERO };
            tracing::info!(signal, ?grace, "stopping the command");
            if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
                status?
            } else {
                child.kill().await?;
                child.wait().await?
            }
        }
    };
    drop(cluster);
    Ok(exit_code(status))
}

/// The command's exit code, or 128 + signal number as shells report it.
fn exit_code(status: ExitStatus) -> ExitCode {
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(i32::from(HARNESS_FAILED));
    ExitCode::from(u8::try_from(code).unwrap_or(HARNESS_FAILED))
}

/// SIGINT and SIGTERM, registered before the cluster starts so neither leaves peers behind.
struct Shutdown {
    interrupt: Signal,
    terminate: Signal,
}

impl Shutdown {
    fn listen() -> anyhow::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
