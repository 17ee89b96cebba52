package importer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/errs"
	"github.com/outpost-dev/outpost/libs/lease"
	"github.com/outpost-dev/outpost/libs/page"
	"github.com/outpost-dev/outpost/libs/version"
	"github.com/outpost-dev/outpost/services/importer/transform"
)

type service struct {
	cfg   Config
	deps  Deps
	clock clock.Clock
	log   *slog.Logger
	pub   *bus.Publisher
	kv    jetstream.KeyValue
	maps  jetstream.KeyValue // stored transform maps, versions as history
	objs  jetstream.ObjectStore
	// schedules and their files (kept until the schedule is removed)
	schedules jetstream.KeyValue
	files     jetstream.ObjectStore
	imp       jetstream.Stream
	// sources holds the stored data source definitions (KVSources).
	sources jetstream.KeyValue

	slots chan struct{} // MaxRuns

	mu   sync.Mutex
	runs map[string]*runState // runs not finished, owned by this process

	modelMu sync.Mutex
	model   *transform.Model
	modelAt time.Time

	wg  sync.WaitGroup
	ctx context.Context // the service's: runs stop with it
}

// record is a run as stored: the public view plus what a restart needs to carry on.
type record struct {
	api.Run
	Upload string `json:"upload,omitempty"` // object in the upload bucket until staged
	// UploadBucket is where Upload is when not in the upload bucket: a schedule's file,
	// kept after staging for the schedule's next slot.
	UploadBucket string `json:"upload_bucket,omitempty"`
	Map          string `json:"map"` // the map's YAML
	// Observed is the time the run's payloads say they were observed: fixed per run, so a
	// payload sent again after a restart is the same payload (same receipt id).
	Observed time.Time `json:"observed"`
	// Header is the source's column names in order (CSV, XLSX): an error's cell.
	Header []string `json:"header,omitempty"`
	// SentMark bounds the rows whose payload may have reached the CMDB: it is saved before
	// a payload past it is sent. After a restart, a row at or below it without an outcome
	// is in doubt — the CMDB may have ingested it and lost its receipt — and its receipt
	// is checked against the CMDB (see createdByRun).
	SentMark int64 `json:"sent_mark,omitempty"`
	// Src is the data source definition a run reads through its site's bridges, as it was
	// when the run started (nil: an upload).
	Src *api.Source `json:"src,omitempty"`
}

func (s *service) now() time.Time { return s.clock.Now().UTC() }

// Run serves the import service until ctx ends.
func Run(ctx context.Context, cfg Config, deps Deps) error {
	err := run(ctx, cfg, deps)
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil // stopped while still setting up: a normal stop, not a failure
	}
	return err
}

