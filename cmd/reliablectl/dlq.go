package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/spf13/cobra"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/rabbitmq"
)

// Environment variables of the AMQP password, when the URL has none.
const (
	envAMQPPassword     = "RELIABLE_AMQP_PASSWORD"
	envAMQPPasswordFile = "RELIABLE_AMQP_PASSWORD_FILE"
)

// amqpFlags are the connection flags of commands that speak AMQP.
type amqpFlags struct {
	url          string
	passwordFile string
	tls          tlsFlags
	dialTimeout  time.Duration
}

func (q *amqpFlags) register(f *flags) {
	f.StringVar(&q.url, "amqp-url", "", "RabbitMQ URL, amqp:// or amqps://user@host:port/vhost, without a password (default $"+envAMQPURL+", which may hold one)")
	f.StringVar(&q.passwordFile, "amqp-password-file", "", "file holding the password, when the URL has none (default $"+envAMQPPasswordFile+"; or set the password itself in $"+envAMQPPassword+")")
	q.tls.register(f.FlagSet, "amqp", "RabbitMQ", envAMQPCAFile, envAMQPCertFile, envAMQPKeyFile)
	f.DurationVar(&q.dialTimeout, "dial-timeout", 5*time.Second, "timeout of the connection attempt (TCP, TLS and AMQP handshake)")
}

// connectAMQP opens a connection: over TLS for amqps:// URLs (with the CA
// and client certificate of the --amqp-* flags), with the password of the
// URL in the environment, or of $RELIABLE_AMQP_PASSWORD or a file.
func (a *app) connectAMQP(q *amqpFlags) (*amqp.Connection, error) {
	raw, err := a.endpoint("amqp-url", q.url, envAMQPURL)
	if err != nil {
		return nil, err
	}
	if raw == "" {
		return nil, usagef("no RabbitMQ URL: set --amqp-url or $%s", envAMQPURL)
	}
	uri, err := amqp.ParseURI(raw)
	if err != nil {
		return nil, usagef("RabbitMQ URL %s: %v", redactURL(raw), err)
	}
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		if _, set := u.User.Password(); !set {
			pw, err := secretFromEnvOrFile(a, envAMQPPassword, orEnv(a, q.passwordFile, envAMQPPasswordFile), "--amqp-password-file")
			if err != nil {
				return nil, err
			}
			if pw == "" {
				return nil, usagef("the RabbitMQ URL names user %q but no password: set $%s or --amqp-password-file", uri.Username, envAMQPPassword)
			}
			uri.Password = pw
		}
	}
	a.secrets = append(a.secrets, uri.Password)
	tc, err := q.tls.config(a, envAMQPCAFile, envAMQPCertFile, envAMQPKeyFile, uri.Scheme == "amqps")
	if err != nil {
		return nil, err
	}
	if tc != nil && uri.Scheme != "amqps" {
		return nil, usagef("the --amqp TLS flags need an amqps:// URL")
	}
	where := brokerAddr(uri)
	conn, err := amqp.DialConfig(uri.String(), amqp.Config{
		TLSClientConfig: tc,
		Dial:            amqp.DefaultDial(q.dialTimeout),
		Properties:      amqp.Table{"connection_name": "reliablectl"},
	})
	if err != nil {
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.AccessRefused {
			return nil, fmt.Errorf("RabbitMQ at %s refused the login of %q: %w (check the user and password)", where, uri.Username, err)
		}
		return nil, fmt.Errorf("cannot reach RabbitMQ at %s: %w", where, err)
	}
	return conn, nil
}

// brokerAddr names the broker an URI points at, without credentials.
func brokerAddr(u amqp.URI) string {
	return u.Scheme + "://" + u.Host + ":" + strconv.Itoa(u.Port) + "/" + strings.TrimPrefix(u.Vhost, "/")
}

// dlqFlags name a dead-letter queue.
type dlqFlags struct {
	topic, group, queue string
	env                 *envNames
}

func (d *dlqFlags) register(f *flags) {
	f.StringVar(&d.topic, "topic", "", "topic (exchange) of the consumer group")
	f.StringVar(&d.group, "group", "", "consumer group whose dead-letter queue to read (rabbitmq.DeadLetterQueueName: TOPIC.GROUP.dlq)")
	f.StringVar(&d.queue, "queue", "", "the dead-letter queue's name, instead of --topic and --group")
	d.env = f.registerEnvironment("rabbitmq")
	d.env.prefix(&d.topic, &d.queue)
}

