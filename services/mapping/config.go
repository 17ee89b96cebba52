package mapping

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// Config of the mapping service.
type Config struct {
	// PatternsDir, when set, holds *.yaml pattern files that replace (same name) or add to
	// the embedded ones.
	PatternsDir string
	// Depth is how many hops a map follows from its entry unless the service says otherwise.
	Depth int
	// MaxNodes bounds one map (a warning says when it stopped there).
	MaxNodes int
	// Parallel is how many hosts of one level of a map are probed at once.
	Parallel int
	// ProbeTimeout bounds one ssh_exec probe (connect, log in, run the commands).
	ProbeTimeout time.Duration
	// Every is the default re-mapping period of a service (0: only by hand).
	Every time.Duration
	// Tick is how often the scheduler looks for services due.
	Tick time.Duration
	// LeaseTTL is the scheduler lease's TTL (one replica re-maps).
	LeaseTTL time.Duration
	// Replica names this replica for the lease and its mapping runs; stable across
	// restarts, so a restarted replica resumes its own runs at once; empty: a random name.
	Replica string
	// RunHeartbeat is how often a mapping in progress says it is alive; a run whose
	// heartbeat is older than RunStale is resumed by the scheduler's replica.
	RunHeartbeat, RunStale time.Duration
	// MaxAttempts bounds how often one run is started (resumes included) before it is
	// marked failed: a map that kills its replica every time is not retried forever.
	MaxAttempts int
}

// DefaultConfig is what the hub runs.
func DefaultConfig() Config {
	return Config{Depth: 6, MaxNodes: 500, Parallel: 8, ProbeTimeout: 30 * time.Second, Every: time.Hour,
		Tick: 30 * time.Second, LeaseTTL: 30 * time.Second, RunHeartbeat: 5 * time.Second, RunStale: 30 * time.Second, MaxAttempts: 3}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.PatternsDir != "" {
		if fi, err := os.Stat(c.PatternsDir); err != nil || !fi.IsDir() {
			errs = append(errs, fmt.Errorf("patterns dir %q: not a directory", c.PatternsDir))
		} else if _, err := LoadPatterns(c.PatternsDir); err != nil {
			errs = append(errs, fmt.Errorf("patterns: %w", err))
		}
	}
	if c.Depth < 1 || c.Depth > 20 {
		errs = append(errs, fmt.Errorf("depth %d: want 1 to 20", c.Depth))
	}
	if c.MaxNodes < 1 {
		errs = append(errs, fmt.Errorf("max nodes %d: want at least 1", c.MaxNodes))
	}
	if c.Parallel < 1 {
		errs = append(errs, fmt.Errorf("parallel %d: want at least 1", c.Parallel))
	}
	if c.ProbeTimeout <= 0 {
		errs = append(errs, errors.New("probe timeout: want a positive duration"))
	}
	if c.Every < 0 {
		errs = append(errs, errors.New("every: want 0 (never) or a positive duration"))
	}
	if c.Tick <= 0 || c.LeaseTTL <= 0 {
		errs = append(errs, errors.New("tick and lease TTL: want positive durations"))
	}
	if c.RunHeartbeat <= 0 || c.RunStale < 2*c.RunHeartbeat {
		errs = append(errs, fmt.Errorf("run heartbeat %s, run stale %s: want a positive heartbeat and stale at least twice it", c.RunHeartbeat, c.RunStale))
	}
	if c.MaxAttempts < 1 {
		errs = append(errs, fmt.Errorf("max attempts %d: want at least 1", c.MaxAttempts))
	}
	return errors.Join(errs...)
}
