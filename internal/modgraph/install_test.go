package modgraph

import (
	"archive/zip"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/reliable-go/reliable/internal/testenv"
)

// Issue 17: reliablectl installs with `go install`. A nested module whose
// go.mod has a replace directive cannot be installed that way, and
// cmd/reliablectl builds against the checkout through one; scripts/release.sh
// pin is the release step that swaps it for a published version of the
// root module. This test releases both modules into a local module proxy
// (a directory in the layout GOPROXY=file:// reads) and installs from it as
// a user would: first the module as committed (refused: the replace), then
// the module after `release.sh pin` (installed, and the binary runs).
func TestReliablectlInstallsWithGoInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("packs the modules and installs reliablectl: skipped with -short")
	}
	const ctl = sdk + "/cmd/reliablectl"
	root := testenv.RepoRoot()
	tmp := t.TempDir()
	proxy := filepath.Join(tmp, "proxy")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	// The released modules come from the local proxy, the others as any
	// build gets them. The module cache is this machine's (a fresh one makes
	// the test recompile every dependency: 3 minutes), so the releases are
	// removed from it afterwards: a later run must install what it packed.
	cache := goEnv(t, "GOMODCACHE")
	t.Cleanup(func() { removeFromModCache(t, cache, sdk) })
	removeFromModCache(t, cache, sdk)
	env := append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod",
		"GOPROXY=file://"+proxy+","+goEnv(t, "GOPROXY"),
		// The release is not in the checksum database.
		"GONOSUMDB="+sdk)
	run := func(dir string, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	// Versions unique to this run: the go command takes a module version's
	// contents as immutable and keeps an index of each in its build cache,
	// so a version packed again with other files would build from a stale
	// index ("could not import" a package the earlier run had not).
	run1 := strconv.FormatInt(time.Now().UnixNano(), 10)
	refused, released := "v0.98.0-test."+run1, "v0.99.0-test."+run1

	files := trackedFiles(t, root)
	packModule(t, proxy, sdk, released, root, moduleFiles(files, ""))

	// As committed: the replace makes go install refuse the module.
	packModule(t, proxy, ctl, refused, filepath.Join(root, "cmd", "reliablectl"), moduleFiles(files, "cmd/reliablectl"))
	out, err := run(tmp, "go", "install", ctl+"@"+refused)
	if err == nil || !strings.Contains(out, "replace") {
		t.Fatalf("go install of reliablectl with its development go.mod: err %v, want a refusal naming the replace directive:\n%s", err, out)
	}

	// Released: pin, pack, install, run.
	rel := filepath.Join(tmp, "release")
	for _, f := range moduleFiles(files, "cmd/reliablectl") {
		copyFile(t, filepath.Join(root, "cmd", "reliablectl", f), filepath.Join(rel, "cmd", "reliablectl", f))
	}
	copyFile(t, filepath.Join(root, "scripts", "release.sh"), filepath.Join(rel, "scripts", "release.sh"))
	if out, err := run(rel, "bash", "scripts/release.sh", "pin", released); err != nil {
		t.Fatalf("release.sh pin: %v\n%s", err, out)
	}
	packModule(t, proxy, ctl, released, filepath.Join(rel, "cmd", "reliablectl"), moduleFiles(files, "cmd/reliablectl"))
	bin := filepath.Join(tmp, "bin")
	env = append(env, "GOBIN="+bin)
	if out, err := run(tmp, "go", "install", ctl+"@"+released); err != nil {
		t.Fatalf("go install %s@%s: %v\n%s", ctl, released, err, out)
	}
	out, err = run(tmp, filepath.Join(bin, "reliablectl"), "--help")
	if err != nil || !strings.Contains(out, "reliablectl") {
		t.Fatalf("installed reliablectl --help: %v\n%s", err, out)
	}
	t.Logf("go install %s@%s from a local proxy after release.sh pin: installed, --help runs", ctl, released)
}

// removeFromModCache deletes every version of module and of the modules
// under its path from the module cache (its files are read-only). Only this
// test puts them there: every other build uses the checkout, through go.work
// or a replace.
func removeFromModCache(t *testing.T, cache, module string) {
	t.Helper()
	m := filepath.FromSlash(module)
	dirs, _ := filepath.Glob(filepath.Join(cache, m+"@*"))
	dirs = append(dirs, filepath.Join(cache, m), filepath.Join(cache, "cache", "download", m))
	for _, dir := range dirs {
		_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
			if err == nil && info.IsDir() {
				_ = os.Chmod(p, 0o755)
			}
			return nil
		})
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing the test's releases from the module cache: %v", err)
		}
	}
}

func goEnv(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatalf("go env %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

// trackedFiles lists the files git tracks under root, slash-separated: what
// a tag of the repository holds.
func trackedFiles(t *testing.T, root string) []string {
	t.Helper()
	cmd := exec.Command("git", "ls-files", "-z")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	var files []string
	for _, f := range strings.Split(string(out), "\x00") {
		if f != "" {
			files = append(files, f)
		}
	}
	return files
}

// moduleFiles returns the files of the module in dir ("" for the root),
// relative to dir: those under it and not under a nested module, as the
// module proxy packs a module.
func moduleFiles(files []string, dir string) []string {
	var nested []string
	for _, f := range files {
		if d := filepath.ToSlash(filepath.Dir(f)); filepath.Base(f) == "go.mod" && d != "." && d != dir {
			nested = append(nested, d+"/")
		}
	}
	prefix := ""
	if dir != "" {
		prefix = dir + "/"
	}
	var out []string
next:
	for _, f := range files {
		if !strings.HasPrefix(f, prefix) {
			continue
		}
		for _, n := range nested {
			if strings.HasPrefix(f, n) && (prefix == "" || len(n) > len(prefix)) {
				continue next
			}
		}
		out = append(out, strings.TrimPrefix(f, prefix))
	}
	return out
}

// packModule writes module@version into the file proxy at proxy: its .info,
// .mod and .zip and the version list.
func packModule(t *testing.T, proxy, module, version, dir string, files []string) {
	t.Helper()
	base := filepath.Join(proxy, filepath.FromSlash(module), "@v")
	var zb bytes.Buffer
	zw := zip.NewWriter(&zb)
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f)))
		if err != nil {
			t.Fatal(err)
		}
		w, err := zw.Create(module + "@" + version + "/" + f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(base, version+".zip"), zb.String())
	write(t, filepath.Join(base, version+".mod"), string(gomod))
	write(t, filepath.Join(base, version+".info"), `{"Version":"`+version+`","Time":"2026-12-05T00:00:00Z"}`)
	list, _ := os.ReadFile(filepath.Join(base, "list"))
	write(t, filepath.Join(base, "list"), string(list)+version+"\n")
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	write(t, to, string(b))
}
