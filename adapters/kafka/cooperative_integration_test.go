package kafka

import (
	"errors"
	"strings"
	"testing"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable"
)

// Issue 13: cooperative rebalancing selected through Config.Tune keeps the
// session across rebalances and revokes partitions without ending their
// claims' sessions, which this subscriber's drain does not handle (a revoked
// partition stalls at its in-flight limit). NewSubscriber refuses it with a
// *reliable.ConfigError; a strategy list that still negotiates the eager
// protocol is accepted.
func TestCooperativeRebalancingRefused(t *testing.T) {
	for _, c := range []struct {
		name   string
		tune   func(*sarama.Config)
		refuse bool
	}{
		{"cooperative-sticky", func(sc *sarama.Config) {
			sc.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyCooperativeSticky()}
		}, true},
		{"deprecated Strategy field", func(sc *sarama.Config) {
			sc.Consumer.Group.Rebalance.GroupStrategies = nil
			sc.Consumer.Group.Rebalance.Strategy = sarama.NewBalanceStrategyCooperativeSticky()
		}, true},
		{"cooperative next to range (eager)", func(sc *sarama.Config) {
			sc.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyCooperativeSticky(), sarama.NewBalanceStrategyRange()}
		}, false},
		{"sticky (eager)", func(sc *sarama.Config) {
			sc.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategySticky()}
		}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Consumer.Group = uniqueName("coop-g")
			cfg.Tune = c.tune
			sub, err := NewSubscriber(cfg)
			if !c.refuse {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				_ = sub.Close()
				return
			}
			if err == nil {
				_ = sub.Close()
				t.Fatal("NewSubscriber accepted cooperative rebalancing")
			}
			var ce *reliable.ConfigError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), "cooperative") {
				t.Fatalf("error %v, want a *reliable.ConfigError naming cooperative rebalancing", err)
			}
		})
	}
}
