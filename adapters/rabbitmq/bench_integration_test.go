package rabbitmq

import (
	"context"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable"
)

// benchWindow is the confirm window every variant gets: messages published
// and not yet confirmed.
const benchWindow = 256

// BenchmarkPublish compares, in one run and against the same quorum queue:
//
//   - raw: amqp091-go alone, one confirm channel, a sliding window of
//     benchWindow deferred confirmations, mandatory persistent messages;
//   - publisher: this package's Publisher with one confirm channel and the
//     same window, driven by concurrent Publish calls that together fill it;
//   - producer: the same behind the durable producer wrapper (NewProducer);
//   - one-at-a-time: amqp091-go publishing one message and waiting for its
//     confirm before the next.
//
// Run with:
//
//	go test -run '^$' -bench BenchmarkPublish -benchtime 20000x ./adapters/rabbitmq/
func BenchmarkPublish(b *testing.B) {
	url := amqpURL(b)
	topic := uniqueName("bench")
	declareTopic(b, Topology{}, topic, "g")
	conn := rawConn(b)
	purge := func(b *testing.B) {
		ch, err := conn.Channel()
		if err != nil {
			b.Fatal(err)
		}
		defer ch.Close()
		if _, err := ch.QueuePurge(QueueName(topic, "g"), false); err != nil {
			b.Fatal(err)
		}
	}
	payload := make([]byte, 100)
	message := func(i int) *reliable.Message {
		m := &reliable.Message{Topic: topic, Key: "order-" + itoa(i%1000), Type: "order.paid", Payload: payload}
		m.EnsureID()
		m.Time = time.Now()
		return m
	}
	report := func(b *testing.B) {
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	}

	b.Run("raw", func(b *testing.B) {
		purge(b)
		ch := rawConfirmChannel(b, conn)
		ctx := context.Background()
		window := make(chan *amqp.DeferredConfirmation, benchWindow)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if len(window) == benchWindow {
				if ok, _ := (<-window).WaitContext(ctx); !ok {
					b.Fatal("nack")
				}
			}
			m := message(i)
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, topic, m.Key, true, false, toPublishing(m))
			if err != nil {
				b.Fatal(err)
			}
			window <- dc
		}
		for len(window) > 0 {
			if ok, _ := (<-window).WaitContext(ctx); !ok {
				b.Fatal("nack")
			}
		}
		b.StopTimer()
		report(b)
	})

	for _, v := range []struct {
		name           string
		callers, batch int
		producer       bool
	}{
		{"publisher/8x32", 8, 32, false},
		{"publisher/32x32", 32, 32, false},
		{"publisher/256x1", 256, 1, false},
		{"producer/32x32", 32, 32, true},
	} {
		b.Run(v.name, func(b *testing.B) {
			purge(b)
			var pub reliable.Publisher
			var err error
			if v.producer {
				pub, err = NewProducer(url, WithConfirmChannels(1), WithConfirmWindow(benchWindow))
			} else {
				pub, err = NewPublisher(url, WithConfirmChannels(1), WithConfirmWindow(benchWindow))
			}
			if err != nil {
				b.Fatal(err)
			}
			defer pub.Close()
			ctx := context.Background()
			// Warm up: open the channel and check the exchange.
			if err := pub.Publish(ctx, message(0)); err != nil {
				b.Fatal(err)
			}
			msgs := make([]*reliable.Message, b.N)
			for i := range msgs {
				msgs[i] = message(i)
			}
			var next sync.Mutex
			pos := 0
			b.ResetTimer()
			var wg sync.WaitGroup
			for c := 0; c < v.callers; c++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						next.Lock()
						from := pos
						pos = min(pos+v.batch, len(msgs))
						next.Unlock()
						if from >= len(msgs) {
							return
						}
						if err := pub.Publish(ctx, msgs[from:min(from+v.batch, len(msgs))]...); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			report(b)
		})
	}

	b.Run("one-at-a-time", func(b *testing.B) {
		purge(b)
		ch := rawConfirmChannel(b, conn)
		ctx := context.Background()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			m := message(i)
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, topic, m.Key, true, false, toPublishing(m))
			if err != nil {
				b.Fatal(err)
			}
			if ok, _ := dc.WaitContext(ctx); !ok {
				b.Fatal("nack")
			}
		}
		b.StopTimer()
		report(b)
	})
	purge(b)
}

func rawConfirmChannel(b *testing.B, conn *amqp.Connection) *amqp.Channel {
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ch.Close() })
	if err := ch.Confirm(false); err != nil {
		b.Fatal(err)
	}
	// Returns must be drained even when none are expected (v1.13+ drops
	// them after 5 s, but an undrained listener would stall the reader).
	returns := ch.NotifyReturn(make(chan amqp.Return, 16))
	go func() {
		for range returns {
			b.Error("unexpected return")
		}
	}()
	return ch
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var buf [20]byte
	n := len(buf)
	for ; i > 0; i /= 10 {
		n--
		buf[n] = byte('0' + i%10)
	}
	return string(buf[n:])
}
