package observability

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/reliable-go/reliable/consumer"
)

// Observe records a consumer delivery's outcome and duration, and counts
// duplicates as dedupe hits. Pass it as consumer.Config.Observe:
//
//	consumer.Config{Topic: "orders", Observe: tel.Observe}
//
// It does not block.
func (t *Telemetry) Observe(e consumer.Event) {
	topic := ""
	if e.Message != nil {
		topic = e.Message.Topic
	}
	outcome := strings.ReplaceAll(e.Outcome.String(), "-", "_")
	set := metric.WithAttributeSet(attribute.NewSet(attribute.String(AttrTopic, topic), attribute.String(AttrOutcome, outcome)))
	ctx := context.Background()
	t.deliveries.Add(ctx, 1, set)
	t.consumerDuration.Record(ctx, e.Duration.Seconds(), set)
	if e.Outcome == consumer.OutcomeDuplicate {
		t.dedupeHits.Add(ctx, 1, metric.WithAttributes(attribute.String(AttrTopic, topic)))
	}
	if e.NotDeduplicated {
		t.notDeduplicated.Add(ctx, 1, metric.WithAttributes(attribute.String(AttrTopic, topic)))
	}
}
