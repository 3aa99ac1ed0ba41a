package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/reliable-go/reliable/idempotency"
	"github.com/reliable-go/reliable/internal/pgmigrate"
	"github.com/reliable-go/reliable/internal/storetext"
)

// Environment variables of the Redis connection.
const (
	envRedisAddr         = "RELIABLE_REDIS_ADDR"
	envRedisPassword     = "RELIABLE_REDIS_PASSWORD"
	envRedisPasswordFile = "RELIABLE_REDIS_PASSWORD_FILE"
	envRedisCAFile       = "RELIABLE_REDIS_CA_FILE"
	envRedisCertFile     = "RELIABLE_REDIS_CERT_FILE"
	envRedisKeyFile      = "RELIABLE_REDIS_KEY_FILE"
)

// The states of a dedupe record, as the dedupe commands show them.
const (
	dedupeAbsent  = "absent"  // never claimed, or deleted by cleanup
	dedupeClaimed = "claimed" // a consumer is handling it now
	dedupeDone    = "done"    // handled: redeliveries are skipped
	dedupeExpired = "expired" // past its claim TTL or retention: counts as absent
)

// dedupeFlags select a dedupe store and namespace.
type dedupeFlags struct {
	store     string
	namespace string
	// PostgreSQL
	pg    pgFlags
	table string
	// Redis
	redisAddr, redisUser, redisPasswordFile, keyPrefix string
	redisTLS                                           tlsFlags
	retention                                          time.Duration
}

func (d *dedupeFlags) register(f *flags) {
	f.StringVar(&d.store, "store", "postgres", "dedupe store: postgres or redis")
	f.StringVar(&d.namespace, "namespace", "", "the store's Namespace, usually the consumer group")
	d.pg.register(f, "PostgreSQL schema of the dedupe table (default: the search_path)")
	f.StringVar(&d.table, "table", "reliable_idempotency", "PostgreSQL table of the dedupe records (PostgresConfig.Table)")
	f.StringVar(&d.redisAddr, "redis-addr", "", "Redis host:port (default $"+envRedisAddr+")")
	f.StringVar(&d.redisUser, "redis-user", "", "Redis ACL user")
	f.StringVar(&d.redisPasswordFile, "redis-password-file", "", "file holding the Redis password (default $"+envRedisPasswordFile+"; or set the password itself in $"+envRedisPassword+")")
	d.redisTLS.register(f.FlagSet, "redis", "Redis", envRedisCAFile, envRedisCertFile, envRedisKeyFile)
	f.StringVar(&d.keyPrefix, "key-prefix", "reliable:idem:", "Redis key prefix (RedisConfig.KeyPrefix)")
	f.DurationVar(&d.retention, "retention", idempotency.DefaultRetention, "the store's Retention, to tell when a Redis record was marked done")
}

func (d *dedupeFlags) check() error {
	if d.namespace == "" {
		return usagef("--namespace is required (the store's Namespace, usually the consumer group)")
	}
	if d.store != "postgres" && d.store != "redis" {
		return usagef("--store must be postgres or redis, not %q", d.store)
	}
	return nil
}

// dedupeRecord is one record of a dedupe store.
type dedupeRecord struct {
	ID    string `json:"id"`
	IDHex string `json:"id_hex,omitempty"` // when the ID is not printable UTF-8
	State string `json:"state"`
	// Since is when it was claimed or marked done (PostgreSQL; Redis: done
	// records only, derived from the retention).
	Since *time.Time `json:"since,omitempty"`
	// Expires is when the claim or the done record lapses.
	Expires *time.Time `json:"expires,omitempty"`
	// Owner is the claiming store instance's token (a random value per
	// process: the SDK records no host name).
	Owner string `json:"owner,omitempty"`
}

func (a *app) viewDedupe(id string, r *dedupeRecord) {
	r.ID, r.IDHex = a.showKey(id), keyHexOf(id)
}

// dedupeStore reads one store's records.
type dedupeStore interface {
	get(ctx context.Context, id string) (dedupeRecord, error)
	list(ctx context.Context, state string, limit int) ([]dedupeRecord, error)
	close()
}

func (a *app) openDedupe(ctx context.Context, d *dedupeFlags) (dedupeStore, error) {
	if d.store == "redis" {
		return a.openRedisDedupe(ctx, d)
	}
	pool, err := a.connectPostgres(ctx, &d.pg)
	if err != nil {
		return nil, err
	}
	table := pgmigrate.Target{Schema: d.pg.schema, Table: d.table}.Ident("")
	return &pgDedupe{a: a, pool: pool, table: table, ns: d.namespace, schema: d.pg.schema}, nil
}

// withDedupe runs work on the store d selects within --timeout, and closes
// it after.
func (f *flags) withDedupe(ctx context.Context, d *dedupeFlags, work func(context.Context, dedupeStore) error) error {
	open := func(ctx context.Context) (dedupeStore, error) { return f.a.openDedupe(ctx, d) }
	return within(ctx, f, open, dedupeStore.close, work)
}

