package orchestration

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/page"
)

func (h *harness) runs() []api.Run {
	h.t.Helper()
	var out api.RunsResponse
	if err := h.call(api.RunList.Name, page.Request{Limit: 1000}, &out); err != nil {
		h.t.Fatal(err)
	}
	return out.Runs
}

// waitCron waits until the cron loop sleeps until slot.
func (h *harness) waitCron(slot time.Time) {
	h.t.Helper()
	eventually(h.t, 10*time.Second, func() error {
		h.armedMu.Lock()
		defer h.armedMu.Unlock()
		if !h.cronAt.Equal(slot) {
			return fmt.Errorf("the cron loop sleeps until %s, not %s", h.cronAt, slot)
		}
		return nil
	})
}

// cronSlots lists the cron slots of the runs of a workflow, in order.
func (h *harness) cronSlots(workflow string) []time.Time {
	var out []time.Time
	for _, r := range h.runs() {
		if r.Workflow == workflow && r.Trigger != nil && r.Trigger.Kind == "cron" {
			out = append(out, r.Trigger.Slot)
		}
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// A cron trigger on the fake clock: each slot fires once; after a jump over several slots
// only the latest fires; a replica taking over within the catch-up window finds the slot
// claimed and does not fire it again.
func TestCronTimeline(t *testing.T) {
	h := newHarness(t)
	q := h.clock.Now().Truncate(15 * time.Minute).Add(15 * time.Minute)
	h.clock.Set(q.Add(7 * time.Minute)) // no slot in the catch-up window
	stop := h.startService("r1")
	h.add(`
name: tick
inputs: {slot: {required: true}}
on: {cron: "*/15 * * * *", inputs: {slot: '${{ event.slot }}'}}
steps:
  - {id: hold, kind: approval}
`)
	h.waitCron(q.Add(15 * time.Minute))
	if got := h.cronSlots("tick"); len(got) != 0 {
		t.Fatalf("fired before its first slot: %v", got)
	}
	h.clock.Advance(8 * time.Minute) // q+15
	eventually(t, 10*time.Second, func() error {
		if got := h.cronSlots("tick"); len(got) != 1 {
			return fmt.Errorf("slots fired %v", got)
		}
		return nil
	})
	h.waitCron(q.Add(30 * time.Minute))
	h.clock.Advance(32 * time.Minute) // q+47: q+30 and q+45 are due; only q+45 fires
	h.waitCron(q.Add(60 * time.Minute))
	want := []time.Time{q.Add(15 * time.Minute), q.Add(45 * time.Minute)}
	if got := h.cronSlots("tick"); !slices.EqualFunc(got, want, time.Time.Equal) {
		t.Fatalf("slots fired %v, want %v", got, want)
	}
	for _, r := range h.runs() {
		if r.Workflow == "tick" && r.Inputs["slot"] != r.Trigger.Slot.Format(time.RFC3339) {
			t.Errorf("run %s: input slot %v, trigger %+v", r.ID, r.Inputs["slot"], r.Trigger)
		}
	}

	// another replica takes over at q+47: q+45 is in its catch-up window, claimed already
	stop()
	defer h.startService("r2")()
	h.waitCron(q.Add(60 * time.Minute))
	if got := h.cronSlots("tick"); !slices.EqualFunc(got, want, time.Time.Equal) {
		t.Fatalf("after the takeover, slots fired %v, want %v", got, want)
	}
	h.clock.Advance(13 * time.Minute)
	eventually(t, 10*time.Second, func() error {
		if got := h.cronSlots("tick"); len(got) != 3 || !got[2].Equal(q.Add(60*time.Minute)) {
			return fmt.Errorf("slots fired %v", got)
		}
		return nil
	})
}

// CMDB change events start the workflows whose cmdb_change filter they match, once each,
// with the change in the run's trigger and inputs.
func TestCMDBChangeTrigger(t *testing.T) {
	h := newHarness(t)
	defer h.startService("r1")()
	added := h.clock.Now()
	h.add(`
name: on-os
inputs: {ci: {required: true}, source: {}}
on:
  cmdb_change: {class: linux_server, attribute: os_version}
  inputs: {ci: '${{ event.ci }}', source: '${{ event.source }}'}
steps:
  - {id: hold, kind: approval}
`)
	// the consumer takes linux_server's events in (changefilter.go) before they are sent
	h.waitTriggersFilter(bus.ChangeSubject("linux_server"))
	pub := bus.NewPublisher(h.js, envelope.ServiceSource("cmdb"), nil)
	send := func(id string, c envelope.Change) {
		t.Helper()
		if _, err := pub.Publish(h.ctx, bus.ChangeSubject(c.Class), envelope.Meta{ID: id}, &c); err != nil {
			t.Fatal(err)
		}
	}
	at := added.Add(time.Second)
	send("ch-other-attr", envelope.Change{CI: "ci-1", Class: "linux_server", Op: "updated", Attributes: []string{"ram_mb"}, Time: at})
	send("ch-other-class", envelope.Change{CI: "ci-2", Class: "windows_server", Op: "updated", Attributes: []string{"os_version"}, Time: at})
	send("ch-before", envelope.Change{CI: "ci-3", Class: "linux_server", Op: "updated", Attributes: []string{"os_version"}, Time: added.Add(-time.Hour)})
	send("ch-match", envelope.Change{CI: "ci-4", Class: "linux_server", Op: "updated", Source: "discovery", Attributes: []string{"name", "os_version"}, Time: at})
	// every event handled and acknowledged
	eventually(t, 15*time.Second, func() error {
		info, err := h.triggersInfo()
		if err != nil {
			return err
		}
		// windows_server's event may never be delivered: no trigger watches the class
		if info.NumPending > 0 || info.NumAckPending > 0 || info.Delivered.Consumer < 3 {
			return fmt.Errorf("consumer: %d pending, %d unacknowledged, %d delivered", info.NumPending, info.NumAckPending, info.Delivered.Consumer)
		}
		return nil
	})
	var started []api.Run
	for _, r := range h.runs() {
		if r.Workflow == "on-os" {
			started = append(started, r)
		}
	}
	if len(started) != 1 {
		t.Fatalf("%d runs started, want 1: %+v", len(started), started)
	}
	r := started[0]
	if r.Trigger == nil || r.Trigger.Kind != "cmdb_change" || r.Trigger.Event != "ch-match" || r.Inputs["ci"] != "ci-4" || r.Inputs["source"] != "discovery" {
		t.Errorf("run trigger %+v inputs %v", r.Trigger, r.Inputs)
	}

	// the same change handled again (a redelivery after a crash) starts nothing more
	c := envelope.Change{CI: "ci-4", Class: "linux_server", Op: "updated", Source: "discovery", Attributes: []string{"name", "os_version"}, Time: at}
	if err := h.svc.handleChange(h.ctx, h.ctx, nil, envelope.Meta{ID: "ch-match"}, &c); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range h.runs() {
		if r.Workflow == "on-os" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("after a redelivery %d runs, want 1", n)
	}

	// Change events of classes no trigger watches are acknowledged undecoded; a watched
	// class's, or one whose subject names no class, go on to be decoded.
	for _, c := range []struct {
		subject string
		want    bool
	}{{"cmdb.changed.linux_server", true}, {"cmdb.changed.windows_server", false}, {"cmdb.changed.software", false}, {"", true}} {
		passed := false
		handler := h.svc.watchedChanges(func(*message.Message) error { passed = true; return nil })
		msg := message.NewMessage("m1", []byte("not decoded"))
		if c.subject != "" {
			msg.Metadata.Set(bus.MetaSubject, c.subject)
		}
		if err := handler(msg); err != nil || passed != c.want {
			t.Errorf("subject %q: passed on %v (err %v), want %v", c.subject, passed, err, c.want)
		}
	}
}

// A remediation action starts a run through run_start with its alert as the trigger; the
// run records it. Kinds the service fires itself are refused from callers.
func TestAlertTriggeredRun(t *testing.T) {
	h := newHarness(t)
	defer h.startService("r1")()
	h.add(`
name: remediate
steps:
  - {id: hold, kind: approval}
`)
	var r api.Run
	if err := h.call(api.RunStart.Name, api.RunRequest{Name: "remediate", RunOptions: api.RunOptions{
		Trigger: &api.Trigger{Kind: "alert", Event: "alert-42", Detail: "disk full on web1"}}}, &r); err != nil {
		t.Fatal(err)
	}
	if got := h.get(r.ID).Trigger; got == nil || got.Kind != "alert" || got.Event != "alert-42" || got.Detail != "disk full on web1" {
		t.Errorf("trigger %+v", got)
	}
	for _, bad := range []api.Trigger{{Kind: "cron"}, {Kind: "alert"}, {Kind: "workflow", Event: "x"}} {
		var out api.Run
		err := h.call(api.RunStart.Name, api.RunRequest{Name: "remediate", RunOptions: api.RunOptions{Trigger: &bad}}, &out)
		var se *bus.ServiceError
		if !errors.As(err, &se) || se.Code != 400 {
			t.Errorf("trigger %+v: %v, want a 400", bad, err)
		}
	}
}
