package cli

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	discovery "github.com/outpost-dev/outpost/libs/api/discovery"
)

// replayTargets are the services `outpost replay --to` can feed, with the streams they read.
var replayTargets = map[string][]string{"discovery": {"RESULTS"}}

func newReplay(g *globals) *cobra.Command {
	var req discovery.ReplayRequest
	var to string
	wait := true
	timeout := 10 * time.Minute
	cmd := &cobra.Command{
		Use:   "replay --stream STREAM --to SERVICE [--run ID] [--since 10m|--from-seq N] [--site S] [--agent A] [--subject PATTERN] [--dry-run]",
		Short: "Re-deliver stored messages to a service's live handler (rebuild the CMDB, reproduce a classification)",
		Long: `Re-deliver the messages a stream kept (RESULTS: 7 days by default) to a fresh ephemeral
consumer feeding SERVICE's own handler — the same code as live.

--to discovery --stream RESULTS --run RUN starts a replay run: RUN's parameters, today's
classifiers, its probes answered from RUN's stored results (nothing is sent to a site). Its
payloads go to the CMDB (a wiped CMDB is rebuilt); with --dry-run nothing is written and the
run's log lists what would have been sent. The command waits for the replay run to finish.

Streams EVENTS, CMDB and IMPORTS have no replay target yet: the CMDB's ingest stream is a work
queue (an ingested payload is gone), and replaying events and import rows into correlation and
the importer is still to come.`,
		Example: `  outpost replay --stream RESULTS --run 01JF... --to discovery
  outpost replay --stream RESULTS --run 01JF... --to discovery --dry-run`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			streams, ok := replayTargets[to]
			if !ok {
				return usagef("--to %q: replay can feed %s", to, strings.Join(keys(replayTargets), ", "))
			}
			req.Stream = strings.ToUpper(req.Stream)
			if req.Stream == "" {
				req.Stream = streams[0]
			}
			if !contains(streams, req.Stream) {
				return usagef("--stream %s --to %s: %s reads %s", req.Stream, to, to, strings.Join(streams, ", "))
			}
			if req.Run == "" {
				return usagef("--to discovery needs --run: the run whose results to replay (outpost runs ls)")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			var out discovery.ReplayReply
			if err := c.do(cmd.Context(), "POST", "/api/v1/discovery/replay", req, &out); err != nil {
				return err
			}
			if !wait {
				if g.output == "json" {
					b, _ := json.Marshal(out)
					return writeLine(g.stdout, b)
				}
				fmt.Fprintf(g.stdout, "replay run %s of %s: %d stored results of %d probes\n", out.Run, out.Of, out.Results, out.Probes)
				return nil
			}
			if g.output != "json" {
				fmt.Fprintf(g.stdout, "replay run %s of %s: %d stored results of %d probes; waiting for it\n", out.Run, out.Of, out.Results, out.Probes)
			}
			deadline := time.Now().Add(timeout)
			for {
				var raw []byte
				if err := c.do(cmd.Context(), "GET", "/api/v1/discovery/runs/"+url.PathEscape(out.Run), nil, &raw); err != nil {
					return err
				}
				var v discovery.Run
				if err := json.Unmarshal(raw, &v); err != nil {
					return err
				}
				if v.Final() {
					if g.output == "json" {
						return writeLine(g.stdout, raw)
					}
					if err := printRun(g.stdout, v); err != nil {
						return err
					}
					if v.State != discovery.StateCompleted {
						return fmt.Errorf("replay run %s ended %s: %s", v.ID, v.State, v.Reason)
					}
					return nil
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("replay run %s still %s after %s: follow it with outpost runs show %s", v.ID, v.State, timeout, v.ID)
				}
				select {
				case <-cmd.Context().Done():
					return cmd.Context().Err()
				case <-time.After(500 * time.Millisecond):
				}
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Stream, "stream", "", "stream to replay: RESULTS (EVENTS, CMDB, IMPORTS: no target yet)")
	f.StringVar(&to, "to", "", "service whose handler gets the messages: discovery")
	f.StringVar(&req.Run, "run", "", "only this run's messages")
	f.StringVar(&req.Since, "since", "", "only messages stored in the last DURATION (e.g. 10m)")
	f.Uint64Var(&req.FromSeq, "from-seq", 0, "only messages from this stream sequence on")
	f.StringVar(&req.Site, "site", "", "only this site's messages")
	f.StringVar(&req.Agent, "agent", "", "only this bridge's messages")
	f.StringVar(&req.Subject, "subject", "", "only messages on subjects matching this pattern (e.g. result.discovery.lab.ssh_exec.>)")
	f.BoolVar(&req.DryRun, "dry-run", false, "run the handlers with writes disabled and print what they would do")
	f.BoolVar(&wait, "wait", wait, "wait for the replay to finish and show it")
	f.DurationVar(&timeout, "timeout", timeout, "with --wait, give up after this long")
	return cmd
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
