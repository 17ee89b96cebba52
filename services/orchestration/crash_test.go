package orchestration

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
)

// A replica crashes (its connection is cut, nothing in its memory reaches the bus) at
// each interesting moment of a probe step, and again while the run waits for an approval;
// a new replica rebuilds the run from its snapshot and history. Whatever the moment, the
// step's one attempt runs exactly once on the bridge and on the target, and the run's
// history alone rebuilds the run as served.
func TestCrashResume(t *testing.T) {
	for _, tc := range []struct {
		name  string
		point string // crash at this point of the dispatch; "" crashes while the step runs
	}{
		{name: "while the step runs on the bridge"},
		{name: "between recording the attempt and sending its probe", point: "probe-recorded"},
		{name: "between sending the probe and recording it sent", point: "probe-published"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			reached := make(chan struct{})
			var hook func(ctx context.Context, point string)
			var once sync.Once
			if tc.point != "" {
				hook = func(ctx context.Context, point string) {
					if point == tc.point {
						once.Do(func() { close(reached) })
						<-ctx.Done() // dead: frozen until killed
					}
				}
			}
			kill := h.startCrashable("r1", hook)
			host, port := h.web.hostPort()
			h.add(fmt.Sprintf(`
name: durable
steps:
  - id: hold
    kind: http_request
    site: lab
    target: %s
    params: {scheme: http, port: %s, path: /hold}
    timeout: 1h
  - id: ok
    kind: approval
    needs: [hold]
  - id: after
    kind: http_request
    site: lab
    needs: [ok]
    target: %[1]s
    params: {scheme: http, port: %[2]s, path: /after}
`, host, port))
			run := h.run("durable", nil)
			if tc.point != "" {
				<-reached
			} else {
				eventually(t, 10*time.Second, func() error {
					if h.web.count("/hold") != 1 {
						return fmt.Errorf("the target has not seen the step yet")
					}
					return nil
				})
			}
			kill()
			if tc.point == "probe-recorded" && h.web.count("/hold") != 0 {
				t.Fatal("the probe left before the crash point")
			}

			kill = h.startCrashable("r1", nil)
			eventually(t, 10*time.Second, func() error {
				if h.web.count("/hold") != 1 {
					return fmt.Errorf("the target has not seen the step after the restart")
				}
				return nil
			})
			close(h.web.release)
			h.waitStep(run.ID, "ok", api.StepWaiting, 1)
			kill() // while the run waits for an approval

			kill = h.startCrashable("r1", nil)
			defer kill()
			var out api.Run
			if err := h.call(api.RunApprove.Name, api.ApproveRequest{Run: run.ID, Step: "ok"}, &out); err != nil {
				t.Fatal(err)
			}
			r := h.waitRun(run.ID, api.RunCompleted)
			for _, id := range []string{"hold", "after"} {
				st := r.Step(id)
				if len(st.Attempts) != 1 || st.Attempts[0].Sent == nil {
					t.Fatalf("%s: %d attempts %+v, want 1 sent", id, len(st.Attempts), st.Attempts)
				}
				if n := h.ran(st.Attempts[0].Key); n != 1 {
					t.Errorf("%s: its probe ran %d times on the bridge, want 1", id, n)
				}
				if n := h.web.count("/" + id); n != 1 {
					t.Errorf("%s: the target executed it %d times, want 1", id, n)
				}
			}

			var hist api.EventsResponse
			if err := h.call(api.RunEvents.Name, api.RunIDRequest{ID: run.ID}, &hist); err != nil {
				t.Fatal(err)
			}
			var folded api.Run
			for _, e := range hist.Events {
				fold(&folded, e)
			}
			folded.Seq = r.Seq
			a, _ := json.Marshal(folded)
			b, _ := json.Marshal(r)
			if string(a) != string(b) {
				t.Errorf("the history folds to\n%s\nthe run is\n%s", a, b)
			}
			if first, last := hist.Events[0].Type, hist.Events[len(hist.Events)-1].Type; first != "run.started" || last != "run.completed" {
				t.Errorf("history from %s to %s", first, last)
			}
		})
	}
}
