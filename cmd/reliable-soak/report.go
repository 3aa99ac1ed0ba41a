package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Memory budgets of the issue: a consumer draining a backlog stays under
// 256 MiB, a relay draining pending rows under 128 MiB.
const (
	consumerRSSBudget = 256 << 20
	relayRSSBudget    = 128 << 20
)

// Report is a run's outcome: the verdict read from the databases, the
// faults injected and the processes' peak memory.
type Report struct {
	Mode      string         `json:"mode"` // "campaign" or "backlog"
	Broker    string         `json:"broker"`
	Seed      uint64         `json:"seed"`
	Command   string         `json:"command"`
	Revision  string         `json:"revision"` // git HEAD of the code under test, "+dirty" with local changes
	RunID     string         `json:"run_id"`
	Dir       string         `json:"dir,omitempty"` // set when the run's schema and logs were kept
	Verdict   Verdict        `json:"verdict"`
	Faults    []FaultEvent   `json:"faults"`
	Processes []ProcessStats `json:"processes"`
	Duration  time.Duration  `json:"duration_ns"`
	// Throughput is orders applied (or dead) per second, from the first
	// order to the moment every order had settled.
	Throughput float64 `json:"throughput_per_s"`
	// Phases of the backlog mode: how long loading, the relay's drain and
	// the consumer's drain took.
	Phases []Phase `json:"phases,omitempty"`
	// Errors are failures of the run itself (a fault that could not be
	// injected, a crashed process, a stall).
	Errors []string `json:"errors,omitempty"`
}

// Phase is one timed step of the backlog mode.
type Phase struct {
	Name     string        `json:"name"`
	Duration time.Duration `json:"duration_ns"`
	Rate     float64       `json:"rate_per_s"`
}

// Passed reports whether the run kept every promise and stayed in budget.
func (r *Report) Passed() bool {
	return r.Verdict.OK() && len(r.Errors) == 0 && len(r.overBudget()) == 0
}

// overBudget lists processes over their memory budget. Only the backlog
// mode measures against the budgets: in a campaign the processes are not
// draining a 1M backlog.
func (r *Report) overBudget() []string {
	if r.Mode != "backlog" {
		return nil
	}
	var out []string
	for _, p := range r.Processes {
		budget := budgetOf(p.Role)
		if budget > 0 && p.PeakRSS > budget {
			out = append(out, fmt.Sprintf("%s peak RSS %s is over its %s budget", p.Name, mib(p.PeakRSS), mib(budget)))
		}
	}
	return out
}

func budgetOf(role string) int64 {
	switch role {
	case roleConsumer:
		return consumerRSSBudget
	case roleRelay:
		return relayRSSBudget
	}
	return 0
}

