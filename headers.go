package reliable

// Header names under which adapters carry the message's metadata, so a
// consumer written in any language can read them. They follow the CloudEvents
// Kafka protocol binding (binary mode, "ce_" prefix); the RabbitMQ adapter
// also sets the AMQP message-id and type properties.
const (
	HeaderID          = "ce_id"
	HeaderType        = "ce_type"
	HeaderTime        = "ce_time"
	HeaderSource      = "ce_source"
	HeaderSpecVersion = "ce_specversion"
	// HeaderKey carries Message.Key (the CloudEvents partitioning extension).
	// Kafka also uses it as the record key.
	HeaderKey = "ce_partitionkey"
	// HeaderEnvironment carries the producer's environment ("prod",
	// "staging"); consumers refuse messages from another one (L07).
	HeaderEnvironment = "ce_environment"
)

// CheckEnvironment returns an error matching ErrWrongEnvironment when a
// consumer running in env receives msg from another environment. An empty env
// disables the check. A message without the header is refused too when env is
// set: a consumer that insists on an environment cannot trust an unlabeled
// message. So a consumer of a topic that non-SDK producers also write leaves
// its Environment empty (the environment prefix of Kafka topic names still
// keeps environments apart), or has those producers set ce_environment.
//
// A refused message is never handled and never silently dropped: the
// consumer dead-letters it with the reason, or, without a dead-letter path,
// leaves it unacknowledged and holds its key (L07: acking it would take it
// away from the environment it belongs to).
func CheckEnvironment(msg *Message, env string) error {
	if env == "" {
		return nil
	}
	got := msg.Headers[HeaderEnvironment]
	if got == env {
		return nil
	}
	return &WrongEnvironmentError{Want: env, Got: got, MessageID: msg.ID}
}

// WrongEnvironmentError says which environment a refused message came from.
// It matches ErrWrongEnvironment.
type WrongEnvironmentError struct {
	Want, Got, MessageID string
}

func (e *WrongEnvironmentError) Error() string {
	got := e.Got
	if got == "" {
		got = "(none)"
	}
	return "reliable: message " + e.MessageID + " is from environment " + got + ", this consumer runs in " + e.Want
}

// Is makes errors.Is(err, ErrWrongEnvironment) true.
func (e *WrongEnvironmentError) Is(target error) bool { return target == ErrWrongEnvironment }
