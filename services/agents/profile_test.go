package agents_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	agentsapi "github.com/outpost-dev/outpost/libs/api/agents"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/agents"
)

// enrollment is what a test bridge asserts.
type enrollment struct {
	caps, apps []string
	pools      map[string]int
	legacy     bool // signed the way bridges before capabilities were signed did
	tamper     func(*envelope.Enrollment)
}

func (h *testHub) enrollAs(t *testing.T, b bridge, site, name, token string, en enrollment) (envelope.EnrollmentReply, error) {
	t.Helper()
	xk, _ := nkeys.CreateCurveKeys()
	xpub, _ := xk.PublicKey()
	e := envelope.Enrollment{Name: name, Site: site, Token: token, NKey: b.pub, XKey: xpub, Version: "test",
		Capabilities: en.caps, Apps: en.apps, Pools: en.pools, Time: h.clock.Now().UTC()}
	signing := e.SigningBytes()
	if en.legacy {
		signing = e.LegacySigningBytes()
	}
	sig, err := b.kp.Sign(signing)
	if err != nil {
		t.Fatal(err)
	}
	e.Sig = base64.RawURLEncoding.EncodeToString(sig)
	if en.tamper != nil {
		en.tamper(&e)
	}
	var reply envelope.EnrollmentReply
	err = h.call(t, "enroll", e, &reply)
	return reply, err
}

// siteRecord is the site's bus.SiteBridges record as stored (what probe publishers and the
// callout's groups follow).
func (h *testHub) siteRecord(t *testing.T, site string) bus.SiteBridges {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := h.js.KeyValue(ctx, bus.KVSites)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, bus.SiteBridgesKey(site))
	if err != nil {
		t.Fatalf("site %s record: %v", site, err)
	}
	var sb bus.SiteBridges
	if err := json.Unmarshal(e.Value(), &sb); err != nil {
		t.Fatal(err)
	}
	return sb
}

func (h *testHub) agent(t *testing.T, ref string) agents.AgentView {
	t.Helper()
	var out agentsapi.ListReply
	h.mustCall(t, "ls", struct{}{}, &out)
	for _, a := range out.Agents {
		if a.Site+"/"+a.Name == ref {
			return a
		}
	}
	t.Fatalf("no agent %s in %+v", ref, out.Agents)
	return agents.AgentView{}
}

