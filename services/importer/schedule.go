package importer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/robfig/cron/v3"

	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/errs"
	"github.com/outpost-dev/outpost/libs/page"
)

// KVSchedules holds import schedules by name.
const KVSchedules = "import_schedules"

// ScheduleLeaseKey is the lease (bus.KVLeases) of the replica that fires schedules.
const ScheduleLeaseKey = "importer.schedules"

// cronParser reads 5-field specs and descriptors, as discovery's schedules do.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// scheduler fires due schedules. It runs only on the replica holding the schedule lease;
// each slot is claimed by a compare-and-set of the schedule's LastSlot before it fires, so
// even two replicas that both believe they hold the lease (a handover) fire a slot once.
// Slots missed while no replica was active fire once, as the latest missed slot, not once
// each: an import of the same file five times in a row would only repeat itself.
type scheduler struct {
	kv    jetstream.KeyValue
	clock clock.Clock
	log   *slog.Logger
	tick  time.Duration
	// fire starts the slot's import; it returns the run's ID.
	fire func(ctx context.Context, sc api.Schedule, slot time.Time) (string, error)
}

// next is the first slot of sc after t.
func next(sc api.Schedule, t time.Time) (time.Time, error) {
	spec, err := cronParser.Parse(sc.Cron)
	if err != nil {
		return time.Time{}, err
	}
	return spec.Next(t.UTC()).UTC(), nil
}

// loop checks the schedules every tick until ctx ends (the lease lost, or stopping).
func (sch *scheduler) loop(ctx context.Context) error {
	for {
		sch.pass(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-sch.clock.After(sch.tick):
		}
	}
}

// pass fires every schedule whose next slot has come.
func (sch *scheduler) pass(ctx context.Context) {
	keys, err := sch.kv.ListKeys(ctx)
	if err != nil {
		if !errors.Is(err, jetstream.ErrNoKeysFound) && ctx.Err() == nil {
			sch.log.Warn("import schedules: cannot list", "err", err)
		}
		return
	}
	now := sch.clock.Now().UTC()
	for name := range keys.Keys() {
		if ctx.Err() != nil {
			return
		}
		if err := sch.check(ctx, name, now); err != nil && ctx.Err() == nil {
			sch.log.Warn("import schedule", "schedule", name, "err", err)
		}
	}
}

func (sch *scheduler) check(ctx context.Context, name string, now time.Time) error {
	e, err := sch.kv.Get(ctx, name)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil // removed meanwhile
		}
		return err
	}
	var sc api.Schedule
	if err := json.Unmarshal(e.Value(), &sc); err != nil {
		return fmt.Errorf("schedule %s unreadable: %w", name, err)
	}
	from := sc.Created
	if sc.LastSlot != nil {
		from = *sc.LastSlot
	}
	slot, err := next(sc, from)
	if err != nil || slot.After(now) {
		return err
	}
	// The latest slot that has come: missed slots are not fired one by one.
	for {
		n, err := next(sc, slot)
		if err != nil || n.After(now) {
			break
		}
		slot = n
	}
	// Claim the slot: only the writer at the revision read wins.
	sc.LastSlot = &slot
	nx, _ := next(sc, slot)
	sc.Next = &nx
	b, _ := json.Marshal(sc)
	rev, err := sch.kv.Update(ctx, name, b, e.Revision())
	if err != nil {
		return nil // another replica claimed it (or changed the schedule): it fires
	}
	run, ferr := sch.fire(ctx, sc, slot)
	sc.LastRun, sc.LastErr = run, ""
	if ferr != nil {
		sc.LastErr = ferr.Error()
		sch.log.Error("scheduled import did not start", "schedule", name, "slot", slot, "err", ferr)
	} else {
		sch.log.Info("scheduled import started", "schedule", name, "slot", slot, "run", run)
	}
	b, _ = json.Marshal(sc)
	if _, err := sch.kv.Update(ctx, name, b, rev); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("record slot %s's run %s: %w", slot.Format(time.RFC3339), run, err)
	}
	return nil
}

