package conformance

import (
	"context"
	"fmt"
	"hash/fnv"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	velerov1api "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	biav2cli "github.com/vmware-tanzu/velero/pkg/plugin/clientmgmt/backupitemaction/v2"
	"github.com/vmware-tanzu/velero/pkg/plugin/framework"
	"github.com/vmware-tanzu/velero/pkg/plugin/framework/common"
	"github.com/vmware-tanzu/velero/pkg/plugin/velero"
	biav2 "github.com/vmware-tanzu/velero/pkg/plugin/velero/backupitemaction/v2"
)

const (
	// Labels on every replica PVC (plugins/src/actions/snapshot_to_pvc/objects.rs).
	managedByLabel       = "app.kubernetes.io/managed-by"
	replicaOfSnapshotUID = "replicadr.io/replica-of-snapshot-uid"
	// What pv-retain records on the backed-up copy of a PV it set to Retain.
	originalReclaimPolicy = "replicadr.io/original-reclaim-policy"
)

var volumeSnapshots = schema.GroupVersionResource{Group: "snapshot.storage.k8s.io", Version: "v1", Resource: "volumesnapshots"}

// TestSnapshotToPVC runs the backup side the way a Velero server backing up namespace vms does, with no controllers
// in the cluster: the test plays the CSI snapshot controller and the provisioner. Velero's backup calls Execute on the
// VolumeSnapshot and polls Progress once at the end of the item backup (manager #1), then its backup-operations
// controller polls from a new manager, so a new plugin process, each time (managers #2 and #3); a later backup of the
// same snapshot (manager #4) must find the replica instead of making another one, and runs pv-retain, a v1 action,
// through Velero's v1→v2 adapter on the replica's PersistentVolume. Steps run in order and stop at the first failing
// one; the teardown check always runs.
func TestSnapshotToPVC(t *testing.T) {
	binary := requireEnv(t, "REPLICADR_PLUGIN_BINARY")
	kube := kubeClient(t)
	dyn := dynamicClient(t)
	ns := veleroNamespace()
	host := newVeleroHost(t, binary)
	pluginPath := host.pluginPath(binary)
	t.Cleanup(host.cleanupManagers)
	defer func() {
		if t.Failed() {
			t.Logf("captured velero log:\n%s", host.logs.String())
		}
	}()

	applyCRDs(t, dyn, repoFile(t, "tests/crds/snapshot.storage.k8s.io.yaml"))
	ensureNamespace(t, kube, ns)
	ensureNamespace(t, kube, vmNamespace)
	// The backup runs on the primary site; pv-site-remap's localSite does not matter to the backup actions.
	applyConfigMap(t, kube, pluginsConfig(ns, "primary"))
	t.Cleanup(func() { deleteConfigMap(t, kube, ns, pluginsConfigMap) })
	ensureStorageClass(t, kube)
	source := ensurePVC(t, kube, vmDiskPVC(vmNamespace))

	// KubeVirt names the VolumeSnapshots of a VM snapshot vmsnapshot-<VirtualMachineSnapshot uid>-volume-<volume>:
	// long enough that the replica name truncates it, and new in every run.
	snapshot := createSnapshot(t, dyn, vmNamespace, fmt.Sprintf("vmsnapshot-%s-volume-disk-1", uuid.NewUUID()), source.Name)
	uid := string(snapshot.GetUID())
	operationID := fmt.Sprintf("%s/%s/%s", vmNamespace, snapshot.GetName(), uid)
	replicaName := replicaPVCName(snapshot.GetName(), uid)
	replicaID := velero.ResourceIdentifier{
		GroupResource: schema.GroupResource{Resource: "persistentvolumeclaims"},
		Namespace:     vmNamespace,
		Name:          replicaName,
	}
	t.Logf("VolumeSnapshot %s/%s uid %s: operation %s, replica %s", vmNamespace, snapshot.GetName(), uid, operationID, replicaName)
	firstBackup := "vms-20261122020000"
	starts := pluginStarts(host.logs, pluginPath) // discovery ran it once to list its plugins
	expectNewProcess := func(t *testing.T) {
		t.Helper()
		now := pluginStarts(host.logs, pluginPath)
		if now != starts+1 {
			t.Errorf("velero started the plugin %d times for this manager, want once", now-starts)
		}
		starts = now
	}

	ok := t.Run("registry lists snapshot-to-pvc as BackupItemActionV2 and pv-retain as BackupItemAction", func(t *testing.T) {
		for _, want := range []framework.PluginIdentifier{
			{Command: pluginPath, Kind: common.PluginKindBackupItemActionV2, Name: snapshotToPVCPlugin},
			{Command: pluginPath, Kind: common.PluginKindBackupItemAction, Name: pvRetainPlugin},
		} {
			got, err := host.registry.Get(want.Kind, want.Name)
			if err != nil {
				t.Errorf("registry.Get(%s, %s): %v; registered BackupItemActions: %v, BackupItemActionV2s: %v", want.Kind,
					want.Name, err, host.registry.List(common.PluginKindBackupItemAction),
					host.registry.List(common.PluginKindBackupItemActionV2))
			} else if got != want {
				t.Errorf("registry entry = %+v, want %+v", got, want)
			}
		}
		// Otherwise GetBackupItemActionV2 would not take the v1→v2 adapter this test means to exercise.
		if got, err := host.registry.Get(common.PluginKindBackupItemActionV2, pvRetainPlugin); err == nil {
			t.Errorf("pv-retain is also registered as BackupItemActionV2: %+v", got)
		}
	})

	var waiting velero.OperationProgress
	ok = ok && t.Run("backup: execute on a snapshot not ready yet starts an operation, the first poll waits", func(t *testing.T) {
		backup := testBackup(ns, firstBackup, velerov1api.BackupPhaseInProgress)
		manager := host.newManager()
		defer host.cleanupManagers()
		action, err := manager.GetBackupItemActionV2(snapshotToPVCPlugin)
		if err != nil {
			t.Fatalf("GetBackupItemActionV2(%s): %v", snapshotToPVCPlugin, err)
		}
		if action.Name() != snapshotToPVCPlugin {
			t.Errorf("Name() = %q, want %q: velero records it as the operation's BackupItemAction", action.Name(), snapshotToPVCPlugin)
		}
		selector, err := action.AppliesTo()
		if err != nil {
			t.Fatalf("AppliesTo: %v", err)
		}
		t.Logf("AppliesTo = %+v", selector)
		if !slices.Contains(selector.IncludedResources, "volumesnapshots.snapshot.storage.k8s.io") {
			t.Errorf("includedResources = %q, want it to contain volumesnapshots.snapshot.storage.k8s.io", selector.IncludedResources)
		}

		item := getSnapshot(t, dyn, vmNamespace, snapshot.GetName())
		out, additional, gotID, postOperation, err := action.Execute(item.DeepCopy(), backup)
		if err != nil {
			t.Fatalf("Execute(%s): %v", item.GetName(), err)
		}
		expectUnchanged(t, out, item)
		if gotID != operationID {
			t.Errorf("operation ID = %q, want %q (<namespace>/<snapshot>/<uid>)", gotID, operationID)
		}
		if len(additional) != 0 {
			t.Errorf("additional items = %v, want none: there is no replica yet", describeIDs(additional))
		}
		// No post-operation items: Velero 1.18's backup finalizer panics on a PVC or PV among them.
		if len(postOperation) != 0 {
			t.Errorf("post-operation items = %v, want none (the next backup carries the replica %v bound)", describeIDs(postOperation), describeIDs([]velero.ResourceIdentifier{replicaID}))
		}
		expectNoPVC(t, kube, vmNamespace, replicaName)

		// The backup controller asks for the progress of every new operation with the same manager.
		waiting = mustProgress(t, action, gotID, backup)
		if waiting.Completed || waiting.Err != "" {
			t.Errorf("progress = %+v, want the operation running without error: the snapshot is not ready", waiting)
		}
		expectNoPVC(t, kube, vmNamespace, replicaName)
		host.cleanupManagers()
		expectNewProcess(t)
	})

	// The snapshot controller finishes the snapshot.
	var readySnapshot *unstructured.Unstructured
	if ok {
		readySnapshot = makeSnapshotReady(t, dyn, snapshot, "5Gi")
	}

	ok = ok && t.Run("operations controller: a poll from a new plugin process creates the replica pvc", func(t *testing.T) {
		backup := testBackup(ns, firstBackup, velerov1api.BackupPhaseWaitingForPluginOperations)
		progress := mustProgress(t, newBackupAction(t, host, snapshotToPVCPlugin), operationID, backup)
		host.cleanupManagers()
		expectNewProcess(t)
		if progress.Completed || progress.Err != "" {
			t.Errorf("progress = %+v, want the operation running without error: the replica is not bound yet", progress)
		}
		if progress.NCompleted <= waiting.NCompleted || progress.NCompleted >= progress.NTotal {
			t.Errorf("progress %d of %d %s, want more than the %d before the snapshot was ready and less than all",
				progress.NCompleted, progress.NTotal, progress.OperationUnits, waiting.NCompleted)
		}

		pvc, err := kube.CoreV1().PersistentVolumeClaims(vmNamespace).Get(context.Background(), replicaName, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("replica PVC %s/%s: %v", vmNamespace, replicaName, err)
		}
		t.Logf("replica PVC labels %v, annotations %v", pvc.Labels, pvc.Annotations)
		for key, value := range map[string]string{managedByLabel: "replicadr", replicaOfSnapshotUID: uid} {
			if pvc.Labels[key] != value {
				t.Errorf("replica label %s = %q, want %q", key, pvc.Labels[key], value)
			}
		}
		wantSource := corev1.TypedLocalObjectReference{
			APIGroup: ptr("snapshot.storage.k8s.io"), Kind: "VolumeSnapshot", Name: snapshot.GetName(),
		}
		if pvc.Spec.DataSource == nil || !reflect.DeepEqual(*pvc.Spec.DataSource, wantSource) {
			t.Errorf("replica dataSource = %+v, want %+v", pvc.Spec.DataSource, wantSource)
		}
		// The replica copies the source claim's class, access modes and volume mode, and is as large as the
		// snapshot's restoreSize.
		if !reflect.DeepEqual(pvc.Spec.StorageClassName, source.Spec.StorageClassName) ||
			!reflect.DeepEqual(pvc.Spec.AccessModes, source.Spec.AccessModes) ||
			!reflect.DeepEqual(pvc.Spec.VolumeMode, source.Spec.VolumeMode) {
			t.Errorf("replica class/access modes/volume mode = %v/%v/%v, want the source's %v/%v/%v",
				deref(pvc.Spec.StorageClassName), pvc.Spec.AccessModes, deref(pvc.Spec.VolumeMode),
				deref(source.Spec.StorageClassName), source.Spec.AccessModes, deref(source.Spec.VolumeMode))
		}
		if size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; size.Cmp(resource.MustParse("5Gi")) != 0 {
			t.Errorf("replica requests %s, want the snapshot's restoreSize 5Gi", size.String())
		}
		if len(pvc.OwnerReferences) != 0 {
			t.Errorf("replica has owner references %v: deleting the snapshot would garbage-collect the DR copy", pvc.OwnerReferences)
		}
	})

	// The provisioner creates the volume and binds the replica to it.
	var volume *corev1.PersistentVolume
	if ok {
		volume = bindToNewVolume(t, kube, vmNamespace, replicaName)
	}

	ok = ok && t.Run("operations controller: a poll after the replica bound completes the operation", func(t *testing.T) {
		backup := testBackup(ns, firstBackup, velerov1api.BackupPhaseWaitingForPluginOperations)
		progress := mustProgress(t, newBackupAction(t, host, snapshotToPVCPlugin), operationID, backup)
		host.cleanupManagers()
		expectNewProcess(t)
		if !progress.Completed || progress.Err != "" {
			t.Errorf("progress = %+v, want completed without error", progress)
		}
		if progress.NCompleted != progress.NTotal {
			t.Errorf("progress %d of %d %s on completion, want all", progress.NCompleted, progress.NTotal, progress.OperationUnits)
		}
	})

	ok = ok && t.Run("a later backup reuses the bound replica and pv-retain keeps the replica's volume", func(t *testing.T) {
		backup := testBackup(ns, "vms-20261123020000", velerov1api.BackupPhaseInProgress)
		manager := host.newManager()
		defer host.cleanupManagers()
		before := replicasOf(t, kube, uid)
		action, err := manager.GetBackupItemActionV2(snapshotToPVCPlugin)
		if err != nil {
			t.Fatalf("GetBackupItemActionV2(%s): %v", snapshotToPVCPlugin, err)
		}
		item := getSnapshot(t, dyn, vmNamespace, snapshot.GetName())
		out, additional, gotID, postOperation, err := action.Execute(item.DeepCopy(), backup)
		if err != nil {
			t.Fatalf("Execute(%s): %v", item.GetName(), err)
		}
		t.Logf("Execute: additional items %v, operation %q, post-operation items %v", describeIDs(additional), gotID,
			describeIDs(postOperation))
		expectUnchanged(t, out, item)
		if gotID != "" && gotID != operationID {
			t.Errorf("operation ID = %q, want none or %q", gotID, operationID)
		}
		// The replica is ready, so it belongs in this backup now, with its volume.
		volumeID := velero.ResourceIdentifier{GroupResource: schema.GroupResource{Resource: "persistentvolumes"}, Name: volume.Name}
		for _, want := range []velero.ResourceIdentifier{replicaID, volumeID} {
			if !slices.Contains(additional, want) {
				t.Errorf("additional items %v do not include %v", describeIDs(additional), describeIDs([]velero.ResourceIdentifier{want}))
			}
		}
		after := replicasOf(t, kube, uid)
		if len(after) != 1 || len(before) != 1 || after[0].UID != before[0].UID || after[0].Name != replicaName {
			t.Errorf("PVCs labelled as the replica of %s: %v before, %v after; want the one replica %s, reused", uid,
				describePVCs(before), describePVCs(after), replicaName)
		}

		retain, err := manager.GetBackupItemActionV2(pvRetainPlugin)
		if err != nil {
			t.Fatalf("GetBackupItemActionV2(%s): %v", pvRetainPlugin, err)
		}
		if _, adapted := retain.(*biav2cli.AdaptedV1RestartableBackupItemAction); !adapted {
			t.Errorf("GetBackupItemActionV2(%s) = %T, want velero's v1→v2 adapter", pvRetainPlugin, retain)
		}
		selector, err := retain.AppliesTo()
		if err != nil {
			t.Fatalf("pv-retain AppliesTo: %v", err)
		}
		if !slices.Contains(selector.IncludedResources, "persistentvolumes") ||
			len(selector.IncludedNamespaces) != 0 || len(selector.ExcludedNamespaces) != 0 {
			t.Errorf("pv-retain AppliesTo = %+v, want persistentvolumes with no namespace filter", selector)
		}
		pv := getUnstructuredPV(t, dyn, volume.Name)
		out, additional, gotID, postOperation, err = retain.Execute(pv.DeepCopy(), backup)
		if err != nil {
			t.Fatalf("pv-retain Execute(%s): %v", pv.GetName(), err)
		}
		if len(additional) != 0 || gotID != "" || len(postOperation) != 0 {
			t.Errorf("pv-retain returned additional items %v / operation %q / post-operation items %v, want none",
				describeIDs(additional), gotID, describeIDs(postOperation))
		}
		want := pv.DeepCopy()
		setString(t, want, "Retain", "spec", "persistentVolumeReclaimPolicy")
		addAnnotations(want, map[string]string{originalReclaimPolicy: "Delete"})
		expectObject(t, &unstructured.Unstructured{Object: out.UnstructuredContent()}, want, true)
		live, err := kube.CoreV1().PersistentVolumes().Get(context.Background(), volume.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get PV %s: %v", volume.Name, err)
		}
		if live.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete || live.ResourceVersion != pv.GetResourceVersion() {
			t.Errorf("live PV %s has reclaim policy %s, resourceVersion %s (was Delete, %s): only the backed-up copy may change",
				live.Name, live.Spec.PersistentVolumeReclaimPolicy, live.ResourceVersion, pv.GetResourceVersion())
		}
		host.cleanupManagers()
		expectNewProcess(t)
	})

	if ok {
		t.Run("the snapshot and its source pvc were only read", func(t *testing.T) {
			now := getSnapshot(t, dyn, vmNamespace, snapshot.GetName())
			if now.GetResourceVersion() != readySnapshot.GetResourceVersion() {
				t.Errorf("VolumeSnapshot changed: resourceVersion %s, was %s", now.GetResourceVersion(), readySnapshot.GetResourceVersion())
			}
			pvc, err := kube.CoreV1().PersistentVolumeClaims(vmNamespace).Get(context.Background(), source.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("get source PVC: %v", err)
			}
			if pvc.ResourceVersion != source.ResourceVersion {
				t.Errorf("source PVC changed: resourceVersion %s, was %s", pvc.ResourceVersion, source.ResourceVersion)
			}
		})
	}

	t.Run("teardown of every manager is graceful", func(t *testing.T) {
		host.cleanupManagers()
		for _, e := range ungracefulExits(host.logs) {
			t.Errorf("velero logged %q: the plugin did not exit after GRPCController.Shutdown (entry %v)", e["msg"], e)
		}
		t.Logf("velero started the plugin %d times, discovery included", pluginStarts(host.logs, pluginPath))
	})
}

