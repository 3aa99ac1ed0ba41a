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
// Environments (L07): Config.Environment prefixes topic names and consumer
// group IDs ("prod.orders") and is stamped on every message as
// ce_environment, which the consumer pipeline checks.
//
// Security: TLS with a custom CA ([LoadTLS]) and SASL PLAIN, SCRAM-SHA-256 or
// SCRAM-SHA-512. The password is a [Secret], redacted wherever a Config is
// printed or logged; bad credentials fail the constructor with an error
// matching reliable.ErrNotAuthorized instead of retrying.
package kafka
