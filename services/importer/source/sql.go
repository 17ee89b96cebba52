package source

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/probes/sqlquery"
)

// sqlSource pages a query through sql_query probes, one probe per page: by key (WHERE key
// > last ORDER BY key — exact whatever else changes meanwhile) or by offset (ORDER BY the
// given columns, OFFSET n — exact while the table does not change). Its cursor is the
// last key (k:<json>) or the next offset (o:<n>); a page is asked again whole, so a run
// that stopped mid-page resumes at that page and no row is read twice.
type sqlSource struct {
	p        Prober
	target   string
	params   sqlquery.Params
	query    string
	key      string
	order    string
	pageSize int
}

// identifier is a column name, bare or quoted ("ResourceID", [ResourceID], `ResourceID`):
// SCCM's views have mixed-case names that PostgreSQL folds unless quoted.
var identifier = regexp.MustCompile("^([A-Za-z_][A-Za-z0-9_$]*|\"[^\"]+\"|\\[[^\\]]+\\]|`[^`]+`)$")

// bareName is a column name without its quotes, as result columns name it.
func bareName(id string) string {
	if len(id) >= 2 && strings.ContainsRune("\"[`", rune(id[0])) {
		return id[1 : len(id)-1]
	}
	return id
}

func checkSQL(p map[string]string) []error {
	var errs []error
	q := strings.TrimSpace(p["query"])
	lq := strings.ToLower(q)
	if strings.HasSuffix(q, ";") {
		errs = append(errs, fmt.Errorf("param query: no trailing semicolon (the importer wraps the query to page it)"))
	}
	if q != "" && !strings.HasPrefix(lq, "select") && !strings.HasPrefix(lq, "with") {
		errs = append(errs, fmt.Errorf("param query: want a SELECT (or WITH … SELECT)"))
	}
	switch {
	case p["key"] != "" && p["order"] != "":
		errs = append(errs, fmt.Errorf("params key and order: give one (key paging, or offset paging in that order)"))
	case p["key"] == "" && p["order"] == "":
		errs = append(errs, fmt.Errorf("params key or order: one is required so that pages are stable (key: a unique column of the query; order: the ORDER BY of offset paging)"))
	case p["key"] != "" && !identifier.MatchString(p["key"]):
		errs = append(errs, fmt.Errorf("param key=%q: want a column name of the query", p["key"]))
	}
	for _, col := range strings.Split(p["order"], ",") {
		if c := strings.Fields(strings.TrimSpace(col)); p["order"] != "" && (len(c) == 0 || len(c) > 2 || !identifier.MatchString(c[0]) ||
			len(c) == 2 && !strings.EqualFold(c[1], "asc") && !strings.EqualFold(c[1], "desc")) {
			errs = append(errs, fmt.Errorf("param order=%q: want columns, each optionally ASC or DESC", p["order"]))
			break
		}
	}
	switch strings.ToLower(p["driver"]) {
	case "", "postgres", "postgresql", "pgx", "mysql", "mariadb", "sqlserver", "mssql":
	default:
		errs = append(errs, fmt.Errorf("param driver=%q: want postgres, mysql or sqlserver", p["driver"]))
	}
	return errs
}

func newSQL(def api.Source, p Prober) (*sqlSource, error) {
	driver := strings.ToLower(def.Params["driver"])
	switch driver {
	case "", "postgresql", "pgx":
		driver = "postgres"
	case "mariadb":
		driver = "mysql"
	case "mssql":
		driver = "sqlserver"
	}
	s := &sqlSource{p: p, target: def.Params["target"], query: strings.TrimSpace(def.Params["query"]), key: def.Params["key"],
		order: def.Params["order"], pageSize: intParam(def.Params, "page_size", 500)}
	s.params = sqlquery.Params{Driver: driver, Port: intParam(def.Params, "port", 0), Database: def.Params["database"],
		TLS: def.Params["tls"], Timeout: durationParam(def.Params, "timeout", 60e9), PageSize: s.pageSize, MaxRows: s.pageSize}
	return s, nil
}

func (s *sqlSource) Kind() string { return sqlquery.Kind }
func (s *sqlSource) Close() error { return nil }

// statement is the page's query for the driver's dialect, and its arguments.
func (s *sqlSource) statement(cursor string) (string, []any, error) {
	var where string
	var args []any
	offset := 0
	switch {
	case cursor == "":
	case strings.HasPrefix(cursor, "k:") && s.key != "":
		var v any
		d := json.NewDecoder(strings.NewReader(cursor[2:]))
		d.UseNumber()
		if err := d.Decode(&v); err != nil {
			return "", nil, fmt.Errorf("sql cursor %q: %w", cursor, err)
		}
		if _, err := d.Token(); err != io.EOF {
			// one JSON value and nothing after it: a number is written into the statement
			return "", nil, fmt.Errorf("sql cursor %q: more than one value", cursor)
		}
		switch v := v.(type) {
		case json.Number:
			// A number is written in the statement (it came from the database, and is checked
			// to be one): drivers type a JSON number argument as float, which a key of type
			// bigint would not compare exactly.
			if _, err := strconv.ParseFloat(v.String(), 64); err != nil {
				return "", nil, fmt.Errorf("sql cursor %q: not a number", cursor)
			}
			where = fmt.Sprintf(" WHERE src.%s > %s", s.key, v.String())
		case string:
			args = []any{v}
			where = fmt.Sprintf(" WHERE src.%s > %s", s.key, s.placeholder(1))
		default:
			return "", nil, fmt.Errorf("sql cursor %q: a key must be a number or text", cursor)
		}
	case strings.HasPrefix(cursor, "o:") && s.key == "":
		n, err := strconv.Atoi(cursor[2:])
		if err != nil || n < 0 {
			return "", nil, fmt.Errorf("sql cursor %q: bad offset", cursor)
		}
		offset = n
	default:
		return "", nil, fmt.Errorf("sql cursor %q does not belong to this source's paging (key %q, order %q)", cursor, s.key, s.order)
	}
	order := "src." + s.key
	if s.key == "" {
		var cols []string
		for _, c := range strings.Split(s.order, ",") {
			cols = append(cols, "src."+strings.TrimSpace(c))
		}
		order = strings.Join(cols, ", ")
	}
	inner := "(" + s.query + ") src"
	if s.params.Driver == "sqlserver" {
		return fmt.Sprintf("SELECT * FROM %s%s ORDER BY %s OFFSET %d ROWS FETCH NEXT %d ROWS ONLY", inner, where, order, offset, s.pageSize), args, nil
	}
	q := fmt.Sprintf("SELECT * FROM %s%s ORDER BY %s LIMIT %d", inner, where, order, s.pageSize)
	if offset > 0 {
		q += fmt.Sprintf(" OFFSET %d", offset)
	}
	return q, args, nil
}

