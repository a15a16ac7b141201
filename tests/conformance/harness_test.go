package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vmware-tanzu/velero/pkg/plugin/clientmgmt"
	"github.com/vmware-tanzu/velero/pkg/plugin/clientmgmt/process"
)

// harnessT is the part of testing.TB the helpers use, so the benchmark mode (no testing.T) can use them too.
type harnessT interface {
	Helper()
	Fatalf(format string, args ...any)
	TempDir() string
}

// logCapture collects what Velero's logger writes: the server's own plugin-management lines and, through go-plugin's
// hclog→logrus adapter, every line the plugin processes write to stderr.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *logCapture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *logCapture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// entries decodes the captured JSON log lines; a line that is not JSON is returned as {"msg": line}.
func (c *logCapture) entries() []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(c.String(), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		entry := map[string]any{}
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			entry = map[string]any{"msg": line}
		}
		out = append(out, entry)
	}
	return out
}

// veleroHost plays the Velero server's plugin side: a plugin directory, a process registry that discovered it and
// the plugin managers started from that registry (one per backup/restore in a real server).
type veleroHost struct {
	pluginDir string
	logs      *logCapture
	logger    *logrus.Logger
	registry  process.Registry

	mu       sync.Mutex
	managers []clientmgmt.Manager
}

// newVeleroHost copies the given plugin binaries alone into a fresh plugin directory (as a plugin image's init
// container copies them into /plugins) and runs Velero's plugin discovery over it, logging at debug.
func newVeleroHost(tb harnessT, pluginBinaries ...string) *veleroHost {
	tb.Helper()
	return newVeleroHostAt(tb, logrus.DebugLevel, pluginBinaries...)
}

// newVeleroHostAt is newVeleroHost with the server's log level (which Velero ≤ 1.14 also passes to plugins).
func newVeleroHostAt(tb harnessT, level logrus.Level, pluginBinaries ...string) *veleroHost {
	tb.Helper()
	dir := tb.TempDir()
	for _, bin := range pluginBinaries {
		copyExecutable(tb, bin, filepath.Join(dir, filepath.Base(bin)))
	}
	logs := &logCapture{}
	logger := logrus.New()
	logger.Out = io.MultiWriter(logs, debugSink())
	logger.Formatter = &logrus.JSONFormatter{}
	logger.Level = level
	h := &veleroHost{pluginDir: dir, logs: logs, logger: logger}
	h.registry = process.NewRegistry(dir, logger, logger.Level)
	if err := h.registry.DiscoverPlugins(); err != nil {
		tb.Fatalf("velero plugin discovery in %s failed: %v\ncaptured velero log:\n%s", dir, err, logs.String())
	}
	return h
}

// debugSink mirrors the captured Velero log to stderr when REPLICADR_CONFORMANCE_LOG=1.
func debugSink() io.Writer {
	if os.Getenv("REPLICADR_CONFORMANCE_LOG") == "1" {
		return os.Stderr
	}
	return io.Discard
}

// pluginPath is where a binary copied by newVeleroHost lives: the command Velero runs it with.
func (h *veleroHost) pluginPath(binary string) string {
	return filepath.Join(h.pluginDir, filepath.Base(binary))
}

// newManager starts a plugin manager as the server does for each backup or restore; its processes start lazily.
func (h *veleroHost) newManager() clientmgmt.Manager {
	m := clientmgmt.NewManager(h.logger, h.logger.Level, h.registry)
	h.mu.Lock()
	h.managers = append(h.managers, m)
	h.mu.Unlock()
	return m
}

// cleanupManagers stops every plugin process, as the server does when a backup or restore ends. go-plugin asks each
// process to shut down over gRPC and waits for it to exit before killing it.
func (h *veleroHost) cleanupManagers() {
	h.mu.Lock()
	managers := h.managers
	h.managers = nil
	h.mu.Unlock()
	for _, m := range managers {
		m.CleanupClients()
	}
}

func copyExecutable(tb harnessT, from, to string) {
	tb.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		tb.Fatalf("read plugin binary: %v", err)
	}
	if err := os.WriteFile(to, data, 0o755); err != nil {
		tb.Fatalf("copy plugin binary: %v", err)
	}
}

func requireEnv(tb harnessT, name string) string {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		tb.Fatalf("%s is not set", name)
	}
	return v
}

func veleroNamespace() string {
	if ns := os.Getenv("VELERO_NAMESPACE"); ns != "" {
		return ns
	}
	return "velero"
}

// kubeConfig is the client configuration for the apiserver named by KUBECONFIG, the one the plugin processes will
// also use.
func kubeConfig(tb harnessT) *rest.Config {
	tb.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", requireEnv(tb, "KUBECONFIG"))
	if err != nil {
		tb.Fatalf("load KUBECONFIG: %v", err)
	}
	return cfg
}

// kubeClient connects to the apiserver named by KUBECONFIG.
func kubeClient(tb harnessT) kubernetes.Interface {
	tb.Helper()
	client, err := kubernetes.NewForConfig(kubeConfig(tb))
	if err != nil {
		tb.Fatalf("kube client: %v", err)
	}
	return client
}

