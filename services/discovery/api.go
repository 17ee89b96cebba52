package discovery

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/robfig/cron/v3"

	discoveryapi "github.com/outpost-dev/outpost/libs/api/discovery"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/page"
	"github.com/outpost-dev/outpost/libs/telemetry"
)

// Requests and answers of svc.discovery.*: the contract's (libs/api/discovery).
type (
	StartRequest = discoveryapi.StartRequest
	StartReply   = discoveryapi.StartReply
	IDRequest    = discoveryapi.IDRequest
	NameRequest  = discoveryapi.NameRequest
	// Schedule is a recurring (cron) or one-off (at) discovery.
	Schedule = discoveryapi.Schedule
)

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

func (s *service) endpoints() map[string]bus.Endpoint {
	return map[string]bus.Endpoint{
		discoveryapi.Start.Name: discoveryapi.Start.Handle(func(ctx context.Context, r StartRequest) (StartReply, error) {
			id, err := s.start(ctx, r, "")
			return StartReply{Run: id}, err
		}),
		// Lists page with libs/page: runs newest first, credentials and schedules by name.
		discoveryapi.RunList.Name: discoveryapi.RunList.Handle(func(ctx context.Context, r page.Request) (discoveryapi.RunListReply, error) {
			runs, err := s.listRuns(ctx)
			if err != nil {
				return discoveryapi.RunListReply{}, err
			}
			items, next, err := page.Slice(runs, r, runKey, descending)
			if err != nil {
				return discoveryapi.RunListReply{}, err
			}
			return discoveryapi.RunListReply{Runs: items, NextCursor: next}, nil
		}),
		discoveryapi.RunGet.Name: discoveryapi.RunGet.Handle(func(ctx context.Context, r IDRequest) (RunView, error) {
			v, err := s.getRun(ctx, r.ID, r.Host)
			if err != nil {
				return RunView{}, err
			}
			return *v, nil
		}),
		discoveryapi.Replay.Name: discoveryapi.Replay.Handle(s.replay),
		discoveryapi.Cancel.Name: discoveryapi.Cancel.Handle(func(ctx context.Context, r IDRequest) (discoveryapi.CancelReply, error) {
			return s.cancel(ctx, r.ID)
		}),
		discoveryapi.CredentialAdd.Name: discoveryapi.CredentialAdd.Handle(func(ctx context.Context, r CredentialAddRequest) (discoveryapi.CredentialReply, error) {
			c, err := s.creds.add(ctx, r)
			return discoveryapi.CredentialReply{Credential: c}, err
		}),
		discoveryapi.CredentialList.Name: discoveryapi.CredentialList.Handle(func(ctx context.Context, r page.Request) (discoveryapi.CredentialListReply, error) {
			cs, err := s.creds.list(ctx)
			if err != nil {
				return discoveryapi.CredentialListReply{}, err
			}
			items, next, err := page.Slice(cs, r, func(c Credential) string { return c.Name }, strings.Compare)
			if err != nil {
				return discoveryapi.CredentialListReply{}, err
			}
			return discoveryapi.CredentialListReply{Credentials: items, NextCursor: next}, nil
		}),
		discoveryapi.CredentialSeal.Name: discoveryapi.CredentialSeal.Handle(s.sealForProbe),
		discoveryapi.CredentialRemove.Name: discoveryapi.CredentialRemove.Handle(func(ctx context.Context, r NameRequest) (discoveryapi.RemovedReply, error) {
			return discoveryapi.RemovedReply{Removed: r.Name}, s.creds.remove(ctx, r.Name)
		}),
		discoveryapi.ScheduleAdd.Name: discoveryapi.ScheduleAdd.Handle(func(ctx context.Context, r Schedule) (discoveryapi.ScheduleReply, error) {
			sc, err := s.addSchedule(ctx, r)
			return discoveryapi.ScheduleReply{Schedule: sc}, err
		}),
		discoveryapi.ScheduleList.Name: discoveryapi.ScheduleList.Handle(func(ctx context.Context, r page.Request) (discoveryapi.ScheduleListReply, error) {
			sc, err := s.listSchedules(ctx)
			if err != nil {
				return discoveryapi.ScheduleListReply{}, err
			}
			items, next, err := page.Slice(sc, r, func(x Schedule) string { return x.Name }, strings.Compare)
			if err != nil {
				return discoveryapi.ScheduleListReply{}, err
			}
			return discoveryapi.ScheduleListReply{Schedules: items, NextCursor: next}, nil
		}),
		discoveryapi.ScheduleRemove.Name: discoveryapi.ScheduleRemove.Handle(func(ctx context.Context, r NameRequest) (discoveryapi.RemovedReply, error) {
			if _, err := s.kvSched.Get(ctx, r.Name); err != nil {
				return discoveryapi.RemovedReply{}, bus.Errorf(404, "schedule %q not found", r.Name)
			}
			return discoveryapi.RemovedReply{Removed: r.Name}, s.kvSched.Delete(ctx, r.Name)
		}),
		discoveryapi.HostKeyList.Name: discoveryapi.HostKeyList.Handle(func(ctx context.Context, r page.Request) (discoveryapi.HostKeyListReply, error) {
			hks, err := s.listHostKeys(ctx)
			if err != nil {
				return discoveryapi.HostKeyListReply{}, err
			}
			items, next, err := page.Slice(hks, r, func(h HostKey) string { return hostKeyKey(h.Site, h.Address) }, strings.Compare)
			if err != nil {
				return discoveryapi.HostKeyListReply{}, err
			}
			return discoveryapi.HostKeyListReply{HostKeys: items, NextCursor: next}, nil
		}),
		discoveryapi.HostKeyForget.Name: discoveryapi.HostKeyForget.Handle(func(ctx context.Context, r HostKeysRequest) (discoveryapi.HostKeyForgetReply, error) {
			gone, err := s.forgetHostKey(ctx, r)
			return discoveryapi.HostKeyForgetReply{Forgotten: gone}, err
		}),
		discoveryapi.ClassifiersReload.Name: discoveryapi.ClassifiersReload.Handle(func(ctx context.Context, _ struct{}) (discoveryapi.ClassifiersReply, error) {
			if err := s.rules.Reload(); err != nil {
				return discoveryapi.ClassifiersReply{}, bus.Errorf(400, "classifiers refused, the previous set stays in use: %v", err)
			}
			cur := s.rules.Current()
			return discoveryapi.ClassifiersReply{Files: cur.Files, Classifiers: len(cur.Classifiers)}, nil
		}),
	}
}

