package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var quiet = slog.New(slog.DiscardHandler)

func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(c net.Conn, msg string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// A cut resets live connections (the client sees an error, never a clean
// end of stream it could take for a complete reply), refuses reconnects for
// a while, then lets them through again.
func TestProxyCutResetsAndRefuses(t *testing.T) {
	p, err := newProxy("echo", echoServer(t), quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := roundTrip(c, "hello"); err != nil || got != "hello" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}
	if n := p.Cut(300 * time.Millisecond); n != 1 {
		t.Errorf("cut %d connections, want 1", n)
	}
	if _, err := roundTrip(c, "again"); err == nil {
		t.Fatal("a cut connection still works")
	}
	refused, err := net.Dial("tcp", p.Addr())
	if err == nil {
		_, err = roundTrip(refused, "during")
		refused.Close()
	}
	if err == nil {
		t.Fatal("a connection during the refusal works")
	}
	time.Sleep(400 * time.Millisecond)
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got, err := roundTrip(c2, "healed"); err != nil || got != "healed" {
		t.Fatalf("after the refusal: %q, %v", got, err)
	}
}

func TestParseFlagsDefaultsAndProblems(t *testing.T) {
	cfg, o, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Messages != 20000 || cfg.Broker != brokerKafka || o.report != "table" || cfg.Shards != 6 {
		t.Errorf("defaults: %+v %+v", cfg, o)
	}
	if !slices.Equal(cfg.Faults, faultKinds(brokerKafka)) || !slices.Contains(cfg.Faults, faultBrokerKill) {
		t.Errorf("all faults for kafka: %v", cfg.Faults)
	}
	cfg, _, _ = parseFlags([]string{"-broker", "rabbitmq"}, io.Discard)
	if !slices.Contains(cfg.Faults, faultRabbitRestart) || slices.Contains(cfg.Faults, faultBrokerKill) {
		t.Errorf("all faults for rabbitmq: %v", cfg.Faults)
	}
	cfg, _, _ = parseFlags([]string{"-backlog", "1000"}, io.Discard)
	if cfg.Consumers != 1 || cfg.Relays != 1 || len(cfg.Faults) != 0 || cfg.Messages != 0 {
		t.Errorf("backlog mode: %+v", cfg)
	}
	_, _, err = parseFlags([]string{"-broker", "nats", "-keys", "0", "-faults", "broker-kill,meteor"}, io.Discard)
	if err == nil {
		t.Fatal("bad flags accepted")
	}
	for _, want := range []string{"-broker", "-keys", `"meteor"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestPrimaryShardsCoverEveryShardOnce(t *testing.T) {
	var all []int
	for i := 1; i <= 3; i++ {
		all = append(all, primaryShards(i, 3, 8)...)
	}
	slices.Sort(all)
	if !slices.Equal(all, []int{0, 1, 2, 3, 4, 5, 6, 7}) {
		t.Errorf("shards %v", all)
	}
	if primaryShards(1, 3, 1) != nil {
		t.Error("an unsharded topology has no primary shards")
	}
}

func TestRollIsSeededAndUniform(t *testing.T) {
	if roll(1, "m", 1) != roll(1, "m", 1) {
		t.Fatal("roll is not deterministic")
	}
	if roll(1, "m", 1) == roll(2, "m", 1) || roll(1, "m", 1) == roll(1, "m", 2) {
		t.Error("seed and attempt do not change the roll")
	}
	below := 0
	for i := range 10000 {
		if roll(7, "msg-"+strconv.Itoa(i), 1) < 0.1 {
			below++
		}
	}
	if below < 800 || below > 1200 {
		t.Errorf("%d of 10000 rolls below 0.1", below)
	}
}

func TestScopeTurnsFatalIntoErrorAndCleansUp(t *testing.T) {
	var order []string
	err := inScope("fault", quiet, func(tb testing.TB) error {
		tb.Cleanup(func() { order = append(order, "first registered") })
		tb.Cleanup(func() { order = append(order, "last registered") })
		tb.Fatalf("broker %d is gone", 2)
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "broker 2 is gone") {
		t.Errorf("err = %v", err)
	}
	if !slices.Equal(order, []string{"last registered", "first registered"}) {
		t.Errorf("cleanups ran as %v", order)
	}
	err = inScope("restore", quiet, func(tb testing.TB) error {
		tb.Cleanup(func() { tb.Errorf("restoring failed") })
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "restoring failed") {
		t.Errorf("an error in a cleanup is lost: %v", err)
	}
	sentinel := errors.New("plain")
	if err := inScope("ok", quiet, func(testing.TB) error { return sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("err = %v", err)
	}
}

func TestReportFailsOnBrokenPromiseOrBudget(t *testing.T) {
	rep := &Report{Mode: "campaign", Broker: brokerKafka, Verdict: Verdict{Orders: 10, AppliedUnique: 10, Applied: 10},
		Faults: []FaultEvent{
			{Kind: faultConsumerKill, Start: time.Now(), End: time.Now(), Detail: "kill -9 consumer-1"},
			{Kind: faultConsumerKill, Start: time.Now(), End: time.Now(), Error: "no process"},
		},
		Processes: []ProcessStats{{Name: "consumer-1", Role: roleConsumer, PeakRSS: 300 << 20, Starts: 2, Kills: 1}}}
	if !rep.Passed() {
		t.Error("a clean campaign failed (memory budgets apply to the backlog mode only)")
	}
	var out bytes.Buffer
	rep.writeTable(&out)
	for _, want := range []string{"PASS", "| lost ", "| fault: consumer-kill", "1 (+1 failed to inject)", "300.0 MiB"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	rep.Mode = "backlog"
	if rep.Passed() {
		t.Error("a consumer over its 256 MiB budget passed")
	}
	rep.Mode = "campaign"
	rep.Verdict.AppliedTwice = 1
	if rep.Passed() {
		t.Error("a duplicate effect passed")
	}
	out.Reset()
	rep.writeTable(&out)
	if !strings.Contains(out.String(), "FAIL") || !strings.Contains(out.String(), "1 applied twice") {
		t.Errorf("table of a failed run:\n%s", out.String())
	}
}

// Every fault of the first cycle meets orders in flight: the steady orders
// are released in equal shares as the faults begin, the last share with the
// last fault.
func TestSteadyQuotaSharesOrdersAcrossFaults(t *testing.T) {
	cfg := &Config{Messages: 20000, Burst: 2000, Faults: faultKinds(brokerKafka)}
	steady := int64(20000 - 2000)
	var prev int64
	for i := range len(cfg.Faults) {
		q := cfg.steadyQuota(i)
		if q <= prev || q >= steady {
			t.Errorf("quota before fault %d is %d (previous %d, steady orders %d)", i, q, prev, steady)
		}
		prev = q
	}
	if q := cfg.steadyQuota(len(cfg.Faults)); q != -1 {
		t.Errorf("after the last fault began the quota is %d, want -1 (everything)", q)
	}
	if q := (&Config{Messages: 100}).steadyQuota(0); q != -1 {
		t.Errorf("without faults the quota is %d, want -1", q)
	}
	if q := (&Config{Duration: time.Minute, Faults: []string{faultBurst}}).steadyQuota(0); q != -1 {
		t.Errorf("in duration mode the quota is %d, want -1", q)
	}
}

// The Kafka-side cut: connections sarama made through the dialer are reset,
// dials fail while the cut lasts, and work again after it.
func TestCutDialerResetsItsConnections(t *testing.T) {
	addr := echoServer(t)
	d := newCutDialer()
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := roundTrip(c, "hello"); err != nil || got != "hello" {
		t.Fatalf("through the dialer: %q, %v", got, err)
	}
	closed, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close() // a closed connection is forgotten, not cut again
	if n := d.Cut(300 * time.Millisecond); n != 1 {
		t.Errorf("cut %d connections, want 1", n)
	}
	if _, err := roundTrip(c, "again"); err == nil {
		t.Fatal("a cut connection still works")
	}
	if _, err := d.Dial("tcp", addr); !errors.Is(err, errRefused) {
		t.Fatalf("dial during the cut: %v", err)
	}
	time.Sleep(400 * time.Millisecond)
	c2, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got, err := roundTrip(c2, "healed"); err != nil || got != "healed" {
		t.Fatalf("after the cut: %q, %v", got, err)
	}
}

// The quick-start and zero profiles run the default topology, add the scale
// faults to "all", and the zero profile injects no poison (it has no
// dead-letter path); settings that contradict a profile are refused.
func TestParseFlagsProfiles(t *testing.T) {
	cfg, _, err := parseFlags([]string{"-profile", "quickstart", "-broker", "rabbitmq"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Shards != 0 || cfg.PoisonEvery != 2500 {
		t.Errorf("quickstart: shards %d (want 0: default topology), poison every %d", cfg.Shards, cfg.PoisonEvery)
	}
	for _, f := range append(extraFaults, faultRabbitRestart, faultConsumerKill, faultConnCut) {
		if !slices.Contains(cfg.Faults, f) {
			t.Errorf("quickstart's all faults lack %s: %v", f, cfg.Faults)
		}
	}
	cfg, _, err = parseFlags([]string{"-profile", "zero"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PoisonEvery != 0 || cfg.Shards != 0 || !slices.Contains(cfg.Faults, faultRollingRestart) {
		t.Errorf("zero: %+v", cfg)
	}
	cfg, _, err = parseFlags(nil, io.Discard)
	if err != nil || cfg.Profile != profileTuned || slices.Contains(cfg.Faults, faultScaleUp) {
		t.Errorf("the default profile changed: %+v, %v", cfg, err)
	}
	_, _, err = parseFlags([]string{"-profile", "zero", "-poison-every", "100", "-shards", "4"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-poison-every") || !strings.Contains(err.Error(), "-shards") {
		t.Errorf("zero with poison and shards: %v", err)
	}
	if _, _, err = parseFlags([]string{"-profile", "tuned-ish"}, io.Discard); err == nil || !strings.Contains(err.Error(), "-profile") {
		t.Errorf("unknown profile: %v", err)
	}
	// Scale faults may be chosen by name in any profile.
	if _, _, err = parseFlags([]string{"-faults", "scale-up,scale-down,rolling-restart"}, io.Discard); err != nil {
		t.Errorf("scale faults in the tuned profile: %v", err)
	}
}

// Without a dedupe store repeats are reported, not failed; in the other
// profiles AppliedTwice fails the run.
func TestReportRepeatsByProfile(t *testing.T) {
	rep := &Report{Mode: "campaign", Broker: brokerRabbitMQ, Verdict: Verdict{Profile: profileZero, Orders: 10,
		AppliedUnique: 10, Applied: 12, Repeats: 2, Samples: []string{"applied 2x m1 by consumer-1,consumer-2"}}}
	if !rep.Passed() {
		t.Error("repeats failed the zero profile")
	}
	var out bytes.Buffer
	rep.writeTable(&out)
	for _, want := range []string{"profile zero: PASS", "| 2 / 0 (no dedupe store", "### repeats", "applied 2x m1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	rep.Verdict.Profile, rep.Verdict.AppliedTwice = profileQuickstart, 1
	if rep.Passed() {
		t.Error("a repeat not explained by a kill passed the quick-start profile")
	}
}
