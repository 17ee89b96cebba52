package correlation

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/services/correlation/metrics"
)

// Config of the correlation service.
type Config struct {
	// Replica names this process in the active lease; a restarted replica with the same
	// name takes its lease back at once. Default: host name and pid.
	Replica string
	// ActiveLease is the TTL of the lease the active replica holds (default 10 s).
	ActiveLease time.Duration
	// Partitions is how many partitions events are split into by dedup key (default 8):
	// the unit a replica owns, so the most replicas that share the load. Every replica must
	// run with the same count.
	Partitions int
	// RulesDir holds the rule files (*.yaml: event rules, grouping, correlate, inhibit,
	// flapping; see rules.go); empty: no event rules and the default grouping.
	RulesDir string
	// Notifiers receive the groups' notifications; NotifyRetries more attempts are made
	// (backoff from NotifyBackoff, doubling) before one goes to the DLQ.
	Notifiers     []NotifierConfig
	NotifyRetries int
	NotifyBackoff time.Duration
	// Batch is the most events taken from EVENTS at once (default 1,000). Events of one batch
	// are folded into their alerts in memory and written once per alert.
	Batch int
	// Routers is how many batches of EVENTS one replica routes at once (default 4).
	Routers int
	// FlushInterval is how often, with no event coming, a partition looks at its timers
	// (group ticks, alert timeouts; default 50 ms). Batches never wait for it: a batch is
	// whatever events were delivered by the time the previous one was written (intake.go).
	FlushInterval time.Duration
	// AlertTimeout closes an alert no event touched for this long (default 24 h; 0: never).
	AlertTimeout time.Duration
	// Writers bounds the concurrent KV writes of one flush (default 16).
	Writers int
	// CMDBLookup binds an alert's node to a CMDB CI by name or IP through svc.cmdb (default
	// on); CMDBTimeout bounds one lookup (default 2 s), CMDBCacheTTL how long an answer,
	// found or not, is kept (default 5 min).
	CMDBLookup   bool
	CMDBTimeout  time.Duration
	CMDBCacheTTL time.Duration
	// MaxCachedAlerts bounds the alerts kept in memory; past it the cache is dropped and
	// refilled from KV as events come (default 100,000).
	MaxCachedAlerts int
	// Metrics configures the METRICS stream of collected samples (metrics/).
	Metrics metrics.Config
}

// DefaultConfig is what `outpost up` runs.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Replica:         fmt.Sprintf("%s-%d", strings.ToLower(host), os.Getpid()),
		ActiveLease:     10 * time.Second,
		Partitions:      8,
		Batch:           1000,
		Routers:         4,
		NotifyRetries:   4,
		NotifyBackoff:   time.Second,
		FlushInterval:   50 * time.Millisecond,
		AlertTimeout:    24 * time.Hour,
		Writers:         16,
		CMDBLookup:      true,
		CMDBTimeout:     2 * time.Second,
		CMDBCacheTTL:    5 * time.Minute,
		MaxCachedAlerts: 100_000,
		Metrics:         metrics.DefaultConfig(),
	}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Replica == "" {
		errs = append(errs, errors.New("correlation: Replica is required (DefaultConfig names it after the host and pid)"))
	}
	if c.ActiveLease < time.Second {
		errs = append(errs, fmt.Errorf("correlation: ActiveLease %s: want at least 1s", c.ActiveLease))
	}
	if c.Partitions < 1 || c.Partitions > 256 {
		errs = append(errs, fmt.Errorf("correlation: Partitions %d: want 1..256", c.Partitions))
	}
	for _, n := range c.Notifiers {
		if err := n.validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.NotifyRetries < 0 || c.NotifyBackoff <= 0 {
		errs = append(errs, fmt.Errorf("correlation: NotifyRetries %d, NotifyBackoff %s: want 0 or more, above 0", c.NotifyRetries, c.NotifyBackoff))
	}
	if c.Batch < 1 || c.Batch > 10_000 {
		errs = append(errs, fmt.Errorf("correlation: Batch %d: want 1..10000", c.Batch))
	}
	if c.Routers < 1 || c.Routers > 64 {
		errs = append(errs, fmt.Errorf("correlation: Routers %d: want 1..64", c.Routers))
	}
	if c.FlushInterval < time.Millisecond || c.FlushInterval > 10*time.Second {
		errs = append(errs, fmt.Errorf("correlation: FlushInterval %s: want 1ms..10s", c.FlushInterval))
	}
	if c.AlertTimeout < 0 {
		errs = append(errs, fmt.Errorf("correlation: AlertTimeout %s: want 0 (never) or more", c.AlertTimeout))
	}
	if c.Writers < 1 || c.Writers > 256 {
		errs = append(errs, fmt.Errorf("correlation: Writers %d: want 1..256", c.Writers))
	}
	if c.CMDBLookup && (c.CMDBTimeout <= 0 || c.CMDBCacheTTL <= 0) {
		errs = append(errs, errors.New("correlation: CMDBTimeout and CMDBCacheTTL must be above 0 when CMDBLookup is on"))
	}
	if c.MaxCachedAlerts < 1 {
		errs = append(errs, fmt.Errorf("correlation: MaxCachedAlerts %d: want at least 1", c.MaxCachedAlerts))
	}
	if err := c.Metrics.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
