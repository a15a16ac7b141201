package conformance

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	velerov1api "github.com/vmware-tanzu/velero/pkg/apis/velero/v1"
	riav2 "github.com/vmware-tanzu/velero/pkg/plugin/velero/restoreitemaction/v2"
)

// benchT lets the shared helpers run outside `go test`: a fatal helper error ends the benchmark.
type benchT struct{ tempDirs []string }

func (b *benchT) Helper() {}

func (b *benchT) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	b.cleanup()
	os.Exit(1)
}

func (b *benchT) TempDir() string {
	dir, err := os.MkdirTemp("", "replicadr-bench-")
	if err != nil {
		b.Fatalf("temp dir: %v", err)
	}
	b.tempDirs = append(b.tempDirs, dir)
	return dir
}

func (b *benchT) cleanup() {
	for _, d := range b.tempDirs {
		_ = os.RemoveAll(d)
	}
}

// benchSubject is one restore item action measured through Velero's plugin manager.
type benchSubject struct {
	label  string
	name   string // plugin name in the registry
	binary string // executable image of its process, to find the process among our children
	argv   []string
	item   string // PV JSON handed to Execute
	result benchResult
}

type benchResult struct {
	executes      int
	elapsed       time.Duration
	latencies     []time.Duration
	handshakes    []time.Duration
	firstCalls    []time.Duration
	teardowns     []time.Duration
	peakRSSKiB    int64
	currentRSSKiB int64
}

// runBench measures our pv-site-remap against Velero's built-in change-storage-class, both driven by the same
// Velero client code: Execute throughput and latency in one warm process, process start to handshake line, start to
// first answered RPC and teardown through Velero's manager, and the plugin process's peak RSS.
//
//	conformance.test bench [-n 10000] [-warmup 500] [-spawns 20] [-client-qps N] [-log-level info]
//
// Needs REPLICADR_PLUGIN_BINARY, REPLICADR_VELERO_BUILTINS (a velero binary) and KUBECONFIG.
func runBench(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	n := fs.Int("n", 10000, "measured Execute calls per plugin")
	warmup := fs.Int("warmup", 500, "Execute calls before measuring")
	spawns := fs.Int("spawns", 20, "process starts per plugin for the start-up timings")
	// change-storage-class makes two API requests per Execute (list its ConfigMap, get the StorageClass) through
	// client-go's rate limiter, so with Velero's defaults (--client-qps=20 --client-burst=30) it is capped near
	// 10 Executes/s; the default here takes the limiter out of the way to measure the plugins themselves.
	clientQPS := fs.String("client-qps", "100000", "--client-qps (and --client-burst) passed to the plugin processes")
	// Velero's default; at debug both plugins (and the host) spend much of their time logging.
	logLevel := fs.String("log-level", "info", "--log-level of the simulated server, passed to the plugin processes")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	tb := &benchT{}
	defer tb.cleanup()
	level, err := logrus.ParseLevel(*logLevel)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: -log-level: %v\n", err)
		return 2
	}
	serverArgs := withServerSettings(veleroServerArgs(), *clientQPS, *logLevel)
	os.Args = append([]string{os.Args[0], "server"}, serverArgs...)

	ours := requireEnv(tb, "REPLICADR_PLUGIN_BINARY")
	velero := requireEnv(tb, "REPLICADR_VELERO_BUILTINS") // TestMain unsets it when its release is not ours
	kube := kubeClient(tb)
	ns := veleroNamespace()
	ensureNamespace(tb, kube, ns)
	applyConfigMap(tb, kube, siteRemapConfig(ns, "dr"))
	prepareChangeStorageClass(tb, kube, ns)

	host := newVeleroHostAt(tb, level, ours)
	defer host.cleanupManagers()
	subjects := []*benchSubject{
		{label: siteRemapPlugin, name: siteRemapPlugin, binary: host.pluginPath(ours),
			argv: append([]string{host.pluginPath(ours)}, serverArgs...), item: inTreeNFSPV},
		{label: changeStorageClassPlugin, name: changeStorageClassPlugin, binary: velero,
			argv: append([]string{velero, "run-plugins"}, serverArgs...), item: inTreeNFSPV},
	}
	restore := testRestore(ns)

	for _, s := range subjects {
		fmt.Fprintf(os.Stderr, "bench: %s: %d warm-up + %d measured Executes\n", s.label, *warmup, *n)
		manager := host.newManager()
		action, err := manager.GetRestoreItemActionV2(s.name)
		if err != nil {
			tb.Fatalf("%s: GetRestoreItemActionV2: %v", s.label, err)
		}
		item := unstructuredFrom(tb, s.item)
		if err := runExecutes(action, item, restore, *warmup, nil); err != nil {
			tb.Fatalf("%s: warm-up: %v\nvelero log:\n%s", s.label, err, host.logs.String())
		}
		s.result.latencies = make([]time.Duration, 0, *n)
		started := time.Now()
		if err := runExecutes(action, item, restore, *n, &s.result.latencies); err != nil {
			tb.Fatalf("%s: %v", s.label, err)
		}
		s.result.elapsed = time.Since(started)
		s.result.executes = *n
		pid, err := childRunning(s.binary)
		if err != nil {
			tb.Fatalf("%s: %v", s.label, err)
		}
		s.result.peakRSSKiB, s.result.currentRSSKiB = memoryKiB(tb, pid)
		manager.CleanupClients()

		fmt.Fprintf(os.Stderr, "bench: %s: %d process starts\n", s.label, *spawns)
		for range *spawns {
			s.result.handshakes = append(s.result.handshakes, timeHandshake(tb, s.argv))
		}
		for range *spawns {
			first, teardown := timeManagerRoundTrip(tb, host, s.name)
			s.result.firstCalls = append(s.result.firstCalls, first)
			s.result.teardowns = append(s.result.teardowns, teardown)
		}
	}
	printBenchTable(subjects, serverArgs)
	return 0
}

