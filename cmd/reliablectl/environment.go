package main

import (
	"strings"

	"github.com/reliable-go/reliable/adapters/kafka"
	"github.com/reliable-go/reliable/adapters/rabbitmq"
)

// envEnvironment supplies --environment.
const envEnvironment = "RELIABLE_ENVIRONMENT"

// environmentHelp describes --environment on both brokers.
const environmentHelp = "environment (prod, staging): names given are the application's and get its prefix, env.name, as the adapters' Environment does (default $" + envEnvironment + "; empty: names are the broker's as given)"

// envNames is --environment and the names it prefixes: after the flags are
// parsed, each registered name becomes the broker's name, with
// kafka.EnvironmentName or rabbitmq.EnvironmentName (the same rule on both
// brokers: env + "." + name).
type envNames struct {
	env     string
	broker  string // "kafka" or "rabbitmq"
	names   []*string
	lists   []*listFlag
	applied bool
}

// registerEnvironment adds --environment to f; broker picks the adapter
// whose naming applies.
func (f *flags) registerEnvironment(broker string) *envNames {
	e := &envNames{broker: broker}
	f.StringVar(&e.env, "environment", "", environmentHelp)
	f.checks = append(f.checks, func() error { e.apply(f.a); return nil })
	return e
}

// prefix registers names to prefix.
func (e *envNames) prefix(names ...*string) { e.names = append(e.names, names...) }

// prefixList registers lists of names to prefix.
func (e *envNames) prefixList(lists ...*listFlag) { e.lists = append(e.lists, lists...) }

func (e *envNames) apply(a *app) {
	if e.applied {
		return
	}
	e.applied = true
	e.env = orEnv(a, e.env, envEnvironment)
	for _, n := range e.names {
		if *n != "" {
			*n = e.name(*n)
		}
	}
	for _, l := range e.lists {
		for i, n := range *l {
			(*l)[i] = e.name(n)
		}
	}
}

// name returns the broker's name of an application's name.
func (e *envNames) name(n string) string {
	if e.broker == "rabbitmq" {
		return rabbitmq.EnvironmentName(e.env, n)
	}
	return kafka.EnvironmentName(e.env, n)
}

// owns reports whether a broker name belongs to the environment (every
// name does without one).
func (e *envNames) owns(brokerName string) bool {
	if e.broker == "rabbitmq" {
		_, ok := rabbitmq.TrimEnvironment(e.env, brokerName)
		return ok
	}
	_, ok := kafka.TrimEnvironment(e.env, brokerName)
	return ok
}

// hint is what an error about an unknown name adds.
func (e *envNames) hint() string {
	if e.env != "" {
		return "with --environment " + e.env + " names are the application's, prefixed " + strings.TrimSuffix(e.name("x"), "x")
	}
	return "names are the broker's, with the environment prefix, or give --environment"
}
