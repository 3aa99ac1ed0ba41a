package retry_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/retry"
)

func deadEntry() retry.DeadEntry {
	return retry.DeadEntry{
		Entry: retry.Entry{
			ID: 42, Group: "kitchen", State: retry.StateDead, Attempts: 7, LastError: "order service: 503",
			Message: &reliable.Message{ID: "m-1", Key: "order-7", Topic: "orders", Type: "order.placed",
				Payload: []byte(`{"card":"secret"}`), Headers: map[string]string{"auth": "secret"}},
			CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), FinishedAt: time.Date(2026, 1, 2, 3, 14, 5, 0, time.UTC),
		},
		Blocking: true,
	}
}

func TestWebhookNotifier(t *testing.T) {
	t.Parallel()
	var got retry.WebhookPayload
	var raw []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || r.Header.Get("Authorization") != "Bearer t0k" {
			t.Errorf("bad request: %s %v", r.Method, r.Header)
		}
		raw, _ = io.ReadAll(r.Body)
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Error(err)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	n := &retry.WebhookNotifier{URL: srv.URL, Header: http.Header{"Authorization": {"Bearer t0k"}}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Notify(ctx, deadEntry()); err != nil {
		t.Fatal(err)
	}
	want := retry.WebhookPayload{Event: "retry.entry.dead", Group: "kitchen", EntryID: 42, MessageID: "m-1", Key: "order-7",
		Topic: "orders", Type: "order.placed", Attempts: 7, Error: "order service: 503", Blocking: true,
		ParkedAt: deadEntry().CreatedAt, DeadAt: deadEntry().FinishedAt}
	if got != want {
		t.Fatalf("payload %+v\nwant %+v", got, want)
	}
	if bytes.Contains(raw, []byte("secret")) {
		t.Fatalf("webhook leaked the payload or header values: %s", raw)
	}
}

func TestWebhookNotifierErrors(t *testing.T) {
	t.Parallel()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nope", http.StatusBadGateway)
	}))
	defer failing.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := (&retry.WebhookNotifier{URL: failing.URL}).Notify(ctx, deadEntry())
	if err == nil || !strings.Contains(err.Error(), "502") {
		t.Fatalf("non-2xx answer: err = %v", err)
	}

	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	start := time.Now()
	err = (&retry.WebhookNotifier{URL: slow.URL}).Notify(short, deadEntry())
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("slow webhook: err = %v after %s, want the context's deadline", err, time.Since(start))
	}
}

func TestLogNotifierAndNotifiers(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logN := retry.LogNotifier{Logger: slog.New(slog.NewTextHandler(&buf, nil))}
	boom := errors.New("boom")
	n := retry.Notifiers{logN, retry.NotifierFunc(func(context.Context, retry.DeadEntry) error { return boom })}
	if err := n.Notify(context.Background(), deadEntry()); !errors.Is(err, boom) {
		t.Fatalf("Notifiers = %v, want boom joined", err)
	}
	out := buf.String()
	for _, want := range []string{"level=ERROR", "entry=42", "key=order-7", "attempts=7", "blocking=true"} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, "secret") {
		t.Errorf("log leaked the payload: %s", out)
	}
}

// smtpSink is a minimal in-process SMTP server that records one mail.
func smtpSink(t *testing.T) (addr string, mail <-chan string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		r, w := bufio.NewReader(c), bufio.NewWriter(c)
		say := func(s string) { w.WriteString(s + "\r\n"); w.Flush() }
		say("220 sink ESMTP")
		var data strings.Builder
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			cmd := strings.ToUpper(strings.TrimSpace(line))
			switch {
			case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
				say("250 sink")
			case cmd == "DATA":
				say("354 go ahead")
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if l == ".\r\n" {
						break
					}
					data.WriteString(l)
				}
				say("250 queued")
				ch <- data.String()
			case cmd == "QUIT":
				say("221 bye")
				return
			default: // MAIL, RCPT, RSET, NOOP
				say("250 ok")
			}
		}
	}()
	return ln.Addr().String(), ch
}

func TestEmailNotifier(t *testing.T) {
	t.Parallel()
	addr, mail := smtpSink(t)
	n := &retry.EmailNotifier{Addr: addr, From: "reliable@kitchen.example", To: []string{"oncall@kitchen.example", "dev@kitchen.example"}}
	e := deadEntry()
	e.LastError = "bad\r\nBcc: attacker@example.com"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Notify(ctx, e); err != nil {
		t.Fatal(err)
	}
	got := <-mail
	for _, want := range []string{"Subject: [reliable] dead retry entry 42, key order-7 (kitchen)", "To: oncall@kitchen.example, dev@kitchen.example",
		"Attempts:   7", "stays blocked"} {
		if !strings.Contains(got, want) {
			t.Errorf("mail lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "\r\nBcc:") || strings.Contains(got, "secret") {
		t.Errorf("mail has an injected header or leaked the payload:\n%s", got)
	}
}

// L11: a dead entry whose key and ID are foreign bytes (an 8-byte binary
// long, invalid UTF-8, a 3 KB key) reaches the on-call readable and exact:
// the mail quotes them with escapes and keeps its lines short, and the
// webhook carries the exact bytes of values JSON strings cannot hold.
func TestNotifiersShowForeignBytes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e := deadEntry()
	e.Message.Key = "\x00\x00\x00\x00\x00\x00\x00*" + strings.Repeat("k", 3000)
	e.Message.ID = "id-\xff\xfe"

	addr, mail := smtpSink(t)
	n := &retry.EmailNotifier{Addr: addr, From: "reliable@kitchen.example", To: []string{"oncall@kitchen.example"}}
	if err := n.Notify(ctx, e); err != nil {
		t.Fatal(err)
	}
	got := <-mail
	for _, line := range strings.Split(got, "\r\n") {
		if len(line) > 998 {
			t.Fatalf("mail line of %d bytes (the limit is 998): %.80s...", len(line), line)
		}
	}
	for _, want := range []string{`key "\x00\x00\x00\x00\x00\x00\x00*kkk`, `Message ID: "id-\xff\xfe"`, "... (3008 bytes)"} {
		if !strings.Contains(got, want) {
			t.Errorf("mail lacks %q:\n%.600s", want, got)
		}
	}
	if strings.ContainsRune(got, 0) {
		t.Error("mail carries a raw NUL byte")
	}

	var payload retry.WebhookPayload
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := json.NewDecoder(r.Body).Decode(&payload); err != nil {
			t.Error(err)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	if err := (&retry.WebhookNotifier{URL: srv.URL}).Notify(ctx, e); err != nil {
		t.Fatal(err)
	}
	if payload.Key != e.Message.Key || payload.KeyBase64 != "" {
		t.Errorf("webhook key %.20q (base64 %q), want the exact valid UTF-8 key and no base64", payload.Key, payload.KeyBase64)
	}
	if id, err := base64.StdEncoding.DecodeString(payload.MessageIDBase64); err != nil || string(id) != e.Message.ID {
		t.Errorf("webhook message_id_base64 %q decodes to %q, %v; want %q", payload.MessageIDBase64, id, err, e.Message.ID)
	}
}
