package cmdb

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"go.yaml.in/yaml/v3"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb/classes"
)

// The duplicated junk list must stay the class model's default list.
func TestJunkValuesMatchTheClassModel(t *testing.T) {
	raw, err := os.ReadFile("classes/model/identification.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		JunkValues []string `yaml:"junk_values"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	var want, got []string
	for _, v := range doc.JunkValues {
		want = append(want, strings.ToLower(strings.TrimSpace(v)))
	}
	got = bus.JunkIdentifiers()
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("libs/bus junk identifiers differ from identification.yaml:\n got  %q\n want %q", got, want)
	}
	m, err := classes.Default()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"", "  ", "0000000", "xxxx", "To Be Filled By O.E.M.", "VMware-42", "ab", "SN-1", "aaab"} {
		n := strings.ToLower(strings.TrimSpace(v))
		if bus.IsJunkIdentifier(n) != m.IsJunk(v) {
			t.Errorf("%q: bus.IsJunkIdentifier %v, model %v", v, bus.IsJunkIdentifier(n), m.IsJunk(v))
		}
	}
	for _, v := range []string{"00-50-56-AA-00-02", "0050.56aa.0002", "005056AA0002", " 00:50:56:aa:00:02 ", "not a mac"} {
		if got, want := bus.NormalizeMAC(strings.ToLower(strings.TrimSpace(v))), classes.NormalizeMAC(v); got != want {
			t.Errorf("normalizeMAC(%q) = %q, classes.NormalizeMAC %q", v, got, want)
		}
	}
}

func host(attrs map[string]any, macs ...string) envelope.CIPayload {
	p := envelope.CIPayload{Source: "discovery", Items: []envelope.CIItem{{Ref: "h", Class: "linux_server", Attributes: attrs}}}
	for i, m := range macs {
		p.Items = append(p.Items, envelope.CIItem{Ref: "eth" + string(rune('0'+i)), Class: "network_adapter", Parent: "h",
			Attributes: map[string]any{"mac_address": m}})
	}
	return p
}

func TestPartitionKey(t *testing.T) {
	cases := []struct {
		name string
		p    envelope.CIPayload
		want string
	}{
		{"serial", host(map[string]any{"serial_number": " SN-1 ", "name": "a"}, "02:00:00:00:00:01"), "serial=sn-1"},
		{"junk serial falls to the smallest MAC", host(map[string]any{"serial_number": "To Be Filled By O.E.M.", "name": "a"},
			"02-00-00-00-00-09", "0200.0000.0001", "00:00:00:00:00:00"), "mac=02:00:00:00:00:01"},
		{"repeated-character serial is junk", host(map[string]any{"serial_number": "0000000", "name": "Web01"}), "name=web01"},
		{"serial of the wrong type", host(map[string]any{"serial_number": 42, "name": "x"}), "name=x"},
		{"native key", envelope.CIPayload{Source: "import", Items: []envelope.CIItem{{Ref: "r", Class: "server", NativeKey: "17", Attributes: map[string]any{}}}}, "native=import/17"},
		{"first device that offers one", envelope.CIPayload{Items: []envelope.CIItem{
			{Ref: "a", Class: "linux_server", Attributes: map[string]any{"os": "Linux"}},
			{Ref: "b", Class: "linux_server", Attributes: map[string]any{"serial_number": "SN-B"}}}}, "serial=sn-b"},
		{"nothing", envelope.CIPayload{Items: []envelope.CIItem{{Ref: "a", Class: "linux_server"}}}, ""},
	}
	for _, c := range cases {
		if got := PartitionKey(c.p); got != c.want {
			t.Errorf("%s: key %q, want %q", c.name, got, c.want)
		}
	}
	// Discovery (serial + MACs, in any order) and an import (serial only) of one server
	// share a partition.
	a := host(map[string]any{"serial_number": "SN-0001", "name": "web01"}, "00:50:56:aa:00:02", "00:50:56:aa:00:01")
	b := envelope.CIPayload{Source: "import", Items: []envelope.CIItem{{Ref: "row", Class: "server", NativeKey: "9", Attributes: map[string]any{"serial_number": "sn-0001 "}}}}
	for n := 1; n <= 64; n++ {
		if Partition(a, n) != Partition(b, n) {
			t.Fatalf("%d partitions: discovery on %d, import on %d", n, Partition(a, n), Partition(b, n))
		}
		if p := Partition(a, n); p < 0 || p >= max(n, 1) {
			t.Fatalf("partition %d of %d", p, n)
		}
		if got, want := IngestSubject(a, n), bus.CMDBIngestSubject(Partition(a, n)); got != want {
			t.Fatalf("IngestSubject %q, want %q", got, want)
		}
	}
	// Stable across releases: producers and the CMDB may run different builds.
	if got := Partition(a, 8); got != Partition(host(map[string]any{"serial_number": "SN-0001"}), 8) || got != goldenPartition {
		t.Errorf("serial SN-0001 on partition %d of 8, want %d (FNV-1a of %q)", got, goldenPartition, PartitionKey(a))
	}
	// Spread: 1,000 serials over 8 partitions, none starved.
	hits := make([]int, 8)
	for i := range 1000 {
		hits[Partition(host(map[string]any{"serial_number": "SN-" + string(rune('A'+i%26)) + strings.Repeat("x", i%7) + string(rune('0'+i%10)) + string(rune('a'+i/26%26))}), 8)]++
	}
	for p, n := range hits {
		if n < 60 {
			t.Errorf("partition %d got %d of 1000 payloads: %v", p, n, hits)
		}
	}
}

