#!/usr/bin/env bash
# CI's short soak campaign: about 20k orders, 10k on Kafka and 10k on
# RabbitMQ, every fault kind at least once on each, the verdict tables
# printed into the log. Exits
# non-zero when a campaign lost, duplicated or reordered anything, or could
# not run. Needs the services (scripts/services.sh up); run from anywhere.
#
#   bash cmd/reliable-soak/ci.sh                   # both brokers, 10000 orders each
#   SOAK_BROKERS=kafka SOAK_MESSAGES=5000 bash cmd/reliable-soak/ci.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

messages=${SOAK_MESSAGES:-10000}
brokers=${SOAK_BROKERS:-kafka rabbitmq}
bin=$(mktemp -d)/reliable-soak
trap 'rm -rf "$(dirname "$bin")"' EXIT
go build -o "$bin" ./cmd/reliable-soak

status=0
for broker in $brokers; do
	echo "=== soak campaign: $broker, $messages orders, all faults"
	start=$SECONDS
	if ! "$bin" -broker "$broker" -messages "$messages" -faults all -timeout 20m </dev/null; then
		status=1
		echo "=== soak campaign on $broker FAILED after $((SECONDS - start))s"
	else
		echo "=== soak campaign on $broker passed in $((SECONDS - start))s"
	fi
done
exit $status