func run(ctx context.Context, cfg Config, deps Deps) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("importer config: %w", err)
	}
	if deps.NC == nil || deps.JS == nil {
		return errors.New("importer: NATS connection and JetStream are required")
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &service{cfg: cfg, deps: deps, clock: clock.Or(deps.Clock), log: log.With("component", Service), runs: map[string]*runState{},
		slots: make(chan struct{}, cfg.MaxRuns),
		pub:   bus.NewPublisher(deps.JS, envelope.ServiceSource(Service), deps.Tracer)}
	s.ctx = ctx
	var err error
	if s.kv, err = deps.JS.CreateOrUpdateKeyValue(ctx, bus.KV(KVRuns)); err != nil {
		return fmt.Errorf("kv %s: %w", KVRuns, err)
	}
	if s.maps, err = deps.JS.CreateOrUpdateKeyValue(ctx, bus.KV(api.KVMaps)); err != nil {
		return fmt.Errorf("kv %s: %w", api.KVMaps, err)
	}
	if s.sources, err = deps.JS.CreateOrUpdateKeyValue(ctx, bus.KV(KVSources)); err != nil {
		return fmt.Errorf("kv %s: %w", KVSources, err)
	}
	if s.objs, err = deps.JS.CreateOrUpdateObjectStore(ctx, api.UploadStoreConfig()); err != nil {
		return fmt.Errorf("object store %s: %w", api.UploadBucket, err)
	}
	if s.schedules, err = deps.JS.CreateOrUpdateKeyValue(ctx, bus.KV(KVSchedules)); err != nil {
		return fmt.Errorf("kv %s: %w", KVSchedules, err)
	}
	if s.files, err = deps.JS.CreateOrUpdateObjectStore(ctx, api.ScheduleFilesConfig()); err != nil {
		return fmt.Errorf("object store %s: %w", api.ScheduleFiles, err)
	}
	leases, err := deps.JS.CreateOrUpdateKeyValue(ctx, bus.KV(bus.KVLeases))
	if err != nil {
		return fmt.Errorf("kv %s: %w", bus.KVLeases, err)
	}
	if s.imp, err = deps.JS.Stream(ctx, bus.StreamImports); err != nil {
		return fmt.Errorf("stream %s (is the bus provisioned?): %w", bus.StreamImports, err)
	}
	for _, c := range Consumers() {
		if _, err := deps.JS.CreateOrUpdateConsumer(ctx, c.Stream, c.Config()); err != nil {
			return fmt.Errorf("importer consumer %s: %w", c.Name, err)
		}
	}
	router, err := bus.NewRouter(deps.NC, deps.JS, bus.RouterConfig{Service: Service,
		Topology: bus.Topology{Consumers: Consumers()}, MaxInFlight: 256, Logger: s.log, Tracer: deps.Tracer})
	if err != nil {
		return err
	}
	if err := router.Handle("importer-receipts", ReceiptsConsumer, receiptHandler(s.handleReceipt)); err != nil {
		return err
	}
	if err := router.Handle("importer-refusals", RefusalsConsumer, s.handleRefusal); err != nil {
		return err
	}
	svc, err := bus.AddService(ctx, deps.NC, bus.ServiceConfig{Name: Service, Version: version.Semver(),
		Description: "import runs: files staged row by row, transformed by maps into the CMDB", Endpoints: s.endpoints(), Logger: s.log})
	if err != nil {
		return err
	}
	defer func() { _ = svc.Stop() }()
	s.resume(ctx)
	if deps.Ready != nil {
		deps.Ready()
	}
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.saveLoop(ctx) }()
	go func() {
		defer s.wg.Done()
		// One replica fires schedules: the one holding the lease.
		sch := &scheduler{kv: s.schedules, clock: s.clock, log: s.log, tick: cfg.ScheduleTick, fire: s.startScheduled}
		active := lease.New(lease.Config{JS: deps.JS, KV: leases, Key: ScheduleLeaseKey, Holder: cfg.Replica, TTL: cfg.ScheduleLease,
			Clock: s.clock, Logger: s.log, Name: "import scheduler"})
		if err := active.Serve(ctx, sch.loop, nil); err != nil {
			s.log.Error("import scheduler stopped", "err", err)
		}
	}()
	err = router.Run(ctx)
	s.wg.Wait()
	s.saveAll(context.WithoutCancel(ctx))
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// endpoints serve the ops of the contract (libs/api/importer), with its types.
func (s *service) endpoints() map[string]bus.Endpoint {
	return map[string]bus.Endpoint{
		api.Validate.Name:    api.Validate.Handle(s.validate),
		api.Start.Name:       api.Start.Handle(s.start),
		api.Retransform.Name: api.Retransform.Handle(s.retransform),
		api.RunList.Name:     api.RunList.Handle(s.runsLs),
		api.RunGet.Name: api.RunGet.Handle(func(ctx context.Context, r api.RunRequest) (api.Run, error) {
			rec, err := s.get(ctx, r.ID)
			if err != nil {
				return api.Run{}, err
			}
			return rec.Run, nil
		}),
		api.Rows.Name:         api.Rows.Handle(s.rows),
		api.MapAdd.Name:       api.MapAdd.Handle(s.mapAdd),
		api.MapList.Name:      api.MapList.Handle(s.mapsLs),
		api.MapGet.Name:       api.MapGet.Handle(s.mapGet),
		api.MapTest.Name:      api.MapTest.Handle(s.mapTest),
		api.ScheduleAdd.Name:  api.ScheduleAdd.Handle(s.scheduleAdd),
		api.ScheduleLs.Name:   api.ScheduleLs.Handle(s.schedulesLs),
		api.ScheduleRm.Name:   api.ScheduleRm.Handle(s.scheduleRm),
		api.SourceAdd.Name:    api.SourceAdd.Handle(s.sourceAdd),
		api.SourceList.Name:   api.SourceList.Handle(s.sourcesLs),
		api.SourceGet.Name:    api.SourceGet.Handle(s.sourceGet),
		api.SourceRemove.Name: api.SourceRemove.Handle(s.sourceRemove),
		api.SourceRun.Name:    api.SourceRun.Handle(s.sourceRun),
	}
}

