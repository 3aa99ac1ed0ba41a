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
	"unicode/utf8"

	"github.com/IBM/sarama"
	"github.com/spf13/cobra"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/adapters/kafka"
)

// dltRecord is one record of a dead-letter topic, as the dlt commands show it.
type dltRecord struct {
	Partition int32     `json:"partition"`
	Offset    int64     `json:"offset"`
	Timestamp time.Time `json:"timestamp"`
	ID        string    `json:"id"`
	Key       string    `json:"key"`
	// KeyHex is set when the key is not printable UTF-8 (a Java long, say).
	KeyHex            string `json:"key_hex,omitempty"`
	Type              string `json:"type,omitempty"`
	Cause             string `json:"cause"`
	OriginalTopic     string `json:"original_topic"`
	OriginalPartition string `json:"original_partition"`
	OriginalOffset    string `json:"original_offset"`
	Attempts          string `json:"attempts"`
	Group             string `json:"group,omitempty"`
	DeadLetteredAt    string `json:"dead_lettered_at"`
	// Headers and Payload are shown by dlt show only.
	Headers map[string]string `json:"headers,omitempty"`
	Payload string            `json:"payload,omitempty"`
	// PayloadBytes is the payload's size.
	PayloadBytes int `json:"payload_bytes"`

	rec *sarama.ConsumerMessage
}

// recordID returns the message ID of a record (its ce_id header).
func recordID(r *sarama.ConsumerMessage) string {
	for _, h := range r.Headers {
		if h != nil && string(h.Key) == reliable.HeaderID {
			return string(h.Value)
		}
	}
	return ""
}

func (a *app) viewDLT(r *sarama.ConsumerMessage, full bool) dltRecord {
	hs := map[string]string{}
	for _, h := range r.Headers {
		if h != nil {
			hs[string(h.Key)] = string(h.Value)
		}
	}
	v := dltRecord{
		Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp,
		ID: hs[reliable.HeaderID], Key: a.showKey(string(r.Key)), KeyHex: keyHexOf(string(r.Key)), Type: hs[reliable.HeaderType],
		Cause:             hs[kafka.HeaderDeadLetterCause],
		OriginalTopic:     hs[kafka.HeaderDeadLetterTopic],
		OriginalPartition: hs[kafka.HeaderDeadLetterPartition],
		OriginalOffset:    hs[kafka.HeaderDeadLetterOffset],
		Attempts:          hs[kafka.HeaderDeadLetterAttempts],
		Group:             hs[kafka.HeaderDeadLetterGroup],
		DeadLetteredAt:    hs[kafka.HeaderDeadLetterTime],
		PayloadBytes:      len(r.Value),
		rec:               r,
	}
	if full {
		v.Headers = hs
		v.Payload = string(r.Value)
		if !utf8.Valid(r.Value) {
			v.Payload = fmt.Sprintf("(binary, hex) %x", r.Value)
		}
	}
	return v
}

// dltTopicInfo is a row of dlt topics.
type dltTopicInfo struct {
	Topic      string `json:"topic"`
	Partitions int    `json:"partitions"`
	Records    int64  `json:"records"`
}

