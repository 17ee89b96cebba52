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
	// SnapshotEvery: a run's snapshot is rewritten after this many events of its history
	// (besides when it starts, waits or ends), bounding what a resume reads.
	SnapshotEvery int
	// HistoryMaxAge and HistoryMaxBytes bound the WORKFLOW_RUNS stream (history.go).
	HistoryMaxAge   time.Duration
	HistoryMaxBytes int64
}

// DefaultConfig is what the hub runs.
func DefaultConfig() Config {
	return Config{ActiveLease: 10 * time.Second, MaxOutput: 256 << 10, SnapshotEvery: 32,
		HistoryMaxAge: 30 * 24 * time.Hour, HistoryMaxBytes: 2 << 30}
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
	if c.SnapshotEvery < 1 {
		errs = append(errs, fmt.Errorf("SnapshotEvery %d: want at least 1", c.SnapshotEvery))
	}
	if c.HistoryMaxAge < time.Hour {
		errs = append(errs, fmt.Errorf("HistoryMaxAge %s: want at least 1h (runs wait for approvals)", c.HistoryMaxAge))
	}
	if c.HistoryMaxBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("HistoryMaxBytes %d: want at least 1 MiB", c.HistoryMaxBytes))
	}
	return errors.Join(errs...)
}
