package hub_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/importer"
)

// A run's counters after a crash are what the stream holds, whatever the run record said
// when it was last saved (at most twice a second). The state a kill leaves — the uploaded
// file, the import set's pages, the outcomes recorded, the CMDB holding the rows sent, and
// a run record saved before the last of it — is written here as the importer writes it;
// then the importer starts, resumes the run, and every row is staged, inserted and
// reported once. (Found by TestImportResumesAfterHubKill: the hub was killed once the
// file's last pages were staged but before the record said so; staging resumed past them,
// staged nothing more, and the run completed with Staged 4,500 of 6,000.)
func TestResumedRunCountsRowsStagedBeforeTheKill(t *testing.T) {
	t.Parallel()
	const rows = 600
	cases := []struct {
		name string
		// staged is how many rows the import set holds at the kill: pages cut as
		// publishRows cuts the source's 500-row pages (256 rows at most).
		staged int64
		// saved is the staged count in the run record, saved before the later pages.
		saved int64
		// done: rows 1..done were sent to the CMDB and have their outcome (inserted).
		done int64
	}{
		{name: "every row staged, record saved before the last page", staged: 600, saved: 500, done: 256},
		{name: "every row staged, record saved before any", staged: 600, saved: 0},
		{name: "part staged, record saved before the last page", staged: 500, saved: 256, done: 256},
		{name: "part staged, record saved with it", staged: 256, saved: 256},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newImportHub(t)
			run := fmt.Sprintf("01KRESUMEDSTAGED00000000%02d", i)
			serial := func(n int64) string { return fmt.Sprintf("ST%d-%04d", i, n) }
			var csv strings.Builder
			csv.WriteString("h,s\n")
			for n := int64(1); n <= rows; n++ {
				fmt.Fprintf(&csv, "r-%s,%s\n", strings.ToLower(serial(n)), serial(n))
			}
			key := h.upload("s.csv", []byte(csv.String())) // the importer makes the bucket
			h.stopImp()

			// The import set: rows 1..staged in pages, each page's id naming its rows.
			seqOf := map[int64]uint64{}
			for _, p := range stagedPages(tc.staged) {
				var page struct {
					Rows []map[string]any `json:"rows"`
				}
				for n := p[0]; n <= p[1]; n++ {
					page.Rows = append(page.Rows, map[string]any{"n": n, "pos": map[string]any{"line": n + 1},
						"cols": map[string]any{"h": "r-" + strings.ToLower(serial(n)), "s": serial(n)}})
				}
				b, _ := json.Marshal(page)
				msg := &nats.Msg{Subject: "import." + run + ".rows", Data: b, Header: nats.Header{}}
				msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s.r.%d-%d", run, p[0], p[1]))
				ack, err := h.js.PublishMsg(h.ctx, msg)
				if err != nil {
					t.Fatal(err)
				}
				for n := p[0]; n <= p[1]; n++ {
					seqOf[n] = ack.Sequence
				}
			}
			observed := time.Date(2026, 11, 2, 3, 4, 5, 0, time.UTC)
			const mapYAML = "name: m\ntarget: {class: linux_server}\ncoalesce: [serial_number]\nfields: {name: 'row.h', serial_number: 'row.s'}\n"
			sentMark := int64(0)
			if tc.done > 0 {
				// Rows 1..done reached the CMDB and their outcomes were recorded.
				sentMark = 1024
				p := envelope.CIPayload{Source: "import", Observed: observed}
				for n := int64(1); n <= tc.done; n++ {
					p.Items = append(p.Items, envelope.CIItem{Ref: fmt.Sprint(n), Class: "linux_server",
						Attributes: map[string]any{"name": "r-" + strings.ToLower(serial(n)), "serial_number": serial(n)}})
				}
				var got cmdbapi.Outcome
				eventually(t, 30*time.Second, func() error {
					var err error
					got, err = cmdbapi.Ingest.Call(h.ctx, h.nc, cmdbapi.IngestRequest{Payload: p})
					return err
				})
				ciOf := map[string]string{}
				for _, c := range got.Created {
					for _, r := range c.Refs {
						ciOf[r] = c.ID
					}
				}
				var outs struct {
					Outcomes []map[string]any `json:"outcomes"`
				}
				for n := int64(1); n <= tc.done; n++ {
					if ciOf[fmt.Sprint(n)] == "" {
						t.Fatalf("row %d: the CMDB created no CI for it: %+v", n, got)
					}
					outs.Outcomes = append(outs.Outcomes, map[string]any{"n": n, "row_seq": seqOf[n], "pos": map[string]any{"line": n + 1},
						"outcome": api.OutcomeInserted, "ci": ciOf[fmt.Sprint(n)]})
				}
				b, _ := json.Marshal(outs)
				msg := &nats.Msg{Subject: "import." + run + ".out." + api.OutcomeInserted, Data: b, Header: nats.Header{}}
				msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s.o.1-%d-%d", run, tc.done, tc.done))
				if _, err := h.js.PublishMsg(h.ctx, msg); err != nil {
					t.Fatal(err)
				}
			}
			rec, _ := json.Marshal(map[string]any{"id": run, "set": run, "state": api.StateRunning, "filename": "s.csv", "options": map[string]any{},
				"map_name": "m", "class": "linux_server", "source": "import", "created": observed, "staging_done": false,
				"counters": map[string]any{"staged": tc.saved, "inserted": tc.done}, "map": mapYAML, "observed": observed,
				"sent_mark": sentMark, "upload": key, "header": []string{"h", "s"}})
			kv, err := h.js.KeyValue(h.ctx, importer.KVRuns)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Put(h.ctx, run, rec); err != nil {
				t.Fatal(err)
			}

			h.startImporter()
			final := h.wait(run)
			if want := (api.Counters{Staged: rows, Inserted: rows}); final.State != api.StateCompleted || final.Counters != want {
				t.Fatalf("resumed run (set held %d rows, record said %d staged, %d done): %s %q %+v, want %+v; errors %+v",
					tc.staged, tc.saved, tc.done, final.State, final.Reason, final.Counters, want, h.rows(run, api.OutcomeError))
			}
			// Each row once, inserted: staging resumed after the rows in the set, none twice.
			seen := map[int64]string{}
			for _, r := range h.rows(run, "") {
				if prev, dup := seen[r.N]; dup {
					t.Fatalf("row %d has two outcomes: %s and %s", r.N, prev, r.Outcome)
				}
				seen[r.N] = r.Outcome
			}
			for n := int64(1); n <= rows; n++ {
				if seen[n] != api.OutcomeInserted {
					t.Fatalf("row %d: outcome %q, want inserted (%d rows with an outcome)", n, seen[n], len(seen))
				}
			}
			// The import set holds each row once.
			stream, err := h.js.Stream(h.ctx, "IMPORTS")
			if err != nil {
				t.Fatal(err)
			}
			inSet := int64(0)
			cons, err := stream.OrderedConsumer(h.ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"import." + run + ".rows"}})
			if err != nil {
				t.Fatal(err)
			}
			ci, err := cons.Info(h.ctx)
			if err != nil {
				t.Fatal(err)
			}
			batch, err := cons.Fetch(int(ci.NumPending), jetstream.FetchMaxWait(20*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			next := int64(1)
			for m := range batch.Messages() {
				var page struct {
					Rows []struct {
						N int64 `json:"n"`
					} `json:"rows"`
				}
				if err := json.Unmarshal(m.Data(), &page); err != nil {
					t.Fatal(err)
				}
				for _, r := range page.Rows {
					if r.N != next {
						t.Fatalf("import set: row %d where row %d was due", r.N, next)
					}
					next++
					inSet++
				}
			}
			if inSet != rows {
				t.Fatalf("import set holds %d rows, want %d (batch error %v)", inSet, rows, batch.Error())
			}
		})
	}
}

// stagedPages are the [first, last] rows of the pages publishRows makes of rows 1..n read
// from a file 500 rows at a time: at most 256 rows a page, a source page never shared.
func stagedPages(n int64) [][2]int64 {
	var pages [][2]int64
	for start := int64(1); start <= n; start += 500 {
		end := min(start+499, n)
		for first := start; first <= end; first += 256 {
			pages = append(pages, [2]int64{first, min(first+255, end)})
		}
	}
	return pages
}
