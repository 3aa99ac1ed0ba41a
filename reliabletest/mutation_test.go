package reliabletest_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/reliabletest"
)

// envMutant names, in the child process of TestMutationCheck, the defect to
// plant in the broker.
const envMutant = "RELIABLETEST_MUTANT"

// runBrokerConformance runs the conformance suite on a broker with the named
// defect ("" for none).
func runBrokerConformance(t *testing.T, mutant string, timeout time.Duration) {
	b := reliabletest.NewMutantBroker(reliabletest.BrokerOptions{}, mutant)
	reliabletest.RunConformance(t, reliabletest.Setup{
		Features: reliabletest.Features{
			OrderPerKey:                  true,
			CompetingConsumers:           true,
			NackRedelivers:               true,
			OrderAfterNack:               true,
			RedeliveredAcrossSubscribers: true,
			UnknownTopicFails:            true,
			RestartBroker:                b.Restart,
			Reconnect: func(context.Context) error {
				b.DropConnections()
				return nil
			},
		},
		NewPublisher: func(*testing.T) reliable.Publisher { return b.Publisher() },
		NewSubscriber: func(_ *testing.T, group string) reliable.Subscriber {
			return b.Subscriber(group, reliabletest.SubscriberOptions{})
		},
		CreateTopic: func(_ *testing.T, topic string, _ ...string) { b.CreateTopic(topic) },
		Crash:       func(s reliable.Subscriber) { s.(*reliabletest.Subscriber).Crash() },
		Timeout:     timeout,
	})
}

// TestMutationCheck proves that the conformance suite can fail: it runs the
// suite against in-memory brokers each broken on purpose in one way (see
// reliabletest.Mutants) and fails unless every mutant is caught by at least
// one case, and unless the unbroken broker passes. Each run is a child
// process (this test binary again), so that a broken broker's failures and
// leaked goroutines stay there. With -v it prints the table of mutants and
// the cases that caught them.
func TestMutationCheck(t *testing.T) {
	if name, ok := os.LookupEnv(envMutant); ok {
		runBrokerConformance(t, name, 2*time.Second)
		return
	}
	if testing.Short() {
		t.Skip("runs the conformance suite 17 times in child processes; skipped with -short")
	}
	names := []string{""}
	breaks := map[string]string{"": "nothing (control: must pass)"}
	for _, m := range reliabletest.Mutants {
		names = append(names, m.Name)
		breaks[m.Name] = m.Breaks
	}
	type result struct {
		caught []string
		out    string
		err    error
	}
	results := make(map[string]result, len(names))
	var mu sync.Mutex
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	failLine := regexp.MustCompile(`--- FAIL: TestMutationCheck/(\S+)`)
	for _, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestMutationCheck$", "-test.v", "-test.count=1", "-test.timeout=150s")
			cmd.Env = append(os.Environ(), envMutant+"="+name)
			out, err := cmd.CombinedOutput()
			var caught []string
			for _, m := range failLine.FindAllStringSubmatch(string(out), -1) {
				caught = append(caught, m[1])
			}
			mu.Lock()
			results[name] = result{caught: caught, out: string(out), err: err}
			mu.Unlock()
		}()
	}
	wg.Wait()

	var table strings.Builder
	fmt.Fprintf(&table, "%-22s %-55s %s\n", "MUTANT", "BREAKS", "CAUGHT BY")
	sort.Strings(names[1:])
	for _, name := range names {
		r := results[name]
		label := name
		if label == "" {
			label = "(none)"
		}
		by := strings.Join(r.caught, ", ")
		if by == "" {
			by = "-"
		}
		fmt.Fprintf(&table, "%-22s %-55s %s\n", label, breaks[name], by)
	}
	t.Logf("mutation check of the conformance suite:\n%s", table.String())
	for _, name := range names {
		r := results[name]
		switch {
		case name == "" && (r.err != nil || len(r.caught) > 0):
			t.Errorf("the unbroken broker fails the conformance suite (%v):\n%s", r.err, r.out)
		case name != "" && len(r.caught) == 0:
			t.Errorf("mutant %s (%s) passes the conformance suite: no case catches it (%v)\n%s", name, breaks[name], r.err, tail(r.out, 3000))
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
