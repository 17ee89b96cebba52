package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	dlqapi "github.com/outpost-dev/outpost/libs/api/dlq"
	gatewayapi "github.com/outpost-dev/outpost/libs/api/gateway"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/outpost/hub"
)

// TestDLQCommands: a payload the CMDB refuses (a class its model lacks) is listed, shown
// whole with its reason and origin, retried (it fails again, since nothing fixed its cause,
// and comes back under a new SEQ marked as retried once), and purged by code.
func TestDLQCommands(t *testing.T) {
	cfg := startHub(t)
	server := "http://" + cfg.HTTPAddr
	cli := func(args ...string) (int, string, string) {
		return run(t, append([]string{"--server", server, "--data", cfg.DataDir}, args...)...)
	}
	auth, err := hub.ServiceAuth(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect("nats://"+cfg.NATSAddr, auth)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := &envelope.CIPayload{Source: "import", Observed: time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC),
		Items: []envelope.CIItem{{Ref: "t", Class: "toaster", Attributes: map[string]any{"serial_number": "T-1"}}}}
	if _, err := bus.NewPublisher(js, envelope.ServiceSource("import"), nil).Publish(ctx, "cmdb.ingest.0", envelope.Meta{ID: "toaster-1", Run: "run-9"}, p); err != nil {
		t.Fatal(err)
	}
	list := func() []gatewayapi.DLQItem {
		code, out, errs := cli("dlq", "ls", "-o", "json")
		var l gatewayapi.DLQList
		if code != 0 || json.Unmarshal([]byte(out), &l) != nil {
			t.Fatalf("dlq ls: exit %d %s %s", code, out, errs)
		}
		return l.Items
	}
	waitFor := func(seqNot uint64) gatewayapi.DLQItem {
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if items := list(); len(items) == 1 && items[0].Seq != seqNot {
				return items[0]
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("no dead letter other than %d: %+v", seqNot, list())
		return gatewayapi.DLQItem{}
	}
	first := waitFor(0)
	seq := fmt.Sprint(first.Seq)
	code, out, _ := cli("dlq", "show", seq)
	for _, want := range []string{"permanent", "toaster", "cmdb.ingest.0", "ORIGIN", "hub", "RETRY", "yes", "outpost-run", "run-9", `"class":"toaster"`} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("dlq show: exit %d, no %q in\n%s", code, want, out)
		}
	}
	code, out, _ = cli("dlq", "retry", seq, "-o", "json")
	var rr dlqapi.RetryReply
	if err := json.Unmarshal([]byte(out), &rr); code != 0 || err != nil || len(rr.Retried) != 1 || rr.Retried[0].Subject != "cmdb.ingest.0" || rr.Retried[0].Retry != 1 {
		t.Fatalf("dlq retry: exit %d %s", code, out)
	}
	again := waitFor(first.Seq)
	code, out, _ = cli("dlq", "show", fmt.Sprint(again.Seq), "-o", "json")
	var m dlqapi.Message
	if err := json.Unmarshal([]byte(out), &m); code != 0 || err != nil || m.Retries != 1 || m.Headers[dlqapi.HeaderRetry] == nil {
		t.Fatalf("the dead letter back after its retry: exit %d %s", code, out)
	}
	for _, args := range [][]string{{"dlq", "purge"}, {"dlq", "retry"}, {"dlq", "retry", "1", "--all"}, {"dlq", "show", "x"}, {"dlq", "purge", "--older-than", "soon"}} {
		if code, _, _ := cli(args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	if code, out, _ := cli("dlq", "purge", "--code", "permanent"); code != 0 || !strings.Contains(out, "1 dead letters purged") {
		t.Fatalf("dlq purge: exit %d %s", code, out)
	}
	if items := list(); len(items) != 0 {
		t.Fatalf("left after purge: %+v", items)
	}
}
