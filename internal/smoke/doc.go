// Package smoke holds integration smoke tests of the test services (real Kafka,
// RabbitMQ, Redis, PostgreSQL) and of the internal/testenv fault controls. CI runs
// them with RELIABLE_REQUIRE_SERVICES=1, so a broken service setup fails the build.
package smoke
