package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// Issue 13: the subscriber reads with read_committed isolation. Another
// client's transaction writes three records and aborts, a second one writes
// two and commits: only the two committed records are delivered (with
// read_uncommitted all five were).
func TestAbortedTransactionsNotDelivered(t *testing.T) {
	brokers := kafkaBrokers(t)
	topic := uniqueName("txn")
	createTopic(t, brokers, topic, 1, nil)
	sc := sarama.NewConfig()
	sc.Version = DefaultVersion
	sc.Producer.Idempotent = true
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Return.Successes = true
	sc.Producer.Transaction.ID = uniqueName("txn-producer")
	sc.Net.MaxOpenRequests = 1
	prod, err := sarama.NewSyncProducer(brokers, sc)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	txn := func(values []string, commit bool) {
		t.Helper()
		if err := prod.BeginTxn(); err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			if _, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder("k"), Value: sarama.StringEncoder(v)}); err != nil {
				t.Fatal(err)
			}
		}
		if commit {
			err = prod.CommitTxn()
		} else {
			err = prod.AbortTxn()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	txn([]string{"aborted-1", "aborted-2", "aborted-3"}, false)
	txn([]string{"committed-1", "committed-2"}, true)

	cfg := testConfig(t)
	cfg.Consumer.Group = uniqueName("txn-g")
	sub, err := NewSubscriber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 2 {
		d := receive(t, ch)
		got = append(got, string(d.Message.Payload))
		_ = d.Ack(ctx)
	}
	if got[0] != "committed-1" || got[1] != "committed-2" {
		t.Fatalf("delivered %q, want the two committed records only", got)
	}
	// Nothing else: the log ends with the commit marker.
	select {
	case d := <-ch:
		t.Fatalf("a third record was delivered: %q at offset %d", d.Message.Payload, d.Message.Delivery.Offset)
	case <-time.After(time.Second):
	}
}