func (s *service) start(ctx context.Context, req StartRequest, schedule string) (string, error) {
	return s.startWithID(ctx, envelope.NewID(), req, schedule)
}

// startWithID starts a run under a given id (a schedule's slot, slotRunID).
func (s *service) startWithID(ctx context.Context, id string, req StartRequest, schedule string) (string, error) {
	var errs []error
	if req.Site == "" {
		errs = append(errs, errors.New("site: empty"))
	}
	if _, err := expand(req.Ranges, nil, 1<<20); err != nil {
		errs = append(errs, err)
	}
	for _, p := range req.Ports {
		if p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("port %d: want 1..65535", p))
		}
	}
	maxRun := s.cfg.MaxRunTime
	if req.MaxRunTime != "" {
		d, err := time.ParseDuration(req.MaxRunTime)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("max_run_time %q: want a duration such as 30m", req.MaxRunTime))
		} else {
			maxRun = d
		}
	}
	if err := errors.Join(errs...); err != nil {
		return "", bus.Errorf(400, "%v", err)
	}
	if _, err := s.site(ctx, req.Site); err != nil {
		return "", err
	}
	now := s.now()
	r := &RunRecord{ID: id, Site: req.Site, Ranges: req.Ranges, Exclude: req.Exclude, Ports: req.Ports,
		Credentials: req.Credentials, Schedule: schedule, State: StateQueued, Created: now, Deadline: now.Add(maxRun),
		Pending: map[string]*pendingProbe{}, TraceParent: telemetry.TraceParent(ctx)}
	r.logf(now, "run queued")
	rs := &runState{run: r, hosts: map[string]*Host{}}
	rp := s.replayOf(id)
	if rp != nil {
		// a replay run: its probes are answered from RESULTS (replay.go)
		r.ReplayOf, rs.dry, rp.rs = rp.of, rp.dryRun, rs
		r.logf(now, fmt.Sprintf("replay of run %s from its stored results (dry run: %v)", rp.of, rp.dryRun))
	}
	if s.own == nil {
		s.bind(rs, s.active)
	} else {
		// no claim pass of this replica may take the run (a second lease of the same key)
		// until it is in s.runs or given up
		s.own.claimMu.Lock()
		defer s.own.claimMu.Unlock()
		if err := s.own.hold(ctx, rs); err != nil {
			return "", fmt.Errorf("run %s not started: %w", r.ID, err)
		}
	}
	rs.mu.Lock()
	err := s.saveRun(ctx, rs)
	rs.mu.Unlock()
	if err != nil {
		if s.own != nil {
			s.own.drop(rs)
		}
		return "", fmt.Errorf("run %s not started: its record cannot be written: %w", r.ID, err)
	}
	if s.own != nil && rp == nil && !s.own.keepNew(ctx) {
		// over this replica's share: the run is on record, queued; a replica under its
		// share takes it (owner.go). A replay run stays: its answers live here.
		s.own.drop(rs)
		s.own.leave()
		s.log.Info("discovery run queued for another replica", "run", r.ID, "site", r.Site)
		return r.ID, nil
	}
	s.mu.Lock()
	s.runs[r.ID] = rs
	s.mu.Unlock()
	if s.own != nil {
		s.own.watch(rs)
	}
	s.log.Info("discovery run queued", "run", r.ID, "site", r.Site)
	go s.advance(context.WithoutCancel(ctx), rs)
	return r.ID, nil
}