// withServerSettings replaces client QPS, burst and log level in the server args.
func withServerSettings(args []string, qps, logLevel string) []string {
	out := make([]string, 0, len(args))
	for _, a := range args {
		if !strings.HasPrefix(a, "--client-qps=") && !strings.HasPrefix(a, "--client-burst=") &&
			!strings.HasPrefix(a, "--log-level=") {
			out = append(out, a)
		}
	}
	return append(out, "--log-level="+logLevel, "--client-qps="+qps, "--client-burst="+qps)
}

func runExecutes(action riav2.RestoreItemAction, item *unstructured.Unstructured, restore *velerov1api.Restore, n int, latencies *[]time.Duration) error {
	for i := range n {
		started := time.Now()
		_, err := execute(action, item, restore)
		if latencies != nil {
			*latencies = append(*latencies, time.Since(started))
		}
		if err != nil {
			return fmt.Errorf("execute %d: %w", i, err)
		}
	}
	return nil
}

// timeHandshake starts the plugin as go-plugin does (magic cookie, protocol version, port range) and measures
// until its handshake line is on stdout.
func timeHandshake(tb harnessT, argv []string) time.Duration {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "VELERO_PLUGIN=hello", "PLUGIN_PROTOCOL_VERSIONS=2",
		"PLUGIN_MIN_PORT=10000", "PLUGIN_MAX_PORT=25000")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatalf("stdout pipe: %v", err)
	}
	started := time.Now()
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", argv[0], err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	elapsed := time.Since(started)
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if err != nil || strings.Count(line, "|") < 4 {
		tb.Fatalf("%s: no handshake line (got %q, %v)", argv[0], line, err)
	}
	return elapsed
}

// timeManagerRoundTrip measures what a restore pays per plugin process through Velero's code: a new manager up to
// the first answered RPC (spawn, handshake, dial, dispense, AppliesTo), and CleanupClients (Shutdown, wait for exit).
func timeManagerRoundTrip(tb harnessT, host *veleroHost, name string) (first, teardown time.Duration) {
	started := time.Now()
	manager := host.newManager()
	action, err := manager.GetRestoreItemActionV2(name)
	if err != nil {
		tb.Fatalf("%s: GetRestoreItemActionV2: %v", name, err)
	}
	if _, err := action.AppliesTo(); err != nil {
		tb.Fatalf("%s: AppliesTo: %v", name, err)
	}
	first = time.Since(started)
	started = time.Now()
	host.cleanupManagers()
	return first, time.Since(started)
}