// replicaPVCName is the replica naming scheme of plugins/src/actions/snapshot_to_pvc/naming.rs, a contract with the
// replicas earlier releases created: replica-<stem>-<first 12 hex digits of FNV-1a-64(uid)>, where the stem is the
// snapshot name with ASCII letters lower-cased and every other character outside [a-z0-9-] turned into '-', cut to
// its first 42 characters, '-' trimmed at both ends; just replica-<hash> when nothing is left.
func replicaPVCName(snapshot, uid string) string {
	h := fnv.New64a()
	h.Write([]byte(uid))
	hash := fmt.Sprintf("%016x", h.Sum64())[:12]
	const budget = 63 - len("replica-") - 1 - 12
	var stem []rune
	for _, c := range snapshot {
		if len(stem) == budget {
			break
		}
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			c = '-'
		}
		stem = append(stem, c)
	}
	trimmed := strings.Trim(string(stem), "-")
	if trimmed == "" {
		return "replica-" + hash
	}
	return "replica-" + trimmed + "-" + hash
}

// newBackupAction starts a fresh manager, as the backup-operations controller does for every reconcile, and fetches
// the named backup item action from it.
func newBackupAction(t *testing.T, host *veleroHost, name string) biav2.BackupItemAction {
	t.Helper()
	action, err := host.newManager().GetBackupItemActionV2(name)
	if err != nil {
		t.Fatalf("GetBackupItemActionV2(%s): %v", name, err)
	}
	return action
}

