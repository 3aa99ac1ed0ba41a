package kafka

import (
	"errors"
	"testing"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		err       error
		want      error
		permanent bool
	}{
		{sarama.ErrMessageSizeTooLarge, reliable.ErrMessageTooLarge, true},
		{sarama.ErrUnknownTopicOrPartition, reliable.ErrUnknownTopic, true},
		{sarama.ErrTopicAuthorizationFailed, reliable.ErrNotAuthorized, true},
		{sarama.ErrSASLAuthenticationFailed, reliable.ErrNotAuthorized, true},
		// L06: leader changes and too few replicas are retried, never dropped.
		{sarama.ErrNotEnoughReplicas, reliable.ErrNotConfirmed, false},
		{sarama.ErrNotEnoughReplicasAfterAppend, reliable.ErrNotConfirmed, false},
		{sarama.ErrNotLeaderForPartition, reliable.ErrNotConfirmed, false},
		{sarama.ErrRequestTimedOut, reliable.ErrNotConfirmed, false},
		{sarama.ErrOutOfBrokers, reliable.ErrNotConfirmed, false},
	}
	for _, c := range cases {
		got := classify(c.err, "id", 10, 5)
		if !errors.Is(got, c.want) {
			t.Errorf("classify(%v) = %v, want %v", c.err, got, c.want)
		}
		if !errors.Is(got, c.err) && c.want != reliable.ErrMessageTooLarge {
			t.Errorf("classify(%v) lost the cause: %v", c.err, got)
		}
		if reliable.IsPermanent(got) != c.permanent {
			t.Errorf("classify(%v): permanent = %v, want %v", c.err, !c.permanent, c.permanent)
		}
	}
}

func TestClassifyConnectWrappedAuth(t *testing.T) {
	err := classifyConnect(sarama.Wrap(sarama.ErrOutOfBrokers, sarama.ErrSASLAuthenticationFailed))
	if !errors.Is(err, reliable.ErrNotAuthorized) {
		t.Fatalf("classifyConnect = %v, want ErrNotAuthorized", err)
	}
}
