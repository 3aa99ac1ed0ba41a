package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"
)

// Exit codes, documented in doc.go.
const (
	exitOK       = 0
	exitFailure  = 1 // a check failed, or the command could not do its work
	exitUsage    = 2 // malformed command line
	defaultLimit = 100
)

// Environment variables that supply endpoints when the flag is not given.
const (
	envKafkaBrokers  = "RELIABLE_KAFKA_BROKERS"
	envAMQPURL       = "RELIABLE_AMQP_URL"
	envManagementURL = "RELIABLE_RABBITMQ_MANAGEMENT_URL"
	envPostgresDSN   = "RELIABLE_POSTGRES_DSN"
)

// run is the whole CLI, testable in-process: it parses args (without the
// program name), does the work, writes results to stdout and errors to
// stderr, and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &app{getenv: os.Getenv, stdout: stdout, stderr: stderr}
	return a.run(ctx, args)
}

// app holds one invocation's environment.
type app struct {
	getenv  func(string) string
	stdout  io.Writer
	stderr  io.Writer
	secrets []string // passwords seen in endpoints, redacted from any output
}

// command is a node of the command tree: a group of subcommands or a leaf.
type command struct {
	name    string
	summary string
	subs    []*command
	// run parses its own flags from args.
	run func(ctx context.Context, a *app, args []string) error
}

func commands() *command {
	return &command{name: "reliablectl", summary: "operate services built on the reliable SDK", subs: []*command{
		{name: "audit", summary: "check the durability settings of topics and queues", subs: []*command{
			{name: "kafka", summary: "replication factor, min.insync.replicas, unclean leader election of Kafka topics", run: auditKafka},
			{name: "rabbitmq", summary: "durability, type, dead-lettering and overflow of RabbitMQ queues", run: auditRabbitMQ},
		}},
		{name: "dlt", summary: "list, inspect and replay Kafka dead-letter topics", subs: []*command{
			{name: "topics", summary: "dead-letter topics and how many records they hold", run: dltTopics},
			{name: "list", summary: "records of a dead-letter topic: ID, key, cause, origin, attempts", run: dltList},
			{name: "show", summary: "one record with its headers and payload", run: dltShow},
			{name: "replay", summary: "republish records to their original topic (dry run unless --execute)", run: dltReplay},
		}},
		{name: "lag", summary: "Kafka consumer-group lag per partition, with a hot-partition warning", run: lagCmd},
		{name: "offsets", summary: "move a Kafka consumer group's committed offsets", subs: []*command{
			{name: "reset", summary: "reset a group's offsets to a time or an offset (dry run unless --execute)", run: offsetsReset},
		}},
		{name: "outbox", summary: "inspect the transactional outbox and act on dead rows", subs: []*command{
			{name: "status", summary: "pending rows, oldest pending age, dead rows", run: outboxStatus},
			{name: "retry", summary: "make a dead row pending again", run: outboxRetry},
			{name: "discard", summary: "give up on a dead row: it is never published", run: outboxDiscard},
		}},
		{name: "retry", summary: "inspect the retry table and act on its entries", subs: []*command{
			{name: "stats", summary: "pending, dead and due entries, blocked keys, oldest due entry", run: retryStats},
			{name: "list", summary: "list entries, by key and state", run: retryList},
			{name: "show", summary: "show one entry", run: retryShow},
			{name: "retry-now", summary: "make an entry, or every entry of a key, due now", run: retryNow},
			{name: "discard", summary: "drop an entry: it no longer blocks its key and is never replayed", run: retryDiscard},
			{name: "release", summary: "unblock a key whose head entry is dead", run: retryRelease},
		}},
	}}
}

// usageError is a malformed command line: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// findingsError means the command worked and found problems (a failed audit
// check, lag above the limit): exit code 1 after the report was printed.
type findingsError struct{ msg string }

func (e *findingsError) Error() string { return e.msg }

func (a *app) run(ctx context.Context, args []string) int {
	root := commands()
	cmd, path := root, []string{root.name}
	for cmd.run == nil {
		if len(args) == 0 {
			a.printGroupUsage(a.stderr, cmd, path)
			return exitUsage
		}
		name := args[0]
		if name == "-h" || name == "--help" || name == "help" {
			a.printGroupUsage(a.stdout, cmd, path)
			return exitOK
		}
		var next *command
		for _, s := range cmd.subs {
			if s.name == name {
				next = s
			}
		}
		if next == nil {
			a.errorf(path, "unknown command %q (run '%s --help')", name, strings.Join(path, " "))
			return exitUsage
		}
		cmd, path, args = next, append(path, name), args[1:]
	}
	err := cmd.run(ctx, a, args)
	var ue *usageError
	var fe *findingsError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		a.errorf(path, "%s (run '%s --help')", ue.msg, strings.Join(path, " "))
		return exitUsage
	case errors.As(err, &fe):
		a.errorf(path, "%s", fe.msg)
		return exitFailure
	case errors.Is(err, context.DeadlineExceeded):
		a.errorf(path, "timed out (raise --timeout): %v", err)
		return exitFailure
	default:
		a.errorf(path, "%v", err)
		return exitFailure
	}
}

