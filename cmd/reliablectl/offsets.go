package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/spf13/cobra"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/observability"
	"github.com/reliable-go/reliable/observability/kafkalag"
)

// resetPlan is the output of offsets reset.
type resetPlan struct {
	Group    string       `json:"group"`
	Topic    string       `json:"topic"`
	State    string       `json:"state"`
	Members  int          `json:"members"`
	Target   string       `json:"target"`
	Moves    []offsetMove `json:"partitions"`
	Executed bool         `json:"executed"`
}

// offsetMove is one partition's change.
type offsetMove struct {
	Partition int32 `json:"partition"`
	// Current is the committed offset, -1 when none.
	Current int64 `json:"current"`
	New     int64 `json:"new"`
	// Replayed counts the messages the group will read again (new offset
	// below the current one); Skipped the messages it will never read.
	Replayed int64  `json:"replayed"`
	Skipped  int64  `json:"skipped"`
	Note     string `json:"note,omitempty"`
}

func offsetsReset(a *app) *cobra.Command {
	f := a.newFlags("offsets reset", "--group GROUP --topic TOPIC (--to-time TIME | --to-offset OFFSET) [--execute] [flags]", `
Moves a consumer group's committed offsets on one topic, for instance back to
the time before a misconfigured consumer consumed a production topic with the
production group (L07): the group then reads those messages again (the
consumers' deduplication absorbs the ones already applied).

It is a DRY RUN unless --execute is given: it prints, per partition, the
committed offset, the new one and how many messages would be read again or
skipped, and changes nothing. With --execute it refuses while the group has
active members (stop its consumers first: a live member would overwrite the
reset with its next commit), and refuses an unknown group unless
--allow-new-group.

--to-time is RFC 3339 (2026-05-01T10:00:00Z) or a negative duration from now
(-2h); each partition goes to its first message at or after that time, or its
end. --to-offset is a number (clamped to each partition's range), earliest or
latest.`)
	var k kafkaFlags
	k.register(f)
	group := f.String("group", "", "consumer group ID (Kafka's name; the application's with --environment)")
	topic := f.String("topic", "", "topic (Kafka's name; the application's with --environment)")
	env := f.registerEnvironment("kafka")
	env.prefix(group, topic)
	toTime := f.String("to-time", "", "RFC 3339 time, or a negative duration such as -2h")
	toOffset := f.String("to-offset", "", "offset, earliest or latest")
	var partFlag listFlag
	f.Var(&partFlag, "partition", "only these partitions (repeatable, or comma-separated; default all)")
	execute := f.Bool("execute", false, "apply the reset (without it nothing is changed)")
	allowNew := f.Bool("allow-new-group", false, "with --execute, allow a group that does not exist yet")
	return f.runE(func(ctx context.Context) error {
		if err := f.required(map[string]string{"group": *group, "topic": *topic}); err != nil {
			return err
		}
		if (*toTime == "") == (*toOffset == "") {
			return usagef("give exactly one of --to-time and --to-offset")
		}
		var at time.Time
		var offset int64
		switch {
		case *toTime != "":
			t, err := parseTime(*toTime, time.Now())
			if err != nil {
				return err
			}
			at = t
		case *toOffset == "earliest":
			offset = sarama.OffsetOldest
		case *toOffset == "latest":
			offset = sarama.OffsetNewest
		default:
			n, err := strconv.ParseInt(*toOffset, 10, 64)
			if err != nil || n < 0 {
				return usagef("--to-offset must be a non-negative number, earliest or latest, not %q", *toOffset)
			}
			offset = n
		}
		var only []int32
		for _, p := range partFlag {
			n, err := strconv.ParseInt(p, 10, 32)
			if err != nil || n < 0 {
				return usagef("--partition %q is not a partition number", p)
			}
			only = append(only, int32(n))
		}

		return f.withKafka(ctx, &k, func(ctx context.Context, conn *kafkaConn) error {
			parts, err := conn.client.Partitions(*topic)
			if errors.Is(err, sarama.ErrUnknownTopicOrPartition) || (err == nil && len(parts) == 0) {
				return fmt.Errorf("topic %q does not exist: %w (%s)", *topic, reliable.ErrUnknownTopic, env.hint())
			}
			if err != nil {
				return fmt.Errorf("partitions of %q: %w", *topic, err)
			}
			for _, p := range only {
				if !slices.Contains(parts, p) {
					return fmt.Errorf("topic %q has no partition %d (it has %d)", *topic, p, len(parts))
				}
			}
			if len(only) > 0 {
				parts = only
			}
			slices.Sort(parts)

			gl, err := kafkalag.Read(ctx, conn.client, conn.admin, *group, *topic)
			unknownGroup := errors.Is(err, observability.ErrUnknownGroup)
			if err != nil && !unknownGroup {
				return err
			}
			current := make(map[int32]int64)
			oldest := make(map[int32]int64)
			newest := make(map[int32]int64)
			if !unknownGroup {
				for _, tl := range gl.Topics {
					for _, p := range tl.Partitions {
						current[p.Partition], oldest[p.Partition], newest[p.Partition] = p.Committed, p.Oldest, p.Newest
					}
				}
			} else {
				o, n, err := kafkalag.ReadOffsets(conn.admin, map[string][]int32{*topic: parts})
				if err != nil {
					return err
				}
				for _, p := range parts {
					current[p], oldest[p], newest[p] = -1, o[*topic][p], n[*topic][p]
				}
			}

			plan := resetPlan{Group: *group, Topic: *topic, State: gl.State, Members: gl.Members}
			if unknownGroup {
				plan.State = "(does not exist)"
			}
			var targets map[int32]int64
			if !at.IsZero() {
				plan.Target = "time " + at.UTC().Format(time.RFC3339Nano)
				byTime, err := kafkalag.OffsetsForTime(conn.admin, map[string][]int32{*topic: parts}, at.UnixMilli())
				if err != nil {
					return err
				}
				targets = byTime[*topic]
			} else {
				plan.Target = "offset " + *toOffset
			}
			for _, p := range parts {
				m := offsetMove{Partition: p, Current: current[p]}
				switch {
				case targets != nil:
					m.New = targets[p]
				case offset == sarama.OffsetOldest:
					m.New = oldest[p]
				case offset == sarama.OffsetNewest:
					m.New = newest[p]
				default:
					m.New = offset
					if m.New < oldest[p] {
						m.New, m.Note = oldest[p], fmt.Sprintf("clamped to the oldest offset %d", oldest[p])
					} else if m.New > newest[p] {
						m.New, m.Note = newest[p], fmt.Sprintf("clamped to the newest offset %d", newest[p])
					}
				}
				from := m.Current
				if from < 0 {
					from = oldest[p] // a group without commits starts at the oldest
				}
				if m.New < from {
					m.Replayed = from - m.New
				} else {
					m.Skipped = m.New - from
				}
				plan.Moves = append(plan.Moves, m)
			}

			var execErr error
			if *execute {
				execErr = a.applyReset(conn.admin, &plan, unknownGroup, *allowNew)
			}
			err = a.emit(f, plan, func(w io.Writer) {
				fmt.Fprintf(w, "group %s on %s: state %s, %d members; reset to %s\n\n", plan.Group, plan.Topic, plan.State, plan.Members, plan.Target)
				row(w, "PARTITION", "CURRENT", "NEW", "REPLAYED", "SKIPPED", "NOTE")
				for _, m := range plan.Moves {
					cur := strconv.FormatInt(m.Current, 10)
					if m.Current < 0 {
						cur = "-"
					}
					row(w, m.Partition, cur, m.New, m.Replayed, m.Skipped, m.Note)
				}
				if plan.Executed {
					fmt.Fprintln(w, "\nexecuted: the group's offsets were committed")
				} else {
					fmt.Fprintln(w, "\ndry run: nothing was changed; add --execute to apply")
				}
			})
			if execErr != nil {
				return execErr
			}
			return err
		})
	})
}

