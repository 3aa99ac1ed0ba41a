package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"
)

// emit writes v as indented JSON with --output json, or calls table with a
// tab-aligned writer. Every known secret is redacted either way.
func (a *app) emit(f *flags, v any, table func(w io.Writer)) error {
	var b strings.Builder
	if f.output == "json" {
		enc := json.NewEncoder(&b)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			return fmt.Errorf("encode json: %w", err)
		}
	} else {
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		table(tw)
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	_, err := io.WriteString(a.stdout, a.redact(b.String()))
	return err
}

// row writes tab-separated cells and a newline.
func row(w io.Writer, cells ...any) {
	for i, c := range cells {
		if i > 0 {
			fmt.Fprint(w, "\t")
		}
		fmt.Fprint(w, c)
	}
	fmt.Fprintln(w)
}

// passwordOf returns the password in a URL ("scheme://user:pw@host") or a
// key=value DSN ("password=pw"), or "".
func passwordOf(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok {
			return pw
		}
	}
	for _, field := range strings.Fields(s) {
		if pw, ok := strings.CutPrefix(field, "password="); ok {
			return strings.Trim(pw, "'")
		}
	}
	return ""
}

// redactURL shows a URL without its password, for messages about endpoints.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// age formats a duration for tables: rounded, "-" when zero.
func age(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// when formats a time for tables, "-" when zero.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// clip shortens s to n runes for a table cell, on one line.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// Key formats of --key-format.
const (
	keyAuto   = "auto"   // as is when printable, else a quoted Go string
	keyQuoted = "quoted" // always a quoted Go string
	keyHex    = "hex"    // always hex bytes
)

// showKey returns key for output without ambiguity: a key that is not
// printable UTF-8 (a Java long's 8 bytes, say), or that starts with a
// double quote, is shown as a quoted Go string ("\x00\x00\x00*"), so no two
// keys ever print alike; --key-format picks quoted or hex for every key.
func (a *app) showKey(key string) string {
	switch a.keyFormat {
	case keyHex:
		return hex.EncodeToString([]byte(key))
	case keyQuoted:
		return strconv.Quote(key)
	}
	if !printable(key) || strings.HasPrefix(key, `"`) {
		return strconv.Quote(key)
	}
	return key
}

// keyHexOf returns key as hex when it is not printable UTF-8 (JSON output
// would otherwise carry U+FFFD for its invalid bytes), else "".
func keyHexOf(key string) string {
	if printable(key) {
		return ""
	}
	return hex.EncodeToString([]byte(key))
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// keyFormatFlag adds --key-format to a command that shows keys.
func (f *flags) keyFormatFlag() {
	f.StringVar(&f.a.keyFormat, "key-format", keyAuto, "how keys are shown: auto (as is when printable UTF-8, else a quoted Go string), quoted or hex")
	f.checks = append(f.checks, func() error {
		switch f.a.keyFormat {
		case keyAuto, keyQuoted, keyHex:
			return nil
		}
		return usagef("--key-format must be auto, quoted or hex, not %q", f.a.keyFormat)
	})
}

// keyFlag adds --key and --key-hex (the same key given as hex bytes, for a
// binary key) and returns where the key is stored.
func (f *flags) keyFlag(usage string) *string {
	k := new(string)
	f.StringVar(k, "key", "", usage)
	f.Var(&hexString{k}, "key-hex", usage+", as hex bytes (a binary key, e.g. 000000000000002a)")
	f.checks = append(f.checks, func() error {
		if f.Changed("key") && f.Changed("key-hex") {
			return usagef("give --key or --key-hex, not both")
		}
		return nil
	})
	return k
}

// hexString is a flag value given as hex and stored as the bytes it names.
type hexString struct{ s *string }

func (h *hexString) String() string {
	if h.s == nil || *h.s == "" {
		return ""
	}
	return hex.EncodeToString([]byte(*h.s))
}

// Set decodes v.
func (h *hexString) Set(v string) error {
	b, err := hex.DecodeString(strings.TrimPrefix(strings.TrimPrefix(v, "0x"), "0X"))
	if err != nil {
		return fmt.Errorf("not hex: %w", err)
	}
	*h.s = string(b)
	return nil
}

// Type names the value in the help.
func (h *hexString) Type() string { return "hex" }