func (s *service) validate(ctx context.Context, r api.ValidateRequest) (api.ValidateResponse, error) {
	text, file, err := s.resolveMap(ctx, r.Map, r.MapFile, r.MapName)
	if err != nil {
		return api.ValidateResponse{}, err
	}
	m, err := s.loadMap(ctx, file, text)
	if err != nil {
		return api.ValidateResponse{}, err
	}
	return summary(m), nil
}

// classModel asks the CMDB for its class model, kept for half a minute.
func (s *service) classModel(ctx context.Context) (*transform.Model, error) {
	s.modelMu.Lock()
	defer s.modelMu.Unlock()
	if s.model != nil && s.clock.Since(s.modelAt) < 30*time.Second {
		return s.model, nil
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	classes, err := cmdbapi.Classes.Call(rctx, s.deps.NC, struct{}{})
	if err != nil {
		return nil, fmt.Errorf("the CMDB's class model (svc.cmdb.classes): %w", err)
	}
	m, err := transform.ModelFromClasses(classes)
	if err != nil {
		return nil, err
	}
	s.model, s.modelAt = m, s.clock.Now()
	return m, nil
}

// loadMap checks a map against the CMDB's model; a bad map is a 400 listing every problem.
func (s *service) loadMap(ctx context.Context, file, text string) (*transform.Map, error) {
	if strings.TrimSpace(text) == "" {
		return nil, bus.Fail(errs.BadRequest, "no transform map: give the map's YAML (--map MAP.yaml)")
	}
	model, err := s.classModel(ctx)
	if err != nil {
		// The CMDB answered with an error, or is not serving (yet): retry shortly.
		return nil, bus.Fail(errs.Unavailable, "%s", err.Error())
	}
	m, err := transform.Load(file, []byte(text), model)
	if err != nil {
		return nil, bus.Fail(errs.BadRequest, "transform map refused:\n%v", err)
	}
	return m, nil
}

func (s *service) start(ctx context.Context, r api.StartRequest) (api.Run, error) {
	if r.Upload == "" {
		return api.Run{}, bus.Fail(errs.BadRequest, "upload: missing (the gateway stores the file first)")
	}
	if _, err := sourceFormat(r.Filename, r.Options); err != nil {
		return api.Run{}, bus.Fail(errs.BadRequest, "%v", err)
	}
	if r.Options.HeaderRow < 0 {
		return api.Run{}, bus.Fail(errs.BadRequest, "header_row %d: rows count from 1", r.Options.HeaderRow)
	}
	var err error
	if r.Map, r.MapFile, err = s.resolveMap(ctx, r.Map, r.MapFile, r.MapName); err != nil {
		return api.Run{}, err
	}
	m, err := s.loadMap(ctx, r.MapFile, r.Map)
	if err != nil {
		return api.Run{}, err
	}
	if _, err := s.objs.GetInfo(ctx, r.Upload); err != nil {
		return api.Run{}, bus.Fail(errs.BadRequest, "upload %q not found in %s: upload the file again", r.Upload, api.UploadBucket)
	}
	id := envelope.NewID()
	now := s.now()
	rec := &record{Run: api.Run{ID: id, Set: id, State: api.StateQueued, Filename: r.Filename, Options: r.Options,
		MapName: m.Name, MapFile: r.MapFile, Class: m.Class, Source: m.Source, Created: now},
		Upload: r.Upload, Map: r.Map, Observed: now}
	return s.launch(ctx, rec, m)
}

func (s *service) retransform(ctx context.Context, r api.RetransformRequest) (api.Run, error) {
	src, err := s.get(ctx, r.Run)
	if err != nil {
		return api.Run{}, err
	}
	if !src.StagingDone {
		return api.Run{}, bus.Fail(errs.Conflict, "run %s is still staging its rows: re-transform once it has finished reading its source", r.Run)
	}
	if r.Map == "" && r.MapName == "" {
		// No map given: the run's own (outpost replay --stream IMPORTS --to importer). Its
		// payloads reach the CMDB again, whose identification finds the same CIs: nothing
		// is duplicated, rows come out unchanged unless the CMDB changed since.
		r.Map, r.MapFile = src.Map, src.MapFile
	}
	if r.Map, r.MapFile, err = s.resolveMap(ctx, r.Map, r.MapFile, r.MapName); err != nil {
		return api.Run{}, err
	}
	m, err := s.loadMap(ctx, r.MapFile, r.Map)
	if err != nil {
		return api.Run{}, err
	}
	id := envelope.NewID()
	now := s.now()
	rec := &record{Run: api.Run{ID: id, Set: src.Set, State: api.StateQueued, Filename: src.Filename, Options: src.Options,
		MapName: m.Name, MapFile: r.MapFile, Class: m.Class, Source: m.Source, Created: now, StagingDone: true,
		Counters: api.Counters{Staged: src.Counters.Staged}}, Map: r.Map, Observed: now, Header: src.Header}
	return s.launch(ctx, rec, m)
}

func (s *service) launch(ctx context.Context, rec *record, m *transform.Map) (api.Run, error) {
	if err := s.put(ctx, rec); err != nil {
		return api.Run{}, err
	}
	view := rec.Run // the run's goroutine owns rec from here on
	rs := newRunState(rec, m, s.clock.Now())
	s.mu.Lock()
	s.runs[rec.ID] = rs
	s.mu.Unlock()
	s.spawn(rs)
	s.log.Info("import run started", "run", view.ID, "set", view.Set, "file", view.Filename, "map", view.MapName)
	return view, nil
}

func (s *service) get(ctx context.Context, id string) (*record, error) {
	if id == "" {
		return nil, bus.Fail(errs.BadRequest, "run: missing")
	}
	s.mu.Lock()
	rs := s.runs[id]
	s.mu.Unlock()
	if rs != nil {
		rs.mu.Lock()
		defer rs.mu.Unlock()
		c := *rs.rec
		return &c, nil
	}
	e, err := s.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return nil, bus.Fail(errs.NotFound, "no import run %q (`outpost import runs ls` lists them)", id)
	}
	if err != nil {
		return nil, err
	}
	var rec record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, fmt.Errorf("run %s: %w", id, err)
	}
	return &rec, nil
}