// mustProgress polls an operation and checks what Velero needs of every answer: started and updated times (absent
// ones arrive as 1970, and Velero moves an operation to InProgress by its start time).
func mustProgress(t *testing.T, action biav2.BackupItemAction, operationID string, backup *velerov1api.Backup) velero.OperationProgress {
	t.Helper()
	progress, err := action.Progress(operationID, backup)
	if err != nil {
		t.Fatalf("Progress(%s): %v", operationID, err)
	}
	t.Logf("Progress: completed %v, error %q, %d of %d %s, %q, started %s, updated %s", progress.Completed, progress.Err,
		progress.NCompleted, progress.NTotal, progress.OperationUnits, progress.Description,
		progress.Started.UTC().Format(time.RFC3339), progress.Updated.UTC().Format(time.RFC3339))
	earliest := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	latest := time.Now().Add(time.Minute)
	for name, at := range map[string]time.Time{"started": progress.Started, "updated": progress.Updated} {
		if at.Before(earliest) || at.After(latest) {
			t.Errorf("progress %s = %s, want a time between %s and now", name, at.UTC().Format(time.RFC3339), earliest.Format(time.RFC3339))
		}
	}
	if progress.Updated.Before(progress.Started) {
		t.Errorf("progress updated %s before it started %s", progress.Updated, progress.Started)
	}
	if progress.NTotal <= 0 || progress.NCompleted < 0 || progress.NCompleted > progress.NTotal {
		t.Errorf("progress %d of %d %s is not a valid amount", progress.NCompleted, progress.NTotal, progress.OperationUnits)
	}
	return progress
}

