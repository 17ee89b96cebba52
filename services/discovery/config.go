package discovery

import (
	"errors"
	"fmt"
	"time"
)

// DefaultPorts is the "discovery" port set: remote shells, web and TLS, directories,
// databases, Windows and printers (SNMP is UDP and swept separately).
var DefaultPorts = []int{22, 23, 80, 135, 389, 443, 445, 636, 1433, 3306, 3389, 5432, 5985, 8443, 9100}

// Config configures the discovery service.
type Config struct {
	// ChunkSize is the most addresses one tcp_scan probe covers (default 1,024).
	ChunkSize int
	// ChunksPerBridge is how many scan chunks a run aims to give each bridge of its site
	// that can scan (default 4): the chunks are probes on the site's shared consumer, which
	// hands them out across the bridges' pull requests, so a range cut into fewer chunks
	// than bridges leaves bridges idle, and several chunks per bridge let a faster bridge
	// take more and make a bridge killed mid-chunk cost only its chunk's share again.
	// Chunks are never smaller than MinChunk nor larger than ChunkSize. 0: the default.
	ChunksPerBridge int
	// MinChunk is the fewest addresses a chunk covers when the range is cut for several
	// bridges (default 64): below that, a probe's overhead outweighs the sharing. 0: the
	// default.
	MinChunk int
	// Ports scanned when a run does not name its own.
	Ports []int
	// SNMPEveryAddress sends snmp_get of the system group to every address of the range,
	// not only to hosts a TCP port answered on: switches often listen on no TCP port.
	SNMPEveryAddress bool
	// MaxRunTime bounds a run; it is then failed with the reason (default 1 h).
	MaxRunTime time.Duration
	// ProbeTimeout is the deadline given to classify/explore probes (default 2 min);
	// ScanTimeout the one of a tcp_scan chunk (default 10 min).
	ProbeTimeout time.Duration
	ScanTimeout  time.Duration
	// ProbeResends is how often a probe that passed its deadline without any result is
	// sent again, under a new id, its timeout doubled each time (default 3; 0: never). A
	// bridge reports a target's own timeout as a result, so no result at all means no bridge
	// ran the probe in time: the site was cut off and the probe left PROBES with its TTL, or
	// its bridge died holding it. The doubling outlasts a cut of some minutes whenever the
	// probe was sent: an SNMP sweep probe (30 s) is sent again after 45 s, 2 min and 4¼ min.
	ProbeResends int
	// SweepInFlight bounds a run's SNMP sweep probes out at once (sent, no result yet), per
	// bridge of the site that scans (default 512; 0: the default): the others wait on record,
	// pending and unsent, and go out as results come back. Published all at once, a /16's
	// 65,534 sweep probes waited at the bridge past their 30 s deadline (the /16 bench: 3,076
	// taken too late and not run, some 10,600 more without a result in time, all sent again).
	SweepInFlight int
	// ClassifiersDir, when set, holds *.yaml files that replace embedded files of the same
	// name and add new ones.
	ClassifiersDir string
	// DataDir holds the key that encrypts credentials at rest (credentials.key, 0600).
	DataDir string
	// Partitions of the CMDB ingest stream (default 8, as the cmdb service).
	Partitions int
	// Tick is how often active runs are advanced (default 250 ms).
	Tick time.Duration
	// ActiveLease is the TTL of the active replica's lease (default 10 s): how long a
	// standby may wait to take over from a replica that died without releasing it.
	ActiveLease time.Duration
	// ReceiptWait bounds how long a run with all its probes done waits for the CMDB's
	// receipts of its payloads before it completes anyway (default 60 s).
	ReceiptWait time.Duration
	// Retention is how long a finished run is kept — its record and hosts — after it ended
	// (default 30 days); PruneEvery how often the active replica prunes (default 1 h).
	// retention.go.
	Retention  time.Duration
	PruneEvery time.Duration
	// Replica names this process in run leases (default: a random id).
	Replica string
	// ShareRuns makes every replica active, each run owned by one of them through a lease
	// of its own (owner.go; the default); off, replicas are active/standby on one lease
	// (active.go: `outpost up|serve --discovery-standby`). Schedules and retention have the
	// one lease either way. Which replica owns a run is decided from reads of the runs and
	// leases buckets, which on a cluster go to their stream leaders (leaderkv.go).
	ShareRuns bool
	// Hooks are a test's crash points (hooks.go); nil in production.
	Hooks Hooks
}

// DefaultRetention keeps finished runs 30 days.
const DefaultRetention = 30 * 24 * time.Hour

