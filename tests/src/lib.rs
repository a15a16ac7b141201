//! End-to-end support for the project's tests. The local-site harness (real etcd +
//! kube-apiserver, S3 server and Velero) lives in `replicadr-lab`, shared with the drill, and is
//! re-exported here; this crate adds what only tests need: [`backup_env`], [`lab_cli`], [`plugin`],
//! [`scheduler_process`] and [`workspace`].

pub mod backup_env;
pub mod lab_cli;
pub mod plugin;
pub mod scheduler_process;
pub mod workspace;

pub use replicadr_lab::{
    PeerInfo, StartError, TestCluster, TestClusterBuilder, apply, cluster, crds, peers, pki, s3,
    velero,
};
