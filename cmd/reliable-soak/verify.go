package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Verdict is what the databases say at the end of a run. Every count is read
// from the tables (soak_orders, soak_results, the retry table, the outbox),
// never from the processes' counters.
type Verdict struct {
	Orders   int64 `json:"orders"`   // committed business rows: messages produced
	Poison   int64 `json:"poison"`   // of which poison, expected to end dead in the retry table
	Oversize int64 `json:"oversize"` // of which too large to publish, expected to end dead in the outbox

	Applied       int64 `json:"applied"`        // effects (rows in soak_results)
	AppliedUnique int64 `json:"applied_unique"` // distinct messages applied

	Lost int64 `json:"lost"` // ordinary orders never applied and not dead
	// AppliedTwice counts the repeats that break the promise: every repeat
	// in the tuned profile (its dedupe record commits with the effect), the
	// repeats not explained by a kill -9 in the quick-start profile, none in
	// the zero profile (no dedupe store: repeats are expected and counted).
	AppliedTwice int64 `json:"applied_twice"`
	// Repeats counts every message applied more than once; RepeatsAfterKill
	// those whose first application was by a process killed with -9 at most
	// killWindow later, before its dedupe store recorded it done (the
	// Begin/Done window of a store outside the handler's transaction, which
	// the README's upsert absorbs).
	Repeats          int64  `json:"repeats"`
	RepeatsAfterKill int64  `json:"repeats_after_kill"`
	Profile          string `json:"profile"`

	OutOfOrder    int64 `json:"out_of_order"`   // first applies whose seq is below an earlier one's of the key
	Gaps          int64 `json:"gaps"`           // first applies whose seq is not the previous one's + 1
	Phantom       int64 `json:"phantom"`        // applies of messages never produced
	PoisonApplied int64 `json:"poison_applied"` // poison or oversize messages that took effect

	DeadExpected       int64 `json:"dead_expected"`        // poison messages dead in the retry table
	DeadUnexpected     int64 `json:"dead_unexpected"`      // other dead retry entries
	RetryPending       int64 `json:"retry_pending"`        // retry entries still waiting
	OutboxPending      int64 `json:"outbox_pending"`       // outbox rows never published
	OutboxDeadExpected int64 `json:"outbox_dead_expected"` // oversize messages dead in the outbox
	OutboxDead         int64 `json:"outbox_dead"`          // other outbox rows the relay gave up on

	InjectedFailures int64 `json:"injected_failures"` // transient handler failures injected

	Samples []string `json:"samples,omitempty"` // a few offending message IDs per problem
}

// OK reports whether the run kept every promise: nothing lost, nothing
// applied twice, every key in order, nothing stuck but the poison.
func (v Verdict) OK() bool {
	return v.Lost == 0 && v.AppliedTwice == 0 && v.OutOfOrder == 0 && v.Gaps == 0 && v.Phantom == 0 &&
		v.PoisonApplied == 0 && v.DeadUnexpected == 0 && v.RetryPending == 0 && v.OutboxPending == 0 &&
		v.OutboxDead == 0 && v.DeadExpected == v.Poison && v.OutboxDeadExpected == v.Oversize
}

