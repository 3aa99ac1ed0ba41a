package testenv

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/IBM/sarama"
	amqp "github.com/rabbitmq/amqp091-go"
)

// TestKafkaCrashAllKeepsConfirmed: L02. Records confirmed with acks=all survive
// a kill -9 of every broker of the cluster at once, and the cluster comes back
// whole through StartAll.
func TestKafkaCrashAllKeepsConfirmed(t *testing.T) {
	c := KafkaCluster(t)
	topic := UniqueName(t, "crash")
	CreateTopic(t, c.Brokers(), topic, 3)
	prod, err := sarama.NewSyncProducer(c.Brokers(), SaramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	for i := 0; i < n; i++ {
		_, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder("k" + strconv.Itoa(i%10)), Value: sarama.StringEncoder(strconv.Itoa(i))})
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	_ = prod.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	if err := c.KillAll(ctx); err != nil {
		t.Fatalf("kill all: %v", err)
	}
	for _, id := range c.BrokerIDs() {
		if reachable(c.BrokerAddr(id)) == nil {
			t.Fatalf("broker %d still answers after KillAll", id)
		}
	}
	if err := c.StartAll(ctx); err != nil {
		t.Fatalf("start all: %v", err)
	}
	t.Logf("cluster killed and whole again in %s", time.Since(start).Round(time.Millisecond))

	got := readAll(t, c.Brokers(), topic)
	for i := 0; i < n; i++ {
		if !got[strconv.Itoa(i)] {
			t.Errorf("confirmed record %d lost in the crash", i)
		}
	}
	t.Logf("%d of %d confirmed records read back after the crash", len(got), n)
}

// readAll reads every record of topic from the oldest offset to the high-water mark.
func readAll(t *testing.T, brokers []string, topic string) map[string]bool {
	t.Helper()
	client, err := sarama.NewClient(brokers, SaramaConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	parts, err := client.Partitions(topic)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, p := range parts {
		hwm, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			t.Fatal(err)
		}
		if hwm == 0 {
			continue
		}
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			t.Fatal(err)
		}
		timeout := time.After(60 * time.Second)
	read:
		for {
			select {
			case m := <-pc.Messages():
				got[string(m.Value)] = true
				if m.Offset+1 >= hwm {
					break read
				}
			case err := <-pc.Errors():
				t.Fatalf("partition %d: %v", p, err)
			case <-timeout:
				t.Fatalf("partition %d: not read to its high-water mark %d in 60s", p, hwm)
			}
		}
		_ = pc.Close()
	}
	return got
}

// TestRabbitMQCrashKeepsConfirmed: L02. Persistent messages confirmed by a
// durable quorum queue survive a kill -9 of the RabbitMQ server right after the
// last confirm.
func TestRabbitMQCrashKeepsConfirmed(t *testing.T) {
	r := RabbitMQ(t)
	conn, err := amqp.Dial(r.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	queue := UniqueName(t, "crash")
	if _, err := ch.QueueDeclare(queue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(RabbitMQQueueSettle) // see RabbitMQQueueSettle: a younger queue may not come back
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const n = 300
	var confirms []*amqp.DeferredConfirmation
	for i := 0; i < n; i++ {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(strconv.Itoa(i))})
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		confirms = append(confirms, dc)
	}
	for i, dc := range confirms {
		if ok, err := dc.WaitContext(ctx); !ok || err != nil {
			t.Fatalf("message %d not confirmed: %v", i, err)
		}
	}
	_ = conn.Close()

	start := time.Now()
	if err := r.Kill(ctx); err != nil {
		t.Fatalf("kill: %v", err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Logf("RabbitMQ killed and answering again in %s", time.Since(start).Round(time.Millisecond))

	got := map[string]bool{}
	deadline := time.Now().Add(60 * time.Second)
	for len(got) < n && time.Now().Before(deadline) {
		if err := drainQueue(r.AMQPURL(), queue, got); err != nil {
			t.Logf("drain: %v (retrying: the queue may still be recovering)", err)
			time.Sleep(500 * time.Millisecond)
		}
	}
	for i := 0; i < n; i++ {
		if !got[strconv.Itoa(i)] {
			t.Errorf("confirmed message %d lost in the crash", i)
		}
	}
	t.Logf("%d of %d confirmed messages read back after the crash", len(got), n)
	if conn, err := amqp.Dial(r.AMQPURL()); err == nil {
		if ch, err := conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(queue, false, false, false)
		}
		_ = conn.Close()
	}
}

// drainQueue gets every message of queue into got, acking each.
func drainQueue(url, queue string, got map[string]bool) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	for {
		d, ok, err := ch.Get(queue, false)
		if err != nil {
			return fmt.Errorf("get: %w", err)
		}
		if !ok {
			return nil
		}
		got[string(d.Body)] = true
		if err := d.Ack(false); err != nil {
			return err
		}
	}
}
