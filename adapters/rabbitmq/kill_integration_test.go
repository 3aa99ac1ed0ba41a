package rabbitmq

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
)

// TestKilledConsumerProcessLosesNothing: L01. A consumer process that holds
// unacked deliveries is killed with SIGKILL (no close, no cleanup). Every
// message it did not ack is redelivered to another instance; nothing is
// lost. The consumer runs as a child process: this test binary re-executed
// into TestHelperConsumerProcess.
func TestKilledConsumerProcessLosesNothing(t *testing.T) {
	url := amqpURL(t)
	const n = 1000
	topic, group := uniqueName("kill"), "g"
	declareTopic(t, Topology{}, topic, group)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	pub, err := NewProducer(url)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	msgs := keyedMessages(topic, n, 10)
	for i := 0; i < n; i += 100 {
		if err := pub.Publish(ctx, msgs[i:i+100]...); err != nil {
			t.Fatal(err)
		}
	}

	child := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperConsumerProcess$", "-test.v")
	child.Env = append(os.Environ(), "RELIABLE_RABBITMQ_CHILD_TOPIC="+topic, "RELIABLE_RABBITMQ_CHILD_GROUP="+group,
		"RELIABLE_AMQP_URL="+url)
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	childAcked := map[string]bool{}
	received := 0
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if id, ok := strings.CutPrefix(line, "ACKED "); ok {
			childAcked[id] = true
		}
		if strings.HasPrefix(line, "RECEIVED ") {
			received++
		}
		if len(childAcked) >= 200 {
			break
		}
	}
	// SIGKILL while the child holds a full prefetch of unacked deliveries.
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	t.Logf("child received %d and acked %d before kill -9", received, len(childAcked))
	if received <= len(childAcked) {
		t.Fatalf("child held no unacked deliveries (received %d, acked %d): the test proves nothing", received, len(childAcked))
	}

	sub, err := NewSubscriber(url, group)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	deliveries, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	redelivered := 0
	for missing := n; missing > 0; {
		select {
		case d := <-deliveries:
			got[d.Message.ID] = true
			if d.Message.Delivery.Redelivered {
				redelivered++
			}
			if err := d.Ack(ctx); err != nil {
				t.Fatal(err)
			}
		case <-time.After(15 * time.Second):
			var lost []string
			for _, m := range msgs {
				if !got[m.ID] && !childAcked[m.ID] {
					lost = append(lost, m.ID)
				}
			}
			t.Fatalf("%d messages lost after kill -9 (first %v)", len(lost), first(lost, 5))
		}
		missing = 0
		for _, m := range msgs {
			if !got[m.ID] && !childAcked[m.ID] {
				missing++
			}
		}
	}
	t.Logf("second instance received %d messages, %d flagged redelivered; none lost", len(got), redelivered)
	if redelivered == 0 {
		t.Fatal("no message was redelivered: the child's unacked deliveries vanished?")
	}
}

// TestHelperConsumerProcess is the child of
// TestKilledConsumerProcessLosesNothing; it skips in a normal run. It acks
// slowly and reports each delivery and each completed ack on stdout.
func TestHelperConsumerProcess(t *testing.T) {
	topic := os.Getenv("RELIABLE_RABBITMQ_CHILD_TOPIC")
	if topic == "" {
		t.Skip("helper process of TestKilledConsumerProcessLosesNothing")
	}
	sub, err := NewSubscriber(amqpURL(t), os.Getenv("RELIABLE_RABBITMQ_CHILD_GROUP"), WithPrefetch(50))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	deliveries, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var out sync.Mutex
	pending := make(chan *reliable.Delivery, 100)
	go func() {
		for d := range deliveries {
			out.Lock()
			fmt.Println("RECEIVED " + d.Message.ID)
			out.Unlock()
			pending <- d
		}
	}()
	for d := range pending {
		time.Sleep(2 * time.Millisecond) // "processing"
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
		out.Lock()
		fmt.Println("ACKED " + d.Message.ID)
		out.Unlock()
	}
}
