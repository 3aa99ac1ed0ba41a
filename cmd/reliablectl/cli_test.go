package main

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Every command has --help, printed on stdout with exit code 0, and every
// leaf command lists its flags.
func TestHelp(t *testing.T) {
	var walk func(c *cobra.Command, path []string)
	n := 0
	walk = func(c *cobra.Command, path []string) {
		args := append(append([]string{}, path...), "--help")
		r := cli(t, nil, args...)
		r.expect(t, exitOK, "")
		n++
		if !strings.Contains(r.stdout, "Usage") {
			t.Errorf("%v: no usage in %q", args, r.stdout)
		}
		if !c.HasSubCommands() && !strings.Contains(r.stdout, "--output") {
			t.Errorf("%v: help lists no flags", args)
		}
		for _, s := range c.Commands() {
			if s.Name() == "help" || s.Name() == "completion" {
				continue
			}
			walk(s, append(path, s.Name()))
		}
	}
	walk((&app{}).commands(), nil)
	if n < 23 {
		t.Fatalf("walked %d commands, want the whole tree", n)
	}
}

// Malformed command lines exit 2 with one line on stderr, before any
// connection is attempted.
func TestUsageErrors(t *testing.T) {
	env := map[string]string{envKafkaBrokers: "127.0.0.1:1", envPostgresDSN: "postgres://u:p@127.0.0.1:1/db"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{}, ""},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"audit", "nosql"}, `unknown command "nosql"`},
		{[]string{"lag", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"lag"}, "--group is required"},
		{[]string{"lag", "--group", "g", "extra"}, `unexpected argument "extra"`},
		{[]string{"lag", "--group", "g", "--output", "yaml"}, "--output must be table or json"},
		{[]string{"lag", "--group", "g", "--timeout", "soon"}, `invalid argument "soon" for "--timeout"`},
		{[]string{"lag", "--group", "g", "--skew-share", "2"}, "--skew-share"},
		{[]string{"audit", "kafka"}, "--topic is required"},
		{[]string{"audit", "rabbitmq", "--group", "g"}, "--group needs --topic"},
		{[]string{"offsets", "reset", "--group", "g", "--topic", "t"}, "exactly one of --to-time and --to-offset"},
		{[]string{"offsets", "reset", "--group", "g", "--topic", "t", "--to-time", "-1h", "--to-offset", "0"}, "exactly one"},
		{[]string{"offsets", "reset", "--group", "g", "--topic", "t", "--to-time", "2h"}, "must be negative"},
		{[]string{"offsets", "reset", "--group", "g", "--topic", "t", "--to-time", "yesterday"}, "neither an RFC 3339 time"},
		{[]string{"offsets", "reset", "--group", "g", "--topic", "t", "--to-offset", "-5"}, "--to-offset must be"},
		{[]string{"offsets", "reset", "--group", "g", "--topic", "t", "--to-offset", "0", "--partition", "x"}, "not a partition number"},
		{[]string{"dlt", "list"}, "--topic is required"},
		{[]string{"dlt", "list", "--topic", "t", "--offset", "3"}, "--offset needs --partition"},
		{[]string{"dlt", "show", "--topic", "t"}, "--partition and --offset are required"},
		{[]string{"dlt", "replay", "--topic", "t"}, "exactly one of --partition/--offset, --id and --all"},
		{[]string{"dlt", "replay", "--topic", "t", "--all", "--id", "x"}, "exactly one"},
		{[]string{"outbox", "retry"}, "--id is required"},
		{[]string{"outbox", "discard", "--id", "abc"}, `invalid argument "abc" for "--id"`},
		{[]string{"retry", "list"}, "--group is required"},
		{[]string{"retry", "list", "--group", "g", "--state", "sleeping"}, `--state "sleeping"`},
		{[]string{"retry", "retry-now", "--group", "g"}, "exactly one of --id and --key"},
		{[]string{"retry", "release", "--group", "g"}, "--key is required"},
	} {
		r := cli(t, env, c.args...)
		if r.code != exitUsage {
			t.Errorf("%v: exit %d, want %d", c.args, r.code, exitUsage)
			continue
		}
		if strings.Count(r.stderr, "\n") > 1 && c.want != "" {
			t.Errorf("%v: stderr is more than one line: %q", c.args, r.stderr)
		}
		if !strings.Contains(r.stderr, c.want) {
			t.Errorf("%v: stderr %q does not say %q", c.args, r.stderr, c.want)
		}
	}
}

