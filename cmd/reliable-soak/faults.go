package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable/internal/testenv"
)

// How long the windowed faults last.
const (
	failureWindow = 10 * time.Second
	slowWindow    = 10 * time.Second
	brokerDown    = 8 * time.Second // a killed broker stays down this long
	cutRefusal    = 3 * time.Second // a connection cut refuses reconnects this long
	outageWindow  = 4 * time.Second // every handler call fails this long (issue 13's measured case)
)

// FaultEvent is one injected fault, as logged and reported.
type FaultEvent struct {
	Kind   string    `json:"kind"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Detail string    `json:"detail"`
	Error  string    `json:"error,omitempty"`
	// Traffic when the fault struck: orders written so far, and of those
	// not yet applied (or dead), so the report shows it hit live work.
	Written   int64 `json:"written"`
	Unsettled int64 `json:"unsettled"`
}

// initialControl is the control file a run starts with.
func initialControl(cfg *Config) Control {
	return Control{FailRate: cfg.FailRate, Quota: cfg.steadyQuota(0)}
}

// injector injects faults into a running campaign.
type injector struct {
	cfg     *Config
	procs   *procs
	proxies []*proxy
	log     *slog.Logger
	rng     *rand.Rand
	start   time.Time

	traffic func(context.Context) (progress, error)

	mu      sync.Mutex
	control Control
	events  []FaultEvent
}

func newInjector(cfg *Config, p *procs, proxies []*proxy, log *slog.Logger, start time.Time,
	traffic func(context.Context) (progress, error)) *injector {
	return &injector{cfg: cfg, procs: p, proxies: proxies, log: log, start: start, traffic: traffic,
		rng: rand.New(rand.NewPCG(cfg.Seed, 0xfa17)), control: initialControl(cfg)}
}

// lockPaused calls lock (which takes a testenv lock and may wait for other
// packages' tests) with the writer paused, so the orders still flow when the
// fault strikes.
func (in *injector) lockPaused(lock func()) {
	_ = in.update(func(c *Control) { c.Paused = true })
	defer func() { _ = in.update(func(c *Control) { c.Paused = false }) }()
	lock()
}

// snapshot records the traffic at the moment a fault strikes.
func (in *injector) snapshot(ctx context.Context, ev *FaultEvent) {
	if in.traffic == nil {
		return
	}
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if p, err := in.traffic(tctx); err == nil {
		ev.Written, ev.Unsettled = p.orders, max(0, p.orders-p.appliedUnique-p.dead)
	}
}

// schedule injects the configured faults one after another, FaultGap apart,
// cycling through them until writing is done and each ran at least once.
func (in *injector) schedule(ctx context.Context, writingDone <-chan struct{}) {
	if len(in.cfg.Faults) == 0 {
		return
	}
	for i := 0; ctx.Err() == nil; i++ {
		if i >= len(in.cfg.Faults) {
			select {
			case <-writingDone:
				return
			default:
			}
		}
		kind := in.cfg.Faults[i%len(in.cfg.Faults)]
		if in.cfg.Profile != profileTuned && windowed(kind) {
			// A window that meets an idle pipeline tests nothing: the quick-
			// start and zero profiles release the next share as the window
			// opens, so orders arrive (and keys queue up) while it lasts.
			if err := in.update(func(c *Control) { c.Quota = in.cfg.steadyQuota(i + 1) }); err != nil {
				in.log.Error("writing the control file", slog.String("error", err.Error()))
			}
		}
		in.inject(ctx, kind)
		// Release the next share of orders now, so they are in flight when
		// the next fault strikes after the gap.
		if err := in.update(func(c *Control) { c.Quota = in.cfg.steadyQuota(i + 1) }); err != nil {
			in.log.Error("writing the control file", slog.String("error", err.Error()))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(in.cfg.FaultGap):
		}
	}
}

// windowed reports whether kind is a window of handler behaviour (failures,
// outage, latency) rather than an event.
func windowed(kind string) bool {
	return kind == faultHandlerFailure || kind == faultOutage || kind == faultSlowDownstream
}

// inject runs one fault to its end and records it.
func (in *injector) inject(ctx context.Context, kind string) {
	ev := FaultEvent{Kind: kind, Start: time.Now()}
	in.log.Info("fault begins", slog.String("fault", kind), slog.String("t", in.since(ev.Start)))
	if kind != faultBrokerKill && kind != faultRabbitRestart {
		in.snapshot(ctx, &ev) // those two snapshot once they hold the lock
	}
	var detail string
	var err error
	switch kind {
	case faultConsumerKill:
		detail, err = in.killAndRestart(ctx, in.pick(roleConsumer))
	case faultRelayKill:
		detail, err = in.killAndRestart(ctx, in.pick(roleRelay))
	case faultScaleUp:
		detail, err = in.scaleUp()
	case faultScaleDown:
		detail, err = in.scaleDown()
	case faultRollingRestart:
		detail, err = in.rollingRestart(ctx)
	case faultBrokerKill:
		detail, err = in.killLeader(ctx, &ev)
	case faultRabbitRestart:
		detail, err = in.restartRabbitMQ(ctx, &ev)
	case faultConnCut:
		detail, err = in.cut()
	case faultHandlerFailure:
		detail, err = in.window(ctx, failureWindow, func(c *Control) { c.FailRate = in.cfg.FaultFailRate },
			func(c *Control) { c.FailRate = in.cfg.FailRate })
		detail = fmt.Sprintf("fail rate %.0f%% of first and second attempts for %s%s",
			in.cfg.FaultFailRate*100, failureWindow, detail)
	case faultOutage:
		detail, err = in.window(ctx, outageWindow, func(c *Control) { c.Outage = true },
			func(c *Control) { c.Outage = false })
		detail = fmt.Sprintf("every handler call fails retryably for %s%s", outageWindow, detail)
	case faultSlowDownstream:
		detail, err = in.window(ctx, slowWindow, func(c *Control) { c.Latency = in.cfg.Latency },
			func(c *Control) { c.Latency = 0 })
		detail = fmt.Sprintf("handler latency %s ±50%% for %s%s", in.cfg.Latency, slowWindow, detail)
	case faultBurst:
		err = in.update(func(c *Control) { c.Bursts++ })
		detail = fmt.Sprintf("a batch job writes %d orders at once, %d per transaction", in.cfg.Burst, burstTx)
	default:
		err = fmt.Errorf("unknown fault %q", kind)
	}
	ev.End, ev.Detail = time.Now(), detail
	if err != nil {
		ev.Error = err.Error()
		in.log.Error("fault failed", slog.String("fault", kind), slog.String("error", err.Error()))
	}
	in.log.Info("fault ends", slog.String("fault", kind), slog.String("t", in.since(ev.End)),
		slog.Duration("took", ev.End.Sub(ev.Start).Round(time.Millisecond)), slog.String("detail", detail))
	in.mu.Lock()
	in.events = append(in.events, ev)
	in.mu.Unlock()
}

func (in *injector) since(t time.Time) string {
	return "+" + t.Sub(in.start).Round(100*time.Millisecond).String()
}

// pick chooses a running process of role at random (by the seed); an
// instance scaled down stays down.
func (in *injector) pick(role string) string {
	names := in.running(role)
	if len(names) == 0 {
		return ""
	}
	return names[in.rng.IntN(len(names))]
}

// running lists the running processes of role, by name.
func (in *injector) running(role string) []string {
	var names []string
	for _, c := range in.procs.list() {
		if c.role == role && in.procs.running(c.name) {
			names = append(names, c.name)
		}
	}
	return names
}

// gracefulStop bounds a consumer's clean stop: its ShutdownTimeout (30 s by
// default) plus the final commit.
const gracefulStop = 45 * time.Second

// restartPause is how long a rolling restart waits after starting an
// instance before stopping the next one, like a rollout's minimum ready
// time; the instance joins its group meanwhile.
const restartPause = 3 * time.Second

// scaleUp starts one more consumer instance under the next free name.
func (in *injector) scaleUp() (string, error) {
	n := 0
	for _, c := range in.procs.list() {
		if c.role == roleConsumer {
			n = max(n, c.index)
		}
	}
	name := "consumer-" + strconv.Itoa(n+1)
	if err := in.procs.start(name, roleConsumer, n+1); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s joins: %d consumer instances run", name, len(in.running(roleConsumer))), nil
}

// scaleDown stops one running consumer instance cleanly (SIGTERM: it
// finishes or hands back its work and leaves its group) and leaves it down.
func (in *injector) scaleDown() (string, error) {
	if len(in.running(roleConsumer)) < 2 {
		return "", fmt.Errorf("scale-down: fewer than two consumer instances run")
	}
	name := in.pick(roleConsumer)
	start := time.Now()
	if err := in.procs.stop(name, gracefulStop); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s left cleanly in %s: %d consumer instances run", name,
		time.Since(start).Round(100*time.Millisecond), len(in.running(roleConsumer))), nil
}

// rollingRestart stops each running consumer instance in turn cleanly and
// starts it again, restartPause apart, as a deployment rollout does.
func (in *injector) rollingRestart(ctx context.Context) (string, error) {
	var parts []string
	for _, name := range in.running(roleConsumer) {
		c := in.procs.get(name)
		start := time.Now()
		if err := in.procs.stop(name, gracefulStop); err != nil {
			return strings.Join(parts, ", "), err
		}
		stopped := time.Since(start)
		if err := in.procs.start(name, c.role, c.index); err != nil {
			return strings.Join(parts, ", "), err
		}
		parts = append(parts, fmt.Sprintf("%s (stopped in %s)", name, stopped.Round(100*time.Millisecond)))
		select {
		case <-ctx.Done():
			return strings.Join(parts, ", "), ctx.Err()
		case <-time.After(restartPause):
		}
	}
	return "restarted in turn: " + strings.Join(parts, ", "), nil
}

// killAndRestart kills -9 the named process and starts it again after a
// short pause, under the same name (a relay keeps its ID, so it takes its
// leases back at once).
func (in *injector) killAndRestart(ctx context.Context, name string) (string, error) {
	c := in.procs.get(name)
	if c == nil {
		return "", fmt.Errorf("no process to kill")
	}
	pid, err := in.procs.kill(name)
	if err != nil {
		return "", err
	}
	pause := time.Duration(500+in.rng.IntN(2000)) * time.Millisecond
	select {
	case <-ctx.Done():
	case <-time.After(pause):
	}
	if err := in.procs.start(name, c.role, c.index); err != nil {
		return "", err
	}
	return fmt.Sprintf("kill -9 %s (pid %d), restarted after %s as pid %d", name, pid,
		pause.Round(time.Millisecond), in.procs.get(name).cmd.Process.Pid), nil
}

// killLeader kills -9 the broker leading a random partition of the topic,
// keeps it down for brokerDown, starts it again and waits until the cluster
// is whole. It holds testenv's exclusive Kafka lock throughout.
func (in *injector) killLeader(ctx context.Context, ev *FaultEvent) (string, error) {
	var detail string
	err := inScope("broker-kill", in.log, func(tb testing.TB) error {
		var cluster *testenv.Cluster
		// Exclusive lock; the scope's end restores killed brokers.
		in.lockPaused(func() { cluster = testenv.KafkaCluster(tb) })
		ev.Start = time.Now()
		in.snapshot(ctx, ev)
		topic := in.cfg.Environment + "." + in.cfg.Topic
		partition := int32(in.rng.IntN(in.cfg.Partitions))
		lctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		leader, err := cluster.Leader(lctx, topic, partition)
		if err != nil {
			return err
		}
		if err := cluster.KillBroker(lctx, leader); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
		case <-time.After(brokerDown):
		}
		sctx, cancel2 := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel2()
		back := time.Now()
		// services.sh waits 90s for the port; a broker recovering its logs
		// after kill -9 on a loaded machine may need longer. It is still
		// starting then: what counts is that it rejoins.
		startErr := cluster.StartBroker(sctx, leader)
		if err := cluster.WaitHealthy(sctx, topic); err != nil {
			return errors.Join(startErr, err)
		}
		detail = fmt.Sprintf("kill -9 broker %d (leader of %s/%d), down %s, in sync again %s after restart",
			leader, topic, partition, brokerDown, time.Since(back).Round(100*time.Millisecond))
		if startErr != nil {
			first, _, _ := strings.Cut(startErr.Error(), "\n")
			detail += " (slow start: " + first + ")"
		}
		return nil
	})
	return detail, err
}

// restartRabbitMQ restarts the RabbitMQ server, holding testenv's exclusive
// RabbitMQ lock.
func (in *injector) restartRabbitMQ(ctx context.Context, ev *FaultEvent) (string, error) {
	var detail string
	err := inScope("rabbitmq-restart", in.log, func(tb testing.TB) error {
		var srv *testenv.RabbitMQServer
		in.lockPaused(func() { srv = testenv.RabbitMQ(tb) }) // exclusive lock
		ev.Start = time.Now()
		in.snapshot(ctx, ev)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
		defer cancel()
		start := time.Now()
		if err := srv.Restart(rctx); err != nil {
			return err
		}
		detail = fmt.Sprintf("server restarted (every connection dropped), answering again after %s",
			time.Since(start).Round(100*time.Millisecond))
		return nil
	})
	return detail, err
}

// cut resets every proxied connection (PostgreSQL; RabbitMQ) and refuses
// new ones for cutRefusal; on Kafka the consumers and relays reset their
// broker connections themselves (cutDialer), at the same moment.
func (in *injector) cut() (string, error) {
	var err error
	if in.cfg.Broker == brokerKafka {
		err = in.update(func(c *Control) { c.BrokerCuts++ })
	}
	var parts []string
	for _, p := range in.proxies {
		n := p.Cut(cutRefusal)
		parts = append(parts, p.name+": "+strconv.Itoa(n))
	}
	detail := fmt.Sprintf("reset the children's connections through the proxy (%s)", strings.Join(parts, ", "))
	if in.cfg.Broker == brokerKafka {
		detail += " and every Kafka connection of the consumers and relays (their logs count them)"
	}
	return detail + fmt.Sprintf(", refused reconnects for %s", cutRefusal), err
}

// window applies on to the control file, waits d, and applies off.
func (in *injector) window(ctx context.Context, d time.Duration, on, off func(*Control)) (string, error) {
	if err := in.update(on); err != nil {
		return "", err
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
	return "", in.update(off)
}

func (in *injector) update(f func(*Control)) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	f(&in.control)
	return writeControl(in.cfg.Dir, in.control)
}

func (in *injector) eventList() []FaultEvent {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]FaultEvent(nil), in.events...)
}
