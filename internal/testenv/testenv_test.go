package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestParseEnv(t *testing.T) {
	in := `# comment
export RELIABLE_KAFKA_BROKERS='127.0.0.1:19092,127.0.0.1:19093'
RELIABLE_POSTGRES_DSN=postgres://u:p@127.0.0.1:5432/db?sslmode=disable

RELIABLE_AMQP_URL="amqp://u:p@127.0.0.1:5672/"
not a pair
`
	got := ParseEnv(strings.NewReader(in))
	want := map[string]string{
		"RELIABLE_KAFKA_BROKERS": "127.0.0.1:19092,127.0.0.1:19093",
		"RELIABLE_POSTGRES_DSN":  "postgres://u:p@127.0.0.1:5432/db?sslmode=disable",
		"RELIABLE_AMQP_URL":      "amqp://u:p@127.0.0.1:5672/",
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestUniqueName(t *testing.T) {
	valid := regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	seen := map[string]bool{}
	for _, prefix := range []string{"orders", "Order-Events.v1", "", "9lives", strings.Repeat("x", 80)} {
		for range 3 {
			n := UniqueName(t, prefix)
			if !valid.MatchString(n) || len(n) > 61 {
				t.Errorf("UniqueName(%q) = %q: not a safe identifier", prefix, n)
			}
			if seen[n] {
				t.Errorf("UniqueName(%q) = %q twice", prefix, n)
			}
			seen[n] = true
		}
	}
	if n := UniqueName(t, "orders"); !strings.HasPrefix(n, "orders_uniquename_") {
		t.Errorf("UniqueName = %q, want prefix and test name", n)
	}
	t.Run("Sub Test/With Spaces", func(t *testing.T) {
		if n := UniqueName(t, "q"); !valid.MatchString(n) {
			t.Errorf("UniqueName = %q", n)
		}
	})
}

func TestUnavailableSkipsUnlessRequired(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") == "1" {
		unavailable(t, "no such service")
		t.Fatal("unavailable returned")
	}
	for _, value := range []string{"", "0", "1", "yes", "TRUE"} {
		required := value != "" && value != "0"
		cmd := exec.Command(os.Args[0], "-test.run=^TestUnavailableSkipsUnlessRequired$", "-test.v")
		cmd.Env = append(os.Environ(), "TESTENV_CHILD=1", EnvRequireServices+"="+value)
		out, err := cmd.CombinedOutput()
		switch {
		case !required && (err != nil || !strings.Contains(string(out), "--- SKIP")):
			t.Errorf("not required: want a skip, got err=%v\n%s", err, out)
		case required && (err == nil || !strings.Contains(string(out), "--- FAIL")):
			t.Errorf("required: want a failure, got err=%v\n%s", err, out)
		}
	}
}

// TestLockExclusiveWaitsForShared runs a child process that holds the shared lock
// for a while and checks that an exclusive request here waits until it is gone.
func TestLockExclusiveWaitsForShared(t *testing.T) {
	const service = "testenv-selftest"
	if os.Getenv("TESTENV_LOCK_CHILD") == "1" {
		lockService(t, service, lockShared)
		os.Stdout.WriteString("LOCKED\n")
		time.Sleep(1500 * time.Millisecond)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockExclusiveWaitsForShared$", "-test.v")
	cmd.Env = append(os.Environ(), "TESTENV_LOCK_CHILD=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	var seen string
	for !strings.Contains(seen, "LOCKED") {
		n, err := stdout.Read(buf)
		if err != nil {
			t.Fatalf("child: %v (output %q)", err, seen)
		}
		seen += string(buf[:n])
	}
	start := time.Now()
	t.Run("exclusive", func(t *testing.T) {
		lockService(t, service, lockExclusive)
		lockService(t, service, lockShared) // re-entrant inside the process
	})
	waited := time.Since(start)
	go func() { _, _ = stdout.Read(buf) }()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	if waited < time.Second {
		t.Errorf("exclusive lock taken after %v while the child held the shared lock", waited)
	}
	// Shared after exclusive, in the same process, must not block.
	done := make(chan struct{})
	go func() {
		defer close(done)
		t.Run("shared", func(t *testing.T) { lockService(t, service, lockShared) })
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("shared lock blocked after the exclusive holder was released")
	}
}

// TestLockCoversChildProcess: a child process started while this one holds the lock
// exclusively gets the service without waiting (it would otherwise deadlock).
func TestLockCoversChildProcess(t *testing.T) {
	const service = "testenv-selftest-child"
	if os.Getenv("TESTENV_LOCK_CHILD2") == "1" {
		lockService(t, service, lockShared)
		lockService(t, service, lockExclusive)
		return
	}
	t.Run("holder", func(t *testing.T) {
		lockService(t, service, lockExclusive)
		if got := os.Getenv(heldEnvName(service)); got != "exclusive" {
			t.Fatalf("%s = %q while holding the lock", heldEnvName(service), got)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestLockCoversChildProcess$")
		cmd.Env = append(os.Environ(), "TESTENV_LOCK_CHILD2=1", "RELIABLE_LOCK_TIMEOUT=3s")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("child could not take the lock its parent holds: %v\n%s", err, out)
		}
	})
	if v := os.Getenv(heldEnvName(service)); v != "" {
		t.Errorf("%s = %q after release", heldEnvName(service), v)
	}
}

// TestRequiredAcceptsUsualTrueValues: RELIABLE_REQUIRE_SERVICES=yes (or TRUE, on)
// must fail a test whose service is missing, not skip it.
func TestRequiredAcceptsUsualTrueValues(t *testing.T) {
	for v, want := range map[string]bool{
		"1": true, "true": true, "TRUE": true, "True": true, "yes": true, "YES": true, "on": true, " on ": true,
		"": false, "0": false, "false": false, "no": false, "off": false, "2": false, "enabled": false,
	} {
		t.Setenv(EnvRequireServices, v)
		if got := Required(); got != want {
			t.Errorf("%s=%q: Required() = %v, want %v", EnvRequireServices, v, got, want)
		}
	}
}

// The examples, the soak campaign, reliablectl and bench/outbox are modules of
// their own: their tests must find the SDK's root (its .cache/services.env and
// scripts), not their own go.mod.
func TestRepoRootSkipsNestedModules(t *testing.T) {
	root := t.TempDir()
	write := func(rel, s string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module github.com/reliable-go/reliable\n\ngo 1.25.0\n")
	write("examples/go.mod", "module github.com/reliable-go/reliable/examples\n\ngo 1.25.0\n")
	write("examples/demo/main.go", "package main\n")
	t.Chdir(filepath.Join(root, "examples", "demo"))
	if got := RepoRoot(); got != root {
		t.Fatalf("RepoRoot from examples/demo = %q, want %q", got, root)
	}
	// Outside the SDK's tree it still finds the nearest module.
	other := t.TempDir()
	write2 := filepath.Join(other, "go.mod")
	if err := os.WriteFile(write2, []byte("module example.com/user\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(other)
	if got := RepoRoot(); got != other {
		t.Fatalf("RepoRoot in another module = %q, want %q", got, other)
	}
}