// dynamicClient connects to the same apiserver for resources client-go has no types for (CRDs and their objects).
func dynamicClient(tb harnessT) dynamic.Interface {
	tb.Helper()
	client, err := dynamic.NewForConfig(kubeConfig(tb))
	if err != nil {
		tb.Fatalf("dynamic client: %v", err)
	}
	return client
}

// repoFile finds a file of the ReplicaDR repository by its path from the repository root. The harness has no copy of
// the repository's data files (hack/build-conformance.sh copies only the Go sources), so it searches upwards from the
// working directory (the repository or one of its crates when run by cargo) and from the plugin binary (in the
// repository's target directory).
func repoFile(tb harnessT, relative string) string {
	tb.Helper()
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if binary := os.Getenv("REPLICADR_PLUGIN_BINARY"); binary != "" {
		if abs, err := filepath.Abs(binary); err == nil {
			starts = append(starts, filepath.Dir(abs))
		}
	}
	for _, start := range starts {
		for dir := start; ; dir = filepath.Dir(dir) {
			candidate := filepath.Join(dir, relative)
			if _, err := os.Stat(candidate); err == nil {
				return candidate
			}
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	tb.Fatalf("cannot find %s in any parent directory of %q: run the harness from the repository", relative, starts)
	return ""
}

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// applyCRDs creates every CustomResourceDefinition in a multi-document YAML file (keeping ones that already exist)
// and waits until the apiserver reports each Established, i.e. serving its resource.
func applyCRDs(tb harnessT, client dynamic.Interface, path string) {
	tb.Helper()
	text, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("read CRDs: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(text), 4096)
	var names []string
	for {
		crd := &unstructured.Unstructured{}
		if err := decoder.Decode(&crd.Object); err == io.EOF {
			break
		} else if err != nil {
			tb.Fatalf("%s: not YAML: %v", path, err)
		}
		if len(crd.Object) == 0 {
			continue
		}
		if crd.GetKind() != "CustomResourceDefinition" {
			tb.Fatalf("%s: %s %s is not a CustomResourceDefinition", path, crd.GetKind(), crd.GetName())
		}
		_, err := client.Resource(crdResource).Create(ctx, crd, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			tb.Fatalf("create CRD %s: %v", crd.GetName(), err)
		}
		names = append(names, crd.GetName())
	}
	for _, name := range names {
		err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			crd, err := client.Resource(crdResource).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			conditions, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			for _, c := range conditions {
				if c, ok := c.(map[string]any); ok && c["type"] == "Established" && c["status"] == "True" {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			tb.Fatalf("CRD %s not Established: %v", name, err)
		}
	}
}

func ensureNamespace(tb harnessT, kube kubernetes.Interface, name string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		tb.Fatalf("create namespace %s: %v", name, err)
	}
}

// applyConfigMap creates or replaces a ConfigMap.
func applyConfigMap(tb harnessT, kube kubernetes.Interface, cm *corev1.ConfigMap) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := kube.CoreV1().ConfigMaps(cm.Namespace)
	existing, err := client.Get(ctx, cm.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = client.Create(ctx, cm, metav1.CreateOptions{})
	case err == nil:
		cm.ResourceVersion = existing.ResourceVersion
		_, err = client.Update(ctx, cm, metav1.UpdateOptions{})
	}
	if err != nil {
		tb.Fatalf("apply configmap %s/%s: %v", cm.Namespace, cm.Name, err)
	}
}

func deleteConfigMap(tb harnessT, kube kubernetes.Interface, namespace, name string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := kube.CoreV1().ConfigMaps(namespace).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		tb.Fatalf("delete configmap %s/%s: %v", namespace, name, err)
	}
}

// pluginLogEntries are the captured lines that came from the named plugin binary's stderr: go-plugin names the
// logger after the binary, and Velero's adapter records that name as pluginName.
func pluginLogEntries(logs *logCapture, binaryName string) []map[string]any {
	var out []map[string]any
	for _, e := range logs.entries() {
		if e["pluginName"] == binaryName {
			out = append(out, e)
		}
	}
	return out
}

// ungracefulExits are the captured lines in which go-plugin reports that a plugin process did not exit after
// GRPCController.Shutdown and had to be killed.
func ungracefulExits(logs *logCapture) []map[string]any {
	var out []map[string]any
	for _, e := range logs.entries() {
		if msg, _ := e["msg"].(string); strings.Contains(msg, "failed to exit gracefully") {
			out = append(out, e)
		}
	}
	return out
}

// pluginStarts counts the plugin processes Velero started from the given command so far.
func pluginStarts(logs *logCapture, command string) int {
	n := 0
	for _, e := range logs.entries() {
		if e["msg"] == "starting plugin" && e["path"] == command {
			n++
		}
	}
	return n
}

func describeEntries(entries []map[string]any) string {
	var b strings.Builder
	for _, e := range entries {
		line, _ := json.Marshal(e)
		fmt.Fprintf(&b, "  %s\n", line)
	}
	return b.String()
}
