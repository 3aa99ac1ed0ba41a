package main

import (
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/testenv"
	"github.com/reliable-go/reliable/outbox"
	"github.com/reliable-go/reliable/producer"
	"github.com/reliable-go/reliable/reliabletest"
)

// L13: one message too large to publish must end dead alone. The campaign
// found that it took the other keys' head rows of the same Publish call
// with it: producer.Producer refused the whole call with a plain
// *reliable.MessageTooLargeError (not a *reliable.PublishError naming the
// message), and the relay then marked every row of the call dead with that
// error, blocking each of their keys until an operator stepped in. Fixed in
// the producer (a refused message names every message of the call); this is
// the regression test, with the real relay and PostgreSQL behind the durable
// producer on the in-memory broker.
func TestRelayOversizedMessageDiesAlone(t *testing.T) {
	ctx := testenv.Context(t, 2*time.Minute)
	_, pool := testSchema(ctx, t, "oversize", 8)

	// 20 keys with one small message each, and one oversized message, all
	// pending before the relay starts, so they share a Publish call.
	msgs := []*reliable.Message{{Topic: "orders", Key: "big", Payload: make([]byte, 2<<20)}}
	for i := range 20 {
		msgs = append(msgs, &reliable.Message{Topic: "orders", Key: "order-" + strconv.Itoa(i), Payload: []byte("{}")})
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Add(ctx, tx, msgs...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	broker := reliabletest.NewBroker(reliabletest.BrokerOptions{})
	broker.CreateTopic("orders")
	pub, err := producer.New(broker.Publisher(), producer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	relay, err := outbox.NewRelay(pool, pub, outbox.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Run(rctx) }()
	defer func() { stop(); <-done }()

	deadline := time.Now().Add(time.Minute)
	for {
		st, err := outbox.ReadStatus(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		if st.Pending == 0 {
			if st.Dead != 1 {
				rows, _ := outbox.DeadRows(ctx, pool, 30)
				var keys []string
				for _, r := range rows {
					keys = append(keys, r.Message.Key)
				}
				t.Fatalf("%d rows dead, want only the oversized one; dead keys: %v", st.Dead, keys)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rows still pending: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := len(broker.Messages("orders")); got != 20 {
		t.Errorf("the broker has %d messages, want the 20 small ones", got)
	}
}
