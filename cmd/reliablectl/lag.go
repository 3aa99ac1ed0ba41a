package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/observability"
	"github.com/reliable-go/reliable/observability/kafkalag"
)

// lagReport is the output of the lag command.
type lagReport struct {
	observability.GroupLag
	Skewed   []skew   `json:"skewed"`
	Warnings []string `json:"warnings"`
}

// skew describes a topic whose backlog sits mostly in one partition.
type skew struct {
	Topic     string  `json:"topic"`
	Partition int32   `json:"partition"`
	Share     float64 `json:"share"`
}

func lagCmd(a *app) *cobra.Command {
	f := a.newFlags("lag", "--group GROUP [--topic NAME[,NAME...]] [flags]", `
Shows a Kafka consumer group's lag per partition: the partition's newest
offset minus the group's committed offset (from the oldest offset when the
group committed nothing yet). It warns when one partition holds most of a
topic's backlog: a hot key, or a partition key that is too coarse (L14).
Without --topic it covers every topic the group has committed offsets for.
Names are Kafka's, with the environment prefix (prod.kitchen, prod.orders).`)
	var k kafkaFlags
	k.register(f)
	group := f.String("group", "", "consumer group ID")
	var topics listFlag
	f.Var(&topics, "topic", "topic (repeatable, or comma-separated)")
	env := f.registerEnvironment("kafka")
	env.prefix(group)
	env.prefixList(&topics)
	maxLag := f.Int64("max-lag", 0, "exit 1 when the group's total lag is above this (0: never)")
	share := f.Float64("skew-share", observability.SkewShare, "warn when one partition holds more than this share of a topic's lag")
	minLag := f.Int64("skew-min-lag", observability.SkewMinLag, "warn about skew only from this total lag of a topic")
	return f.runE(func(ctx context.Context) error {
		if err := f.required(map[string]string{"group": *group}); err != nil {
			return err
		}
		if *share <= 0 || *share >= 1 {
			return usagef("--skew-share must be between 0 and 1")
		}
		if *maxLag < 0 || *minLag < 0 {
			return usagef("--max-lag and --skew-min-lag must not be negative")
		}
		return f.withKafka(ctx, &k, func(ctx context.Context, conn *kafkaConn) error {
			gl, err := kafkalag.Read(ctx, conn.client, conn.admin, *group, topics...)
			switch {
			case errors.Is(err, observability.ErrUnknownGroup):
				return fmt.Errorf("consumer group %q does not exist (%s)", *group, env.hint())
			case errors.Is(err, reliable.ErrUnknownTopic):
				return fmt.Errorf("%w (%s)", err, env.hint())
			case err != nil:
				return err
			}
			r := lagReport{GroupLag: gl, Skewed: []skew{}, Warnings: []string{}}
			if len(gl.Topics) == 0 {
				r.Warnings = append(r.Warnings, "the group has no committed offsets: name the topics with --topic")
			}
			for _, tl := range gl.Topics {
				if tl.Skewed(*share, *minLag) {
					hot, s, _ := tl.Hottest()
					r.Skewed = append(r.Skewed, skew{Topic: tl.Topic, Partition: hot.Partition, Share: s})
					r.Warnings = append(r.Warnings, fmt.Sprintf(
						"partition %d of %s holds %.0f%% of its backlog (%d of %d): a hot key? route by a finer key such as the order ID, not the merchant (L14)",
						hot.Partition, tl.Topic, 100*s, hot.Lag, tl.Total))
				}
			}
			err = a.emit(f, r, func(w io.Writer) {
				fmt.Fprintf(w, "group %s: state %s, %d members, total lag %d\n\n", gl.Group, gl.State, gl.Members, gl.Total)
				row(w, "TOPIC", "PARTITION", "COMMITTED", "NEWEST", "LAG", "SHARE")
				for _, tl := range gl.Topics {
					for _, p := range tl.Partitions {
						committed := fmt.Sprint(p.Committed)
						if p.Committed < 0 {
							committed = "-"
						}
						share := "-"
						if tl.Total > 0 {
							share = fmt.Sprintf("%.0f%%", 100*float64(p.Lag)/float64(tl.Total))
						}
						row(w, tl.Topic, p.Partition, committed, p.Newest, p.Lag, share)
					}
				}
				for _, wn := range r.Warnings {
					fmt.Fprintf(w, "\nWARN %s\n", wn)
				}
			})
			if err != nil {
				return err
			}
			if *maxLag > 0 && gl.Total > *maxLag {
				return &findingsError{msg: fmt.Sprintf("total lag %d is above --max-lag %d", gl.Total, *maxLag)}
			}
			return nil
		})
	})
}
