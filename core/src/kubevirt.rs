//! What KubeVirt and CDI do with the objects a metadata-only restore brings back, as predicates
//! over backed-up objects: which are never restored (a VM's VMI, launcher and hotplug pods),
//! which claims CDI would write into or adopt, and which other objects a VM needs to start
//! ([`vm_references`]). The backup and restore actions, verification and `replicadr plan` decide
//! with these, so they agree. The upstream behaviour each follows is named on it.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::wire::{
    ANNOTATION_CDI_IMPORT_ENDPOINT, ANNOTATION_CDI_IMPORT_SOURCE, ANNOTATION_CDI_POD_PHASE,
    ANNOTATION_CDI_POPULATED_FOR, ANNOTATION_KVP_IN_PROGRESS, ANNOTATION_KVP_VMI_OWNED,
    LABEL_KUBEVIRT, annotation_pointer, label_pointer,
};

/// The values of [`LABEL_KUBEVIRT`] on the pods KubeVirt makes for a running VMI.
const KUBEVIRT_POD_ROLES: [&str; 2] = ["virt-launcher", "hotplug-disk"];

fn annotation<'v>(object: &'v Value, key: &str) -> Option<&'v str> {
    object
        .pointer(&annotation_pointer(key))
        .and_then(Value::as_str)
}

/// The name of the owner of `kind` in `object`'s ownerReferences, as backed up.
pub fn owner_of_kind<'v>(object: &'v Value, kind: &str) -> Option<&'v str> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|owner| owner.get("kind").and_then(Value::as_str) == Some(kind))
        .and_then(|owner| owner.get("name").and_then(Value::as_str))
}

/// A pod KubeVirt makes for a VMI (`kubevirt.io: virt-launcher` or `hotplug-disk`): KubeVirt makes
/// it again when the VM starts; restored, it is an orphan a real cluster schedules, mounting the
/// claims before anyone promoted the export (virt-controller neither adopts nor deletes it).
pub fn is_kubevirt_pod(pod: &Value) -> Option<&str> {
    pod.pointer(&label_pointer(LABEL_KUBEVIRT))
        .and_then(Value::as_str)
        .filter(|role| KUBEVIRT_POD_ROLES.contains(role))
}

/// A VMI a VM owned (its ownerReferences, or kubevirt-velero-plugin's `isOwned` mark): restored
/// without its owner, virt-controller would boot it, racing the halted VM that deletes it. The
/// VM's own name when known.
pub fn vm_owning_vmi(vmi: &Value) -> Option<&str> {
    owner_of_kind(vmi, "VirtualMachine").or_else(|| {
        (annotation(vmi, ANNOTATION_KVP_VMI_OWNED) == Some("true"))
            .then(|| vmi.pointer("/metadata/name").and_then(Value::as_str))
            .flatten()
    })
}

/// Why the restore must not bring a claim back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimHazard {
    /// Marked at backup (by kubevirt-velero-plugin or `replicadr.io/kubevirt-backup`): its
    /// `DataVolume` (named) had not succeeded.
    MarkedInProgress(String),
    /// It carries CDI import annotations and its import had not completed when backed up: CDI's
    /// import controller (`shouldReconcilePVC`: an endpoint or source annotation, and no pod phase
    /// `Succeeded`) would start an importer writing into the replicated disk.
    ImportUnfinished {
        /// The pod phase recorded, if any.
        pod_phase: Option<String>,
    },
}

impl ClaimHazard {
    /// What it means, for a message about the claim.
    pub fn explain(&self) -> String {
        match self {
            ClaimHazard::MarkedInProgress(data_volume) => format!(
                "it is marked {ANNOTATION_KVP_IN_PROGRESS}={data_volume} (kubevirt-velero-plugin's mark, which replicadr.io/kubevirt-backup writes too): DataVolume {data_volume} had not succeeded when it was backed up, so the claim's disk was not complete"
            ),
            ClaimHazard::ImportUnfinished { pod_phase } => format!(
                "its CDI import had not completed when it was backed up ({ANNOTATION_CDI_POD_PHASE} is {}), and CDI starts an importer on such a claim that would write into the replicated disk",
                pod_phase
                    .as_deref()
                    .map_or_else(|| "not set".to_owned(), |p| format!("{p:?}"))
            ),
        }
    }
}

