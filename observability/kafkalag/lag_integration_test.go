package kafkalag_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/observability"
	"github.com/reliable-go/reliable/observability/kafkalag"
)

// backlog is a topic with two partitions on the real cluster: 5 records in
// partition 0 (timestamps base, base+1s, ... base+4s), 1 in partition 1
// (base), and group's committed offset 1 on partition 0, none on 1.
type backlog struct {
	client       sarama.Client
	admin        sarama.ClusterAdmin
	topic, group string
	base         time.Time
}

func newBacklog(t *testing.T) *backlog {
	t.Helper()
	brokers := testenv.Kafka(t)
	b := &backlog{topic: testenv.UniqueName(t, "orders"), group: testenv.UniqueName(t, "kitchen"),
		base: time.Now().Add(-time.Hour).Truncate(time.Millisecond)}
	testenv.CreateTopic(t, brokers, b.topic, 2)
	cfg := testenv.SaramaConfig()
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	client, err := sarama.NewClient(brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	p, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	var recs []*sarama.ProducerMessage
	for i := range 6 {
		part, at := int32(0), b.base.Add(time.Duration(i)*time.Second)
		if i == 5 {
			part, at = 1, b.base
		}
		recs = append(recs, &sarama.ProducerMessage{Topic: b.topic, Partition: part, Timestamp: at, Value: sarama.StringEncoder("x")})
	}
	if err := p.SendMessages(recs); err != nil {
		t.Fatal(err)
	}
	// The admin shares the client: closing it would close the client.
	b.client = client
	if b.admin, err = sarama.NewClusterAdminFromClient(client); err != nil {
		t.Fatal(err)
	}
	if _, err := b.admin.AlterConsumerGroupOffsets(b.group, map[string]map[int32]sarama.OffsetAndMetadata{b.topic: {0: {Offset: 1, LeaderEpoch: -1}}}, nil); err != nil {
		t.Fatal(err)
	}
	return b
}

// Read counts the lag per partition from the committed offset, and from the
// oldest offset where the group has committed nothing (L14).
func TestReadKafkaLag(t *testing.T) {
	b := newBacklog(t)
	ctx := testenv.Context(t, 60*time.Second)

	want := observability.TopicLag{Topic: b.topic, Total: 5, Partitions: []observability.PartitionLag{
		{Topic: b.topic, Partition: 0, Committed: 1, Oldest: 0, Newest: 5, Lag: 4},
		{Topic: b.topic, Partition: 1, Committed: -1, Oldest: 0, Newest: 1, Lag: 1},
	}}
	// With the topic named, and with no topic: every topic the group has
	// committed on, also its partitions without a commit.
	for _, topics := range [][]string{{b.topic}, nil} {
		gl, err := kafkalag.Read(ctx, b.client, b.admin, b.group, topics...)
		if err != nil {
			t.Fatalf("topics %v: %v", topics, err)
		}
		if gl.Group != b.group || gl.State != "Empty" || gl.Members != 0 || gl.Total != 5 || len(gl.Topics) != 1 {
			t.Fatalf("topics %v: group %q state %q members %d total %d, %d topics; want %q Empty 0 5, 1 topic",
				topics, gl.Group, gl.State, gl.Members, gl.Total, len(gl.Topics), b.group)
		}
		got := gl.Topics[0]
		if got.Topic != want.Topic || got.Total != want.Total || len(got.Partitions) != 2 ||
			got.Partitions[0] != want.Partitions[0] || got.Partitions[1] != want.Partitions[1] {
			t.Errorf("topics %v: lag = %+v, want %+v", topics, got, want)
		}
	}
}

// An unknown group and an unknown topic are errors callers can match, not
// an empty lag that reads as "all caught up".
func TestReadKafkaLagUnknown(t *testing.T) {
	b := newBacklog(t)
	ctx := testenv.Context(t, 60*time.Second)

	_, err := kafkalag.Read(ctx, b.client, b.admin, testenv.UniqueName(t, "nobody"), b.topic)
	if !errors.Is(err, observability.ErrUnknownGroup) {
		t.Errorf("unknown group: %v, want ErrUnknownGroup", err)
	}
	_, err = kafkalag.Read(ctx, b.client, b.admin, b.group, testenv.UniqueName(t, "missing"))
	if !errors.Is(err, reliable.ErrUnknownTopic) {
		t.Errorf("unknown topic: %v, want reliable.ErrUnknownTopic", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := kafkalag.Read(cancelled, b.client, b.admin, b.group, b.topic); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v, want context.Canceled", err)
	}
}

// OffsetsForTime finds the first record at or after a time, and the newest
// offset when every record is older; ReadOffsets gives both ends.
func TestOffsetsForTime(t *testing.T) {
	b := newBacklog(t)
	parts := map[string][]int32{b.topic: {0, 1}}

	oldest, newest, err := kafkalag.ReadOffsets(b.admin, parts)
	if err != nil {
		t.Fatal(err)
	}
	if o, n := oldest[b.topic], newest[b.topic]; o[0] != 0 || o[1] != 0 || n[0] != 5 || n[1] != 1 {
		t.Errorf("oldest %v newest %v, want [0 0] and [5 1]", o, n)
	}
	for _, c := range []struct {
		at     time.Time
		p0, p1 int64
	}{
		{b.base.Add(-time.Minute), 0, 0},
		{b.base.Add(2 * time.Second), 2, 1},         // p1's only record is older
		{b.base.Add(2500 * time.Millisecond), 3, 1}, // between records
		{b.base.Add(time.Minute), 5, 1},             // every record is older
	} {
		got, err := kafkalag.OffsetsForTime(b.admin, parts, c.at.UnixMilli())
		if err != nil {
			t.Fatal(err)
		}
		if got[b.topic][0] != c.p0 || got[b.topic][1] != c.p1 {
			t.Errorf("at base%+v: %v, want [%d %d]", c.at.Sub(b.base), got[b.topic], c.p0, c.p1)
		}
	}
}

// The metrics endpoint shows the group's lag per partition and the topic's
// skew flag, read from the real cluster at scrape time (L14).
func TestWatchKafkaLag(t *testing.T) {
	b := newBacklog(t)
	mp, h, err := observability.NewPrometheus()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	tel, err := observability.New(observability.Config{MeterProvider: mp, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := kafkalag.Watch(tel, b.client, b.group, b.topic)
	if err != nil {
		t.Fatal(err)
	}

	text := scrape(t, h)
	for _, c := range []struct {
		name   string
		labels []string
		want   string
	}{
		{"reliable_consumer_lag", []string{`group="` + b.group + `"`, `partition="0"`}, "4"},
		{"reliable_consumer_lag", []string{`group="` + b.group + `"`, `partition="1"`}, "1"},
		{"reliable_consumer_lag_skewed", []string{`topic="` + b.topic + `"`}, "0"}, // below SkewMinLag
	} {
		if got := sample(text, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %q, want %s", c.name, c.labels, got, c.want)
		}
	}
	if got := sample(text, "reliable_observe_errors_total"); got != "" {
		t.Errorf("reading the lag failed: reliable_observe_errors_total = %s", got)
	}

	// Unregistered, the lag is no longer read; the shared client stays open.
	if err := reg.Unregister(); err != nil {
		t.Fatal(err)
	}
	if got := sample(scrape(t, h), "reliable_consumer_lag"); got != "" {
		t.Errorf("after Unregister reliable_consumer_lag = %s, want no sample", got)
	}
	if b.client.Closed() {
		t.Error("Watch closed the shared client")
	}
}

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body, _ := io.ReadAll(rr.Body)
	if rr.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rr.Code, body)
	}
	return string(body)
}

// sample returns the value of the first line of text for the metric name
// with every label (as `name="value"`), or "" if none.
func sample(text, name string, labels ...string) string {
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if ok {
			return line[strings.LastIndex(line, " ")+1:]
		}
	}
	return ""
}
