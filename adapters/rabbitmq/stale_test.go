package rabbitmq

import "github.com/reliable-go/reliable/consumer"

// The consumer keeps the retry table's blocked keys in memory only for
// subscribers that say their deliveries report staleness (issue 18).
var _ consumer.StaleReporting = (*Subscriber)(nil)
