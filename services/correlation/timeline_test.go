package correlation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// receiver is a webhook notifier's other end: it keeps what it is sent.
type receiver struct {
	mu  sync.Mutex
	got []Notification
	srv *httptest.Server
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n Notification
		if err := json.NewDecoder(r.Body).Decode(&n); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if r.Header.Get("Idempotency-Key") != n.ID {
			http.Error(w, "no idempotency key", http.StatusBadRequest)
			return
		}
		rc.mu.Lock()
		rc.got = append(rc.got, n)
		rc.mu.Unlock()
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

// of is what the group was sent.
func (rc *receiver) of(group string) []Notification {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []Notification
	for _, n := range rc.got {
		if n.GroupKey == group {
			out = append(out, n)
		}
	}
	return out
}

// timeline is one replica with one partition, rules and a webhook, on the fake clock.
type timeline struct {
	*rig
	rc      *receiver
	barrier int
}

func newTimeline(t *testing.T, rules string) *timeline { return newTimelineWith(t, rules, nil) }

// newTimelineWith is newTimeline with more configuration (other notifiers).
func newTimelineWith(t *testing.T, rules string, mod func(*Config)) *timeline {
	r := newRig(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	tl := &timeline{rig: r, rc: newReceiver(t)}
	r.start("solo", func(c *Config) {
		c.Partitions = 1
		c.RulesDir = dir
		c.AlertTimeout = 0
		c.NotifyBackoff = 10 * time.Millisecond
		c.Notifiers = []NotifierConfig{{Name: "hook", Webhook: tl.rc.srv.URL}}
		if mod != nil {
			mod(c)
		}
	})
	return tl
}

// event sends an event and waits until its alert took it.
func (tl *timeline) event(node, typ, sev string) {
	tl.t.Helper()
	before := tl.countOf(node, typ)
	tl.send("dc1", "webhook", envelope.Event{Node: node, Type: typ, Severity: sev, Message: typ + " " + sev})
	eventually(tl.t, 10*time.Second, func() error {
		if n := tl.countOf(node, typ); n == before {
			return fmt.Errorf("event %s/%s not applied yet", node, typ)
		}
		return nil
	})
}

// countOf moves when an event of node/type is applied: the stream sequence of the last
// event its alerts took (a clear event does not count, but moves it).
func (tl *timeline) countOf(node, typ string) uint64 {
	var n uint64
	for _, a := range tl.alerts("") {
		if a.Node == node && a.Type == typ {
			n = max(n, a.LastSeq)
		}
	}
	return n
}

// sync returns once every timer due now has fired: the processor fires timers after each
// batch, so an event sent after the clock moved and applied means the loop went round.
func (tl *timeline) sync() {
	tl.t.Helper()
	for range 2 {
		tl.barrier++
		tl.event(fmt.Sprintf("barrier-%d", tl.barrier), "sync", "info")
	}
}

func (tl *timeline) at(d time.Duration) {
	tl.clock.Set(t0.Add(d))
	tl.sync()
}

func (tl *timeline) want(group string, n int, check func([]Notification) error) {
	tl.t.Helper()
	eventually(tl.t, 10*time.Second, func() error {
		got := tl.rc.of(group)
		if len(got) != n {
			return fmt.Errorf("group %s: %d notifications, want %d: %+v", group, len(got), n, got)
		}
		if check != nil {
			return check(got)
		}
		return nil
	})
}

func firing(n Notification) []string {
	var out []string
	for _, a := range n.Firing {
		out = append(out, a.Type)
	}
	return out
}

const n1 = "site=dc1|node=n1|"

// group_wait holds the first notification so alerts arriving together go out together;
// group_interval paces the next ones; nothing new, nothing sent, until repeat_interval.
func TestTimelineGroupWaitAndInterval(t *testing.T) {
	tl := newTimeline(t, `
grouping: {group_by: [site, node], group_wait: 30s, group_interval: 5m, repeat_interval: 1h}
`)
	tl.event("n1", "cpu", "major")
	tl.at(10 * time.Second)
	tl.event("n1", "disk", "minor")
	tl.at(29 * time.Second)
	tl.want(n1, 0, nil)
	tl.at(30 * time.Second)
	tl.want(n1, 1, func(ns []Notification) error {
		if f := firing(ns[0]); len(f) != 2 {
			return fmt.Errorf("first notification fires %v, want cpu and disk together", f)
		}
		return nil
	})
	tl.at(31 * time.Second)
	tl.event("n1", "mem", "major")
	tl.at(5*time.Minute + 29*time.Second)
	tl.want(n1, 1, nil)
	tl.at(5*time.Minute + 30*time.Second)
	tl.want(n1, 2, func(ns []Notification) error {
		if f := firing(ns[1]); len(f) != 3 {
			return fmt.Errorf("second notification fires %v, want 3", f)
		}
		return nil
	})
	tl.at(10*time.Minute + 30*time.Second) // nothing changed: nothing sent
	tl.want(n1, 2, nil)
	tl.at(time.Hour + 5*time.Minute + 30*time.Second) // repeat_interval passed at the tick
	tl.want(n1, 3, nil)
	tl.event("n1", "cpu", "clear")
	tl.at(time.Hour + 10*time.Minute + 30*time.Second)
	tl.want(n1, 4, func(ns []Notification) error {
		if len(ns[3].Resolved) != 1 || ns[3].Resolved[0].Type != "cpu" || len(ns[3].Firing) != 2 {
			return fmt.Errorf("after the clear: resolved %v firing %v, want cpu resolved and 2 firing", ns[3].Resolved, firing(ns[3]))
		}
		return nil
	})
}

// A silence mutes its alerts' notifications while it lasts; when it ends, the next tick
// of the group sends them.
func TestTimelineSilenceMutesThenExpires(t *testing.T) {
	tl := newTimeline(t, `
grouping: {group_by: [site, node], group_wait: 30s, group_interval: 5m, repeat_interval: 4h}
`)
	ctx := context.Background()
	if _, err := api.SilenceAdd.Call(ctx, tl.nc, api.SilenceAddRequest{Match: map[string]string{"node": "n1"}, For: "1h"}); err != nil {
		t.Fatal(err)
	}
	tl.event("n1", "cpu", "major")
	tl.at(30 * time.Second)
	tl.at(55*time.Minute + 30*time.Second)
	tl.want(n1, 0, nil)
	tl.at(time.Hour + 30*time.Second) // the silence ended at 1h: the tick at 1h00m30s sends
	tl.want(n1, 1, func(ns []Notification) error {
		if f := firing(ns[0]); len(f) != 1 || f[0] != "cpu" {
			return fmt.Errorf("fires %v, want cpu", f)
		}
		return nil
	})
}

// An alert matching an inhibit rule's target is not notified while a source alert with the
// same node fires; once the source resolves, the target fires.
func TestTimelineInhibition(t *testing.T) {
	tl := newTimeline(t, `
grouping: {group_by: [site, node], group_wait: 30s, group_interval: 5m, repeat_interval: 4h}
inhibit:
  - {source: {type: linkDown, severity: critical}, target: {severity: "~warning|minor"}, equal: [node]}
`)
	tl.event("n1", "linkDown", "critical")
	tl.event("n1", "ping", "warning")
	tl.at(30 * time.Second)
	tl.want(n1, 1, func(ns []Notification) error {
		if f := firing(ns[0]); len(f) != 1 || f[0] != "linkDown" {
			return fmt.Errorf("fires %v, want only linkDown (ping inhibited)", f)
		}
		return nil
	})
	tl.event("n1", "linkDown", "clear")
	tl.at(5*time.Minute + 30*time.Second)
	tl.want(n1, 2, func(ns []Notification) error {
		if f := firing(ns[1]); len(f) != 1 || f[0] != "ping" {
			return fmt.Errorf("fires %v, want ping once linkDown resolved", f)
		}
		return nil
	})
}

// Flapping is detected at the configured frequency: 4 state changes within 10 minutes
// flap, the same changes 4 minutes apart do not.
func TestTimelineFlapping(t *testing.T) {
	for _, tc := range []struct {
		every time.Duration
		flaps bool
	}{{3 * time.Minute, true}, {4 * time.Minute, false}} {
		t.Run(tc.every.String(), func(t *testing.T) {
			tl := newTimeline(t, `
grouping: {group_by: [site, node], group_wait: 30s, group_interval: 5m, repeat_interval: 4h}
flapping: {changes: 4, interval: 10m}
`)
			sev := []string{"major", "clear"}
			for i := range 4 {
				tl.at(time.Duration(i) * tc.every)
				tl.event("n1", "link", sev[i%2])
				flapping := false
				for _, a := range tl.alerts("") {
					if a.Node == "n1" && a.Flapping {
						flapping = true
					}
				}
				if want := tc.flaps && i == 3; flapping != want {
					t.Fatalf("after change %d at %s: flapping %v, want %v", i+1, time.Duration(i)*tc.every, flapping, want)
				}
			}
		})
	}
}

// Bad rule files are refused with file, line and reason, every problem at once.
func TestRulesRefusedWithFileLine(t *testing.T) {
	_, err := parseRules("r.yaml", []byte(`event_rules:
  - name: a
    match: {severity: info}
  - name: b
    match: {nodee: x}
    ignore: true
  - name: c
    match: {type: cpu}
    threshold: {count: 1, within: 5x}
grouping: {group_by: [severity]}
topology: {window: 0s, relations: [runs_on, parent_of]}
remediate:
  - {name: fix, workflow: restart}
  - {name: "bad name", match: {type: x}}
`))
	if err == nil {
		t.Fatal("bad rules loaded")
	}
	for _, want := range []string{
		`r.yaml:2: event rule "a": give ignore, transform or threshold`,
		`r.yaml:5: match key "nodee"`,
		`r.yaml:9: "5x": want a duration`,
		`r.yaml:9: threshold: count must be at least 2`,
		`r.yaml:10: field "severity": want one of site`,
		`r.yaml:11: topology: relation "parent_of": want one of runs_on`,
		`r.yaml:11: topology: window must be above 0`,
		`r.yaml:13: remediate fix: match is required`,
		`r.yaml:14: remediate: name "bad name"`,
		`r.yaml:14: remediate bad name: workflow is required`,
	} {
		if !contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
