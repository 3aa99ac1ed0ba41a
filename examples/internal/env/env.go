// Package env finds the endpoints of real services for the examples: from
// environment variables (RELIABLE_KAFKA_BROKERS, RELIABLE_AMQP_URL,
// RELIABLE_REDIS_ADDR, RELIABLE_POSTGRES_DSN) or, when a variable is unset,
// from the file .cache/services.env that scripts/services.sh writes at the
// repository's root.
package env

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Names of the variables.
const (
	KafkaBrokers = "RELIABLE_KAFKA_BROKERS"
	AMQPURL      = "RELIABLE_AMQP_URL"
	RedisAddr    = "RELIABLE_REDIS_ADDR"
	PostgresDSN  = "RELIABLE_POSTGRES_DSN"
)

var (
	once sync.Once
	file map[string]string
)

// Lookup returns the variable's value from the environment, else from the
// nearest .cache/services.env above the working directory, else "".
func Lookup(name string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	once.Do(loadFile)
	return file[name]
}

func loadFile() {
	file = map[string]string{}
	dir, err := os.Getwd()
	if err != nil {
		return
	}
	for {
		if f, err := os.Open(filepath.Join(dir, ".cache", "services.env")); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				line := strings.TrimSpace(sc.Text())
				k, v, ok := strings.Cut(line, "=")
				if ok && !strings.HasPrefix(k, "#") {
					file[strings.TrimPrefix(k, "export ")] = strings.Trim(v, `'"`)
				}
			}
			f.Close()
			return
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return
		}
		dir = parent
	}
}
