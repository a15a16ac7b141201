package conformance

import (
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	velerov1api "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	"github.com/vmware-tanzu/velero/pkg/plugin/framework"
	"github.com/vmware-tanzu/velero/pkg/plugin/framework/common"
	"github.com/vmware-tanzu/velero/pkg/plugin/velero"
	riav2 "github.com/vmware-tanzu/velero/pkg/plugin/velero/restoreitemaction/v2"
)

// TestPvSiteRemap runs the plugin binary the way a Velero server restoring on the dr site would: discovery, a
// manager per restore, AppliesTo, Execute on PersistentVolumes, then process teardown. Subtests run in order and
// share the plugin ConfigMap in the apiserver.
func TestPvSiteRemap(t *testing.T) {
	binary := requireEnv(t, "REPLICADR_PLUGIN_BINARY")
	kube := kubeClient(t)
	ns := veleroNamespace()
	host := newVeleroHost(t, binary)
	pluginPath := host.pluginPath(binary)
	t.Cleanup(host.cleanupManagers)
	defer func() {
		if t.Failed() {
			t.Logf("captured velero log:\n%s", host.logs.String())
		}
	}()

	ensureNamespace(t, kube, ns)
	applyConfigMap(t, kube, siteRemapConfig(ns, "dr"))
	t.Cleanup(func() { deleteConfigMap(t, kube, ns, siteRemapConfigMap) })
	restore := testRestore(ns)

	t.Run("registry lists the restore item action with the plugin path as command", func(t *testing.T) {
		want := framework.PluginIdentifier{Command: pluginPath, Kind: common.PluginKindRestoreItemAction, Name: siteRemapPlugin}
		got, err := host.registry.Get(common.PluginKindRestoreItemAction, siteRemapPlugin)
		if err != nil {
			t.Fatalf("registry.Get(RestoreItemAction, %s): %v; registered RestoreItemActions: %v, RestoreItemActionV2s: %v",
				siteRemapPlugin, err, host.registry.List(common.PluginKindRestoreItemAction),
				host.registry.List(common.PluginKindRestoreItemActionV2))
		}
		if got != want {
			t.Errorf("registry entry = %+v, want %+v", got, want)
		}
	})

	manager := host.newManager()
	action, err := manager.GetRestoreItemActionV2(siteRemapPlugin)
	if err != nil {
		t.Fatalf("GetRestoreItemActionV2(%s): %v", siteRemapPlugin, err)
	}

	t.Run("applies to persistent volumes in every namespace", func(t *testing.T) {
		selector, err := action.AppliesTo()
		if err != nil {
			t.Fatalf("AppliesTo: %v", err)
		}
		t.Logf("AppliesTo = %+v", selector)
		if !slices.Contains(selector.IncludedResources, "persistentvolumes") {
			t.Errorf("includedResources = %q, want it to contain persistentvolumes", selector.IncludedResources)
		}
		if len(selector.IncludedNamespaces) != 0 || len(selector.ExcludedNamespaces) != 0 {
			t.Errorf("namespace filters %q / %q would keep the action from cluster-scoped PersistentVolumes",
				selector.IncludedNamespaces, selector.ExcludedNamespaces)
		}
	})

	t.Run("execute", func(t *testing.T) {
		t.Run("in-tree nfs volume moves to the dr export and records where it came from", func(t *testing.T) {
			in := unstructuredFrom(t, inTreeNFSPV)
			out := mustExecute(t, action, in, restore)
			want := in.DeepCopy()
			setString(t, want, "10.20.0.5", "spec", "nfs", "server")
			setString(t, want, "/replica/vms/disk-1", "spec", "nfs", "path")
			addAnnotations(want, map[string]string{
				"replicadr.io/original-nfs-server": "nfs-a.example.com",
				"replicadr.io/original-nfs-path":   "/exports/vms/disk-1",
				"replicadr.io/original-site":       "primary",
				"replicadr.io/remap-rule":          "vm-disks",
			})
			expectObject(t, out, want, true)

			t.Run("executing again on the result changes nothing", func(t *testing.T) {
				again := mustExecute(t, action, out, restore)
				expectObject(t, again, out, false)
			})
		})

		t.Run("csi-driver-nfs volume gets the dr server in attributes and handle", func(t *testing.T) {
			in := unstructuredFrom(t, csiNFSScratchPV)
			out := mustExecute(t, action, in, restore)
			want := in.DeepCopy()
			setString(t, want, "nfs-b.example.com", "spec", "csi", "volumeAttributes", "server")
			setString(t, want, "/scratch", "spec", "csi", "volumeAttributes", "share")
			setString(t, want, "nfs-b.example.com#scratch#pvc-1#", "spec", "csi", "volumeHandle")
			expectObject(t, out, want, true)
		})

		t.Run("csi-driver-nfs volume on a remapped share gets share and handle rewritten", func(t *testing.T) {
			in := unstructuredFrom(t, csiNFSVMDisksPV)
			out := mustExecute(t, action, in, restore)
			want := in.DeepCopy()
			setString(t, want, "10.20.0.5", "spec", "csi", "volumeAttributes", "server")
			setString(t, want, "/replica/vms", "spec", "csi", "volumeAttributes", "share")
			setString(t, want, "10.20.0.5#replica/vms#apps-disk-2#pvc-2#retain", "spec", "csi", "volumeHandle")
			expectObject(t, out, want, true)
		})

		t.Run("volume already on the dr site is left unchanged", func(t *testing.T) {
			in := unstructuredFrom(t, drSiteNFSPV)
			expectObject(t, mustExecute(t, action, in, restore), in, false)
		})

		t.Run("hostPath volume is left unchanged", func(t *testing.T) {
			in := unstructuredFrom(t, hostPathPV)
			expectObject(t, mustExecute(t, action, in, restore), in, false)
		})

		t.Run("unmapped nfs volume fails naming volume, server and path", func(t *testing.T) {
			_, err := execute(action, unstructuredFrom(t, unmappedNFSPV), restore)
			expectError(t, err, "legacy-share", "other.example.com", "/exports/legacy")
		})
	})

	// The plugin may cache its configuration per process; a new manager starts new processes, as a new restore does.
	t.Run("invalid local site is reported by a new plugin process", func(t *testing.T) {
		applyConfigMap(t, kube, siteRemapConfig(ns, "nowhere"))
		action := newAction(t, host)
		_, err := execute(action, unstructuredFrom(t, inTreeNFSPV), restore)
		expectError(t, err, "localSite", "nowhere")
	})

	t.Run("missing config map is reported by a new plugin process", func(t *testing.T) {
		deleteConfigMap(t, kube, ns, siteRemapConfigMap)
		action := newAction(t, host)
		_, err := execute(action, unstructuredFrom(t, inTreeNFSPV), restore)
		expectError(t, err, siteRemapPlugin)
		if err == nil {
			return
		}
		msg := err.Error()
		if !regexp.MustCompile(`(?i)not found|none (was )?found|no configmaps?\b|found no|no config map|does not exist|missing`).MatchString(msg) {
			t.Errorf("error %q does not say that no ConfigMap was found", msg)
		}
		// The namespace must be named on its own, not only inside the velero.io/plugin-config label.
		if !strings.Contains(strings.ReplaceAll(msg, "velero.io", ""), ns) {
			t.Errorf("error %q does not name the namespace %q it searched", msg, ns)
		}
	})

	t.Run("teardown is graceful and plugin logs reach velero", func(t *testing.T) {
		host.cleanupManagers()
		for _, e := range host.logs.entries() {
			if msg, _ := e["msg"].(string); strings.Contains(msg, "failed to exit gracefully") {
				t.Errorf("velero logged %q: the plugin did not exit after GRPCController.Shutdown (entry %v)", msg, e)
			}
		}
		for _, e := range host.logs.entries() {
			if e["msg"] == "starting plugin" && e["path"] == pluginPath {
				t.Logf("velero started the plugin with argv %v", e["args"])
				break
			}
		}
		name := filepath.Base(pluginPath)
		entries := pluginLogEntries(host.logs, name)
		if len(entries) == 0 {
			t.Errorf("no log line from the plugin's stderr reached velero's logger with pluginName=%s", name)
			return
		}
		levels := map[string]int{}
		for _, e := range entries {
			level, _ := e["level"].(string)
			levels[level]++
			// go-plugin logs a stderr line it cannot parse as a JSON object verbatim, at debug.
			if msg, _ := e["msg"].(string); strings.HasPrefix(strings.TrimSpace(msg), "{") {
				t.Errorf("plugin stderr line was not taken as hclog JSON (a string @message and @level are needed): %s", msg)
			}
		}
		t.Logf("%d plugin log lines reached velero, by level %v; first ones:\n%s",
			len(entries), levels, describeEntries(entries[:min(len(entries), 5)]))
	})
}

