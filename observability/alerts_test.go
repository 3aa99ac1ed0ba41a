package observability_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/observability"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/reliabletest"
	"github.com/reliable-go/reliable/retry"
)

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// exportedNames records every metric once and returns the metric names the
// Prometheus endpoint serves.
func exportedNames(t *testing.T) map[string]bool {
	b := setup(t)
	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	pub := b.tel.Publisher(broker.Publisher())
	_ = pub.Publish(context.Background(), &reliable.Message{Topic: "orders"})
	_ = pub.Publish(context.Background(), &reliable.Message{Topic: "nope"})
	b.tel.Observe(consumer.Event{Message: &reliable.Message{Topic: "orders"}, Outcome: consumer.OutcomeDuplicate})
	must := func(_ any, err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(observability.WatchRetryFunc(b.tel, "g", func(context.Context) (retry.Status, error) { return retry.Status{}, nil }))
	must(observability.WatchOutboxFunc(b.tel, "o", func(context.Context) (outbox.Status, error) { return outbox.Status{}, nil }))
	must(b.tel.WatchLag("g", func(context.Context) (observability.GroupLag, error) {
		return observability.GroupLag{Topics: []observability.TopicLag{{Topic: "orders", Partitions: []observability.PartitionLag{{}}}}}, nil
	}))
	must(observability.WatchSlotFunc(b.tel, "s", func(context.Context) (outbox.SlotInfo, error) {
		return outbox.SlotInfo{Name: "s", Exists: true, WALStatus: "reserved", SafeWALBytes: -1}, nil
	}))
	must(observability.WatchRelayFunc(b.tel, "r", func() outbox.Stats { return outbox.Stats{LogState: "reading"} }))
	must(observability.WatchOutboxFunc(b.tel, "broken", func(context.Context) (outbox.Status, error) { return outbox.Status{}, context.DeadlineExceeded }))
	names := map[string]bool{}
	for _, line := range strings.Split(b.scrape(t), "\n") {
		if strings.HasPrefix(line, "reliable_") {
			name := line[:strings.IndexAny(line, "{ ")]
			names[name] = true
		}
	}
	return names
}

// The example rules parse, are complete, use only metrics this package
// exports, and use the documented default thresholds (L18).
func TestAlertRules(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	names := exportedNames(t)
	metricRef := regexp.MustCompile(`\breliable_[a-z_]+\b`)
	rules := map[string]struct{ expr, forDur string }{}
	for _, g := range rf.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q is empty or unnamed", g.Name)
		}
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("rule %q lacks alert, expr, severity, summary or description", r.Alert)
			}
			if _, err := time.ParseDuration(r.For); err != nil {
				t.Errorf("rule %s: for %q: %v", r.Alert, r.For, err)
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") || strings.Count(r.Expr, "{") != strings.Count(r.Expr, "}") {
				t.Errorf("rule %s: unbalanced expression %q", r.Alert, r.Expr)
			}
			refs := metricRef.FindAllString(r.Expr, -1)
			if len(refs) == 0 {
				t.Errorf("rule %s uses none of the SDK's metrics", r.Alert)
			}
			for _, m := range refs {
				if !names[m] && !names[m+"_total"] {
					t.Errorf("rule %s uses %s, which is not exported (exported: %v)", r.Alert, m, names)
				}
			}
			if _, dup := rules[r.Alert]; dup {
				t.Errorf("rule %s defined twice", r.Alert)
			}
			rules[r.Alert] = struct{ expr, forDur string }{r.Expr, r.For}
		}
	}
	secs := func(d time.Duration) string { return strconv.Itoa(int(d.Seconds())) }
	mib := func(n int) string { return strconv.Itoa(n>>20) + " * 1024 * 1024" }
	// The threshold ends the expression, or the comparison before " and ".
	for alert, want := range map[string]struct{ threshold, forDur string }{
		"ReliableConsumerLagHigh":            {"> " + strconv.Itoa(observability.AlertLagMessages), observability.AlertLagFor.String()},
		"ReliableHotPartition":               {"== 1", ""},
		"ReliableRetryBacklog":               {"> " + strconv.Itoa(observability.AlertRetryPending), ""},
		"ReliableRetryOverdue":               {"> " + secs(observability.AlertRetryOverdue), ""},
		"ReliableRetryDeadEntries":           {"> " + strconv.Itoa(observability.AlertDeadEntries), ""},
		"ReliableOutboxStalled":              {"> " + secs(observability.AlertOutboxOldestPending), ""},
		"ReliableOutboxDeadRows":             {"> " + strconv.Itoa(observability.AlertDeadEntries), ""},
		"ReliableOutboxSlotRetainsWAL":       {"> " + mib(observability.AlertSlotRetainedBytes), observability.AlertSlotRetainedFor.String()},
		"ReliableOutboxSlotNearInvalidation": {"< " + mib(observability.AlertSlotSafeWALBytes), ""},
		"ReliableOutboxSlotLost":             {"== 0", ""},
		"ReliableOutboxLogFallbacks":         {"> " + strconv.Itoa(observability.AlertLogFallbacks), ""},
		"ReliableOutboxSlotUnread":           {"> " + mib(observability.AlertSlotLagBytes), observability.AlertSlotLagFor.String()},
	} {
		r, ok := rules[alert]
		if !ok {
			t.Errorf("no rule %s", alert)
			continue
		}
		expr := strings.TrimSpace(r.expr)
		if !strings.HasSuffix(expr, want.threshold) && !strings.Contains(expr, want.threshold+" and ") {
			t.Errorf("rule %s: %q does not end with the documented threshold %q", alert, r.expr, want.threshold)
		}
		if want.forDur != "" {
			if d, _ := time.ParseDuration(r.forDur); d.String() != want.forDur {
				t.Errorf("rule %s: for %s, want %s", alert, r.forDur, want.forDur)
			}
		}
	}
}
