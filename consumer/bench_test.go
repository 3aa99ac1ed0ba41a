package consumer_test

import (
	"context"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/consumer"
	"github.com/reliable-go/reliable/reliabletest"
)

// benchMessages is the message count of BenchmarkKeyLanesVsSerial; the issue's
// figure is 10000 (RELIABLE_BENCH_MESSAGES overrides it, e.g. for a CI smoke
// run).
func benchMessages() int {
	if n, err := strconv.Atoi(os.Getenv("RELIABLE_BENCH_MESSAGES")); err == nil && n > 0 {
		return n
	}
	return 10000
}

// BenchmarkKeyLanesVsSerial: one partition, 100 keys, a 5 ms handler. Key
// lanes at concurrency 64 against partition-serial consumption (concurrency
// 1, what a plain consumer loop does). Order per key is checked in both.
//
//	go test -run '^$' -bench KeyLanesVsSerial -benchtime 1x ./consumer/
func BenchmarkKeyLanesVsSerial(b *testing.B) {
	for _, conc := range []int{64, 1} {
		name := "lanes-64"
		if conc == 1 {
			name = "serial"
		}
		b.Run(name, func(b *testing.B) {
			n := benchMessages()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				broker := reliabletest.NewBroker(reliabletest.BrokerOptions{Partitions: 1})
				broker.CreateTopic("orders")
				msgs := make([]*reliable.Message, n)
				for j := range msgs {
					msgs[j] = &reliable.Message{Topic: "orders", Key: "order-" + strconv.Itoa(j%100),
						Headers: map[string]string{"seq": strconv.Itoa(j / 100)}}
				}
				if err := broker.Publisher().Publish(context.Background(), msgs...); err != nil {
					b.Fatal(err)
				}
				led := newLedger()
				var handled atomic.Int64
				h := reliable.HandlerFunc(func(_ context.Context, m *reliable.Message) error {
					time.Sleep(5 * time.Millisecond)
					led.apply(m)
					handled.Add(1)
					return nil
				})
				c, err := consumer.New(broker.Subscriber("bench", reliabletest.SubscriberOptions{}), h,
					consumer.Config{Topic: "orders", Concurrency: conc, Logger: quiet})
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				b.StartTimer()
				start := time.Now()
				go func() { done <- c.Run(ctx) }()
				for handled.Load() < int64(n) {
					time.Sleep(time.Millisecond)
				}
				elapsed := time.Since(start)
				b.StopTimer()
				cancel()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				led.check(b, msgs)
				b.ReportMetric(float64(n)/elapsed.Seconds(), "msgs/s")
				b.ReportMetric(elapsed.Seconds(), "s/run")
			}
		})
	}
}
