package testenv

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeEngine serves /_ping on a unix socket, answering with status and body.
func fakeEngine(t *testing.T, status int, body string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_ping" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "unix://" + sock
}

func TestPingDocker(t *testing.T) {
	if err := pingDocker(fakeEngine(t, http.StatusOK, "OK")); err != nil {
		t.Fatalf("engine answering OK: %v", err)
	}
	if err := pingDocker(fakeEngine(t, http.StatusInternalServerError, "down")); err == nil {
		t.Fatal("engine answering 500: no error")
	}
	if err := pingDocker("unix://" + filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Fatal("no socket: no error")
	}
	if err := pingDocker("ssh://host"); err == nil {
		t.Fatal("ssh://: no error")
	}
}

// fakeHelper writes a module whose program behaves like
// internal/testenv/containers with the given main body.
func fakeHelper(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	mod := "module example.com/fakehelper\n\ngo 1.25.0\n"
	src := "package main\n\nimport (\n\t\"fmt\"\n\t\"io\"\n\t\"os\"\n)\n\nvar _ = io.Discard\nvar _ = fmt.Println\n\nfunc main() {\n" + body + "\n}\n"
	for name, s := range map[string]string{"go.mod": mod, "main.go": src} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("GOWORK", "off")
	return dir
}

// The helper prints the endpoints and "ready", then keeps its container until
// its stdin closes: runHelper must return the endpoints while the helper
// lives, and closing the returned writer must end the helper.
func TestRunHelperReadsEndpointsAndKeepsHelperAlive(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles a helper with go run")
	}
	gone := filepath.Join(t.TempDir(), "gone")
	dir := fakeHelper(t, `
	fmt.Println("RELIABLE_REDIS_ADDR=127.0.0.1:16379")
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	os.WriteFile(`+"`"+gone+"`"+`, nil, 0o644)`)
	env, keep, err := runHelper(t.Context(), dir, "redis")
	if err != nil {
		t.Fatal(err)
	}
	if got := env[EnvRedisAddr]; got != "127.0.0.1:16379" {
		t.Fatalf("%s = %q", EnvRedisAddr, got)
	}
	if _, err := os.Stat(gone); err == nil {
		t.Fatal("the helper ended while its stdin was open")
	}
	_ = keep.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(gone); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the helper did not end within 30 s of its stdin closing")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunHelperReportsItsError(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles a helper with go run")
	}
	dir := fakeHelper(t, `
	fmt.Fprintln(os.Stderr, "containers: kafka: image pull failed")
	os.Exit(1)`)
	_, _, err := runHelper(t.Context(), dir, "kafka")
	if err == nil || !strings.Contains(err.Error(), "image pull failed") {
		t.Fatalf("err = %v, want the helper's stderr", err)
	}
}
