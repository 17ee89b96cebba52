package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/robfig/cron/v3"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/page"
)

// StartRequest is svc.discovery.start. Ranges default to the site's.
type StartRequest struct {
	Site        string   `json:"site"`
	Ranges      []string `json:"ranges,omitempty"`
	Exclude     []string `json:"exclude,omitempty"`
	Ports       []int    `json:"ports,omitempty"`
	Credentials []string `json:"credentials,omitempty"`
	MaxRunTime  string   `json:"max_run_time,omitempty"`
}

// StartReply is the answer of start.
type StartReply struct {
	Run string `json:"run"`
}

// IDRequest names a run (and optionally one of its hosts).
type IDRequest struct {
	ID   string `json:"id"`
	Host string `json:"host,omitempty"`
}

// NameRequest names a credential or a schedule.
type NameRequest struct {
	Name string `json:"name"`
}

// Schedule is a recurring (cron) or one-off (at) discovery.
type Schedule struct {
	Name        string     `json:"name"`
	Site        string     `json:"site"`
	Ranges      []string   `json:"ranges,omitempty"`
	Ports       []int      `json:"ports,omitempty"`
	Credentials []string   `json:"credentials,omitempty"`
	Cron        string     `json:"cron,omitempty"` // 5 fields, or @hourly, @every 1h…
	At          *time.Time `json:"at,omitempty"`   // one-off
	MaxRunTime  string     `json:"max_run_time,omitempty"`
	Created     time.Time  `json:"created"`
	LastFired   *time.Time `json:"last_fired,omitempty"`
	LastRun     string     `json:"last_run,omitempty"`
	Next        *time.Time `json:"next,omitempty"`
}

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

func (s *service) endpoints() map[string]bus.Endpoint {
	return map[string]bus.Endpoint{
		"start": bus.JSON(func(ctx context.Context, r StartRequest) (any, error) {
			id, err := s.start(ctx, r, "")
			return StartReply{Run: id}, err
		}),
		// Lists page with libs/page: runs newest first, credentials and schedules by name.
		"runs_ls": bus.JSON(func(ctx context.Context, r page.Request) (any, error) {
			runs, err := s.listRuns(ctx)
			if err != nil {
				return nil, err
			}
			items, next, err := page.Slice(runs, r, runKey, descending)
			if err != nil {
				return nil, err
			}
			return map[string]any{"runs": items, "next_cursor": next}, nil
		}),
		"run_get": bus.JSON(func(ctx context.Context, r IDRequest) (any, error) { return s.getRun(ctx, r.ID, r.Host) }),
		"cancel":  bus.JSON(func(ctx context.Context, r IDRequest) (any, error) { return s.cancel(ctx, r.ID) }),
		"credentials_add": bus.JSON(func(ctx context.Context, r CredentialAddRequest) (any, error) {
			c, err := s.creds.add(ctx, r)
			return map[string]any{"credential": c}, err
		}),
		"credentials_ls": bus.JSON(func(ctx context.Context, r page.Request) (any, error) {
			cs, err := s.creds.list(ctx)
			if err != nil {
				return nil, err
			}
			items, next, err := page.Slice(cs, r, func(c Credential) string { return c.Name }, strings.Compare)
			if err != nil {
				return nil, err
			}
			return map[string]any{"credentials": items, "next_cursor": next}, nil
		}),
		"credentials_seal": bus.JSON(func(ctx context.Context, r SealRequest) (any, error) { return s.sealForProbe(ctx, r) }),
		"credentials_rm": bus.JSON(func(ctx context.Context, r NameRequest) (any, error) {
			return map[string]any{"removed": r.Name}, s.creds.remove(ctx, r.Name)
		}),
		"schedules_add": bus.JSON(func(ctx context.Context, r Schedule) (any, error) {
			sc, err := s.addSchedule(ctx, r)
			return map[string]any{"schedule": sc}, err
		}),
		"schedules_ls": bus.JSON(func(ctx context.Context, r page.Request) (any, error) {
			sc, err := s.listSchedules(ctx)
			if err != nil {
				return nil, err
			}
			items, next, err := page.Slice(sc, r, func(x Schedule) string { return x.Name }, strings.Compare)
			if err != nil {
				return nil, err
			}
			return map[string]any{"schedules": items, "next_cursor": next}, nil
		}),
		"schedules_rm": bus.JSON(func(ctx context.Context, r NameRequest) (any, error) {
			if _, err := s.kvSched.Get(ctx, r.Name); err != nil {
				return nil, bus.Errorf(404, "schedule %q not found", r.Name)
			}
			return map[string]any{"removed": r.Name}, s.kvSched.Delete(ctx, r.Name)
		}),
		"hostkeys_ls": bus.JSON(func(ctx context.Context, r page.Request) (any, error) {
			hks, err := s.listHostKeys(ctx)
			if err != nil {
				return nil, err
			}
			items, next, err := page.Slice(hks, r, func(h HostKey) string { return hostKeyKey(h.Site, h.Address) }, strings.Compare)
			if err != nil {
				return nil, err
			}
			return map[string]any{"hostkeys": items, "next_cursor": next}, nil
		}),
		"hostkeys_forget": bus.JSON(func(ctx context.Context, r HostKeysRequest) (any, error) {
			gone, err := s.forgetHostKey(ctx, r)
			return map[string]any{"forgotten": gone}, err
		}),
		"classifiers_reload": bus.JSON(func(ctx context.Context, _ struct{}) (any, error) {
			if err := s.rules.Reload(); err != nil {
				return nil, bus.Errorf(400, "classifiers refused, the previous set stays in use: %v", err)
			}
			return map[string]any{"files": s.rules.Current().Files, "classifiers": len(s.rules.Current().Classifiers)}, nil
		}),
	}
}

