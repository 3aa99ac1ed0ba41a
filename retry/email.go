package retry

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/smtp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// EmailNotifier mails each dead entry to developers through an SMTP server,
// as the team in L11 did. It uses net/smtp: STARTTLS when the server offers
// it, and Auth when set. The mail holds no message payload or header values.
type EmailNotifier struct {
	// Addr is the SMTP server's host:port. Required.
	Addr string
	// Auth, e.g. smtp.PlainAuth, is used when set.
	Auth smtp.Auth
	// From and To are the envelope and header addresses. Required.
	From string
	To   []string
	// SubjectPrefix starts the subject. Defaults to "[reliable]".
	SubjectPrefix string
}

// Notify implements [Notifier]. The whole SMTP exchange is bounded by ctx.
func (n *EmailNotifier) Notify(ctx context.Context, e DeadEntry) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", n.Addr)
	if err != nil {
		return fmt.Errorf("retry: email: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	host, _, _ := net.SplitHostPort(n.Addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return fmt.Errorf("retry: email: %w", err)
	}
	defer c.Close()
	if err := n.send(c, host, e); err != nil {
		return fmt.Errorf("retry: email: %w", err)
	}
	return nil
}

func (n *EmailNotifier) send(c *smtp.Client, host string, e DeadEntry) error {
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err := c.StartTLS(&tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}); err != nil {
			return err
		}
	}
	if n.Auth != nil {
		if err := c.Auth(n.Auth); err != nil {
			return err
		}
	}
	if err := c.Mail(n.From); err != nil {
		return err
	}
	for _, to := range n.To {
		if err := c.Rcpt(to); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(n.message(e)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

func (n *EmailNotifier) message(e DeadEntry) []byte {
	prefix := n.SubjectPrefix
	if prefix == "" {
		prefix = "[reliable]"
	}
	blocking := "The key stays blocked until an operator retries, discards or releases the entry."
	if !e.Blocking {
		blocking = "The key was released: later messages of the key flow."
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: %s dead retry entry %d, key %s (%s)\r\n",
		n.From, strings.Join(n.To, ", "), prefix, e.ID, oneLine(shortDisplay(e.Message.Key, 100)), oneLine(e.Group))
	fmt.Fprintf(&b, "Date: %s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", time.Now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Group:      %s\r\nEntry:      %d\r\nMessage ID: %s\r\nKey:        %s\r\nTopic:      %s\r\nType:       %s\r\n",
		e.Group, e.ID, shortDisplay(e.Message.ID, 500), shortDisplay(e.Message.Key, 500),
		display(e.Message.Topic), display(e.Message.Type))
	fmt.Fprintf(&b, "Attempts:   %d\r\nParked at:  %s\r\nError:      %s\r\n\r\n%s\r\n",
		e.Attempts, e.CreatedAt.Format(time.RFC3339), oneLine(e.LastError), blocking)
	return b.Bytes()
}

// display shows a key, ID or type as it is when it is printable UTF-8, and
// quoted with Go escapes otherwise (an 8-byte binary key, invalid UTF-8), so
// a mail shows every byte and never carries raw control characters.
func display(s string) string {
	if utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0 {
		return s
	}
	return strconv.Quote(s)
}

// shortDisplay is display(s) cut to at most n bytes on a rune boundary,
// saying how many bytes s has: a mail line must stay under 998 bytes, and a
// 3 KB key would not.
func shortDisplay(s string, n int) string {
	d := display(s)
	if len(d) <= n {
		return d
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(d[cut]) {
		cut--
	}
	return d[:cut] + fmt.Sprintf("... (%d bytes)", len(s))
}

// oneLine keeps header injection out of the mail.
func oneLine(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}
