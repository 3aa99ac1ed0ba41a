// Package service runs the reliable components of one service (consumers,
// outbox relays, retriers) together: it starts them, reports their
// readiness over HTTP, and on shutdown stops them all at once and waits for
// them within one grace period, the way Kubernetes expects (SIGTERM, then
// SIGKILL after terminationGracePeriodSeconds, 30 s by default).
//
// Every component keeps its own guarantees on the way out: a consumer
// finishes its in-flight messages and commits, a relay marks what was
// confirmed. The group only makes sure they stop together and that the
// whole shutdown fits the grace period, and it says which component did not.
//
//	g := service.New(service.Config{})
//	g.Add("kitchen consumer", consumer)
//	g.Add("outbox relay", relay)
//	http.Handle("/", g.Handler()) // GET /readyz, /livez
//	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
//	defer stop()
//	return g.Run(ctx)
package service
