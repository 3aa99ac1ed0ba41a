// Command reliablectl is the operator's tool for services built on the
// reliable SDK: what an on-call engineer needs when a backlog grows or a
// message is stuck (L07, L11, L14, L17, L18), on secured production
// clusters too.
//
// # Install
//
// reliablectl is a module of its own (github.com/reliable-go/reliable/cmd/reliablectl),
// so its CLI library and clients never enter the SDK's module graph:
//
//	go install github.com/reliable-go/reliable/cmd/reliablectl@latest
//
// @latest resolves the newest tag of the form cmd/reliablectl/vX.Y.Z.
// go install refuses a module whose go.mod has replace directives, so a
// release of reliablectl requires a tagged SDK version in its go.mod, with
// no replace (in the repository, go.work ties the two modules together for
// development). From a checkout: cd cmd/reliablectl && go install .
//
// # Usage
//
//	reliablectl audit kafka --topic orders --environment prod
//	reliablectl audit rabbitmq --topic orders --group kitchen
//	reliablectl dedupe show|list --namespace kitchen [--store postgres|redis] (--id ID | --id-hex HEX)
//	reliablectl dlq list|show --topic orders --group kitchen [--id ID]
//	reliablectl dlq requeue --topic orders --group kitchen (--id ID | --all) [--execute]
//	reliablectl dlt topics | list --topic prod.orders.dlt | show --topic T --partition P --offset O
//	reliablectl dlt replay --topic prod.orders.dlt (--partition P --offset O | --id ID | --all) [--execute]
//	reliablectl lag --group prod.kitchen --topic prod.orders
//	reliablectl migrate [--schema S] [--only outbox,retry,dedupe] [--print]
//	reliablectl offsets reset --group prod.kitchen --topic prod.orders --to-time -2h [--execute]
//	reliablectl outbox status | retry --id N | discard --id N
//	reliablectl outbox slot status|create|drop [--slot NAME]
//	reliablectl retry stats|list|show|retry-now|discard|release --group prod.kitchen ...
//	reliablectl completion bash|zsh|fish|powershell
//
// Every command has --help, --output (-o) table|json and --timeout.
//
// # Endpoints and credentials
//
// Endpoints come from flags or, when a flag is not given, the environment:
// RELIABLE_KAFKA_BROKERS (--brokers), RELIABLE_AMQP_URL (--amqp-url),
// RELIABLE_RABBITMQ_MANAGEMENT_URL (--management-url; derived from
// RELIABLE_AMQP_URL's host and credentials when unset),
// RELIABLE_POSTGRES_DSN (--postgres-dsn), RELIABLE_REDIS_ADDR
// (--redis-addr).
//
// Passwords never come from the command line, which every user of the
// machine can read (ps, /proc) and which shell history keeps: a URL or DSN
// flag with a password is refused (exit 2, the password not repeated), and
// there is no password flag. A password comes from the environment (inside
// RELIABLE_AMQP_URL, RELIABLE_POSTGRES_DSN or RELIABLE_RABBITMQ_MANAGEMENT_URL,
// or alone in RELIABLE_KAFKA_SASL_PASSWORD, RELIABLE_AMQP_PASSWORD,
// RELIABLE_REDIS_PASSWORD; PostgreSQL also reads PGPASSWORD and ~/.pgpass)
// or from a file (--kafka-sasl-password-file, --amqp-password-file,
// --redis-password-file, or the same variables with _FILE). Every password
// seen is replaced by xxxxx in anything reliablectl prints: tables, JSON,
// errors.
//
// Kafka over TLS: --kafka-tls (or RELIABLE_KAFKA_TLS=1), --kafka-ca-file
// (RELIABLE_KAFKA_CA_FILE; the system roots otherwise), --kafka-cert-file and
// --kafka-key-file for mutual TLS, --kafka-tls-server-name when the
// certificate names another host. The certificate is always verified,
// unless --kafka-insecure-skip-verify is given explicitly (there is no
// environment variable for it). Kafka SASL: --kafka-sasl-mechanism PLAIN,
// SCRAM-SHA-256 or SCRAM-SHA-512 (RELIABLE_KAFKA_SASL_MECHANISM),
// --kafka-sasl-user (RELIABLE_KAFKA_SASL_USER), the password as above. A
// wrong password fails at once with "SASL Authentication failed".
//
// RabbitMQ over TLS: an amqps:// URL, with --amqp-ca-file
// (RELIABLE_AMQP_CA_FILE), --amqp-cert-file, --amqp-key-file,
// --amqp-tls-server-name and --amqp-insecure-skip-verify as for Kafka.
// Redis over TLS: the --redis-* equivalents.
//
// # Names and environments
//
// Without --environment, names are the brokers' own (prod.orders). With
// --environment prod (or RELIABLE_ENVIRONMENT), every topic, group and queue
// name given is the application's and gets the environment's prefix the
// adapters give it (kafka.EnvironmentName, rabbitmq.EnvironmentName:
// prod.orders), on Kafka and RabbitMQ alike; dlt topics then lists only the
// environment's topics.
//
// Keys and IDs are arbitrary bytes (a Java long key has NUL bytes). A key
// that is not printable UTF-8, or that starts with a double quote, is shown
// as a quoted Go string ("\x00\x00\x00\x00\x00\x00\x00*"), so no two keys
// print alike, and JSON adds key_hex; --key-format quoted|hex shows every key
// that way. Flags take binary keys and IDs as hex: --key-hex, --id-hex.
//
// # Changes
//
// Nothing is changed without an explicit flag or command: audit, lag,
// dedupe, outbox status and slot status, retry stats, list and show, dlt
// topics, list and show, and dlq list and show only read (dlq list and show
// read messages unacknowledged and put them back); offsets reset is a dry
// run unless --execute is given, and then refuses while the group has
// active members; dlt replay is a dry run unless --execute is given, and then
// republishes each selected record durably to its original topic (the
// dead-letter topic is never changed); dlq requeue is a dry run unless
// --execute is given, and then publishes each message to its original queue
// with a publisher confirm and only then removes it from the dead-letter
// queue, so a failure half-way loses nothing; outbox retry/discard and retry
// retry-now/discard/release act only on the --id or --key named; migrate
// creates or upgrades tables (idempotent), or with --print only prints SQL;
// outbox slot create and drop manage the log-reading relay's slot.
//
// # Exit codes
//
//	0  ok
//	1  a check failed (audit finding, lag above --max-lag, slot missing), or
//	   the command could not do its work: unreachable service, refused
//	   login, unknown group, topic, queue, row or entry; one line on stderr
//	   says why
//	2  malformed command line: unknown command or flag, missing or invalid
//	   value, a password on the command line; one line on stderr says which
package main
