package discovery

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	discoveryapi "github.com/outpost-dev/outpost/libs/api/discovery"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// Replay (outpost replay --stream RESULTS --run RUN --to discovery) re-derives a run from the
// results it stored: a new run with the original's parameters goes through the live pipeline
// — the same stages, classifiers and payload builder — but its probes are answered from the
// RESULTS stream instead of by bridges. Nothing is sent to a site; the payloads go to the
// CMDB (a wiped CMDB is rebuilt) or, dry, are only listed in the replay run's log.
//
// A replay probe is matched with the original's by what it asks (kind, target, parameters:
// the probe key), which the probe ledger records for every probe discovery publishes: results
// do not say what they answer beyond a probe id. Probes of one key are matched in order. A
// probe with no stored answer (the original never sent it: no credential then; or its results
// aged out of the stream) gets an error result saying so, as a bridge would report a failure.

// Probe ledger: one small message per published probe, kept as long as results.
const (
	StreamLedger  = "DISCOVERY_PROBES"
	ledgerSubject = "discovery.ledger."
	// CodeNotReplayed is the error code of a replayed probe the stored results do not answer.
	CodeNotReplayed = "not_replayed" // errs.NotReplayed
)

// ReplayRequest, ReplayReply: libs/api/discovery.
type (
	ReplayRequest = discoveryapi.ReplayRequest
	ReplayReply   = discoveryapi.ReplayReply
)

type ledgerEntry struct {
	Probe string `json:"probe"`
	Key   string `json:"key"`
}

// replayState is what a replay run has instead of bridges.
type replayState struct {
	of     string
	dryRun bool
	rs     *runState // the replay run
	mu     sync.Mutex
	// answers are the original results by probe key, each key's probes in order, each
	// probe's chunks in stream order.
	answers map[string][][]*envelope.Result
}

// probeKey is what a probe asks, without what may differ between two runs asking the same
// (the SSH host key on record, the credentials carried).
func probeKey(p *envelope.Probe) string {
	params := map[string]any{}
	if len(p.Params) > 0 {
		_ = json.Unmarshal(p.Params, &params)
	}
	delete(params, "known_host_key")
	canon, _ := json.Marshal(params) // map keys sorted: the same params give the same bytes
	sum := sha256.Sum256([]byte(p.Kind + "\x00" + p.Target + "\x00" + string(canon)))
	return hex.EncodeToString(sum[:16])
}

// ensureLedger creates the probe ledger stream (replicas: the deployment's, bus.WithReplicas).
func ensureLedger(ctx context.Context, js jetstream.JetStream, maxAge time.Duration) error {
	cfg := bus.Stream(StreamLedger) // the stores table (libs/bus/stores.go)
	cfg.Subjects, cfg.MaxAge = []string{ledgerSubject + ">"}, maxAge
	_, err := js.CreateOrUpdateStream(ctx, cfg)
	return err
}

// recordProbe writes a published probe into the ledger. A failure loses only the ability
// to replay that probe (it then gets a not_replayed error): logged and counted, not fatal.
func (s *service) recordProbe(ctx context.Context, p *envelope.Probe) {
	b, _ := json.Marshal(ledgerEntry{Probe: p.ID, Key: probeKey(p)})
	msg := &nats.Msg{Subject: ledgerSubject + p.Run, Data: b, Header: nats.Header{}}
	msg.Header.Set(nats.MsgIdHdr, "ledger-"+p.ID)
	if _, err := s.deps.JS.PublishMsg(ctx, msg); err != nil {
		s.ledgerFailed.Add(1)
		s.log.Warn("probe ledger: not recorded (the probe cannot be replayed)", "run", p.Run, "probe", p.ID, "err", err,
			"unrecorded_total", s.ledgerFailed.Load())
	}
}

