package main

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable/internal/testenv"
)

// testSchema creates the soak tables in a fresh schema, dropped when the
// test ends, and opens a pool of maxConns connections on it. The config
// names the schema, group "kitchen" and topic "orders".
func testSchema(ctx context.Context, t *testing.T, name string, maxConns int32) (*Config, *pgxpool.Pool) {
	t.Helper()
	cfg := &Config{
		PostgresDSN: testenv.PostgresDSN(t),
		Schema:      strings.ReplaceAll(testenv.UniqueName(t, "soak_"+name), "-", "_"),
		Group:       "kitchen",
		Topic:       "orders",
	}
	if err := createSchema(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dropSchema(context.Background(), cfg) })
	pool, err := openPool(ctx, cfg.PostgresDSN, cfg.Schema, name+"-test", maxConns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return cfg, pool
}
