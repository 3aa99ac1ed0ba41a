//go:build unix

package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
)

var errWouldBlock = errors.New("lock held elsewhere")

func lockDir() string { return filepath.Join(os.TempDir(), "reliable-testenv") }

func openLockFile(dir, name string) (*os.File, error) {
	// os.OpenFile sets O_CLOEXEC: the lock is not inherited by child processes
	// (scripts/services.sh, brokers started by it).
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// flock sets the lock on f to mode, blocking only when wait is set.
func flock(f *os.File, mode lockMode, wait bool) error {
	how := syscall.LOCK_UN
	switch mode {
	case lockShared:
		how = syscall.LOCK_SH
	case lockExclusive:
		how = syscall.LOCK_EX
	}
	if !wait && mode != lockNone {
		how |= syscall.LOCK_NB
	}
	for {
		err := syscall.Flock(int(f.Fd()), how)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EWOULDBLOCK):
			return errWouldBlock
		default:
			return &os.PathError{Op: "flock", Path: f.Name(), Err: err}
		}
	}
}
