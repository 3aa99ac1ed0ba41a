package retry

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/smtp"
	"strings"
	"time"
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
		n.From, strings.Join(n.To, ", "), prefix, e.ID, oneLine(e.Message.Key), oneLine(e.Group))
	fmt.Fprintf(&b, "Date: %s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", time.Now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Group:      %s\r\nEntry:      %d\r\nMessage ID: %s\r\nKey:        %s\r\nTopic:      %s\r\nType:       %s\r\n",
		e.Group, e.ID, e.Message.ID, e.Message.Key, e.Message.Topic, e.Message.Type)
	fmt.Fprintf(&b, "Attempts:   %d\r\nParked at:  %s\r\nError:      %s\r\n\r\n%s\r\n",
		e.Attempts, e.CreatedAt.Format(time.RFC3339), oneLine(e.LastError), blocking)
	return b.Bytes()
}

// oneLine keeps header injection out of the mail.
func oneLine(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}
