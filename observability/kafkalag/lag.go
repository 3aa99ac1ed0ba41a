package kafkalag

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/IBM/sarama"
	"go.opentelemetry.io/otel/metric"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/observability"
)

// Read reads the lag of group on topics (full Kafka names, with the
// environment prefix), or on every topic the group has committed offsets for
// when topics is empty. It fails with an error matching observability.ErrUnknownGroup when
// the group does not exist and reliable.ErrUnknownTopic when a topic does not.
// sarama's calls take no context: ctx is checked between them, and each is
// bounded by the client's network timeouts.
func Read(ctx context.Context, client sarama.Client, admin sarama.ClusterAdmin, group string, topics ...string) (observability.GroupLag, error) {
	gl := observability.GroupLag{Group: group}
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
		return gl, fmt.Errorf("group %q has no members and no committed offsets: %w", group, observability.ErrUnknownGroup)
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
		tl := observability.TopicLag{Topic: t}
		for _, p := range ps {
			c, ok := committed[t][p]
			if !ok {
				c = -1
			}
			pl := observability.PartitionLag{Topic: t, Partition: p, Committed: c, Oldest: oldest[t][p], Newest: newest[t][p]}
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

// Watch makes t report the lag of group on topics (full Kafka names; every
// topic with committed offsets when empty) each time metrics are collected,
// through Telemetry.WatchLag: observability.MetricConsumerLag per partition
// and observability.MetricConsumerLagSkewed per topic. client is shared, not
// closed. A failed read is logged and counted in
// observability.MetricObserveErrors. Call Unregister on the result to stop.
func Watch(t *observability.Telemetry, client sarama.Client, group string, topics ...string) (metric.Registration, error) {
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		return nil, fmt.Errorf("kafkalag: cluster admin: %w", err)
	}
	// The admin is not closed: closing it would close the shared client.
	return t.WatchLag(group, func(ctx context.Context) (observability.GroupLag, error) {
		return Read(ctx, client, admin, group, topics...)
	})
}
