package rabbitmq

import (
	"context"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
)

// TestAckedNotRedeliveredAfterClose: L04, an ack has an effect. A
// subscriber acks every delivery and closes at once; a new subscriber of the
// group must get none of them again. On quorum queues the broker's queue
// client holds back settlements beyond its pipeline limit (32) until
// earlier ones are applied, and a channel closed meanwhile loses them:
// before, 7 of 40 acked messages came again in every round (and
// reliabletest's AckedNotRedeliveredAfterClose failed 8 times in 8 with 3
// to 7). The subscription now keeps its channel open for settleGrace after
// the last settlement.
func TestAckedNotRedeliveredAfterClose(t *testing.T) {
	url := amqpURL(t)
	const n = 40
	for round := 0; round < 3; round++ {
		topic, group := uniqueName("ackclose"), "g"
		declareTopic(t, Topology{}, topic, group)
		pub, err := NewPublisher(url, WithLogger(discardLogger()))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		msgs := keyedMessages(topic, n, 8)
		if err := pub.Publish(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
		first, err := NewSubscriber(url, group, WithLogger(discardLogger()))
		if err != nil {
			t.Fatal(err)
		}
		ch, err := first.Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			select {
			case d := <-ch:
				if err := d.Ack(ctx); err != nil {
					t.Fatal(err)
				}
			case <-ctx.Done():
				t.Fatalf("received %d of %d", i, n)
			}
		}
		if err := first.Close(); err != nil {
			t.Fatal(err)
		}
		// A marker behind them: once it arrives, anything acked that was
		// going to come again has come.
		marker := &reliable.Message{Topic: topic, Key: "marker", Payload: []byte("marker")}
		if err := pub.Publish(ctx, marker); err != nil {
			t.Fatal(err)
		}
		second, err := NewSubscriber(url, group, WithLogger(discardLogger()))
		if err != nil {
			t.Fatal(err)
		}
		ch2, err := second.Subscribe(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		again := 0
	read:
		for {
			select {
			case d := <-ch2:
				_ = d.Ack(ctx)
				if d.Message.ID == marker.ID {
					break read
				}
				again++
			case <-ctx.Done():
				t.Fatal("no marker")
			}
		}
		_ = second.Close()
		_ = pub.Close()
		cancel()
		if again > 0 {
			t.Errorf("round %d: %d of %d acked messages delivered again after Close", round, again, n)
		}
	}
}
