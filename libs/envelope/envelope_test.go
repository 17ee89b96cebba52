package envelope

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func probe() *Probe {
	return &Probe{ID: NewID(), App: "discovery", Site: "dc1", Priority: PriorityStandard, Kind: "echo",
		Capability: "echo", Params: json.RawMessage(`{"msg":"hi"}`), Deadline: time.Now().Add(time.Minute)}
}

func TestRoundTrip(t *testing.T) {
	meta := NewMeta("", ServiceSource("discovery"))
	meta.Run = "run-1"
	h, data, err := Encode(meta, probe())
	if err != nil {
		t.Fatal(err)
	}
	if h.Get(HeaderMsgID) != meta.ID || h[HeaderID][0] != meta.ID {
		t.Fatalf("ce-id and Nats-Msg-Id must be the ULID: %v", h)
	}
	got, body, err := Decode(h, data)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := body.(*Probe)
	if !ok || p.Kind != "echo" || got.Run != "run-1" || got.Type != TypeProbe || got.Source != "/services/discovery" {
		t.Fatalf("round trip lost data: %+v %+v", got, body)
	}
	if got.Time.IsZero() {
		t.Fatal("ce-time not read back")
	}
}

func TestDecodeErrors(t *testing.T) {
	good, data, _ := Encode(NewMeta("", "/t"), probe())
	with := func(k, v string) nats.Header {
		h := nats.Header{}
		for kk, vv := range good {
			h[kk] = vv
		}
		if v == "" {
			delete(h, k)
		} else {
			h[k] = []string{v}
		}
		return h
	}
	var (
		unknown *UnknownTypeError
		version *VersionError
		missing *MissingFieldError
		bad     *MalformedError
	)
	cases := []struct {
		name string
		h    nats.Header
		data string
		want any
	}{
		{"unknown type", with(HeaderType, "acme.thing.v1"), string(data), &unknown},
		{"wrong version", with(HeaderType, "outpost.probe.v9"), string(data), &version},
		{"wrong spec version", with(HeaderSpecVersion, "0.3"), string(data), &version},
		{"no type header", with(HeaderType, ""), string(data), &missing},
		{"no id header", with(HeaderID, ""), string(data), &missing},
		{"not json", good, "{not json", &bad},
		{"unknown field", good, `{"id":"1","app":"a","site":"s","priority":"standard","kind":"echo","deadline":"2026-01-01T00:00:00Z","bogus":1}`, &bad},
		{"wrong field type", good, `{"id":1}`, &bad},
		{"trailing data", good, string(data) + `{}`, &bad},
		{"missing field", good, `{"id":"1","app":"a","site":"s","priority":"standard","deadline":"2026-01-01T00:00:00Z"}`, &missing},
		{"bad priority", good, `{"id":"1","app":"a","site":"s","priority":"urgent","kind":"echo","deadline":"2026-01-01T00:00:00Z"}`, &bad},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := Decode(c.h, []byte(c.data))
			if err == nil {
				t.Fatal("decoded without error")
			}
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("%v is not ErrDecode", err)
			}
			if !errors.As(err, c.want) {
				t.Fatalf("error %T %v, want %T", err, err, c.want)
			}
		})
	}
}

func TestMissingFieldNamesIt(t *testing.T) {
	h, _, _ := Encode(NewMeta("", "/t"), probe())
	_, _, err := Decode(h, []byte(`{"id":"1","app":"a","priority":"standard","kind":"echo","deadline":"2026-01-01T00:00:00Z"}`))
	var m *MissingFieldError
	if !errors.As(err, &m) || m.Field != "site" {
		t.Fatalf("want missing site, got %v", err)
	}
}

func TestDecodeInto(t *testing.T) {
	h, data, _ := Encode(NewMeta("", "/t"), probe())
	if _, _, err := DecodeInto[*Result](h, data); !errors.Is(err, ErrDecode) {
		t.Fatalf("a probe decoded as a result: %v", err)
	}
	if _, p, err := DecodeInto[*Probe](h, data); err != nil || p.Site != "dc1" {
		t.Fatalf("DecodeInto: %v", err)
	}
}

