// Package reliabletest helps test code built on the reliable SDK.
//
// It holds:
//
//   - [Broker], an in-memory broker implementing reliable.Publisher and
//     reliable.Subscriber with Kafka-like semantics (partitions, consumer
//     groups, committed offsets) and fault injection. It is a TEST DOUBLE:
//     nothing is durable, nothing leaves the process. Use it for unit tests
//     and demos, never to prove a durability claim.
//   - [RunConformance], the suite every Publisher/Subscriber pair of the SDK
//     passes (the in-memory broker, the Kafka adapter, the RabbitMQ adapter),
//     with [Features] flags for what each broker guarantees.
package reliabletest