// Without a flag or an environment variable for the endpoint, the command
// says which is missing.
func TestMissingEndpoint(t *testing.T) {
	cli(t, nil, "lag", "--group", "g").expect(t, exitUsage, "no Kafka brokers: set --brokers or $RELIABLE_KAFKA_BROKERS")
	cli(t, nil, "outbox", "status").expect(t, exitUsage, "no PostgreSQL DSN")
	cli(t, nil, "audit", "rabbitmq", "--queue", "q").expect(t, exitUsage, "no RabbitMQ management URL")
}

// An unreachable service fails fast with one line, and the password in its
// URL (given in the environment) is never printed.
func TestUnreachable(t *testing.T) {
	const pw = "s3cret-Pa55"
	for _, c := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, []string{"lag", "--group", "g", "--brokers", "127.0.0.1:1"}, "cannot reach Kafka at 127.0.0.1:1"},
		{nil, []string{"audit", "kafka", "--topic", "t", "--brokers", "127.0.0.1:1"}, "cannot reach Kafka"},
		{nil, []string{"offsets", "reset", "--group", "g", "--topic", "t", "--to-offset", "0", "--brokers", "127.0.0.1:1"}, "cannot reach Kafka"},
		{map[string]string{envPostgresDSN: "postgres://app:" + pw + "@127.0.0.1:1/db"}, []string{"outbox", "status"}, "cannot connect to PostgreSQL at 127.0.0.1:1"},
		{map[string]string{envPostgresDSN: "host=127.0.0.1 port=1 user=app password=" + pw}, []string{"retry", "list", "--group", "g"}, "cannot connect to PostgreSQL"},
		{map[string]string{envManagementURL: "http://app:" + pw + "@127.0.0.1:1"}, []string{"audit", "rabbitmq", "--queue", "q"}, "cannot reach the RabbitMQ management API at http://127.0.0.1:1"},
	} {
		start := time.Now()
		r := cli(t, c.env, c.args...)
		r.expect(t, exitFailure, c.want)
		if strings.Contains(r.stdout+r.stderr, pw) {
			t.Errorf("%v printed the password: %q", c.args, r.stderr)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%v took %s to fail", c.args, d)
		}
	}
}

// A password on the command line is refused before anything connects, and
// the refusal does not repeat it.
func TestPasswordInArgvRefused(t *testing.T) {
	const pw = "s3cret-Pa55"
	for _, args := range [][]string{
		{"outbox", "status", "--postgres-dsn", "postgres://app:" + pw + "@127.0.0.1:1/db"},
		{"retry", "list", "--group", "g", "--postgres-dsn", "host=127.0.0.1 port=1 user=app password=" + pw},
		{"audit", "rabbitmq", "--queue", "q", "--management-url", "http://app:" + pw + "@127.0.0.1:1"},
		{"audit", "rabbitmq", "--queue", "q", "--amqp-url", "amqp://app:" + pw + "@127.0.0.1:1/"},
		{"lag", "--group", "g", "--brokers", "127.0.0.1:1", "--kafka-sasl-mechanism", "PLAIN", "--kafka-sasl-password", pw},
	} {
		r := cli(t, nil, args...)
		r.expect(t, exitUsage, "no password on the command line")
		if strings.Contains(r.stdout+r.stderr, pw) {
			t.Errorf("%v printed the password: %q", args, r.stderr)
		}
	}
}

