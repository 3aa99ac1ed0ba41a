package rabbitmq

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/producer"
)

// fastRetry keeps fault tests short: reconnect and republish quickly.
var fastRetry = reliable.Backoff{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond}

// TestForceClosedConnectionsDuringPublishAndAck closes every connection of
// the publisher and of the subscriber through the management API, several
// times, while messages are published and acked (PITFALLS C5, C10). L03:
// every confirmed message arrives; L01: a delivery whose channel died is
// redelivered, never lost; B3: its late ack is dropped, so no 406 from a
// stale tag and no ack of another message (which would show as a loss).
func TestForceClosedConnectionsDuringPublishAndAck(t *testing.T) {
	url := amqpURL(t)
	n := 100000 // an upper bound: publishing stops after the faults
	topic, group := uniqueName("fc"), "g"
	declareTopic(t, Topology{}, topic, group)
	var logs logBuffer
	raw, err := NewPublisher(url, WithLogger(logs.logger()), WithReconnectBackoff(fastRetry))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := producer.New(raw, producer.Config{Backoff: fastRetry, Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sub, err := NewSubscriber(url, group, WithLogger(logs.logger()),
		WithReconnectBackoff(fastRetry), WithPrefetch(100))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	deliveries, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	l := newLedger()
	var consumers sync.WaitGroup
	consumers.Add(1)
	go func() {
		defer consumers.Done()
		// Holding each delivery a little keeps deliveries in hand while
		// connections are cut, so stale acks happen.
		consumeAll(ctx, t, deliveries, l, false, 50*time.Microsecond)
	}()

	msgs := keyedMessages(topic, n, 50)
	pubDone := make(chan error, 1)
	stop := make(chan struct{})
	// Paced at a few thousand messages/s so the stream spans the faults; it
	// stops once the faults are done.
	go func() { pubDone <- publishAll(ctx, pub, msgs, 20, 4, 20*time.Millisecond, stop, l) }()

	// Alternate: cut the publisher's connection, then the subscriber's.
	closed := 0
	for i := 0; i < 4; i++ {
		cm := raw.cm
		if i%2 == 1 {
			cm = sub.cm
		}
		if forceClose(t, cm) {
			closed++
		}
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	if err := <-pubDone; err != nil {
		t.Fatalf("publish: %v", err)
	}
	if closed != 4 {
		t.Fatalf("closed %d connections, want 4", closed)
	}
	want, _, _ := l.counts()
	l.waitAll(t, want, 60*time.Second)
	// Copies redelivered after the last cut may still be on their way:
	// keep consuming (and acking) until the queue has stayed empty a moment.
	quiet, deadline := 0, time.Now().Add(30*time.Second)
	for quiet < 5 && time.Now().Before(deadline) {
		if queueDepth(t, QueueName(topic, group)) == 0 {
			quiet++
		} else {
			quiet = 0
		}
		time.Sleep(200 * time.Millisecond)
	}
	cancel()
	consumers.Wait()
	_ = sub.Close()
	p, r, dups := l.counts()
	t.Logf("closed %d connections; %d confirmed, %d received, %d redelivered duplicates, %d stale settlements dropped",
		closed, p, r, dups, sub.StaleSettlements())
	assertNoStaleTagErrors(t, logs.String())
	if depth := queueDepth(t, QueueName(topic, group)); depth != 0 {
		t.Fatalf("%d messages left in the queue: some deliveries were never acked", depth)
	}
}

// TestWrongPasswordIsNotAuthorized: a refused login fails at once with
// reliable.ErrNotAuthorized, never an endless reconnect loop, and the error
// does not contain the password.
func TestWrongPasswordIsNotAuthorized(t *testing.T) {
	uri, err := amqp.ParseURI(amqpURL(t))
	if err != nil {
		t.Fatal(err)
	}
	uri.Password = "wrong-s3cret"
	bad := uri.String()
	// RabbitMQ itself answers a failed login after about 3 s.
	check := func(what string, err error, start time.Time) {
		t.Helper()
		if !errors.Is(err, reliable.ErrNotAuthorized) || !reliable.IsPermanent(err) {
			t.Fatalf("%s: %v, want ErrNotAuthorized", what, err)
		}
		if strings.Contains(err.Error(), "wrong-s3cret") {
			t.Fatalf("%s: error leaks the password: %v", what, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("%s took %s", what, d)
		}
		t.Logf("%s after %s: %v", what, time.Since(start), err)
	}
	start := time.Now()
	_, err = NewPublisher(bad)
	check("NewPublisher", err, start)
	start = time.Now()
	_, err = NewProducer(bad)
	check("NewProducer", err, start)
	start = time.Now()
	_, err = NewSubscriber(bad, "g")
	check("NewSubscriber", err, start)
	start = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	check("Declare", Declare(ctx, bad, "t", []string{"g"}), start)
}

// TestUnroutableIsAnError: L03, a mandatory message with no queue bound is
// returned and then acked by the broker; it must fail with ErrUnroutable
// while the routable messages of the same call are confirmed (PITFALLS B1,
// C9). The durable producer fails fast instead of retrying it.
func TestUnroutableIsAnError(t *testing.T) {
	url := amqpURL(t)
	routable, unroutable := uniqueName("route-ok"), uniqueName("route-none")
	declareTopic(t, Topology{}, routable, "g")
	declareTopic(t, Topology{}, unroutable) // exchange only: no group queue
	pub, err := NewPublisher(url)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs := []*reliable.Message{
		{Topic: routable, Key: "a", Payload: []byte("1")},
		{Topic: unroutable, Key: "a", Payload: []byte("2")},
		{Topic: routable, Key: "a", Payload: []byte("3")},
	}
	err = pub.Publish(ctx, msgs...)
	var pe *reliable.PublishError
	if !errors.As(err, &pe) || !errors.Is(err, reliable.ErrUnroutable) {
		t.Fatalf("publish: %v, want a PublishError matching ErrUnroutable", err)
	}
	if failed := pe.FailedIDs(); len(failed) != 1 || !failed[msgs[1].ID] {
		t.Fatalf("failed %v, want only %s", failed, msgs[1].ID)
	}
	if got := queueDepth(t, QueueName(routable, "g")); got != 2 {
		t.Fatalf("routable queue has %d messages, want 2", got)
	}

	prod, err := NewProducer(url)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	start := time.Now()
	err = prod.Publish(ctx, &reliable.Message{Topic: unroutable, Payload: []byte("x")})
	if !errors.Is(err, reliable.ErrUnroutable) || time.Since(start) > 5*time.Second {
		t.Fatalf("producer: %v after %s, want ErrUnroutable at once", err, time.Since(start))
	}
	err = prod.Publish(ctx, &reliable.Message{Topic: uniqueName("never-declared"), Payload: []byte("x")})
	if !errors.Is(err, reliable.ErrUnknownTopic) {
		t.Fatalf("unknown exchange: %v, want ErrUnknownTopic", err)
	}
}

// TestSlowConfirmReaderLosesNothing: L03, amqp091-go v1.13+ drops a notification
// (confirm or return) that a listener does not take within 5 s (PITFALLS
// B1, C8). The publisher reads confirms from deferred confirmations and
// drains returns in its own goroutine, so a caller that reads its results
// only after 6 s still sees every confirm and every return.
func TestSlowConfirmReaderLosesNothing(t *testing.T) {
	url := amqpURL(t)
	routable, unroutable := uniqueName("slow-ok"), uniqueName("slow-none")
	declareTopic(t, Topology{}, routable, "g")
	declareTopic(t, Topology{}, unroutable)
	pub, err := NewPublisher(url, WithConfirmChannels(1))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	var once sync.Once
	pub.testHookAfterSend = func() { once.Do(func() { time.Sleep(6 * time.Second) }) }
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	slow := keyedMessages(routable, 500, 5)
	slow = append(slow, &reliable.Message{Topic: unroutable, Payload: []byte("returned")})
	var wg sync.WaitGroup
	var slowErr error
	wg.Add(1)
	go func() { defer wg.Done(); slowErr = pub.Publish(ctx, slow...) }()
	// Other calls on the same channel go on meanwhile, with their own
	// returns and confirms flowing past the sleeping reader.
	time.Sleep(200 * time.Millisecond)
	for i := 0; i < 20; i++ {
		err := pub.Publish(ctx, append(keyedMessages(routable, 50, 5), &reliable.Message{Topic: unroutable, Payload: []byte("r")})...)
		if !errors.Is(err, reliable.ErrUnroutable) {
			t.Fatalf("concurrent publish %d: %v, want only the unroutable message to fail", i, err)
		}
	}
	wg.Wait()
	var pe *reliable.PublishError
	if !errors.As(slowErr, &pe) || len(pe.Failed) != 1 || !errors.Is(slowErr, reliable.ErrUnroutable) {
		t.Fatalf("slow reader: %v, want exactly the unroutable message failed", slowErr)
	}
	if got, want := queueDepth(t, QueueName(routable, "g")), 500+20*50; got != want {
		t.Fatalf("queue has %d messages, want %d", got, want)
	}
}

// TestQueueDeletedConsumerRecovers: deleting the queue makes the broker
// cancel the consumer (basic.cancel), which amqp091-go reports only by
// closing the delivery channel (PITFALLS B3, C11). The subscription
// redeclares the queue and resumes on the same delivery channel.
func TestQueueDeletedConsumerRecovers(t *testing.T) {
	url := amqpURL(t)
	topic, group := uniqueName("cancel"), "g"
	declareTopic(t, Topology{}, topic, group)
	pub, err := NewProducer(url)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sub, err := NewSubscriber(url, group, WithReconnectBackoff(fastRetry))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	deliveries, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	receiveOne := func(want string) {
		t.Helper()
		select {
		case d, ok := <-deliveries:
			if !ok {
				t.Fatal("delivery channel closed: the subscription ended silently")
			}
			if d.Message.ID != want {
				t.Fatalf("got %s, want %s", d.Message.ID, want)
			}
			_ = d.Ack(ctx)
		case <-time.After(20 * time.Second):
			t.Fatal("no delivery")
		}
	}
	m1 := &reliable.Message{Topic: topic, Payload: []byte("before")}
	if err := pub.Publish(ctx, m1); err != nil {
		t.Fatal(err)
	}
	receiveOne(m1.ID)

	ch, err := rawConn(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDelete(QueueName(topic, group), false, false, false); err != nil {
		t.Fatal(err)
	}
	// Publish until the subscription has redeclared and bound the queue:
	// before that the message is unroutable, which the publisher reports.
	var m2 *reliable.Message
	deadline := time.Now().Add(20 * time.Second)
	for {
		m2 = &reliable.Message{Topic: topic, Payload: []byte("after")}
		err := pub.Publish(ctx, m2)
		if err == nil {
			break
		}
		if !errors.Is(err, reliable.ErrUnroutable) || time.Now().After(deadline) {
			t.Fatalf("publish after the queue was deleted: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	receiveOne(m2.ID)
}

// TestPoisonMessageDeadLettered: a message that is nacked every time is
// dead-lettered once the quorum queue's delivery limit is reached, into the
// group's dead-letter queue, with at-least-once dead-lettering: never
// dropped (PITFALLS B4, C12). Delivery.Attempt counts the deliveries.
func TestPoisonMessageDeadLettered(t *testing.T) {
	url := amqpURL(t)
	topo := Topology{DeliveryLimit: 3}
	topic, group := uniqueName("poison"), "g"
	declareTopic(t, topo, topic, group)
	pub, err := NewProducer(url)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	poison := &reliable.Message{Topic: topic, Key: "k", Type: "poison", Payload: []byte("cannot parse")}
	good := &reliable.Message{Topic: topic, Key: "k2", Type: "good", Payload: []byte("ok")}
	if err := pub.Publish(ctx, poison, good); err != nil {
		t.Fatal(err)
	}
	sub, err := NewSubscriber(url, group, WithTopology(topo))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	deliveries, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var attempts []int
	gotGood := false
	for len(attempts) < topo.DeliveryLimit+1 || !gotGood {
		select {
		case d := <-deliveries:
			if d.Message.ID == good.ID {
				gotGood = true
				_ = d.Ack(ctx)
				continue
			}
			attempts = append(attempts, d.Message.Delivery.Attempt)
			if err := d.Nack(ctx); err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			if len(attempts) == 0 || !gotGood {
				t.Fatalf("deliveries stopped: attempts %v, good received %v", attempts, gotGood)
			}
			goto dead
		}
	}
dead:
	t.Logf("poison delivered with attempts %v", attempts)
	if attempts[0] != 1 || attempts[len(attempts)-1] <= attempts[0] {
		t.Fatalf("attempts %v do not count up", attempts)
	}
	ch, err := rawConn(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, ok, err := ch.Get(DeadLetterQueueName(topic, group), false)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if d.MessageId != poison.ID {
				t.Fatalf("dead-letter queue holds %s, want %s", d.MessageId, poison.ID)
			}
			deaths, _ := d.Headers["x-death"].([]any)
			t.Logf("dead-lettered with x-death %v", deaths)
			_ = d.Ack(false)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("poison message is not in the dead-letter queue: dropped?")
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case d := <-deliveries:
		t.Fatalf("message %s delivered again after dead-lettering", d.Message.ID)
	case <-time.After(500 * time.Millisecond):
	}
}

// TestWrongEnvironmentRejected: L07, a subscriber running in "prod" never
// hands a "staging" message to the application; the message goes to the
// dead-letter queue instead of being lost or processed.
func TestWrongEnvironmentRejected(t *testing.T) {
	url := amqpURL(t)
	topic, group := uniqueName("env"), "g"
	declareTopic(t, Topology{}, topic, group)
	staging, err := NewProducer(url, WithProducerConfig(producer.Config{Environment: "staging"}))
	if err != nil {
		t.Fatal(err)
	}
	defer staging.Close()
	prod, err := NewProducer(url, WithProducerConfig(producer.Config{Environment: "prod"}))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wrong := &reliable.Message{Topic: topic, Payload: []byte("staging")}
	right := &reliable.Message{Topic: topic, Payload: []byte("prod")}
	if err := staging.Publish(ctx, wrong); err != nil {
		t.Fatal(err)
	}
	if err := prod.Publish(ctx, right); err != nil {
		t.Fatal(err)
	}
	sub, err := NewSubscriber(url, group, WithEnvironment("prod"), WithoutEnvironmentPrefix(), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	deliveries, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	d := <-deliveries
	if d.Message.ID != right.ID || d.Message.Headers[reliable.HeaderEnvironment] != "prod" {
		t.Fatalf("got %v, want the prod message", d.Message)
	}
	_ = d.Ack(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for queueDepth(t, DeadLetterQueueName(topic, group)) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("staging message not dead-lettered")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDeletedExchangeFailsFast: an exchange deleted after the publisher saw
// it closes the confirm channel with 404 on the next publish. The publisher
// forgets what it knew, so the producer's retry fails with ErrUnknownTopic
// instead of closing channel after channel until its context ends.
func TestDeletedExchangeFailsFast(t *testing.T) {
	url := amqpURL(t)
	topic := uniqueName("deleted")
	declareTopic(t, Topology{}, topic, "g")
	prod, err := NewProducer(url, WithLogger(discardLogger()),
		WithProducerConfig(producer.Config{Backoff: fastRetry, Logger: discardLogger()}))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := prod.Publish(ctx, &reliable.Message{Topic: topic, Payload: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	ch, err := rawConn(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDelete(ExchangeName(topic), false, false); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = prod.Publish(ctx, &reliable.Message{Topic: topic, Payload: []byte("2")})
	if !errors.Is(err, reliable.ErrUnknownTopic) || time.Since(start) > 10*time.Second {
		t.Fatalf("publish to a deleted exchange: %v after %s, want ErrUnknownTopic", err, time.Since(start))
	}
	t.Logf("after %s: %v", time.Since(start).Round(time.Millisecond), err)
}

// TestStaleAckAfterReconnect: L01, PITFALLS B3 and C10. Deliveries received
// before a reconnect carry delivery tags of the old channel; the new channel
// reuses the same tags for the redelivered messages. Acking an old delivery
// must neither ack the new channel's message with that tag (silent loss) nor
// send the tag to the broker (406 PRECONDITION_FAILED closing the channel).
func TestStaleAckAfterReconnect(t *testing.T) {
	url := amqpURL(t)
	topic, group := uniqueName("stale"), "g"
	declareTopic(t, Topology{}, topic, group)
	var logs logBuffer
	pub, err := NewProducer(url)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	msgs := keyedMessages(topic, 2, 1)
	if err := pub.Publish(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	sub, err := NewSubscriber(url, group, WithLogger(logs.logger()), WithReconnectBackoff(fastRetry))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	deliveries, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	next := func() *reliable.Delivery {
		t.Helper()
		select {
		case d := <-deliveries:
			return d
		case <-ctx.Done():
			t.Fatal("no delivery")
			return nil
		}
	}
	old := []*reliable.Delivery{next(), next()}
	if !forceClose(t, sub.cm) {
		t.Fatal("no connection to close")
	}
	fresh := []*reliable.Delivery{next(), next()}
	for i := range fresh {
		if !fresh[i].Message.Delivery.Redelivered {
			t.Fatalf("message %s after reconnect is not flagged redelivered", fresh[i].Message.ID)
		}
		// The consumer pipeline leaves stale deliveries alone and handles
		// their redelivered copies.
		if !old[i].Stale() || fresh[i].Stale() {
			t.Fatalf("delivery %d: old stale %v, fresh stale %v; want true, false", i, old[i].Stale(), fresh[i].Stale())
		}
	}
	t.Logf("old tags %d,%d; new tags %d,%d", old[0].Message.Delivery.Offset, old[1].Message.Delivery.Offset,
		fresh[0].Message.Delivery.Offset, fresh[1].Message.Delivery.Offset)
	for _, d := range old {
		if err := d.Ack(ctx); err != nil {
			t.Fatalf("stale ack: %v", err)
		}
	}
	if got := sub.StaleSettlements(); got != 2 {
		t.Fatalf("%d stale settlements dropped, want 2", got)
	}
	// Nothing was acked: closing the subscriber returns both messages.
	_ = sub.Close()
	deadline := time.Now().Add(10 * time.Second)
	for queueDepth(t, QueueName(topic, group)) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("queue holds %d messages, want 2: a stale ack acked a redelivered message", queueDepth(t, QueueName(topic, group)))
		}
		time.Sleep(100 * time.Millisecond)
	}
	assertNoStaleTagErrors(t, logs.String())
}