/// Whether restoring `claim` (as backed up) would let CDI write into its volume.
pub fn claim_hazard(claim: &Value) -> Option<ClaimHazard> {
    if let Some(data_volume) = annotation(claim, ANNOTATION_KVP_IN_PROGRESS) {
        return Some(ClaimHazard::MarkedInProgress(data_volume.to_owned()));
    }
    let imports = [ANNOTATION_CDI_IMPORT_ENDPOINT, ANNOTATION_CDI_IMPORT_SOURCE]
        .iter()
        .any(|key| annotation(claim, key).is_some());
    let pod_phase = annotation(claim, ANNOTATION_CDI_POD_PHASE);
    (imports && pod_phase != Some("Succeeded")).then(|| ClaimHazard::ImportUnfinished {
        pod_phase: pod_phase.map(str::to_owned),
    })
}

/// The `DataVolume` a claim holds the data of, so CDI adopts it at the other site: the one it
/// already says ([`ANNOTATION_CDI_POPULATED_FOR`]), else the `DataVolume` that owned it.
pub fn populated_for(claim: &Value) -> Option<&str> {
    annotation(claim, ANNOTATION_CDI_POPULATED_FOR).or_else(|| owner_of_kind(claim, "DataVolume"))
}

/// A kind of object a VM names and needs to start, besides its disks' claims (those are
/// [`crate::contents::vm_claims`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ReferencedKind {
    Secret,
    ConfigMap,
    ServiceAccount,
    /// The stored revision of an instance type or preference (`spec.*.revisionName`).
    ControllerRevision,
    VirtualMachineInstancetype,
    VirtualMachineClusterInstancetype,
    VirtualMachinePreference,
    VirtualMachineClusterPreference,
    NetworkAttachmentDefinition,
    /// The VM's `priorityClassName`: the virt-launcher pod is refused without it.
    PriorityClass,
}

impl ReferencedKind {
    /// Every kind.
    pub const ALL: [ReferencedKind; 10] = [
        ReferencedKind::Secret,
        ReferencedKind::ConfigMap,
        ReferencedKind::ServiceAccount,
        ReferencedKind::ControllerRevision,
        ReferencedKind::VirtualMachineInstancetype,
        ReferencedKind::VirtualMachineClusterInstancetype,
        ReferencedKind::VirtualMachinePreference,
        ReferencedKind::VirtualMachineClusterPreference,
        ReferencedKind::NetworkAttachmentDefinition,
        ReferencedKind::PriorityClass,
    ];

