//go:build !unix

package testenv

import (
	"errors"
	"os"
	"path/filepath"
)

// Without flock(2) the services are not shared between test processes safely;
// locking is a no-op there.

var errWouldBlock = errors.New("lock held elsewhere")

func lockDir() string { return filepath.Join(os.TempDir(), "reliable-testenv") }

func openLockFile(dir, name string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE, 0o666)
}

func flock(*os.File, lockMode, bool) error { return nil }