// scheduleAdd checks and stores a schedule. Its file is in ScheduleFiles already (the
// gateway put it there).
func (s *service) scheduleAdd(ctx context.Context, sc api.Schedule) (api.Schedule, error) {
	var problems []string
	if !bus.ValidName(sc.Name) {
		problems = append(problems, fmt.Sprintf("name %q: a-z, 0-9 and - (at most 64)", sc.Name))
	}
	if _, err := cronParser.Parse(sc.Cron); err != nil {
		problems = append(problems, fmt.Sprintf("cron %q: %v (5 fields, e.g. \"0 2 * * *\", or @hourly, @every 6h; UTC)", sc.Cron, err))
	}
	if sc.Upload == "" {
		problems = append(problems, "no file: a schedule imports a file uploaded with it")
	} else if _, err := s.files.GetInfo(ctx, sc.Upload); err != nil {
		problems = append(problems, fmt.Sprintf("file %q not in %s: upload it with the schedule", sc.Upload, api.ScheduleFiles))
	}
	if _, err := sourceFormat(sc.File, sc.Options); err != nil {
		problems = append(problems, err.Error())
	}
	if sc.MapName == "" {
		problems = append(problems, "map_name: missing (store the map first: `outpost import maps add MAP.yaml`)")
	} else if _, err := s.mapGet(ctx, api.MapRequest{Name: sc.MapName}); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return sc, bus.Fail(errs.BadRequest, "schedule refused:\n%s", strings.Join(problems, "\n"))
	}
	sc.Created, sc.LastSlot, sc.LastRun, sc.LastErr = s.now(), nil, "", ""
	nx, _ := next(sc, sc.Created)
	sc.Next = &nx
	b, _ := json.Marshal(sc)
	if _, err := s.schedules.Create(ctx, sc.Name, b); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return sc, bus.Fail(errs.Conflict, "schedule %q exists: remove it first (`outpost import schedules rm %s`)", sc.Name, sc.Name)
		}
		return sc, err
	}
	s.log.Info("import schedule added", "schedule", sc.Name, "cron", sc.Cron, "map", sc.MapName, "next", nx)
	return sc, nil
}

func (s *service) schedulesLs(ctx context.Context, r page.Request) (api.SchedulesResponse, error) {
	out := api.SchedulesResponse{Schedules: []api.Schedule{}}
	keys, err := s.schedules.ListKeys(ctx)
	if err != nil {
		return out, err
	}
	var names []string
	for k := range keys.Keys() {
		names = append(names, k)
	}
	slices.Sort(names)
	names, cursor, err := page.Slice(names, r, func(k string) string { return k }, strings.Compare)
	if err != nil {
		return out, bus.Fail(errs.BadRequest, "%v", err)
	}
	out.NextCursor = cursor
	for _, n := range names {
		e, err := s.schedules.Get(ctx, n)
		if err != nil {
			continue
		}
		var sc api.Schedule
		if json.Unmarshal(e.Value(), &sc) == nil {
			out.Schedules = append(out.Schedules, sc)
		}
	}
	return out, nil
}

func (s *service) scheduleRm(ctx context.Context, r api.ScheduleRequest) (api.Schedule, error) {
	e, err := s.schedules.Get(ctx, r.Name)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return api.Schedule{}, bus.Fail(errs.NotFound, "no import schedule %q (`outpost import schedules ls` lists them)", r.Name)
	}
	if err != nil {
		return api.Schedule{}, err
	}
	var sc api.Schedule
	_ = json.Unmarshal(e.Value(), &sc)
	if err := s.schedules.Purge(ctx, r.Name); err != nil {
		return sc, err
	}
	if sc.Upload != "" {
		// Runs already started spool the file first; one still queued reads it later and
		// fails with the reason "upload the file again".
		_ = s.files.Delete(ctx, sc.Upload)
	}
	s.log.Info("import schedule removed", "schedule", sc.Name)
	return sc, nil
}

// startScheduled starts a slot's run: the schedule's file with its map's latest version.
func (s *service) startScheduled(ctx context.Context, sc api.Schedule, slot time.Time) (string, error) {
	text, file, err := s.resolveMap(ctx, "", "", sc.MapName)
	if err != nil {
		return "", err
	}
	m, err := s.loadMap(ctx, file, text)
	if err != nil {
		return "", err
	}
	id := envelope.NewID()
	now := s.now()
	rec := &record{Run: api.Run{ID: id, Set: id, State: api.StateQueued, Filename: sc.File, Options: sc.Options,
		MapName: m.Name, MapFile: file, Class: m.Class, Source: m.Source, Created: now, Schedule: sc.Name},
		Upload: sc.Upload, UploadBucket: api.ScheduleFiles, Map: text, Observed: now}
	run, err := s.launch(ctx, rec, m)
	return run.ID, err
}
