#!/usr/bin/env bash
# CI's short soak campaign: about 20k orders, 10k on Kafka and 10k on
# RabbitMQ, every fault kind at least once on each, the verdict tables
# printed into the log; then the consumer profiles a new user gets, on
# both brokers: the README's quick start (-profile quickstart) and every
# optional consumer field at its zero value (-profile zero), each with three
# instances, scale-up, scale-down, a rolling restart, kill -9, the broker
# fault, connection cuts and a downstream outage (about 80 s each, 2000
# orders over 50 keys, so keys have messages in flight together). Exits non-zero when a campaign lost, duplicated or reordered
# anything, or could not run. Needs the services (scripts/services.sh up);
# run from anywhere.
#
#   bash cmd/reliable-soak/ci.sh                   # both brokers, 10000 orders each, then the profiles
#   SOAK_BROKERS=kafka SOAK_MESSAGES=5000 bash cmd/reliable-soak/ci.sh
#   SOAK_PROFILES=zero bash cmd/reliable-soak/ci.sh    # only the zero profile after the tuned campaign
#   SOAK_PROFILES= bash cmd/reliable-soak/ci.sh        # the tuned campaign only
#   SOAK_MESSAGES=0 bash cmd/reliable-soak/ci.sh       # the log-reading relay's run and the profiles only
#   SOAK_LOG_MESSAGES=0 bash cmd/reliable-soak/ci.sh   # without the log-reading relay's run
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

messages=${SOAK_MESSAGES:-10000}
brokers=${SOAK_BROKERS:-kafka rabbitmq}
profiles=${SOAK_PROFILES-quickstart zero}
profile_messages=${SOAK_PROFILE_MESSAGES:-2000}
bin=$(mktemp -d)/reliable-soak
trap 'rm -rf "$(dirname "$bin")"' EXIT
go build -o "$bin" ./cmd/reliable-soak

status=0
for broker in $brokers; do
	if [ "$messages" = 0 ]; then
		break
	fi
	echo "=== soak campaign: $broker, $messages orders, all faults"
	start=$SECONDS
	if ! "$bin" -broker "$broker" -messages "$messages" -faults all -timeout 20m </dev/null; then
		status=1
		echo "=== soak campaign on $broker FAILED after $((SECONDS - start))s"
	else
		echo "=== soak campaign on $broker passed in $((SECONDS - start))s"
	fi
done

# The log-reading relay (outbox.ModeLog, -relay-mode log): one Kafka run of
# the faults that touch it (the reader or its standby killed with kill -9,
# connections cut, the broker killed, a burst), about 80 s.
# SOAK_LOG_MESSAGES=0 skips it.
log_messages=${SOAK_LOG_MESSAGES:-2000}
if [ "$log_messages" != 0 ] && [[ " $brokers " == *" kafka "* ]]; then
	faults="burst,relay-kill,broker-kill,conn-cut,relay-kill"
	echo "=== soak campaign: kafka, log-reading relay (-relay-mode log), $log_messages orders, $faults"
	start=$SECONDS
	if ! "$bin" -broker kafka -relay-mode log -messages "$log_messages" -keys 100 -rate 60 -burst 600 -fault-gap 2s \
		-faults "$faults" -timeout 10m </dev/null; then
		status=1
		echo "=== soak campaign on kafka, log-reading relay FAILED after $((SECONDS - start))s"
	else
		echo "=== soak campaign on kafka, log-reading relay passed in $((SECONDS - start))s"
	fi
fi

# The profiles' schedule: "all" without the relay kill, the handler-failures
# window and the slow downstream (the tuned campaign above covers them; the
# downstream outage is the harder handler failure, run twice: after the
# burst and in steady traffic), to keep the four runs within about 6
# minutes; a lower rate spreads each share of orders over its fault, so
# kills and restarts meet messages in flight.
for profile in $profiles; do
	poison=500
	if [ "$profile" = zero ]; then
		poison=0 # no dead-letter path: a poison message would hold its key forever
	fi
	for broker in $brokers; do
		brokerfault=broker-kill
		if [ "$broker" = rabbitmq ]; then
			brokerfault=rabbitmq-restart
		fi
		faults="consumer-kill,burst,downstream-outage,rolling-restart,scale-up,$brokerfault,scale-down,downstream-outage,conn-cut"
		echo "=== soak campaign: $broker, profile $profile, $profile_messages orders, 3 consumers, $faults"
		start=$SECONDS
		if ! "$bin" -profile "$profile" -broker "$broker" -messages "$profile_messages" -keys 50 -rate 40 \
			-burst 600 -fault-gap 2s -poison-every "$poison" -faults "$faults" -timeout 10m </dev/null; then
			status=1
			echo "=== soak campaign on $broker, profile $profile FAILED after $((SECONDS - start))s"
		else
			echo "=== soak campaign on $broker, profile $profile passed in $((SECONDS - start))s"
		fi
	done
done
exit $status