func (d *dlqFlags) name() (string, error) {
	switch {
	case d.queue != "" && (d.topic != "" || d.group != ""):
		return "", usagef("give --queue or --topic and --group, not both")
	case d.queue != "":
		return d.queue, nil
	case d.topic == "" || d.group == "":
		return "", usagef("--topic and --group are required (or --queue)")
	}
	return rabbitmq.DeadLetterQueueName(d.topic, d.group), nil
}

// dlqMessage is a message of a dead-letter queue, as the dlq commands show
// it.
type dlqMessage struct {
	Position int    `json:"position"` // 1 for the queue's head
	ID       string `json:"id"`
	Key      string `json:"key"`
	// KeyHex is set when the key is not printable UTF-8.
	KeyHex         string `json:"key_hex,omitempty"`
	Type           string `json:"type,omitempty"`
	Cause          string `json:"cause"`
	OriginalQueue  string `json:"original_queue"`
	OriginalTopic  string `json:"original_topic,omitempty"`
	Attempts       string `json:"attempts,omitempty"`
	DeadLetteredAt string `json:"dead_lettered_at,omitempty"`
	PayloadBytes   int    `json:"payload_bytes"`
	// Headers and Payload are shown by dlq show only.
	Headers map[string]string `json:"headers,omitempty"`
	Payload string            `json:"payload,omitempty"`

	key string // raw
}

// xDeath returns the newest x-death entry of a message the broker
// dead-lettered (delivery limit, rejection, expiry), or nil.
func xDeath(d *amqp.Delivery) amqp.Table {
	deaths, _ := d.Headers["x-death"].([]any)
	if len(deaths) == 0 {
		return nil
	}
	t, _ := deaths[0].(amqp.Table)
	return t
}

func (a *app) viewDLQ(pos int, d *amqp.Delivery, full bool) dlqMessage {
	hs := map[string]string{}
	for k, v := range d.Headers {
		switch v := v.(type) {
		case string:
			hs[k] = v
		case []byte:
			hs[k] = string(v)
		}
	}
	m := dlqMessage{Position: pos, ID: d.MessageId, Type: d.Type, PayloadBytes: len(d.Body),
		Cause: hs[rabbitmq.HeaderDeadLetterCause], OriginalQueue: hs[rabbitmq.HeaderDeadLetterQueue],
		OriginalTopic: hs[rabbitmq.HeaderDeadLetterTopic], Attempts: hs[rabbitmq.HeaderDeadLetterAttempts],
		DeadLetteredAt: hs[rabbitmq.HeaderDeadLetterTime]}
	if m.ID == "" {
		m.ID = hs[reliable.HeaderID]
	}
	if m.Type == "" {
		m.Type = hs[reliable.HeaderType]
	}
	m.key = originalKey(d)
	m.Key, m.KeyHex = a.showKey(m.key), keyHexOf(m.key)
	if x := xDeath(d); x != nil && m.OriginalQueue == "" {
		// Dead-lettered by the broker, not by the SDK's DeadLetter.
		m.OriginalQueue, _ = x["queue"].(string)
		m.OriginalTopic, _ = x["exchange"].(string)
		reason, _ := x["reason"].(string)
		m.Cause = "broker: " + reason
		if reason == "delivery_limit" {
			m.Cause += " (redelivered up to the queue's x-delivery-limit: the consumer kept failing or crashing on it)"
		}
		if n, ok := x["count"].(int64); ok {
			m.Attempts = strconv.FormatInt(n, 10) + " dead-letterings"
		}
		if t, ok := x["time"].(time.Time); ok {
			m.DeadLetteredAt = t.UTC().Format(time.RFC3339)
		}
	}
	if full {
		m.Headers = hs
		m.Payload = string(d.Body)
		if !utf8.Valid(d.Body) {
			m.Payload = fmt.Sprintf("(binary, hex) %x", d.Body)
		}
	}
	return m
}

// originalKey returns the message's key: its ce_key header, or else the
// routing key it was first published with (x-death), or else its routing
// key.
func originalKey(d *amqp.Delivery) string {
	if k, ok := d.Headers[reliable.HeaderKey].(string); ok {
		return k
	}
	if x := xDeath(d); x != nil {
		if rks, ok := x["routing-keys"].([]any); ok && len(rks) > 0 {
			if k, ok := rks[0].(string); ok {
				return k
			}
		}
	}
	return d.RoutingKey
}

// dlqReader reads a dead-letter queue without removing anything: every
// message it got stays unsettled until release or a per-message ack.
type dlqReader struct {
	ch      *amqp.Channel
	queue   string
	lastTag uint64
}