// expectUnchanged checks that Execute returned the item exactly as it was given.
func expectUnchanged(t *testing.T, got runtime.Unstructured, want *unstructured.Unstructured) {
	t.Helper()
	if got == nil {
		t.Errorf("Execute(%s) returned no item", want.GetName())
		return
	}
	g := canonical(t, got.UnstructuredContent())
	w := canonical(t, want.Object)
	if !reflect.DeepEqual(g, w) {
		t.Errorf("Execute(%s) changed the item (-want +got):\n%s", want.GetName(), cmp.Diff(w, g))
	}
}

func expectNoPVC(t *testing.T, kube kubernetes.Interface, namespace, name string) {
	t.Helper()
	_, err := kube.CoreV1().PersistentVolumeClaims(namespace).Get(context.Background(), name, metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("PVC %s/%s exists (or cannot be read: %v), want none before the snapshot is ready", namespace, name, err)
	}
}

func ensureStorageClass(t *testing.T, kube kubernetes.Interface) {
	t.Helper()
	_, err := kube.StorageV1().StorageClasses().Create(context.Background(), replicatedNFSClass(), metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create storage class: %v", err)
	}
}

// ensurePVC creates the claim unless it exists, and returns it as stored.
func ensurePVC(t *testing.T, kube kubernetes.Interface, pvc *corev1.PersistentVolumeClaim) *corev1.PersistentVolumeClaim {
	t.Helper()
	client := kube.CoreV1().PersistentVolumeClaims(pvc.Namespace)
	created, err := client.Create(context.Background(), pvc, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = client.Get(context.Background(), pvc.Name, metav1.GetOptions{})
	}
	if err != nil {
		t.Fatalf("create PVC %s/%s: %v", pvc.Namespace, pvc.Name, err)
	}
	return created
}

