package orchestration

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"

	api "github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// run_start with an idempotency key starts one run however often it is repeated: again,
// many at once, after the replica died between reserving the key and writing the run; a
// key reused for another workflow is refused; starts without a key stay independent.
func TestRunStartIdempotencyKey(t *testing.T) {
	h := newHarness(t)
	defer h.startService("r1")()
	h.add("name: fix\nsteps:\n  - {id: ok, kind: approval}\n")
	h.add("name: other\nsteps:\n  - {id: ok, kind: approval}\n")
	start := func(name, key string) (api.Run, error) {
		var out api.Run
		err := h.call(api.RunStart.Name, api.RunRequest{Name: name, RunOptions: api.RunOptions{IdempotencyKey: key,
			Trigger: &api.Trigger{Kind: "alert", Event: "A1"}}}, &out)
		return out, err
	}
	runsOf := func(name string) int {
		var out api.RunsResponse
		if err := h.call(api.RunList.Name, api.RunsRequest{}, &out); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range out.Runs {
			if r.Workflow == name {
				n++
			}
		}
		return n
	}

	first, err := start("fix", "alert:A1:restart")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		workflow string
		key      string
		wantRun  string // "" with wantErr
		wantErr  string
	}{
		{"repeat", "fix", "alert:A1:restart", first.ID, ""},
		{"another key", "fix", "alert:A2:restart", "", ""},
		{"key reused for another workflow", "other", "alert:A1:restart", "", "409: idempotency_key \"alert:A1:restart\" started run " + first.ID + " of workflow fix, not other"},
		{"key too long", "fix", strings.Repeat("k", 257), "", "400: idempotency_key of 257 bytes: at most 256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := start(tc.workflow, tc.key)
			switch {
			case tc.wantErr != "":
				var se *bus.ServiceError
				code, msg, _ := strings.Cut(tc.wantErr, ": ")
				if err == nil || !errors.As(err, &se) || strconv.Itoa(se.Code) != code || !strings.Contains(err.Error(), msg) {
					t.Fatalf("got %+v, %v; want error %q", r.ID, err, tc.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case tc.wantRun != "" && r.ID != tc.wantRun:
				t.Fatalf("run %s, want the first run %s", r.ID, tc.wantRun)
			case tc.wantRun == "" && r.ID == first.ID:
				t.Fatalf("another key returned the first run %s", r.ID)
			}
		})
	}

	// many repeats at once: one run
	var wg sync.WaitGroup
	ids := make([]string, 16)
	errs := make([]error, len(ids))
	for i := range ids {
		wg.Go(func() {
			r, err := start("fix", "alert:A3:restart")
			ids[i], errs[i] = r.ID, err
		})
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("concurrent repeat %d: run %q, %v; the first got %q", i, ids[i], errs[i], ids[0])
		}
	}

	// the replica died after reserving the key and before writing the run: the repeat
	// starts the run under the reserved id
	sum := sha256.Sum256([]byte("alert:A4:restart"))
	reserved := envelope.NewID()
	if _, err := h.svc.kvRunKeys.Create(h.ctx, hex.EncodeToString(sum[:]), []byte(reserved)); err != nil {
		t.Fatal(err)
	}
	r, err := start("fix", "alert:A4:restart")
	if err != nil || r.ID != reserved {
		t.Fatalf("repeat after a crash: run %q, %v; want the reserved %s", r.ID, err, reserved)
	}
	if again, err := start("fix", "alert:A4:restart"); err != nil || again.ID != reserved {
		t.Fatalf("repeat of the repeat: run %q, %v", again.ID, err)
	}
	// fix: A1, A2, A3, A4 — one run each
	if n := runsOf("fix"); n != 4 {
		t.Fatalf("%d runs of fix, want 4 (one per key)", n)
	}
	// without a key, two starts are two runs
	a, b := h.run("other", nil), h.run("other", nil)
	if a.ID == b.ID {
		t.Fatalf("two starts without a key gave one run %s", a.ID)
	}
}