func openDLQ(conn *amqp.Connection, queue, envHint string) (*dlqReader, int, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, 0, fmt.Errorf("open channel: %w", err)
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("dead-letter queue %q: %w (names are the SDK's, TOPIC.GROUP.dlq: %s)", queue, err, envHint)
	}
	return &dlqReader{ch: ch, queue: queue}, q.Messages, nil
}

// withDLQ connects to RabbitMQ and opens queue for reading: work gets the
// connection, the reader and the queue's depth. Afterwards the unsettled
// messages go back to the queue and the connection is closed.
func (a *app) withDLQ(q *amqpFlags, queue, envHint string, work func(*amqp.Connection, *dlqReader, int) error) error {
	conn, err := a.connectAMQP(q)
	if err != nil {
		return err
	}
	defer conn.Close()
	r, depth, err := openDLQ(conn, queue, envHint)
	if err != nil {
		return err
	}
	defer r.release()
	return work(conn, r, depth)
}

// next gets the queue's next message, unsettled; ok is false when the queue
// has no more ready messages.
func (r *dlqReader) next() (amqp.Delivery, bool, error) {
	d, ok, err := r.ch.Get(r.queue, false)
	if err != nil {
		return d, false, fmt.Errorf("get from %s: %w", r.queue, err)
	}
	if ok {
		r.lastTag = d.DeliveryTag
	}
	return d, ok, nil
}

// release puts every unsettled message back in the queue and closes the
// channel. (A quorum queue may hand them out in another order afterwards:
// the order of a dead-letter queue carries no meaning.)
func (r *dlqReader) release() {
	if r.lastTag > 0 {
		_ = r.ch.Nack(r.lastTag, true, true)
	}
	_ = r.ch.Close()
}

// scan reads up to limit messages (the queue's depth when it started, at
// most) and returns them; the caller releases the reader.
func (r *dlqReader) scan(depth, limit int) ([]amqp.Delivery, error) {
	var out []amqp.Delivery
	for len(out) < depth && (limit <= 0 || len(out) < limit) {
		d, ok, err := r.next()
		if err != nil {
			return out, err
		}
		if !ok {
			break
		}
		out = append(out, d)
	}
	return out, nil
}

func dlqList(a *app) *cobra.Command {
	f := a.newFlags("dlq list", "(--topic TOPIC --group GROUP | --queue QUEUE) [--limit N] [flags]", `
Lists the messages of a consumer group's RabbitMQ dead-letter queue
(TOPIC.GROUP.dlq), head first: message ID, key, type, why it was
dead-lettered (the SDK's dlt_cause, or the broker's x-death reason such as
delivery_limit), the queue it came from and after how many attempts.
Nothing is removed: the messages are read unacknowledged and put back
(RabbitMQ may then hold them in another order).`)
	var q amqpFlags
	q.register(f)
	var d dlqFlags
	d.register(f)
	f.keyFormatFlag()
	limit := f.Int("limit", defaultLimit, "at most this many messages")
	return f.runE(func(ctx context.Context) error {
		queue, err := d.name()
		if err != nil {
			return err
		}
		return a.withDLQ(&q, queue, d.env.hint(), func(_ *amqp.Connection, r *dlqReader, depth int) error {
			ds, err := r.scan(depth, *limit)
			if err != nil {
				return err
			}
			out := make([]dlqMessage, len(ds))
			for i := range ds {
				out[i] = a.viewDLQ(i+1, &ds[i], false)
			}
			return a.emit(f, map[string]any{"queue": queue, "depth": depth, "messages": out}, func(w io.Writer) {
				fmt.Fprintf(w, "%s: %d messages\n\n", queue, depth)
				row(w, "POS", "ID", "KEY", "TYPE", "FROM QUEUE", "ATTEMPTS", "DEAD-LETTERED", "CAUSE")
				for _, m := range out {
					row(w, m.Position, m.ID, clip(m.Key, 40), m.Type, m.OriginalQueue, m.Attempts, m.DeadLetteredAt, clip(m.Cause, 80))
				}
			})
		})
	})
}