// A bridge cannot widen its own profile: what it asserts beyond its approved profile is
// recorded as requested, and only granted once an admin approves it again; a narrower
// profile applies at once.
func TestWiderProfileNeedsApproval(t *testing.T) {
	h := newHub(t)
	tok := h.site(t, "w", true)
	b := newBridge(t)
	if r, err := h.enrollAs(t, b, "w", "w1", tok, enrollment{caps: []string{"echo"}, apps: []string{bus.AppOrchestration}}); err != nil || r.Status != agents.StateApproved {
		t.Fatalf("enroll: %+v %v", r, err)
	}
	want := func(step string, apps, caps []string) {
		t.Helper()
		sb := h.siteRecord(t, "w")
		if !slices.Equal(sb.Bridges["w1"], apps) || !slices.Equal(sb.Capabilities["w1"], caps) {
			t.Fatalf("%s: the site's record grants apps %v capabilities %v, want %v %v", step, sb.Bridges["w1"], sb.Capabilities["w1"], apps, caps)
		}
	}
	want("approved", []string{bus.AppOrchestration}, []string{"echo"})

	h.clock.Advance(agents.DefaultProfileInterval)
	r, err := h.enrollAs(t, b, "w", "w1", "", enrollment{caps: []string{"echo", "ssh", "sql"}})
	if err != nil {
		t.Fatalf("re-registration asking for more: %v", err)
	}
	want("after asking for more", []string{bus.AppOrchestration}, []string{"echo"})
	if !slices.Equal(r.Capabilities, []string{"echo"}) || !strings.Contains(r.Message, "outpost agents approve w/w1") {
		t.Errorf("reply: capabilities %v, message %q; want the approved ones and how to grant more", r.Capabilities, r.Message)
	}
	v := h.agent(t, "w/w1")
	if v.Requested == nil || !slices.Equal(v.Requested.Capabilities, []string{"echo", "ssh", "sql"}) || len(v.Requested.Apps) != 0 {
		t.Errorf("agents ls does not show the request: %+v", v.Requested)
	}
	if len(h.logs.lines("wider profile", "agent=w1")) != 1 {
		t.Errorf("no log line for the request:\n%s", strings.Join(h.logs.lines("w1"), "\n"))
	}
	// Asking again says nothing new.
	if _, err := h.enrollAs(t, b, "w", "w1", "", enrollment{caps: []string{"echo", "ssh", "sql"}}); err != nil {
		t.Fatal(err)
	}
	if n := len(h.logs.lines("wider profile", "agent=w1")); n != 1 {
		t.Errorf("the same request logged %d times", n)
	}

	var av agents.AgentView
	h.mustCall(t, "approve", agents.AgentRef{Agent: "w/w1"}, &av)
	want("approved again", nil, []string{"echo", "ssh", "sql"})
	if av.Requested != nil {
		t.Errorf("still requested after approval: %+v", av.Requested)
	}

	// Narrower: at once.
	h.clock.Advance(agents.DefaultProfileInterval)
	if _, err := h.enrollAs(t, b, "w", "w1", "", enrollment{caps: []string{"echo"}, apps: []string{bus.AppDiscovery}}); err != nil {
		t.Fatal(err)
	}
	want("narrower", []string{bus.AppDiscovery}, []string{"echo"})
	if v := h.agent(t, "w/w1"); v.Requested != nil {
		t.Errorf("a narrower profile recorded as a request: %+v", v.Requested)
	}
}

// Profile changes apply at most once per interval per agent; refusals are counted.
func TestProfileChangesAreRateLimited(t *testing.T) {
	h := newHub(t)
	tok := h.site(t, "r", true)
	b := newBridge(t)
	en := func(caps ...string) error {
		_, err := h.enrollAs(t, b, "r", "r1", tok, enrollment{caps: caps})
		return err
	}
	if err := en("echo", "tcp"); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		advance time.Duration
		caps    []string
		code    int
	}{
		{0, []string{"echo", "tcp"}, 0}, // unchanged: always fine
		{0, []string{"echo"}, 0},        // the first change
		{time.Minute, []string{"tcp"}, 429},
		{time.Minute, []string{"echo", "tcp"}, 429},
		{0, []string{"echo"}, 0}, // what it has: fine
		{agents.DefaultProfileInterval, []string{"tcp"}, 0},
	}
	for i, s := range steps {
		h.clock.Advance(s.advance)
		err := en(s.caps...)
		if code(err) != s.code {
			t.Fatalf("step %d (%v): got %v, want code %d", i, s.caps, err, s.code)
		}
		if s.code == 429 && !strings.Contains(err.Error(), "at most once every 5m0s") {
			t.Errorf("step %d: the refusal does not say why: %v", i, err)
		}
	}
	if v := h.agent(t, "r/r1"); v.ProfileRefused != 2 || !slices.Equal(h.siteRecord(t, "r").Capabilities["r1"], []string{"tcp"}) {
		t.Errorf("refused %d (want 2), granted %v (want [tcp])", v.ProfileRefused, h.siteRecord(t, "r").Capabilities["r1"])
	}
}

