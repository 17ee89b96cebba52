package bus_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

var allCaps = []string{"echo", "ssh", "snmp"}

// Which bridges pull each cell, for a table of site layouts: every cell a bridge serves is
// in exactly one of its groups, no group holds a cell one of its bridges does not serve,
// and the groups are as few as that allows.
func TestProbeGroups(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		bridges map[string]bus.ProbeProfile
		groups  int
	}{
		{"one bridge, everything", map[string]bus.ProbeProfile{"b1": {Capabilities: allCaps}}, 1},
		{"three identical bridges share", map[string]bus.ProbeProfile{
			"b1": {Capabilities: allCaps}, "b2": {Capabilities: allCaps}, "b3": {Capabilities: allCaps}}, 1},
		{"orchestration-only beside discovery-only", map[string]bus.ProbeProfile{
			"orch": {Capabilities: allCaps, Apps: []string{bus.AppOrchestration}},
			"disc": {Capabilities: allCaps, Apps: []string{bus.AppDiscovery, bus.AppImport}}}, 3}, // ad-hoc shared, orch, disc+import
		{"a full bridge beside a dedicated one", map[string]bus.ProbeProfile{
			"all":  {Capabilities: allCaps},
			"orch": {Capabilities: allCaps, Apps: []string{bus.AppOrchestration}}}, 2}, // orch+adhoc shared, the rest
		{"capabilities differ", map[string]bus.ProbeProfile{
			"a": {Capabilities: []string{"echo", "ssh"}},
			"b": {Capabilities: []string{"ssh", "snmp"}}}, 3},
		{"an invalid capability is skipped", map[string]bus.ProbeProfile{"b1": {Capabilities: []string{"echo", "Bad_Cap"}}}, 1},
		{"no bridges", map[string]bus.ProbeProfile{}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			groups := bus.ProbeGroups(tc.bridges)
			if len(groups) != tc.groups {
				t.Fatalf("%d groups, want %d: %+v", len(groups), tc.groups, groups)
			}
			owner := map[string]string{} // cell → group key
			for _, g := range groups {
				for _, cell := range g.Cells {
					if k, dup := owner[cell]; dup {
						t.Fatalf("cell %s in groups %s and %s", cell, k, g.Key)
					}
					owner[cell] = g.Key
					c, lane, _ := strings.Cut(cell, ".")
					for _, b := range g.Bridges {
						p := tc.bridges[b]
						if !slices.Contains(p.Capabilities, c) || !bus.Serves(p.Apps, lane) {
							t.Errorf("group %s gives bridge %s the cell %s it does not serve", g.Key, b, cell)
						}
					}
				}
			}
			for name, p := range tc.bridges {
				for _, c := range p.Capabilities {
					if !bus.ValidName(c) {
						continue
					}
					for _, lane := range bus.Lanes(p.Apps) {
						k, ok := owner[c+"."+lane]
						if !ok {
							t.Fatalf("cell %s.%s of %s in no group", c, lane, name)
						}
						if !slices.Contains(bus.GroupKeysOf(groups, name), k) {
							t.Errorf("bridge %s does not pull group %s, which holds its cell %s.%s", name, k, c, lane)
						}
					}
				}
			}
			// The same layout gives the same keys (names survive restarts and replicas).
			if again := bus.ProbeGroups(tc.bridges); !slices.EqualFunc(again, groups, func(a, b bus.ProbeGroup) bool { return a.Key == b.Key }) {
				t.Errorf("keys differ between two runs: %v, %v", groups, again)
			}
		})
	}
}

// The groups' filters are what a WorkQueue stream accepts (disjoint consumers: err 10100
// otherwise), a probe published on any served cell reaches exactly the consumer
// FindProbeConsumer names, and a probe of a cell nobody serves is taken by none.
func TestProbeGroupsOnAWorkQueue(t *testing.T) {
	t.Parallel()
	h, _ := newHub(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bridges := map[string]bus.ProbeProfile{
		"all":  {Capabilities: allCaps},
		"orch": {Capabilities: []string{"echo", "ssh"}, Apps: []string{bus.AppOrchestration}},
		"disc": {Capabilities: []string{"snmp"}, Apps: []string{bus.AppDiscovery}},
	}
	groups := bus.ProbeGroups(bridges)
	for _, prio := range envelope.Priorities {
		for _, g := range groups {
			if _, err := h.js.CreateOrUpdateConsumer(ctx, bus.StreamProbes, jetstream.ConsumerConfig{
				Durable: bus.ProbeConsumer("s1", prio, g.Key), FilterSubjects: g.Filters("s1", prio), AckPolicy: jetstream.AckExplicitPolicy,
			}); err != nil {
				t.Fatalf("group %+v at %s: %v", g, prio, err)
			}
		}
	}
	// One more consumer overlapping a group is refused: the server holds the rule we rely on.
	if _, err := h.js.CreateOrUpdateConsumer(ctx, bus.StreamProbes, jetstream.ConsumerConfig{Durable: "overlap",
		FilterSubject: bus.ProbeSubject("s1", envelope.PriorityStandard, "echo", bus.LaneAdhoc), AckPolicy: jetstream.AckExplicitPolicy}); err == nil {
		t.Fatal("an overlapping consumer was accepted on the WorkQueue stream")
	}
	for _, g := range groups {
		for _, cell := range g.Cells {
			c, lane, _ := strings.Cut(cell, ".")
			name, err := bus.FindProbeConsumer(ctx, h.js, "s1", envelope.PriorityExpedited, c, lane)
			if want := bus.ProbeConsumer("s1", envelope.PriorityExpedited, g.Key); err != nil || name != want {
				t.Fatalf("consumer of %s: %q %v, want %s", cell, name, err, want)
			}
			subject := bus.ProbeSubject("s1", envelope.PriorityExpedited, c, lane)
			if _, err := h.js.Publish(ctx, subject, []byte(cell)); err != nil {
				t.Fatal(err)
			}
			cons, err := h.js.Consumer(ctx, bus.StreamProbes, name)
			if err != nil {
				t.Fatal(err)
			}
			m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
			if err != nil || m.Subject() != subject || bus.ProbeCapability(m.Subject()) != c {
				t.Fatalf("%s: %v %v", subject, m, err)
			}
			_ = m.Ack()
		}
	}
	// A capability no bridge has is in no group, and another site has none of these.
	if _, err := bus.FindProbeConsumer(ctx, h.js, "s1", envelope.PriorityStandard, "http", bus.LaneAdhoc); !errors.Is(err, bus.ErrNoProbeConsumer) {
		t.Errorf("a cell nobody serves: %v", err)
	}
	if _, err := bus.FindProbeConsumer(ctx, h.js, "s2", envelope.PriorityStandard, "echo", bus.LaneAdhoc); !errors.Is(err, bus.ErrNoProbeConsumer) {
		t.Errorf("another site: %v", err)
	}
}

// Group keys name consumers: 48 bits made a collision between two sites' cell sets a
// birthday away at scale; 128 bits make it negligible.
func TestProbeGroupKeyIs128Bits(t *testing.T) {
	groups := bus.ProbeGroups(map[string]bus.ProbeProfile{
		"a": {Capabilities: []string{"echo", "tcp"}, Apps: []string{bus.AppDiscovery}},
		"b": {Capabilities: []string{"echo"}},
	})
	if len(groups) == 0 {
		t.Fatal("no groups")
	}
	for _, g := range groups {
		if len(g.Key) != 32 {
			t.Errorf("group %v: key %q has %d hex digits, want 32 (128 bits)", g.Cells, g.Key, len(g.Key))
		}
	}
}