type pgDedupe struct {
	a      *app
	pool   *pgxpool.Pool
	table  string
	ns     string
	schema string
}

func (p *pgDedupe) close() { p.pool.Close() }

const pgDedupeColumns = `id, done, owner, updated_at, expires_at, expires_at <= now()`

func scanDedupe(rows pgx.Rows) (string, dedupeRecord, error) {
	var (
		id            string
		done, expired bool
		r             dedupeRecord
		since, until  time.Time
	)
	if err := rows.Scan(&id, &done, &r.Owner, &since, &until, &expired); err != nil {
		return "", r, err
	}
	r.Since, r.Expires = &since, &until
	switch {
	case expired:
		r.State = dedupeExpired
	case done:
		r.State = dedupeDone
	default:
		r.State = dedupeClaimed
	}
	return id, r, nil
}

func (p *pgDedupe) get(ctx context.Context, id string) (dedupeRecord, error) {
	rows, err := p.pool.Query(ctx, `SELECT `+pgDedupeColumns+` FROM `+p.table+` WHERE namespace = $1 AND id = $2`, p.ns, storetext.Indexed(id))
	if err != nil {
		return dedupeRecord{}, missingTable(err, "dedupe table", p.schema)
	}
	defer rows.Close()
	r := dedupeRecord{State: dedupeAbsent}
	for rows.Next() {
		if _, r, err = scanDedupe(rows); err != nil {
			return r, err
		}
	}
	if err := rows.Err(); err != nil {
		return r, missingTable(err, "dedupe table", p.schema)
	}
	p.a.viewDedupe(id, &r)
	return r, nil
}

func (p *pgDedupe) list(ctx context.Context, state string, limit int) ([]dedupeRecord, error) {
	where := ""
	switch state {
	case dedupeDone:
		where = ` AND done AND expires_at > now()`
	case dedupeClaimed:
		where = ` AND NOT done AND expires_at > now()`
	case dedupeExpired:
		where = ` AND expires_at <= now()`
	}
	rows, err := p.pool.Query(ctx, `SELECT `+pgDedupeColumns+` FROM `+p.table+` WHERE namespace = $1`+where+` ORDER BY updated_at DESC LIMIT $2`, p.ns, limit)
	if err != nil {
		return nil, missingTable(err, "dedupe table", p.schema)
	}
	defer rows.Close()
	out := []dedupeRecord{}
	for rows.Next() {
		id, r, err := scanDedupe(rows)
		if err != nil {
			return nil, err
		}
		if strings.HasPrefix(id, storetext.HashMarker) {
			// A long ID is stored as its digest: shown as such.
			r.ID = id[1:] + " (digest of a long ID)"
		} else {
			p.a.viewDedupe(storetext.FromStored(id), &r)
		}
		out = append(out, r)
	}
	return out, missingTable(rows.Err(), "dedupe table", p.schema)
}

type redisDedupe struct {
	a         *app
	client    *redis.Client
	prefix    string
	retention time.Duration
}

func (a *app) openRedisDedupe(ctx context.Context, d *dedupeFlags) (dedupeStore, error) {
	addr, err := a.endpoint("redis-addr", d.redisAddr, envRedisAddr)
	if err != nil {
		return nil, err
	}
	if addr == "" {
		return nil, usagef("no Redis address: set --redis-addr or $%s", envRedisAddr)
	}
	pw, err := secretFromEnvOrFile(a, envRedisPassword, orEnv(a, d.redisPasswordFile, envRedisPasswordFile), "--redis-password-file")
	if err != nil {
		return nil, err
	}
	tc, err := d.redisTLS.config(a, envRedisCAFile, envRedisCertFile, envRedisKeyFile, false)
	if err != nil {
		return nil, err
	}
	c := redis.NewClient(&redis.Options{Addr: addr, Username: d.redisUser, Password: pw, TLSConfig: tc,
		DialTimeout: 5 * time.Second, MaxRetries: 1, DisableIdentity: true})
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("cannot reach Redis at %s: %w", addr, err)
	}
	return &redisDedupe{a: a, client: c, prefix: d.keyPrefix + d.namespace + ":", retention: d.retention}, nil
}

func (r *redisDedupe) close() { _ = r.client.Close() }

// record reads one key: "d" when done, "c:<owner>" while claimed; its TTL
// says when it lapses.
func (r *redisDedupe) record(ctx context.Context, key string) (dedupeRecord, error) {
	rec := dedupeRecord{State: dedupeAbsent}
	pipe := r.client.Pipeline()
	get := pipe.Get(ctx, key)
	ttl := pipe.PTTL(ctx, key)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return rec, fmt.Errorf("redis: %w", err)
	}
	v, err := get.Result()
	if errors.Is(err, redis.Nil) {
		return rec, nil
	}
	now := time.Now()
	if d := ttl.Val(); d > 0 {
		until := now.Add(d)
		rec.Expires = &until
	}
	switch {
	case v == "d":
		rec.State = dedupeDone
		if rec.Expires != nil && r.retention > 0 {
			since := rec.Expires.Add(-r.retention)
			rec.Since = &since
		}
	case strings.HasPrefix(v, "c:"):
		rec.State, rec.Owner = dedupeClaimed, strings.TrimPrefix(v, "c:")
	default:
		rec.State = "unknown value " + fmt.Sprintf("%q", v)
	}
	return rec, nil
}

