package observability

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"

	"github.com/IBM/sarama"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/reliable-go/reliable"
)

// ErrUnknownGroup means a Kafka consumer group does not exist: it has no
// members and no committed offsets.
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

// ReadKafkaLag reads the lag of group on topics (full Kafka names, with the
// environment prefix), or on every topic the group has committed offsets for
// when topics is empty. It fails with an error matching ErrUnknownGroup when
// the group does not exist and reliable.ErrUnknownTopic when a topic does not.
// sarama's calls take no context: ctx is checked between them, and each is
// bounded by the client's network timeouts.
func ReadKafkaLag(ctx context.Context, client sarama.Client, admin sarama.ClusterAdmin, group string, topics ...string) (GroupLag, error) {
	gl := GroupLag{Group: group}
	descs, err := admin.DescribeConsumerGroups([]string{group})
	if err != nil {
		return gl, fmt.Errorf("describe group %q: %w", group, err)
	}
	if len(descs) != 1 {
		return gl, fmt.Errorf("describe group %q: %d descriptions", group, len(descs))
	}
	if d := descs[0]; !errors.Is(d.Err, sarama.ErrNoError) {
		return gl, fmt.Errorf("describe group %q: %w", group, d.Err)
	} else {
		gl.State, gl.Members = d.State, len(d.Members)
	}
	if err := ctx.Err(); err != nil {
		return gl, err
	}

	parts := make(map[string][]int32)
	for _, t := range topics {
		ps, err := client.Partitions(t)
		if errors.Is(err, sarama.ErrUnknownTopicOrPartition) || (err == nil && len(ps) == 0) {
			return gl, fmt.Errorf("topic %q does not exist: %w", t, reliable.ErrUnknownTopic)
		}
		if err != nil {
			return gl, fmt.Errorf("partitions of topic %q: %w", t, err)
		}
		parts[t] = ps
	}
	var req map[string][]int32
	if len(topics) > 0 {
		req = parts
	}
	resp, err := admin.ListConsumerGroupOffsets(group, req)
	if err != nil {
		return gl, fmt.Errorf("committed offsets of group %q: %w", group, err)
	}
	committed := committedOffsets(resp)
	if len(topics) == 0 {
		// Every partition of the topics the group committed on, also those
		// it has not committed on yet.
		for t := range committed {
			ps, err := client.Partitions(t)
			if err != nil {
				return gl, fmt.Errorf("partitions of topic %q: %w", t, err)
			}
			parts[t] = ps
		}
	}
	if gl.State == "Dead" && !anyCommitted(committed) {
		return gl, fmt.Errorf("group %q has no members and no committed offsets: %w", group, ErrUnknownGroup)
	}
	if err := ctx.Err(); err != nil {
		return gl, err
	}

	oldest, newest, err := ReadOffsets(admin, parts)
	if err != nil {
		return gl, err
	}
	names := make([]string, 0, len(parts))
	for t := range parts {
		names = append(names, t)
	}
	slices.Sort(names)
	for _, t := range names {
		ps := parts[t]
		slices.Sort(ps)
		tl := TopicLag{Topic: t}
		for _, p := range ps {
			c, ok := committed[t][p]
			if !ok {
				c = -1
			}
			pl := PartitionLag{Topic: t, Partition: p, Committed: c, Oldest: oldest[t][p], Newest: newest[t][p]}
			from := pl.Committed
			if from < pl.Oldest {
				from = pl.Oldest
			}
			pl.Lag = max(pl.Newest-from, 0)
			tl.Partitions = append(tl.Partitions, pl)
			tl.Total += pl.Lag
		}
		gl.Topics = append(gl.Topics, tl)
		gl.Total += tl.Total
	}
	return gl, nil
}

// committedOffsets flattens an offset fetch response: topic -> partition ->
// offset, leaving out partitions without a commit (offset -1).
func committedOffsets(resp *sarama.OffsetFetchResponse) map[string]map[int32]int64 {
	blocks := resp.Blocks
	if resp.Version >= 8 && len(resp.Groups) > 0 {
		blocks = resp.Groups[0].Blocks
	}
	out := make(map[string]map[int32]int64, len(blocks))
	for t, ps := range blocks {
		for p, b := range ps {
			if b == nil || b.Offset < 0 || !errors.Is(b.Err, sarama.ErrNoError) {
				continue
			}
			if out[t] == nil {
				out[t] = make(map[int32]int64)
			}
			out[t][p] = b.Offset
		}
	}
	return out
}

