package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	api "github.com/outpost-dev/outpost/libs/api/importer"
)

// restServer serves the same records paged three ways: Link headers, offset/limit and a
// cursor in the body.
func restServer(t *testing.T, recs []importRecord) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var pages atomic.Int64
	asJSON := func(r importRecord) map[string]any {
		ram, _ := strconv.Atoi(r.ram)
		return map[string]any{"host": r.host, "serial": r.serial, "ram_gb": ram, "os": r.os}
	}
	slice := func(from, n int) []map[string]any {
		out := []map[string]any{}
		for i := from; i < min(from+n, len(recs)); i++ {
			out = append(out, asJSON(recs[i]))
		}
		return out
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/link/servers", func(w http.ResponseWriter, r *http.Request) {
		pages.Add(1)
		p, _ := strconv.Atoi(r.URL.Query().Get("page"))
		if next := (p + 1) * 40; next < len(recs) {
			w.Header().Add("Link", fmt.Sprintf(`</link/servers?page=%d>; rel="next", </link/servers?page=0>; rel="first"`, p+1))
		}
		_ = json.NewEncoder(w).Encode(slice(p*40, 40))
	})
	mux.HandleFunc("/offset/servers", func(w http.ResponseWriter, r *http.Request) {
		pages.Add(1)
		off, _ := strconv.Atoi(r.URL.Query().Get("offset"))
		lim, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		_ = json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"items": slice(off, lim)}})
	})
	mux.HandleFunc("/cursor/servers", func(w http.ResponseWriter, r *http.Request) {
		pages.Add(1)
		at := 0
		if c := r.URL.Query().Get("after"); c != "" {
			at, _ = strconv.Atoi(strings.TrimPrefix(c, "tok-"))
		}
		body := map[string]any{"results": slice(at, 33)}
		if at+33 < len(recs) {
			body["meta"] = map[string]any{"next": fmt.Sprintf("tok-%d", at+33)}
		}
		_ = json.NewEncoder(w).Encode(body)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, &pages
}

// A REST API paged three ways and a CSV file on a site host, read through the site's
// bridge: the same records give the same CMDB content.
func TestImportRESTAndSiteFileThroughABridge(t *testing.T) {
	t.Parallel()
	recs := importRecords(250)
	srv, pages := restServer(t, recs)
	files := t.TempDir()
	writeCSV(t, filepath.Join(files, "servers.csv"), recs, "")
	conf := filepath.Join(t.TempDir(), "bridge.yaml")
	writeFile(t, conf, fmt.Sprintf("kinds:\n  file_read: {allowed_dirs: [%s]}\n", files))

	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "web", "127.0.0.1/32", true)
	startBridge(t, h, "web", "web-br1", tok, "--config", conf)
	h.waitStatus(t, "web-br1", "up")
	mapPath := filepath.Join(t.TempDir(), "map.yaml")
	writeFile(t, mapPath, importMap)

	sources := []struct {
		name   string
		params []string
		pages  int64
	}{
		{"api-link", []string{"url=" + srv.URL + "/link/servers?page=0", "paging=link"}, 7},
		{"api-offset", []string{"url=" + srv.URL + "/offset/servers", "paging=offset", "page_size=50", "records=/data/items"}, 6},
		{"api-cursor", []string{"url=" + srv.URL + "/cursor/servers", "paging=cursor", "cursor_param=after", "cursor_path=/meta/next", "records=/results"}, 8},
		{"site-csv", []string{"path=" + filepath.Join(files, "servers.csv"), "chunk_bytes=1000"}, 0},
	}
	for i, s := range sources {
		typ := "rest"
		if strings.HasPrefix(s.name, "site-") {
			typ = "file"
		}
		args := []string{"import", "source", "add", s.name, "--site", "web", "--type", typ}
		for _, p := range s.params {
			args = append(args, "--param", p)
		}
		if out, err := h.outpost(t, args...); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		before := pages.Load()
		r := h.sourceRun(t, s.name, mapPath)
		want := api.Counters{Staged: 250, Unchanged: 250}
		if i == 0 {
			want = api.Counters{Staged: 250, Inserted: 250}
		}
		if r.State != api.StateCompleted || r.Counters != want {
			out, _ := h.outpost(t, "import", "runs", "show", r.ID, "--rows", "error", "--limit", "3")
			t.Fatalf("%s: %s %s %+v, want %+v\n%s", s.name, r.State, r.Reason, r.Counters, want, out)
		}
		if got := pages.Load() - before; got != s.pages {
			t.Errorf("%s asked %d pages, want %d (each once)", s.name, got, s.pages)
		}
	}
	if n := ciCountCLI(t, h, "linux_server"); n != 250 {
		t.Fatalf("linux_server CIs: %d, want 250", n)
	}

	// refused with every problem at once, naming the params
	out, err := h.outpost(t, "import", "source", "add", "bad", "--site", "web", "--type", "rest", "--param", "paging=pages",
		"--param", "header.Authorization=Bearer x", "--param", "colour=blue")
	if err == nil || !strings.Contains(err.Error(), "param url: required") || !strings.Contains(err.Error(), `paging="pages"`) ||
		!strings.Contains(err.Error(), "param colour: unknown") || !strings.Contains(err.Error(), "no secrets in params") {
		t.Fatalf("bad source: %v %s", err, out)
	}
}
