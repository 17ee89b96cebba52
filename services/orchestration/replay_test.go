package orchestration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// Replaying CHANGES starts the cmdb_change runs the live consumer never started (here: the
// changes were acknowledged while no replica could start their runs — the orchestration's
// state lost), each once: a second replay, and a replay of runs started live, finds them and
// starts nothing. A dry run only says what would start; ranges and classes bound what is read.
func TestReplayChanges(t *testing.T) {
	h := newHarness(t)
	stop := h.startService("r1")
	added := h.clock.Now()
	h.add(`
name: on-os
inputs: {ci: {required: true}}
on:
  cmdb_change: {class: linux_server, attribute: os_version}
  inputs: {ci: '${{ event.ci }}'}
steps:
  - {id: hold, kind: approval}
`)
	h.waitTriggersFilter(bus.ChangeSubject("linux_server")) // the live consumer takes the class in
	stop()

	pub := bus.NewPublisher(h.js, envelope.ServiceSource("cmdb"), nil)
	seqs := map[string]uint64{}
	send := func(id string, c envelope.Change) {
		t.Helper()
		ack, err := pub.Publish(h.ctx, bus.ChangeSubject(c.Class), envelope.Meta{ID: id}, &c)
		if err != nil {
			t.Fatal(err)
		}
		seqs[id] = ack.Sequence
	}
	at := added.Add(time.Second)
	os := []string{"os_version"}
	send("ch-1", envelope.Change{CI: "ci-1", Class: "linux_server", Op: "updated", Attributes: os, Time: at})
	send("ch-win", envelope.Change{CI: "ci-w", Class: "windows_server", Op: "updated", Attributes: os, Time: at})
	send("ch-2", envelope.Change{CI: "ci-2", Class: "linux_server", Op: "updated", Attributes: os, Time: at})
	send("ch-ram", envelope.Change{CI: "ci-r", Class: "linux_server", Op: "updated", Attributes: []string{"ram_mb"}, Time: at})
	send("ch-3", envelope.Change{CI: "ci-3", Class: "linux_server", Op: "updated", Attributes: os, Time: at})
	// acknowledged with no replica there to start their runs: the live consumer is past them
	cons, err := h.js.Consumer(h.ctx, bus.StreamChanges, TriggersConsumer)
	if err != nil {
		t.Fatal(err)
	}
	acked, linux := 0, len(seqs)-1 // the consumer is delivered linux_server's changes only
	eventually(t, 60*time.Second, func() error {
		batch, err := cons.Fetch(linux-acked, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return err
		}
		for msg := range batch.Messages() {
			if err := msg.DoubleAck(h.ctx); err != nil {
				return err
			}
			acked++
		}
		if acked < linux {
			return fmt.Errorf("%d of %d changes fetched and acknowledged (last fetch: %v)", acked, linux, batch.Error())
		}
		return nil
	})
	defer h.startService("r2")()

	onOS := func() map[string]string { // run id → ci
		out := map[string]string{}
		for _, r := range h.runs() {
			if r.Workflow == "on-os" {
				out[r.ID] = fmt.Sprint(r.Inputs["ci"])
			}
		}
		return out
	}
	replay := func(req api.ReplayRequest) api.ReplayReply {
		t.Helper()
		var out api.ReplayReply
		if err := h.call(api.Replay.Name, req, &out); err != nil {
			t.Fatalf("replay %+v: %v", req, err)
		}
		return out
	}
	if got := onOS(); len(got) != 0 {
		t.Fatalf("runs before any replay: %v", got)
	}

	type counts struct{ changes, matched, started, existed int }
	of := func(r api.ReplayReply) counts { return counts{r.Changes, r.Matched, r.Started, r.Existed} }
	tests := []struct {
		name string
		req  api.ReplayRequest
		want counts
		runs int // on-os runs after the replay
	}{
		{"dry run: three would start, none does", api.ReplayRequest{DryRun: true}, counts{5, 3, 3, 0}, 0},
		{"one change by sequence", api.ReplayRequest{FromSeq: seqs["ch-2"], ToSeq: seqs["ch-2"]}, counts{1, 1, 1, 0}, 1},
		{"windows_server only: nothing matches", api.ReplayRequest{Class: "windows_server"}, counts{1, 0, 0, 0}, 1},
		{"the whole stream: the two others start", api.ReplayRequest{Stream: "changes"}, counts{5, 3, 2, 1}, 3},
		{"again: nothing starts twice", api.ReplayRequest{Since: "1h"}, counts{5, 3, 0, 3}, 3},
		{"dry run after: all exist", api.ReplayRequest{DryRun: true}, counts{5, 3, 0, 3}, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := replay(tc.req)
			if of(r) != tc.want {
				t.Fatalf("replay %+v: %+v, want %+v; firings %+v", tc.req, of(r), tc.want, r.Firings)
			}
			if got := onOS(); len(got) != tc.runs {
				t.Fatalf("after the replay %d on-os runs %v, want %d", len(got), got, tc.runs)
			}
		})
	}
	runs := onOS()
	cis := map[string]int{}
	for _, ci := range runs {
		cis[ci]++
	}
	if len(cis) != 3 || cis["ci-1"] != 1 || cis["ci-2"] != 1 || cis["ci-3"] != 1 {
		t.Errorf("runs by CI %v, want one each of ci-1, ci-2, ci-3", cis)
	}
	for id := range runs {
		if r := h.get(id); r.Trigger == nil || r.Trigger.Kind != "cmdb_change" || !strings.HasPrefix(r.Trigger.Event, "ch-") {
			t.Errorf("run %s trigger %+v, want the change that started it", id, r.Trigger)
		}
	}

	// a limit stops the read where the next request goes on
	first := replay(api.ReplayRequest{Limit: 2})
	if first.Changes != 2 || first.Next != seqs["ch-2"] || first.Started != 0 {
		t.Fatalf("limit 2: %+v, want 2 changes read and next %d", first, seqs["ch-2"])
	}
	rest := replay(api.ReplayRequest{FromSeq: first.Next})
	if rest.Changes != 3 || rest.Next != 0 || rest.Existed != 2 {
		t.Fatalf("from next %d: %+v, want the 3 other changes, 2 runs existing", first.Next, rest)
	}

	refused := []struct {
		name string
		req  api.ReplayRequest
		want string
	}{
		{"another stream", api.ReplayRequest{Stream: "EVENTS"}, "orchestration replays CHANGES"},
		{"since and from_seq", api.ReplayRequest{Since: "1h", FromSeq: 1}, "give one of them"},
		{"bad until", api.ReplayRequest{Until: "yesterday"}, `until "yesterday"`},
		{"range backwards", api.ReplayRequest{FromSeq: 5, ToSeq: 2}, "from_seq 5 is after to_seq 2"},
	}
	for _, tc := range refused {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			var out api.ReplayReply
			err := h.call(api.Replay.Name, tc.req, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("replay %+v: %v, want an error with %q", tc.req, err, tc.want)
			}
		})
	}
	if got := onOS(); len(got) != 3 {
		t.Errorf("at the end %d on-os runs, want 3: %v", len(got), got)
	}
}
