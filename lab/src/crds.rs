//! The CRDs a local site needs besides Velero's: KubeVirt's VirtualMachine,
//! `VirtualMachineInstance`, instance types and preferences, CDI's `DataVolume`, Multus's
//! `NetworkAttachmentDefinition` and the CSI snapshot API, typed only as far as the
//! drill and the tests use them (our own stand-ins with the real groups, versions and scopes,
//! labelled `replicadr.io/stand-in`, in `tests/crds/`).

/// KubeVirt `VirtualMachine` (kubevirt.io/v1).
pub const VIRTUAL_MACHINES: &str =
    include_str!("../../tests/crds/kubevirt.io_virtualmachines.yaml");
/// KubeVirt `VirtualMachineInstance` (kubevirt.io/v1).
pub const VIRTUAL_MACHINE_INSTANCES: &str =
    include_str!("../../tests/crds/kubevirt.io_virtualmachineinstances.yaml");
/// `VolumeSnapshot`, `VolumeSnapshotContent` and `VolumeSnapshotClass` (snapshot.storage.k8s.io/v1).
pub const VOLUME_SNAPSHOTS: &str = include_str!("../../tests/crds/snapshot.storage.k8s.io.yaml");

/// CDI `DataVolume` (cdi.kubevirt.io/v1beta1).
pub const DATA_VOLUMES: &str = include_str!("../../tests/crds/cdi.kubevirt.io_datavolumes.yaml");

/// KubeVirt's instance types and preferences, namespaced and cluster-wide
/// (instancetype.kubevirt.io/v1beta1).
pub const INSTANCE_TYPES: &str = include_str!("../../tests/crds/instancetype.kubevirt.io.yaml");

/// Multus `NetworkAttachmentDefinition` (k8s.cni.cncf.io/v1).
pub const NETWORK_ATTACHMENT_DEFINITIONS: &str =
    include_str!("../../tests/crds/k8s.cni.cncf.io_network-attachment-definitions.yaml");

/// All of them, in the order they are applied.
pub const WORKLOAD: [&str; 6] = [
    VIRTUAL_MACHINES,
    VIRTUAL_MACHINE_INSTANCES,
    INSTANCE_TYPES,
    DATA_VOLUMES,
    NETWORK_ATTACHMENT_DEFINITIONS,
    VOLUME_SNAPSHOTS,
];
