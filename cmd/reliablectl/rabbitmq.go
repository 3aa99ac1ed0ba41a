package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/reliable-go/reliable/adapters/rabbitmq"
)

// Environment variables of the management API's TLS settings.
const (
	envManagementCAFile   = "RELIABLE_RABBITMQ_MANAGEMENT_CA_FILE"
	envManagementCertFile = "RELIABLE_RABBITMQ_MANAGEMENT_CERT_FILE"
	envManagementKeyFile  = "RELIABLE_RABBITMQ_MANAGEMENT_KEY_FILE"
)

// amqpScheme returns the scheme of an AMQP URL.
func amqpScheme(raw string) string {
	scheme, _, _ := strings.Cut(raw, "://")
	return scheme
}

// mgmt is a client of the RabbitMQ management HTTP API.
type mgmt struct {
	base   *url.URL // without credentials
	user   string
	pass   string
	client *http.Client
}

// errNotFound is a 404 of the management API.
var errNotFound = errors.New("not found")

// connectManagement returns a client of the management API at mgmtURL (or
// the environment's, or the AMQP URL's host), with tf's TLS settings for
// https URLs, and the AMQP URL's vhost.
func (a *app) connectManagement(mgmtURL, amqpURL string, tf *tlsFlags, timeout time.Duration) (*mgmt, string, error) {
	raw, err := a.endpoint("management-url", mgmtURL, envManagementURL)
	if err != nil {
		return nil, "", err
	}
	amqpRaw, err := a.endpoint("amqp-url", amqpURL, envAMQPURL)
	if err != nil {
		return nil, "", err
	}
	vhost := "/"
	if amqpRaw != "" {
		if u, err := url.Parse(amqpRaw); err == nil {
			if v := strings.TrimPrefix(u.Path, "/"); v != "" {
				vhost, _ = url.PathUnescape(v)
			}
			if raw == "" { // the management plugin's default port on the AMQP host
				u.Scheme, u.Host, u.Path, u.RawPath = "http", u.Hostname()+":15672", "", ""
				if strings.EqualFold(amqpScheme(amqpRaw), "amqps") {
					u.Scheme, u.Host = "https", u.Hostname()+":15671"
				}
				raw = u.String()
			}
		}
	}
	if raw == "" {
		return nil, "", usagef("no RabbitMQ management URL: set --management-url or $%s (or $%s)", envManagementURL, envAMQPURL)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, "", usagef("management URL %q is not http(s)://[user:password@]host:port", redactURL(raw))
	}
	m := &mgmt{client: &http.Client{Timeout: timeout}}
	if tf != nil {
		tc, err := tf.config(a, envManagementCAFile, envManagementCertFile, envManagementKeyFile, u.Scheme == "https")
		if err != nil {
			return nil, "", err
		}
		if tc != nil && u.Scheme != "https" {
			return nil, "", usagef("the --management TLS flags need an https:// management URL")
		}
		if tc != nil {
			m.client.Transport = &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}
		}
	}
	if u.User != nil {
		m.user = u.User.Username()
		var set bool
		if m.pass, set = u.User.Password(); !set {
			// A URL without a password (a flag never carries one).
			pw, err := secretFromEnvOrFile(a, envAMQPPassword, orEnv(a, "", envAMQPPasswordFile), "$"+envAMQPPasswordFile)
			if err != nil {
				return nil, "", err
			}
			m.pass = pw
		}
		u.User = nil
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	m.base = u
	return m, vhost, nil
}

// get decodes the JSON at path (segments escaped by the caller) into v.
func (m *mgmt) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.base.String()+path, nil)
	if err != nil {
		return err
	}
	if m.user != "" {
		req.SetBasicAuth(m.user, m.pass)
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the RabbitMQ management API at %s: %w", m.base, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return errNotFound
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("RabbitMQ management API at %s: %s (check the user and password; the user needs the monitoring tag)", m.base, resp.Status)
	case resp.StatusCode != http.StatusOK:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return fmt.Errorf("RabbitMQ management API %s: %s %s", path, resp.Status, body)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("RabbitMQ management API %s: decode: %w", path, err)
	}
	return nil
}

// queueInfo is what the management API says about a queue.
type queueInfo struct {
	Name               string         `json:"name"`
	VHost              string         `json:"vhost"`
	Durable            bool           `json:"durable"`
	AutoDelete         bool           `json:"auto_delete"`
	Exclusive          bool           `json:"exclusive"`
	Type               string         `json:"type"`
	Arguments          map[string]any `json:"arguments"`
	Policy             string         `json:"policy"`
	EffectivePolicy    map[string]any `json:"effective_policy_definition"`
	Messages           int64          `json:"messages"`
	MessagesPersistent *int64         `json:"messages_persistent"`
	Consumers          int            `json:"consumers"`
	MessagesUnacked    int64          `json:"messages_unacknowledged"`
	MessagesReady      int64          `json:"messages_ready"`
}