func dlqShow(a *app) *cobra.Command {
	f := a.newFlags("dlq show", "(--topic TOPIC --group GROUP | --queue QUEUE) --id ID [flags]", `
Shows one message of a dead-letter queue with every header and its payload
(in hex when it is not UTF-8). Nothing is removed.`)
	var q amqpFlags
	q.register(f)
	var d dlqFlags
	d.register(f)
	f.keyFormatFlag()
	id := f.String("id", "", "message ID (see 'reliablectl dlq list')")
	return f.runE(func(ctx context.Context) error {
		queue, err := d.name()
		if err != nil {
			return err
		}
		if *id == "" {
			return usagef("--id is required")
		}
		return a.withDLQ(&q, queue, d.env.hint(), func(_ *amqp.Connection, r *dlqReader, depth int) error {
			// Until the queue has no more ready messages: nothing is removed,
			// so nothing comes back to be read twice.
			for i := 0; ; i++ {
				dv, ok, err := r.next()
				if err != nil {
					return err
				}
				if !ok {
					break
				}
				m := a.viewDLQ(i+1, &dv, true)
				if m.ID != *id {
					continue
				}
				return a.emit(f, m, func(w io.Writer) {
					row(w, "queue/position", fmt.Sprintf("%s/%d", queue, m.Position))
					row(w, "id", m.ID)
					row(w, "key", m.Key)
					if m.KeyHex != "" {
						row(w, "key (hex)", m.KeyHex)
					}
					row(w, "type", m.Type)
					row(w, "cause", m.Cause)
					row(w, "from queue", m.OriginalQueue)
					row(w, "attempts", m.Attempts)
					row(w, "dead-lettered", m.DeadLetteredAt)
					names := make([]string, 0, len(m.Headers))
					for k := range m.Headers {
						names = append(names, k)
					}
					sort.Strings(names)
					for _, k := range names {
						row(w, "header "+k, m.Headers[k])
					}
					fmt.Fprintf(w, "\npayload (%d bytes):\n%s\n", m.PayloadBytes, m.Payload)
				})
			}
			return fmt.Errorf("no message %q in %s (%d messages)", *id, queue, depth)
		})
	})
}

// requeueMove is one message of a requeue report.
type requeueMove struct {
	ID     string `json:"id"`
	Key    string `json:"key"`
	KeyHex string `json:"key_hex,omitempty"`
	To     string `json:"to"`
	Moved  bool   `json:"moved"`
}

// requeueReport is the output of dlq requeue.
type requeueReport struct {
	Queue    string        `json:"queue"`
	Execute  bool          `json:"execute"`
	Messages []requeueMove `json:"messages"`
	Moved    int           `json:"moved"`
}

func dlqRequeue(a *app) *cobra.Command {
	f := a.newFlags("dlq requeue", "(--topic TOPIC --group GROUP | --queue QUEUE) (--id ID | --all) [--limit N] [--execute] [flags]", `
Moves dead-lettered messages back to the queue they were consumed from
(their dlt_original_queue header, or the broker's x-death queue, or
--to-queue), after the cause was fixed. Without --execute it only lists what
would move.

With --execute, each message is published to its queue (persistent, with a
publisher confirm, mandatory so that a missing queue fails) and only then
removed from the dead-letter queue. A failure half-way loses nothing: the
message that failed and every one not yet moved stay in the dead-letter
queue; a crash between the confirm and the removal leaves a
copy in both queues, which consumers deduplicate by its message ID. The
message keeps its ID, key (the ce_key header, also for messages of other
clients), type, payload and headers, without the dlt_ and x-death ones.
Only the messages present when the command starts are considered, so a
message that fails again and returns is not moved twice.`)
	var q amqpFlags
	q.register(f)
	var d dlqFlags
	d.register(f)
	f.keyFormatFlag()
	id := f.String("id", "", "move the message with this ID")
	all := f.Bool("all", false, "move every message")
	limit := f.Int("limit", 0, "with --all, at most this many messages (0: all)")
	toQueue := f.String("to-queue", "", "queue to move the messages to, for messages that name none (or to override it)")
	execute := f.Bool("execute", false, "move the messages; without it, only show what would move")
	return f.runE(func(ctx context.Context) error {
		queue, err := d.name()
		if err != nil {
			return err
		}
		if (*id != "") == *all {
			return usagef("give exactly one of --id and --all")
		}
		return a.withDLQ(&q, queue, d.env.hint(), func(conn *amqp.Connection, r *dlqReader, depth int) error {
			ctx, cancel := context.WithTimeout(ctx, f.timeout)
			defer cancel()
			var pub *confirmPublisher
			if *execute {
				if pub, err = newConfirmPublisher(conn); err != nil {
					return err
				}
				defer pub.close()
			}
			report := requeueReport{Queue: queue, Execute: *execute, Messages: []requeueMove{}}
			var runErr error
			// With --all, only as many as the queue held at the start: a message
			// moved and dead-lettered again meanwhile is not moved twice. With
			// --id nothing else is removed: read until the queue is empty.
			for i := 0; (*id != "" || i < depth) && (*limit <= 0 || len(report.Messages) < *limit); i++ {
				dv, ok, err := r.next()
				if err != nil {
					runErr = err
					break
				}
				if !ok {
					break
				}
				m := a.viewDLQ(i+1, &dv, false)
				if *id != "" && m.ID != *id {
					continue // stays unsettled: put back at the end
				}
				to := m.OriginalQueue
				if *toQueue != "" {
					to = *toQueue
				}
				if to == "" {
					runErr = fmt.Errorf("message %q names no original queue (no %s or x-death header): give --to-queue", m.ID, rabbitmq.HeaderDeadLetterQueue)
					break
				}
				mv := requeueMove{ID: m.ID, Key: m.Key, KeyHex: m.KeyHex, To: to}
				if *execute {
					if err := pub.publish(ctx, to, requeued(&dv, m.key)); err != nil {
						runErr = fmt.Errorf("requeue %q to %s (after %d moved; it and the rest stay in %s): %w", m.ID, to, report.Moved, queue, err)
						report.Messages = append(report.Messages, mv)
						break
					}
					// Confirmed: only now remove it from the dead-letter queue.
					if err := r.ch.Ack(dv.DeliveryTag, false); err != nil {
						runErr = fmt.Errorf("remove %q from %s after it was requeued (it is in both queues now; consumers deduplicate it): %w", m.ID, queue, err)
						report.Messages = append(report.Messages, mv)
						break
					}
					mv.Moved = true
					report.Moved++
				}
				report.Messages = append(report.Messages, mv)
			}
			if runErr == nil && *id != "" && len(report.Messages) == 0 {
				runErr = fmt.Errorf("no message %q in %s (%d messages)", *id, queue, depth)
			}
			err = a.emit(f, report, func(w io.Writer) {
				verb := "would move"
				if *execute {
					verb = "moved"
				}
				row(w, "ID", "KEY", "TO QUEUE", strings.ToUpper(verb))
				for _, m := range report.Messages {
					done := "yes"
					if *execute && !m.Moved {
						done = "NO"
					}
					row(w, m.ID, clip(m.Key, 40), m.To, done)
				}
				if !*execute {
					fmt.Fprintf(w, "\ndry run: %d messages would move; run again with --execute\n", len(report.Messages))
				} else {
					fmt.Fprintf(w, "\n%d messages moved out of %s\n", report.Moved, queue)
				}
			})
			if runErr != nil {
				return runErr
			}
			return err
		})
	})
}

