package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
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
}

// importUpload takes a file and a map: the map is checked first (a bad map is refused
// before a byte of a large file is stored), then the file streams into the upload bucket,
// then the importer starts the run.
func (a *API) importUpload(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := api.StartRequest{Map: q.Get("map"), MapFile: q.Get("map_file"), Filename: q.Get("filename")}
	fields := map[string]string{}
	for _, k := range []string{"format", "sheet", "header_row", "record_path"} {
		fields[k] = q.Get(k)
	}
	bad := func(detail string) { problem(w, r, errs.BadRequest, "Bad request", detail) }
	ctx := r.Context()
	upload := envelope.NewID()
	req.Upload = upload
	var stored bool
	store := func(body io.Reader) bool {
		if err := applyFileFields(&req, fields); err != nil {
			bad(err.Error())
			return false
		}
		vctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := api.Validate.Call(vctx, a.deps.NC, api.ValidateRequest{Map: req.Map, MapFile: req.MapFile})
		cancel()
		if err != nil {
			serviceProblem(w, r, err)
			return false
		}
		objs, err := a.uploads(ctx)
		if err != nil {
			problem(w, r, errs.Unavailable, "Upload store unavailable", err.Error())
			return false
		}
		if _, err := objs.Put(ctx, jetstream.ObjectMeta{Name: upload, Description: req.Filename}, body); err != nil {
			problem(w, r, errs.Upstream, "Upload failed", fmt.Sprintf("storing the file: %v", err))
			return false
		}
		stored = true
		return true
	}
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt == "multipart/form-data" && params["boundary"] != "" {
		mr, err := r.MultipartReader()
		if err != nil {
			bad(err.Error())
			return
		}
		for {
			part, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				bad("multipart body: " + err.Error())
				return
			}
			switch name := part.FormName(); name {
			case "map":
				b, err := io.ReadAll(io.LimitReader(part, maxMapBytes+1))
				if err != nil || len(b) > maxMapBytes {
					bad(fmt.Sprintf("part map: want a transform map of at most %d bytes", maxMapBytes))
					return
				}
				req.Map = string(b)
				if req.MapFile == "" {
					req.MapFile = part.FileName()
				}
			case "file":
				if stored {
					bad("more than one part named file: one file per run")
					return
				}
				if req.Map == "" {
					bad("part map must come before part file, so that a bad map is refused before the file is stored")
					return
				}
				if req.Filename == "" {
					req.Filename = part.FileName()
				}
				if !store(part) {
					return
				}
			case "format", "sheet", "header_row", "record_path", "filename", "map_file":
				b, _ := io.ReadAll(io.LimitReader(part, 4096))
				if name == "filename" {
					req.Filename = string(b)
				} else if name == "map_file" {
					req.MapFile = string(b)
				} else {
					fields[name] = string(b)
				}
			default:
				bad(fmt.Sprintf("unknown part %q (parts: map, file, format, sheet, header_row, record_path, filename, map_file)", name))
				return
			}
		}
		if !stored {
			bad("no part named file: send the data file as a part named file, after the map")
			return
		}
	} else {
		if req.Map == "" {
			bad("no transform map: send multipart (parts map, then file) or the file as the body with ?map=<YAML>")
			return
		}
		if !store(r.Body) {
			return
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	run, err := api.Start.Call(sctx, a.deps.NC, req)
	if err != nil {
		if objs, oerr := a.uploads(ctx); oerr == nil {
			_ = objs.Delete(context.WithoutCancel(ctx), upload)
		}
		serviceProblem(w, r, err)
		return
	}
	a.audit(r, "import_start", http.StatusOK)
	writeJSON(w, http.StatusOK, run)
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

// uploads is the upload bucket, made when the importer has not made it yet.
func (a *API) uploads(ctx context.Context) (jetstream.ObjectStore, error) {
	objs, err := a.deps.JS.ObjectStore(ctx, api.UploadBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		objs, err = a.deps.JS.CreateOrUpdateObjectStore(ctx, api.UploadStoreConfig())
	}
	return objs, err
}
