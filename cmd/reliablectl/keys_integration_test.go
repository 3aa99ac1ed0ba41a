package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/retry"
)

// Binary keys (issue 17): a Java long key (8 bytes with NULs), invalid UTF-8
// and a printable key that looks like a quoted one are shown distinctly,
// never with U+FFFD, in table and JSON output and with --key-format hex;
// --key-hex names a binary key in a flag. Before, the table printed the
// long's key as NULs and "*", the invalid one as U+FFFD, and no flag could
// name them.
func TestBinaryKeys(t *testing.T) {
	dsn, schema, pool := pgSchema(t)
	ctx := testenv.Context(t, 60*time.Second)
	const group = "kitchen"
	table, err := retry.NewTable(pool, retry.TableConfig{Group: group, Schema: schema, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	if err := table.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	const (
		long      = "\x00\x00\x00\x00\x00\x00\x00*" // Java's LongSerializer of 42
		invalid   = "\xff\xfeorder"
		lookAlike = `"\x00\x00\x00\x00\x00\x00\x00*"` // printable text
	)
	for _, k := range []string{long, invalid, lookAlike} {
		m := &reliable.Message{ID: reliable.NewID(), Topic: "orders", Key: k, Payload: []byte("{}")}
		m.Delivery.Attempt = 1
		if err := table.DeadLetter(ctx, m, reliable.Permanent(errors.New("poison"))); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{envPostgresDSN: dsn}
	args := func(extra ...string) []string {
		return append([]string{"retry", extra[0], "--group", group, "--schema", schema}, extra[1:]...)
	}

	r := cli(t, env, args("list")...)
	r.expect(t, exitOK, "")
	if strings.ContainsRune(r.stdout, '\uFFFD') || strings.ContainsRune(r.stdout, 0) {
		t.Fatalf("the table shows U+FFFD or a NUL:\n%q", r.stdout)
	}
	for _, want := range []string{`"\x00\x00\x00\x00\x00\x00\x00*"`, `"\xff\xfeorder"`, `"\"\\x00\\x00\\x00\\x00\\x00\\x00\\x00*\""`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the table does not show the key as %s:\n%s", want, r.stdout)
		}
	}

	r = cli(t, env, args("list", "-o", "json")...)
	r.expect(t, exitOK, "")
	var list struct {
		Entries []entryView `json:"entries"`
	}
	r.decode(t, &list)
	hexes := map[string]bool{}
	for _, e := range list.Entries {
		hexes[e.KeyHex] = true
	}
	if !hexes["000000000000002a"] || !hexes["fffe6f72646572"] || !hexes[""] || len(list.Entries) != 3 {
		t.Fatalf("JSON key_hex %v, want the long's, the invalid key's and none for the printable one", hexes)
	}

	r = cli(t, env, args("list", "--key-format", "hex")...)
	r.expect(t, exitOK, "")
	if !strings.Contains(r.stdout, "000000000000002a") || !strings.Contains(r.stdout, "225c7830") {
		t.Fatalf("--key-format hex:\n%s", r.stdout)
	}

	// --key-hex names the long's key, and only it.
	r = cli(t, env, args("list", "--key-hex", "000000000000002a", "-o", "json")...)
	r.expect(t, exitOK, "")
	r.decode(t, &list)
	if len(list.Entries) != 1 || list.Entries[0].KeyHex != "000000000000002a" {
		t.Fatalf("list --key-hex: %+v", list.Entries)
	}
	cli(t, env, args("release", "--key-hex", "000000000000002a")...).expect(t, exitOK, "")
	entries, err := table.List(ctx, retry.ListFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		want := retry.StateDead
		if e.Message.Key == long {
			want = retry.StateReleased
		}
		if e.State != want {
			t.Errorf("key %q is %s, want %s", e.Message.Key, e.State, want)
		}
	}
	cli(t, env, args("release", "--key-hex", "0x00zz")...).expect(t, exitUsage, `invalid argument "0x00zz" for "--key-hex"`)
	cli(t, env, args("release", "--key", "a", "--key-hex", "61")...).expect(t, exitUsage, "not both")
}

// showKey never prints two keys alike.
func TestShowKeyIsUnambiguous(t *testing.T) {
	keys := []string{"o-1", "", " ", "\x00", `"\x00"`, "\xff", "\uFFFD", `"o-1"`, "o-1\n", "ключ", "a\tb"}
	for _, format := range []string{keyAuto, keyQuoted, keyHex} {
		a := &app{keyFormat: format}
		seen := map[string]string{}
		for _, k := range keys {
			s := a.showKey(k)
			if prev, dup := seen[s]; dup {
				t.Errorf("%s: %q and %q both print as %s", format, prev, k, s)
			}
			seen[s] = k
			if strings.ContainsRune(s, '\uFFFD') && k != "\uFFFD" || strings.ContainsAny(s, "\x00\n\t") {
				t.Errorf("%s: %q prints as %q", format, k, s)
			}
		}
	}
	if got := (&app{keyFormat: keyAuto}).showKey("o-1"); got != "o-1" {
		t.Errorf("a printable key is shown as %q", got)
	}
}
