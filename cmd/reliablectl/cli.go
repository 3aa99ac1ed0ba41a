package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
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
	// credentials (passwords from the environment or a file) are redacted
	// wherever they appear, even as a bare word when long enough.
	credentials []string
	keyFormat   string // --key-format
}

// group describes a command that only holds subcommands.
type group struct {
	name, summary string
	subs          []*cobra.Command
}

// commands returns the command tree of one invocation: a fresh tree each
// time, because the leaves keep their parsed flag values in closures.
func (a *app) commands() *cobra.Command {
	root := a.group(group{name: "reliablectl", summary: "operate services built on the reliable SDK", subs: []*cobra.Command{
		a.group(group{name: "audit", summary: "check the durability settings of topics and queues", subs: []*cobra.Command{
			leaf(auditKafka(a), "replication factor, min.insync.replicas, unclean leader election of Kafka topics"),
			leaf(auditRabbitMQ(a), "durability, type, dead-lettering and overflow of RabbitMQ queues"),
		}}),
		a.group(group{name: "dlt", summary: "list, inspect and replay Kafka dead-letter topics", subs: []*cobra.Command{
			leaf(dltTopics(a), "dead-letter topics and how many records they hold"),
			leaf(dltList(a), "records of a dead-letter topic: ID, key, cause, origin, attempts"),
			leaf(dltShow(a), "one record with its headers and payload"),
			leaf(dltReplay(a), "republish records to their original topic (dry run unless --execute)"),
		}}),
		a.group(group{name: "dedupe", summary: "look up message IDs in the PostgreSQL and Redis dedupe stores", subs: []*cobra.Command{
			leaf(dedupeShow(a), "whether a message ID is claimed, done, expired or absent, and since when"),
			leaf(dedupeList(a), "a namespace's records, by state"),
		}}),
		a.group(group{name: "dlq", summary: "list, inspect and requeue RabbitMQ dead-letter queues", subs: []*cobra.Command{
			leaf(dlqList(a), "messages of a group's dead-letter queue: ID, key, cause, origin, attempts"),
			leaf(dlqShow(a), "one message with its headers and payload"),
			leaf(dlqRequeue(a), "move messages back to their queue (dry run unless --execute)"),
		}}),
		leaf(lagCmd(a), "Kafka consumer-group lag per partition, with a hot-partition warning"),
		leaf(migrateCmd(a), "create or upgrade the outbox, retry and dedupe tables, or --print their SQL"),
		a.group(group{name: "offsets", summary: "move a Kafka consumer group's committed offsets", subs: []*cobra.Command{
			leaf(offsetsReset(a), "reset a group's offsets to a time or an offset (dry run unless --execute)"),
		}}),
		a.group(group{name: "outbox", summary: "inspect the transactional outbox and act on dead rows", subs: []*cobra.Command{
			leaf(outboxStatus(a), "pending rows, oldest pending age, dead rows"),
			leaf(outboxRetry(a), "make a dead row pending again"),
			leaf(outboxDiscard(a), "give up on a dead row: it is never published"),
			a.group(group{name: "slot", summary: "the log-reading relay's replication slot", subs: []*cobra.Command{
				leaf(slotStatus(a), "whether the slot exists, is streamed from, and how much WAL it retains"),
				leaf(slotCreate(a), "create the publication and the replication slot"),
				leaf(slotDrop(a), "drop the slot and its publication (nothing is lost)"),
			}}),
		}}),
		a.group(group{name: "retry", summary: "inspect the retry table and act on its entries", subs: []*cobra.Command{
			leaf(retryStats(a), "pending, dead and due entries, blocked keys, oldest due entry"),
			leaf(retryList(a), "list entries, by key and state"),
			leaf(retryShow(a), "show one entry"),
			leaf(retryNow(a), "make an entry, or every entry of a key, due now"),
			leaf(retryDiscard(a), "drop an entry: it no longer blocks its key and is never replayed"),
			leaf(retryRelease(a), "unblock a key whose head entry is dead"),
		}}),
	}})
	root.Long = "reliablectl: operate services built on the reliable SDK.\n" + exitCodesHelp
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usagef("%v", err) })
	root.CompletionOptions.HiddenDefaultCmd = true
	return root
}

// leaf sets a leaf command's one-line summary.
func leaf(c *cobra.Command, summary string) *cobra.Command {
	c.Short = summary
	return c
}

// group returns a command that only dispatches: run bare, it prints its
// help on stderr and exits 2; an unknown subcommand is a usage error.
func (a *app) group(g group) *cobra.Command {
	c := &cobra.Command{
		Use:   g.name,
		Short: g.summary,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q", args[0])
			}
			return nil
		},
		RunE: func(c *cobra.Command, _ []string) error {
			c.SetOut(a.stderr)
			_ = c.Help()
			return &usageError{shown: true}
		},
	}
	c.AddCommand(g.subs...)
	return c
}

