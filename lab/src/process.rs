//! One running peer process: spawned with its output in a log file, killed and reaped on drop.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// How much of a peer's log an error quotes.
const TAIL_LINES: usize = 25;
const TAIL_BYTES: u64 = 16 * 1024;

/// A child process owned by the harness.
#[derive(Debug)]
pub(crate) struct PeerProcess {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl PeerProcess {
    /// Starts `program` with stdout and stderr appended to `log`.
    pub fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> std::io::Result<Self> {
        Self::spawn_with_env(name, program, args, &[], log)
    }

    /// [`Self::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        name: &'static str,
        program: &Path,
        args: &[String],
        env: &[(&str, &Path)],
        log: PathBuf,
    ) -> std::io::Result<Self> {
        let out = File::options().create(true).append(true).open(&log)?;
        let err = out.try_clone()?;
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()?;
        tracing::debug!(peer = name, pid = child.id(), log = %log.display(), "started peer");
        Ok(Self { name, child, log })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// `Some(status)` once the process has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines of the log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Kills the process (SIGKILL: the cluster is disposable) and reaps it.
    pub fn stop(&mut self) {
        if self.exit_status().is_none()
            && let Err(error) = self.child.kill()
        {
            tracing::warn!(peer = self.name, %error, "cannot kill peer");
        }
        if let Err(error) = self.child.wait() {
            tracing::warn!(peer = self.name, %error, "cannot reap peer");
        }
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last [`TAIL_LINES`] lines of `path`, reading at most [`TAIL_BYTES`] from its end.
fn log_tail(path: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
        }
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_only_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("peer.log");
        let lines: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
        std::fs::write(&path, lines.join("\n") + "\n").expect("write");
        let tail = log_tail(&path);
        assert!(
            tail.starts_with("line 75\n") && tail.ends_with("line 99"),
            "{tail}"
        );
    }

    #[test]
    fn stop_reaps_the_child() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut peer = PeerProcess::spawn(
            "sleep",
            Path::new("sleep"),
            &["30".to_owned()],
            dir.path().join("sleep.log"),
        )
        .expect("spawn sleep");
        let pid = peer.pid();
        assert!(peer.exit_status().is_none());
        drop(peer);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} still exists"
        );
    }
}
