package orchestration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// triggersInfo is the triggers consumer as the server holds it.
func (h *harness) triggersInfo() (*jetstream.ConsumerInfo, error) {
	c, err := h.js.Consumer(h.ctx, bus.StreamChanges, TriggersConsumer)
	if err != nil {
		return nil, err
	}
	return c.Info(h.ctx)
}

// triggersFilter is the triggers consumer's filter as the server holds it.
func (h *harness) triggersFilter() ([]string, error) {
	info, err := h.triggersInfo()
	if err != nil {
		return nil, err
	}
	if info.Config.FilterSubject != "" {
		return []string{info.Config.FilterSubject}, nil
	}
	return info.Config.FilterSubjects, nil
}

// runsOf lists the runs of workflow.
func (h *harness) runsOf(workflow string) []api.Run {
	var out []api.Run
	for _, r := range h.runs() {
		if r.Workflow == workflow {
			out = append(out, r)
		}
	}
	return out
}

// waitTriggersFilter waits until the triggers consumer's filter is want and nothing is left
// to read again (a read-again still to come would start runs a test does not expect).
func (h *harness) waitTriggersFilter(want ...string) {
	h.t.Helper()
	eventually(h.t, 30*time.Second, func() error {
		got, err := h.triggersFilter()
		if err != nil {
			return fmt.Errorf("triggers consumer: %w", err)
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("triggers consumer filter %v, want %v", got, want)
		}
		if _, err := h.svc.kvLeases.Get(h.ctx, triggerReplayKey); !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("%s: %v, want it deleted (nothing left to read again)", triggerReplayKey, err)
		}
		return nil
	})
}

// The triggers consumer is delivered only the change events of classes a cmdb_change
// trigger watches: none while no trigger watches a class, and a class once a trigger does.
func TestTriggersConsumerFollowsWatchedClasses(t *testing.T) {
	recheck := filterRecheck
	filterRecheck = 100 * time.Millisecond
	t.Cleanup(func() { filterRecheck = recheck })
	h := newHarness(t)
	defer h.startService("r1")()
	h.waitTriggersFilter(changeFilterNone)
	h.add(onOSWorkflow)
	h.waitTriggersFilter(bus.ChangeSubject("linux_server"))
	h.add(`
name: on-switch
on:
  cmdb_change: {class: network_switch}
steps:
  - {id: hold, kind: approval}
`)
	h.waitTriggersFilter(bus.ChangeSubject("linux_server"), bus.ChangeSubject("network_switch"))

	// another hub process provisions the bus: the consumer takes every class again, and is
	// narrowed again
	spec := triggersConsumerSpec()
	if _, err := h.js.CreateOrUpdateConsumer(h.ctx, spec.Stream, spec.Config()); err != nil {
		t.Fatal(err)
	}
	h.waitTriggersFilter(bus.ChangeSubject("linux_server"), bus.ChangeSubject("network_switch"))
}

const onOSWorkflow = `
name: on-os
inputs: {ci: {required: true}}
on:
  cmdb_change: {class: linux_server}
  inputs: {ci: '${{ event.ci }}'}
steps:
  - {id: hold, kind: approval}
`

// A trigger added while the consumer leaves its class out gets the change events the
// consumer went past before its filter took the class in: they are read again from CHANGES,
// here by the next replica, the first having stopped in between.
func TestTriggersConsumerReadsAgainWhatItWentPast(t *testing.T) {
	h := newHarness(t)
	linux := bus.ChangeSubject("linux_server")
	holding := make(chan []string, 10)
	h.beforeFilter = func(ctx context.Context, filters []string) {
		if slices.Contains(filters, linux) {
			holding <- filters
			<-ctx.Done() // r1 stops here, before its filter takes linux_server in
		}
	}
	stop := h.startService("r1")
	h.waitTriggersFilter(changeFilterNone)
	added := h.clock.Now()
	h.add(onOSWorkflow)
	select {
	case <-holding:
	case <-time.After(30 * time.Second):
		t.Fatal("r1 never set the triggers consumer's filter for linux_server")
	}
	if _, err := h.svc.kvLeases.Get(h.ctx, triggerReplayKey); err != nil {
		t.Fatalf("%s before the filter changes: %v, want it written", triggerReplayKey, err)
	}

	// The consumer goes past a linux_server change: its filter (set here) takes
	// windows_server's only, and one of those comes after it.
	spec := triggersConsumerSpec()
	spec.Filters = []string{bus.ChangeSubject("windows_server")}
	if _, err := h.js.CreateOrUpdateConsumer(h.ctx, spec.Stream, spec.Config()); err != nil {
		t.Fatal(err)
	}
	pub := bus.NewPublisher(h.js, envelope.ServiceSource("cmdb"), nil)
	var last uint64
	for _, c := range []envelope.Change{
		{CI: "ci-linux", Class: "linux_server", Op: "created", Time: added.Add(time.Second)},
		{CI: "ci-windows", Class: "windows_server", Op: "created", Time: added.Add(time.Second)},
	} {
		ack, err := pub.Publish(h.ctx, bus.ChangeSubject(c.Class), envelope.Meta{ID: "ch-" + c.CI}, &c)
		if err != nil {
			t.Fatal(err)
		}
		last = ack.Sequence
	}
	eventually(t, 30*time.Second, func() error {
		info, err := h.triggersInfo()
		if err != nil {
			return err
		}
		if info.AckFloor.Stream < last || info.NumAckPending > 0 {
			return fmt.Errorf("consumer acknowledged up to stream sequence %d (%d unacknowledged), want %d", info.AckFloor.Stream, info.NumAckPending, last)
		}
		return nil
	})
	if n := len(h.runsOf("on-os")); n != 0 {
		t.Fatalf("%d runs of on-os before the filter took linux_server in, want 0", n)
	}
	stop()

	h.beforeFilter = nil
	defer h.startService("r2")()
	h.waitTriggersFilter(linux)
	eventually(t, 30*time.Second, func() error {
		if runs := h.runsOf("on-os"); len(runs) != 1 || runs[0].Trigger == nil || runs[0].Trigger.Event != "ch-ci-linux" {
			return fmt.Errorf("runs of on-os %+v, want one, fired by ch-ci-linux", runs)
		}
		return nil
	})
}