// goldenPartition is where "serial=sn-0001" lands among 8 partitions; a change of the hash
// would split every device's payloads between old and new producers.
const goldenPartition = 7

func TestChangeIDIsDeterministic(t *testing.T) {
	at := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	a := changeID(at, "digest", "ci1", OpCreated)
	if a != changeID(at, "digest", "ci1", OpCreated) {
		t.Fatal("same cause, different ids")
	}
	for _, other := range []string{changeID(at, "digest", "ci1", OpUpdated), changeID(at, "digest", "ci2", OpCreated), changeID(at, "other", "ci1", OpCreated)} {
		if other == a {
			t.Fatal("different causes, same id")
		}
	}
	id, err := ulid.ParseStrict(a)
	if err != nil {
		t.Fatalf("%s is not a ULID: %v", a, err)
	}
	if !ulid.Time(id.Time()).Equal(at) {
		t.Errorf("ULID time %s, want %s", ulid.Time(id.Time()), at)
	}
	if changeID(time.Time{}, "x") == "" {
		t.Error("no id for a payload without an observed time")
	}
	p := envelope.CIPayload{Source: "s", Items: []envelope.CIItem{{Ref: "r", Class: "c", Attributes: map[string]any{"b": 1, "a": "x"}}}}
	if payloadDigest(p) != payloadDigest(p) || payloadDigest(p) == payloadDigest(envelope.CIPayload{Source: "t", Items: p.Items}) {
		t.Error("payload digest is not a function of the content")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	if err := (Config{DSN: "postgres://u@h/db"}).Validate(); err != nil {
		t.Fatalf("zero values mean defaults: %v", err)
	}
	bad := Config{DSN: "mysql://x", Partitions: -1, Precedence: "manual > > import", StaleAfter: -time.Hour,
		StaleEvery: -time.Second, ClassesDir: "/does/not/exist", Version: "one", MaxBatch: -1, KeepReceipts: -time.Hour}
	err := bad.Validate()
	if err == nil {
		t.Fatal("a bad config passed")
	}
	for _, want := range []string{`scheme "mysql"`, "partitions -1", "precedence", "stale-after", "stale check interval", "classes dir", `version "one"`, "max batch -1", "keep-receipts"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
	if err := (Config{DSN: "sqlite://"}).Validate(); err == nil || !strings.Contains(err.Error(), "file path") {
		t.Errorf("sqlite without a path: %v", err)
	}
	cs := Consumers(3)
	if len(cs) != 3 || cs[2].Name != "cmdb-p2" || cs[2].Filters[0] != "cmdb.ingest.2" || cs[2].MaxAckPending != PartitionInFlight || cs[2].Stream != bus.StreamCMDB {
		t.Errorf("consumers %+v", cs)
	}
}