func TestIDsAreUniqueAndSorted(t *testing.T) {
	prev := ""
	for range 10000 {
		id := NewID()
		if id <= prev {
			t.Fatalf("ids not monotonic: %s after %s", id, prev)
		}
		prev = id
	}
}

func FuzzDecode(f *testing.F) {
	h, data, _ := Encode(NewMeta("", "/t"), probe())
	f.Add(data)
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, err := Decode(h, b)
		if err != nil && !errors.Is(err, ErrDecode) {
			t.Fatalf("non-decode error %v", err)
		}
	})
}

// An event batch round-trips with every event's id, and its decoding is as strict as a
// single event's: the first event missing a required field is named by its index.
func TestEventBatch(t *testing.T) {
	ev := func(id string) Event {
		return Event{ID: id, Site: "dc1", Source: "webhook", Type: "cpu", Node: "n1", Time: time.Unix(0, 0).UTC()}
	}
	var missing *MissingFieldError
	var bad *MalformedError
	tooMany := make([]Event, MaxEventBatch+1)
	for i := range tooMany {
		tooMany[i] = ev(NewID())
	}
	noType := ev("e2")
	noType.Type = ""
	cases := []struct {
		name      string
		batch     EventBatch
		wantErr   any
		wantField string
	}{
		{"two events", EventBatch{Events: []Event{ev("e1"), ev("e2")}}, nil, ""},
		{"empty", EventBatch{}, &missing, "events"},
		{"second event without type", EventBatch{Events: []Event{ev("e1"), noType}}, &missing, "events[1].type"},
		{"over the bound", EventBatch{Events: tooMany}, &bad, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data, err := json.Marshal(&c.batch)
			if err != nil {
				t.Fatal(err)
			}
			meta := NewMeta(TypeEvents, "/t")
			_, body, err := Decode(meta.Headers(nil), data)
			if c.wantErr == nil {
				b, ok := body.(*EventBatch)
				if err != nil || !ok || len(b.Events) != len(c.batch.Events) || b.Events[1].ID != "e2" {
					t.Fatalf("decoded %+v, %v; want the %d events back", body, err, len(c.batch.Events))
				}
				return
			}
			if !errors.As(err, c.wantErr) {
				t.Fatalf("error %T %v, want %T", err, err, c.wantErr)
			}
			if c.wantField != "" && missing.Field != c.wantField {
				t.Fatalf("missing field %q, want %q", missing.Field, c.wantField)
			}
		})
	}
}

// Headers' values share one backing array: a value added to one header must not overwrite
// the next header's.
func TestHeadersAppendKeepsNeighbours(t *testing.T) {
	m := Meta{ID: "01J0000000000000000000000", Type: TypeChange, Source: "/services/cmdb", Time: time.Unix(0, 0), Run: "r1"}
	want := map[string][]string{
		HeaderSpecVersion: {SpecVersion, "extra-" + HeaderSpecVersion},
		HeaderID:          {m.ID, "extra-" + HeaderID},
		HeaderMsgID:       {m.ID, "extra-" + HeaderMsgID},
		HeaderType:        {TypeChange, "extra-" + HeaderType},
		HeaderSource:      {"/services/cmdb", "extra-" + HeaderSource},
		HeaderTime:        {"1970-01-01T00:00:00Z", "extra-" + HeaderTime},
		HeaderRun:         {"r1", "extra-" + HeaderRun},
	}
	h := m.Headers(nil)
	for _, k := range []string{HeaderSpecVersion, HeaderID, HeaderMsgID, HeaderType, HeaderSource, HeaderTime, HeaderRun} {
		h[k] = append(h[k], "extra-"+k) // what nats.Header.Add does, exact case kept
	}
	for k, v := range want {
		if got := h[k]; !slices.Equal(got, v) {
			t.Errorf("header %s = %q, want %q (all headers: %v)", k, got, v, h)
		}
	}
}
