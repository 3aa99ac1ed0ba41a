//go:build linux

package testenv

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

func killPID(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

// cmdline returns the command line of process pid, arguments joined by spaces.
func cmdline(pid int) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return "", err
	}
	if len(b) == 0 {
		return "", errNoProcess // a zombie
	}
	return strings.ReplaceAll(string(b), "\x00", " "), nil
}

// rabbitPID finds the RabbitMQ server's Erlang VM: the beam.smp process that
// boots the rabbit application (not a rabbitmqctl node).
func rabbitPID() (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := cmdline(pid)
		if err == nil && strings.Contains(cmd, "beam.smp") && strings.Contains(cmd, "-s rabbit boot") {
			return pid, nil
		}
	}
	return 0, errNoProcess
}