// Enrollment tells nothing about sites or agent names to someone without a token of the
// site: one 403, whatever exists.
func TestEnrollDoesNotEnumerate(t *testing.T) {
	h := newHub(t)
	tok := h.site(t, "real", true)
	otherTok := h.site(t, "other", true)
	if _, err := h.enroll(t, newBridge(t), "real", "taken", tok); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, site, agent, token string }{
		{"no such site", "ghost", "x", ""},
		{"no such site, another site's token", "ghost", "x", otherTok},
		{"a real site, no token", "real", "x", ""},
		{"a taken name, no token", "real", "taken", ""},
		{"a taken name, another site's token", "real", "taken", otherTok},
		{"a taken name, a forged token", "real", "taken", "ope_real_forged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.enroll(t, newBridge(t), tc.site, tc.agent, tc.token)
			want := fmt.Sprintf("enrollment refused: no usable enrollment token of site %s ", tc.site)
			if code(err) != http.StatusForbidden || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v, want the uniform 403", err)
			}
		})
	}
}

// Capabilities are signed and checked against the catalog.
func TestEnrollmentCapabilitiesSignedAndValidated(t *testing.T) {
	h := newHub(t)
	tok := h.site(t, "c", true)
	many := make([]string, 33)
	for i := range many {
		many[i] = "echo"
	}
	for i, tc := range []struct {
		name string
		en   enrollment
		code int
		want string
	}{
		{"known capabilities", enrollment{caps: []string{"echo", "ssh"}, pools: map[string]int{"ssh": 2}}, 0, ""},
		{"unknown capability", enrollment{caps: []string{"echo", "root-shell"}}, 400, `capabilities "root-shell": not probe capabilities`},
		{"too many", enrollment{caps: many}, 400, "33 capabilities listed, at most 32"},
		{"capabilities added after signing", enrollment{caps: []string{"echo"}, tamper: func(e *envelope.Enrollment) {
			e.Capabilities = append(e.Capabilities, "ssh")
		}}, 403, "signature does not verify"},
		{"pools changed after signing", enrollment{caps: []string{"echo"}, pools: map[string]int{"echo": 1}, tamper: func(e *envelope.Enrollment) {
			e.Pools = map[string]int{"echo": 1000}
		}}, 403, "signature does not verify"},
		{"old signature, new key", enrollment{caps: []string{"echo"}, legacy: true}, 403, "upgrade it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.enrollAs(t, newBridge(t), "c", fmt.Sprintf("a%d", i), tok, tc.en)
			if tc.code == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if code(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %d saying %q", err, tc.code, tc.want)
			}
		})
	}
	// A known key signing the old way re-registers (so it can upgrade itself), but the
	// capabilities it sends unsigned are not taken: its record's stand.
	b := newBridge(t)
	if _, err := h.enrollAs(t, b, "c", "old", tok, enrollment{caps: []string{"echo"}}); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(agents.DefaultProfileInterval)
	r, err := h.enrollAs(t, b, "c", "old", "", enrollment{caps: []string{"echo", "ssh"}, legacy: true})
	if err != nil || !slices.Equal(r.Capabilities, []string{"echo"}) {
		t.Fatalf("old-style re-registration: %+v %v", r, err)
	}
	if v := h.agent(t, "c/old"); !slices.Equal(v.Capabilities, []string{"echo"}) || v.Requested != nil {
		t.Errorf("unsigned capabilities taken: %v requested %+v", v.Capabilities, v.Requested)
	}
}

// A probe consumer deleted by hand comes back at a bridge's next re-registration (at most
// one check per site per interval).
func TestDeletedProbeConsumerComesBack(t *testing.T) {
	h := newHub(t)
	tok := h.site(t, "d", true)
	b := newBridge(t)
	if _, err := h.enroll(t, b, "d", "d1", tok); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name, err := bus.FindProbeConsumer(ctx, h.js, "d", envelope.PriorityStandard, "echo", bus.LaneAdhoc)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.js.DeleteConsumer(ctx, bus.StreamProbes, name); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(agents.DefaultConsumerCheckInterval)
	if _, err := h.enroll(t, b, "d", "d1", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := h.js.Consumer(ctx, bus.StreamProbes, name); err != nil {
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Fatalf("consumer %s still missing after a re-registration", name)
		}
		t.Fatal(err)
	}
	if len(h.logs.lines("probe consumer of the site is missing", "site=d")) != 1 {
		t.Errorf("the re-declaration is not logged")
	}
}
