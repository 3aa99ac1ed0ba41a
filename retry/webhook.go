package retry

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
	"unicode/utf8"
)

// WebhookNotifier POSTs each dead entry as JSON ([WebhookPayload]) to URL. A
// non-2xx answer is an error. The payload carries no message payload or
// header values, which may hold personal data or secrets.
type WebhookNotifier struct {
	// URL receives the POST. Required.
	URL string
	// Client defaults to an http.Client with a 10s timeout.
	Client *http.Client
	// Header is added to each request, e.g. an Authorization header.
	Header http.Header
}

// WebhookPayload is the JSON body a WebhookNotifier sends.
type WebhookPayload struct {
	Event     string `json:"event"` // always "retry.entry.dead"
	Group     string `json:"group"`
	EntryID   int64  `json:"entry_id"`
	MessageID string `json:"message_id"`
	Key       string `json:"key"`
	// MessageIDBase64 and KeyBase64 carry the exact bytes of an ID or key
	// that is not valid UTF-8, which JSON strings cannot hold (MessageID and
	// Key then show U+FFFD for the invalid bytes). Empty otherwise.
	MessageIDBase64 string    `json:"message_id_base64,omitempty"`
	KeyBase64       string    `json:"key_base64,omitempty"`
	Topic           string    `json:"topic"`
	Type            string    `json:"type,omitempty"`
	Attempts        int       `json:"attempts"`
	Error           string    `json:"error"`
	Blocking        bool      `json:"blocking"`
	ParkedAt        time.Time `json:"parked_at"`
	DeadAt          time.Time `json:"dead_at"`
}

var defaultWebhookClient = &http.Client{Timeout: 10 * time.Second}

// Notify implements [Notifier].
func (n *WebhookNotifier) Notify(ctx context.Context, e DeadEntry) error {
	body, err := json.Marshal(WebhookPayload{
		Event: "retry.entry.dead", Group: e.Group, EntryID: e.ID, MessageID: e.Message.ID, Key: e.Message.Key,
		MessageIDBase64: base64IfInvalid(e.Message.ID), KeyBase64: base64IfInvalid(e.Message.Key),
		Topic: e.Message.Topic, Type: e.Message.Type, Attempts: e.Attempts, Error: e.LastError,
		Blocking: e.Blocking, ParkedAt: e.CreatedAt, DeadAt: e.FinishedAt,
	})
	if err != nil {
		return fmt.Errorf("retry: webhook: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("retry: webhook: %w", err)
	}
	for k, vs := range n.Header {
		req.Header[k] = append([]string(nil), vs...)
	}
	req.Header.Set("Content-Type", "application/json")
	client := n.Client
	if client == nil {
		client = defaultWebhookClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("retry: webhook: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // reuse the connection
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("retry: webhook %s answered %s", n.URL, resp.Status)
	}
	return nil
}

// base64IfInvalid returns the standard base64 of s when s is not valid
// UTF-8, and "" otherwise.
func base64IfInvalid(s string) string {
	if utf8.ValidString(s) {
		return ""
	}
	return base64.StdEncoding.EncodeToString([]byte(s))
}
