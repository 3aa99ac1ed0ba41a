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
//     modelled on watermill's universal Pub/Sub tests, with [Features] flags
//     for what each broker guarantees. A case whose feature an adapter does
//     not claim is skipped with the reason ([Features].Reasons); nothing
//     claimed is skipped. Every case checks what its name says with bounded
//     waits on events: acks take effect (after Close and after a SIGKILL of
//     a consumer process), order per key holds with ten subscribers, two
//     groups each get everything, nacks redeliver mid-stream and across
//     subscribers, Close drains and loses nothing (also when called
//     concurrently), one subscriber serves two topics, a subscription lives
//     through a broken connection and confirmed messages through a broker
//     crash. The Scale case (20 publishers x 10,000 messages) runs only with
//     [EnvLong] set.
//
// The suite is itself tested: TestMutationCheck runs it against in-memory
// brokers broken on purpose (acks ignored, commits skipped, order shuffled
// per key, a message dropped, nacks ignored, the Redelivered flag never set,
// ...) and fails unless every defect is caught by at least one case; with -v
// it prints which cases caught which defect.
package reliabletest