// setting returns a queue argument ("x-"+name) or, when absent, the
// effective policy's value of name, and where it came from.
func (q *queueInfo) setting(name string) (any, string) {
	if v, ok := q.Arguments["x-"+name]; ok {
		return v, "argument"
	}
	if v, ok := q.EffectivePolicy[name]; ok {
		return v, "policy " + q.Policy
	}
	return nil, ""
}

func auditRabbitMQ(a *app) *cobra.Command {
	f := a.newFlags("audit rabbitmq", "(--queue NAME[,NAME...] | --topic TOPIC --group GROUP[,GROUP...]) [flags]", `
Checks each queue's durability through the RabbitMQ management HTTP API:
durable, not exclusive or auto-delete (L02); quorum rather than classic (L22);
a dead-letter exchange that exists; a delivery limit for poison messages;
at-least-once dead-lettering; no drop-head overflow; no transient messages
waiting in a classic queue; and a consumer while messages wait. Each finding
says how to fix it. With --topic and --group the queue names are the SDK's
(rabbitmq.QueueName: TOPIC.GROUP).`)
	mgmtURL := f.String("management-url", "", "management API URL, http(s)://user@host:15672, without a password (default $"+envManagementURL+", which may hold one, else derived from $"+envAMQPURL+"; the password of a URL without one from $"+envAMQPPassword+")")
	amqpURL := f.String("amqp-url", "", "AMQP URL, for the vhost and to derive the management URL (default $"+envAMQPURL+")")
	vhostFlag := f.String("vhost", "", "virtual host (default: the AMQP URL's, else /)")
	var mtls tlsFlags
	mtls.register(f.FlagSet, "management", "the management API", envManagementCAFile, envManagementCertFile, envManagementKeyFile)
	var queues, groups listFlag
	f.Var(&queues, "queue", "queue to audit (repeatable, or comma-separated)")
	topic := f.String("topic", "", "SDK topic whose group queues to audit, with --group")
	f.Var(&groups, "group", "consumer group of --topic (repeatable, or comma-separated)")
	strict := f.Bool("strict", false, "exit 1 on warnings too")
	env := f.registerEnvironment("rabbitmq")
	env.prefix(topic)
	env.prefixList(&queues)
	return f.runE(func(ctx context.Context) error {
		if *topic != "" {
			if len(groups) == 0 {
				return usagef("--topic needs --group")
			}
			for _, g := range groups {
				queues = append(queues, rabbitmq.QueueName(*topic, g))
			}
		} else if len(groups) > 0 {
			return usagef("--group needs --topic")
		}
		if len(queues) == 0 {
			return usagef("--queue (or --topic and --group) is required")
		}
		ctx, cancel := context.WithTimeout(ctx, f.timeout)
		defer cancel()
		m, vhost, err := a.connectManagement(*mgmtURL, *amqpURL, &mtls, f.timeout)
		if err != nil {
			return err
		}
		if *vhostFlag != "" {
			vhost = *vhostFlag
		}
		var overview struct {
			Version string `json:"rabbitmq_version"`
		}
		if err := m.get(ctx, "/api/overview", &overview); err != nil {
			return err
		}
		major, _ := strconv.Atoi(strings.SplitN(overview.Version, ".", 2)[0])

		var r auditReport
		for _, name := range queues {
			var q queueInfo
			err := m.get(ctx, "/api/queues/"+url.PathEscape(vhost)+"/"+url.PathEscape(name), &q)
			if errors.Is(err, errNotFound) {
				return fmt.Errorf("queue %q does not exist in vhost %q (%s)", name, vhost, env.hint())
			}
			if err != nil {
				return err
			}
			for _, c := range auditQueue(ctx, m, vhost, &q, major) {
				r.add(c)
			}
		}
		return a.printAudit(f, &r, *strict)
	})
}