// The environment supplies endpoints, and a management URL is derived from
// the AMQP URL when only that one is set.
func TestEndpointsFromEnvironment(t *testing.T) {
	a := &app{getenv: func(k string) string {
		return map[string]string{envAMQPURL: "amqp://app:pw@rabbit.internal:5672/orders"}[k]
	}}
	m, vhost, err := a.connectManagement("", "", nil, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.base.String() != "http://rabbit.internal:15672" || m.user != "app" || m.pass != "pw" || vhost != "orders" {
		t.Fatalf("derived %s user %q vhost %q", m.base, m.user, vhost)
	}
	if got, _ := a.endpoint("brokers", "", envKafkaBrokers); got != "" {
		t.Fatalf("brokers %q from an empty environment", got)
	}
	if got, _ := a.endpoint("brokers", "flag:9092", envKafkaBrokers); got != "flag:9092" {
		t.Fatalf("the flag must win: %q", got)
	}
}

func TestRedact(t *testing.T) {
	a := &app{secrets: []string{"reliable", passwordOf("postgres://u:p%40ss@h/db"), passwordOf("host=h password=longsecretvalue")}}
	for in, want := range map[string]string{
		"reliablectl: amqp://reliable:reliable@h/":     "reliablectl: amqp://reliable:xxxxx@h/",
		"dial postgres://u:p%40ss@h/db":                "dial postgres://u:xxxxx@h/db",
		"cannot parse host=h password=longsecretvalue": "cannot parse host=h password=xxxxx",
		"bare longsecretvalue":                         "bare xxxxx",
	} {
		if got := a.redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
	a = &app{}
	a.addSecret("reliable")
	a.addSecret("s3cret pass/word+1")
	for in, want := range map[string]string{
		"reliablectl: amqp://u:reliable@h/":                     "reliablectl: amqp://u:xxxxx@h/",
		"SASL said s3cret pass/word+1":                          "SASL said xxxxx",
		"url s3cret+pass%2Fword%2B1 and s3cret%20pass%2Fword+1": "url xxxxx and xxxxx",
		`quoted "s3cret pass/word+1"`:                           `quoted "xxxxx"`,
	} {
		if got := a.redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
	if got := redactURL("http://u:pw@h:15672/x"); got != "http://u:xxxxx@h:15672/x" {
		t.Errorf("redactURL = %q", got)
	}
}

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	got, err := parseTime("-90m", now)
	if err != nil || !got.Equal(now.Add(-90*time.Minute)) {
		t.Fatalf("parseTime(-90m) = %v, %v", got, err)
	}
	got, err = parseTime("2026-04-30T08:00:00+02:00", now)
	if err != nil || !got.Equal(time.Date(2026, 4, 30, 6, 0, 0, 0, time.UTC)) {
		t.Fatalf("parseTime(RFC 3339) = %v, %v", got, err)
	}
}

// No command takes a password as a flag value: every flag about a password
// names a file, except the hidden --kafka-sasl-password that only exists to
// refuse it. And --help shows no password of the environment.
func TestNoPasswordFlags(t *testing.T) {
	const pw = "env-s3cret-Pa55word"
	env := map[string]string{envKafkaSASLPassword: pw, envAMQPPassword: pw, envRedisPassword: pw,
		envAMQPURL: "amqp://u:" + pw + "@h/", envPostgresDSN: "postgres://u:" + pw + "@h/db", envManagementURL: "http://u:" + pw + "@h:15672"}
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		c.Flags().VisitAll(func(fl *pflag.Flag) {
			if strings.Contains(fl.Name, "password") && !strings.HasSuffix(fl.Name, "-file") && !fl.Hidden {
				t.Errorf("%v has a password flag --%s", path, fl.Name)
			}
		})
		r := cli(t, env, append(append([]string{}, path...), "--help")...)
		if strings.Contains(r.stdout+r.stderr, pw) {
			t.Errorf("%v --help shows the password", path)
		}
		for _, s := range c.Commands() {
			walk(s, append(path, s.Name()))
		}
	}
	walk((&app{}).commands(), nil)
}
