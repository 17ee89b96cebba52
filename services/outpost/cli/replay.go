package cli

import (
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	discovery "github.com/outpost-dev/outpost/libs/api/discovery"
	importapi "github.com/outpost-dev/outpost/libs/api/importer"
)

// replayTargets are the services `outpost replay --to` can feed, with the streams they read.
var replayTargets = map[string][]string{"discovery": {"RESULTS"}, "importer": {"IMPORTS"}}

func newReplay(g *globals) *cobra.Command {
	var req discovery.ReplayRequest
	var to, mapArg string
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

--to importer --stream IMPORTS --run RUN re-transforms the rows import run RUN staged in IMPORTS
(kept 7 days by default) through the importer's live transform: a new run of the same set, with
RUN's own map or --map. Its payloads reach the CMDB, whose identification finds the CIs they
made before: a replay duplicates nothing (its rows come out unchanged unless the CMDB or the
map changed). An import set is replayed whole (no --since/--from-seq/--subject), and has no
dry run: "outpost import maps test FILE --map MAP" previews a map on a file's rows.

Streams EVENTS and CMDB have no replay target yet: the CMDB's ingest stream is a work queue (an
ingested payload is gone; RESULTS and IMPORTS rebuild what it held), and correlation cannot yet
tell an event it applied long ago from a new one.`,
		Example: `  outpost replay --stream RESULTS --run 01JF... --to discovery
  outpost replay --stream RESULTS --run 01JF... --to discovery --dry-run
  outpost replay --stream IMPORTS --run 01JG... --to importer
  outpost replay --stream IMPORTS --run 01JG... --to importer --map hosts-v2.yaml`,
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
			if to == "importer" {
				return g.replayImport(cmd, req, mapArg, wait)
			}
			if mapArg != "" {
				return usagef("--map is for --to importer")
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
	f.StringVar(&req.Stream, "stream", "", "stream to replay: RESULTS (--to discovery), IMPORTS (--to importer); EVENTS, CMDB: no target yet")
	f.StringVar(&to, "to", "", "service whose handler gets the messages: discovery or importer")
	f.StringVar(&mapArg, "map", "", "--to importer: the transform map (YAML file or stored map's name); default the run's own")
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

// replayImport re-transforms an import run's staged rows (IMPORTS) with its own map or
// --map: the importer's retransform, which the CMDB's identification makes idempotent.
func (g *globals) replayImport(cmd *cobra.Command, req discovery.ReplayRequest, mapArg string, wait bool) error {
	var errs []string
	if req.Run == "" {
		errs = append(errs, "--to importer needs --run: the import run whose staged rows to replay (outpost import runs ls)")
	}
	if req.DryRun {
		errs = append(errs, "--to importer has no --dry-run: preview a map on a file's rows with outpost import maps test FILE --map MAP")
	}
	for _, f := range []struct {
		flag string
		set  bool
	}{{"--since", req.Since != ""}, {"--from-seq", req.FromSeq > 0}, {"--site", req.Site != ""}, {"--agent", req.Agent != ""}, {"--subject", req.Subject != ""}} {
		if f.set {
			errs = append(errs, f.flag+": an import set is replayed whole (--run names it)")
		}
	}
	if len(errs) > 0 {
		return usagef("%s", strings.Join(errs, "; "))
	}
	var ms importapi.MapSource
	if mapArg != "" {
		m, err := readMap(mapArg)
		if err != nil {
			return err
		}
		ms = importapi.MapSource{Map: string(m.text), MapFile: filepath.Base(m.path), MapName: m.name}
		if m.path == "" {
			ms.MapFile = ""
		}
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	var run importapi.Run
	if err := c.do(cmd.Context(), "POST", "/api/v1/imports/runs/"+url.PathEscape(req.Run)+"/retransform", ms, &run); err != nil {
		return err
	}
	if g.output != "json" {
		fmt.Fprintf(g.stdout, "replay of import run %s: run %s re-transforms set %s (%d staged rows) with map %s\n", req.Run, run.ID, run.Set, run.Counters.Staged, run.MapName)
	}
	return g.finishImport(cmd.Context(), c, run, wait)
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
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
