package cmdb

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb/classes"
	"github.com/outpost-dev/outpost/services/cmdb/ire"
	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// On SQLite the batcher reconciles a batch while the previous one commits (a chain of
// transactions). When a batch of the chain fails, it is ingested again on its own —
// retried, then split so that only the payload at fault fails — and so is the batch that
// was reconciled on top of it, which here updates a CI the failed batch created: nothing is
// lost, nothing written twice, every payload gets its own result.
func TestBatcherRedoesTheBatchesAfterAFailedOne(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "cmdb.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m, err := classes.Default()
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	eng, err := ire.New(st, m, ire.Options{Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	host := func(n int, name string, at time.Duration) envelope.CIPayload {
		return envelope.CIPayload{Source: "discovery", Observed: t0.Add(at), Items: []envelope.CIItem{{Ref: "h", Class: "linux_server",
			Attributes: map[string]any{"name": name, "serial_number": fmt.Sprintf("SN-BR-%d", n), "ip_address": fmt.Sprintf("10.11.0.%d", n)}}}}
	}
	refused := errors.New("effects refused")
	b := &batcher{eng: eng, max: 3, maxItems: 1 << 20, reqs: make(chan *batchReq, 16)}
	send := func(ps ...envelope.CIPayload) []*batchReq {
		var out []*batchReq
		for i, p := range ps {
			prep, err := eng.Prepare(p)
			if err != nil {
				t.Fatal(err)
			}
			if p.Items[0].Attributes["name"] == "bad" {
				prep.Announce(fmt.Sprintf("k%d", i), func(ire.Outcome) (string, []store.OutboxMsg, error) { return "", nil, refused },
					func(string) ([]store.OutboxMsg, error) { return nil, nil })
			}
			r := &batchReq{p: prep, done: make(chan ire.Result, 1)}
			b.reqs <- r
			out = append(out, r)
		}
		return out
	}
	results := func(reqs []*batchReq) []error {
		var out []error
		for i, r := range reqs {
			select {
			case res := <-r.done:
				out = append(out, res.Err)
			case <-time.After(2 * time.Minute):
				t.Fatalf("payload %d: no result after 2 minutes", i)
			}
		}
		return out
	}
	// Queued before the worker starts: two batches of three, the first failing to
	// reconcile its second payload, the second renaming the first batch's first CI.
	first := send(host(1, "a", 0), host(2, "bad", 0), host(3, "c", 0), host(1, "a-renamed", time.Minute), host(4, "d", 0), host(5, "e", 0))
	b.wg.Add(1)
	go func() { defer b.wg.Done(); b.work(ctx) }()
	for i, err := range results(first) {
		if want := i == 1; (err != nil) != want || (want && !errors.Is(err, refused)) {
			t.Errorf("payload %d: error %v, want failed %v (effects refused)", i, err, want)
		}
	}
	// More batches through a chain: each updates what the one before created.
	var next []envelope.CIPayload
	for i := 6; i < 18; i++ {
		next = append(next, host(i, fmt.Sprintf("n%d", i), 0), host(i-1, fmt.Sprintf("n%d-renamed", i-1), time.Hour))
	}
	for i, err := range results(send(next...)) {
		if err != nil {
			t.Errorf("later payload %d: %v", i, err)
		}
	}
	cancel()
	b.wait()
	page, err := st.List(context.Background(), store.ListQuery{Classes: []string{"linux_server"}, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range page.Items {
		names = append(names, c.Name)
	}
	slices.Sort(names)
	want := []string{"a-renamed", "c", "d", "n17"}
	for i := 5; i < 17; i++ {
		want = append(want, fmt.Sprintf("n%d-renamed", i))
	}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Fatalf("servers:\n%s\nwant:\n%s", strings.Join(names, " "), strings.Join(want, " "))
	}
}
