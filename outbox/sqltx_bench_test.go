package outbox_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/outbox"
)

// BenchmarkAddPaths compares one committed transaction of Add (pgx) and of
// AddSQL (database/sql on pgx's stdlib driver, arrays sent as text), with
// 1 and 10 messages of 200-byte payloads over 16 keys. Commits do not wait
// for the WAL flush (synchronous_commit off), so the figures show the
// client side and the round trips, not the disk.
//
//	go test -run '^$' -bench BenchmarkAddPaths -benchtime 2000x ./outbox/
func BenchmarkAddPaths(b *testing.B) {
	db := newTestDB(b, 4)
	ctx := context.Background()
	pcfg, err := pgxpool.ParseConfig(db.dsn)
	if err != nil {
		b.Fatal(err)
	}
	pcfg.ConnConfig.RuntimeParams["search_path"] = db.schema
	pcfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	sdb := stdlib.OpenDB(*pcfg.ConnConfig.Copy())
	defer sdb.Close()
	payload := make([]byte, 200)
	batch := func(n, i int) []*reliable.Message {
		msgs := make([]*reliable.Message, n)
		for j := range msgs {
			msgs[j] = &reliable.Message{Topic: "orders", Key: fmt.Sprintf("order-%d", (i+j)%16), Type: "order.event", Payload: payload}
		}
		return msgs
	}
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("Add/%d", n), func(b *testing.B) {
			for i := range b.N {
				if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return outbox.Add(ctx, tx, batch(n, i)...) }); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("AddSQL/%d", n), func(b *testing.B) {
			for i := range b.N {
				if err := addSQLTx(ctx, sdb, batch(n, i)...); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
