package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// child is one named process of the campaign (consumer-2, relay-1...) over
// its generations: a kill -9 and restart starts a new generation under the
// same name.
type child struct {
	name  string
	role  string
	index int

	cmd      *exec.Cmd
	exited   chan struct{} // closed when the current generation exited
	expected bool          // the exit was asked for (kill, stop)
	// Over all generations:
	starts      int
	kills       int
	crashes     int   // exits nobody asked for
	peakRSS     int64 // bytes, the highest of any generation (getrusage ru_maxrss)
	lastExit    string
	cleanExited bool // the last generation exited with status 0
}

// procs starts and stops the campaign's child processes: this same binary
// re-executed with a role, so a kill -9 kills a real process with its own
// memory, connections and broker sessions.
type procs struct {
	exe    string
	dir    string
	log    *slog.Logger
	mu     sync.Mutex
	kids   map[string]*child
	killed []Kill // every kill -9, in order
}

// Kill is one kill -9: the process generation and when it died. The verdict
// needs it to tell the repeats a crash may cause from the ones it may not.
type Kill struct {
	Name string
	PID  int
	At   time.Time
}

func newProcs(exe, dir string, log *slog.Logger) *procs {
	return &procs{exe: exe, dir: dir, log: log, kids: map[string]*child{}}
}

// start starts (or restarts) the named child.
func (p *procs) start(name, role string, index int) error {
	p.mu.Lock()
	c := p.kids[name]
	if c == nil {
		c = &child{name: name, role: role, index: index}
		p.kids[name] = c
	}
	p.mu.Unlock()

	logf, err := os.OpenFile(filepath.Join(p.dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.exe)
	cmd.Env = append(os.Environ(),
		envRole+"="+role, envName+"="+name, envIndex+"="+strconv.Itoa(index), envDir+"="+p.dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A child dies with the campaign, never outlives it as an orphan.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	exited := make(chan struct{})
	p.mu.Lock()
	c.cmd, c.exited, c.expected = cmd, exited, false
	c.starts++
	gen := c.starts
	p.mu.Unlock()
	p.log.Info("process started", slog.String("name", name), slog.Int("pid", cmd.Process.Pid), slog.Int("generation", gen))
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		if st := cmd.ProcessState; st != nil {
			if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
				c.peakRSS = max(c.peakRSS, ru.Maxrss*1024) // Linux reports KiB
			}
			c.lastExit = st.String()
			c.cleanExited = st.Success()
		}
		// A writer ends on its own once its orders are written.
		if !c.expected && !(c.role == roleWriter && c.cleanExited) {
			c.crashes++
			p.log.Error("process exited unexpectedly", slog.String("name", name), slog.Any("error", err),
				slog.String("log", filepath.Join(p.dir, name+".log")))
		}
		close(exited)
	}()
	return nil
}

func (p *procs) get(name string) *child {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.kids[name]
}

// running reports whether the named child's current generation runs.
func (p *procs) running(name string) bool {
	c := p.get(name)
	if c == nil || c.exited == nil {
		return false
	}
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// exited returns a channel closed when the named child's current generation
// exits.
func (p *procs) exited(name string) <-chan struct{} {
	c := p.get(name)
	p.mu.Lock()
	defer p.mu.Unlock()
	return c.exited
}

// kill sends SIGKILL to the named child and waits until it is gone.
func (p *procs) kill(name string) (int, error) {
	return p.signal(name, syscall.SIGKILL, 30*time.Second, true)
}

// stop sends SIGTERM, waits up to timeout, then kills.
func (p *procs) stop(name string, timeout time.Duration) error {
	if _, err := p.signal(name, syscall.SIGTERM, timeout, false); err != nil {
		p.log.Warn("process did not stop in time, killing it", slog.String("name", name), slog.Duration("timeout", timeout))
		_, err := p.signal(name, syscall.SIGKILL, 30*time.Second, false)
		return err
	}
	return nil
}

func (p *procs) signal(name string, sig syscall.Signal, wait time.Duration, isKill bool) (int, error) {
	p.mu.Lock()
	c := p.kids[name]
	if c == nil || c.cmd == nil {
		p.mu.Unlock()
		return 0, fmt.Errorf("no process %s", name)
	}
	c.expected = true
	if isKill {
		c.kills++
	}
	proc, exited := c.cmd.Process, c.exited
	p.mu.Unlock()
	select {
	case <-exited:
		return proc.Pid, nil
	default:
	}
	if err := proc.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return proc.Pid, err
	}
	select {
	case <-exited:
		if sig == syscall.SIGKILL {
			p.mu.Lock()
			p.killed = append(p.killed, Kill{Name: name, PID: proc.Pid, At: time.Now()})
			p.mu.Unlock()
		}
		return proc.Pid, nil
	case <-time.After(wait):
		return proc.Pid, fmt.Errorf("%s (pid %d) still runs %s after %s", name, proc.Pid, wait, sig)
	}
}

// kills returns every kill -9 so far.
func (p *procs) kills() []Kill {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Kill(nil), p.killed...)
}

// stopAll stops every running child, consumers last so they can apply what
// the relays publish until the end.
func (p *procs) stopAll(timeout time.Duration) {
	for _, role := range []string{roleWriter, roleRelay, roleConsumer} {
		var wg sync.WaitGroup
		for _, c := range p.list() {
			if c.role == role && p.running(c.name) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := p.stop(c.name, timeout); err != nil {
						p.log.Error("stopping process", slog.String("name", c.name), slog.String("error", err.Error()))
					}
				}()
			}
		}
		wg.Wait()
	}
}

// ProcessStats is what the report shows of one named process.
type ProcessStats struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	Starts   int    `json:"starts"`
	Kills    int    `json:"kills"`
	Crashes  int    `json:"crashes"`
	PeakRSS  int64  `json:"peak_rss_bytes"`
	LastExit string `json:"last_exit"`
}

func (p *procs) list() []*child {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*child, 0, len(p.kids))
	for _, c := range p.kids {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func (p *procs) stats() []ProcessStats {
	var out []ProcessStats
	for _, c := range p.list() {
		p.mu.Lock()
		out = append(out, ProcessStats{Name: c.name, Role: c.role, Starts: c.starts, Kills: c.kills,
			Crashes: c.crashes, PeakRSS: c.peakRSS, LastExit: c.lastExit})
		p.mu.Unlock()
	}
	return out
}
