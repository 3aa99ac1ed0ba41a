package testenv

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// Cross-process locks on the shared local services.
//
// `go test ./...` runs the test binaries of several packages at the same time, all
// against the same Kafka cluster and RabbitMQ server. A fault test that kills a
// broker or restarts RabbitMQ must not do so under another package's test. So every
// test that uses a service holds a shared lock on it (taken by Kafka(t), AMQPURL(t),
// ...) and a fault test holds an exclusive one (KafkaCluster(t), RabbitMQ(t)), each
// until the test ends. The locks are flock(2) locks on files in
// $TMPDIR/reliable-testenv, with a turnstile file that gives waiting exclusive
// requests priority over new shared ones, so a fault test is not starved by a stream
// of ordinary tests.
//
// Inside one process the lock is held by the process as a whole: tests of the same
// package run one after another unless they call t.Parallel, and a subtest of a fault
// test may use the service it holds exclusively.
//
// Child processes (a test that runs its own binary as a consumer to kill -9 it, say)
// are covered by their parent's lock: while a process holds a lock, the environment
// variable RELIABLE_TESTENV_HELD_<SERVICE> says so, children inherit it, and a child
// takes no lock the parent already holds. Otherwise a child asking for a shared lock
// behind a waiting fault test would wait for the fault test, which waits for the
// parent, which waits for the child.

type lockMode int

const (
	lockNone lockMode = iota
	lockShared
	lockExclusive
)

func (m lockMode) String() string {
	switch m {
	case lockShared:
		return "shared"
	case lockExclusive:
		return "exclusive"
	}
	return "none"
}

type serviceLock struct {
	name      string
	mu        sync.Mutex
	shared    int // in-process holders
	exclusive int
	held      lockMode // what this process holds on the file
	main      *os.File
	turn      *os.File
}

var (
	locksMu sync.Mutex
	locks   = map[string]*serviceLock{}
)

func lockTimeout(t testing.TB) time.Duration {
	d := 15 * time.Minute
	if v := os.Getenv("RELIABLE_LOCK_TIMEOUT"); v != "" {
		if p, err := time.ParseDuration(v); err == nil {
			d = p
		}
	}
	if dt, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if deadline, ok := dt.Deadline(); ok {
			if left := time.Until(deadline) - 30*time.Second; left < d {
				d = max(left, time.Second)
			}
		}
	}
	return d
}

// lockService holds service in mode until t ends.
func lockService(t testing.TB, service string, mode lockMode) {
	t.Helper()
	locksMu.Lock()
	l := locks[service]
	if l == nil {
		l = &serviceLock{name: service}
		locks[service] = l
	}
	locksMu.Unlock()

	if inheritedLock(service) >= mode {
		return // a parent process holds it for us
	}

	l.mu.Lock()
	if l.held < mode {
		if err := l.raise(t, mode, lockTimeout(t)); err != nil {
			l.mu.Unlock()
			t.Fatalf("testenv: %v", err)
		}
	}
	if mode == lockExclusive {
		l.exclusive++
	} else {
		l.shared++
	}
	l.mu.Unlock()
	t.Cleanup(func() { l.release(mode) })
}

func (l *serviceLock) raise(t testing.TB, mode lockMode, timeout time.Duration) error {
	if l.main == nil {
		dir := lockDir()
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return fmt.Errorf("lock dir: %w", err)
		}
		var err error
		if l.main, err = openLockFile(dir, l.name+".lock"); err != nil {
			return err
		}
		if l.turn, err = openLockFile(dir, l.name+".turnstile"); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(timeout)
	waited := false
	logWait := func() {
		if !waited {
			waited = true
			t.Logf("testenv: waiting for %s use of %s (another package's test holds it)", mode, l.name)
		}
	}
	if l.held == lockShared { // upgrade: drop the shared lock, queue like everybody else
		if err := flock(l.main, lockNone, false); err != nil {
			return err
		}
		l.held = lockNone
	}
	if err := flockWait(l.turn, mode, deadline, logWait); err != nil {
		return fmt.Errorf("%s lock on %s: %w", mode, l.name, err)
	}
	err := flockWait(l.main, mode, deadline, logWait)
	_ = flock(l.turn, lockNone, false)
	if err != nil {
		return fmt.Errorf("%s lock on %s: %w", mode, l.name, err)
	}
	l.held = mode
	setHeldEnv(l.name, mode)
	if waited {
		t.Logf("testenv: got %s use of %s", mode, l.name)
	}
	return nil
}

func (l *serviceLock) release(mode lockMode) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if mode == lockExclusive {
		l.exclusive--
	} else {
		l.shared--
	}
	switch {
	case l.exclusive > 0:
	case l.shared > 0:
		if l.held == lockExclusive {
			_ = flock(l.main, lockShared, true) // downgrade
			l.held = lockShared
			setHeldEnv(l.name, lockShared)
		}
	default:
		_ = flock(l.main, lockNone, false)
		l.held = lockNone
		setHeldEnv(l.name, lockNone)
	}
}

func heldEnvName(service string) string {
	return "RELIABLE_TESTENV_HELD_" + strings.ToUpper(strings.ReplaceAll(service, "-", "_"))
}

var inheritedOnce sync.Map // service -> lockMode held by the parent at process start

// inheritedLock returns the lock mode a parent process held on service when this
// process started.
func inheritedLock(service string) lockMode {
	if m, ok := inheritedOnce.Load(service); ok {
		return m.(lockMode)
	}
	m := lockNone
	switch os.Getenv(heldEnvName(service)) {
	case "shared":
		m = lockShared
	case "exclusive":
		m = lockExclusive
	}
	// Only what the environment said before this process took locks of its own.
	actual, _ := inheritedOnce.LoadOrStore(service, m)
	return actual.(lockMode)
}

// setHeldEnv advertises the lock this process holds to the children it starts.
func setHeldEnv(service string, mode lockMode) {
	if inheritedLock(service) != lockNone {
		return // keep the parent's value for our own children
	}
	if mode == lockNone {
		_ = os.Unsetenv(heldEnvName(service))
		return
	}
	_ = os.Setenv(heldEnvName(service), mode.String())
}

func flockWait(f *os.File, mode lockMode, deadline time.Time, onWait func()) error {
	start := time.Now()
	for {
		err := flock(f, mode, false)
		if err == nil {
			return nil
		}
		if err != errWouldBlock {
			return err
		}
		if time.Since(start) > time.Second {
			onWait()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v (set RELIABLE_LOCK_TIMEOUT to wait longer)",
				time.Since(start).Round(time.Second))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
