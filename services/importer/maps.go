package importer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/errs"
	"github.com/outpost-dev/outpost/libs/page"
	"github.com/outpost-dev/outpost/services/importer/source"
	"github.com/outpost-dev/outpost/services/importer/transform"
)

// mapVersions is how many versions of a stored map the bucket keeps (JetStream's most).
const mapVersions = 64

// summary is what a loaded map says of itself.
func summary(m *transform.Map) api.ValidateResponse {
	resp := api.ValidateResponse{Name: m.Name, Class: m.Class, Coalesce: m.Coalesce, Fields: []string{}}
	if resp.Coalesce == nil {
		resp.Coalesce = []string{}
	}
	for _, f := range m.Fields {
		resp.Fields = append(resp.Fields, f.Attr)
	}
	return resp
}

// mapAdd stores a map as the next version of its name; the same text again is no new version.
func (s *service) mapAdd(ctx context.Context, r api.MapSource) (api.StoredMap, error) {
	if r.MapName != "" && r.Map == "" {
		return api.StoredMap{}, bus.Fail(errs.BadRequest, "maps_add takes the map's YAML (map), not a stored map's name")
	}
	m, err := s.loadMap(ctx, r.MapFile, r.Map)
	if err != nil {
		return api.StoredMap{}, err
	}
	if !bus.ValidName(m.Name) {
		return api.StoredMap{}, bus.Fail(errs.BadRequest, "%s: name %q: a stored map's name is a-z, 0-9 and - (at most 64)", orMapFile(r.MapFile), m.Name)
	}
	sum := summary(m)
	for attempt := 0; ; attempt++ {
		cur, rev, err := s.latestMap(ctx, m.Name)
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return api.StoredMap{}, err
		}
		if err == nil && cur.Map == r.Map {
			cur.Unchanged = true
			return cur, nil
		}
		sm := api.StoredMap{Name: m.Name, Version: cur.Version + 1, Class: sum.Class, Source: m.Source, Coalesce: sum.Coalesce,
			Fields: sum.Fields, MapFile: r.MapFile, Map: r.Map, Created: s.now()}
		b, _ := json.Marshal(sm)
		// Create or update at the revision read: two adds at once make two versions, not one.
		if rev == 0 {
			_, err = s.maps.Create(ctx, m.Name, b)
		} else {
			_, err = s.maps.Update(ctx, m.Name, b, rev)
		}
		if err == nil {
			s.log.Info("transform map stored", "map", sm.Name, "version", sm.Version)
			return sm, nil
		}
		if attempt == 4 {
			return api.StoredMap{}, bus.Fail(errs.Conflict, "map %s is being changed by someone else: try again", m.Name)
		}
	}
}

func orMapFile(f string) string {
	if f == "" {
		return "map.yaml"
	}
	return f
}

// latestMap is a stored map's latest version and its KV revision.
func (s *service) latestMap(ctx context.Context, name string) (api.StoredMap, uint64, error) {
	e, err := s.maps.Get(ctx, name)
	if err != nil {
		return api.StoredMap{}, 0, err
	}
	var sm api.StoredMap
	if err := json.Unmarshal(e.Value(), &sm); err != nil {
		return api.StoredMap{}, 0, fmt.Errorf("stored map %s: %w", name, err)
	}
	return sm, e.Revision(), nil
}

func (s *service) mapGet(ctx context.Context, r api.MapRequest) (api.StoredMap, error) {
	if !bus.ValidName(r.Name) {
		return api.StoredMap{}, bus.Fail(errs.BadRequest, "map name %q: a-z, 0-9 and -", r.Name)
	}
	notFound := bus.Fail(errs.NotFound, "no stored map %q (`outpost import maps ls` lists them; `outpost import maps add MAP.yaml` stores one)", r.Name)
	if r.Version == 0 {
		sm, _, err := s.latestMap(ctx, r.Name)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return sm, notFound
		}
		return sm, err
	}
	hist, err := s.maps.History(ctx, r.Name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return api.StoredMap{}, notFound
	}
	if err != nil {
		return api.StoredMap{}, err
	}
	var have []string
	for _, e := range hist {
		var sm api.StoredMap
		if e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &sm) != nil {
			continue
		}
		if sm.Version == r.Version {
			return sm, nil
		}
		have = append(have, fmt.Sprint(sm.Version))
	}
	return api.StoredMap{}, bus.Fail(errs.NotFound, "map %s has no version %d (kept: %s)", r.Name, r.Version, strings.Join(have, ", "))
}

func (s *service) mapsLs(ctx context.Context, r page.Request) (api.MapsResponse, error) {
	out := api.MapsResponse{Maps: []api.StoredMap{}}
	keys, err := s.maps.ListKeys(ctx)
	if err != nil {
		return out, err
	}
	var names []string
	for k := range keys.Keys() {
		names = append(names, k)
	}
	slices.Sort(names)
	names, next, err := page.Slice(names, r, func(k string) string { return k }, strings.Compare)
	if err != nil {
		return out, bus.Fail(errs.BadRequest, "%v", err)
	}
	out.NextCursor = next
	for _, n := range names {
		sm, _, err := s.latestMap(ctx, n)
		if err != nil {
			continue // removed meanwhile
		}
		sm.Map = "" // the list summarises; maps_get gives the text
		out.Maps = append(out.Maps, sm)
	}
	return out, nil
}

// resolveMap fills a request's map text from the store when it names a stored map.
func (s *service) resolveMap(ctx context.Context, text, file, name string) (string, string, error) {
	if name == "" || text != "" {
		return text, file, nil
	}
	sm, err := s.mapGet(ctx, api.MapRequest{Name: name})
	if err != nil {
		return "", "", err
	}
	f := sm.MapFile
	if f == "" {
		f = sm.Name + ".yaml"
	}
	return sm.Map, fmt.Sprintf("%s (stored map %s v%d)", f, sm.Name, sm.Version), nil
}

