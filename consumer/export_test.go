package consumer

import "time"

// SetStepHook makes the consumer report how long each store step took
// ("begin", "check", "done"), for the benchmarks; nil stops it.
func SetStepHook(f func(step string, d time.Duration)) {
	if f == nil {
		stepHook.Store(nil)
		return
	}
	stepHook.Store(&f)
}
