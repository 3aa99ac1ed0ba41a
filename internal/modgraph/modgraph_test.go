package modgraph

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reliable-go/reliable/internal/testenv"
)

const sdk = "github.com/reliable-go/reliable"

// The SDK's public packages, as a service imports them.
var (
	common = []string{sdk, sdk + "/producer", sdk + "/consumer", sdk + "/outbox", sdk + "/idempotency",
		sdk + "/retry", sdk + "/ordering", sdk + "/service"}
	programs = map[string][]string{
		// Every public package, reliabletest included (services import it in their tests).
		"all": append(append([]string{}, common...), sdk+"/adapters/kafka", sdk+"/adapters/rabbitmq",
			sdk+"/observability", sdk+"/observability/kafkalag", sdk+"/reliabletest"),
		// observability is broker-neutral; its Kafka lag readers are in
		// observability/kafkalag, which only Kafka services import.
		"rabbitmq": append(append([]string{}, common...), sdk+"/adapters/rabbitmq", sdk+"/observability"),
		"kafka": append(append([]string{}, common...), sdk+"/adapters/kafka", sdk+"/observability",
			sdk+"/observability/kafkalag"),
		// A Kafka service without the SDK's telemetry: the adapter alone.
		"kafka-bare": append(append([]string{}, common...), sdk+"/adapters/kafka"),
	}
)

// Packages a program compiles only if it imports package observability:
// the adapters (and kafkalag's home, kept out of adapters/kafka) must not
// pull the metrics stack into a service that exports none.
var telemetryOnly = []string{"github.com/prometheus/", "go.opentelemetry.io/otel/sdk", "go.opentelemetry.io/otel/exporters"}

// Modules that only the SDK's own tests, examples, campaign, benchmarks and
// tools need (matched as substrings of module paths): none may be in a
// user's module graph.
var notInGraph = []string{
	"testcontainers", "docker", "moby", "containerd", "opencontainers", // containers
	"chromedp",                               // browser
	"twmb/franz-go",                          // kfake, the demo's embedded Kafka
	"toxiproxy", "gotest.tools", "watermill", // fault proxy, test runner, benchmark baseline
}

// Test libraries: they may appear in `go list -m all` only because a
// third-party dependency's go.mod requires them for its own tests (pgx and
// sarama require testify, go-redis bsm/ginkgo and bsm/gomega; every program
// using them has these entries); the SDK must not require them, and no
// program may compile them.
var testLibraries = []string{"stretchr/testify", "ginkgo", "gomega", "go-cmp", "gotest.tools", "quicktest"}

// Before issue 16 (commit c736762, go 1.26.8, one module) this user module's
// `go list -m all` had 136 modules, among them testcontainers and its Docker
// client, chromedp, franz-go and kfake; its RabbitMQ-only program compiled
// sarama and its Kafka-only one amqp091-go.
func TestUserModuleGraph(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a user module with the minimum Go release: skipped with -short")
	}
	root := testenv.RepoRoot()
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := directive(gomod, "go")
	if goVersion == "" {
		t.Fatal("the SDK's go.mod has no go directive")
	}
	if directive(gomod, "module") != sdk {
		t.Fatalf("%s/go.mod is not the SDK's", root)
	}
	toolchain := "go" + goVersion // e.g. go1.25.0: the lowest release the directive allows

	dir := t.TempDir()
	write(t, filepath.Join(dir, "go.mod"), "module example.com/user\n\ngo "+goVersion+
		"\n\nrequire "+sdk+" v0.0.0\n\nreplace "+sdk+" => "+root+"\n")
	for name, pkgs := range programs {
		var b strings.Builder
		b.WriteString("// Command " + name + " imports the SDK as a service would.\npackage main\n\nimport (\n")
		for _, p := range pkgs {
			b.WriteString("\t_ \"" + p + "\"\n")
		}
		b.WriteString(")\n\nfunc main() {}\n")
		write(t, filepath.Join(dir, name, "main.go"), b.String())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod", "GOTOOLCHAIN="+toolchain)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return string(out)
	}

	if v := run("version"); !strings.HasPrefix(v, "go version "+toolchain+" ") {
		t.Fatalf("go version = %q, want %s", v, toolchain)
	}
	run("mod", "tidy")
	run("build", "./...") // with the minimum release: the SDK compiles there

	modules := lines(run("list", "-m", "all"))
	t.Logf("user module built with %s; `go list -m all`: %d modules (136 before issue 16)", toolchain, len(modules))
	for _, m := range modules {
		for _, bad := range notInGraph {
			if strings.Contains(m, bad) {
				t.Errorf("module graph has %s (%s)", m, bad)
			}
		}
	}
	for _, edge := range lines(run("mod", "graph")) {
		from, to, _ := strings.Cut(edge, " ")
		if !strings.HasPrefix(from, sdk+"@") {
			continue
		}
		for _, bad := range append(append([]string{}, notInGraph...), testLibraries...) {
			if strings.Contains(to, bad) {
				t.Errorf("the SDK's go.mod requires %s (%s)", to, bad)
			}
		}
	}

	for name := range programs {
		deps := lines(run("list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./"+name))
		t.Logf("%s program: %d packages outside the standard library", name, len(deps))
		for _, p := range deps {
			for _, bad := range append(append([]string{}, notInGraph...), testLibraries...) {
				if strings.Contains(p, bad) {
					t.Errorf("%s program compiles %s (%s)", name, p, bad)
				}
			}
			if name == "rabbitmq" && strings.HasPrefix(p, "github.com/IBM/sarama") {
				t.Errorf("RabbitMQ-only program compiles %s", p)
			}
			if strings.HasPrefix(name, "kafka") && strings.HasPrefix(p, "github.com/rabbitmq/amqp091-go") {
				t.Errorf("Kafka-only program %s compiles %s", name, p)
			}
			for _, tel := range telemetryOnly {
				if name == "kafka-bare" && strings.HasPrefix(p, tel) {
					t.Errorf("%s program (no observability) compiles %s", name, p)
				}
			}
		}
	}
}

// directive returns the first argument of the go.mod line starting with name.
func directive(gomod []byte, name string) string {
	for _, l := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == name {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
