package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Postgres skips, even with services required, when the DSN's PostgreSQL is
// not a local cluster of scripts/services.sh: there is nothing it may restart.
// It never gets to the lock or the script in these cases.
func TestPostgresSkipsWhenNotTheLocalCluster(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") == "1" {
		Postgres(t)
		t.Fatal("Postgres returned for a server it cannot restart")
	}
	for _, dsn := range []string{
		"postgres://u:p@db.example.com:5432/d?sslmode=disable", // elsewhere
		"postgres://u:p@10.1.2.3:5432/d?sslmode=disable",       // elsewhere
		"postgres://u:p@127.0.0.1:1/d?sslmode=disable",         // local, but no cluster listens there
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPostgresSkipsWhenNotTheLocalCluster$", "-test.v")
		cmd.Env = append(os.Environ(), "TESTENV_CHILD=1", EnvRequireServices+"=1", EnvPostgresDSN+"="+dsn)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- SKIP") || !strings.Contains(string(out), "no restart") {
			t.Errorf("%s: want a skip that says why, got err=%v\n%s", dsn, err, out)
		}
	}
}

func TestLoopbackHost(t *testing.T) {
	for h, want := range map[string]bool{
		"localhost": true, "127.0.0.1": true, "127.0.0.2": true, "::1": true,
		"10.0.0.1": false, "db.example.com": false, "/var/run/postgresql": true, "": false,
	} {
		if got := loopbackHost(h); got != want {
			t.Errorf("loopbackHost(%q) = %v, want %v", h, got, want)
		}
	}
}
