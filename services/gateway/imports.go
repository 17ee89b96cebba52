package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/errs"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// maxMapBytes bounds a transform map's text (a map is a page of YAML, not data).
const maxMapBytes = 1 << 20

// Query parameters of an upload (raw body) and of the file options (either form).
var importParams = []queryParam{
	{"map", "string", "raw body only: the transform map's YAML (multipart: a part named map)"},
	{"map_file", "string", "the map's file name, for error messages"},
	{"filename", "string", "raw body only: the file's name (format detection, display)"},
	{"format", "string", "csv, xlsx, xml, json or jsonl (default: from the file name)"},
	{"sheet", "string", "XLSX: the sheet to read (default: the first)"},
	{"header_row", "integer", "CSV, XLSX: the row with the column names (default 1)"},
	{"record_path", "string", "XML: the path of one record (/servers/server); JSON: the path to the array (/data/servers)"},
}

// rowsParams filter a run's rows.
var rowsParams = []queryParam{{"outcome", "string", "only rows with this outcome: inserted, updated, unchanged, ignored, skipped, error"}}

// routeImports exposes svc.importer.*; uploads stream into the upload object store.
func (a *API) routeImports(mux *router) {
	const timeout = 30 * time.Second
	// The upload is no JSON body: multipart (api.UploadForm's parts) or the raw file.
	mux.Handle("POST /api/v1/imports/runs", a.auth(tokens.RoleOperator, http.HandlerFunc(a.importUpload)),
		opDoc(api.Start, nil, importParams).withForm(bodyOf[api.UploadForm]()))
	mux.Handle("GET /api/v1/imports/runs", a.auth(tokens.RoleViewer, relay(a, api.RunList, timeout, pageRequest)),
		opDoc(api.RunList, nil, pageParams))
	mux.Handle("GET /api/v1/imports/runs/{id}", a.auth(tokens.RoleViewer, relay(a, api.RunGet, timeout, func(r *http.Request) (api.RunRequest, error) {
		return api.RunRequest{ID: r.PathValue("id")}, nil
	})), opDoc(api.RunGet, nil))
	mux.Handle("GET /api/v1/imports/runs/{id}/rows", a.auth(tokens.RoleViewer, relay(a, api.Rows, timeout, func(r *http.Request) (api.RowsRequest, error) {
		p, err := pageRequest(r)
		return api.RowsRequest{Run: r.PathValue("id"), Outcome: r.URL.Query().Get("outcome"), Cursor: p.Cursor, Limit: p.Limit}, err
	})), opDoc(api.Rows, nil, rowsParams, pageParams))
	mux.Handle("POST /api/v1/imports/runs/{id}/retransform", a.auth(tokens.RoleOperator, relay(a, api.Retransform, timeout, func(r *http.Request) (api.RetransformRequest, error) {
		m, err := decodeBody[api.MapSource](r)
		return api.RetransformRequest{Run: r.PathValue("id"), MapSource: m}, err
	})), opDoc(api.Retransform, bodyOf[api.MapSource]()))
	mux.Handle("POST /api/v1/imports/maps/validate", a.auth(tokens.RoleViewer, relay(a, api.Validate, timeout, decodeBody[api.ValidateRequest])),
		opDoc(api.Validate, bodyOf[api.ValidateRequest]()))
	mux.Handle("POST /api/v1/imports/maps", a.auth(tokens.RoleOperator, relay(a, api.MapAdd, timeout, decodeBody[api.MapSource])),
		opDoc(api.MapAdd, bodyOf[api.MapSource]()))
	mux.Handle("GET /api/v1/imports/maps", a.auth(tokens.RoleViewer, relay(a, api.MapList, timeout, pageRequest)),
		opDoc(api.MapList, nil, pageParams))
	mux.Handle("GET /api/v1/imports/maps/{name}", a.auth(tokens.RoleViewer, relay(a, api.MapGet, timeout, func(r *http.Request) (api.MapRequest, error) {
		req := api.MapRequest{Name: r.PathValue("name")}
		if v := r.URL.Query().Get("version"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return req, fmt.Errorf("version %q: want a version number from 1", v)
			}
			req.Version = n
		}
		return req, nil
	})), opDoc(api.MapGet, nil, []queryParam{{"version", "integer", "a version (default: the latest)"}}))
	// A dry run stores the file only while the importer reads its first rows.
	mux.Handle("POST /api/v1/imports/maps/test", a.auth(tokens.RoleOperator, http.HandlerFunc(a.mapTest)),
		opDoc(api.MapTest, nil, importParams, []queryParam{{"map_name", "string", "a stored map instead of the map"},
			{"rows", "integer", "rows to try: default 10, at most 1000"}}).withForm(bodyOf[api.MapTestForm]()))
	mux.Handle("POST /api/v1/imports/schedules", a.auth(tokens.RoleOperator, http.HandlerFunc(a.scheduleAdd)),
		opDoc(api.ScheduleAdd, nil).withForm(bodyOf[api.ScheduleForm]()))
	mux.Handle("GET /api/v1/imports/schedules", a.auth(tokens.RoleViewer, relay(a, api.ScheduleLs, timeout, pageRequest)),
		opDoc(api.ScheduleLs, nil, pageParams))
	mux.Handle("DELETE /api/v1/imports/schedules/{name}", a.auth(tokens.RoleOperator, relay(a, api.ScheduleRm, timeout, func(r *http.Request) (api.ScheduleRequest, error) {
		return api.ScheduleRequest{Name: r.PathValue("name")}, nil
	})), opDoc(api.ScheduleRm, nil))
}

