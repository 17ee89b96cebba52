package discovery

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// TestSSHHostKeysTrustedOnFirstUse: the first run records each SSH host's key and sends it
// to the CMDB; a later run pins it, and a host presenting another key gets no credential,
// fails with a clear error in its log and the run, and raises an event; forgetting the key
// lets the next run trust the host again.
func TestSSHHostKeysTrustedOnFirstUse(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHarness(ctx, t, "127.77.118.0/24", 12)
	stop := h.startService(ctx)
	defer stop()
	h.addLabCredentials(ctx, "")
	events := make(chan *nats.Msg, 16)
	sub, err := h.nc.ChanSubscribe(bus.EventSubject("hub", Service), events)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	var st StartReply
	h.request(ctx, "start", StartRequest{Site: "lab"}, &st)
	if v := h.waitRun(ctx, st.Run, 60*time.Second); v.State != StateCompleted {
		t.Fatalf("first run: %s %v", v.State, v.Errors)
	}
	var linux []string
	want := map[string]string{}
	for _, mh := range h.lab.Manifest().Hosts {
		if mh.Class == "linux_server" && mh.SSHHostKey != "" {
			linux = append(linux, mh.IP)
			want[mh.IP] = mh.SSHHostKey
		}
	}
	if len(linux) == 0 {
		t.Fatal("the lab has no linux server")
	}
	var ls struct {
		Hostkeys []HostKey `json:"hostkeys"`
	}
	h.request(ctx, "hostkeys_ls", struct{}{}, &ls)
	got := map[string]string{}
	for _, hk := range ls.Hostkeys {
		got[hk.Address] = hk.Fingerprint
		if hk.Site != "lab" || hk.FirstSeen.IsZero() || hk.Run != st.Run {
			t.Errorf("record %+v", hk)
		}
	}
	for ip, fp := range want {
		if got[ip] != fp {
			t.Errorf("%s: host key on record %q, the lab's is %q", ip, got[ip], fp)
		}
	}
	h.mu.Lock()
	for _, p := range h.payloads {
		if fp, ok := want[p.Items[0].NativeKey]; ok && p.Items[0].Attributes["ssh_host_key"] != fp {
			t.Errorf("CI %s: ssh_host_key %v, want %s", p.Items[0].NativeKey, p.Items[0].Attributes["ssh_host_key"], fp)
		}
	}
	h.mu.Unlock()

	// someone else answers at one address: here, the record says another key
	victim := linux[0]
	const other = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	kv, err := h.js.KeyValue(ctx, KVHostKeys)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, hostKeyKey("lab", victim))
	if err != nil {
		t.Fatal(err)
	}
	var rec HostKey
	_ = json.Unmarshal(e.Value(), &rec)
	rec.Fingerprint = other
	b, _ := json.Marshal(rec)
	if _, err := kv.Put(ctx, hostKeyKey("lab", victim), b); err != nil {
		t.Fatal(err)
	}
	h.request(ctx, "start", StartRequest{Site: "lab"}, &st)
	v := h.waitRun(ctx, st.Run, 60*time.Second)
	msg := "host key for " + victim + " changed from " + other + " to " + want[victim]
	if !strings.Contains(strings.Join(v.Errors, "\n"), msg) {
		t.Errorf("run errors %v: want %q", v.Errors, msg)
	}
	var hv RunView
	h.request(ctx, "run_get", IDRequest{ID: st.Run, Host: victim}, &hv)
	var facts Facts
	if hv.Host != nil {
		_ = json.Unmarshal(hv.Host.Facts, &facts)
	}
	if hv.Host == nil || !strings.Contains(facts.SSHHostKeyChanged, msg) || hv.Host.Worked["ssh"] != "" {
		t.Errorf("host %s: %+v", victim, hv.Host)
	}
	select {
	case m := <-events:
		_, ev, err := envelope.DecodeInto[*envelope.Event](m.Header, m.Data)
		if err != nil || ev.Type != "ssh_host_key_changed" || ev.Node != victim || ev.Fields["known"] != other || ev.Fields["seen"] != want[victim] {
			t.Errorf("event %+v %v", ev, err)
		}
	case <-time.After(10 * time.Second):
		t.Error("no event for the changed host key")
	}
	e, _ = kv.Get(ctx, hostKeyKey("lab", victim))
	if !strings.Contains(string(e.Value()), other) {
		t.Error("a changed key replaced the record: only forgetting it may")
	}

	// the host was rebuilt: forget its key, and the next run trusts it again
	h.request(ctx, "hostkeys_forget", HostKeysRequest{Address: victim}, nil)
	h.request(ctx, "start", StartRequest{Site: "lab"}, &st)
	if v := h.waitRun(ctx, st.Run, 60*time.Second); v.State != StateCompleted || len(v.Errors) != 0 {
		t.Errorf("run after forget: %s %v", v.State, v.Errors)
	}
	e, err = kv.Get(ctx, hostKeyKey("lab", victim))
	if err != nil || !strings.Contains(string(e.Value()), want[victim]) {
		t.Errorf("after forget and a run: %v %s", err, e.Value())
	}
	if err := bus.Request(ctx, h.nc, Service, "hostkeys_forget", HostKeysRequest{Address: "127.77.118.250"}, nil); err == nil {
		t.Error("forgetting an unknown address succeeded")
	}
}
