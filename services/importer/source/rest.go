package source

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"

	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/probes/httprequest"
)

// maxRESTPage keeps one page's body within a result message (http_request does not
// stream): a bigger page is refused with what to do, never cut.
const maxRESTPage = 768 << 10

// restSource pages a REST API with one http_request probe per page. The cursor is the
// URL of the page to ask (the first page's is the url param): a page is asked again
// whole, so resuming repeats no row.
type restSource struct {
	p                       Prober
	first                   string
	records                 string
	paging                  string
	pageSize                int
	offsetParam, limitParam string
	cursorParam, cursorPath string
	headers                 map[string]string
	timeout                 string
	insecure                bool
}

func checkREST(p map[string]string) []error {
	var errs []error
	if v := p["url"]; v != "" {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("param url=%q: want an absolute http(s) URL", v))
		}
	}
	switch p["paging"] {
	case "", "link", "offset", "cursor", "none":
	default:
		errs = append(errs, fmt.Errorf("param paging=%q: want link, offset, cursor or none", p["paging"]))
	}
	for _, k := range []string{"records", "cursor_path"} {
		if v := p[k]; v != "" && !strings.HasPrefix(v, "/") {
			errs = append(errs, fmt.Errorf("param %s=%q: a JSON pointer starts with / (e.g. /items)", k, v))
		}
	}
	for k := range p {
		if h, ok := strings.CutPrefix(k, "header."); ok && strings.EqualFold(h, "Authorization") {
			errs = append(errs, fmt.Errorf("param %s: no secrets in params (they are shown and logged): store an http credential and give --credential", k))
		}
	}
	return errs
}

func newREST(def api.Source, p Prober) (*restSource, error) {
	s := &restSource{p: p, first: def.Params["url"], records: def.Params["records"], paging: def.Params["paging"],
		pageSize: intParam(def.Params, "page_size", 100), offsetParam: def.Params["offset_param"], limitParam: def.Params["limit_param"],
		cursorParam: def.Params["cursor_param"], cursorPath: def.Params["cursor_path"], headers: map[string]string{},
		timeout: durationParam(def.Params, "timeout", 30e9), insecure: def.Params["insecure_skip_verify"] == "true"}
	if s.paging == "" {
		s.paging = "link"
	}
	if s.offsetParam == "" {
		s.offsetParam = "offset"
	}
	if s.limitParam == "" {
		s.limitParam = "limit"
	}
	if s.cursorParam == "" {
		s.cursorParam = "cursor"
	}
	if s.cursorPath == "" {
		s.cursorPath = "/next_cursor"
	}
	for k, v := range def.Params {
		if h, ok := strings.CutPrefix(k, "header."); ok {
			s.headers[h] = v
		}
	}
	if s.paging == "offset" {
		u, _ := url.Parse(s.first)
		q := u.Query()
		q.Set(s.offsetParam, "0")
		q.Set(s.limitParam, strconv.Itoa(s.pageSize))
		u.RawQuery = q.Encode()
		s.first = u.String()
	}
	return s, nil
}

func (s *restSource) Kind() string { return httprequest.Kind }
func (s *restSource) Close() error { return nil }

