package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	corrapi "github.com/outpost-dev/outpost/libs/api/correlation"
	discovery "github.com/outpost-dev/outpost/libs/api/discovery"
	importapi "github.com/outpost-dev/outpost/libs/api/importer"
	orchapi "github.com/outpost-dev/outpost/libs/api/orchestration"
)

// replayTargets are the services `outpost replay --to` can feed, with the streams they read.
var replayTargets = map[string][]string{"discovery": {"RESULTS"}, "importer": {"IMPORTS"}, "orchestration": {"CHANGES"}, "correlation": {"EVENTS"}}

func newReplay(g *globals) *cobra.Command {
	var req discovery.ReplayRequest
	var to, mapArg string
	var ch orchapi.ReplayRequest // --to orchestration's own bounds
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

--to orchestration --stream CHANGES re-delivers the CMDB change events CHANGES kept to the
workflows' cmdb_change triggers (latest definitions, as live): a triggered run's id derives from
its change event's id, so a run a change started already — live or by an earlier replay — is
not started again; replaying twice starts each run once. Bound it with --since/--until (a
duration before now or an RFC 3339 time), --from-seq/--to-seq and --class; --dry-run lists the
runs that would start.

--to correlation --stream EVENTS re-routes the events EVENTS kept, each with its original
EVENTS sequence, through today's event rules to the alerts: an event an alert took already
(live or by an earlier replay) is skipped, so replaying twice changes nothing; an event never
taken (a rule dropped it and is gone since, the alerts were wiped) is taken once — into its
key's open alert (the count grows; state, severity and message stay) or, with no open alert,
into a closed replay record (close reason "replayed"). A replay never opens, reopens, closes
or notifies an alert. Bound it with --since/--until, --from-seq/--to-seq; --dry-run counts.

Stream CMDB has no replay target: the CMDB's ingest stream is a work queue (an ingested
payload is gone; RESULTS and IMPORTS rebuild what it held).`,
		Example: `  outpost replay --stream RESULTS --run 01JF... --to discovery
  outpost replay --stream RESULTS --run 01JF... --to discovery --dry-run
  outpost replay --stream IMPORTS --run 01JG... --to importer
  outpost replay --stream IMPORTS --run 01JG... --to importer --map hosts-v2.yaml
  outpost replay --stream CHANGES --to orchestration --since 2h --until 1h --dry-run
  outpost replay --stream CHANGES --to orchestration --from-seq 1200 --to-seq 1450 --class linux_server
  outpost replay --stream EVENTS --to correlation --since 2h --until 1h --dry-run
  outpost replay --stream EVENTS --to correlation --from-seq 5000 --to-seq 9000`,
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
			if to == "orchestration" {
				ch.Since, ch.FromSeq, ch.DryRun = req.Since, req.FromSeq, req.DryRun
				return g.replayChanges(cmd, req, ch)
			}
			if to == "correlation" {
				if ch.Class != "" {
					return usagef("--class is for --to orchestration")
				}
				return g.replayEvents(cmd, req, corrapi.ReplayRequest{Since: req.Since, Until: ch.Until, FromSeq: req.FromSeq, ToSeq: ch.ToSeq, DryRun: req.DryRun})
			}
			if ch.Until != "" || ch.ToSeq > 0 || ch.Class != "" {
				return usagef("--until and --to-seq are for --to orchestration and correlation, --class for orchestration")
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
	f.StringVar(&req.Stream, "stream", "", "stream to replay: RESULTS (--to discovery), IMPORTS (--to importer), CHANGES (--to orchestration), EVENTS (--to correlation); CMDB: no target")
	f.StringVar(&to, "to", "", "service whose handler gets the messages: discovery, importer, orchestration or correlation")
	f.StringVar(&mapArg, "map", "", "--to importer: the transform map (YAML file or stored map's name); default the run's own")
	f.StringVar(&req.Run, "run", "", "only this run's messages")
	f.StringVar(&req.Since, "since", "", "only messages stored in the last DURATION (e.g. 10m)")
	f.Uint64Var(&req.FromSeq, "from-seq", 0, "only messages from this stream sequence on")
	f.StringVar(&ch.Until, "until", "", "--to orchestration, correlation: only messages stored before DURATION ago (e.g. 1h) or an RFC 3339 time")
	f.Uint64Var(&ch.ToSeq, "to-seq", 0, "--to orchestration, correlation: only messages up to this stream sequence")
	f.StringVar(&ch.Class, "class", "", "--to orchestration: only changes of this CI class (e.g. linux_server)")
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

// replayChanges re-delivers CMDB change events (CHANGES) to orchestration's cmdb_change
// triggers, a request per orchapi.ReplayLimit changes, each going on where the last stopped.
func (g *globals) replayChanges(cmd *cobra.Command, req discovery.ReplayRequest, ch orchapi.ReplayRequest) error {
	if err := refuseResultFilters(req, "change events are chosen by --since/--until, --from-seq/--to-seq and --class", ch.Since, ch.FromSeq); err != nil {
		return err
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	ch.Stream = "CHANGES"
	total := orchapi.ReplayReply{DryRun: ch.DryRun}
	total.FirstSeq, total.LastSeq, err = replayPages(cmd.Context(), c, "/api/v1/orchestration/replay", &ch,
		func(next uint64) { ch.FromSeq, ch.Since = next, "" },
		func(out orchapi.ReplayReply) pageSeqs {
			total.Changes += out.Changes
			total.Matched += out.Matched
			total.Started += out.Started
			total.Existed += out.Existed
			total.Refused += out.Refused
			total.Firings = append(total.Firings, out.Firings...)
			return pageSeqs{out.FirstSeq, out.LastSeq, out.Next}
		},
		func() string {
			return fmt.Sprintf("%d changes, %d runs started; replaying again from there starts nothing twice", total.Changes, total.Started)
		})
	if err != nil {
		return err
	}
	if g.output == "json" {
		b, _ := json.Marshal(total)
		return writeLine(g.stdout, b)
	}
	started := "started"
	if total.DryRun {
		started = "would start"
	}
	span := ""
	if total.Changes > 0 {
		span = fmt.Sprintf(" (seq %d-%d)", total.FirstSeq, total.LastSeq)
	}
	fmt.Fprintf(g.stdout, "replay of CHANGES to orchestration: %d change events%s, %d matched a trigger: %d %s, %d had started already, %d refused\n",
		total.Changes, span, total.Matched, total.Started, started, total.Existed, total.Refused)
	for _, f := range total.Firings {
		line := fmt.Sprintf("  seq %d  change %s  %s v%d  run %s  %s", f.Seq, f.Change, f.Workflow, f.Version, f.Run, strings.ReplaceAll(f.Outcome, "_", " "))
		if f.Reason != "" {
			line += ": " + f.Reason
		}
		fmt.Fprintln(g.stdout, line)
	}
	return nil
}

// replayEvents re-routes stored events (EVENTS) to correlation's alerts, a request per
// corrapi.ReplayLimit messages, each going on where the last stopped.
func (g *globals) replayEvents(cmd *cobra.Command, req discovery.ReplayRequest, ev corrapi.ReplayRequest) error {
	if err := refuseResultFilters(req, "events are chosen by --since/--until and --from-seq/--to-seq", ev.Since, ev.FromSeq); err != nil {
		return err
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	ev.Stream = "EVENTS"
	total := corrapi.ReplayReply{DryRun: ev.DryRun}
	total.FirstSeq, total.LastSeq, err = replayPages(cmd.Context(), c, "/api/v1/correlation/replay", &ev,
		func(next uint64) { ev.FromSeq, ev.Since = next, "" },
		func(out corrapi.ReplayReply) pageSeqs {
			total.Messages += out.Messages
			total.Events += out.Events
			total.Ignored += out.Ignored
			total.Invalid += out.Invalid
			total.Skipped += out.Skipped
			total.Applied += out.Applied
			// alerts are counted per request: a key touched by two requests counts twice
			total.Alerts += out.Alerts
			total.AlertsOpen += out.AlertsOpen
			total.Records += out.Records
			return pageSeqs{out.FirstSeq, out.LastSeq, out.Next}
		},
		func() string {
			return fmt.Sprintf("%d events, %d applied; replaying again from there counts nothing twice", total.Events, total.Applied)
		})
	if err != nil {
		return err
	}
	if g.output == "json" {
		b, _ := json.Marshal(total)
		return writeLine(g.stdout, b)
	}
	applied := "applied"
	if total.DryRun {
		applied = "would be applied"
	}
	span := ""
	if total.Messages > 0 {
		span = fmt.Sprintf(" (seq %d-%d)", total.FirstSeq, total.LastSeq)
	}
	fmt.Fprintf(g.stdout, "replay of EVENTS to correlation: %d messages%s, %d events: %d %s, %d taken already, %d ignored by the rules, %d invalid\n",
		total.Messages, span, total.Events, total.Applied, applied, total.Skipped, total.Ignored, total.Invalid)
	fmt.Fprintf(g.stdout, "alerts touched: %d (%d open alerts counting more, %d closed replay records)\n", total.Alerts, total.AlertsOpen, total.Records)
	return nil
}

// refuseResultFilters refuses the RESULTS-only flags (--run, --site, --agent, --subject) for a
// stream whose messages are chosen otherwise (how, in chosenBy), and --since with --from-seq.
func refuseResultFilters(req discovery.ReplayRequest, chosenBy, since string, fromSeq uint64) error {
	var errs []string
	for _, f := range []struct {
		flag string
		set  bool
	}{{"--run", req.Run != ""}, {"--site", req.Site != ""}, {"--agent", req.Agent != ""}, {"--subject", req.Subject != ""}} {
		if f.set {
			errs = append(errs, f.flag+": "+chosenBy)
		}
	}
	if since != "" && fromSeq > 0 {
		errs = append(errs, "--since and --from-seq: give one of them")
	}
	if len(errs) > 0 {
		return usagef("%s", strings.Join(errs, "; "))
	}
	return nil
}

// pageSeqs is the stream range one replay answer read and where the next request starts (0:
// the range is done).
type pageSeqs struct{ first, last, next uint64 }

// replayPages posts a replay request again and again — a service answers a bounded number of
// messages per request — each going on where the last stopped (goOn sets the request's start),
// handing every answer to add, which counts it and returns its range. It returns the first and
// last sequences read; an error after some pages says how far the replay got (progress), so
// the user can go on from there.
func replayPages[Resp any](ctx context.Context, c *client, path string, req any, goOn func(next uint64), add func(Resp) pageSeqs, progress func() string) (first, last uint64, err error) {
	for {
		var out Resp
		err := c.do(ctx, "POST", path, req, &out)
		page := add(out)
		if first == 0 {
			first = page.first
		}
		if page.last > 0 {
			last = page.last
		}
		if err != nil {
			if last > 0 {
				return first, last, fmt.Errorf("%w (read up to seq %d: %s)", err, last, progress())
			}
			return first, last, err
		}
		if page.next == 0 {
			return first, last, nil
		}
		goOn(page.next)
	}
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
