package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

// A child process is this same binary started with these environment
// variables set; it runs one role until SIGTERM (or, for the writer, until
// its orders are written).
const (
	envRole  = "RELIABLE_SOAK_ROLE"
	envName  = "RELIABLE_SOAK_NAME"
	envIndex = "RELIABLE_SOAK_INDEX"
	envDir   = "RELIABLE_SOAK_DIR"
)

// Roles of child processes.
const (
	roleWriter   = "writer"
	roleRelay    = "relay"
	roleConsumer = "consumer"
)

// isChild reports whether this process was started as a campaign child.
func isChild() bool { return os.Getenv(envRole) != "" }

// childMain runs the role named by the environment and returns the exit
// code.
func childMain() int {
	role, name, dir := os.Getenv(envRole), os.Getenv(envName), os.Getenv(envDir)
	index, _ := strconv.Atoi(os.Getenv(envIndex))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).
		With(slog.String("process", name))
	slog.SetDefault(log)
	cfg, err := readConfig(dir)
	if err != nil {
		log.Error("child start", slog.String("error", err.Error()))
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log.Info("child started", slog.String("role", role), slog.Int("pid", os.Getpid()))
	if os.Getenv(envProfile) != "" {
		go profilePeakHeap(ctx, dir, name, log)
	}
	switch role {
	case roleWriter:
		err = runWriter(ctx, cfg, name, log)
	case roleRelay:
		err = runRelay(ctx, cfg, name, log)
	case roleConsumer:
		err = runConsumer(ctx, cfg, name, index, log)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		log.Error("child failed", slog.String("role", role), slog.String("error", err.Error()))
		return 1
	}
	log.Info("child exited", slog.String("role", role))
	return 0
}
