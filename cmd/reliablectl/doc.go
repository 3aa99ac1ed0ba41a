// Command reliablectl is the operator's tool for services built on the
// reliable SDK: what an on-call engineer needs when a backlog grows or a
// message is stuck (L07, L11, L14, L17, L18).
//
// Usage:
//
//	reliablectl audit kafka --topic prod.orders
//	reliablectl audit rabbitmq --topic orders --group kitchen
//	reliablectl dlt topics | list --topic prod.orders.dlt | show --topic T --partition P --offset O
//	reliablectl dlt replay --topic prod.orders.dlt (--partition P --offset O | --id ID | --all) [--execute]
//	reliablectl lag --group prod.kitchen --topic prod.orders
//	reliablectl offsets reset --group prod.kitchen --topic prod.orders --to-time -2h [--execute]
//	reliablectl outbox status | retry --id N | discard --id N
//	reliablectl retry stats|list|show|retry-now|discard|release --group prod.kitchen ...
//
// Every command has --help, --output table|json and --timeout.
//
// Endpoints come from flags or, when a flag is not given, the environment:
// RELIABLE_KAFKA_BROKERS (--brokers), RELIABLE_RABBITMQ_MANAGEMENT_URL
// (--management-url; derived from RELIABLE_AMQP_URL's host and credentials
// when unset), RELIABLE_POSTGRES_DSN (--postgres-dsn). Passwords in them are
// never printed.
//
// Nothing is changed without an explicit flag or command: audit, lag,
// outbox status, retry stats, list and show, and dlt topics, list and show
// only read; offsets reset is a dry run unless --execute is given, and then
// refuses while the group has active members; dlt replay is a dry run unless
// --execute is given, and then republishes each selected record durably to
// its original topic (the dead-letter topic is never changed); outbox
// retry/discard and retry retry-now/discard/release act only on the --id or
// --key named.
//
// Exit codes:
//
//	0  ok
//	1  a check failed (audit finding, lag above --max-lag), or the command
//	   could not do its work: unreachable service, unknown group, topic,
//	   queue, row or entry; one line on stderr says why
//	2  malformed command line: unknown command or flag, missing or invalid
//	   value; one line on stderr says which
package main
