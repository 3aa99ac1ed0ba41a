package main

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// scope lets the command use internal/testenv, whose service controls take a
// testing.TB: it logs what testenv logs, turns Fatal and Skip into an error,
// and runs the registered cleanups when the scope ends. Above all it keeps
// testenv's cross-process locks: a broker fault runs in its own scope, so the
// exclusive lock on the cluster is held exactly while the fault lasts and
// the broker is back (testenv's cleanup restores it) before it is released;
// a fault never hits another package's running test, and other tests run
// between faults.
//
// testing.TB has an unexported method, so scope embeds a nil TB: testenv uses
// only the methods defined here; any other would panic.
type scope struct {
	testing.TB
	name string
	log  *slog.Logger

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	errs     []string
}

// scopeAbort unwinds a scope on Fatal or Skip.
type scopeAbort struct{ msg string }

func newScope(name string, log *slog.Logger) *scope { return &scope{name: name, log: log} }

// inScope runs fn with a fresh scope and returns its failure, if any, after
// running the scope's cleanups (last registered first).
func inScope(name string, log *slog.Logger, fn func(tb testing.TB) error) error {
	s := newScope(name, log)
	err := s.do(fn)
	if ferr := s.finish(); err == nil {
		err = ferr
	}
	return err
}

// do runs fn in the scope, turning Fatal and Skip into an error; the
// cleanups wait for finish.
func (s *scope) do(fn func(tb testing.TB) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			a, ok := r.(scopeAbort)
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("%s: %s", s.name, a.msg)
		}
	}()
	return fn(s)
}

// finish runs the cleanups, last registered first, and returns the errors
// the scope recorded.
func (s *scope) finish() error {
	s.mu.Lock()
	cs := s.cleanups
	s.cleanups = nil
	s.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		func() {
			defer func() {
				if r := recover(); r != nil {
					if _, ok := r.(scopeAbort); !ok {
						panic(r)
					}
				}
			}()
			cs[i]()
		}()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed {
		return fmt.Errorf("%s: %s", s.name, strings.Join(s.errs, "; "))
	}
	return nil
}

func (s *scope) Helper()      {}
func (s *scope) Name() string { return s.name }
func (s *scope) Cleanup(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cleanups = append(s.cleanups, f)
}

func (s *scope) Logf(format string, args ...any) {
	s.log.Info(fmt.Sprintf(format, args...), slog.String("scope", s.name))
}

func (s *scope) Log(args ...any) { s.log.Info(fmt.Sprint(args...), slog.String("scope", s.name)) }

func (s *scope) Errorf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.log.Error(msg, slog.String("scope", s.name))
	s.mu.Lock()
	s.failed = true
	s.errs = append(s.errs, msg)
	s.mu.Unlock()
}

func (s *scope) Error(args ...any) { s.Errorf("%s", fmt.Sprint(args...)) }

func (s *scope) Fatalf(format string, args ...any) {
	s.Errorf(format, args...)
	panic(scopeAbort{fmt.Sprintf(format, args...)})
}

func (s *scope) Fatal(args ...any) { s.Fatalf("%s", fmt.Sprint(args...)) }

func (s *scope) Skip(args ...any) { panic(scopeAbort{"unavailable: " + fmt.Sprint(args...)}) }

func (s *scope) Skipf(format string, args ...any) {
	panic(scopeAbort{"unavailable: " + fmt.Sprintf(format, args...)})
}

func (s *scope) SkipNow() { panic(scopeAbort{"unavailable"}) }
func (s *scope) FailNow() { panic(scopeAbort{"failed"}) }
func (s *scope) Fail() {
	s.mu.Lock()
	s.failed = true
	s.mu.Unlock()
}
func (s *scope) Failed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}
func (s *scope) Skipped() bool { return false }