// createSnapshot creates a VolumeSnapshot of a claim and gives it the status the snapshot controller writes first:
// bound to its content, not ready to use.
func createSnapshot(t *testing.T, dyn dynamic.Interface, namespace, name, claim string) *unstructured.Unstructured {
	t.Helper()
	client := dyn.Resource(volumeSnapshots).Namespace(namespace)
	snapshot := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "snapshot.storage.k8s.io/v1",
		"kind":       "VolumeSnapshot",
		"metadata":   map[string]any{"name": name, "namespace": namespace},
		"spec": map[string]any{
			"source":                  map[string]any{"persistentVolumeClaimName": claim},
			"volumeSnapshotClassName": "replicated-nfs",
		},
	}}
	created, err := client.Create(context.Background(), snapshot, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create VolumeSnapshot %s/%s: %v", namespace, name, err)
	}
	created.Object["status"] = map[string]any{
		"boundVolumeSnapshotContentName": "snapcontent-" + string(created.GetUID()),
		"readyToUse":                     false,
	}
	updated, err := client.UpdateStatus(context.Background(), created, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("set status of VolumeSnapshot %s/%s: %v", namespace, name, err)
	}
	return updated
}

// makeSnapshotReady plays the snapshot controller finishing the snapshot.
func makeSnapshotReady(t *testing.T, dyn dynamic.Interface, snapshot *unstructured.Unstructured, restoreSize string) *unstructured.Unstructured {
	t.Helper()
	current := getSnapshot(t, dyn, snapshot.GetNamespace(), snapshot.GetName())
	status, _, _ := unstructured.NestedMap(current.Object, "status")
	if status == nil {
		status = map[string]any{}
	}
	status["readyToUse"] = true
	status["restoreSize"] = restoreSize
	status["creationTime"] = time.Now().UTC().Format(time.RFC3339)
	current.Object["status"] = status
	updated, err := dyn.Resource(volumeSnapshots).Namespace(current.GetNamespace()).UpdateStatus(context.Background(), current, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("make VolumeSnapshot %s ready: %v", current.GetName(), err)
	}
	return updated
}