func (s *sqlSource) placeholder(n int) string {
	switch s.params.Driver {
	case "mysql":
		return "?"
	case "sqlserver":
		return "@p" + strconv.Itoa(n)
	}
	return "$" + strconv.Itoa(n)
}

// Page asks one page. The rows of a page may come in several chunks, from more than one
// execution of the probe; they are placed by their offset in the result, so a chunk seen
// twice changes nothing, and the page is taken only when the final result's row count is
// all there.
func (s *sqlSource) Page(ctx context.Context, cursor string, _ int) (Page, error) {
	q, args, err := s.statement(cursor)
	if err != nil {
		return Page{}, err
	}
	params := s.params
	params.Query, params.Args = q, args
	type execRows struct {
		cols []sqlquery.Column
		rows map[int][]any
	}
	got := map[string]*execRows{}
	final, err := s.p.Probe(ctx, sqlquery.Kind, s.target, params, func(c Chunk) error {
		var pg sqlquery.Page
		d := json.NewDecoder(bytes.NewReader(c.Result.Data))
		d.UseNumber()
		if err := d.Decode(&pg); err != nil {
			return fmt.Errorf("sql_query chunk: %w", err)
		}
		e := got[c.Exec]
		if e == nil {
			e = &execRows{rows: map[int][]any{}}
			got[c.Exec] = e
		}
		e.cols = pg.Columns
		for i, r := range pg.Rows {
			e.rows[pg.Offset+i] = r
		}
		return nil
	})
	if err != nil {
		return Page{}, err
	}
	if err := FinalError(final); err != nil {
		return Page{}, err
	}
	var res sqlquery.Result
	if err := json.Unmarshal(final.Data, &res); err != nil {
		return Page{}, fmt.Errorf("sql_query result: %w", err)
	}
	if res.TruncatedCells > 0 {
		return Page{}, fmt.Errorf("sql_query cut %d values longer than the bridge's max_cell: raise kinds.sql_query.max_cell in the bridge config, or select less", res.TruncatedCells)
	}
	var e *execRows
	for k, x := range got {
		if strings.HasPrefix(k, final.Probe+"/"+final.Agent+"/") && len(x.rows) >= res.Rows {
			e = x
		}
	}
	if e == nil && res.Rows == 0 {
		e = &execRows{} // the page after the last: empty
	}
	if e == nil || len(e.rows) < res.Rows {
		return Page{}, fmt.Errorf("sql_query page: %d rows announced, chunks missing (sent again)", res.Rows)
	}
	cols := res.Columns
	if len(cols) == 0 {
		cols = e.cols
	}
	out := Page{Rows: make([]Row, 0, res.Rows)}
	keyCol := -1
	for i, c := range cols {
		if s.key != "" && (c.Name == bareName(s.key) || !strings.ContainsAny(s.key[:1], "\"[`") && strings.EqualFold(c.Name, s.key)) {
			keyCol = i
		}
	}
	if s.key != "" && keyCol < 0 && res.Rows > 0 {
		return Page{}, fmt.Errorf("key column %q is not among the query's columns", s.key)
	}
	var lastKey any
	for i := 0; i < res.Rows; i++ {
		vals := e.rows[i]
		row := Row{Cols: make(map[string]any, len(cols))}
		for j, c := range cols {
			if j < len(vals) {
				row.Cols[c.Name] = plain(vals[j])
			}
		}
		if keyCol >= 0 && keyCol < len(vals) {
			lastKey = vals[keyCol]
			b, _ := json.Marshal(lastKey)
			row.Pos.Key = string(b)
		}
		out.Rows = append(out.Rows, row)
	}
	out.Done = res.Rows < s.pageSize
	switch {
	case out.Done:
	case s.key != "":
		b, _ := json.Marshal(lastKey)
		out.Next = "k:" + string(b)
	default:
		off := 0
		if cursor != "" {
			off, _ = strconv.Atoi(cursor[2:])
		}
		out.Next = "o:" + strconv.Itoa(off+res.Rows)
	}
	return out, nil
}

// plain turns a JSON number into an int64 or float64 for the map's expressions.
func plain(v any) any {
	n, ok := v.(json.Number)
	if !ok {
		return v
	}
	if i, err := n.Int64(); err == nil {
		return i
	}
	f, _ := n.Float64()
	return f
}