func anyCommitted(c map[string]map[int32]int64) bool {
	for _, ps := range c {
		if len(ps) > 0 {
			return true
		}
	}
	return false
}

// ReadOffsets returns the oldest and newest offset of each partition in
// parts (topic -> partitions), batched per leader.
func ReadOffsets(admin sarama.ClusterAdmin, parts map[string][]int32) (oldest, newest map[string]map[int32]int64, err error) {
	oldest, err = listOffsets(admin, parts, sarama.OffsetOldest)
	if err != nil {
		return nil, nil, err
	}
	newest, err = listOffsets(admin, parts, sarama.OffsetNewest)
	if err != nil {
		return nil, nil, err
	}
	return oldest, newest, nil
}

// listOffsets asks the leaders for the offset of each partition at "when": a
// timestamp in milliseconds, sarama.OffsetOldest or sarama.OffsetNewest.
// For a timestamp, the result is the first offset whose record time is at
// least when, or -1 when there is none.
func listOffsets(admin sarama.ClusterAdmin, parts map[string][]int32, when int64) (map[string]map[int32]int64, error) {
	req := make(map[string]map[int32]int64, len(parts))
	for t, ps := range parts {
		req[t] = make(map[int32]int64, len(ps))
		for _, p := range ps {
			req[t][p] = when
		}
	}
	if len(req) == 0 {
		return map[string]map[int32]int64{}, nil
	}
	res, err := admin.ListOffsets(req, nil)
	if err != nil {
		return nil, fmt.Errorf("list offsets: %w", err)
	}
	out := make(map[string]map[int32]int64, len(parts))
	for t, ps := range parts {
		out[t] = make(map[int32]int64, len(ps))
		for _, p := range ps {
			r := res[t][p]
			if r == nil {
				return nil, fmt.Errorf("list offsets: no answer for %s/%d", t, p)
			}
			if r.Err != nil && !errors.Is(r.Err, sarama.ErrNoError) {
				return nil, fmt.Errorf("list offsets of %s/%d: %w", t, p, r.Err)
			}
			out[t][p] = r.Offset
		}
	}
	return out, nil
}

// OffsetsForTime returns, for each partition in parts, the first offset whose
// record timestamp is at or after ms (milliseconds since the epoch), or the
// newest offset when every record is older.
func OffsetsForTime(admin sarama.ClusterAdmin, parts map[string][]int32, ms int64) (map[string]map[int32]int64, error) {
	at, err := listOffsets(admin, parts, ms)
	if err != nil {
		return nil, err
	}
	var after map[string][]int32
	for t, ps := range at {
		for p, o := range ps {
			if o < 0 {
				if after == nil {
					after = make(map[string][]int32)
				}
				after[t] = append(after[t], p)
			}
		}
	}
	if after != nil {
		newest, err := listOffsets(admin, after, sarama.OffsetNewest)
		if err != nil {
			return nil, err
		}
		for t, ps := range newest {
			for p, o := range ps {
				at[t][p] = o
			}
		}
	}
	return at, nil
}

// WatchKafkaLag reports the lag of group on topics (full Kafka names; every
// topic with committed offsets when empty) each time metrics are collected:
// MetricConsumerLag per partition and MetricConsumerLagSkewed per topic
// (TopicLag.Skewed with SkewShare and SkewMinLag). client is shared, not
// closed. A failed read is logged and counted in MetricObserveErrors.
// Call Unregister on the result to stop.
func (t *Telemetry) WatchKafkaLag(client sarama.Client, group string, topics ...string) (metric.Registration, error) {
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		return nil, fmt.Errorf("observability: cluster admin: %w", err)
	}
	// The admin is not closed: closing it would close the shared client.
	return t.WatchLag(group, func(ctx context.Context) (GroupLag, error) {
		return ReadKafkaLag(ctx, client, admin, group, topics...)
	})
}

// WatchLag reports the lag that read returns each time metrics are
// collected, as WatchKafkaLag does, for brokers other than Kafka or for a
// lag computed elsewhere (an in-memory broker in a demo, a RabbitMQ queue's
// depth as one partition). A failed read is logged and counted in
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
