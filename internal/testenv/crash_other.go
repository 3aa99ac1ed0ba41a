//go:build !linux

package testenv

import (
	"errors"
	"runtime"
)

var errCrashUnsupported = errors.New("testenv: kill -9 of a service is only implemented on linux, not " + runtime.GOOS)

func killPID(int) error           { return errCrashUnsupported }
func cmdline(int) (string, error) { return "", errCrashUnsupported }
func rabbitPID() (int, error)     { return 0, errCrashUnsupported }