func (s *service) readRun(ctx context.Context, id string) (*RunRecord, error) {
	e, err := s.kvRuns.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, bus.Errorf(404, "run %q not found", id)
	}
	if err != nil {
		// not a 404: the run may well exist (a cluster node lost, a leader being elected)
		return nil, bus.Errorf(503, "run %q cannot be read now, try again: %v", id, err)
	}
	var r RunRecord
	if err := json.Unmarshal(e.Value(), &r); err != nil || r.Site == "" {
		return nil, bus.Errorf(404, "run %q not found", id)
	}
	return &r, nil
}

func (s *service) listRuns(ctx context.Context) ([]RunView, error) {
	out := []RunView{}
	keys, err := s.kvRuns.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return out, nil
		}
		return nil, err
	}
	for k := range keys.Keys() {
		if v, err := s.getRun(ctx, k, "-"); err == nil {
			v.Log, v.Errors = nil, nil
			out = append(out, *v)
		}
	}
	slices.SortFunc(out, func(a, b RunView) int { return descending(runKey(a), runKey(b)) })
	return out, nil
}

// runKey orders runs newest first and is unique: creation time (fixed width, so it sorts as
// text), then the run's ULID.
func runKey(r RunView) string {
	return r.Created.UTC().Format("2006-01-02T15:04:05.000000000Z") + "|" + r.ID
}

func descending(a, b string) int { return strings.Compare(b, a) }

// getRun answers run_get: host "" lists the hosts, an address gives that host in full,
// "-" gives the run alone.
func (s *service) getRun(ctx context.Context, id, host string) (*RunView, error) {
	if id == "" {
		return nil, bus.Errorf(400, "id: empty")
	}
	s.mu.Lock()
	rs := s.runs[id]
	s.mu.Unlock()
	var v RunView
	hosts := map[string]*Host{}
	if rs != nil {
		rs.mu.Lock()
		v = rs.run.view()
		if host != "-" {
			for ip, h := range rs.hosts {
				hosts[ip] = cloneJSON(h)
			}
		}
		rs.mu.Unlock()
	} else {
		r, err := s.readRun(ctx, id)
		if err != nil {
			return nil, err
		}
		v = r.view()
		if host != "-" {
			if hk, err := s.kvHosts.ListKeysFiltered(ctx, hostKeyPrefix(id)+">"); err == nil {
				for k := range hk.Keys() {
					if e, err := s.kvHosts.Get(ctx, k); err == nil {
						var h Host
						if json.Unmarshal(e.Value(), &h) == nil {
							hosts[h.IP] = &h
						}
					}
				}
			}
		}
	}
	switch host {
	case "-":
	case "":
		v.Hosts = []HostBrief{}
		for _, ip := range sortedIPs(hosts) {
			h := hosts[ip]
			v.Hosts = append(v.Hosts, HostBrief{IP: h.IP, Name: h.Name, Class: h.Class, Stage: h.Stage, ByPorts: h.ByPorts, Credential: strings.Join(mapValues(h.Worked), ","), CIs: h.CIs, Ingested: h.Ingested})
		}
	default:
		h, ok := hosts[host]
		if !ok {
			return nil, bus.Errorf(404, "host %s is not part of run %s (dead addresses are not kept)", host, id)
		}
		v.Host = h.view()
	}
	return &v, nil
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, k := range slices.Sorted(mapsKeys(m)) {
		out = append(out, k+"="+m[k])
	}
	return out
}

func mapsKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func sortedIPs(m map[string]*Host) []string {
	rs := &runState{hosts: m}
	return sortedHostIPs(rs)
}

func (s *service) cancel(ctx context.Context, id string) (discoveryapi.CancelReply, error) {
	s.mu.Lock()
	rs := s.runs[id]
	s.mu.Unlock()
	if rs == nil && s.own != nil {
		// another replica's run is canceled by its owner; a free one is taken to be canceled
		owned, holder, err := s.own.ownerOf(ctx, id)
		if err != nil {
			return discoveryapi.CancelReply{}, err
		}
		if holder != "" {
			return s.own.forwardCancel(ctx, holder, id)
		}
		rs = owned
	}
	if rs != nil {
		rs.mu.Lock()
		if !terminalState(rs.run.State) {
			s.finish(ctx, rs, StateCanceled, "canceled by request")
		}
		state := rs.run.State
		rs.mu.Unlock()
		return discoveryapi.CancelReply{Run: id, State: state}, nil
	}
	r, err := s.readRun(ctx, id)
	if err != nil {
		return discoveryapi.CancelReply{}, err
	}
	if !terminalState(r.State) {
		r.State, r.Reason = StateCanceled, "canceled by request"
		t := s.now()
		r.Finished, r.Pending = &t, nil
		b, _ := json.Marshal(r)
		if _, err := s.kvRuns.Put(ctx, id, b); err != nil {
			return discoveryapi.CancelReply{}, err
		}
	}
	return discoveryapi.CancelReply{Run: id, State: r.State}, nil
}

