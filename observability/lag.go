package observability

import (
	"context"
	"errors"
	"log/slog"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// ErrUnknownGroup means a Kafka consumer group does not exist: it has no
// members and no committed offsets (kafkalag.Read returns it).
var ErrUnknownGroup = errors.New("observability: unknown consumer group")

// PartitionLag is the backlog of one partition for a consumer group.
type PartitionLag struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	// Committed is the group's committed offset: the next offset it reads.
	// -1 when the group has committed nothing for the partition; it then
	// starts at Oldest (the SDK's Offsets.Initial).
	Committed int64 `json:"committed"`
	// Oldest and Newest are the partition's first offset still stored and
	// its high watermark (the offset the next record gets).
	Oldest int64 `json:"oldest"`
	Newest int64 `json:"newest"`
	// Lag is how many records the group has yet to commit: Newest minus
	// Committed, counted from Oldest when nothing is committed or the
	// committed offset was already deleted by retention.
	Lag int64 `json:"lag"`
}

// TopicLag is a consumer group's backlog on one topic.
type TopicLag struct {
	Topic      string         `json:"topic"`
	Partitions []PartitionLag `json:"partitions"`
	Total      int64          `json:"total"`
}

// Hottest returns the partition with the largest lag, its share of the
// topic's total lag (0 when there is none) and the next largest lag.
func (tl TopicLag) Hottest() (hot PartitionLag, share float64, runnerUp int64) {
	for i, p := range tl.Partitions {
		if i == 0 || p.Lag > hot.Lag {
			if i > 0 {
				runnerUp = max(runnerUp, hot.Lag)
			}
			hot = p
		} else {
			runnerUp = max(runnerUp, p.Lag)
		}
	}
	if tl.Total > 0 {
		share = float64(hot.Lag) / float64(tl.Total)
	}
	return hot, share, runnerUp
}

// Skewed reports whether one partition holds most of the topic's backlog,
// the sign of a hot key or of a partition key that is too coarse, such as
// a merchant ID instead of an order ID (L14): the topic has at least two
// partitions, its total lag is at least minLag, the hottest partition holds
// more than share of it, and at least twice the next partition's lag.
// SkewShare and SkewMinLag are the defaults.
func (tl TopicLag) Skewed(share float64, minLag int64) bool {
	if len(tl.Partitions) < 2 || tl.Total < minLag || tl.Total == 0 {
		return false
	}
	hot, s, next := tl.Hottest()
	return s > share && hot.Lag >= 2*next
}

// GroupLag is a consumer group's backlog on the topics it consumes.
type GroupLag struct {
	Group string `json:"group"`
	// State is the group's state as the coordinator reports it: "Stable",
	// "Empty" (no members), "PreparingRebalance", ...
	State string `json:"state"`
	// Members is the number of active members.
	Members int        `json:"members"`
	Topics  []TopicLag `json:"topics"`
	Total   int64      `json:"total"`
}

// WatchLag reports the lag that read returns each time metrics are
// collected: MetricConsumerLag per partition and MetricConsumerLagSkewed per
// topic (TopicLag.Skewed with SkewShare and SkewMinLag). For Kafka, read is
// kafkalag.Read (package observability/kafkalag, or its kafkalag.Watch);
// for other brokers or a lag computed elsewhere, any function returning a
// GroupLag (an in-memory broker in a demo, a RabbitMQ queue's depth as one
// partition). A failed read is logged and counted in
// MetricObserveErrors. Call Unregister on the result to stop.
func (t *Telemetry) WatchLag(group string, read func(context.Context) (GroupLag, error)) (metric.Registration, error) {
	g := attribute.String(AttrGroup, group)
	return t.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		gl, err := read(ctx)
		if err != nil {
			t.pollFailed(ctx, "kafka_lag", err, slog.String("group", group))
			return nil
		}
		for _, tl := range gl.Topics {
			topic := attribute.String(AttrTopic, tl.Topic)
			for _, p := range tl.Partitions {
				o.ObserveInt64(t.lag, p.Lag, metric.WithAttributeSet(attribute.NewSet(g, topic, attribute.String(AttrPartition, strconv.Itoa(int(p.Partition))))))
			}
			var skewed int64
			if tl.Skewed(SkewShare, SkewMinLag) {
				skewed = 1
			}
			o.ObserveInt64(t.lagSkewed, skewed, metric.WithAttributeSet(attribute.NewSet(g, topic)))
		}
		return nil
	}, t.lag, t.lagSkewed)
}