// getSnapshot reads a VolumeSnapshot as Velero's item collector hands it to the actions.
func getSnapshot(t *testing.T, dyn dynamic.Interface, namespace, name string) *unstructured.Unstructured {
	t.Helper()
	snapshot, err := dyn.Resource(volumeSnapshots).Namespace(namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get VolumeSnapshot %s/%s: %v", namespace, name, err)
	}
	return snapshot
}

func getUnstructuredPV(t *testing.T, dyn dynamic.Interface, name string) *unstructured.Unstructured {
	t.Helper()
	pv, err := dyn.Resource(corev1.SchemeGroupVersion.WithResource("persistentvolumes")).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get PV %s: %v", name, err)
	}
	return pv
}

// bindToNewVolume plays csi-driver-nfs's provisioner and the PV controller: a volume named after the claim's UID in
// a subdirectory of the vm-disks export (reclaim policy Delete, from the class), the claim's volumeName, and Bound.
func bindToNewVolume(t *testing.T, kube kubernetes.Interface, namespace, claim string) *corev1.PersistentVolume {
	t.Helper()
	ctx := context.Background()
	pvcs := kube.CoreV1().PersistentVolumeClaims(namespace)
	pvc, err := pvcs.Get(ctx, claim, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get PVC %s/%s: %v", namespace, claim, err)
	}
	name := "pvc-" + string(pvc.UID)
	filesystem := corev1.PersistentVolumeFilesystem
	pv, err := kube.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": "nfs.csi.k8s.io"},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: pvc.Spec.Resources.Requests[corev1.ResourceStorage]},
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			StorageClassName:              deref(pvc.Spec.StorageClassName),
			MountOptions:                  []string{"nfsvers=4.1"},
			VolumeMode:                    &filesystem,
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver:       "nfs.csi.k8s.io",
				VolumeHandle: "nfs-a.example.com#exports/vms#" + name + "#",
				VolumeAttributes: map[string]string{
					"server":                           "nfs-a.example.com",
					"share":                            "/exports/vms",
					"subDir":                           name,
					"csi.storage.k8s.io/pv/name":       name,
					"csi.storage.k8s.io/pvc/name":      claim,
					"csi.storage.k8s.io/pvc/namespace": namespace,
					"storage.kubernetes.io/csiProvisionerIdentity": "1763800000000-7785-nfs.csi.k8s.io",
				},
			}},
			ClaimRef: &corev1.ObjectReference{
				APIVersion: "v1", Kind: "PersistentVolumeClaim", Namespace: namespace, Name: claim,
				UID: pvc.UID, ResourceVersion: pvc.ResourceVersion,
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create PV %s: %v", name, err)
	}
	pvc.Spec.VolumeName = name
	if pvc, err = pvcs.Update(ctx, pvc, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("set volumeName of PVC %s/%s: %v", namespace, claim, err)
	}
	pvc.Status.Phase = corev1.ClaimBound
	pvc.Status.AccessModes = pv.Spec.AccessModes
	pvc.Status.Capacity = pv.Spec.Capacity
	if _, err = pvcs.UpdateStatus(ctx, pvc, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("bind PVC %s/%s: %v", namespace, claim, err)
	}
	return pv
}