// Problems lists what is wrong, for the report.
func (v Verdict) Problems() []string {
	var out []string
	add := func(n int64, what string) {
		if n != 0 {
			out = append(out, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(v.Lost, "lost")
	add(v.AppliedTwice, "applied twice")
	add(v.OutOfOrder, "out of order")
	add(v.Gaps, "applied after a gap in their key's sequence")
	add(v.Phantom, "applied but never produced")
	add(v.PoisonApplied, "poison or oversize messages applied")
	add(v.DeadUnexpected, "dead retry entries that are not poison")
	add(v.RetryPending, "retry entries still pending")
	add(v.OutboxPending, "outbox rows still pending")
	add(v.OutboxDead, "dead outbox rows that are not oversize")
	add(v.Poison-v.DeadExpected, "poison messages not dead")
	add(v.Oversize-v.OutboxDeadExpected, "oversize messages not dead in the outbox")
	return out
}

// progress is the live view the campaign polls.
type progress struct {
	orders, appliedUnique, dead, outboxPending, retryPending int64
}

// readProgress reads the live counts. With exact unset it counts effects
// rather than distinct messages, which is cheaper on big tables; the verdict
// counts exactly in any case.
func readProgress(ctx context.Context, pool *pgxpool.Pool, group string, exact bool) (progress, error) {
	var p progress
	applied := `SELECT count(*) FROM soak_results`
	if exact {
		applied = `SELECT count(DISTINCT msg_id) FROM soak_results`
	}
	err := pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM soak_orders),
		(`+applied+`),
		(SELECT count(*) FROM reliable_retry WHERE grp = $1 AND state = 'dead')
		  + (SELECT count(*) FROM reliable_outbox WHERE dead_at IS NOT NULL),
		(SELECT count(*) FROM reliable_outbox WHERE dead_at IS NULL),
		(SELECT count(*) FROM reliable_retry WHERE grp = $1 AND state = 'pending')`, group).
		Scan(&p.orders, &p.appliedUnique, &p.dead, &p.outboxPending, &p.retryPending)
	return p, err
}

// settled reports whether every order reached its end: applied, or dead
// (poison in the retry table, oversize in the outbox), with nothing waiting
// in the outbox or the retry table.
func (p progress) settled() bool {
	return p.orders > 0 && p.appliedUnique+p.dead >= p.orders && p.outboxPending == 0 && p.retryPending == 0
}

// killWindow bounds how long after a message's application a kill -9 of the
// applying process can still stop its dedupe store from recording it done:
// one store round trip, retried through a connection cut.
const killWindow = 5 * time.Second

// rules is what the verdict needs to know of the run beyond its tables.
type rules struct {
	profile string // "" is profileTuned
	kills   []Kill // every kill -9 of the run
}

// verify reads the verdict from the run's tables.
func verify(ctx context.Context, pool *pgxpool.Pool, group string, ru rules) (Verdict, error) {
	v := Verdict{Profile: ru.profile}
	if v.Profile == "" {
		v.Profile = profileTuned
	}
	pids := make([]int32, len(ru.kills))
	ats := make([]time.Time, len(ru.kills))
	for i, k := range ru.kills {
		pids[i], ats[i] = int32(k.PID), k.At
	}
	err := pool.QueryRow(ctx, `
WITH applied AS (
  SELECT msg_id, count(*) AS n FROM soak_results GROUP BY msg_id
), dead AS (
  SELECT message_id AS msg_id FROM reliable_retry WHERE grp = $1 AND state = 'dead'
), firsts AS (
  -- Order is judged on first applications; repeats count as applied twice.
  SELECT * FROM (SELECT r.*, row_number() OVER (PARTITION BY msg_id ORDER BY apply_id) AS nth FROM soak_results r) s
  WHERE nth = 1
), ordered AS (
  SELECT seq,
         lag(seq) OVER w AS prev,
         max(seq) OVER (PARTITION BY key ORDER BY apply_id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS highest
  FROM firsts
  WINDOW w AS (PARTITION BY key ORDER BY apply_id)
)
SELECT
  (SELECT count(*) FROM soak_orders),
  (SELECT count(*) FROM soak_orders WHERE poison),
  (SELECT count(*) FROM soak_orders WHERE oversize),
  (SELECT count(*) FROM soak_results),
  (SELECT count(*) FROM applied),
  (SELECT count(*) FROM soak_orders o WHERE NOT o.poison AND NOT o.oversize
     AND NOT EXISTS (SELECT 1 FROM applied a WHERE a.msg_id = o.msg_id)
     AND NOT EXISTS (SELECT 1 FROM dead d WHERE d.msg_id = o.msg_id)
     AND NOT EXISTS (SELECT 1 FROM reliable_outbox x WHERE x.msg_id = o.msg_id AND x.dead_at IS NOT NULL)),
  (SELECT count(*) FROM applied WHERE n > 1),
  (SELECT count(*) FROM firsts f JOIN applied a USING (msg_id)
     WHERE a.n > 1 AND EXISTS (SELECT 1 FROM unnest($2::int[], $3::timestamptz[]) AS k(pid, at)
       WHERE k.pid = f.pid AND f.applied_at BETWEEN k.at - $4::interval AND k.at)),
  (SELECT count(*) FROM ordered WHERE seq < highest),
  (SELECT count(*) FROM ordered WHERE seq <> coalesce(prev, 0) + 1),
  (SELECT count(*) FROM applied a WHERE NOT EXISTS (SELECT 1 FROM soak_orders o WHERE o.msg_id = a.msg_id)),
  (SELECT count(*) FROM soak_orders o JOIN applied a USING (msg_id) WHERE o.poison OR o.oversize),
  (SELECT count(*) FROM dead d JOIN soak_orders o USING (msg_id) WHERE o.poison),
  (SELECT count(*) FROM dead d WHERE NOT EXISTS (SELECT 1 FROM soak_orders o WHERE o.msg_id = d.msg_id AND o.poison)),
  (SELECT count(*) FROM reliable_retry WHERE grp = $1 AND state = 'pending'),
  (SELECT count(*) FROM reliable_outbox WHERE dead_at IS NULL),
  (SELECT count(*) FROM reliable_outbox x JOIN soak_orders o USING (msg_id) WHERE x.dead_at IS NOT NULL AND o.oversize),
  (SELECT count(*) FROM reliable_outbox x WHERE x.dead_at IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM soak_orders o WHERE o.msg_id = x.msg_id AND o.oversize)),
  (SELECT count(*) FROM soak_injected WHERE kind = 'handler-failures')`, group, pids, ats, killWindow).Scan(
		&v.Orders, &v.Poison, &v.Oversize, &v.Applied, &v.AppliedUnique, &v.Lost, &v.Repeats, &v.RepeatsAfterKill, &v.OutOfOrder, &v.Gaps,
		&v.Phantom, &v.PoisonApplied, &v.DeadExpected, &v.DeadUnexpected, &v.RetryPending, &v.OutboxPending,
		&v.OutboxDeadExpected, &v.OutboxDead, &v.InjectedFailures)
	if err != nil {
		return v, fmt.Errorf("verify: %w", err)
	}
	switch v.Profile {
	case profileZero:
		v.AppliedTwice = 0 // counted in Repeats and reported, not failed
	case profileQuickstart:
		v.AppliedTwice = v.Repeats - v.RepeatsAfterKill
	default:
		v.AppliedTwice = v.Repeats
	}
	if !v.OK() || v.Repeats > 0 {
		v.Samples, err = samples(ctx, pool, group)
	}
	return v, err
}

// samples names a few offending messages per problem, to start the
// investigation from (grep the child logs for the IDs).
func samples(ctx context.Context, pool *pgxpool.Pool, group string) ([]string, error) {
	rows, err := pool.Query(ctx, `
(SELECT 'lost ' || o.msg_id || ' key ' || o.key || ' seq ' || o.seq FROM soak_orders o
  WHERE NOT o.poison AND NOT o.oversize AND NOT EXISTS (SELECT 1 FROM soak_results r WHERE r.msg_id = o.msg_id)
    AND NOT EXISTS (SELECT 1 FROM reliable_retry e WHERE e.grp = $1 AND e.state = 'dead' AND e.message_id = o.msg_id)
  ORDER BY o.id LIMIT 5)
UNION ALL
(SELECT 'applied ' || count(*) || 'x ' || msg_id || ' by ' || string_agg(process, ',' ORDER BY apply_id)
  FROM soak_results GROUP BY msg_id HAVING count(*) > 1 LIMIT 5)
UNION ALL
(SELECT 'out of order: key ' || key || ' seq ' || seq || ' applied after seq ' || coalesce(prev::text, 'none') || ' (apply ' || apply_id || ' by ' || process || ')'
  FROM (SELECT key, seq, apply_id, process, lag(seq) OVER (PARTITION BY key ORDER BY apply_id) AS prev
        FROM (SELECT r.*, row_number() OVER (PARTITION BY msg_id ORDER BY apply_id) AS nth FROM soak_results r) f
        WHERE nth = 1) s
  WHERE seq <> coalesce(prev, 0) + 1 ORDER BY apply_id LIMIT 5)
UNION ALL
(SELECT 'dead not poison ' || message_id || ' key ' || msg_key || ': ' || last_error FROM reliable_retry e
  WHERE grp = $1 AND state = 'dead' AND NOT EXISTS (SELECT 1 FROM soak_orders o WHERE o.msg_id = e.message_id AND o.poison) LIMIT 5)
UNION ALL
(SELECT 'pending retry ' || message_id || ' key ' || msg_key || ' attempts ' || attempts || ': ' || last_error
  FROM reliable_retry WHERE grp = $1 AND state = 'pending' ORDER BY id LIMIT 5)
UNION ALL
(SELECT 'outbox ' || CASE WHEN dead_at IS NULL THEN 'pending ' ELSE 'dead ' END || msg_id || ' key ' || key || ' attempts ' || attempts
  || coalesce(': ' || last_error, '') FROM reliable_outbox x
  WHERE dead_at IS NULL OR NOT EXISTS (SELECT 1 FROM soak_orders o WHERE o.msg_id = x.msg_id AND o.oversize) ORDER BY id LIMIT 5)`, group)
	if err != nil {
		return nil, fmt.Errorf("verify samples: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
