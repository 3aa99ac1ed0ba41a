package outbox_test

import (
	"context"
	"sync/atomic"

	"github.com/reliable-go/reliable"
)

// countingPublisher counts confirmed messages.
type countingPublisher struct {
	reliable.Publisher
	n atomic.Int64
}

func (p *countingPublisher) Publish(ctx context.Context, msgs ...*reliable.Message) error {
	err := p.Publisher.Publish(ctx, msgs...)
	if err == nil {
		p.n.Add(int64(len(msgs)))
	}
	return err
}