// usageError is a malformed command line: exit code 2.
type usageError struct {
	msg   string
	shown bool // the help was printed already: print nothing more
}

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// findingsError means the command worked and found problems (a failed audit
// check, lag above the limit): exit code 1 after the report was printed.
type findingsError struct{ msg string }

func (e *findingsError) Error() string { return e.msg }

func (a *app) run(ctx context.Context, args []string) int {
	root := a.commands()
	root.SetArgs(args)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SilenceErrors = true
	root.SilenceUsage = true
	cmd, err := root.ExecuteContextC(ctx)
	path := "reliablectl"
	if cmd != nil {
		path = cmd.CommandPath()
	}
	var ue *usageError
	var fe *findingsError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		if !ue.shown {
			a.errorf(path, "%s (run '%s --help')", ue.msg, path)
		}
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
func (a *app) errorf(path string, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	msg = strings.Join(strings.Fields(strings.ReplaceAll(msg, "\n", "; ")), " ")
	fmt.Fprintln(a.stderr, a.redact(path+": "+msg))
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
	for _, c := range a.credentials {
		// Bare only when long enough not to be a common word: a password
		// such as "reliable" would otherwise blank out the program's name.
		if len(c) < 12 {
			continue
		}
		for _, form := range []string{c, url.QueryEscape(c), url.PathEscape(c), strconv.Quote(c)[1 : len(strconv.Quote(c))-1]} {
			s = strings.ReplaceAll(s, form, "xxxxx")
		}
	}
	return s
}

const exitCodesHelp = `
Endpoints come from flags or the environment: RELIABLE_KAFKA_BROKERS,
RELIABLE_AMQP_URL, RELIABLE_RABBITMQ_MANAGEMENT_URL, RELIABLE_POSTGRES_DSN,
RELIABLE_REDIS_ADDR. Passwords never come from flags: put them in those
variables, in RELIABLE_KAFKA_SASL_PASSWORD, RELIABLE_AMQP_PASSWORD or
RELIABLE_REDIS_PASSWORD, or in a file (--*-password-file, or the same
variables with _FILE).

Exit codes: 0 ok; 1 a check failed or the command could not do its work
(one line on stderr says why); 2 malformed command line.
`

// flags is a leaf command with the common flags.
type flags struct {
	*pflag.FlagSet
	cmd     *cobra.Command
	a       *app
	output  string
	timeout time.Duration
	checks  []func() error // more checks of the flags, before the work
}

// newFlags returns the command "reliablectl <path>"; synopsis is the usage
// after the command path, and help the description.
func (a *app) newFlags(path, synopsis, help string) *flags {
	name := path[strings.LastIndex(path, " ")+1:]
	c := &cobra.Command{
		Use:  name + " " + synopsis,
		Long: strings.TrimSpace(help) + "\n" + exitCodesHelp,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unexpected argument %q", args[0])
			}
			return nil
		},
	}
	f := &flags{FlagSet: c.Flags(), cmd: c, a: a}
	f.SortFlags = false
	f.StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	f.DurationVar(&f.timeout, "timeout", 30*time.Second, "give up after this long")
	return f
}

// runE sets the command's work, run after the common flags were checked,
// and returns the command.
func (f *flags) runE(run func(ctx context.Context) error) *cobra.Command {
	f.cmd.RunE = func(c *cobra.Command, _ []string) error {
		if f.output != "table" && f.output != "json" {
			return usagef("--output must be table or json, not %q", f.output)
		}
		if f.timeout <= 0 {
			return usagef("--timeout must be positive")
		}
		for _, check := range f.checks {
			if err := check(); err != nil {
				return err
			}
		}
		return run(c.Context())
	}
	return f.cmd
}

// within runs work with ctx bounded by --timeout and the connection that
// open returns, closed when work returns: what every command that talks to
// a service does once its flags are checked. An error of open is returned
// as it is.
func within[C any](ctx context.Context, f *flags, open func(context.Context) (C, error), closeC func(C), work func(context.Context, C) error) error {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	c, err := open(ctx)
	if err != nil {
		return err
	}
	defer closeC(c)
	return work(ctx, c)
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
// registering the URL's password (if any) as a secret. A password in the
// flag is refused: argv is visible to every user of the machine (ps,
// /proc) and lands in shell history.
func (a *app) endpoint(flagName, flagValue, env string) (string, error) {
	if pw := passwordOf(flagValue); pw != "" {
		a.secrets = append(a.secrets, pw)
		return "", usagef("no password on the command line (other users see it in ps): put the URL or DSN with its password in $%s, or leave the password out of --%s and set it in the environment", env, flagName)
	}
	v := flagValue
	if v == "" {
		v = strings.TrimSpace(a.getenv(env))
	}
	a.secrets = append(a.secrets, passwordOf(v))
	return v, nil
}

// listFlag is a repeatable, comma-separated string flag.
type listFlag []string

// Type names the flag's value in the help.
func (l *listFlag) Type() string { return "strings" }

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