    /// The API group, empty for the core group.
    pub fn group(self) -> &'static str {
        match self {
            Self::Secret | Self::ConfigMap | Self::ServiceAccount => "",
            Self::ControllerRevision => "apps",
            Self::VirtualMachineInstancetype
            | Self::VirtualMachineClusterInstancetype
            | Self::VirtualMachinePreference
            | Self::VirtualMachineClusterPreference => "instancetype.kubevirt.io",
            Self::NetworkAttachmentDefinition => "k8s.cni.cncf.io",
            Self::PriorityClass => "scheduling.k8s.io",
        }
    }

    /// The version read and written: the one every supported release serves.
    pub fn version(self) -> &'static str {
        match self {
            Self::VirtualMachineInstancetype
            | Self::VirtualMachineClusterInstancetype
            | Self::VirtualMachinePreference
            | Self::VirtualMachineClusterPreference => "v1beta1",
            _ => "v1",
        }
    }

    /// The kind, as in `kind:`.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Secret => "Secret",
            Self::ConfigMap => "ConfigMap",
            Self::ServiceAccount => "ServiceAccount",
            Self::ControllerRevision => "ControllerRevision",
            Self::VirtualMachineInstancetype => "VirtualMachineInstancetype",
            Self::VirtualMachineClusterInstancetype => "VirtualMachineClusterInstancetype",
            Self::VirtualMachinePreference => "VirtualMachinePreference",
            Self::VirtualMachineClusterPreference => "VirtualMachineClusterPreference",
            Self::NetworkAttachmentDefinition => "NetworkAttachmentDefinition",
            Self::PriorityClass => "PriorityClass",
        }
    }

    /// The plural resource name.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Secret => "secrets",
            Self::ConfigMap => "configmaps",
            Self::ServiceAccount => "serviceaccounts",
            Self::ControllerRevision => "controllerrevisions",
            Self::VirtualMachineInstancetype => "virtualmachineinstancetypes",
            Self::VirtualMachineClusterInstancetype => "virtualmachineclusterinstancetypes",
            Self::VirtualMachinePreference => "virtualmachinepreferences",
            Self::VirtualMachineClusterPreference => "virtualmachineclusterpreferences",
            Self::NetworkAttachmentDefinition => "network-attachment-definitions",
            Self::PriorityClass => "priorityclasses",
        }
    }

    /// `group/version`, or `version` for the core group, as in `apiVersion:`.
    pub fn api_version(self) -> String {
        match self.group() {
            "" => self.version().to_owned(),
            group => format!("{group}/{}", self.version()),
        }
    }

    /// Whether a cluster serves the kind only once its CRD is installed (KubeVirt's instance
    /// types, Multus's networks); the core and `apps` kinds are always served.
    pub fn needs_crd(self) -> bool {
        !matches!(self.group(), "" | "apps" | "scheduling.k8s.io")
    }

    /// Whether its objects live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(
            self,
            Self::VirtualMachineClusterInstancetype
                | Self::VirtualMachineClusterPreference
                | Self::PriorityClass
        )
    }

    /// Velero's tarball directory of the kind (`<plural>` or `<plural>.<group>`), as
    /// [`crate::tarball::ItemPath::group_resource`] reads it.
    pub fn group_resource(self) -> String {
        match self.group() {
            "" => self.plural().to_owned(),
            group => format!("{}.{group}", self.plural()),
        }
    }

    /// The kind whose tarball directory is `group_resource`.
    pub fn from_group_resource(group_resource: &str) -> Option<Self> {
        let (plural, group) = group_resource
            .split_once('.')
            .unwrap_or((group_resource, ""));
        Self::ALL
            .into_iter()
            .find(|kind| kind.plural() == plural && kind.group() == group)
    }

    /// What KubeVirt does with a VM whose reference of this kind is absent (read from KubeVirt's
    /// virt-controller: the instance type lookups, the VMI's network and volume rendering).
    pub fn without_it(self) -> &'static str {
        match self {
            Self::Secret | Self::ConfigMap | Self::ServiceAccount => {
                "KubeVirt creates the VM's virt-launcher pod with it as a volume, and the pod never starts"
            }
            Self::ControllerRevision
            | Self::VirtualMachineInstancetype
            | Self::VirtualMachineClusterInstancetype => {
                "KubeVirt cannot find the VM's instance type (FailedFindInstancetype) and neither starts the VM nor creates its DataVolumes"
            }
            Self::VirtualMachinePreference | Self::VirtualMachineClusterPreference => {
                "KubeVirt cannot find the VM's preference (FailedFindPreference) and neither starts the VM nor creates its DataVolumes"
            }
            Self::NetworkAttachmentDefinition => {
                "KubeVirt cannot create the VM's virt-launcher pod (FailedCreate, Synchronized=False), so the VM never runs"
            }
            Self::PriorityClass => {
                "the API server's Priority admission refuses the VM's virt-launcher pod (no PriorityClass of that name), so the VM never runs"
            }
        }
    }
}

impl fmt::Display for ReferencedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