// Page asks the page at cursor (a URL) and finds the next one.
func (s *restSource) Page(ctx context.Context, cursor string, _ int) (Page, error) {
	pageURL := cursor
	if pageURL == "" {
		pageURL = s.first
	}
	params := httprequest.Params{Method: "GET", URL: pageURL, Headers: s.headers, Timeout: s.timeout, MaxBody: maxRESTPage + 1}
	params.TLS.InsecureSkipVerify = s.insecure
	final, err := s.p.Probe(ctx, httprequest.Kind, "", params, nil)
	if err != nil {
		return Page{}, err
	}
	if err := FinalError(final); err != nil {
		return Page{}, err
	}
	var res httprequest.Result
	if err := json.Unmarshal(final.Data, &res); err != nil {
		return Page{}, fmt.Errorf("http_request result: %w", err)
	}
	if res.Status < 200 || res.Status > 299 {
		return Page{}, &ProbeError{Kind: httprequest.Kind, Status: "error", Code: "http_" + strconv.Itoa(res.Status),
			Message: fmt.Sprintf("GET %s answered %d %s", res.URL, res.Status, res.StatusText)}
	}
	if res.Body.Truncated || res.Body.Size > maxRESTPage {
		return Page{}, fmt.Errorf("GET %s: a page of %d bytes is beyond %d: ask smaller pages (page_size, or the API's own limit parameter in url)", res.URL, res.Body.Size, maxRESTPage)
	}
	body := []byte(res.Body.Text)
	if res.Body.Base64 != "" {
		if body, err = base64.StdEncoding.DecodeString(res.Body.Base64); err != nil {
			return Page{}, fmt.Errorf("GET %s: body: %w", res.URL, err)
		}
	}
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var doc any
	if err := d.Decode(&doc); err != nil {
		return Page{}, fmt.Errorf("GET %s: the body is not JSON: %v", res.URL, err)
	}
	recs, ok := pointer(doc, s.records)
	list, isList := recs.([]any)
	if !ok || !isList {
		return Page{}, fmt.Errorf("GET %s: no array of records at %q (records param)", res.URL, s.records)
	}
	out := Page{Rows: make([]Row, 0, len(list))}
	for i, r := range list {
		rec := fmt.Sprintf("%s[%d]", orRoot(s.records), i)
		obj, ok := r.(map[string]any)
		if !ok {
			out.Rows = append(out.Rows, Row{Pos: api.Position{Record: rec}, Err: fmt.Sprintf("%s: a record is a JSON object, found %s", rec, jsonKind(r))})
			continue
		}
		for k, v := range obj {
			obj[k] = plainDeep(v)
		}
		out.Rows = append(out.Rows, Row{Pos: api.Position{Record: rec}, Cols: obj})
	}
	switch s.paging {
	case "none":
		out.Done = true
	case "link":
		next := linkNext(res.Headers)
		if next == "" {
			out.Done = true
			break
		}
		base, _ := url.Parse(pageURL)
		ref, err := url.Parse(next)
		if err != nil {
			return Page{}, fmt.Errorf("GET %s: Link rel=next %q: %v", res.URL, next, err)
		}
		out.Next = base.ResolveReference(ref).String()
	case "offset":
		if len(list) < s.pageSize {
			out.Done = true
			break
		}
		u, _ := url.Parse(pageURL)
		q := u.Query()
		off, _ := strconv.Atoi(q.Get(s.offsetParam))
		q.Set(s.offsetParam, strconv.Itoa(off+len(list)))
		u.RawQuery = q.Encode()
		out.Next = u.String()
	case "cursor":
		c, _ := pointer(doc, s.cursorPath)
		cs := ""
		if c != nil {
			cs = fmt.Sprint(c)
		}
		if cs == "" || len(list) == 0 {
			out.Done = true
			break
		}
		u, _ := url.Parse(pageURL)
		q := u.Query()
		q.Set(s.cursorParam, cs)
		u.RawQuery = q.Encode()
		out.Next = u.String()
	}
	if !out.Done && out.Next == pageURL {
		return Page{}, fmt.Errorf("GET %s: the next page is the same page: the API's paging does not move (check paging and its params)", res.URL)
	}
	return out, nil
}

func orRoot(p string) string {
	if p == "" {
		return "$"
	}
	return "$" + strings.ReplaceAll(p, "/", ".")
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	}
	return "a number"
}

func plainDeep(v any) any {
	switch v := v.(type) {
	case json.Number:
		return plain(v)
	case []any:
		for i := range v {
			v[i] = plainDeep(v[i])
		}
	case map[string]any:
		for k := range v {
			v[k] = plainDeep(v[k])
		}
	}
	return v
}

// pointer resolves a JSON pointer (RFC 6901) in a decoded document.
func pointer(doc any, p string) (any, bool) {
	if p == "" || p == "/" {
		return doc, true
	}
	cur := doc
	for _, tok := range strings.Split(p[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[tok]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) {
				return nil, false
			}
			cur = c[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

var linkPart = regexp.MustCompile(`<([^>]*)>\s*((?:;\s*[^;,]+)*)`)

// linkNext is the rel="next" target of Link headers (RFC 8288).
func linkNext(h map[string][]string) string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !strings.EqualFold(k, "Link") {
			continue
		}
		for _, v := range h[k] {
			for _, m := range linkPart.FindAllStringSubmatch(v, -1) {
				for _, attr := range strings.Split(m[2], ";") {
					name, val, ok := strings.Cut(strings.TrimSpace(attr), "=")
					if !ok || !strings.EqualFold(strings.TrimSpace(name), "rel") {
						continue
					}
					for _, rel := range strings.Fields(strings.Trim(strings.TrimSpace(val), `"`)) {
						if strings.EqualFold(rel, "next") {
							return m[1]
						}
					}
				}
			}
		}
	}
	return ""
}