func (s *service) put(ctx context.Context, rec *record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := s.kv.Put(ctx, rec.ID, b); err != nil {
		return fmt.Errorf("save run %s: %w", rec.ID, err)
	}
	return nil
}

func (s *service) runsLs(ctx context.Context, r api.RunsRequest) (api.RunsResponse, error) {
	keys, err := s.kv.ListKeys(ctx)
	if err != nil {
		return api.RunsResponse{}, err
	}
	var ids []string
	for k := range keys.Keys() {
		ids = append(ids, k)
	}
	// ULIDs sort by creation time: newest first.
	slices.SortFunc(ids, func(a, b string) int { return strings.Compare(b, a) })
	ids, next, err := page.Slice(ids, page.Request{Cursor: r.Cursor, Limit: r.Limit}, func(k string) string { return k },
		func(a, b string) int { return strings.Compare(b, a) })
	if err != nil {
		return api.RunsResponse{}, err
	}
	out := api.RunsResponse{Runs: []api.Run{}, NextCursor: next}
	for _, id := range ids {
		rec, err := s.get(ctx, id)
		if err != nil {
			continue // removed meanwhile
		}
		out.Runs = append(out.Runs, rec.Run)
	}
	return out, nil
}

// resume takes up every run that had not finished. Each is registered at once, before
// receipts are consumed, and answers receipts only once its outcomes so far are read back
// (ready); its map is compiled again (the CMDB may not be serving yet) and it carries on.
func (s *service) resume(ctx context.Context) {
	keys, err := s.kv.ListKeys(ctx)
	if err != nil {
		if !errors.Is(err, jetstream.ErrNoKeysFound) {
			s.log.Error("resume import runs", "err", err)
		}
		return
	}
	for id := range keys.Keys() {
		rec, err := s.get(ctx, id)
		if err != nil || api.Terminal(rec.State) {
			continue
		}
		rs := newRunState(rec, nil, s.clock.Now())
		rs.ready = make(chan struct{})
		if rec.SentMark > 0 {
			rs.doubt, rs.insertedCIs = rec.SentMark, map[string]bool{}
		}
		s.mu.Lock()
		s.runs[rec.ID] = rs
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for {
				err := s.recount(ctx, rs)
				if err == nil {
					break
				}
				s.log.Warn("import run: reading back its outcomes", "run", rec.ID, "err", err)
				select {
				case <-ctx.Done():
					return
				case <-s.clock.After(time.Second):
				}
			}
			close(rs.ready)
			var m *transform.Map
			for m == nil {
				var err error
				if m, err = s.loadMap(ctx, rec.MapFile, rec.Map); err != nil {
					var se *bus.ServiceError
					if errors.As(err, &se) && se.ErrCode == errs.BadRequest {
						rs.mu.Lock()
						t := s.now()
						rs.rec.State, rs.rec.Reason, rs.rec.Finished = api.StateFailed, "after a restart the map no longer loads: "+se.Message, &t
						c := *rs.rec
						rs.mu.Unlock()
						_ = s.put(ctx, &c)
						s.mu.Lock()
						delete(s.runs, rec.ID)
						s.mu.Unlock()
						return
					}
					select {
					case <-ctx.Done():
						return
					case <-s.clock.After(time.Second):
					}
				}
			}
			rs.mu.Lock()
			rs.m = m
			done := rs.rec.Counters.Done()
			rs.mu.Unlock()
			s.log.Info("import run resumed", "run", rec.ID, "state", rec.State, "rows_done", done)
			s.spawn(rs)
		}()
	}
}

// saveLoop writes changed run records twice a second.
func (s *service) saveLoop(ctx context.Context) {
	t := s.clock.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			s.saveAll(ctx)
		}
	}
}

func (s *service) saveAll(ctx context.Context) {
	s.mu.Lock()
	all := make([]*runState, 0, len(s.runs))
	for _, rs := range s.runs {
		all = append(all, rs)
	}
	s.mu.Unlock()
	for _, rs := range all {
		rs.saveMu.Lock()
		rs.mu.Lock()
		if !rs.dirty || rs.finished {
			rs.mu.Unlock()
			rs.saveMu.Unlock()
			continue
		}
		c := *rs.rec
		rs.dirty = false
		rs.mu.Unlock()
		if err := s.put(ctx, &c); err != nil {
			s.log.Warn("save import run", "run", c.ID, "err", err)
			rs.mu.Lock()
			rs.dirty = true
			rs.mu.Unlock()
		}
		rs.saveMu.Unlock()
	}
}
