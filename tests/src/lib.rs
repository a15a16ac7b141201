//! End-to-end support for the project's tests: a real etcd + kube-apiserver on loopback
//! ([`TestCluster`]), the pinned peer binaries it runs ([`peers`]) and manifest application
//! ([`apply`]). The peers are built by `hack/build-kube-peers.sh`; nothing here downloads them.

pub mod apply;
pub mod backup_env;
pub mod cluster;
pub mod peers;
pub mod pki;
pub mod plugin;
mod process;
pub mod s3;
pub mod velero;
pub mod workspace;

pub use cluster::{PeerInfo, StartError, TestCluster, TestClusterBuilder};