// newAction starts a fresh manager (fresh plugin processes) and fetches the pv-site-remap action from it.
func newAction(t *testing.T, host *veleroHost) riav2.RestoreItemAction {
	t.Helper()
	action, err := host.newManager().GetRestoreItemActionV2(siteRemapPlugin)
	if err != nil {
		t.Fatalf("GetRestoreItemActionV2(%s): %v", siteRemapPlugin, err)
	}
	return action
}

// execute calls the action as the restore controller does: the item after metadata reset, the pristine item from
// the backup and the Restore.
func execute(action riav2.RestoreItemAction, item *unstructured.Unstructured, restore *velerov1api.Restore) (*velero.RestoreItemActionExecuteOutput, error) {
	return action.Execute(&velero.RestoreItemActionExecuteInput{
		Item:           item.DeepCopy(),
		ItemFromBackup: withBackupState(item),
		Restore:        restore,
	})
}

func mustExecute(t *testing.T, action riav2.RestoreItemAction, item *unstructured.Unstructured, restore *velerov1api.Restore) *unstructured.Unstructured {
	t.Helper()
	out, err := execute(action, item, restore)
	if err != nil {
		t.Fatalf("Execute(%s): %v", item.GetName(), err)
	}
	if out == nil || out.UpdatedItem == nil {
		t.Fatalf("Execute(%s) returned no item", item.GetName())
	}
	if out.SkipRestore {
		t.Errorf("Execute(%s) asked to skip the restore of the item", item.GetName())
	}
	if len(out.AdditionalItems) != 0 || out.OperationID != "" || out.WaitForAdditionalItems {
		t.Errorf("Execute(%s) returned additional items %v / operation %q / wait %v, want none",
			item.GetName(), out.AdditionalItems, out.OperationID, out.WaitForAdditionalItems)
	}
	return &unstructured.Unstructured{Object: out.UpdatedItem.UnstructuredContent()}
}

