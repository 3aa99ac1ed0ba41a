package reliabletest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
)

// envKillChild holds, in the child process of the kill case, what the child
// consumes (a JSON killSpec).
const envKillChild = "RELIABLETEST_KILL_CHILD"

// childPrefix starts every line the child writes for its parent.
const childPrefix = "reliabletest-child: "

type killSpec struct {
	Topic string `json:"topic"`
	Group string `json:"group"`
	Ack   int    `json:"ack"`   // ack this many deliveries, in arrival order
	Total int    `json:"total"` // then receive until this many distinct messages
}

// ackedNotRedeliveredAfterKill: L04, L05. A consumer process acks half of
// what it received and is killed with SIGKILL (no Close, no commit on the
// way out) once AckLatency has passed since its last ack. The next
// subscriber of the group gets every message that was not acked (flagged
// Redelivered where promised) and none that was.
//
// For an OutOfProcess adapter the consumer is a child process: the test
// binary run again for this case only. Otherwise Setup.Crash stops an
// in-process subscriber.
func (c *suite) ackedNotRedeliveredAfterKill(t *testing.T) {
	if v := os.Getenv(envKillChild); v != "" {
		c.killChild(t, v)
		return
	}
	ctx := c.ctx(t)
	topic := uniqueName(t)
	group := topic + "-g"
	const n, keys = 40, 4
	c.CreateTopic(t, topic, group)
	pub := c.newPublisher(t)
	msgs := makeMessages(topic, n, keys)
	c.publish(t, ctx, pub, msgs...)

	spec := killSpec{Topic: topic, Group: group, Ack: n / 2, Total: n}
	var acked, received map[string]bool
	if c.OutOfProcess {
		acked, received = c.consumeInChild(t, ctx, spec)
	} else {
		acked, received = c.consumeAndCrash(t, ctx, spec)
	}
	if len(acked) != spec.Ack || len(received) != n {
		t.Fatalf("the killed consumer acked %d and received %d messages, want %d and %d", len(acked), len(received), spec.Ack, n)
	}
	var want []string
	for _, m := range msgs {
		if !acked[m.ID] {
			want = append(want, m.ID)
		}
	}
	got := c.expectOnly(t, ctx, pub, topic, group, keys, want, acked,
		fmt.Sprintf("acked at least %s before its consumer was killed", c.AckLatency))
	c.checkRedelivered(t, got, func(id string) bool { return received[id] && !acked[id] }, "received but not acked by the killed consumer")
}

// consumeAndCrash plays the killed consumer in this process.
func (c *suite) consumeAndCrash(t *testing.T, ctx context.Context, spec killSpec) (acked, received map[string]bool) {
	sub := c.NewSubscriber(t, spec.Group)
	t.Cleanup(func() { _ = sub.Close() })
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := c.subscribe(t, subCtx, sub, spec.Topic)
	acked, received = map[string]bool{}, map[string]bool{}
	c.receive(t, ch, false, func(got []*reliable.Delivery) bool {
		if len(got) > 0 {
			d := got[len(got)-1]
			if id := d.Message.ID; !received[id] {
				received[id] = true
				if len(acked) < spec.Ack {
					if err := d.Ack(ctx); err != nil {
						t.Fatalf("ack: %v", err)
					}
					acked[id] = true
				}
			}
		}
		return len(received) == spec.Total
	})
	time.Sleep(c.AckLatency) // the adapter's documented bound, see Features.AckLatency
	c.Crash(sub)
	return acked, received
}

// consumeInChild runs the killed consumer as a child process, waits until
// it has acked and received what spec says, and kills it with SIGKILL.
func (c *suite) consumeInChild(t *testing.T, ctx context.Context, spec killSpec) (acked, received map[string]bool) {
	js, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 4*c.Timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, os.Args[0], "-test.run="+runPattern(t.Name()), "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), envKillChild+"="+string(js))
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the consumer process: %v", err)
	}
	waited := make(chan error, 1)
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-waited
	})

	acked, received = map[string]bool{}, map[string]bool{}
	ready := make(chan struct{})
	var out lockedBuffer
	go func() {
		sc := bufio.NewScanner(stdout)
		isReady := false
		for sc.Scan() {
			line := sc.Text()
			out.WriteString(line + "\n")
			rest, ok := strings.CutPrefix(line, childPrefix)
			if !ok || isReady {
				continue
			}
			verb, id, _ := strings.Cut(rest, " ")
			switch verb {
			case "ack":
				acked[id] = true
				received[id] = true
			case "recv":
				received[id] = true
			case "ready":
				isReady = true
				close(ready)
			}
		}
		waited <- cmd.Wait()
	}()
	select {
	case <-ready:
	case err := <-waited:
		waited <- err
		t.Fatalf("the consumer process ended before it was ready: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), stderr.String())
	case <-time.After(2 * c.Timeout):
		t.Fatalf("the consumer process was not ready after %s\nstdout:\n%s\nstderr:\n%s", 2*c.Timeout, out.String(), stderr.String())
	}
	time.Sleep(c.AckLatency) // the adapter's documented bound, see Features.AckLatency
	if err := cmd.Process.Kill(); err != nil {
		t.Fatalf("kill -9 the consumer process: %v", err)
	}
	err = <-waited
	waited <- err
	t.Logf("consumer process %d killed (%v) after acking %d of %d messages", cmd.Process.Pid, err, len(acked), len(received))
	return acked, received
}

// killChild is the child's part: consume as spec says, report each step on
// stdout, then wait to be killed.
func (c *suite) killChild(t *testing.T, v string) {
	var spec killSpec
	if err := json.Unmarshal([]byte(v), &spec); err != nil {
		t.Fatalf("%s: %v", envKillChild, err)
	}
	sub := c.NewSubscriber(t, spec.Group) // never closed: the parent kills this process
	ch := c.subscribe(t, context.Background(), sub, spec.Topic)
	received := map[string]bool{}
	acked := 0
	timer := time.NewTimer(2 * c.Timeout)
	defer timer.Stop()
	for len(received) < spec.Total {
		select {
		case d, ok := <-ch:
			if !ok {
				t.Fatalf("delivery channel closed after %d messages", len(received))
			}
			id := d.Message.ID
			if received[id] {
				continue
			}
			received[id] = true
			if acked < spec.Ack {
				if err := d.Ack(context.Background()); err != nil {
					t.Fatalf("ack: %v", err)
				}
				acked++
				fmt.Printf("%sack %s\n", childPrefix, id)
			} else {
				fmt.Printf("%srecv %s\n", childPrefix, id)
			}
		case <-timer.C:
			t.Fatalf("received %d of %d messages", len(received), spec.Total)
		}
	}
	fmt.Printf("%sready\n", childPrefix)
	time.Sleep(4 * c.Timeout)
	t.Fatal("the parent did not kill this process")
}

// runPattern returns a -test.run pattern that selects exactly the test
// named name (a "Parent/Sub" path).
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) WriteString(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b.WriteString(s)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