func dltTopics(a *app) *cobra.Command {
	f := a.newFlags("dlt topics", "[--suffix SUFFIX] [flags]", `
Lists the dead-letter topics of the cluster: topics whose name ends with
--suffix (default "dlt", which matches orders.dlt, orders-dlt and
orders_dlt), with their partitions and the records they hold (the sum of
newest minus oldest offset per partition).

A consumer dead-letters to Consumer.DeadLetterTopic (kafka adapter); each
record keeps the message and adds dlt_ headers naming the cause, the
original topic, partition and offset, the attempts, the group and the time.`)
	var k kafkaFlags
	k.register(f)
	suffix := f.String("suffix", "dlt", "name suffix of dead-letter topics")
	env := f.registerEnvironment("kafka")
	return f.runE(func(ctx context.Context) error {
		return f.withKafka(ctx, &k, func(ctx context.Context, conn *kafkaConn) error {
			all, err := conn.client.Topics()
			if err != nil {
				return fmt.Errorf("list topics: %w", err)
			}
			out := []dltTopicInfo{}
			for _, t := range all {
				if !strings.HasSuffix(strings.ToLower(t), strings.ToLower(*suffix)) || !env.owns(t) {
					continue
				}
				parts, err := conn.client.Partitions(t)
				if err != nil {
					return fmt.Errorf("partitions of %q: %w", t, err)
				}
				info := dltTopicInfo{Topic: t, Partitions: len(parts)}
				for _, p := range parts {
					oldest, newest, err := partitionRange(conn.client, t, p)
					if err != nil {
						return err
					}
					info.Records += newest - oldest
				}
				out = append(out, info)
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			slices.SortFunc(out, func(x, y dltTopicInfo) int { return strings.Compare(x.Topic, y.Topic) })
			return a.emit(f, out, func(w io.Writer) {
				row(w, "TOPIC", "PARTITIONS", "RECORDS")
				for _, t := range out {
					row(w, t.Topic, t.Partitions, t.Records)
				}
			})
		})
	})
}

func partitionRange(client sarama.Client, topic string, p int32) (oldest, newest int64, err error) {
	if oldest, err = client.GetOffset(topic, p, sarama.OffsetOldest); err != nil {
		return 0, 0, fmt.Errorf("oldest offset of %s/%d: %w", topic, p, err)
	}
	if newest, err = client.GetOffset(topic, p, sarama.OffsetNewest); err != nil {
		return 0, 0, fmt.Errorf("newest offset of %s/%d: %w", topic, p, err)
	}
	return oldest, newest, nil
}

// dltSelect are the flags that pick records of a dead-letter topic.
type dltSelect struct {
	env       *envNames
	topic     string
	partition int
	offset    int64
	id        string
	limit     int
}

func (s *dltSelect) register(f *flags, withLimit bool) {
	f.StringVar(&s.topic, "topic", "", "dead-letter topic (Kafka's name; the application's with --environment)")
	s.env = f.registerEnvironment("kafka")
	s.env.prefix(&s.topic)
	f.IntVar(&s.partition, "partition", -1, "only this partition")
	f.Int64Var(&s.offset, "offset", -1, "with --partition: only the record at this offset")
	f.StringVar(&s.id, "id", "", "only records of this message ID (ce_id)")
	if withLimit {
		f.IntVar(&s.limit, "limit", defaultLimit, "show at most this many records")
	}
}

func (s *dltSelect) check() error {
	if s.topic == "" {
		return usagef("--topic is required")
	}
	if s.offset >= 0 && s.partition < 0 {
		return usagef("--offset needs --partition")
	}
	if s.limit < 0 {
		return usagef("--limit must not be negative")
	}
	return nil
}

// read returns the selected records of the topic, in partition and offset
// order. Records are read from the log without a consumer group: nothing is
// committed.
func (s *dltSelect) read(ctx context.Context, conn *kafkaConn) ([]*sarama.ConsumerMessage, error) {
	parts, err := conn.client.Partitions(s.topic)
	if errors.Is(err, sarama.ErrUnknownTopicOrPartition) || (err == nil && len(parts) == 0) {
		return nil, fmt.Errorf("topic %q does not exist: %w (%s)", s.topic, reliable.ErrUnknownTopic, s.env.hint())
	}
	if err != nil {
		return nil, fmt.Errorf("partitions of %q: %w", s.topic, err)
	}
	if s.partition >= 0 {
		if !slices.Contains(parts, int32(s.partition)) {
			return nil, fmt.Errorf("topic %q has no partition %d (it has %d)", s.topic, s.partition, len(parts))
		}
		parts = []int32{int32(s.partition)}
	}
	slices.Sort(parts)
	cons, err := sarama.NewConsumerFromClient(conn.client)
	if err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	defer cons.Close()
	var out []*sarama.ConsumerMessage
	for _, p := range parts {
		oldest, newest, err := partitionRange(conn.client, s.topic, p)
		if err != nil {
			return nil, err
		}
		from := oldest
		if s.offset >= 0 {
			if s.offset < oldest || s.offset >= newest {
				return nil, fmt.Errorf("%s/%d has no offset %d (it holds %d to %d)", s.topic, p, s.offset, oldest, newest-1)
			}
			from = s.offset
		}
		if from >= newest {
			continue
		}
		recs, err := readPartition(ctx, cons, s.topic, p, from, newest)
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			if s.offset >= 0 && r.Offset != s.offset {
				continue
			}
			if s.id != "" && recordID(r) != s.id {
				continue
			}
			out = append(out, r)
			if s.limit > 0 && len(out) >= s.limit {
				return out, nil
			}
		}
	}
	if s.offset >= 0 && len(out) == 0 {
		return nil, fmt.Errorf("%s/%d has no record at offset %d", s.topic, s.partition, s.offset)
	}
	return out, nil
}