// defaultSweepInFlight is SweepInFlight's default: with a bridge's 25 standard workers and
// SNMP answers (or refusals) within tens of milliseconds on a LAN, a few seconds of queue —
// far inside the sweep probe's 30 s deadline even on a loaded bridge.
const defaultSweepInFlight = 512

// sweepWindow is how many sweep probes a run keeps out on a site with scanners bridges that
// scan (at least one).
func (c Config) sweepWindow(scanners int) int {
	n := c.SweepInFlight
	if n == 0 {
		n = defaultSweepInFlight
	}
	return n * max(scanners, 1)
}

// DefaultConfig is what `outpost up` runs with.
func DefaultConfig() Config {
	return Config{
		ChunkSize: 1024, ChunksPerBridge: 4, MinChunk: 64, Ports: append([]int(nil), DefaultPorts...), SNMPEveryAddress: true,
		MaxRunTime: time.Hour, ProbeTimeout: 2 * time.Minute, ScanTimeout: 10 * time.Minute, ProbeResends: 3,
		Partitions: 8, Tick: 250 * time.Millisecond, ReceiptWait: 60 * time.Second, ActiveLease: 10 * time.Second,
		Retention: DefaultRetention, PruneEvery: time.Hour, ShareRuns: true,
	}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.ChunkSize < 1 || c.ChunkSize > 65536 {
		errs = append(errs, fmt.Errorf("chunk size %d: want 1..65536", c.ChunkSize))
	}
	if c.ChunksPerBridge < 0 || c.ChunksPerBridge > 64 {
		errs = append(errs, fmt.Errorf("chunks per bridge %d: want 1..64 (0: the default, 4)", c.ChunksPerBridge))
	}
	if c.MinChunk < 0 || c.MinChunk > 65536 {
		errs = append(errs, fmt.Errorf("min chunk %d: want 1..65536 (0: the default, 64)", c.MinChunk))
	}
	if len(c.Ports) == 0 {
		errs = append(errs, errors.New("ports: empty; give at least one TCP port"))
	}
	for _, p := range c.Ports {
		if p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("port %d: want 1..65535", p))
		}
	}
	if c.MaxRunTime <= 0 {
		errs = append(errs, errors.New("max run time: must be positive"))
	}
	if c.SweepInFlight < 0 || c.SweepInFlight > 65536 {
		errs = append(errs, fmt.Errorf("sweep in flight %d: want 1..65536 sweep probes out per scanning bridge (0: the default, %d)", c.SweepInFlight, defaultSweepInFlight))
	}
	if c.ProbeResends < 0 || c.ProbeResends > 10 {
		errs = append(errs, fmt.Errorf("probe resends %d: want 0..10 (each doubles the probe's timeout)", c.ProbeResends))
	}
	if c.ProbeTimeout < time.Second {
		errs = append(errs, errors.New("probe timeout: at least 1s"))
	}
	if c.ScanTimeout < time.Second {
		errs = append(errs, errors.New("scan timeout: at least 1s"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir: empty; the credential key lives there"))
	}
	if c.Partitions < 1 {
		errs = append(errs, fmt.Errorf("partitions %d: at least 1", c.Partitions))
	}
	if c.ActiveLease < time.Second {
		errs = append(errs, errors.New("active lease: at least 1s"))
	}
	if c.ReceiptWait < 0 {
		errs = append(errs, errors.New("receipt wait: must not be negative"))
	}
	if c.Retention < time.Hour {
		errs = append(errs, fmt.Errorf("retention %s: at least 1h (finished runs are kept that long after they end)", c.Retention))
	}
	if c.PruneEvery < time.Second {
		errs = append(errs, fmt.Errorf("prune every %s: at least 1s", c.PruneEvery))
	}
	if c.Tick <= 0 {
		errs = append(errs, errors.New("tick: must be positive"))
	}
	return errors.Join(errs...)
}

// scanChunkSize is how many addresses each tcp_scan chunk of a run of addrs addresses covers
// on a site with bridges bridges that can scan: the range cut into ChunksPerBridge chunks per
// bridge, each of MinChunk..ChunkSize addresses (ChunkSize wins when MinChunk is larger). A
// site with one bridge keeps ChunkSize: there is no one to share with, and fewer probes.
func (c Config) scanChunkSize(addrs, bridges int) int {
	if bridges <= 1 {
		return c.ChunkSize
	}
	per, least := c.ChunksPerBridge, c.MinChunk
	if per <= 0 {
		per = 4
	}
	if least <= 0 {
		least = 64
	}
	size := (addrs + bridges*per - 1) / (bridges * per)
	return max(1, min(c.ChunkSize, max(least, size)))
}
