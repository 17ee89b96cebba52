package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
	discovery "github.com/outpost-dev/outpost/libs/api/discovery"
)

// `runs show ID --host IP` says, without -o json, which credentials worked and failed and
// what the CMDB made of the host; `runs show ID` counts what the CMDB made of the run.
func TestRunShowIsReadable(t *testing.T) {
	now := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	h := &discovery.Host{IP: "127.77.0.10", Stage: "done", Class: "linux_server", ByPorts: true, Name: "nyc-db01",
		Failed:   map[string][]string{"ssh": {"ops", "root"}},
		Ingested: &discovery.Ingested{Created: 3, Unchanged: 1},
		Log: []discovery.HostLog{{Time: now, Step: "classify", Kind: "ssh_exec", Status: "error",
			Failed: []string{"ops", "root"}, Error: "every credential refused"}}}
	var b bytes.Buffer
	if err := printHost(&b, "RUN1", h); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"host 127.77.0.10 of run RUN1", "linux_server, by its ports only", "ssh credentials that failed: ops, root",
		"CMDB: 3 created, 0 updated, 1 unchanged", "every credential refused (failed: ops, root)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("host view lacks %q:\n%s", want, b.String())
		}
	}

	v := discovery.Run{ID: "RUN1", Site: "lab", State: "completed", Created: now,
		Counters: discovery.Counters{Addresses: 254, Alive: 2, Classified: 2, CIsCreated: 0, CIsUnchanged: 40, CIsSent: 40, Ingested: 2},
		Hosts:    []discovery.HostBrief{{IP: "127.77.0.10", Class: "linux_server", Stage: "done", CIs: 40, Ingested: &discovery.Ingested{Unchanged: 40}}}}
	b.Reset()
	if err := printRun(&b, v); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"run RUN1 on site lab: completed", "CIs: 0 created, 0 updated, 40 unchanged", "0/0/40"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("run view lacks %q:\n%s", want, b.String())
		}
	}
}

// `ci show` reads as a CI page: attributes with their source, identifiers, relations, history.
func TestCIShowIsReadable(t *testing.T) {
	now := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	d := cmdbapi.Detail{CI: cmdbapi.CI{ID: "CI1", Class: "linux_server", Name: "nyc-db01", OperationalStatus: "operational",
		Attributes: map[string]any{"os": "Rocky Linux", "cpu_count": 8.0}, Created: now, Updated: now, LastSeen: now},
		Sources:     map[string]cmdbapi.AttrSource{"os": {Source: "discovery"}},
		Identifiers: []cmdbapi.Key{{Family: "hardware", Kind: "serial_number", Value: "SN1"}},
		Outgoing:    []cmdbapi.Relation{{Type: "contains", Peer: cmdbapi.Ref{ID: "CI2", Class: "software", Name: "bash"}, Source: "discovery"}},
		History:     []cmdbapi.HistoryEntry{{Attr: "created", Old: []byte("null"), New: []byte(`{"class":"linux_server"}`), Source: "discovery", Time: now}}}
	var b bytes.Buffer
	if err := printCI(&b, d); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"linux_server nyc-db01 (CI1) — operational", "Rocky Linux", "discovery", "hardware/serial_number=SN1",
		"contains", "bash", `{"class":"linux_server"}`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("CI view lacks %q:\n%s", want, b.String())
		}
	}
}
