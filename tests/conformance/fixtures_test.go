package conformance

import (
	"encoding/json"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	velerov1api "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
)

const (
	siteRemapPlugin    = "replicadr.io/pv-site-remap"
	siteRemapConfigMap = "replicadr-pv-site-remap"
)

// siteMapYAML is the site map the pv-site-remap tests restore with: this cluster is the dr site.
const siteMapYAML = `sites: [primary, dr]
exports:
  - name: vm-disks
    primary: {server: nfs-a.example.com, path: /exports/vms}
    dr:      {server: 10.20.0.5,         path: /replica/vms}
  - name: scratch
    primary: {server: nfs-a.example.com, path: /scratch}
    dr:      {server: nfs-b.example.com, path: /scratch}
unmapped: fail
`

// siteRemapConfig is the plugin ConfigMap, found by Velero's plugin-config label convention.
func siteRemapConfig(namespace, localSite string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name:      siteRemapConfigMap,
			Namespace: namespace,
			Labels: map[string]string{
				"velero.io/plugin-config": "",
				siteRemapPlugin:           "RestoreItemAction",
			},
		},
		Data: map[string]string{
			"localSite": localSite,
			"siteMap":   siteMapYAML,
		},
	}
}

const (
	snapshotToPVCPlugin = "replicadr.io/snapshot-to-pvc"
	pvRetainPlugin      = "replicadr.io/pv-retain"
	pluginsConfigMap    = "replicadr-plugins"
	// vmNamespace is the namespace backed up, with the VM disk, its VolumeSnapshot and the replica.
	vmNamespace = "vms"
)

// pluginsConfig is the one ConfigMap configuring all three actions, as the README installs it: each action finds it
// by its own `<plugin name>: <kind>` label and reads the keys it knows. Only one ConfigMap may carry a plugin's label,
// so it must not coexist with siteRemapConfig.
func pluginsConfig(namespace, localSite string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name:      pluginsConfigMap,
			Namespace: namespace,
			Labels: map[string]string{
				"velero.io/plugin-config": "",
				snapshotToPVCPlugin:       "BackupItemActionV2",
				pvRetainPlugin:            "BackupItemAction",
				siteRemapPlugin:           "RestoreItemAction",
			},
		},
		Data: map[string]string{
			"localSite": localSite,
			"siteMap":   siteMapYAML,
		},
	}
}

// testBackup is the Backup handed to the backup item actions, in the phase Velero has when it calls them: Execute
// while items are backed up (InProgress), Progress from the backup-operations controller (WaitingForPluginOperations).
func testBackup(namespace, name string, phase velerov1api.BackupPhase) *velerov1api.Backup {
	started := metav1.NewTime(time.Now().Add(-time.Minute).Truncate(time.Second))
	return &velerov1api.Backup{
		TypeMeta: metav1.TypeMeta{APIVersion: "velero.io/v1", Kind: "Backup"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace,
			Name:      name,
			UID:       "9d3c1a7e-4b2f-4e8a-b6d1-7f0e2c5a8b34",
			Labels:    map[string]string{"velero.io/storage-location": "default"},
		},
		Spec: velerov1api.BackupSpec{
			IncludedNamespaces: []string{vmNamespace},
			StorageLocation:    "default",
			TTL:                metav1.Duration{Duration: 720 * time.Hour},
		},
		Status: velerov1api.BackupStatus{
			Phase:          phase,
			FormatVersion:  "1.1.0",
			StartTimestamp: &started,
		},
	}
}

// replicatedNFSClass is the class of the VM disks: csi-driver-nfs on the replicated vm-disks export, binding at once
// (the replica of a snapshot must bind without a pod using it).
func replicatedNFSClass() *storagev1.StorageClass {
	immediate := storagev1.VolumeBindingImmediate
	reclaimDelete := corev1.PersistentVolumeReclaimDelete
	return &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: "replicated-nfs"},
		Provisioner:       "nfs.csi.k8s.io",
		Parameters:        map[string]string{"server": "nfs-a.example.com", "share": "/exports/vms"},
		ReclaimPolicy:     &reclaimDelete,
		VolumeBindingMode: &immediate,
		MountOptions:      []string{"nfsvers=4.1"},
	}
}

