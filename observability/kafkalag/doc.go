// Package kafkalag reads a Kafka consumer group's lag with sarama, as the
// broker-neutral observability.GroupLag, and reports it as metrics (L14).
//
// It is a package of its own so that package observability does not import
// sarama: a RabbitMQ-only service importing observability compiles no Kafka
// client, and a Kafka service that does not import observability compiles
// neither OpenTelemetry nor the Prometheus client through adapters/kafka.
//
//	client, _ := sarama.NewClient(brokers, cfg)         // shared, not closed by Watch
//	reg, err := kafkalag.Watch(tel, client, "prod.kitchen", "prod.orders")
//	...
//	admin, _ := sarama.NewClusterAdminFromClient(client)
//	gl, err := kafkalag.Read(ctx, client, admin, "prod.kitchen", "prod.orders")
//	if errors.Is(err, observability.ErrUnknownGroup) { ... }
//
// Group and topic names are the full Kafka names, with the environment
// prefix the adapter adds (kafka.Config.Environment).
//
// ReadOffsets and OffsetsForTime give the oldest and newest offset of
// partitions and the offset at a time, as reliablectl's lag and offsets
// commands use them.
package kafkalag