// mapTest is a dry run of a map over the first rows of an uploaded file: nothing is staged
// or written; the CMDB is only read, to tell which rows would match a CI.
func (s *service) mapTest(ctx context.Context, r api.MapTestRequest) (api.MapTestResponse, error) {
	var out api.MapTestResponse
	switch {
	case r.Rows == 0:
		r.Rows = 10
	case r.Rows < 0 || r.Rows > api.MaxTestRows:
		return out, bus.Fail(errs.BadRequest, "rows %d: want 1 to %d (default 10)", r.Rows, api.MaxTestRows)
	}
	if r.Upload == "" {
		return out, bus.Fail(errs.BadRequest, "upload: missing (the gateway stores the file first)")
	}
	if _, err := sourceFormat(r.Filename, r.Options); err != nil {
		return out, bus.Fail(errs.BadRequest, "%v", err)
	}
	text, file, err := s.resolveMap(ctx, r.Map, r.MapFile, r.MapName)
	if err != nil {
		return out, err
	}
	m, err := s.loadMap(ctx, file, text)
	if err != nil {
		return out, err
	}
	out.Map = summary(m)
	rec := record{Run: api.Run{Filename: r.Filename, Options: r.Options}, Upload: r.Upload}
	path, err := s.spool(ctx, rec)
	if err != nil {
		return out, bus.Fail(errs.BadRequest, "%v", err)
	}
	defer os.Remove(path)
	src, err := source.NewFileSource(path, withFormat(rec))
	if err != nil {
		return out, bus.Fail(errs.BadRequest, "%s: %v", r.Filename, err)
	}
	defer src.Close()
	p, err := src.Page(ctx, "", r.Rows+1)
	rows := p.Rows
	if len(rows) > r.Rows {
		rows, out.More = rows[:r.Rows], true
	}
	header := src.Header()
	out.Rows = make([]api.MapTestRow, 0, len(rows))
	for _, row := range rows {
		out.Rows = append(out.Rows, s.tryRow(ctx, m, header, row))
	}
	if err != nil {
		// What was read before the source broke is tried; the reason ends the list.
		out.Rows = append(out.Rows, api.MapTestRow{N: int64(len(rows) + 1), Outcome: api.OutcomeError,
			Reason: fmt.Sprintf("%s: the file cannot be read past here: %v", r.Filename, err)})
		out.More = false
	}
	return out, nil
}

// tryRow applies the map to one row and, for a payload, looks its coalesce values up.
func (s *service) tryRow(ctx context.Context, m *transform.Map, header []string, row source.Row) api.MapTestRow {
	tr := api.MapTestRow{N: row.N, Position: row.Pos, Columns: row.Cols}
	if row.Err != "" {
		tr.Outcome, tr.Reason = api.OutcomeError, row.Err
		return tr
	}
	res := m.Apply(row.Cols, fmt.Sprintf("test/%d", row.N), s.now())
	if res.Outcome == api.OutcomeError && row.Pos.Sheet != "" && len(res.Columns) > 0 {
		if i := slices.Index(header, res.Columns[0]); i >= 0 {
			tr.Position.Cell = source.ColumnLetters(i+1) + fmt.Sprint(row.Pos.Row)
		}
	}
	if res.Payload == nil {
		tr.Outcome, tr.Reason = res.Outcome, where(tr.Position)+res.Reason
		return tr
	}
	items := res.Payload.Items
	tr.Target = items[0].Attributes
	for i, it := range items[1:] {
		rel := ""
		if i < len(m.Related) {
			rel = m.Related[i].Type
		}
		tr.Related = append(tr.Related, api.TestItem{Relation: rel, Class: it.Class, Attributes: it.Attributes})
	}
	tr.Outcome = api.OutcomeInserted
	if len(m.Coalesce) == 0 {
		tr.Reason = "coalesce []: every row is a new CI"
		return tr
	}
	filters := map[string]string{}
	for _, c := range m.Coalesce {
		filters[c] = fmt.Sprint(tr.Target[c])
	}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	found, err := cmdbapi.List.Call(lctx, s.deps.NC, cmdbapi.ListRequest{Class: m.Class, Filters: filters, Limit: 2})
	switch {
	case err != nil:
		tr.Outcome, tr.Reason = api.OutcomeError, "the CMDB could not be asked for a CI with these coalesce values: "+err.Error()
	case len(found.Items) == 0:
		tr.Reason = "no " + m.Class + " has these coalesce values"
	default:
		ci := found.Items[0]
		tr.CI = ci.ID
		for _, f := range m.Fields {
			v, ok := tr.Target[f.Attr]
			if ok && fmt.Sprint(ci.Attributes[f.Attr]) != fmt.Sprint(v) {
				tr.Changed = append(tr.Changed, f.Attr)
			}
		}
		if len(tr.Changed) == 0 {
			tr.Outcome, tr.Reason = api.OutcomeUnchanged, "matches "+ci.ID+" and has its every mapped value"
		} else {
			tr.Outcome, tr.Reason = api.OutcomeUpdated, fmt.Sprintf("matches %s; differs in %s (source precedence decides)", ci.ID, strings.Join(tr.Changed, ", "))
		}
		if len(found.Items) > 1 {
			tr.Outcome, tr.Reason = api.OutcomeError, "several "+m.Class+" CIs have these coalesce values: identification would refuse it as a conflict"
		}
	}
	return tr
}
