package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/metrics"
	"runtime/pprof"
	"time"
)

// envProfile, when set in the parent's environment, makes every child keep a
// heap profile taken at its peak heap: <run dir>/<name>.heap.pprof (read it
// with go tool pprof -sample_index=inuse_space). It is how a process over
// its memory budget is diagnosed.
const envProfile = "RELIABLE_SOAK_PROFILE"

// profilePeakHeap samples the heap every interval and rewrites the profile
// whenever the heap in use grew by a tenth over the last profiled peak.
func profilePeakHeap(ctx context.Context, dir, name string, log *slog.Logger) {
	path := filepath.Join(dir, name+".heap.pprof")
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var peak uint64
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return
		}
		if v := sample[0].Value.Uint64(); v > peak+peak/10 {
			peak = v
			f, err := os.Create(path)
			if err != nil {
				log.Warn("heap profile", slog.String("error", err.Error()))
				return
			}
			_ = pprof.Lookup("heap").WriteTo(f, 0)
			_ = f.Close()
			log.Info("heap profile at a new peak", slog.Uint64("heap_objects_bytes", v), slog.String("file", path))
		}
	}
}