// readPartition reads p from offset from up to (not including) end, or until
// the log stays quiet for a while (the last offsets may be transaction
// markers, which are never delivered).
func readPartition(ctx context.Context, cons sarama.Consumer, topic string, p int32, from, end int64) ([]*sarama.ConsumerMessage, error) {
	pc, err := cons.ConsumePartition(topic, p, from)
	if err != nil {
		return nil, fmt.Errorf("read %s/%d: %w", topic, p, err)
	}
	defer pc.Close()
	var out []*sarama.ConsumerMessage
	idle := time.NewTimer(5 * time.Second)
	defer idle.Stop()
	for {
		select {
		case m := <-pc.Messages():
			if m.Offset >= end {
				return out, nil
			}
			out = append(out, m)
			if m.Offset >= end-1 {
				return out, nil
			}
			idle.Reset(5 * time.Second)
		case err := <-pc.Errors():
			return nil, fmt.Errorf("read %s/%d: %w", topic, p, err)
		case <-idle.C:
			return out, nil
		case <-ctx.Done():
			return nil, fmt.Errorf("read %s/%d: %w", topic, p, ctx.Err())
		}
	}
}

func dltList(a *app) *cobra.Command {
	f := a.newFlags("dlt list", "--topic TOPIC [--partition P [--offset O]] [--id ID] [--limit N] [flags]", `
Lists the records of a dead-letter topic, oldest first per partition: where
each is, its message ID, key and type, why it was dead-lettered, and where it
came from (original topic, partition, offset) after how many attempts. Keys
that are not printable (a Java long, say) are shown quoted, and in hex in the
JSON output. Nothing is consumed or committed.`)
	var k kafkaFlags
	k.register(f)
	f.keyFormatFlag()
	var s dltSelect
	s.register(f, true)
	return f.runE(func(ctx context.Context) error {
		if err := s.check(); err != nil {
			return err
		}
		return f.withKafka(ctx, &k, func(ctx context.Context, conn *kafkaConn) error {
			recs, err := s.read(ctx, conn)
			if err != nil {
				return err
			}
			out := make([]dltRecord, len(recs))
			for i, r := range recs {
				out[i] = a.viewDLT(r, false)
			}
			return a.emit(f, out, func(w io.Writer) {
				row(w, "PARTITION", "OFFSET", "ID", "KEY", "TYPE", "FROM", "ATTEMPTS", "DEAD-LETTERED", "CAUSE")
				for _, r := range out {
					row(w, r.Partition, r.Offset, r.ID, clip(r.Key, 40), r.Type,
						r.OriginalTopic+"/"+r.OriginalPartition+"/"+r.OriginalOffset, r.Attempts, r.DeadLetteredAt, clip(r.Cause, 80))
				}
			})
		})
	})
}