// importUpload takes a file and a map: the map is checked first (a bad map is refused
// before a byte of a large file is stored), then the file streams into the upload bucket,
// then the importer starts the run.
func (a *API) importUpload(w http.ResponseWriter, r *http.Request) {
	up, ok := a.receiveUpload(w, r, api.UploadBucket, nil, a.checkMap)
	if !ok {
		return
	}
	sctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	run, err := api.Start.Call(sctx, a.deps.NC, up.req)
	if err != nil {
		a.dropUpload(r.Context(), api.UploadBucket, up.req.Upload)
		serviceProblem(w, r, err)
		return
	}
	a.audit(r, "import_start", http.StatusOK)
	writeJSON(w, http.StatusOK, run)
}

// mapTest is a dry run of a map over the first rows of a file: the file is stored for the
// importer to read, and dropped once it answered.
func (a *API) mapTest(w http.ResponseWriter, r *http.Request) {
	up, ok := a.receiveUpload(w, r, api.UploadBucket, []string{"rows"}, a.checkMap)
	if !ok {
		return
	}
	defer a.dropUpload(r.Context(), api.UploadBucket, up.req.Upload)
	req := api.MapTestRequest{StartRequest: up.req}
	if v := strings.TrimSpace(up.fields["rows"]); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			problem(w, r, errs.BadRequest, "Bad request", fmt.Sprintf("rows %q: want a number of rows from 1", v))
			return
		}
		req.Rows = n
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	defer cancel()
	out, err := api.MapTest.Call(ctx, a.deps.NC, req)
	if err != nil {
		serviceProblem(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// scheduleAdd stores a schedule's file (kept for every slot) and the schedule.
func (a *API) scheduleAdd(w http.ResponseWriter, r *http.Request) {
	up, ok := a.receiveUpload(w, r, api.ScheduleFiles, []string{"name", "cron"}, nil)
	if !ok {
		return
	}
	sc := api.Schedule{Name: up.fields["name"], Cron: up.fields["cron"], MapName: up.req.MapName, Upload: up.req.Upload,
		File: up.req.Filename, Options: up.req.Options}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	out, err := api.ScheduleAdd.Call(ctx, a.deps.NC, sc)
	if err != nil {
		a.dropUpload(r.Context(), api.ScheduleFiles, up.req.Upload)
		serviceProblem(w, r, err)
		return
	}
	a.audit(r, "import_schedule_add", http.StatusOK)
	writeJSON(w, http.StatusOK, out)
}

// checkMap asks the importer whether the map (text or stored name) loads.
func (a *API) checkMap(ctx context.Context, req *api.StartRequest) error {
	vctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := api.Validate.Call(vctx, a.deps.NC, api.ValidateRequest{Map: req.Map, MapFile: req.MapFile, MapName: req.MapName})
	return err
}

func (a *API) dropUpload(ctx context.Context, bucket, name string) {
	if objs, err := a.objectStore(ctx, bucket); err == nil {
		_ = objs.Delete(context.WithoutCancel(ctx), name)
	}
}

// upload is what receiveUpload read: the start request (the stored file's object name in
// Upload) and the extra fields the route asked for.
type upload struct {
	req    api.StartRequest
	fields map[string]string
}

// receiveUpload reads an upload — multipart (parts before the file: the map or map_name,
// options, extra), or the raw file with everything in the query — checks it with check
// before a byte of the file is stored, and streams the file into bucket. On a problem it
// answers the request and reports false.
func (a *API) receiveUpload(w http.ResponseWriter, r *http.Request, bucket string, extra []string,
	check func(context.Context, *api.StartRequest) error) (upload, bool) {
	q := r.URL.Query()
	req := api.StartRequest{Map: q.Get("map"), MapFile: q.Get("map_file"), Filename: q.Get("filename"), MapName: q.Get("map_name")}
	fields := map[string]string{}
	named := append([]string{"format", "sheet", "header_row", "record_path"}, extra...)
	for _, k := range named {
		fields[k] = q.Get(k)
	}
	bad := func(detail string) { problem(w, r, errs.BadRequest, "Bad request", detail) }
	ctx := r.Context()
	req.Upload = envelope.NewID()
	var stored bool
	store := func(body io.Reader) bool {
		if err := applyFileFields(&req, fields); err != nil {
			bad(err.Error())
			return false
		}
		if check != nil {
			if err := check(ctx, &req); err != nil {
				serviceProblem(w, r, err)
				return false
			}
		}
		if _, err := a.objectStore(ctx, bucket); err != nil {
			problem(w, r, errs.Unavailable, "Upload store unavailable", err.Error())
			return false
		}
		if _, err := putObject(ctx, a.deps.JS, bucket, req.Upload, req.Filename, body); err != nil {
			problem(w, r, errs.Upstream, "Upload failed", fmt.Sprintf("storing the file: %v", err))
			return false
		}
		stored = true
		return true
	}
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "multipart/form-data" || params["boundary"] == "" {
		if req.Map == "" && req.MapName == "" {
			bad("no transform map: send multipart (parts map, then file) or the file as the body with ?map=<YAML> or ?map_name=NAME")
			return upload{}, false
		}
		return upload{req, fields}, store(r.Body)
	}
	mr, err := r.MultipartReader()
	if err != nil {
		bad(err.Error())
		return upload{}, false
	}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			bad("multipart body: " + err.Error())
			return upload{}, false
		}
		switch name := part.FormName(); {
		case name == "map":
			b, err := io.ReadAll(io.LimitReader(part, maxMapBytes+1))
			if err != nil || len(b) > maxMapBytes {
				bad(fmt.Sprintf("part map: want a transform map of at most %d bytes", maxMapBytes))
				return upload{}, false
			}
			req.Map = string(b)
			if req.MapFile == "" {
				req.MapFile = part.FileName()
			}
		case name == "file":
			if stored {
				bad("more than one part named file: one file per upload")
				return upload{}, false
			}
			if req.Map == "" && req.MapName == "" {
				bad("part map (or map_name) must come before part file, so that a bad map is refused before the file is stored")
				return upload{}, false
			}
			if req.Filename == "" {
				req.Filename = part.FileName()
			}
			if !store(part) {
				return upload{}, false
			}
		case name == "filename", name == "map_file", name == "map_name", slices.Contains(named, name):
			b, _ := io.ReadAll(io.LimitReader(part, 4096))
			switch name {
			case "filename":
				req.Filename = string(b)
			case "map_file":
				req.MapFile = string(b)
			case "map_name":
				req.MapName = string(b)
			default:
				fields[name] = string(b)
			}
		default:
			bad(fmt.Sprintf("unknown part %q (parts: map or map_name, file, filename, map_file, %s)", name, strings.Join(named, ", ")))
			return upload{}, false
		}
	}
	if !stored {
		bad("no part named file: send the data file as a part named file, after the map")
		return upload{}, false
	}
	return upload{req, fields}, true
}

// applyFileFields reads the file options.
func applyFileFields(req *api.StartRequest, f map[string]string) error {
	req.Options.Format, req.Options.Sheet, req.Options.RecordPath = f["format"], f["sheet"], f["record_path"]
	if v := strings.TrimSpace(f["header_row"]); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("header_row %q: want a row number from 1", v)
		}
		req.Options.HeaderRow = n
	}
	return nil
}

// objectStore is an upload bucket (uploads, schedule files), made when the importer has not
// made it yet.
func (a *API) objectStore(ctx context.Context, bucket string) (jetstream.ObjectStore, error) {
	objs, err := a.deps.JS.ObjectStore(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		cfg := api.UploadStoreConfig()
		if bucket == api.ScheduleFiles {
			cfg = api.ScheduleFilesConfig()
		}
		objs, err = a.deps.JS.CreateOrUpdateObjectStore(ctx, cfg)
	}
	return objs, err
}
