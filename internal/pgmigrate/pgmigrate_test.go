package pgmigrate

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestRenderInVersionOrder(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{
		"m/002_index.sql":  {Data: []byte(`CREATE INDEX {{ident "_idx"}} ON {{.Table}} (a); -- {{.Data.x}}`)},
		"m/001_create.sql": {Data: []byte(`CREATE TABLE {{.Table}} (a int); CREATE TABLE {{qual "_leases"}} ();`)},
		"m/README.md":      {Data: []byte("not a migration")},
	}
	migs, err := Render(fsys, "m", Target{Schema: "app", Table: "retry", Data: map[string]string{"x": "y"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(migs) != 2 || migs[0].Version != 1 || migs[1].Version != 2 {
		t.Fatalf("migrations %+v", migs)
	}
	if want := `CREATE TABLE "app"."retry" (a int); CREATE TABLE "app"."retry_leases" ();`; migs[0].SQL != want {
		t.Errorf("001 = %q, want %q", migs[0].SQL, want)
	}
	if want := `CREATE INDEX "retry_idx" ON "app"."retry" (a); -- y`; migs[1].SQL != want {
		t.Errorf("002 = %q, want %q", migs[1].SQL, want)
	}
}

func TestRenderRejectsBadFiles(t *testing.T) {
	t.Parallel()
	for name, fsys := range map[string]fstest.MapFS{
		"no version":   {"m/create.sql": {Data: []byte("x")}},
		"duplicate":    {"m/001_a.sql": {Data: []byte("x")}, "m/001_b.sql": {Data: []byte("y")}},
		"bad template": {"m/001_a.sql": {Data: []byte("{{.Nope}}")}},
	} {
		if _, err := Render(fsys, "m", Target{Table: "t"}); err == nil || !strings.Contains(err.Error(), "pgmigrate") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}