// errorf prints one line on stderr, with every known secret redacted.
func (a *app) errorf(path []string, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	msg = strings.Join(strings.Fields(strings.ReplaceAll(msg, "\n", "; ")), " ")
	fmt.Fprintln(a.stderr, a.redact(strings.Join(path, " ")+": "+msg))
}

// redact hides every known password in s where it appears as one: in a URL
// (":pw@", also URL-escaped) or a DSN ("password=pw"). A bare occurrence is
// hidden too when the password is long enough not to be a common word (a
// test password such as "reliable" would otherwise blank out the program's
// own name).
func (a *app) redact(s string) string {
	for _, pw := range a.secrets {
		if pw == "" {
			continue
		}
		for _, form := range []string{pw, url.UserPassword("", pw).String()[1:]} {
			s = strings.ReplaceAll(s, ":"+form+"@", ":xxxxx@")
			s = strings.ReplaceAll(s, "password="+form, "password=xxxxx")
		}
		if len(pw) >= 12 {
			s = strings.ReplaceAll(s, pw, "xxxxx")
		}
	}
	return s
}

func (a *app) printGroupUsage(w io.Writer, cmd *command, path []string) {
	fmt.Fprintf(w, "%s: %s\n\nUsage:\n  %s <command> [flags]\n\nCommands:\n", strings.Join(path, " "), cmd.summary, strings.Join(path, " "))
	for _, s := range cmd.subs {
		fmt.Fprintf(w, "  %-10s %s\n", s.name, s.summary)
	}
	fmt.Fprintf(w, "\nRun '%s <command> --help' for a command's flags.\n", strings.Join(path, " "))
	if len(path) == 1 {
		fmt.Fprint(w, exitCodesHelp)
	}
}

const exitCodesHelp = `
Endpoints come from flags or the environment: RELIABLE_KAFKA_BROKERS,
RELIABLE_RABBITMQ_MANAGEMENT_URL (or RELIABLE_AMQP_URL), RELIABLE_POSTGRES_DSN.

Exit codes: 0 ok; 1 a check failed or the command could not do its work
(one line on stderr says why); 2 malformed command line.
`

// flags is a leaf command's flag set with the common flags.
type flags struct {
	*flag.FlagSet
	a       *app
	path    string
	output  string
	timeout time.Duration
}

// newFlags returns a flag set for the command "reliablectl <path>"; usage is
// the synopsis after the command path, and help the description.
func (a *app) newFlags(path, synopsis, help string) *flags {
	f := &flags{FlagSet: flag.NewFlagSet(path, flag.ContinueOnError), a: a, path: path}
	f.SetOutput(io.Discard)
	f.StringVar(&f.output, "output", "table", "output format: table or json")
	f.DurationVar(&f.timeout, "timeout", 30*time.Second, "give up after this long")
	f.Usage = func() {
		w := a.stdout
		fmt.Fprintf(w, "Usage: reliablectl %s %s\n\n%s\n\nFlags:\n", path, synopsis, strings.TrimSpace(help))
		f.SetOutput(w)
		f.PrintDefaults()
		f.SetOutput(io.Discard)
		fmt.Fprint(w, exitCodesHelp)
	}
	return f
}

// parse parses args, prints the help for -h/--help (returning flag.ErrHelp),
// and checks the common flags and that no positional arguments are left.
func (f *flags) parse(args []string) error {
	if err := f.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			f.Usage()
			return err
		}
		return usagef("%v", err)
	}
	if f.NArg() > 0 {
		return usagef("unexpected argument %q", f.Arg(0))
	}
	if f.output != "table" && f.output != "json" {
		return usagef("--output must be table or json, not %q", f.output)
	}
	if f.timeout <= 0 {
		return usagef("--timeout must be positive")
	}
	return nil
}

// required returns a usage error naming the first empty flag among names.
func (f *flags) required(values map[string]string) error {
	names := make([]string, 0, len(values))
	for n := range values {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if values[n] == "" {
			return usagef("--%s is required", n)
		}
	}
	return nil
}

// endpoint returns the flag's value or else the environment variable's,
// registering the URL's password (if any) as a secret.
func (a *app) endpoint(flagValue, env string) string {
	v := flagValue
	if v == "" {
		v = strings.TrimSpace(a.getenv(env))
	}
	a.secrets = append(a.secrets, passwordOf(v))
	return v
}

// listFlag is a repeatable, comma-separated string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

// Set adds the comma-separated values of s.
func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}
