package outbox_test

import (
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/internal/testenv"
)

// TestKafkaBrokerKillRelayResumesOnceTheBrokerIsFenced (L06): one of three
// brokers is killed with SIGKILL while orders commit over 200 keys. With
// replication factor 3 on three brokers, the killed broker is in every
// partition's ISR, and acks=all waits for every ISR member: nothing can be
// confirmed until the controller fences it (broker.session.timeout.ms, 6 s)
// and the ISRs shrink. Seen as a relay, that is an outage failing every
// in-flight row at once, in many small calls (one per few rows with
// per-message confirms). The relay must count it as one outage, not one per
// call (which would reach Backoff.Max, 30 s, at once), and resume as soon as
// the cluster confirms again; then every order is consumed once, in commit
// order per key, and no row died. (That a partition without leader holds
// back only its own keys, while the others confirm, needs partitions that
// do not all share the failed broker: TestSlowConfirmDoesNotHoldOtherKeys
// shows it with a fake.)
func TestKafkaBrokerKillRelayResumesOnceTheBrokerIsFenced(t *testing.T) {
	brokerKill(t, false)
}

// TestKafkaBrokerKillLogRelayResumesOnceTheBrokerIsFenced is the same with
// the relay reading the write-ahead log (ModeLog): the slot waits for the
// rows the outage holds back, and the relay still reads the log after.
func TestKafkaBrokerKillLogRelayResumesOnceTheBrokerIsFenced(t *testing.T) {
	brokerKill(t, true)
}

func brokerKill(t *testing.T, logMode bool) {
	if testing.Short() {
		t.Skip("long")
	}
	cluster := testenv.KafkaCluster(t)
	k := kafkaKit(t, cluster.Brokers())
	db := newTestDB(t, 8)
	ctx := testenv.Context(t, 5*time.Minute)
	cfg := testConfig()
	if logMode {
		cfg = logConfig(logSlot(t, db))
	}
	cfg.LeaseTTL = 10 * time.Second
	cfg.PublishTimeout = 4 * time.Second
	cfg.Backoff = reliable.Backoff{} // the defaults: up to 30 s
	relay := startRelay(t, db.pool, k.publisher(t), cfg)

	// One writer commits an order every 10 ms over 200 keys.
	w := startOrderWriter(t, ctx, db.pool, k.topic, 200, 10*time.Millisecond)

	// The relay's Published count, sampled every 50 ms.
	type sample struct {
		at        time.Time
		published uint64
	}
	var smu sync.Mutex
	var samples []sample
	sampling := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-sampling:
				return
			case now := <-tick.C:
				smu.Lock()
				samples = append(samples, sample{now, relay.Stats().Published})
				smu.Unlock()
			}
		}
	})
	defer func() { close(sampling); sampler.Wait() }()

	waitFor(t, 30*time.Second, "relaying before the kill", func() bool { return relay.Stats().Published >= 500 })
	killed := time.Now()
	if err := cluster.KillBroker(ctx, 2); err != nil {
		t.Fatal(err)
	}
	// Wait until the relay confirms again, then a little more.
	atKill := relay.Stats().Published
	waitFor(t, time.Minute, "confirms again after the kill", func() bool { return relay.Stats().Published > atKill+100 })
	time.Sleep(2 * time.Second)

	// The longest stretch without a confirm since the kill.
	smu.Lock()
	var stall time.Duration
	var last sample
	lastChange := killed
	for _, s := range samples {
		if s.at.Before(killed) {
			last = s
			continue
		}
		if s.published != last.published {
			lastChange = s.at
		}
		stall = max(stall, s.at.Sub(lastChange))
		last = s
	}
	smu.Unlock()
	t.Logf("broker 2 killed: longest stretch without a confirm %s; relay %+v", stall.Round(time.Millisecond), relay.Stats())
	// 6 s until the controller fences the broker, plus margin; an outage
	// backoff grown per failed call would stall the relay 30 s or more.
	if stall > 15*time.Second {
		t.Errorf("the relay confirmed nothing for %s after one broker was killed; want it to resume once the broker is fenced (about 6 s)",
			stall.Round(time.Millisecond))
	}

	w.Stop()
	waitFor(t, 2*time.Minute, "outbox empty", func() bool { return db.count(t, `SELECT count(*) FROM reliable_outbox`) == 0 })
	if s := relay.Stats(); s.Dead != 0 {
		t.Fatalf("relay stats %+v: a broker kill must kill no row", s)
	}
	if s := relay.Stats(); logMode && (s.LogState != "reading" || s.LogRows == 0) {
		t.Fatalf("log state %q, %d rows from the log: the relay did not read the log through the outage", s.LogState, s.LogRows)
	}
	c := k.consumeAll(t, w)
	t.Logf("%d orders over 200 keys, all applied once in commit order per key, %d repeats", c.distinct(), c.dups)
}
