package producer

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
)

// DefaultType is the CloudEvents type given to a message published without
// a Type, since every CloudEvent needs one. Set Message.Type ("order.paid")
// so consumers can tell events apart.
const DefaultType = "reliable.message"

// DefaultSource returns the CloudEvents source a Producer stamps when
// Config.Source is empty: the main package path of the running program, or
// its executable name.
var DefaultSource = sync.OnceValue(func() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Path != "" && bi.Path != "command-line-arguments" {
		return bi.Path
	}
	if exe, err := os.Executable(); err == nil {
		return filepath.Base(exe)
	}
	return "reliable"
})
