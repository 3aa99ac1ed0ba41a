package retry

// SimulateCrash makes r stop like a killed process: when its Run context
// ends it keeps its leases instead of releasing them, so other retriers must
// wait for them to expire.
func SimulateCrash(r *Retrier) { r.releaseOnStop = false }
