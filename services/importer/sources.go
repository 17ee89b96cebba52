package importer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/errs"
	"github.com/outpost-dev/outpost/libs/page"
	"github.com/outpost-dev/outpost/services/importer/source"
)

// KVSources holds stored data source definitions by name.
const KVSources = "import_sources"

func (s *service) sourceAdd(ctx context.Context, def api.Source) (api.Source, error) {
	if err := source.CheckDefinition(def); err != nil {
		return api.Source{}, bus.Fail(errs.BadRequest, "source refused:\n%v", err)
	}
	if def.Params == nil {
		def.Params = map[string]string{}
	}
	def.Created = s.now()
	b, err := json.Marshal(def)
	if err != nil {
		return api.Source{}, err
	}
	// A source of that name is replaced: its runs keep the definition they started with.
	if _, err := s.sources.Put(ctx, def.Name, b); err != nil {
		return api.Source{}, fmt.Errorf("save source %s: %w", def.Name, err)
	}
	s.log.Info("import source saved", "source", def.Name, "site", def.Site, "type", def.Type)
	return def, nil
}

func (s *service) sourceGet(ctx context.Context, r api.SourceRequest) (api.Source, error) {
	if r.Name == "" {
		return api.Source{}, bus.Fail(errs.BadRequest, "source: missing name")
	}
	e, err := s.sources.Get(ctx, r.Name)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return api.Source{}, bus.Fail(errs.NotFound, "no import source %q (`outpost import source ls` lists them)", r.Name)
	}
	if err != nil {
		return api.Source{}, err
	}
	var def api.Source
	if err := json.Unmarshal(e.Value(), &def); err != nil {
		return api.Source{}, fmt.Errorf("source %s: %w", r.Name, err)
	}
	return def, nil
}

func (s *service) sourceRemove(ctx context.Context, r api.SourceRequest) (api.SourceRemoved, error) {
	if _, err := s.sourceGet(ctx, r); err != nil {
		return api.SourceRemoved{}, err
	}
	if err := s.sources.Delete(ctx, r.Name); err != nil {
		return api.SourceRemoved{}, err
	}
	return api.SourceRemoved{Removed: r.Name}, nil
}

func (s *service) sourcesLs(ctx context.Context, r api.SourcesRequest) (api.SourcesResponse, error) {
	out := api.SourcesResponse{Sources: []api.Source{}}
	keys, err := s.sources.ListKeys(ctx)
	if err != nil {
		return out, err
	}
	var names []string
	for k := range keys.Keys() {
		names = append(names, k)
	}
	slices.Sort(names)
	names, out.NextCursor, err = page.Slice(names, r, func(k string) string { return k }, strings.Compare)
	if err != nil {
		return out, err
	}
	for _, n := range names {
		def, err := s.sourceGet(ctx, api.SourceRequest{Name: n})
		if err != nil {
			continue // removed meanwhile
		}
		out.Sources = append(out.Sources, def)
	}
	return out, nil
}

// sourceRun starts a run reading a stored source through its site's bridges. The run
// keeps a copy of the definition: changing the source later does not change a run.
func (s *service) sourceRun(ctx context.Context, r api.SourceRunRequest) (api.Run, error) {
	def, err := s.sourceGet(ctx, api.SourceRequest{Name: r.Source})
	if err != nil {
		return api.Run{}, err
	}
	m, err := s.loadMap(ctx, r.MapFile, r.Map)
	if err != nil {
		return api.Run{}, err
	}
	id := envelope.NewID()
	now := s.now()
	rec := &record{Run: api.Run{ID: id, Set: id, State: api.StateQueued, DataSource: def.Name, Site: def.Site,
		MapName: m.Name, MapFile: r.MapFile, Class: m.Class, Source: m.Source, Created: now},
		Map: r.Map, Observed: now, Src: &def}
	if def.Type == api.SourceFile {
		rec.Filename = def.Params["path"]
		rec.Options = source.SiteFileOptions(def)
	}
	return s.launch(ctx, rec, m)
}