// childRunning finds our child process whose executable is binary (for the built-ins: the velero image this binary
// exec'ed into as `run-plugins`).
func childRunning(binary string) (int, error) {
	want, err := filepath.EvalSymlinks(binary)
	if err != nil {
		return 0, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the parenthesised command: state ppid …
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) < 2 || fields[1] != strconv.Itoa(self) {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == want {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no child process running %s", want)
}

// memoryKiB reads VmHWM (peak resident set) and VmRSS of a process.
func memoryKiB(tb harnessT, pid int) (peak, current int64) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatalf("read status of %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmHWM:":
			peak = v
		case "VmRSS:":
			current = v
		}
	}
	return peak, current
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return sorted[i]
}

func median(values []time.Duration) time.Duration {
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	return percentile(sorted, 0.5)
}

func printBenchTable(subjects []*benchSubject, serverArgs []string) {
	ours, builtin := subjects[0].result, subjects[1].result
	slices.Sort(ours.latencies)
	slices.Sort(builtin.latencies)
	throughput := func(r benchResult) float64 { return float64(r.executes) / r.elapsed.Seconds() }
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	mib := func(kib int64) float64 { return float64(kib) / 1024 }
	rows := []struct {
		metric    string
		ours, bin float64
		format    string
	}{
		{"Execute throughput (calls/s)", throughput(ours), throughput(builtin), "%.0f"},
		{"Execute latency p50 (µs)", us(percentile(ours.latencies, 0.50)), us(percentile(builtin.latencies, 0.50)), "%.0f"},
		{"Execute latency p99 (µs)", us(percentile(ours.latencies, 0.99)), us(percentile(builtin.latencies, 0.99)), "%.0f"},
		{"start → handshake line, median (ms)", ms(median(ours.handshakes)), ms(median(builtin.handshakes)), "%.1f"},
		{"new manager → first AppliesTo, median (ms)", ms(median(ours.firstCalls)), ms(median(builtin.firstCalls)), "%.1f"},
		{"CleanupClients (shutdown), median (ms)", ms(median(ours.teardowns)), ms(median(builtin.teardowns)), "%.1f"},
		{"peak RSS after run, VmHWM (MiB)", mib(ours.peakRSSKiB), mib(builtin.peakRSSKiB), "%.1f"},
		{"RSS after run, VmRSS (MiB)", mib(ours.currentRSSKiB), mib(builtin.currentRSSKiB), "%.1f"},
	}
	fmt.Printf("Velero client code %s; %d measured Executes per plugin, one process each, after warm-up; %d process starts each\n",
		veleroClientVersion(), ours.executes, len(ours.handshakes))
	fmt.Printf("plugin args: %s\n", strings.Join(serverArgs, " "))
	fmt.Printf("ours    = %s (%s)\n", subjects[0].label, subjects[0].binary)
	fmt.Printf("builtin = %s (%s run-plugins; via the manager it is reached through one extra exec of this\n"+
		"          binary as os.Args[0] run-plugins, which a real server does not pay)\n\n", subjects[1].label, subjects[1].binary)
	fmt.Printf("%-44s %14s %14s %14s\n", "metric", "ours", "builtin", "ours/builtin")
	for _, r := range rows {
		ratio := "-"
		if r.bin != 0 {
			ratio = fmt.Sprintf("%.3f", r.ours/r.bin)
		}
		fmt.Printf("%-44s %14s %14s %14s\n", r.metric, fmt.Sprintf(r.format, r.ours), fmt.Sprintf(r.format, r.bin), ratio)
	}
}

// veleroClientVersionStamp is set by hack/build-conformance.sh (-ldflags -X): test binaries carry no module list.
var veleroClientVersionStamp string

func veleroClientVersion() string {
	if veleroClientVersionStamp != "" {
		return veleroClientVersionStamp
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "github.com/vmware-tanzu/velero" {
				return dep.Version
			}
		}
	}
	return "(unknown)"
}
