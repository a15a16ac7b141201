//! Local sites, as the DR drill and the end-to-end tests run them: a real etcd + kube-apiserver
//! on loopback ([`TestCluster`]), a real S3 server ([`s3::S3Server`]), the real Velero server
//! ([`velero::VeleroServer`]), the real Prometheus ([`prometheus`]), the pinned peer binaries
//! they run ([`peers`]), manifest application ([`apply`]) and backups written in Velero's
//! object-store layout ([`fixture`]). The peers are built by the `hack/build-*.sh` scripts; nothing here
//! downloads them.

pub mod apply;
pub mod cluster;
pub mod crds;
pub mod fixture;
pub mod peers;
pub mod pki;
mod process;
pub mod prometheus;
pub mod s3;
pub mod slow_link;
pub mod tls_front;
pub mod velero;

pub use cluster::{PeerInfo, StartError, TestCluster, TestClusterBuilder};