// replay starts a replay run of req.Run.
func (s *service) replay(ctx context.Context, req ReplayRequest) (ReplayReply, error) {
	var errs []error
	if req.Stream != "" && !strings.EqualFold(req.Stream, bus.StreamResults) {
		errs = append(errs, fmt.Errorf("stream %q: discovery replays %s (its results)", req.Stream, bus.StreamResults))
	}
	if req.Run == "" {
		errs = append(errs, errors.New("run: empty: name the run to replay (outpost runs ls)"))
	}
	var since time.Time
	if req.Since != "" {
		d, err := time.ParseDuration(req.Since)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("since %q: want a duration such as 10m", req.Since))
		} else {
			since = s.now().Add(-d)
		}
	}
	if req.Since != "" && req.FromSeq > 0 {
		errs = append(errs, errors.New("since and from_seq: give one of them"))
	}
	filter := "result." + Service + ".>"
	if req.Site != "" || req.Agent != "" {
		site, agent := "*", "*"
		if req.Site != "" {
			site = req.Site
		}
		if req.Agent != "" {
			agent = req.Agent
		}
		filter = bus.ResultSubject(Service, site, "*", agent)
	}
	if req.Subject != "" {
		if !strings.HasPrefix(req.Subject, "result."+Service+".") {
			errs = append(errs, fmt.Errorf("subject %q: want a pattern inside result.%s.>", req.Subject, Service))
		}
		filter = req.Subject
	}
	if err := errors.Join(errs...); err != nil {
		return ReplayReply{}, bus.Errorf(400, "%v", err)
	}
	orig, err := s.readRun(ctx, req.Run)
	if err != nil {
		return ReplayReply{}, err
	}
	keys, err := s.readLedger(ctx, req.Run)
	if err != nil {
		return ReplayReply{}, fmt.Errorf("probe ledger of run %s: %w", req.Run, err)
	}
	rp := &replayState{of: req.Run, dryRun: req.DryRun, answers: map[string][][]*envelope.Result{}}
	chunks := map[string][]*envelope.Result{}
	order := []string{}
	n, err := readStream(ctx, s.deps.JS, bus.StreamResults, filter, req.FromSeq, since, func(msg jetstream.Msg) error {
		if r := msg.Headers().Get(envelope.HeaderRun); r != "" && r != req.Run {
			return nil
		}
		_, res, err := envelope.DecodeIntoWith[*envelope.Result](msg.Headers().Get, msg.Data())
		if err != nil || res.Run != req.Run || res.App != Service {
			return nil // not this run's (or not a result): the live consumer says why for those
		}
		if err := bus.ResultOrigin(msg.Subject(), res); err != nil {
			return nil // a result not from the bridge it names was refused live too
		}
		if _, ok := chunks[res.Probe]; !ok {
			order = append(order, res.Probe)
		}
		chunks[res.Probe] = append(chunks[res.Probe], res)
		return nil
	})
	if err != nil {
		return ReplayReply{}, fmt.Errorf("read %s: %w", bus.StreamResults, err)
	}
	results := 0
	for _, id := range order {
		key, ok := keys[id]
		if !ok {
			continue // no ledger entry: cannot tell what it answered
		}
		rp.answers[key] = append(rp.answers[key], chunks[id])
		results += len(chunks[id])
	}
	id := envelope.NewID()
	sr := StartRequest{Site: orig.Site, Ranges: orig.Ranges, Exclude: orig.Exclude, Ports: orig.Ports, Credentials: orig.Credentials}
	s.replays.Store(id, rp)
	if _, err := s.startWithID(ctx, id, sr, ""); err != nil {
		s.replays.Delete(id)
		return ReplayReply{}, err
	}
	s.log.Info("discovery replay started", "run", id, "of", req.Run, "results", results, "read", n, "probes", len(keys), "dry_run", req.DryRun)
	return ReplayReply{Run: id, Of: req.Run, Results: results, Probes: len(keys), DryRun: req.DryRun}, nil
}

