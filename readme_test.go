package reliable_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeQuickStartIsCompiled checks that every Go block of the README's
// "Quick start" section appears, verbatim up to white space, in
// quickstart_example_test.go, which go vet and go test compile.
func TestReadmeQuickStartIsCompiled(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("quickstart_example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme)
	start := strings.Index(section, "## Quick start")
	if start < 0 {
		t.Fatal("README has no Quick start section")
	}
	section = section[start+len("## Quick start"):]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	blocks := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllStringSubmatch(section, -1)
	if len(blocks) == 0 {
		t.Fatal("the Quick start section has no Go block")
	}
	space := regexp.MustCompile(`\s+`)
	norm := func(s string) string { return space.ReplaceAllString(strings.TrimSpace(s), " ") }
	compiled := norm(string(example))
	for i, b := range blocks {
		if !strings.Contains(compiled, norm(b[1])) {
			t.Errorf("Go block %d of the README's quick start is not in quickstart_example_test.go:\n%s", i+1, b[1])
		}
	}
}