func (s *service) addSchedule(ctx context.Context, sc Schedule) (Schedule, error) {
	var errs []error
	if !bus.ValidName(sc.Name) {
		errs = append(errs, errors.New("name: give a name of letters, digits, - and _"))
	}
	if sc.Site == "" {
		errs = append(errs, errors.New("site: empty"))
	}
	switch {
	case sc.Cron == "" && sc.At == nil:
		errs = append(errs, errors.New("give cron (\"0 2 * * *\", \"@every 1h\") or at (RFC 3339 time, one-off)"))
	case sc.Cron != "" && sc.At != nil:
		errs = append(errs, errors.New("give cron or at, not both"))
	case sc.Cron != "":
		if _, err := cronParser.Parse(sc.Cron); err != nil {
			errs = append(errs, fmt.Errorf("cron %q: %v", sc.Cron, err))
		}
	}
	if _, err := expand(sc.Ranges, nil, 1<<20); err != nil {
		errs = append(errs, err)
	}
	if sc.MaxRunTime != "" {
		if _, err := time.ParseDuration(sc.MaxRunTime); err != nil {
			errs = append(errs, fmt.Errorf("max_run_time: %v", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return sc, bus.Errorf(400, "schedule: %v", err)
	}
	sc.Created, sc.LastFired, sc.LastRun = s.now(), nil, ""
	sc.Next = s.nextFire(&sc)
	b, _ := json.Marshal(sc)
	if _, err := s.kvSched.Put(ctx, sc.Name, b); err != nil {
		return sc, err
	}
	return sc, nil
}

func (s *service) nextFire(sc *Schedule) *time.Time {
	if sc.At != nil {
		if sc.LastFired != nil {
			return nil
		}
		t := sc.At.UTC()
		return &t
	}
	sched, err := cronParser.Parse(sc.Cron)
	if err != nil {
		return nil
	}
	from := sc.Created
	if sc.LastFired != nil {
		from = *sc.LastFired
	}
	t := sched.Next(from).UTC()
	return &t
}

func (s *service) listSchedules(ctx context.Context) ([]Schedule, error) {
	out := []Schedule{}
	keys, err := s.kvSched.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return out, nil
		}
		return nil, err
	}
	for k := range keys.Keys() {
		if e, err := s.kvSched.Get(ctx, k); err == nil {
			var sc Schedule
			if json.Unmarshal(e.Value(), &sc) == nil {
				out = append(out, sc)
			}
		}
	}
	slices.SortFunc(out, func(a, b Schedule) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// scheduleLoop fires due schedules. Only the active replica runs it (active.go).
func (s *service) scheduleLoop(ctx context.Context) {
	t := s.clock.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		s.fireDue(ctx)
	}
}

// dueSlot is the latest slot of sc at or before now that has not fired, and how many
// earlier ones it stands for (missed while no replica was serving): after downtime a
// schedule fires once, for its latest slot, not once per slot it missed.
func (s *service) dueSlot(sc *Schedule, now time.Time) (slot time.Time, missed int, ok bool) {
	next := s.nextFire(sc)
	if next == nil || now.Before(*next) {
		return time.Time{}, 0, false
	}
	slot = *next
	if sc.Cron == "" {
		return slot, 0, true
	}
	sched, err := cronParser.Parse(sc.Cron)
	if err != nil {
		return time.Time{}, 0, false
	}
	for n := sched.Next(slot).UTC(); !n.After(now) && missed < 1_000_000; n = sched.Next(n).UTC() {
		slot = n
		missed++
	}
	return slot, missed, true
}

// slotRunID is the id of the run a schedule's slot starts: the same for every attempt, so
// a crash anywhere between deciding to fire and recording the fire neither loses the slot
// (the run does not exist: it is started) nor starts it twice (it exists: only the
// schedule's record is brought up to date). It is a ULID of the slot's time, its random
// part a hash of the schedule's name.
func slotRunID(name string, slot time.Time) string {
	h := sha256.Sum256([]byte("discovery.schedule." + name))
	var entropy [10]byte
	copy(entropy[:], h[:10])
	return ulid.MustNew(ulid.Timestamp(slot), bytes.NewReader(entropy[:])).String()
}

func (s *service) fireDue(ctx context.Context) {
	scheds, err := s.listSchedules(ctx)
	if err != nil {
		return
	}
	now := s.now()
	for _, sc := range scheds {
		slot, missed, ok := s.dueSlot(&sc, now)
		if !ok {
			continue
		}
		id := slotRunID(sc.Name, slot)
		if _, err := s.kvRuns.Get(ctx, id); errors.Is(err, jetstream.ErrKeyNotFound) {
			if s.cfg.Hooks != nil {
				s.cfg.Hooks.At(PointScheduleFire, id)
			}
			if _, err := s.startWithID(ctx, id, StartRequest{Site: sc.Site, Ranges: sc.Ranges, Ports: sc.Ports, Credentials: sc.Credentials, MaxRunTime: sc.MaxRunTime}, sc.Name); err != nil {
				// the slot stays due: tried again on the next tick
				s.log.Warn("scheduled discovery did not start; trying again", "schedule", sc.Name, "slot", slot, "err", err)
				continue
			}
			if missed > 0 {
				s.log.Warn("scheduled discovery: slots missed while no replica served fire once", "schedule", sc.Name, "missed", missed, "slot", slot)
			}
		} else if err != nil {
			continue // KV unavailable: the slot stays due
		}
		fired := slot
		sc.LastFired, sc.LastRun = &fired, id
		sc.Next = s.nextFire(&sc)
		b, _ := json.Marshal(sc)
		if _, err := s.kvSched.Put(ctx, sc.Name, b); err != nil {
			// the run exists: the next tick finds it and records the fire again
			s.log.Warn("scheduled discovery started, its schedule not updated yet", "schedule", sc.Name, "run", id, "err", err)
		}
	}
}