// readLedger maps the run's probe ids to their keys.
func (s *service) readLedger(ctx context.Context, run string) (map[string]string, error) {
	out := map[string]string{}
	_, err := readStream(ctx, s.deps.JS, StreamLedger, ledgerSubject+run, 0, time.Time{}, func(msg jetstream.Msg) error {
		var e ledgerEntry
		if json.Unmarshal(msg.Data(), &e) == nil && e.Probe != "" {
			out[e.Probe] = e.Key
		}
		return nil
	})
	return out, err
}

// readStream reads every stored message of stream matching filter (from fromSeq or since,
// else from the start) until it has caught up, and says how many it read.
func readStream(ctx context.Context, js jetstream.JetStream, stream, filter string, fromSeq uint64, since time.Time, f func(jetstream.Msg) error) (int, error) {
	n := 0
	err := bus.ReadRange(ctx, js, bus.StreamRange{Stream: stream, Filter: filter, FromSeq: fromSeq, Since: since}, func(m jetstream.Msg, _ uint64, _ time.Time) (bool, error) {
		n++
		return true, f(m)
	})
	return n, err
}

// answerFromStore answers a replay run's probes with the original's stored results, as
// bridges would have: asynchronously, through the live result handler.
func (s *service) answerFromStore(ctx context.Context, rs *runState, rp *replayState, probes []*envelope.Probe) {
	run := rs.run.ID
	var todo [][]*envelope.Result
	rp.mu.Lock()
	for _, p := range probes {
		key := probeKey(p)
		var chunks []*envelope.Result
		if q := rp.answers[key]; len(q) > 0 {
			chunks, rp.answers[key] = q[0], q[1:]
		}
		if len(chunks) == 0 {
			chunks = []*envelope.Result{{ID: envelope.NewID(), Kind: p.Kind, Status: envelope.StatusError, Final: true,
				Error: &envelope.Error{Code: CodeNotReplayed, Message: "replay: the original run stored no result for this probe (never sent, or aged out of RESULTS)"}}}
		}
		out := make([]*envelope.Result, 0, len(chunks))
		for _, c := range chunks {
			cp := *c
			cp.Probe, cp.Run, cp.App, cp.Site = p.ID, run, Service, p.Site
			out = append(out, &cp)
		}
		todo = append(todo, out)
	}
	rp.mu.Unlock()
	go func() {
		ctx := context.WithoutCancel(ctx)
		for _, chunks := range todo {
			for _, res := range chunks {
				for attempt := 0; attempt < 5; attempt++ {
					err := s.handleResult(ctx, envelope.Meta{ID: res.ID, Run: run}, res)
					if err == nil {
						break
					}
					s.log.Warn("replay: result not applied; trying again", "run", run, "probe", res.Probe, "err", err)
					time.Sleep(200 * time.Millisecond)
				}
			}
		}
	}()
}

// replayOf is the replay state of a run (nil for a live run).
func (s *service) replayOf(run string) *replayState {
	if v, ok := s.replays.Load(run); ok {
		return v.(*replayState)
	}
	return nil
}

// dryPayload lists a payload a dry replay would have sent in the replay run's log (the
// caller holds the run's lock: a turn of the run sends payloads).
func (s *service) dryPayload(rp *replayState, p *envelope.CIPayload) {
	rs := rp.rs
	if rs == nil {
		return
	}
	var b strings.Builder
	for i, it := range p.Items {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(it.Class)
		if name, _ := it.Attributes["name"].(string); name != "" {
			b.WriteString(" " + name)
		}
	}
	rs.run.logf(s.now(), fmt.Sprintf("dry run: would send %d CIs, %d relations: %s", len(p.Items), len(p.Relations), b.String()))
}

// LedgerMaxAge keeps ledger entries as long as the hub keeps results (bus.DefaultLimits).
const LedgerMaxAge = 7 * 24 * time.Hour