func (s *service) start(ctx context.Context, req StartRequest, schedule string) (string, error) {
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
	r := &RunRecord{ID: envelope.NewID(), Site: req.Site, Ranges: req.Ranges, Exclude: req.Exclude, Ports: req.Ports,
		Credentials: req.Credentials, Schedule: schedule, State: StateQueued, Created: now, Deadline: now.Add(maxRun),
		Pending: map[string]*pendingProbe{}}
	r.logf(now, "run queued")
	rs := &runState{run: r, hosts: map[string]*Host{}}
	rs.mu.Lock()
	s.saveRun(ctx, rs)
	rs.mu.Unlock()
	s.mu.Lock()
	s.runs[r.ID] = rs
	s.mu.Unlock()
	s.log.Info("discovery run queued", "run", r.ID, "site", r.Site)
	go s.advance(context.WithoutCancel(ctx), rs)
	return r.ID, nil
}

func (s *service) readRun(ctx context.Context, id string) (*RunRecord, error) {
	e, err := s.kvRuns.Get(ctx, id)
	if err != nil {
		return nil, bus.Errorf(404, "run %q not found", id)
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
		h.Done = nil
		v.Host = h
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

func (s *service) cancel(ctx context.Context, id string) (any, error) {
	s.mu.Lock()
	rs := s.runs[id]
	s.mu.Unlock()
	if rs != nil {
		rs.mu.Lock()
		if !terminalState(rs.run.State) {
			s.finish(ctx, rs, StateCanceled, "canceled by request")
		}
		state := rs.run.State
		rs.mu.Unlock()
		return map[string]any{"run": id, "state": state}, nil
	}
	r, err := s.readRun(ctx, id)
	if err != nil {
		return nil, err
	}
	if !terminalState(r.State) {
		r.State, r.Reason = StateCanceled, "canceled by request"
		t := s.now()
		r.Finished, r.Pending = &t, nil
		b, _ := json.Marshal(r)
		if _, err := s.kvRuns.Put(ctx, id, b); err != nil {
			return nil, err
		}
	}
	return map[string]any{"run": id, "state": r.State}, nil
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

// scheduleLoop fires due schedules. Every replica runs it; a lease key per (schedule, fire
// time), created once in the leases bucket, makes exactly one of them start the run.
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

func (s *service) fireDue(ctx context.Context) {
	scheds, err := s.listSchedules(ctx)
	if err != nil {
		return
	}
	now := s.now()
	for _, sc := range scheds {
		next := s.nextFire(&sc)
		if next == nil || now.Before(*next) {
			continue
		}
		lease := fmt.Sprintf("discovery.schedule.%s.%d", sc.Name, next.Unix())
		if _, err := s.kvLeases.Create(ctx, lease, []byte(s.cfg.Replica), jetstream.KeyTTL(24*time.Hour)); err != nil {
			if _, err2 := s.kvLeases.Create(ctx, lease, []byte(s.cfg.Replica)); err2 != nil {
				continue // another replica fired it
			}
		}
		id, err := s.start(ctx, StartRequest{Site: sc.Site, Ranges: sc.Ranges, Ports: sc.Ports, Credentials: sc.Credentials, MaxRunTime: sc.MaxRunTime}, sc.Name)
		if err != nil {
			s.log.Warn("scheduled discovery did not start", "schedule", sc.Name, "err", err)
		}
		fired := *next
		sc.LastFired, sc.LastRun = &fired, id
		sc.Next = s.nextFire(&sc)
		b, _ := json.Marshal(sc)
		_, _ = s.kvSched.Put(ctx, sc.Name, b)
	}
}