// vmDiskPVC is the source of the VolumeSnapshot: a VM disk on replicatedNFSClass.
func vmDiskPVC(namespace string) *corev1.PersistentVolumeClaim {
	class := "replicated-nfs"
	filesystem := corev1.PersistentVolumeFilesystem
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "disk-1", Namespace: namespace},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			VolumeMode:       &filesystem,
			StorageClassName: &class,
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("4Gi")},
			},
		},
	}
}

// testRestore is the Restore handed to Execute, as the restore controller has it.
func testRestore(namespace string) *velerov1api.Restore {
	return &velerov1api.Restore{
		TypeMeta: metav1.TypeMeta{APIVersion: "velero.io/v1", Kind: "Restore"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace,
			Name:      "dr-failover-20261122",
			UID:       "5c0e2f4e-8d7b-4bb4-9a57-2d1f0c6f0b11",
		},
		Spec: velerov1api.RestoreSpec{
			BackupName:         "vms-20261122020000",
			IncludedNamespaces: []string{"*"},
		},
		Status: velerov1api.RestoreStatus{Phase: velerov1api.RestorePhaseInProgress},
	}
}

// PersistentVolume JSON as the restore hands it to item actions: metadata already reset (no uid, resourceVersion,
// creationTimestamp), no status. Each carries fields the plugin has no business touching, including ones no
// Kubernetes schema knows, to prove the rewrite is field-preserving.

const inTreeNFSPV = `{
  "apiVersion": "v1",
  "kind": "PersistentVolume",
  "metadata": {
    "name": "vm-disk-1",
    "labels": {"app.kubernetes.io/part-of": "vms", "velero.io/backup-name": "vms-20261122020000"},
    "annotations": {"pv.kubernetes.io/provisioned-by": "manual", "example.com/owner": "team-a"},
    "finalizers": ["kubernetes.io/pv-protection"]
  },
  "spec": {
    "capacity": {"storage": "20Gi"},
    "accessModes": ["ReadWriteMany"],
    "persistentVolumeReclaimPolicy": "Retain",
    "storageClassName": "nfs-vms",
    "mountOptions": ["nfsvers=4.1", "hard", "timeo=600"],
    "volumeMode": "Filesystem",
    "nfs": {"server": "nfs-a.example.com", "path": "/exports/vms/disk-1", "readOnly": false},
    "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "vms", "name": "disk-1"},
    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
      {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-a", "zone-b"]}]}]}},
    "x-replicadr-future-spec-field": {"kept": true, "n": 7}
  },
  "x-replicadr-unknown-top-level": {"nested": [1, "two", {"three": 3.5}, null], "flag": true}
}`

// csi-driver-nfs (v4) volume handles are server#share-without-slashes#subDir#uuid[#onDelete]; uuid is empty unless
// the StorageClass sets subDir; the volume context repeats server and share (share as written in the StorageClass)
// plus subDir.
const csiNFSScratchPV = `{
  "apiVersion": "v1",
  "kind": "PersistentVolume",
  "metadata": {
    "name": "pvc-1",
    "annotations": {"pv.kubernetes.io/provisioned-by": "nfs.csi.k8s.io",
      "volume.kubernetes.io/provisioner-deletion-secret-name": "",
      "volume.kubernetes.io/provisioner-deletion-secret-namespace": ""},
    "finalizers": ["kubernetes.io/pv-protection", "external-provisioner.volume.kubernetes.io/finalizer"]
  },
  "spec": {
    "capacity": {"storage": "5Gi"},
    "accessModes": ["ReadWriteMany"],
    "persistentVolumeReclaimPolicy": "Retain",
    "storageClassName": "nfs-csi-scratch",
    "mountOptions": ["nfsvers=4.1"],
    "volumeMode": "Filesystem",
    "csi": {
      "driver": "nfs.csi.k8s.io",
      "volumeHandle": "nfs-a.example.com#scratch#pvc-1#",
      "volumeAttributes": {
        "server": "nfs-a.example.com",
        "share": "/scratch",
        "subDir": "pvc-1",
        "csi.storage.k8s.io/pv/name": "pvc-1",
        "csi.storage.k8s.io/pvc/name": "scratch-data",
        "csi.storage.k8s.io/pvc/namespace": "apps",
        "storage.kubernetes.io/csiProvisionerIdentity": "1763800000000-7785-nfs.csi.k8s.io"
      }
    },
    "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "apps", "name": "scratch-data"}
  }
}`