func dltShow(a *app) *cobra.Command {
	f := a.newFlags("dlt show", "--topic TOPIC --partition P --offset O [flags]", `
Shows one record of a dead-letter topic: its message ID, key, type, cause,
origin, attempts, every header and the payload (in hex when it is not
UTF-8).`)
	var k kafkaFlags
	k.register(f)
	f.keyFormatFlag()
	var s dltSelect
	s.register(f, false)
	return f.runE(func(ctx context.Context) error {
		if err := s.check(); err != nil {
			return err
		}
		if s.partition < 0 || s.offset < 0 {
			return usagef("--partition and --offset are required")
		}
		return f.withKafka(ctx, &k, func(ctx context.Context, conn *kafkaConn) error {
			recs, err := s.read(ctx, conn)
			if err != nil {
				return err
			}
			v := a.viewDLT(recs[0], true)
			return a.emit(f, v, func(w io.Writer) {
				row(w, "topic/partition/offset", fmt.Sprintf("%s/%d/%d", s.topic, v.Partition, v.Offset))
				row(w, "id", v.ID)
				row(w, "key", v.Key)
				if v.KeyHex != "" {
					row(w, "key (hex)", v.KeyHex)
				}
				row(w, "type", v.Type)
				row(w, "cause", v.Cause)
				row(w, "from", v.OriginalTopic+"/"+v.OriginalPartition+"/"+v.OriginalOffset)
				row(w, "attempts", v.Attempts)
				row(w, "group", v.Group)
				row(w, "dead-lettered", v.DeadLetteredAt)
				names := make([]string, 0, len(v.Headers))
				for n := range v.Headers {
					names = append(names, n)
				}
				slices.Sort(names)
				for _, n := range names {
					row(w, "header "+n, strconv.Quote(v.Headers[n]))
				}
				row(w, "payload", v.Payload)
			})
		})
	})
}

// replayReport is the output of dlt replay.
type replayReport struct {
	Topic    string       `json:"topic"`
	Records  []replayMove `json:"records"`
	Executed bool         `json:"executed"`
}

// replayMove is one record to republish.
type replayMove struct {
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	ID        string `json:"id"`
	Key       string `json:"key"`
	To        string `json:"to"`
	// NewPartition and NewOffset are where it was written, with --execute.
	NewPartition *int32 `json:"new_partition,omitempty"`
	NewOffset    *int64 `json:"new_offset,omitempty"`
}

