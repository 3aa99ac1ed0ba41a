package rabbitmq

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
)

// TestOversizedFieldsRefusedBeforeSending: AMQP short strings (routing key =
// message key, message-id, type, exchange = topic, header names) hold at
// most 255 bytes, and a message's header frame must fit in the
// connection's frame_max. amqp091-go fails to encode a longer short string
// and then shuts the whole connection down, and the broker closes the
// connection on an oversized header frame. Before: a 300-byte key tore the
// shared connection down and re-established it again and again under every
// other publish, and ended in an untyped "publish not confirmed". Now each
// such message is refused with a *reliable.InvalidMessageError naming the
// field, before anything is written; the other publishes of the same
// Publisher, concurrent with it, all succeed on the same connection.
func TestOversizedFieldsRefusedBeforeSending(t *testing.T) {
	url := amqpURL(t)
	topic := uniqueName("limits")
	declareTopic(t, Topology{}, topic, "g")
	pub, err := NewPublisher(url, WithLogger(discardLogger()), WithReconnectBackoff(fastRetry))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, gen, err := pub.cm.connection(ctx)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("k", 300)
	cases := []struct {
		field string
		msg   *reliable.Message
	}{
		{"Key", &reliable.Message{Topic: topic, Key: long}},
		{"ID", &reliable.Message{Topic: topic, ID: long}},
		{"Type", &reliable.Message{Topic: topic, Type: long}},
		{"Topic", &reliable.Message{Topic: long}},
		// The broker closes the whole connection (501 FRAME_ERROR) on an
		// exchange name that is not UTF-8; routing keys may be any bytes.
		{"Topic", &reliable.Message{Topic: topic + "\xff"}},
		{"header name", &reliable.Message{Topic: topic, Headers: map[string]string{long: "v"}}},
		{"headers", &reliable.Message{Topic: topic, Headers: map[string]string{"x-big": strings.Repeat("v", 200<<10)}}},
	}

	// Good messages flow on the same Publisher throughout.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var goodErrs []error
	var mu sync.Mutex
	good := 0
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := pub.Publish(ctx, &reliable.Message{Topic: topic, Key: "order-1", Payload: []byte("ok")})
				mu.Lock()
				good++
				if err != nil {
					goodErrs = append(goodErrs, err)
				}
				mu.Unlock()
			}
		}()
	}
	goodCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return good
	}
	// Rounds of refusals while the good publishes flow.
	deadline := time.Now().Add(20 * time.Second)
	for round := 0; round < 20 || goodCount() < 500; round++ {
		if time.Now().After(deadline) {
			t.Fatalf("only %d good publishes in %d rounds", goodCount(), round)
		}
		time.Sleep(time.Millisecond) // pace the refusals over the good publishes
		c := cases[round%len(cases)]
		c.msg.Payload = []byte("x")
		err := pub.Publish(ctx, c.msg)
		var ime *reliable.InvalidMessageError
		if !errors.As(err, &ime) || !errors.Is(err, reliable.ErrInvalidMessage) || !reliable.IsPermanent(err) {
			t.Errorf("%s: err %v, want a permanent *reliable.InvalidMessageError", c.field, err)
			continue
		}
		if !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: error %q does not name the field", c.field, err)
		}
	}
	// The same through NewProducer's path: refused at once, not retried.
	prod, err := NewProducer(url, WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	start := time.Now()
	err = prod.Publish(ctx, &reliable.Message{Topic: topic, Key: long, Payload: []byte("x")})
	if !errors.Is(err, reliable.ErrInvalidMessage) || time.Since(start) > 5*time.Second {
		t.Errorf("producer: err %v after %s, want ErrInvalidMessage at once", err, time.Since(start))
	}
	close(stop)
	wg.Wait()
	if len(goodErrs) > 0 {
		t.Errorf("%d of %d concurrent good publishes failed, first: %v", len(goodErrs), good, goodErrs[0])
	}
	if _, gen2, err := pub.cm.connection(ctx); err != nil || gen2 != gen {
		t.Fatalf("connection generation %d -> %d (%v): the connection was re-established", gen, gen2, err)
	}
	t.Logf("%d concurrent good publishes, all confirmed, on one connection", good)
}
