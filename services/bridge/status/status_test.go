package status

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func TestWriteRead(t *testing.T) {
	dir := t.TempDir()
	s := Status{Version: "1.2.3", Site: "dc1", Name: "br-1", Phase: PhaseRunning, Updated: t0, Apps: []string{"discovery"},
		Hub:    Hub{URL: "tls://hub:4222", Connected: true, Server: "tls://hub:4222", Since: t0.Add(-time.Minute)},
		Outbox: Outbox{Results: 3, Bytes: 300, MaxBytes: 1 << 30, Oldest: t0.Add(-90 * time.Second)},
		Pools:  map[string]Pool{"standard": {Size: 25, Busy: 2}}}
	if err := Write(dir, s); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil || st.Mode().Perm() != 0o644 {
		t.Fatalf("mode: %v %v", st, err)
	}
	got, err := Read(dir)
	if err != nil || got.Outbox.Results != 3 || !got.Hub.Since.Equal(s.Hub.Since) || got.Pools["standard"].Busy != 2 {
		t.Fatalf("read: %+v %v", got, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".status-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	if _, err := Read(t.TempDir()); err == nil || !strings.Contains(err.Error(), "has not run with this data dir") {
		t.Fatalf("missing: %v", err)
	}
}

func TestHealthAndRender(t *testing.T) {
	base := Status{Site: "dc1", Name: "br-1", Phase: PhaseRunning, Updated: t0, Hub: Hub{Connected: true}}
	cases := []struct {
		name string
		edit func(*Status)
		now  time.Time
		want []string
	}{
		{"healthy", func(*Status) {}, t0.Add(time.Second), nil},
		{"stale", func(*Status) {}, t0.Add(StaleAfter + time.Second), []string{"not running (or hung)"}},
		{"stopped", func(s *Status) { s.Phase = PhaseStopped; s.Hub.Connected = false }, t0.Add(time.Hour), []string{"the bridge is stopped"}},
		{"disconnected", func(s *Status) { s.Hub.Connected = false; s.Hub.LastError = "tls: bad certificate" }, t0,
			[]string{"not connected to the hub: tls: bad certificate"}},
		{"pending", func(s *Status) { s.Phase = PhasePending }, t0, []string{"outpost agents approve dc1/br-1"}},
		{"outbox full", func(s *Status) { s.Outbox.Full = true }, t0, []string{"outbox full"}},
	}
	for _, c := range cases {
		s := base
		c.edit(&s)
		h := s.Health(c.now)
		if len(h) != len(c.want) {
			t.Errorf("%s: %v, want %v", c.name, h, c.want)
			continue
		}
		for i, w := range c.want {
			if !strings.Contains(h[i], w) {
				t.Errorf("%s: %q lacks %q", c.name, h[i], w)
			}
		}
		var b strings.Builder
		_ = s.Render(&b, c.now)
		if len(c.want) == 0 && !strings.Contains(b.String(), "health        ok") {
			t.Errorf("%s: render:\n%s", c.name, b.String())
		}
	}
}

// The collectors' counts show how many events each stored message carries.
func TestRenderCollectors(t *testing.T) {
	s := Status{Site: "dc1", Name: "br-1", Phase: PhaseRunning, Updated: t0, Hub: Hub{Connected: true},
		Collectors: map[string]Collector{"syslog": {Accepted: 1200, Batches: 3, MaxBatch: 500, Pending: 7, Rejected: 2}}}
	var b strings.Builder
	if err := s.Render(&b, t0); err != nil {
		t.Fatal(err)
	}
	want := "collector syslog  1200 events in 3 messages (400.0 a message, at most 500), 7 waiting, 2 rejected, 0 dropped"
	if !strings.Contains(b.String(), want) {
		t.Errorf("render lacks %q:\n%s", want, b.String())
	}
}
