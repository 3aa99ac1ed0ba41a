package retry_test

import (
	"context"
	"errors"
	"log"
	"log/slog"
	"net/smtp"
	"os"
	"os/signal"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/reliable-go/reliable"
	"github.com/reliable-go/reliable/retry"
)

// A kitchen display service parks failed messages in the retry table and
// replays them with a Retrier; dead entries are posted to a webhook and
// logged.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	table, err := retry.NewTable(pool, retry.TableConfig{
		Group: "kitchen-display",
		Notifier: retry.Notifiers{
			retry.LogNotifier{},
			&retry.WebhookNotifier{URL: "https://alerts.internal.example/reliable"},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := table.Migrate(ctx); err != nil { // explicit, idempotent
		log.Fatal(err)
	}
	handler := reliable.HandlerFunc(func(ctx context.Context, msg *reliable.Message) error {
		order, err := fetchOrder(ctx, msg.Key)
		if errors.Is(err, errNotYetVisible) {
			// L21: the read replica is behind: try again later, in order.
			return reliable.RetryAfter(2*time.Second, err)
		}
		if err != nil {
			return err // retryable by default
		}
		_ = order
		return nil
	})
	retrier, err := retry.NewRetrier(table, handler, retry.RetrierConfig{})
	if err != nil {
		log.Fatal(err)
	}
	if err := retrier.Run(ctx); err != nil { // until Ctrl-C
		log.Fatal(err)
	}
}

var errNotYetVisible = errors.New("order not yet visible")

func fetchOrder(context.Context, string) (string, error) { return "", nil }

// Mail developers about dead entries, as the team in L11 did.
func ExampleEmailNotifier() {
	n := &retry.EmailNotifier{
		Addr: "smtp.example.com:587",
		Auth: smtp.PlainAuth("", "alerts@example.com", os.Getenv("SMTP_PASSWORD"), "smtp.example.com"),
		From: "alerts@example.com",
		To:   []string{"kitchen-dev@example.com"},
	}
	_, err := retry.NewTable(nil, retry.TableConfig{Group: "kitchen-display", Notifier: n})
	_ = err // a real program passes its pool
}

// Operators inspect dead entries and repair keys.
func ExampleTable_List() {
	ctx := context.Background()
	var table *retry.Table // from retry.NewTable
	dead, err := table.List(ctx, retry.ListFilter{States: []retry.State{retry.StateDead}})
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range dead {
		slog.Info("dead", "entry", e.ID, "key", e.Message.Key, "error", e.LastError)
		// After fixing the cause: replay it, in its place in the key's order.
		_ = table.RetryNow(ctx, e.ID)
		// Or drop it and let the key's later messages flow:
		//   table.Discard(ctx, e.ID)
		// Or keep it for inspection and unblock the key:
		//   table.Release(ctx, e.Message.Key)
	}
}
