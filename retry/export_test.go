package retry

import "context"

// SimulateCrash makes r stop like a killed process: when its Run context
// ends it keeps its leases instead of releasing them, so other retriers must
// wait for them to expire.
func SimulateCrash(r *Retrier) { r.releaseOnStop = false }

// Claim leases up to n due keys for owner, as Run does.
func Claim(ctx context.Context, r *Retrier, n int, owner string) ([]string, error) {
	return r.claim(ctx, n, owner)
}

// StatsSQL is the statement Stats runs, for tests that EXPLAIN it.
func StatsSQL(t *Table) string { return t.statsSQL() }