// repeatRule says which repeats fail the profile's verdict.
func repeatRule(profile string) string {
	switch profile {
	case profileZero:
		return "no dedupe store: repeats are counted, not failed"
	case profileQuickstart:
		return "Redis dedupe beside an upsert: only repeats after a kill -9 pass"
	}
	return "dedupe in the handler's transaction: every repeat fails"
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// faultCounts counts injected faults by kind, in schedule order; failed
// injections are counted apart.
func (r *Report) faultCounts() (kinds []string, ok, failed map[string]int) {
	ok, failed = map[string]int{}, map[string]int{}
	for _, f := range r.Faults {
		if _, seen := ok[f.Kind]; !seen {
			if _, seen := failed[f.Kind]; !seen {
				kinds = append(kinds, f.Kind)
			}
		}
		if f.Error != "" {
			failed[f.Kind]++
		} else {
			ok[f.Kind]++
		}
	}
	return kinds, ok, failed
}

// writeJSON writes r as indented JSON.
func (r *Report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// writeTable writes r as Markdown tables: the verdict, the faults, the
// processes.
func (r *Report) writeTable(w io.Writer) {
	v := r.Verdict
	status := "PASS"
	if !r.Passed() {
		status = "FAIL"
	}
	fmt.Fprintf(w, "\n## reliable-soak %s on %s, profile %s: %s\n\n", r.Mode, r.Broker, v.Profile, status)
	fmt.Fprintf(w, "command: `%s` (code at %s)\n\n", r.Command, r.Revision)
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "| %s\t| %v\t|\n", k, v) }
	fmt.Fprintln(tw, "| check\t| result\t|")
	fmt.Fprintln(tw, "|---\t|---\t|")
	row("messages produced (orders committed)", v.Orders)
	row("of which poison / oversize (expected dead)", fmt.Sprintf("%d / %d", v.Poison, v.Oversize))
	row("applied (effects / distinct messages)", fmt.Sprintf("%d / %d", v.Applied, v.AppliedUnique))
	row("lost", v.Lost)
	row("applied twice", v.AppliedTwice)
	row("repeats: all / first applied by a process killed -9 within "+killWindow.String(),
		fmt.Sprintf("%d / %d (%s)", v.Repeats, v.RepeatsAfterKill, repeatRule(v.Profile)))
	row("out of order", v.OutOfOrder)
	row("gaps in a key's sequence", v.Gaps)
	row("applied but never produced", v.Phantom)
	row("dead: retry table (poison / other)", fmt.Sprintf("%d / %d", v.DeadExpected, v.DeadUnexpected))
	row("dead: outbox (oversize / other)", fmt.Sprintf("%d / %d", v.OutboxDeadExpected, v.OutboxDead))
	row("stuck: outbox pending / retry pending", fmt.Sprintf("%d / %d", v.OutboxPending, v.RetryPending))
	row("transient handler failures injected", v.InjectedFailures)
	kinds, ok, failed := r.faultCounts()
	for _, k := range kinds {
		s := fmt.Sprint(ok[k])
		if failed[k] > 0 {
			s += fmt.Sprintf(" (+%d failed to inject)", failed[k])
		}
		row("fault: "+k, s)
	}
	row("duration", r.Duration.Round(time.Second))
	row("throughput (settled orders/s)", fmt.Sprintf("%.0f", r.Throughput))
	for _, ph := range r.Phases {
		row("phase: "+ph.Name, fmt.Sprintf("%s (%.0f/s)", ph.Duration.Round(time.Second), ph.Rate))
	}
	procs := append([]ProcessStats(nil), r.Processes...)
	sort.SliceStable(procs, func(i, j int) bool { return procs[i].Name < procs[j].Name })
	for _, p := range procs {
		extra := fmt.Sprintf("%d starts, %d kill -9", p.Starts, p.Kills)
		if p.Crashes > 0 {
			extra += fmt.Sprintf(", %d CRASHES", p.Crashes)
		}
		if b := budgetOf(p.Role); b > 0 && r.Mode == "backlog" {
			extra += ", budget " + mib(b)
		}
		row("peak RSS "+p.Name, fmt.Sprintf("%s (%s)", mib(p.PeakRSS), extra))
	}
	tw.Flush()

	if len(r.Faults) > 0 {
		fmt.Fprintf(w, "\n### faults\n\n")
		start := r.Faults[0].Start
		for _, f := range r.Faults {
			line := fmt.Sprintf("- %s %s (+%s, lasted %s; %d orders written, %d unsettled): %s",
				f.Start.Format("15:04:05.000"), f.Kind, f.Start.Sub(start).Round(100*time.Millisecond),
				f.End.Sub(f.Start).Round(100*time.Millisecond), f.Written, f.Unsettled, f.Detail)
			if f.Error != "" {
				line += " — FAILED: " + f.Error
			}
			fmt.Fprintln(w, line)
		}
	}
	problems := append(v.Problems(), r.Errors...)
	problems = append(problems, r.overBudget()...)
	if len(problems) > 0 {
		fmt.Fprintf(w, "\n### problems\n\n- %s\n", strings.Join(problems, "\n- "))
	} else if len(v.Samples) > 0 {
		fmt.Fprintf(w, "\n### repeats (not failed: %s)\n\n", repeatRule(v.Profile))
	}
	for _, s := range v.Samples {
		fmt.Fprintf(w, "  - %s\n", s)
	}
	if r.Dir != "" {
		fmt.Fprintf(w, "\nkept: schema soak_%s, run directory (config, child logs) %s\n", r.RunID, r.Dir)
	}
}
