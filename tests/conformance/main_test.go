// Package conformance drives a Velero plugin binary through Velero's own client-side plugin code (process registry,
// plugin manager, restartable actions, go-plugin client), the code the Velero server runs, so the plugin is checked
// against the real wire contract of each Velero release it is built with (hack/build-conformance.sh).
//
// Configuration comes from the environment:
//
//	REPLICADR_PLUGIN_BINARY    the plugin binary under test (required by the pv-site-remap and snapshot-to-pvc tests)
//	KUBECONFIG                 a real kube-apiserver; the plugin inherits it like it inherits the server's environment
//	VELERO_NAMESPACE           namespace of the plugin ConfigMaps (default "velero")
//	REPLICADR_VELERO_BUILTINS  optional: a `velero` binary whose built-in plugins this binary serves as Velero's
//	                           built-ins (see serveBuiltinPlugins); enables the change-storage-class reference test
//
// The snapshot-to-pvc test installs the CSI snapshot CRDs from tests/crds, found upwards of the working directory or of
// REPLICADR_PLUGIN_BINARY (see repoFile).
//
// The same binary also has a benchmark mode: `conformance.test bench` (see bench_test.go).
package conformance

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"syscall"
	"testing"

	"github.com/vmware-tanzu/velero/pkg/features"
	"github.com/vmware-tanzu/velero/pkg/plugin/framework"
)

// veleroServerArgs is what this process pretends to have been started with: `velero server <args>`. Velero ≥ 1.15
// hands os.Args[2:] verbatim to every plugin process, so plugins must take the server's flags, in both
// `--flag=value` and `--flag value` form, and ignore the ones they do not know. Velero ≤ 1.14 passes only
// `--log-level <level> [--features <list>]`, derived from the log level and the enabled features below.
func veleroServerArgs() []string {
	return []string{
		"--log-level=debug",
		"--features=EnableCSI",
		"--uploader-type=kopia",
		"--namespace", veleroNamespace(), // overrides VELERO_NAMESPACE in Velero's client factory, so keep them equal
		"--client-qps=50",
		"--client-burst=100",
		"--default-volumes-to-fs-backup=false",
		"--keep-latest-maintenance-jobs", "3",
	}
}

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "run-plugins" {
		serveBuiltinPlugins()
		return
	}
	features.Enable("EnableCSI")
	matchBuiltinsToClient()
	// Parse the test flags now, then make os.Args look like the Velero server's, because Velero's registry derives
	// the plugin argv from os.Args and runs os.Args[0] for its built-in plugins.
	flag.Parse()
	if flag.NArg() > 0 && flag.Arg(0) == "bench" {
		os.Exit(runBench(flag.Args()[1:])) // sets os.Args itself, from its own flags
	}
	os.Args = append([]string{os.Args[0], "server"}, veleroServerArgs()...)
	os.Exit(m.Run())
}

// matchBuiltinsToClient drops REPLICADR_VELERO_BUILTINS when that velero is another release than the client code
// this binary is built with: built-ins of a newer server list plugin kinds an older client rejects (1.14's registry
// fails discovery on ItemBlockAction). Plugin processes inherit the environment, so the run-plugins child sees the
// decision too.
func matchBuiltinsToClient() {
	velero := os.Getenv("REPLICADR_VELERO_BUILTINS")
	if velero == "" {
		return
	}
	out, err := exec.Command(velero, "version", "--client-only").Output()
	m := regexp.MustCompile(`Version:\s*(\S+)`).FindSubmatch(out)
	switch {
	case err != nil || m == nil:
		fmt.Fprintf(os.Stderr, "REPLICADR_VELERO_BUILTINS=%s: cannot read its version (%v); serving no built-ins\n", velero, err)
	case string(m[1]) != veleroClientVersion():
		fmt.Fprintf(os.Stderr, "REPLICADR_VELERO_BUILTINS is velero %s, this harness is built against %s: serving no built-ins\n",
			m[1], veleroClientVersion())
	default:
		return
	}
	os.Unsetenv("REPLICADR_VELERO_BUILTINS")
}

// serveBuiltinPlugins answers the registry's `os.Args[0] run-plugins …` call, which the Velero server answers with
// its built-in plugins. With REPLICADR_VELERO_BUILTINS pointing at a real velero binary this process becomes
// `velero run-plugins` (exec, keeping argv[0] so the reported command stays this binary and later launches come back
// here), giving the registry exactly the built-ins a real server has, name clashes included. Without it, an empty
// Velero framework server answers: the discovery path is the same, and the plugin under test does not depend on any
// built-in, so conformance need not compile or run all of Velero's server-side code.
func serveBuiltinPlugins() {
	if velero := os.Getenv("REPLICADR_VELERO_BUILTINS"); velero != "" {
		err := syscall.Exec(velero, append([]string{os.Args[0]}, os.Args[1:]...), os.Environ())
		fmt.Fprintf(os.Stderr, "exec %s run-plugins: %v\n", velero, err)
		os.Exit(1)
	}
	framework.NewServer().Serve()
}