// replicasOf lists the claims, in every namespace, labelled as the replica of the snapshot with this UID.
func replicasOf(t *testing.T, kube kubernetes.Interface, snapshotUID string) []corev1.PersistentVolumeClaim {
	t.Helper()
	list, err := kube.CoreV1().PersistentVolumeClaims(metav1.NamespaceAll).List(context.Background(), metav1.ListOptions{
		LabelSelector: fmt.Sprintf("%s=replicadr,%s=%s", managedByLabel, replicaOfSnapshotUID, snapshotUID),
	})
	if err != nil {
		t.Fatalf("list replica PVCs: %v", err)
	}
	return list.Items
}

// describeIDs spells out resource identifiers; fmt would print only their embedded GroupResource.
func describeIDs(ids []velero.ResourceIdentifier) []string {
	out := []string{}
	for _, id := range ids {
		out = append(out, fmt.Sprintf("%s %s/%s", id.GroupResource, id.Namespace, id.Name))
	}
	return out
}

func describePVCs(pvcs []corev1.PersistentVolumeClaim) []string {
	var out []string
	for _, pvc := range pvcs {
		out = append(out, fmt.Sprintf("%s/%s (uid %s, %s)", pvc.Namespace, pvc.Name, pvc.UID, pvc.Status.Phase))
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