// The vm-disks export changes path between sites, so share and the share part of the handle change too; this
// StorageClass sets subDir, so the handle carries a uuid (the PV name) and the newer onDelete element.
const csiNFSVMDisksPV = `{
  "apiVersion": "v1",
  "kind": "PersistentVolume",
  "metadata": {"name": "pvc-2", "annotations": {"pv.kubernetes.io/provisioned-by": "nfs.csi.k8s.io"}},
  "spec": {
    "capacity": {"storage": "50Gi"},
    "accessModes": ["ReadWriteMany"],
    "persistentVolumeReclaimPolicy": "Retain",
    "storageClassName": "nfs-csi-vms",
    "volumeMode": "Filesystem",
    "csi": {
      "driver": "nfs.csi.k8s.io",
      "volumeHandle": "nfs-a.example.com#exports/vms#apps-disk-2#pvc-2#retain",
      "volumeAttributes": {"server": "nfs-a.example.com", "share": "/exports/vms", "subDir": "apps-disk-2", "onDelete": "retain"}
    },
    "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "apps", "name": "disk-2"}
  }
}`

const drSiteNFSPV = `{
  "apiVersion": "v1",
  "kind": "PersistentVolume",
  "metadata": {"name": "vm-disk-x"},
  "spec": {
    "capacity": {"storage": "1Gi"},
    "accessModes": ["ReadWriteMany"],
    "persistentVolumeReclaimPolicy": "Retain",
    "nfs": {"server": "10.20.0.5", "path": "/replica/vms/x"}
  }
}`

const hostPathPV = `{
  "apiVersion": "v1",
  "kind": "PersistentVolume",
  "metadata": {"name": "local-cache", "labels": {"type": "local"}},
  "spec": {
    "capacity": {"storage": "1Gi"},
    "accessModes": ["ReadWriteOnce"],
    "persistentVolumeReclaimPolicy": "Retain",
    "storageClassName": "manual",
    "hostPath": {"path": "/mnt/data", "type": "DirectoryOrCreate"}
  }
}`

const unmappedNFSPV = `{
  "apiVersion": "v1",
  "kind": "PersistentVolume",
  "metadata": {"name": "legacy-share"},
  "spec": {
    "capacity": {"storage": "1Gi"},
    "accessModes": ["ReadWriteMany"],
    "persistentVolumeReclaimPolicy": "Retain",
    "nfs": {"server": "other.example.com", "path": "/exports/legacy"}
  }
}`

// unstructuredFrom decodes JSON the way Velero's plugin client decodes items (unstructured's JSON decoding).
func unstructuredFrom(tb harnessT, text string) *unstructured.Unstructured {
	tb.Helper()
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON([]byte(text)); err != nil {
		tb.Fatalf("fixture is not a valid object: %v\n%s", err, text)
	}
	return u
}

// withBackupState returns the item as it sits in the backup (uid, resourceVersion, status), for ItemFromBackup.
func withBackupState(u *unstructured.Unstructured) *unstructured.Unstructured {
	b := u.DeepCopy()
	b.SetUID("0b7e6a86-0b2a-4d53-9d0c-6e0ad2c1a0f3")
	b.SetResourceVersion("48213")
	b.SetCreationTimestamp(metav1.Unix(1763700000, 0))
	_ = unstructured.SetNestedField(b.Object, "Bound", "status", "phase")
	return b
}

// canonical turns an object into plain JSON values so objects decoded by different paths compare equal.
func canonical(tb harnessT, obj map[string]any) map[string]any {
	tb.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		tb.Fatalf("marshal: %v", err)
	}
	out := map[string]any{}
	if err := json.Unmarshal(raw, &out); err != nil {
		tb.Fatalf("unmarshal: %v", err)
	}
	return out
}