func dltReplay(a *app) *cobra.Command {
	f := a.newFlags("dlt replay", "--topic TOPIC (--partition P --offset O | --id ID | --all) [--to TOPIC] [--execute] [flags]", `
Republishes dead-lettered records to the topic they came from (their
dlt_original_topic header, or --to), after the cause was fixed. Each record
is written as it was first consumed: same key (so the same partition), ID,
type, payload and headers, without the dlt_ headers. Records are written one
at a time in partition and offset order, durably (acks from all in-sync
replicas, the idempotent producer), so a key's records keep their order.

It is a DRY RUN unless --execute is given: it prints what would be
republished, and where, and changes nothing. The dead-letter topic is not
changed either way (Kafka cannot delete single records); replaying a record
twice publishes it twice, which the consumers' deduplication absorbs (same
message ID).`)
	var k kafkaFlags
	k.register(f)
	f.keyFormatFlag()
	var s dltSelect
	s.register(f, false)
	all := f.Bool("all", false, "replay every record of the topic (or of --partition)")
	to := f.String("to", "", "publish to this topic instead of each record's original topic (Kafka's name; the application's with --environment)")
	s.env.prefix(to)
	execute := f.Bool("execute", false, "republish (without it nothing is changed)")
	return f.runE(func(ctx context.Context) error {
		if err := s.check(); err != nil {
			return err
		}
		picked := 0
		for _, b := range []bool{s.offset >= 0, s.id != "", *all} {
			if b {
				picked++
			}
		}
		if picked != 1 {
			return usagef("give exactly one of --partition/--offset, --id and --all")
		}
		return f.withKafka(ctx, &k, func(ctx context.Context, conn *kafkaConn) error {
			recs, err := s.read(ctx, conn)
			if err != nil {
				return err
			}
			if s.id != "" && len(recs) == 0 {
				return fmt.Errorf("no record of message %q in %s", s.id, s.topic)
			}
			report := replayReport{Topic: s.topic, Records: []replayMove{}}
			for _, r := range recs {
				v := a.viewDLT(r, false)
				m := replayMove{Partition: r.Partition, Offset: r.Offset, ID: v.ID, Key: v.Key, To: *to}
				if m.To == "" {
					m.To = v.OriginalTopic
				}
				if m.To == "" {
					return fmt.Errorf("%s/%d/%d has no %s header: give --to", s.topic, r.Partition, r.Offset, kafka.HeaderDeadLetterTopic)
				}
				report.Records = append(report.Records, m)
			}
			var execErr error
			if *execute {
				execErr = a.republish(ctx, &k, recs, &report)
			}
			err = a.emit(f, report, func(w io.Writer) {
				row(w, "PARTITION", "OFFSET", "ID", "KEY", "TO", "WRITTEN")
				for _, m := range report.Records {
					written := "-"
					if m.NewOffset != nil {
						written = fmt.Sprintf("%d/%d", *m.NewPartition, *m.NewOffset)
					}
					row(w, m.Partition, m.Offset, m.ID, clip(m.Key, 40), m.To, written)
				}
				switch {
				case report.Executed:
					fmt.Fprintf(w, "\nexecuted: %d records republished\n", len(report.Records))
				case *execute:
					fmt.Fprintln(w, "\nstopped: the records without WRITTEN were not republished")
				default:
					fmt.Fprintln(w, "\ndry run: nothing was changed; add --execute to republish")
				}
			})
			if execErr != nil {
				return execErr
			}
			return err
		})
	})
}

// republish writes recs to their targets in report, one at a time, durably.
func (a *app) republish(ctx context.Context, k *kafkaFlags, recs []*sarama.ConsumerMessage, report *replayReport) error {
	addrs, cfg, err := a.saramaConfig(k)
	if err != nil {
		return err
	}
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Idempotent = true
	cfg.Net.MaxOpenRequests = 1
	cfg.Producer.Retry.Max = 50
	cfg.Producer.Retry.Backoff = 200 * time.Millisecond
	cfg.Producer.Return.Successes = true
	cfg.Producer.Return.Errors = true
	// The partition the Java client and the SDK's producer pick for the key.
	cfg.Producer.Partitioner = sarama.NewMurmur2Partitioner
	prod, err := sarama.NewSyncProducer(addrs, cfg)
	if err != nil {
		return fmt.Errorf("replay producer: %w", kafkaError(err))
	}
	defer prod.Close()
	for i, r := range recs {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("replay stopped after %d of %d records: %w", i, len(recs), err)
		}
		m := &report.Records[i]
		pm := &sarama.ProducerMessage{Topic: m.To, Value: sarama.ByteEncoder(r.Value), Timestamp: r.Timestamp}
		if r.Key != nil {
			pm.Key = sarama.ByteEncoder(r.Key)
		}
		for _, h := range r.Headers {
			if h == nil || strings.HasPrefix(string(h.Key), kafka.HeaderDeadLetterPrefix) {
				continue
			}
			pm.Headers = append(pm.Headers, sarama.RecordHeader{Key: h.Key, Value: h.Value})
		}
		p, off, err := prod.SendMessage(pm)
		if err != nil {
			if errors.Is(err, sarama.ErrUnknownTopicOrPartition) {
				err = fmt.Errorf("%w: %w", reliable.ErrUnknownTopic, err)
			}
			return fmt.Errorf("republish %s/%d/%d to %s (after %d of %d records): %w", report.Topic, r.Partition, r.Offset, m.To, i, len(recs), err)
		}
		m.NewPartition, m.NewOffset = &p, &off
	}
	report.Executed = true
	return nil
}
