package kafka

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
)

// Issue 13 (L06): DeadLetter returns nil only after the cluster acknowledged
// the dead-letter record on all in-sync replicas. With two of three brokers
// down (min.insync.replicas 2) it keeps waiting; once they are back it
// returns nil and the record is in the dead-letter topic, once.
func TestDeadLetterWaitsForBrokers(t *testing.T) {
	c := cluster(t)
	brokers := c.Brokers()
	dlt := uniqueName("dlt-outage")
	createTopic(t, brokers, dlt, 3, nil)
	cfg := testConfig(t)
	cfg.Consumer.Group = uniqueName("dlt-outage-g")
	cfg.Consumer.DeadLetterTopic = dlt
	sub, err := NewSubscriber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	for _, id := range []int32{2, 3} {
		if err := c.KillBroker(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	msg := &reliable.Message{ID: "poison-1", Topic: "orders", Key: "order-1", Payload: []byte("bad"),
		Delivery: reliable.DeliveryInfo{Partition: 1, Offset: 41, Attempt: 2}}
	result := make(chan error, 1)
	go func() { result <- sub.DeadLetter(ctx, msg, errors.New("unknown schema")) }()
	select {
	case err := <-result:
		t.Fatalf("DeadLetter returned %v with two of three brokers down", err)
	case <-time.After(15 * time.Second):
		t.Log("DeadLetter still waiting after 15s with two brokers down, as it should")
	}
	restart := time.Now()
	for _, id := range []int32{2, 3} {
		if err := c.StartBroker(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("DeadLetter after the brokers returned: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("DeadLetter did not return within 5 minutes")
	}
	t.Logf("DeadLetter returned %s after the brokers were restarted", time.Since(restart).Round(time.Millisecond))
	if err := c.WaitHealthy(ctx, dlt); err != nil {
		t.Fatal(err)
	}
	recs := readAll(t, brokers, dlt)
	if len(recs) != 1 {
		t.Fatalf("dead-letter topic holds %d records, want 1", len(recs))
	}
	if m := fromRecord(recs[0], dlt); m.ID != "poison-1" || m.Headers[HeaderDeadLetterOffset] != "41" || m.Headers[HeaderDeadLetterAttempts] != "2" {
		t.Fatalf("dead-letter record %v headers %v", m, m.Headers)
	}
}
