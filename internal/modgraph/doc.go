// Package modgraph holds one test, TestUserModuleGraph: what a service that
// imports the SDK gets in its module graph and its build (issue 16). The test
// makes a throwaway user module in a temporary directory that imports the
// SDK's packages (a replace directive points at this checkout), builds it
// with the lowest Go release the SDK's go.mod allows, and asserts from
// `go list -m all`, `go mod graph` and `go list -deps` that:
//
//   - no test, demo, container or browser library comes with the SDK
//     (testcontainers, Docker, chromedp, franz-go/kfake, toxiproxy, gotestsum,
//     testify, ginkgo, gomega...): the examples, the soak campaign,
//     reliablectl, the benchmarks and the testcontainers helper are modules of
//     their own;
//   - a RabbitMQ-only service compiles no sarama, also when it imports
//     observability (the Kafka lag readers are in observability/kafkalag),
//     and a Kafka-only one no amqp091-go;
//   - a Kafka service that does not import observability compiles neither
//     the OpenTelemetry SDK nor the Prometheus client.
//
// It needs the go command and the Go module proxy (for the toolchain and
// modules not in the module cache), and is skipped with -short.
package modgraph
