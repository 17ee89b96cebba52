package orchestration

import (
	"errors"
	"fmt"
	"time"
)

// Config of the orchestration service.
type Config struct {
	// Replica names this replica in the active lease; the hub's is stable per data dir so a
	// restarted hub takes its own lease back at once. Default: a random id.
	Replica string
	// ActiveLease is the TTL of the active/standby lease (active.go): a replica that dies
	// is replaced within it.
	ActiveLease time.Duration
	// MaxOutput caps a step's output kept in the run (bytes of JSON); a larger output is
	// replaced by its size and a note. (Large outputs by reference are a later phase.)
	MaxOutput int
}

// DefaultConfig is what the hub runs.
func DefaultConfig() Config {
	return Config{ActiveLease: 10 * time.Second, MaxOutput: 256 << 10}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.ActiveLease < time.Second {
		errs = append(errs, fmt.Errorf("ActiveLease %s: want at least 1s", c.ActiveLease))
	}
	if c.MaxOutput < 1024 {
		errs = append(errs, fmt.Errorf("MaxOutput %d: want at least 1024 bytes", c.MaxOutput))
	}
	return errors.Join(errs...)
}