// applyReset commits the plan's offsets for the group, after checking that
// the group has no active members.
func (a *app) applyReset(admin sarama.ClusterAdmin, plan *resetPlan, unknownGroup, allowNew bool) error {
	if unknownGroup && !allowNew {
		return fmt.Errorf("consumer group %q does not exist; nothing was changed (add --allow-new-group to create its offsets)", plan.Group)
	}
	if plan.Members > 0 {
		return fmt.Errorf("consumer group %q has %d active members (state %s): stop its consumers first, a live member would overwrite the reset; nothing was changed", plan.Group, plan.Members, plan.State)
	}
	offsets := map[string]map[int32]sarama.OffsetAndMetadata{plan.Topic: {}}
	for _, m := range plan.Moves {
		offsets[plan.Topic][m.Partition] = sarama.OffsetAndMetadata{Offset: m.New, LeaderEpoch: -1, Metadata: "reliablectl offsets reset"}
	}
	resp, err := admin.AlterConsumerGroupOffsets(plan.Group, offsets, nil)
	if err != nil {
		return fmt.Errorf("commit offsets of group %q: %w", plan.Group, err)
	}
	var failed []string
	for t, ps := range resp.Errors {
		for p, kerr := range ps {
			if !errors.Is(kerr, sarama.ErrNoError) {
				failed = append(failed, fmt.Sprintf("%s/%d: %v", t, p, kerr))
			}
		}
	}
	if len(failed) > 0 {
		slices.Sort(failed)
		return fmt.Errorf("the broker refused the offsets of group %q (a member may have joined): %s", plan.Group, strings.Join(failed, "; "))
	}
	plan.Executed = true
	return nil
}

// parseTime reads an RFC 3339 time or a negative duration before now.
func parseTime(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d >= 0 {
			return time.Time{}, usagef("--to-time %q: a duration must be negative (time before now), e.g. -2h", s)
		}
		return now.Add(d), nil
	}
	return time.Time{}, usagef("--to-time %q is neither an RFC 3339 time (2026-05-01T10:00:00Z) nor a negative duration (-2h)", s)
}