// requeued is the message d republished to its queue: its properties and
// headers without the dead-lettering ones, with its key as ce_key (a
// message of another client has none, and the default exchange's routing
// key is the queue's name).
func requeued(d *amqp.Delivery, key string) amqp.Publishing {
	h := amqp.Table{}
	for k, v := range d.Headers {
		if strings.HasPrefix(k, rabbitmq.HeaderDeadLetterPrefix) || strings.HasPrefix(k, "x-death") ||
			strings.HasPrefix(k, "x-first-death") || strings.HasPrefix(k, "x-last-death") || k == "x-delivery-count" {
			continue
		}
		h[k] = v
	}
	h[reliable.HeaderKey] = key
	return amqp.Publishing{
		Headers: h, ContentType: d.ContentType, ContentEncoding: d.ContentEncoding,
		DeliveryMode: amqp.Persistent, Priority: d.Priority, CorrelationId: d.CorrelationId,
		ReplyTo: d.ReplyTo, MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type,
		AppId: d.AppId, Body: d.Body,
	}
}

// confirmPublisher publishes one message at a time to a queue through the
// default exchange and waits for the broker's confirm.
type confirmPublisher struct {
	ch      *amqp.Channel
	returns chan amqp.Return
}

func newConfirmPublisher(conn *amqp.Connection) (*confirmPublisher, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("confirm mode: %w", err)
	}
	return &confirmPublisher{ch: ch, returns: ch.NotifyReturn(make(chan amqp.Return, 1))}, nil
}

func (p *confirmPublisher) close() { _ = p.ch.Close() }

// publish returns nil only once the broker confirmed the message and did
// not return it as unroutable.
func (p *confirmPublisher) publish(ctx context.Context, queue string, m amqp.Publishing) error {
	dc, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false, m)
	if err != nil {
		return err
	}
	select {
	case <-dc.Done():
	case <-ctx.Done():
		return ctx.Err()
	}
	if !dc.Acked() {
		return errors.New("the broker did not confirm the message (nack or channel closed)")
	}
	// The broker sends basic.return before the confirm of the same message.
	select {
	case ret := <-p.returns:
		return fmt.Errorf("queue %q does not exist (%d %s): %w", queue, ret.ReplyCode, ret.ReplyText, reliable.ErrUnroutable)
	default:
	}
	return nil
}
