// Package status is the bridge's own account of its health, written to a small file in its
// data dir so that `outpost-bridge status` can tell a site administrator what the bridge is
// doing without the hub and without the bridge listening on anything: a file, not a socket
// or port (the bridge never listens).
package status

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// FileName is the status file in the data dir.
const FileName = "status.json"

// Every is how often a running bridge rewrites its status; a file older than StaleAfter
// means the bridge is not running (or hung).
const (
	Every      = 5 * time.Second
	StaleAfter = 4 * Every
)

// Phases of a bridge's life, as the status file shows them.
const (
	PhaseStarting   = "starting"
	PhaseConnecting = "connecting"
	PhasePending    = "pending_approval"
	PhaseRunning    = "running"
	PhasePaused     = "paused"
	PhaseDraining   = "draining"
	PhaseStopped    = "stopped"
)

// Status is what the bridge writes.
type Status struct {
	Version      string          `json:"version"`
	Site         string          `json:"site"`
	Name         string          `json:"name"`
	PID          int             `json:"pid"`
	Phase        string          `json:"phase"`
	Apps         []string        `json:"apps"`
	Capabilities []string        `json:"capabilities"`
	Started      time.Time       `json:"started"`
	Updated      time.Time       `json:"updated"`
	Hub          Hub             `json:"hub"`
	Outbox       Outbox          `json:"outbox"`
	Pools        map[string]Pool `json:"pools"`
	// Collectors are the event collectors' counts by source (syslog, trap, webhook).
	Collectors map[string]Collector `json:"collectors,omitempty"`
	// Upgrade is the last self-upgrade's state (empty: none attempted).
	Upgrade string `json:"upgrade,omitempty"`
}

// Hub is the bridge's connection to the hub.
type Hub struct {
	URL        string    `json:"url"` // redacted
	Connected  bool      `json:"connected"`
	Server     string    `json:"server,omitempty"`
	Since      time.Time `json:"since,omitzero"` // of the current connected/disconnected state
	Reconnects uint64    `json:"reconnects"`
	LastError  string    `json:"last_error,omitempty"`
}

// Outbox is what waits to be sent.
type Outbox struct {
	Results  int64     `json:"results"`
	Bytes    int64     `json:"bytes"`
	MaxBytes int64     `json:"max_bytes"`
	Full     bool      `json:"full,omitempty"`
	Oldest   time.Time `json:"oldest,omitzero"`
	// Direct counts results sent straight to the hub, Stored those put in the outbox (of
	// which DirectFailures after a direct send failed), since the bridge started.
	Direct         int64 `json:"direct,omitempty"`
	Stored         int64 `json:"stored,omitempty"`
	DirectFailures int64 `json:"direct_failures,omitempty"`
}

// Collector counts what one event collector took and how it stored it: Batches outbox
// messages for Accepted events (Accepted / Batches events per message on average).
type Collector struct {
	Accepted int64 `json:"accepted"`
	Rejected int64 `json:"rejected"`
	Dropped  int64 `json:"dropped"`
	Batches  int64 `json:"batches"`
	MaxBatch int64 `json:"max_batch"`
	Pending  int64 `json:"pending"`
}

// Pool is one priority's workers.
type Pool struct {
	Size   int `json:"size"`
	Busy   int `json:"busy"`
	Queued int `json:"queued"`
}

// Write replaces dir's status file atomically (a temporary file renamed over it), so a
// reader never sees half a file. It holds no secret; 0644 lets an operator without the
// bridge's rights read it.
func Write(dir string, s Status) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".status-*.json")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(append(b, '\n'))
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), 0o644)); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, FileName)); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

// Read loads dir's status file.
func Read(dir string) (Status, error) {
	var s Status
	b, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return s, fmt.Errorf("no status in %s: the bridge has not run with this data dir (or --data/--config points elsewhere)", dir)
		}
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%s: %w", filepath.Join(dir, FileName), err)
	}
	return s, nil
}

// Health sums a status up at now: "ok", or the problems an administrator should look at.
func (s Status) Health(now time.Time) []string {
	var p []string
	switch {
	case s.Phase == PhaseStopped:
		p = append(p, "the bridge is stopped (it stopped at "+s.Updated.Format(time.RFC3339)+")")
	case now.Sub(s.Updated) > StaleAfter:
		p = append(p, fmt.Sprintf("the status was last written %s ago: the bridge is not running (or hung)", now.Sub(s.Updated).Round(time.Second)))
	}
	if s.Phase != PhaseStopped && !s.Hub.Connected {
		msg := "not connected to the hub"
		if s.Hub.LastError != "" {
			msg += ": " + s.Hub.LastError
		}
		p = append(p, msg)
	}
	if s.Phase == PhasePending {
		p = append(p, "enrolled, waiting for approval: outpost agents approve "+s.Site+"/"+s.Name)
	}
	if s.Outbox.Full {
		p = append(p, "outbox full: the bridge takes no new work until the hub receives what waits")
	}
	return p
}

// Render writes a status for a human.
func (s Status) Render(w io.Writer, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	age := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return now.Sub(t).Round(time.Second).String() + " ago"
	}
	apps := "all"
	if len(s.Apps) > 0 {
		apps = strings.Join(s.Apps, ",")
	}
	hub := "disconnected"
	if s.Hub.Connected {
		hub = "connected to " + s.Hub.Server
	}
	fmt.Fprintf(tw, "bridge\t%s/%s (version %s, pid %d)\n", s.Site, s.Name, s.Version, s.PID)
	fmt.Fprintf(tw, "phase\t%s (updated %s, started %s)\n", s.Phase, age(s.Updated), age(s.Started))
	fmt.Fprintf(tw, "hub\t%s %s (since %s, %d reconnects)\n", s.Hub.URL, hub, age(s.Hub.Since), s.Hub.Reconnects)
	if s.Hub.LastError != "" {
		fmt.Fprintf(tw, "hub error\t%s\n", s.Hub.LastError)
	}
	fmt.Fprintf(tw, "outbox\t%d results, %d of %d bytes, oldest %s\n", s.Outbox.Results, s.Outbox.Bytes, s.Outbox.MaxBytes, age(s.Outbox.Oldest))
	names := make([]string, 0, len(s.Pools))
	for n := range s.Pools {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := s.Pools[n]
		fmt.Fprintf(tw, "pool %s\t%d/%d busy, %d queued\n", n, p.Busy, p.Size, p.Queued)
	}
	srcs := make([]string, 0, len(s.Collectors))
	for n := range s.Collectors {
		srcs = append(srcs, n)
	}
	sort.Strings(srcs)
	for _, n := range srcs {
		c := s.Collectors[n]
		per := 0.0
		if c.Batches > 0 {
			per = float64(c.Accepted) / float64(c.Batches)
		}
		fmt.Fprintf(tw, "collector %s\t%d events in %d messages (%.1f a message, at most %d), %d waiting, %d rejected, %d dropped\n",
			n, c.Accepted, c.Batches, per, c.MaxBatch, c.Pending, c.Rejected, c.Dropped)
	}
	fmt.Fprintf(tw, "apps\t%s\n", apps)
	fmt.Fprintf(tw, "capabilities\t%s\n", strings.Join(s.Capabilities, ","))
	if s.Upgrade != "" {
		fmt.Fprintf(tw, "upgrade\t%s\n", s.Upgrade)
	}
	h := s.Health(now)
	if len(h) == 0 {
		fmt.Fprintf(tw, "health\tok\n")
	}
	for _, m := range h {
		fmt.Fprintf(tw, "health\t%s\n", m)
	}
	return tw.Flush()
}
