package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// result is one in-process run of the CLI.
type result struct {
	code           int
	stdout, stderr string
}

// cli runs reliablectl with args and env as its whole environment.
func cli(t testing.TB, env map[string]string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	a := &app{getenv: func(k string) string { return env[k] }, stdout: &out, stderr: &errb}
	code := a.run(ctx, args)
	r := result{code: code, stdout: out.String(), stderr: errb.String()}
	t.Logf("reliablectl %s -> %d\n%s%s", strings.Join(args, " "), code, r.stdout, r.stderr)
	return r
}

// expect fails t unless r exited with code; for a non-zero code, stderr must
// be one line containing want.
func (r result) expect(t testing.TB, code int, want string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d (stderr %q)", r.code, code, r.stderr)
	}
	if code == exitOK {
		if r.stderr != "" {
			t.Fatalf("stderr not empty on success: %q", r.stderr)
		}
		return
	}
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
		t.Fatalf("stderr is not one line: %q", r.stderr)
	}
	if !strings.Contains(r.stderr, want) {
		t.Fatalf("stderr %q does not say %q", r.stderr, want)
	}
}

// decode parses the JSON stdout of r into v.
func (r result) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, r.stdout)
	}
}

var quietLog = slog.New(slog.DiscardHandler)

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func contains(s, sub string) bool { return strings.Contains(s, sub) }