func (r *redisDedupe) get(ctx context.Context, id string) (dedupeRecord, error) {
	rec, err := r.record(ctx, r.prefix+id)
	r.a.viewDedupe(id, &rec)
	return rec, err
}

func (r *redisDedupe) list(ctx context.Context, state string, limit int) ([]dedupeRecord, error) {
	out := []dedupeRecord{}
	// SCAN walks the whole keyspace (MATCH filters on the server): large
	// batches keep the round trips few.
	iter := r.client.Scan(ctx, 0, escapeGlob(r.prefix)+"*", 10000).Iterator()
	for iter.Next(ctx) && len(out) < limit {
		key := iter.Val()
		rec, err := r.record(ctx, key)
		if err != nil {
			return nil, err
		}
		if rec.State == dedupeAbsent || (state != "" && rec.State != state) {
			continue
		}
		r.a.viewDedupe(strings.TrimPrefix(key, r.prefix), &rec)
		out = append(out, rec)
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("redis scan: %w", err)
	}
	return out, nil
}

// escapeGlob escapes the glob characters of a SCAN MATCH pattern.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func dedupeShow(a *app) *cobra.Command {
	f := a.newFlags("dedupe show", "--namespace NS (--id ID | --id-hex HEX) [--store postgres|redis] [flags]", `
Shows whether a message ID is recorded in a dedupe store (package
idempotency): claimed (a consumer handles it now: since when, until when,
which store instance), done (redeliveries are skipped: since when, kept
until when), expired (past its claim TTL or retention: it counts as absent
and the next delivery is handled) or absent. PostgreSQL records say when
they were claimed or done; Redis keeps only the expiry, so a done record's
time is derived from --retention.`)
	var d dedupeFlags
	d.register(f)
	f.keyFormatFlag()
	id := new(string)
	f.StringVar(id, "id", "", "message ID")
	f.Var(&hexString{id}, "id-hex", "message ID as hex bytes (a binary ID)")
	return f.runE(func(ctx context.Context) error {
		if err := d.check(); err != nil {
			return err
		}
		if *id == "" {
			return usagef("--id or --id-hex is required")
		}
		return f.withDedupe(ctx, &d, func(ctx context.Context, s dedupeStore) error {
			rec, err := s.get(ctx, *id)
			if err != nil {
				return err
			}
			return a.emit(f, rec, func(w io.Writer) {
				row(w, "id", rec.ID)
				if rec.IDHex != "" {
					row(w, "id (hex)", rec.IDHex)
				}
				row(w, "state", rec.State)
				if rec.Since != nil {
					row(w, "since", when(*rec.Since))
				}
				if rec.Expires != nil {
					row(w, "expires", when(*rec.Expires))
				}
				if rec.Owner != "" {
					row(w, "claimed by", rec.Owner)
				}
			})
		})
	})
}

func dedupeList(a *app) *cobra.Command {
	f := a.newFlags("dedupe list", "--namespace NS [--state claimed|done|expired] [--limit N] [--store postgres|redis] [flags]", `
Lists the records of a dedupe store's namespace, newest first on
PostgreSQL (Redis: in SCAN order, which walks the whole keyspace: on a large
Redis it takes a while; show looks up one ID at once): the message ID, its state, since and
until when, and the claiming store instance. Claims older than a handler
can take point at a consumer that died mid-message; they lapse by
themselves after the claim TTL.`)
	var d dedupeFlags
	d.register(f)
	f.keyFormatFlag()
	state := f.String("state", "", "only records in this state: claimed, done or expired")
	limit := f.Int("limit", defaultLimit, "at most this many records")
	return f.runE(func(ctx context.Context) error {
		if err := d.check(); err != nil {
			return err
		}
		switch *state {
		case "", dedupeClaimed, dedupeDone, dedupeExpired:
		default:
			return usagef("--state %q is not claimed, done or expired", *state)
		}
		if *limit <= 0 {
			return usagef("--limit must be positive")
		}
		return f.withDedupe(ctx, &d, func(ctx context.Context, s dedupeStore) error {
			recs, err := s.list(ctx, *state, *limit)
			if err != nil {
				return err
			}
			return a.emit(f, map[string]any{"namespace": d.namespace, "records": recs}, func(w io.Writer) {
				row(w, "ID", "STATE", "SINCE", "EXPIRES", "CLAIMED BY")
				for _, r := range recs {
					since, until := "-", "-"
					if r.Since != nil {
						since = when(*r.Since)
					}
					if r.Expires != nil {
						until = when(*r.Expires)
					}
					row(w, clip(r.ID, 60), r.State, since, until, r.Owner)
				}
				if len(recs) == 0 {
					fmt.Fprintln(w, "(no records)")
				}
			})
		})
	})
}
