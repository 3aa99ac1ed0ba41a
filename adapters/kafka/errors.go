package kafka

import (
	"errors"
	"fmt"

	"github.com/IBM/sarama"

	"github.com/reliable-go/reliable"
)

// ErrNotDurable is matched by every *DurabilityError: a topic's replication
// settings can lose acknowledged messages (L06).
var ErrNotDurable = errors.New("kafka: topic is not configured durably")

// authErrors are broker answers that retrying with the same credentials
// cannot fix.
var authErrors = []error{
	sarama.ErrSASLAuthenticationFailed,
	sarama.ErrTopicAuthorizationFailed,
	sarama.ErrGroupAuthorizationFailed,
	sarama.ErrClusterAuthorizationFailed,
	sarama.ErrTransactionalIDAuthorizationFailed,
	sarama.ErrIllegalSASLState,
	sarama.ErrUnsupportedSASLMechanism,
}

func isAuthError(err error) bool {
	for _, e := range authErrors {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// classify turns an error sarama reported for one record into the SDK's
// vocabulary: permanent sentinels for what retrying cannot fix, and
// reliable.ErrNotConfirmed (retryable) for everything else, whose outcome is
// unknown.
func classify(err error, id string, size, maxBytes int) error {
	switch {
	case errors.Is(err, sarama.ErrMessageSizeTooLarge):
		// The broker's or the topic's limit is below the producer's.
		return fmt.Errorf("kafka: broker refused the record: %w", &reliable.MessageTooLargeError{MessageID: id, Size: size, Max: maxBytes})
	case errors.Is(err, sarama.ErrUnknownTopicOrPartition), errors.Is(err, sarama.ErrInvalidTopic):
		return fmt.Errorf("%w: %w", reliable.ErrUnknownTopic, err)
	case isAuthError(err):
		return fmt.Errorf("%w: %w", reliable.ErrNotAuthorized, err)
	case errors.Is(err, sarama.ErrInvalidRecord):
		return reliable.Permanent(fmt.Errorf("kafka: broker refused the record as invalid: %w", err))
	default:
		return fmt.Errorf("%w: %w", reliable.ErrNotConfirmed, err)
	}
}

// classifyConnect classifies an error from connecting to the cluster.
func classifyConnect(err error) error {
	if isAuthError(err) {
		return fmt.Errorf("kafka: connect: %w: %w", reliable.ErrNotAuthorized, err)
	}
	return fmt.Errorf("kafka: connect: %w", err)
}