/// One object a VM names and needs to start.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct VmReference {
    pub kind: ReferencedKind,
    /// Empty for a cluster-wide kind.
    pub namespace: String,
    pub name: String,
    /// The field of the VM that names it, for a person: `spec.instancetype`,
    /// `volume cloudinit (cloudInitNoCloud.secretRef)`.
    pub field: String,
}

impl VmReference {
    /// Its [`crate::contents::reference_key`].
    pub fn key(&self) -> String {
        crate::contents::reference_key(self.kind, &self.namespace, &self.name)
    }

    /// `Kind namespace/name`, or `Kind name` for a cluster-wide kind.
    pub fn object(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// The pointers, under a VM volume, that name a Secret, `ConfigMap` or `ServiceAccount` (KubeVirt's
/// `Volume` sources: cloud-init `NoCloud` and `ConfigDrive` user and network data, `secret`,
/// `configMap`, `sysprep` and `serviceAccount`). A `containerDisk`'s `imagePullSecret` is not
/// among them: the kubelet pulls without a pull Secret that is missing (only a private registry
/// then refuses), so its absence does not stop a VM for certain.
const VOLUME_SOURCES: [(&str, ReferencedKind); 8] = [
    ("/cloudInitNoCloud/secretRef/name", ReferencedKind::Secret),
    (
        "/cloudInitNoCloud/networkDataSecretRef/name",
        ReferencedKind::Secret,
    ),
    (
        "/cloudInitConfigDrive/secretRef/name",
        ReferencedKind::Secret,
    ),
    (
        "/cloudInitConfigDrive/networkDataSecretRef/name",
        ReferencedKind::Secret,
    ),
    ("/secret/secretName", ReferencedKind::Secret),
    ("/configMap/name", ReferencedKind::ConfigMap),
    ("/sysprep/secret/name", ReferencedKind::Secret),
    ("/sysprep/configMap/name", ReferencedKind::ConfigMap),
];

/// The pointers, under an access credential, that name a Secret.
const CREDENTIAL_SOURCES: [&str; 2] = [
    "/sshPublicKey/source/secret/secretName",
    "/userPassword/source/secret/secretName",
];

/// The kind `spec.instancetype.kind` (or `spec.preference.kind`) means, as KubeVirt reads it:
/// case-insensitive, singular or plural, and the cluster-wide kind when empty. `None` for any
/// other value, which KubeVirt's admission refuses.
fn matcher_kind(
    kind: &str,
    namespaced: ReferencedKind,
    cluster: ReferencedKind,
) -> Option<ReferencedKind> {
    let kind = kind.to_ascii_lowercase();
    let is = |of: ReferencedKind| kind == of.plural() || kind == of.kind().to_ascii_lowercase();
    if kind.is_empty() || is(cluster) {
        Some(cluster)
    } else if is(namespaced) {
        Some(namespaced)
    } else {
        None
    }
}

/// Every object `vm` names and needs to start besides its claims, once each, in the order the
/// VM names them: the Secrets, `ConfigMaps` and `ServiceAccounts` of its volumes and access
/// credentials; its instance type and preference (the `ControllerRevision` of `revisionName` when
/// set, since KubeVirt then reads only that; else the instance type or preference itself); and
/// the `NetworkAttachmentDefinitions` of its Multus networks (`name` in the VM's namespace or
/// `namespace/name`); and its `PriorityClass`.
///
/// A `secret` or `configMap` volume marked `optional: true` is not needed. A restore strips
/// `status`, so only `spec.*.revisionName` names a revision that counts (kubevirt-velero-plugin
/// copies the revision from the VM's status into it at backup).
pub fn vm_references(vm: &Value) -> Vec<VmReference> {
    let namespace = vm
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut found = Found::default();
    volume_and_credential_references(vm, namespace, &mut found);
    let mut add =
        |kind, namespace: &str, name: &str, field| found.add(kind, namespace, name, field);
    for (field, namespaced, cluster) in [
        (
            "instancetype",
            ReferencedKind::VirtualMachineInstancetype,
            ReferencedKind::VirtualMachineClusterInstancetype,
        ),
        (
            "preference",
            ReferencedKind::VirtualMachinePreference,
            ReferencedKind::VirtualMachineClusterPreference,
        ),
    ] {
        let Some(matcher) = vm.pointer(&format!("/spec/{field}")) else {
            continue;
        };
        let text = |key: &str| matcher.get(key).and_then(Value::as_str).unwrap_or_default();
        if !text("revisionName").is_empty() {
            add(
                ReferencedKind::ControllerRevision,
                namespace,
                text("revisionName"),
                format!("spec.{field}.revisionName"),
            );
        } else if let Some(kind) = matcher_kind(text("kind"), namespaced, cluster) {
            add(kind, namespace, text("name"), format!("spec.{field}"));
        }
    }
    if let Some(class) = vm
        .pointer("/spec/template/spec/priorityClassName")
        .and_then(Value::as_str)
    {
        add(
            ReferencedKind::PriorityClass,
            "",
            class,
            "spec.template.spec.priorityClassName".to_owned(),
        );
    }
    for network in array_at(vm, "/spec/template/spec/networks") {
        let Some(target) = network
            .pointer("/multus/networkName")
            .and_then(Value::as_str)
        else {
            continue;
        };
        let network_name = network.get("name").and_then(Value::as_str).unwrap_or("?");
        let (in_namespace, name) = target.split_once('/').unwrap_or((namespace, target));
        add(
            ReferencedKind::NetworkAttachmentDefinition,
            in_namespace,
            name,
            format!("network {network_name} (multus.networkName)"),
        );
    }
    found.0
}

/// The Secrets, `ConfigMaps` and `ServiceAccounts` that `vm`'s volumes and access credentials name.
fn volume_and_credential_references(vm: &Value, namespace: &str, found: &mut Found) {
    for volume in array_at(vm, "/spec/template/spec/volumes") {
        let volume_name = volume.get("name").and_then(Value::as_str).unwrap_or("?");
        for (pointer, kind) in VOLUME_SOURCES {
            let name = volume.pointer(pointer).and_then(Value::as_str);
            if let Some(name) = name.filter(|_| !is_optional(volume, pointer)) {
                let field = pointer.trim_start_matches('/').replace('/', ".");
                found.add(
                    kind,
                    namespace,
                    name,
                    format!("volume {volume_name} ({field})"),
                );
            }
        }
        if let Some(account) = volume
            .pointer("/serviceAccount/serviceAccountName")
            .and_then(Value::as_str)
        {
            found.add(
                ReferencedKind::ServiceAccount,
                namespace,
                account,
                format!("volume {volume_name} (serviceAccount)"),
            );
        }
    }
    for (index, credential) in array_at(vm, "/spec/template/spec/accessCredentials")
        .iter()
        .enumerate()
    {
        for pointer in CREDENTIAL_SOURCES {
            if let Some(name) = credential.pointer(pointer).and_then(Value::as_str) {
                let source = pointer.split('/').nth(1).unwrap_or_default();
                found.add(
                    ReferencedKind::Secret,
                    namespace,
                    name,
                    format!("accessCredentials[{index}] ({source})"),
                );
            }
        }
    }
}

/// The array at `pointer` in `vm`, empty when absent.
fn array_at<'a>(vm: &'a Value, pointer: &str) -> &'a [Value] {
    vm.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Whether the volume source `pointer` starts in is marked `optional: true`.
fn is_optional(volume: &Value, pointer: &str) -> bool {
    let source = pointer.split('/').nth(1).unwrap_or_default();
    volume
        .pointer(&format!("/{source}/optional"))
        .and_then(Value::as_bool)
        == Some(true)
}

/// The objects `vm` needs that live in its own namespace: those a backup of the namespace holds
/// unless its filters leave them out. Verification, which sees only the backup, checks these;
/// a cluster-wide instance type or preference, or a network definition of another namespace, is
/// checked by `replicadr plan` at the restoring site, where it may already be installed.
pub fn vm_references_in_its_namespace(vm: &Value) -> Vec<VmReference> {
    let namespace = vm
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut references = vm_references(vm);
    references.retain(|r| r.kind.namespaced() && r.namespace == namespace);
    references
}

/// The references found so far, each once.
#[derive(Default)]
struct Found(Vec<VmReference>);

impl Found {
    fn add(&mut self, kind: ReferencedKind, namespace: &str, name: &str, field: String) {
        let namespace = if kind.namespaced() { namespace } else { "" };
        let seen = self
            .0
            .iter()
            .any(|r| r.kind == kind && r.namespace == namespace && r.name == name);
        if name.is_empty() || seen {
            return;
        }
        self.0.push(VmReference {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            field,
        });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_import_is_a_hazard_until_its_pod_succeeded() {
        let mut claim = json!({"metadata": {"name": "root", "annotations": {
            ANNOTATION_CDI_IMPORT_ENDPOINT: "https://images.example.com/disk.qcow2"}}});
        assert_eq!(
            claim_hazard(&claim),
            Some(ClaimHazard::ImportUnfinished { pod_phase: None })
        );
        claim["metadata"]["annotations"][ANNOTATION_CDI_POD_PHASE] = json!("Running");
        assert!(claim_hazard(&claim).is_some_and(|h| h.explain().contains("\"Running\"")));
        claim["metadata"]["annotations"][ANNOTATION_CDI_POD_PHASE] = json!("Succeeded");
        assert_eq!(claim_hazard(&claim), None);
        claim["metadata"]["annotations"][ANNOTATION_KVP_IN_PROGRESS] = json!("root");
        assert_eq!(
            claim_hazard(&claim),
            Some(ClaimHazard::MarkedInProgress("root".to_owned())),
            "kubevirt-velero-plugin's mark wins"
        );
        let plain = json!({"metadata": {"name": "data"}});
        assert_eq!(claim_hazard(&plain), None);
    }

    #[test]
    fn launcher_pods_and_owned_vmis_are_recognised() {
        let launcher = json!({"metadata": {"labels": {LABEL_KUBEVIRT: "virt-launcher"}}});
        assert_eq!(is_kubevirt_pod(&launcher), Some("virt-launcher"));
        let app = json!({"metadata": {"labels": {"app": "web"}}});
        assert_eq!(is_kubevirt_pod(&app), None);
        let owned = json!({"metadata": {"name": "db", "ownerReferences": [
            {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "db", "uid": "u"}]}});
        assert_eq!(vm_owning_vmi(&owned), Some("db"));
        let marked =
            json!({"metadata": {"name": "db", "annotations": {ANNOTATION_KVP_VMI_OWNED: "true"}}});
        assert_eq!(vm_owning_vmi(&marked), Some("db"));
        let standalone = json!({"metadata": {"name": "lone"}});
        assert_eq!(vm_owning_vmi(&standalone), None);
    }

    #[test]
    fn a_vm_names_its_secrets_instance_type_preference_and_networks() {
        let vm = json!({
            "metadata": {"namespace": "shop", "name": "db"},
            "spec": {
                "instancetype": {"name": "db-large", "kind": "VirtualMachineInstancetype"},
                "preference": {"name": "rhel", "revisionName": "db-rhel-v1"},
                "template": {"spec": {
                    "volumes": [
                        {"name": "root", "dataVolume": {"name": "db-root"}},
                        {"name": "cloudinit", "cloudInitNoCloud": {
                            "secretRef": {"name": "db-init"},
                            "networkDataSecretRef": {"name": "db-net"}}},
                        {"name": "again", "secret": {"secretName": "db-init"}},
                        {"name": "maybe", "configMap": {"name": "tuning", "optional": true}},
                        {"name": "answers", "sysprep": {"configMap": {"name": "unattend"}}},
                        {"name": "sa", "serviceAccount": {"serviceAccountName": "db-sa"}},
                        {"name": "tools", "containerDisk": {"image": "registry.example.com/tools", "imagePullSecret": "pull"}},
                    ],
                    "domain": {"firmware": {"kernelBoot": {"container": {"image": "k", "imagePullSecret": "pull-kernel"}}}},
                    "priorityClassName": "vm-critical",
                    "accessCredentials": [
                        {"sshPublicKey": {"source": {"secret": {"secretName": "keys"}}}}],
                    "networks": [
                        {"name": "default", "pod": {}},
                        {"name": "storage", "multus": {"networkName": "storage-net"}},
                        {"name": "backup", "multus": {"networkName": "infra/backup-net"}},
                    ],
                }},
            },
        });
        let found: Vec<String> = vm_references(&vm).iter().map(VmReference::object).collect();
        assert_eq!(
            found,
            [
                "Secret shop/db-init",
                "Secret shop/db-net",
                "ConfigMap shop/unattend",
                "ServiceAccount shop/db-sa",
                "Secret shop/keys",
                "VirtualMachineInstancetype shop/db-large",
                "ControllerRevision shop/db-rhel-v1",
                "PriorityClass vm-critical",
                "NetworkAttachmentDefinition shop/storage-net",
                "NetworkAttachmentDefinition infra/backup-net",
            ],
            "once each, in order; a revision stands for its preference"
        );
        let local: Vec<String> = vm_references_in_its_namespace(&vm)
            .iter()
            .map(VmReference::object)
            .collect();
        assert_eq!(local.len(), found.len() - 2, "{local:?}");
        assert!(
            !found.iter().any(|r| r.contains("pull")),
            "a missing pull Secret does not stop a VM for certain: {found:?}"
        );
        assert!(
            !local.iter().any(|r| r.starts_with("PriorityClass")),
            "{local:?}"
        );
        assert!(!local.iter().any(|r| r.contains("infra/")), "{local:?}");
        let first = &vm_references(&vm)[0];
        assert_eq!(
            first.field,
            "volume cloudinit (cloudInitNoCloud.secretRef.name)"
        );
    }

    #[test]
    fn an_instance_type_kind_is_read_as_kubevirt_reads_it() {
        let with = |kind: &str| {
            let vm = json!({"metadata": {"namespace": "ns"},
                "spec": {"instancetype": {"name": "u1.medium", "kind": kind}}});
            vm_references(&vm).first().map(VmReference::object)
        };
        assert_eq!(
            with("").as_deref(),
            Some("VirtualMachineClusterInstancetype u1.medium")
        );
        assert_eq!(
            with("virtualmachineinstancetypes").as_deref(),
            Some("VirtualMachineInstancetype ns/u1.medium")
        );
        assert_eq!(
            with("VirtualMachineClusterInstancetype").as_deref(),
            Some("VirtualMachineClusterInstancetype u1.medium")
        );
        assert_eq!(with("Deployment"), None, "admission refuses any other kind");
    }

    #[test]
    fn each_kind_is_found_by_its_tarball_directory() {
        for kind in ReferencedKind::ALL {
            assert_eq!(
                ReferencedKind::from_group_resource(&kind.group_resource()),
                Some(kind)
            );
        }
        assert_eq!(
            ReferencedKind::ControllerRevision.group_resource(),
            "controllerrevisions.apps"
        );
        assert_eq!(
            ReferencedKind::from_group_resource("network-attachment-definitions.k8s.cni.cncf.io"),
            Some(ReferencedKind::NetworkAttachmentDefinition)
        );
        assert_eq!(ReferencedKind::from_group_resource("pods"), None);
    }

    #[test]
    fn a_claim_is_populated_for_its_annotation_or_its_owner() {
        let owned = json!({"metadata": {"ownerReferences": [
            {"kind": "DataVolume", "name": "db-root", "uid": "u"}]}});
        assert_eq!(populated_for(&owned), Some("db-root"));
        let annotated = json!({"metadata": {"annotations": {ANNOTATION_CDI_POPULATED_FOR: "dv"}}});
        assert_eq!(populated_for(&annotated), Some("dv"));
        assert_eq!(populated_for(&json!({"metadata": {}})), None);
    }
}
