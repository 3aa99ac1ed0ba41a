// Package kafka implements reliable.Publisher and reliable.Subscriber on
// Apache Kafka with github.com/IBM/sarama, configured so that nothing
// acknowledged is lost and nothing is committed before it is complete.
//
// Producing ([NewProducer], [Publisher]):
//   - acks from all in-sync replicas (RequiredAcks=WaitForAll), the
//     idempotent producer, one request in flight per broker, and sarama
//     resending for about 15 minutes with backoff; NewProducer adds a retry
//     loop bounded by the caller's context (L03, L06);
//   - the murmur2 partitioner on Message.Key, so a key lands in the
//     partition the Java client picks;
//   - no implicit topic creation: an unknown topic fails fast with
//     reliable.ErrUnknownTopic;
//   - records larger than Config.Producer.MaxMessageBytes are refused before
//     anything is sent (L13);
//   - a durability audit of each topic in use (replication factor,
//     min.insync.replicas, unclean leader election), strict by default.
//
// Consuming ([Subscriber]): a consumer group with auto-commit off that starts
// at the oldest offset of a new group and commits, per partition, only up to
// the first delivery that is not yet acked (L04, L05): periodically, when a
// partition is revoked and on shutdown. See [Subscriber] for the details.
//
// Message metadata travels as CloudEvents binary-mode headers (ce_id,
// ce_type, ce_partitionkey, ce_time, ce_environment), readable from any
// language; the record key is Message.Key.
//
// Redelivery: a nacked delivery comes back in the same claim after
// Consumer.RedeliveryBackoff, with Attempt+1; the group session, the other
// partitions and the partition's other deliveries carry on, and no commit
// passes the nacked offset.
//
// Dead-letter topic: Kafka has no dead-letter policy of its own. With
// Consumer.DeadLetterTopic set, [Subscriber.DeadLetter] publishes a poison
// message durably to that topic, with headers naming the cause and the
// original topic, partition, offset and attempts (HeaderDeadLetter*); the
// consumer pipeline acks the delivery only after that, so its offset is
// committed only then. reliablectl dlt lists, shows and replays such topics.
//
// Records from other producers (no ce_ headers):
//   - ID: a record without ce_id gets "kafka:<topic>/<partition>/<offset>"
//     (the Kafka topic name, environment prefix included), derived from its
//     position, so every redelivery of it carries the same ID and the dedupe
//     store recognises it. Two such records are never confused.
//   - Key: Message.Key is the record key byte for byte, converted to a Go
//     string without any decoding: an 8-byte big-endian long from Java's
//     LongSerializer keeps its NUL bytes, invalid UTF-8 stays as it is.
//     ce_partitionkey is used only for a record without a key.
//   - Time: the record timestamp when ce_time is missing or unparsable (the
//     unparsable value stays in Headers).
//   - Headers: every other header is in Message.Headers as received (a nil
//     value is the empty string; of a name given twice the last one wins).
//   - Environment: the subscriber hands ce_environment through unchanged and
//     filters nothing. A consumer whose consumer.Config.Environment is set
//     refuses a record without that header like one from another environment
//     (reliable.CheckEnvironment: an unlabeled message cannot be trusted),
//     and sends it to its dead-letter path with the reason; nothing is
//     dropped silently as long as there is one (a dead-letter topic, say).
//     Consumers of topics written by non-SDK producers should leave
//     Environment empty and rely on the topic prefix instead.
//
// Environments (L07): Config.Environment prefixes topic names and consumer
// group IDs ("prod.orders") and is stamped on every message as
// ce_environment, which the consumer pipeline checks.
//
// Security: TLS with a custom CA ([LoadTLS]) and SASL PLAIN, SCRAM-SHA-256 or
// SCRAM-SHA-512. The password is a [Secret], redacted wherever a Config is
// printed or logged; bad credentials fail the constructor with an error
// matching reliable.ErrNotAuthorized instead of retrying.
package kafka
