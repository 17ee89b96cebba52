package agents_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/services/agents"
)

// The review's finding #5: after `agents revoke a/a1`, a new key with the same auto-approve
// token re-enrolled as a/a1 and overwrote the record. Now the revoked record is kept, the
// name is refused until an admin forgets it, and the revoked key never comes back.
func TestRevokedAgentCannotReenrollSilently(t *testing.T) {
	h := newHub(t)
	tok := h.site(t, "a", true)
	old := newBridge(t)
	if r, err := h.enroll(t, old, "a", "a1", tok); err != nil || r.Status != agents.StateApproved {
		t.Fatalf("enroll: %+v %v", r, err)
	}
	var view agents.AgentView
	h.mustCall(t, "revoke", agents.AgentRef{Agent: "a/a1"}, &view)

	replacement := newBridge(t)
	refusals := []struct {
		name    string
		b       bridge
		as      string
		code    int
		want    string
		connect bool // the key still gets past the callout (with the token, to enroll)
	}{
		{"new key under the revoked name", replacement, "a1", http.StatusForbidden, "outpost agents forget a/a1", true},
		{"revoked key under its name", old, "a1", http.StatusForbidden, "never enrolls again", false},
		{"revoked key under a new name", old, "a2", http.StatusForbidden, "never enrolls again", false},
	}
	check := func(t *testing.T) {
		for _, r := range refusals {
			_, err := h.enroll(t, r.b, "a", r.as, tok)
			if code(err) != r.code || !strings.Contains(err.Error(), r.want) {
				t.Errorf("%s: want %d saying %q, got %v", r.name, r.code, r.want, err)
			}
			if err := h.connect(t, r.b, tok); (err == nil) != r.connect {
				t.Errorf("%s: connect: %v", r.name, err)
			}
		}
	}
	check(t)
	// The revoked record is kept as it was.
	var ls struct{ Agents []agents.AgentView }
	h.mustCall(t, "ls", struct{}{}, &ls)
	if len(ls.Agents) != 1 || ls.Agents[0].ID != old.pub || ls.Agents[0].State != agents.StateRevoked {
		t.Fatalf("registry after refusals: %+v", ls.Agents)
	}
	// Once a minute per key: the replacement's and the old key's.
	if got := h.logs.lines("enrollment refused", "level=WARN"); len(got) != 2 {
		t.Errorf("want 2 refused enrollments logged at WARN, got:\n%s", strings.Join(got, "\n"))
	}

	// Only a revoked agent may be forgotten.
	other := newBridge(t)
	if _, err := h.enroll(t, other, "a", "a9", tok); err != nil {
		t.Fatal(err)
	}
	if err := h.call(t, "forget", agents.AgentRef{Agent: "a/a9"}, nil); code(err) != http.StatusConflict || !strings.Contains(err.Error(), "revoke") {
		t.Fatalf("forget an approved agent: %v", err)
	}
	if err := h.call(t, "forget", agents.AgentRef{Agent: "a/nobody"}, nil); code(err) != http.StatusNotFound {
		t.Fatalf("forget an unknown agent: %v", err)
	}
	h.mustCall(t, "forget", agents.AgentRef{Agent: "a/a1"}, nil)

	// The name is free for a new key; the old key stays refused, under any name.
	if r, err := h.enroll(t, replacement, "a", "a1", tok); err != nil || r.Status != agents.StateApproved {
		t.Fatalf("replacement after forget: %+v %v", r, err)
	}
	refusals = refusals[1:]
	check(t)
	h.mustCall(t, "ls", struct{}{}, &ls)
	for _, a := range ls.Agents {
		if a.Name == "a1" && a.ID != replacement.pub {
			t.Fatalf("a1 is %s, want the replacement", a.ID)
		}
	}
}

// Records written before names were kept (a revoked name overwritten by another key) leave
// the old key pointing at a record that is not its own: the key is refused, not handed the
// new agent's rights.
func TestKeyOfAnOverwrittenRecordIsRefused(t *testing.T) {
	h := newHub(t)
	tok := h.site(t, "a", true)
	old, current := newBridge(t), newBridge(t)
	if _, err := h.enroll(t, current, "a", "a1", tok); err != nil {
		t.Fatal(err)
	}
	kv, err := h.js.KeyValue(context.Background(), bus.KVAgents)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), "nkey."+old.pub, []byte("a.a1")); err != nil {
		t.Fatal(err)
	}
	if err := h.connect(t, old, ""); err == nil {
		t.Fatal("the old key of an overwritten record connected")
	}
	if _, err := h.enroll(t, old, "a", "a1", tok); code(err) != http.StatusForbidden {
		t.Fatalf("the old key re-enrolled: %v", err)
	}
	if err := h.connect(t, current, ""); err != nil {
		t.Fatalf("the record's own key refused: %v", err)
	}
}

// A bridge's periodic re-registration is not an enrollment: a new agent is logged at INFO
// once, its re-registrations at DEBUG.
func TestReRegistrationLogsAtDebug(t *testing.T) {
	h := newHub(t)
	tok := h.site(t, "a", true)
	b := newBridge(t)
	for range 4 {
		if _, err := h.enroll(t, b, "a", "a1", tok); err != nil {
			t.Fatal(err)
		}
	}
	if got := h.logs.lines("level=INFO", `msg="agent enrolled"`, "agent=a1"); len(got) != 1 {
		t.Fatalf("want one INFO enrollment line, got %d:\n%s", len(got), strings.Join(got, "\n"))
	}
	if got := h.logs.lines("level=DEBUG", `msg="agent re-registered"`, "agent=a1"); len(got) != 3 {
		t.Fatalf("want three DEBUG re-registrations, got %d:\n%s", len(got), strings.Join(got, "\n"))
	}
	// A second key is a new agent again.
	if _, err := h.enroll(t, newBridge(t), "a", "a2", tok); err != nil {
		t.Fatal(err)
	}
	if got := h.logs.lines("level=INFO", `msg="agent enrolled"`); len(got) != 2 {
		t.Fatalf("want two INFO enrollment lines, got %d", len(got))
	}
	for _, l := range h.logs.lines() {
		if strings.Contains(l, tok) || strings.Contains(l, tok[len(tok)-20:]) {
			t.Fatalf("a token secret in the log: %s", l)
		}
	}
}