// auditQueue returns the checks of one queue. major is RabbitMQ's major
// version (4 has a default delivery limit for quorum queues, 3 none).
func auditQueue(ctx context.Context, m *mgmt, vhost string, q *queueInfo, major int) []check {
	var out []check
	add := func(c check) { c.Resource = q.Name; out = append(out, c) }
	policy := func(def string) string {
		return fmt.Sprintf(`rabbitmqctl set_policy --vhost %s --apply-to queues %s-policy '^%s$' '%s' (a policy overrides no queue argument)`, vhost, q.Name, regexpQuote(q.Name), def)
	}
	recreate := "queue properties cannot change in place: declare a new durable quorum queue (rabbitmq.Declare does), move the consumers to it, then delete this one"

	c := check{Check: "durable", Value: strconv.FormatBool(q.Durable), Want: "true", Status: statusPass}
	if !q.Durable {
		c.Status, c.Why, c.Fix = statusFail, "the queue and its messages vanish when the broker restarts (L02)", recreate
	}
	add(c)

	c = check{Check: "exclusive/auto-delete", Value: fmt.Sprintf("exclusive=%t auto_delete=%t", q.Exclusive, q.AutoDelete), Want: "both false", Status: statusPass}
	if q.Exclusive || q.AutoDelete {
		c.Status, c.Why, c.Fix = statusFail, "the queue is deleted with its connection or last consumer, and its messages with it", recreate
	}
	add(c)

	typ := q.Type
	if typ == "" {
		typ = "classic"
	}
	c = check{Check: "type", Value: typ, Want: "quorum", Status: statusPass}
	if typ != "quorum" {
		c.Status, c.Fix = statusWarn, recreate+" (x-queue-type=quorum)"
		c.Why = "a " + typ + " queue lives on one node: its messages are unavailable or lost with that node (L22), and it has no delivery limit for poison messages"
	}
	add(c)

	dlx, src := q.setting("dead-letter-exchange")
	c = check{Check: "dead-letter exchange", Value: "none", Want: "set, and the exchange exists", Status: statusPass}
	if dlx == nil {
		c.Status = statusFail
		c.Why = "a rejected, expired or poison message is dropped instead of dead-lettered"
		c.Fix = policy(fmt.Sprintf(`{"dead-letter-exchange":"%s.dlx"}`, q.Name)) + ", then declare that exchange and a queue bound to it"
	} else {
		name := fmt.Sprint(dlx)
		c.Value = name + " (" + src + ")"
		var ex map[string]any
		if err := m.get(ctx, "/api/exchanges/"+url.PathEscape(vhost)+"/"+url.PathEscape(name), &ex); errors.Is(err, errNotFound) {
			c.Status, c.Why = statusFail, "the dead-letter exchange does not exist: dead-lettered messages are dropped"
			c.Fix = "declare the exchange " + name + " and bind a durable queue to it (rabbitmq.Declare does)"
		} else if err != nil {
			c.Status, c.Why, c.Fix = statusWarn, "could not check the exchange: "+err.Error(), "retry the audit"
		}
	}
	add(c)

	if typ == "quorum" {
		limit, src := q.setting("delivery-limit")
		c = check{Check: "delivery limit", Want: "set", Status: statusPass}
		switch {
		case limit != nil:
			c.Value = fmt.Sprint(limit) + " (" + src + ")"
		case major >= 4:
			c.Value = "20 (RabbitMQ 4 default)"
		default:
			c.Value, c.Status = "none", statusWarn
			c.Why = "RabbitMQ 3 has no default: a message that always fails is redelivered forever and blocks its consumer"
			c.Fix = policy(`{"delivery-limit":20}`) + ", or declare with x-delivery-limit (rabbitmq.Topology.DeliveryLimit)"
		}
		add(c)

		if dlx != nil {
			strategy, _ := q.setting("dead-letter-strategy")
			c = check{Check: "dead-letter strategy", Value: "at-most-once", Want: "at-least-once", Status: statusPass}
			if strategy != nil {
				c.Value = fmt.Sprint(strategy)
			}
			if c.Value != "at-least-once" {
				c.Status = statusWarn
				c.Why = "at-most-once dead-lettering can lose a message between the queue and the dead-letter queue"
				c.Fix = policy(`{"dead-letter-strategy":"at-least-once","overflow":"reject-publish"}`)
			}
			add(c)
		}
	}

	overflow, _ := q.setting("overflow")
	maxLen, _ := q.setting("max-length")
	maxBytes, _ := q.setting("max-length-bytes")
	c = check{Check: "overflow", Value: "no length limit", Want: "reject-publish when limited", Status: statusPass}
	if maxLen != nil || maxBytes != nil {
		c.Value = "drop-head"
		if overflow != nil {
			c.Value = fmt.Sprint(overflow)
		}
		if c.Value == "drop-head" {
			c.Status = statusFail
			c.Why = "when the queue is full its oldest messages are dropped silently"
			c.Fix = policy(`{"overflow":"reject-publish"}`) + " so publishers get a nack and retry"
		}
	}
	add(c)

	c = check{Check: "persistent messages", Want: "every waiting message persistent", Status: statusPass}
	switch {
	case typ == "quorum" || typ == "stream":
		c.Value = typ + " queues store every message on disk"
	case q.MessagesPersistent == nil:
		c.Value = "unknown"
	default:
		transient := q.Messages - *q.MessagesPersistent
		c.Value = fmt.Sprintf("%d of %d persistent", *q.MessagesPersistent, q.Messages)
		if transient > 0 {
			c.Status = statusFail
			c.Why = fmt.Sprintf("%d transient messages are lost if the broker restarts (L02)", transient)
			c.Fix = "publish with delivery_mode=2 (persistent), as the SDK's publisher does"
		}
	}
	add(c)

	c = check{Check: "consumers", Value: fmt.Sprintf("%d consumers, %d messages", q.Consumers, q.Messages), Want: "a consumer while messages wait", Status: statusPass}
	if q.Consumers == 0 && q.Messages > 0 {
		c.Status = statusWarn
		c.Why = "messages wait and nothing consumes them"
		c.Fix = "start the consuming service, or check why its consumer stopped"
	}
	add(c)
	return out
}

// regexpQuote escapes the dots of a queue name for a policy pattern.
func regexpQuote(s string) string { return strings.ReplaceAll(s, ".", `\.`) }