// expectObject compares the whole object. With ownAnnotations, annotations under replicadr.io/ that want does not
// mention are tolerated (and logged): the plugin owns that prefix. Everything else must match exactly.
func expectObject(t *testing.T, got, want *unstructured.Unstructured, ownAnnotations bool) {
	t.Helper()
	g := canonical(t, got.Object)
	w := canonical(t, want.Object)
	if ownAnnotations {
		wantAnn := want.GetAnnotations()
		if ann, ok := nestedMap(g, "metadata", "annotations"); ok {
			for k, v := range ann {
				if _, expected := wantAnn[k]; !expected && strings.HasPrefix(k, "replicadr.io/") {
					t.Logf("plugin added annotation %s=%v", k, v)
					delete(ann, k)
				}
			}
			if len(ann) == 0 && len(wantAnn) == 0 {
				delete(g["metadata"].(map[string]any), "annotations")
			}
		}
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("Execute(%s) output differs from the expected object (-want +got):\n%s", want.GetName(), cmp.Diff(w, g))
	}
}

func expectError(t *testing.T, err error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("Execute succeeded, want an error mentioning %q", fragments)
		return
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not mention %q", err.Error(), f)
		}
	}
}

func setString(t *testing.T, u *unstructured.Unstructured, value string, path ...string) {
	t.Helper()
	if err := unstructured.SetNestedField(u.Object, value, path...); err != nil {
		t.Fatalf("set %v: %v", path, err)
	}
}

func addAnnotations(u *unstructured.Unstructured, add map[string]string) {
	ann := u.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	for k, v := range add {
		ann[k] = v
	}
	u.SetAnnotations(ann)
}

func nestedMap(obj map[string]any, path ...string) (map[string]any, bool) {
	cur := obj
	for _, p := range path {
		next, ok := cur[p].(map[string]any)
		if !ok {
			return nil, false
		}
		cur = next
	}
	return cur, true
}
