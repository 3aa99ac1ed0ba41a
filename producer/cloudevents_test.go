package producer_test

import (
	"context"
	"testing"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/producer"
)

func TestDefaultsMakeValidCloudEvents(t *testing.T) {
	// Every message carries the four attributes CloudEvents requires (id,
	// source, specversion, type) with the producer config at its zero
	// value; ce_source used to be missing unless Source was set. The
	// adapters stamp ce_specversion and ce_id from Message.ID.
	b := newBroker(t)
	p, err := producer.New(b.Publisher(), producer.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	bare := &reliable.Message{Topic: "orders", Key: "o1"}
	own := &reliable.Message{Topic: "orders", Key: "o2", Type: "order.paid",
		Headers: map[string]string{reliable.HeaderSource: "/kitchen/replayer"}}
	if err := p.Publish(context.Background(), bare, own); err != nil {
		t.Fatal(err)
	}
	got := b.Messages("orders")
	if len(got) != 2 {
		t.Fatalf("broker has %d messages", len(got))
	}
	if got[0].ID == "" || got[0].Type != producer.DefaultType || got[0].Headers[reliable.HeaderSource] != producer.DefaultSource() || producer.DefaultSource() == "" {
		t.Fatalf("zero-config message: id %q type %q source %q", got[0].ID, got[0].Type, got[0].Headers[reliable.HeaderSource])
	}
	if got[1].Type != "order.paid" || got[1].Headers[reliable.HeaderSource] != "/kitchen/replayer" {
		t.Fatalf("the message's own type and source were replaced: %q %q", got[1].Type, got[1].Headers[reliable.HeaderSource])
	}
	p2, _ := producer.New(b.Publisher(), producer.Config{Source: "order-service", Logger: quiet})
	m := &reliable.Message{Topic: "orders", Key: "o3"}
	if err := p2.Publish(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if s := m.Headers[reliable.HeaderSource]; s != "order-service" {
		t.Fatalf("Config.Source: stamped %q", s)
	}
}
