package rabbitmq

import (
	"context"
	"testing"

	"github.com/reliable-go/reliable/internal/testenv"
)

// restartBroker takes exclusive use of the shared RabbitMQ server for the
// rest of t (other packages' RabbitMQ tests wait) and returns a function
// that stops and starts it, waiting until it answers again.
func restartBroker(t testing.TB) func(ctx context.Context) error {
	srv := testenv.RabbitMQ(t)
	return func(ctx context.Context) error {
		t.Logf("restarting RabbitMQ")
		brokerRestarts.Add(1)
		return srv.Restart(ctx)
	}
}
