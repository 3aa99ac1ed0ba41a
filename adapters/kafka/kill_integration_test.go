package kafka

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// The child process of TestConsumerKill9 runs this test binary again with
// these variables set.
const (
	envChild       = "RELIABLE_KAFKA_KILL9_CHILD"
	envChildTopic  = "RELIABLE_KAFKA_KILL9_TOPIC"
	envChildGroup  = "RELIABLE_KAFKA_KILL9_GROUP"
	envChildLedger = "RELIABLE_KAFKA_KILL9_LEDGER"
)

// L04, L05: a consumer process is killed with SIGKILL in the middle of a
// batch, with deliveries completing out of order on parallel workers. The
// committed offset must never pass a message that was not processed, at any
// moment; after a new process takes over, every message has been processed
// at least once. The duplicates it reports are what consumer-side dedupe
// absorbs (L20).
func TestConsumerKill9(t *testing.T) {
	if os.Getenv(envChild) == "1" {
		runKill9Child(t)
		return
	}
	brokers := kafkaBrokers(t)
	const n, partitions = 3000, 3
	topic, group := uniqueName("kill9"), uniqueName("kill9-g")
	createTopic(t, brokers, topic, partitions, nil)
	pub, err := NewProducer(testConfig(t))
	if err != nil {
		t.Fatalf("NewProducer: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	msgs := keyedMessages(topic, n, 100, 0)
	if err := pub.Publish(ctx, msgs...); err != nil {
		t.Fatalf("publish: %v", err)
	}
	_ = pub.Close()

	ledgerPath := filepath.Join(t.TempDir(), "processed.log")
	adm := adminClient(t, brokers)
	defer adm.Close()
	check := func() (lines int, committed map[int32]int64) {
		// Committed offsets first, then the ledger: the ledger only grows,
		// so everything below a commit must already be in it.
		committed = committedOffsets(t, adm, group, topic, partitions)
		processed, lines := readProcessed(t, ledgerPath)
		for p, c := range committed {
			for off := int64(0); off < c; off++ {
				if !processed[position{p, off}] {
					t.Fatalf("partition %d: committed offset %d passed offset %d, which was never processed", p, c, off)
				}
			}
		}
		return lines, committed
	}

	child := startKill9Child(t, topic, group, ledgerPath, "1")
	var lines int
	var committed map[int32]int64
	for deadline := time.Now().Add(2 * time.Minute); ; {
		lines, _ = check()
		if lines >= n/3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the first consumer processed only %d messages in 2 minutes", lines)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := child.Process.Kill(); err != nil { // SIGKILL
		t.Fatalf("kill: %v", err)
	}
	_ = child.Wait()
	killedAt, committedAtKill := check()
	var committedBeforeKill int64
	for _, c := range committedAtKill {
		committedBeforeKill += c
	}
	t.Logf("consumer 1 killed with SIGKILL after processing %d messages; committed offsets then: %v", killedAt, committedAtKill)
	// L04, L05: commits follow processing while it runs, not only at a clean
	// shutdown (a subscriber that never commits would redeliver everything).
	if committedBeforeKill == 0 {
		t.Fatalf("nothing was committed while consumer 1 processed %d messages", killedAt)
	}

	child2 := startKill9Child(t, topic, group, ledgerPath, "2")
	defer func() { _ = child2.Process.Kill(); _ = child2.Wait() }()
	for deadline := time.Now().Add(2 * time.Minute); ; {
		check()
		processed, lines := readProcessed(t, ledgerPath)
		ids := distinctProcessed(processed)
		if ids == n {
			dups := lines - n
			t.Logf("all %d messages processed at least once: %d processings, %d duplicates (redelivered after the kill)", n, lines, dups)
			// Only what consumer 1 processed past its last commit comes again.
			if limit := int64(killedAt) - committedBeforeKill; int64(dups) > limit {
				t.Fatalf("%d duplicates, more than the %d messages consumer 1 processed past its committed offsets", dups, limit)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d messages processed after the restart", ids, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Consumer 2 commits everything it processed (within a few commit
	// intervals), so a third consumer would start at the end.
	for deadline := time.Now().Add(30 * time.Second); ; {
		var total int64
		_, committed = check()
		for _, c := range committed {
			total += c
		}
		if total == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("committed %v (%d of %d) 30s after every message was processed", committed, total, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = child2.Process.Kill()
	_ = child2.Wait()
	t.Logf("committed offsets at the end: %v", committed)
}

type position struct {
	partition int32
	offset    int64
}

func distinctProcessed(processed map[position]bool) int { return len(processed) }

// readProcessed parses the ledger the children append to: one line
// "partition offset id" per processed delivery.
func readProcessed(t testing.TB, path string) (map[position]bool, int) {
	t.Helper()
	processed := map[position]bool{}
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return processed, 0
	}
	if err != nil {
		t.Fatalf("ledger: %v", err)
	}
	defer f.Close()
	lines := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var p position
		var id string
		if _, err := fmt.Sscan(sc.Text(), &p.partition, &p.offset, &id); err != nil {
			continue // a line cut short by SIGKILL
		}
		processed[p] = true
		lines++
	}
	return processed, lines
}

func committedOffsets(t testing.TB, adm sarama.ClusterAdmin, group, topic string, partitions int32) map[int32]int64 {
	t.Helper()
	ps := make([]int32, partitions)
	for i := range ps {
		ps[i] = int32(i)
	}
	var resp *sarama.OffsetFetchResponse
	var err error
	// The coordinator may be loading offsets after a broker restart.
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err = adm.ListConsumerGroupOffsets(group, map[string][]int32{topic: ps})
		if err == nil && resp.Err == sarama.ErrNoError {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("list group offsets: %v / %v", err, resp)
		}
		time.Sleep(100 * time.Millisecond)
	}
	out := map[int32]int64{}
	for p, b := range resp.Blocks[topic] {
		if b.Err == sarama.ErrNoError && b.Offset >= 0 {
			out[p] = b.Offset
		}
	}
	return out
}

func startKill9Child(t *testing.T, topic, group, ledger, name string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestConsumerKill9$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(),
		envChild+"=1", envChildTopic+"="+topic, envChildGroup+"="+group, envChildLedger+"="+ledger,
		"RELIABLE_KAFKA_BROKERS="+strings.Join(kafkaBrokers(t), ","))
	out, err := os.Create(filepath.Join(filepath.Dir(ledger), "child"+name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child: %v", err)
	}
	t.Cleanup(func() {
		_ = out.Close()
		if t.Failed() {
			b, _ := os.ReadFile(out.Name())
			t.Logf("child %s output:\n%s", name, b)
		}
	})
	return cmd
}

// runKill9Child consumes with 8 workers that finish deliveries out of order,
// appending each processed delivery to the ledger before acking it. It runs
// until it is killed.
func runKill9Child(t *testing.T) {
	// Not through testenv: the parent already holds the lock on Kafka, and a
	// second lock request could queue behind another package's fault test
	// that waits for the parent.
	cfg := Config{Brokers: strings.Split(os.Getenv("RELIABLE_KAFKA_BROKERS"), ","), Logger: testLogger()}
	cfg.Consumer.Group = os.Getenv(envChildGroup)
	cfg.Consumer.CommitInterval = 50 * time.Millisecond
	cfg.Consumer.MaxInFlightPerPartition = 64
	sub, err := NewSubscriber(cfg)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ch, err := sub.Subscribe(ctx, os.Getenv(envChildTopic))
	if err != nil {
		t.Fatalf("child: subscribe: %v", err)
	}
	f, err := os.OpenFile(os.Getenv(envChildLedger), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("child: ledger: %v", err)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range ch {
				time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond) // out-of-order completion
				m := d.Message
				mu.Lock()
				// One write per line: SIGKILL leaves whole lines (the kernel
				// has them once write returns).
				_, err := fmt.Fprintf(f, "%d %d %s\n", m.Delivery.Partition, m.Delivery.Offset, m.ID)
				mu.Unlock()
				if err != nil {
					panic(err)
				}
				if err := d.Ack(ctx); err != nil {
					panic(fmt.Sprintf("child: ack %d/%d: %v", m.Delivery.Partition, m.Delivery.Offset, err))
				}
			}
		}()
	}
	wg.Wait()
}
