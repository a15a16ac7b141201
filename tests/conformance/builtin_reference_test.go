package conformance

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"

	"github.com/vmware-tanzu/velero/pkg/plugin/framework/common"
)

const changeStorageClassPlugin = "velero.io/change-storage-class"

// TestBuiltinChangeStorageClass runs Velero's own closest analogue, the built-in change-storage-class action served
// by a real `velero run-plugins`, through the same host code. It proves the harness (discovery of built-ins, managers,
// config by ConfigMap, Execute, teardown) against a known-good plugin, and gives the benchmark its baseline.
func TestBuiltinChangeStorageClass(t *testing.T) {
	if os.Getenv("REPLICADR_VELERO_BUILTINS") == "" {
		t.Skip("REPLICADR_VELERO_BUILTINS (a velero binary of the client code's release) is not set")
	}
	kube := kubeClient(t)
	ns := veleroNamespace()
	host := newVeleroHost(t)
	t.Cleanup(host.cleanupManagers)
	defer func() {
		if t.Failed() {
			t.Logf("captured velero log:\n%s", host.logs.String())
		}
	}()
	ensureNamespace(t, kube, ns)
	prepareChangeStorageClass(t, kube, ns)

	id, err := host.registry.Get(common.PluginKindRestoreItemAction, changeStorageClassPlugin)
	if err != nil {
		t.Fatalf("built-in %s not discovered: %v", changeStorageClassPlugin, err)
	}
	if id.Command != os.Args[0] {
		t.Errorf("built-in command = %q, want this binary %q (run with run-plugins)", id.Command, os.Args[0])
	}

	action, err := host.newManager().GetRestoreItemActionV2(changeStorageClassPlugin)
	if err != nil {
		t.Fatalf("GetRestoreItemActionV2: %v", err)
	}
	selector, err := action.AppliesTo()
	if err != nil {
		t.Fatalf("AppliesTo: %v", err)
	}
	if !slices.Contains(selector.IncludedResources, "persistentvolumes") {
		t.Errorf("AppliesTo = %+v, want persistentvolumes included", selector)
	}
	in := unstructuredFrom(t, inTreeNFSPV)
	out := mustExecute(t, action, in, testRestore(ns))
	want := in.DeepCopy()
	if err := unstructured.SetNestedField(want.Object, "nfs-vms-dr", "spec", "storageClassName"); err != nil {
		t.Fatal(err)
	}
	expectObject(t, out, want, false)

	host.cleanupManagers()
	for _, e := range host.logs.entries() {
		if msg, _ := e["msg"].(string); msg == "plugin failed to exit gracefully" {
			t.Errorf("velero built-ins did not exit gracefully: %v", e)
		}
	}
}

// prepareChangeStorageClass gives change-storage-class its ConfigMap (nfs-vms → nfs-vms-dr) and the target
// StorageClass, which the action checks exists.
func prepareChangeStorageClass(tb harnessT, kube kubernetes.Interface, ns string) {
	tb.Helper()
	applyConfigMap(tb, kube, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name:      "change-storage-class-config",
			Namespace: ns,
			Labels: map[string]string{
				"velero.io/plugin-config": "",
				changeStorageClassPlugin:  "RestoreItemAction",
			},
		},
		Data: map[string]string{"nfs-vms": "nfs-vms-dr"},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := kube.StorageV1().StorageClasses().Create(ctx, &storagev1.StorageClass{
		ObjectMeta:  metav1.ObjectMeta{Name: "nfs-vms-dr"},
		Provisioner: "kubernetes.io/no-provisioner",
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		tb.Fatalf("create storage class: %v", err)
	}
}
