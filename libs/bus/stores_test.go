package bus_test

import (
	"os"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
)

// TestStoresTable: every store has a byte limit, a discard policy on purpose and a reason;
// names are unique; KV buckets and object stores refuse rather than evict; the defaults add
// up to what docs/architecture.md says the hub's JetStream store must hold (JetStream
// reserves every MaxBytes); and the document lists every store.
func TestStoresTable(t *testing.T) {
	doc, err := os.ReadFile("../../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var total int64
	for _, s := range bus.Stores(bus.DefaultLimits()) {
		switch {
		case seen[s.JetStreamName()]:
			t.Errorf("%s: twice in the table", s.Name)
		case s.MaxBytes <= 0:
			t.Errorf("%s: no byte limit", s.Name)
		case s.Why == "" || s.Description == "" || s.Owner == "":
			t.Errorf("%s: owner, description and why are required", s.Name)
		case s.Kind != bus.KindStream && s.Discard != jetstream.DiscardNew:
			t.Errorf("%s: a %s must refuse at its limit (state never evicted)", s.Name, s.Kind)
		case s.Kind == bus.KindStream && len(s.Subjects) == 0:
			t.Errorf("%s: a stream without subjects", s.Name)
		case !strings.Contains(string(doc), "| "+s.Name+" |"):
			t.Errorf("%s: not in the stores table of docs/architecture.md", s.Name)
		}
		seen[s.JetStreamName()] = true
		total += s.MaxBytes
	}
	const documented = 24 << 30 // docs/architecture.md: "give it 24 GiB or more"
	if total > documented {
		t.Errorf("the table's byte limits add up to %.1f GiB, over the %d GiB docs/architecture.md asks of the JetStream store", float64(total)/(1<<30), documented>>30)
	}
	t.Logf("byte limits add up to %.2f GiB", float64(total)/(1<<30))
	for _, c := range []struct{ subject, stream string }{
		{"probe.lab.normal.ssh.default", bus.StreamProbes}, {"cmdb.ingest.3", bus.StreamCMDB}, {"cmdb.changed.server", bus.StreamChanges},
		{"wf.run.01ABC.events", "WORKFLOW_RUNS"}, {"wf.run.x.y.events", ""}, {"nothing", ""},
	} {
		if got := bus.StreamOfSubject(c.subject); got != c.stream {
			t.Errorf("stream of %s: %q, want %q", c.subject, got, c.stream)
		}
	}
}
