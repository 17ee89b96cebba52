package orchestration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
)

// A for_each over 500 items with concurrency 50 runs every item once, never more than 50
// at a time at the target, on the site site_of picks; its output lists the items' outputs
// in order, and a later step reads it.
func TestForEachConcurrency(t *testing.T) {
	h := newHarness(t)
	defer h.startService("r1")()
	host, port := h.web.hostPort()
	h.add(fmt.Sprintf(`
name: fanout
inputs:
  host: {required: true}
  n: {type: number, required: true}
steps:
  - id: each
    kind: http_request
    for_each: '${{ map(1..int(inputs.n), {"p" + string(#)}) }}'
    concurrency: 50
    site_of: '${{ inputs.host }}'
    target: '${{ inputs.host }}'
    params: {scheme: http, port: %s, path: '/slow/${{ item }}-${{ index }}'}
  - id: total
    kind: approval
    needs: [each]
    if: '${{ len(steps.each.output) == int(inputs.n) && steps.each.output[499].status == 200 }}'
`, port))
	run := h.run("fanout", map[string]any{"host": host, "n": "500"})
	r := h.waitStep(run.ID, "total", api.StepWaiting, 1)
	each := r.Step("each")
	if each.State != api.StepSucceeded || each.Items != 500 {
		t.Fatalf("each: %s with %d items (%s)", each.State, each.Items, each.Reason)
	}
	h.web.mu.Lock()
	peak, hits := h.web.peak, 0
	for p, n := range h.web.hits {
		if strings.HasPrefix(p, "/slow/") {
			hits++
			if n != 1 {
				t.Errorf("%s executed %d times", p, n)
			}
		}
	}
	h.web.mu.Unlock()
	if hits != 500 {
		t.Fatalf("the target executed %d items, want 500", hits)
	}
	if peak > 50 || peak < 5 {
		t.Fatalf("at most %d items ran at once; want at most 50 (the concurrency), and some at once", peak)
	}
	var outs []struct {
		Status int `json:"status"`
		Body   struct {
			Text string `json:"text"`
		} `json:"body"`
	}
	// 500 outputs are over the inline threshold: the run keeps a reference, the
	// expression of total saw the list itself, run_output reads it back in pages
	var ref api.OutputRef
	if err := json.Unmarshal(each.Output, &ref); err != nil || ref.Ref != BucketOutputs+"/"+run.ID+"-each-1" || ref.Size < 16<<10 {
		t.Fatalf("each keeps %s, want a reference to an object", each.Output)
	}
	full := h.output(run.ID, "each")
	if int64(len(full)) != ref.Size {
		t.Fatalf("run_output gave %d bytes, the reference says %d", len(full), ref.Size)
	}
	if err := json.Unmarshal(full, &outs); err != nil || len(outs) != 500 || !strings.HasPrefix(outs[7].Body.Text, "ok /slow/p8-7 ") {
		t.Fatalf("output: %v, %d items, item 7: %+v", err, len(outs), outs[min(7, len(outs)-1)])
	}
	item := r.Step("each.7")
	if item == nil || item.Parent != "each" || len(item.Attempts) != 1 || item.Attempts[0].Key != run.ID+"-each.7-1" {
		t.Fatalf("item 7: %+v", item)
	}
	if n := h.ran(item.Attempts[0].Key); n != 1 {
		t.Fatalf("item 7 ran %d times on the bridge", n)
	}
	t.Logf("peak concurrency %d", peak)
}

// site_of picks the site with the most specific range holding the address, skips a site
// excluding it, and fails the step (not retried) when no site holds it.
func TestSiteOf(t *testing.T) {
	h := newHarness(t)
	defer h.startService("r1")()
	h.add(`
name: where
inputs:
  host: {required: true}
steps:
  - id: probe
    kind: http_request
    site_of: '${{ inputs.host }}'
    target: '${{ inputs.host }}'
    params: {scheme: http, port: 9, path: /}
    timeout: 1h
    retry: {max_attempts: 3}
`)
	for _, tc := range []struct{ host, site, fail string }{
		{host: "127.0.0.1", site: "lab"},
		{host: "127.0.0.2", site: "edge"},
		{host: "127.0.0.3", fail: "site_of 127.0.0.3: no site's ranges hold it"},
		{host: "web1", fail: `site_of "web1": want an IP address`},
	} {
		t.Run(tc.host, func(t *testing.T) {
			run := h.run("where", map[string]any{"host": tc.host})
			if tc.fail != "" {
				r := h.waitRun(run.ID, api.RunFailed)
				if st := r.Step("probe"); len(st.Attempts) != 1 || !strings.Contains(st.Reason, tc.fail) {
					t.Fatalf("probe: %d attempts, %q; want 1 attempt, %q", len(st.Attempts), st.Reason, tc.fail)
				}
				return
			}
			eventually(t, 10*time.Second, func() error {
				if n := h.sentTo(run.ID+"-probe-1", tc.site); n != 1 {
					return fmt.Errorf("the probe reached site %s %d times", tc.site, n)
				}
				return nil
			})
		})
	}
}

// An output over the inline threshold is kept by reference: the run (and each event of
// its history) holds the object's name, size and digest; run_output reads it back in
// pages; a later step's expression reads the output itself.
func TestLargeOutputByReference(t *testing.T) {
	h := newHarness(t)
	defer h.startService("r1")()
	host, port := h.web.hostPort()
	h.add(fmt.Sprintf(`
name: big
steps:
  - id: get
    kind: http_request
    site: lab
    target: %s
    params: {scheme: http, port: %s, path: /big}
  - id: seen
    kind: approval
    needs: [get]
    if: '${{ len(steps.get.output.body.text) == 716800 }}'
`, host, port))
	run := h.run("big", nil)
	r := h.waitStep(run.ID, "seen", api.StepWaiting, 1)
	var ref api.OutputRef
	if err := json.Unmarshal(r.Step("get").Output, &ref); err != nil || ref.Ref != BucketOutputs+"/"+run.ID+"-get-1" || ref.SHA256 == "" {
		t.Fatalf("get keeps %.200s, want a reference", r.Step("get").Output)
	}
	full := h.output(run.ID, "get")
	var out struct {
		Body struct {
			Text string `json:"text"`
		} `json:"body"`
	}
	if err := json.Unmarshal(full, &out); err != nil || int64(len(full)) != ref.Size || len(out.Body.Text) != 700<<10 || ref.Size <= api.OutputPage {
		t.Fatalf("run_output: %d bytes (%v), body %d; reference %d bytes", len(full), err, len(out.Body.Text), ref.Size)
	}
	var hist api.EventsResponse
	if err := h.call(api.RunEvents.Name, api.RunIDRequest{ID: run.ID}, &hist); err != nil {
		t.Fatal(err)
	}
	for _, e := range hist.Events {
		if e.Into != nil && len(e.Into.Output) > 16<<10 {
			t.Fatalf("event %s carries %d bytes of output", e.Type, len(e.Into.Output))
		}
	}
}
