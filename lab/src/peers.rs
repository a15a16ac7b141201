//! Where the real test peers live: the versions pinned in `hack/versions.env` and the cache layout
//! `hack/lib.sh` builds them into, each overridable by an environment variable.

use std::path::{Path, PathBuf};

/// `hack/versions.env`, compiled in so a test binary always looks for the peers it was built against.
const VERSIONS_ENV: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../hack/versions.env"));

/// The script that builds the peers this module locates.
pub const BUILD_SCRIPT: &str = "hack/build-kube-peers.sh";

/// A binary the harness runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// `kube-apiserver`, built from `k8s.io/kubernetes`.
    KubeApiserver,
    /// `etcd`, built from `go.etcd.io/etcd/server/v3`.
    Etcd,
}

/// Why a peer binary cannot be located.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("hack/versions.env does not pin {key}")]
    VersionNotPinned { key: &'static str },
    #[error("cannot locate the peer cache: neither REPLICADR_CACHE nor HOME is set")]
    NoCacheDir,
    #[error(
        "{peer} not found at {path}: run `bash {BUILD_SCRIPT}` to build it, or set {var} to a built binary",
        path = .path.display()
    )]
    Missing {
        peer: &'static str,
        path: PathBuf,
        var: &'static str,
    },
}

impl Peer {
    /// The binary's file name, also used to name its log.
    pub fn name(self) -> &'static str {
        match self {
            Peer::KubeApiserver => "kube-apiserver",
            Peer::Etcd => "etcd",
        }
    }

    /// The environment variable that points the harness at another binary.
    pub fn override_var(self) -> &'static str {
        match self {
            Peer::KubeApiserver => "REPLICADR_KUBE_APISERVER",
            Peer::Etcd => "REPLICADR_ETCD",
        }
    }

    fn version_key(self) -> &'static str {
        match self {
            Peer::KubeApiserver => "KUBE_VERSION",
            Peer::Etcd => "ETCD_VERSION",
        }
    }

    /// The version `hack/versions.env` pins for this peer.
    pub fn pinned_version(self) -> Result<&'static str, PeerError> {
        let key = self.version_key();
        pinned(VERSIONS_ENV, key).ok_or(PeerError::VersionNotPinned { key })
    }

    /// Where `hack/build-kube-peers.sh` puts this peer under `cache`
    /// (mirrors `kube_apiserver_bin` / `etcd_bin` in `hack/lib.sh`).
    pub fn cached_path(self, cache: &Path) -> Result<PathBuf, PeerError> {
        let version = self.pinned_version()?;
        Ok(cache
            .join(format!("{}-{version}", self.name()))
            .join(self.name()))
    }

    /// The binary to run: `$REPLICADR_KUBE_APISERVER` / `$REPLICADR_ETCD` if set, else the cached build.
    /// Fails, naming the path, when the file is not there: the harness never skips silently.
    pub fn locate(self) -> Result<PathBuf, PeerError> {
        let path = match std::env::var_os(self.override_var()) {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => self.cached_path(&cache_dir()?)?,
        };
        self.check(path)
    }

    /// Accepts `path` if it is a file, or says where the binary was expected and how to build it.
    pub fn check(self, path: PathBuf) -> Result<PathBuf, PeerError> {
        if path.is_file() {
            Ok(path)
        } else {
            Err(PeerError::Missing {
                peer: self.name(),
                path,
                var: self.override_var(),
            })
        }
    }
}

/// `$REPLICADR_CACHE`, defaulting to `$HOME/.cache/replicadr` as in `hack/lib.sh`.
pub fn cache_dir() -> Result<PathBuf, PeerError> {
    let non_empty = |var| std::env::var_os(var).filter(|value| !value.is_empty());
    if let Some(cache) = non_empty("REPLICADR_CACHE") {
        return Ok(PathBuf::from(cache));
    }
    non_empty("HOME")
        .map(|home| PathBuf::from(home).join(".cache").join("replicadr"))
        .ok_or(PeerError::NoCacheDir)
}

/// The value `hack/versions.env` pins for `key`: the one reader of that file for every peer.
pub fn pinned_value(key: &str) -> Option<&'static str> {
    pinned(VERSIONS_ENV, key)
}

/// [`pinned_value`], or an error naming the key.
pub fn require_pinned(key: &str) -> anyhow::Result<&'static str> {
    pinned_value(key).ok_or_else(|| anyhow::anyhow!("hack/versions.env does not pin {key}"))
}

/// The value of `key` in a shell-style `KEY=value` file, without surrounding quotes.
fn pinned<'a>(env_file: &'a str, key: &str) -> Option<&'a str> {
    env_file.lines().find_map(|line| {
        let (name, value) = line.trim().split_once('=')?;
        (name == key).then(|| value.trim().trim_matches(|c| c == '"' || c == '\''))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_values_and_ignores_comments_and_quotes() {
        let file = "# KUBE_VERSION=v0\nKUBE_VERSION=v1.34.4\nLIST=\"a b\"\n";
        assert_eq!(pinned(file, "KUBE_VERSION"), Some("v1.34.4"));
        assert_eq!(pinned(file, "LIST"), Some("a b"));
        assert_eq!(pinned(file, "ETCD_VERSION"), None);
    }

    #[test]
    fn cache_layout_matches_hack_lib() {
        let kube = Peer::KubeApiserver.pinned_version().expect("pinned");
        let etcd = Peer::Etcd.pinned_version().expect("pinned");
        assert!(
            kube.starts_with("v1.") && etcd.starts_with("v3."),
            "{kube} {etcd}"
        );
        let cache = Path::new("/cache");
        assert_eq!(
            Peer::KubeApiserver.cached_path(cache).expect("path"),
            Path::new(&format!("/cache/kube-apiserver-{kube}/kube-apiserver"))
        );
        assert_eq!(
            Peer::Etcd.cached_path(cache).expect("path"),
            Path::new(&format!("/cache/etcd-{etcd}/etcd"))
        );
    }

    #[test]
    fn missing_binary_names_path_script_and_variable() {
        let error = Peer::Etcd
            .check(PathBuf::from("/nowhere/etcd"))
            .expect_err("missing");
        let message = error.to_string();
        for needle in ["/nowhere/etcd", BUILD_SCRIPT, "REPLICADR_ETCD"] {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
    }
}
