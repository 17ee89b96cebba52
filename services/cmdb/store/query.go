package store

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	defaultLimit = 50
	maxLimit     = 1000
)

func limitOf(n int) int {
	switch {
	case n <= 0:
		return defaultLimit
	case n > maxLimit:
		return maxLimit
	}
	return n
}

// Cursors are opaque to callers so that the order they encode can change without
// breaking clients; today a cursor is the last id of the previous page.
func encodeCursor(id string) string { return base64.RawURLEncoding.EncodeToString([]byte(id)) }

func decodeCursor(c string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", fmt.Errorf("store: %w %q: %v", ErrBadCursor, c, err)
	}
	return string(b), nil
}

// prefixRange returns bounds such that lo <= v < hi exactly when v starts with p, in byte
// order (SQLite BINARY, PostgreSQL COLLATE "C"), so that an index serves prefix search.
func prefixRange(p string) (lo, hi string) { return p, p + "\U0010FFFF" }

// defaultPlanCap bounds the counts List takes to choose how to run a query.
const defaultPlanCap = 1000

// List answers with one of three plans, chosen from capped counts of how many CIs each
// condition selects (a few index range scans, each reading at most planCap entries):
//
//   - drive from the most selective filter: its index entries are in CI id order, so the
//     page is the first matches after the cursor, whatever the table size;
//   - drive from a small class set or a small search result, sorted;
//   - when every condition is common, walk the CIs in id order from the cursor and
//     check each row: matches are dense, so a page is found after a few rows.
//
// planCap is the count above which a condition is "common".
//
// The cost of a page then depends on the page size and on how rare the combination of
// common conditions is, not on the number of CIs.
func (s *sqlStore) List(ctx context.Context, q ListQuery) (Page, error) {
	limit := limitOf(q.Limit)
	after := ""
	if q.Cursor != "" {
		var err error
		if after, err = decodeCursor(q.Cursor); err != nil {
			return Page{}, err
		}
	}
	empty := Page{Items: []CI{}}

	type filter struct{ attr, norm string }
	filters := make([]filter, len(q.Filters))
	for i, f := range q.Filters {
		filters[i] = filter{f.Attr, strings.ToLower(strings.TrimSpace(f.Value))}
	}
	var searchSQL string
	var searchArgs []any
	if term := strings.ToLower(strings.TrimSpace(q.Search)); term != "" {
		attrs := q.SearchAttrs
		if len(attrs) == 0 {
			attrs = DefaultSearchAttrs()
		}
		lo, hi := prefixRange(term)
		ph, a := placeholders(anys(attrs))
		searchSQL = `SELECT ci_id FROM ci_index WHERE attr IN (` + ph + `) AND norm >= ? AND norm < ?
			UNION SELECT ci_id FROM ci_identifiers WHERE value >= ? AND value < ? AND ci_id IS NOT NULL`
		searchArgs = append(append(a, lo, hi), lo, hi)
	}
	var classPH string
	var classArgs []any
	if len(q.Classes) > 0 {
		classPH, classArgs = placeholders(anys(q.Classes))
	}

	// Choose the driver: the condition selecting the fewest CIs.
	const (
		byRows = iota
		byFilter
		byClass
		bySearch
	)
	driver, driverFilter, best := byRows, -1, s.planCap
	for i, f := range filters {
		n, err := s.cappedCount(ctx, `SELECT 1 FROM ci_index WHERE attr = ? AND norm = ?`, f.attr, f.norm)
		if err != nil {
			return Page{}, err
		}
		if n == 0 {
			return empty, nil
		}
		if driver == byRows || n < best {
			// Even a common filter drives better than the whole table: its entries are
			// in id order and skip every CI without the value.
			driver, driverFilter, best = byFilter, i, n
		}
	}
	if len(q.Classes) > 0 {
		n, err := s.cappedCount(ctx, `SELECT 1 FROM cis WHERE class IN (`+classPH+`)`, classArgs...)
		if err != nil {
			return Page{}, err
		}
		if n == 0 {
			return empty, nil
		}
		if n < best && n < s.planCap {
			driver, best = byClass, n
		}
	}
	if searchSQL != "" {
		n, err := s.cappedCount(ctx, searchSQL, searchArgs...)
		if err != nil {
			return Page{}, err
		}
		if n == 0 {
			return empty, nil
		}
		if n < best && n < s.planCap {
			driver = bySearch
		}
	}

	const cols = `c.id, c.class, c.name, c.attributes, c.created, c.updated, c.last_seen, c.stale, c.operational_status`
	var from, order string
	var where []string
	var args []any
	switch driver {
	case byFilter:
		// CROSS JOIN keeps SQLite from reordering; PostgreSQL treats it as an inner join.
		f := filters[driverFilter]
		from = "ci_index d CROSS JOIN cis c"
		where = append(where, "d.attr = ?", "d.norm = ?", "c.id = d.ci_id")
		args = append(args, f.attr, f.norm)
		if after != "" {
			where = append(where, "d.ci_id > ?")
			args = append(args, after)
		}
		order = "d.ci_id"
	default:
		from, order = "cis c", "c.id"
		if after != "" {
			where = append(where, "c.id > ?")
			args = append(args, after)
		}
	}
	if len(q.Classes) > 0 {
		col := "c.class"
		if driver != byClass {
			col = s.d.noIndex(col) // a row check, not a reason to leave the id order
		}
		where = append(where, col+" IN ("+classPH+")")
		args = append(args, classArgs...)
	}
	for i, f := range filters {
		if driver == byFilter && i == driverFilter {
			continue
		}
		where = append(where, "EXISTS (SELECT 1 FROM ci_index x WHERE x.attr = ? AND x.norm = ? AND x.ci_id = c.id)")
		args = append(args, f.attr, f.norm)
	}
	if searchSQL != "" {
		where = append(where, "c.id IN ("+searchSQL+")")
		args = append(args, searchArgs...)
	}
	if q.Stale != nil {
		where = append(where, "c.stale = ?")
		args = append(args, *q.Stale)
	}
	query := "SELECT " + cols + " FROM " + from
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY " + order + " LIMIT ?"
	args = append(args, limit+1)

	rows, err := s.r.QueryContext(ctx, s.d.q(query), args...)
	if err != nil {
		return Page{}, fmt.Errorf("store: list: %w", err)
	}
	var items []CI
	for rows.Next() {
		c, err := scanCI(rows)
		if err != nil {
			rows.Close()
			return Page{}, fmt.Errorf("store: list: %w", err)
		}
		items = append(items, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return Page{}, fmt.Errorf("store: list: %w", err)
	}
	page := Page{Items: items}
	if len(items) > limit {
		page.Items = items[:limit]
		page.Next = encodeCursor(items[limit-1].ID)
	}
	if page.Items == nil {
		page.Items = []CI{}
	}
	return page, nil
}

// cappedCount counts the rows of query, up to s.planCap.
func (s *sqlStore) cappedCount(ctx context.Context, query string, args ...any) (int, error) {
	var n int
	err := s.r.QueryRowContext(ctx, s.d.q(`SELECT COUNT(*) FROM (`+query+` LIMIT `+strconv.Itoa(s.planCap)+`) capped`), args...).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("store: list plan: %w", err)
	}
	return n, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanCI(r scanner) (CI, error) {
	var c CI
	var attrs string
	var created, updated, seen int64
	if err := r.Scan(&c.ID, &c.Class, &c.Name, &attrs, &created, &updated, &seen, &c.Stale, &c.OperationalStatus); err != nil {
		return CI{}, err
	}
	c.Created, c.Updated, c.LastSeen = fromNanos(created), fromNanos(updated), fromNanos(seen)
	dec := json.NewDecoder(strings.NewReader(attrs))
	dec.UseNumber() // keep numbers exact for API clients
	if err := dec.Decode(&c.Attributes); err != nil {
		return CI{}, fmt.Errorf("CI %s attributes: %w", c.ID, err)
	}
	if c.Attributes == nil {
		c.Attributes = map[string]any{}
	}
	return c, nil
}

func (s *sqlStore) Get(ctx context.Context, id string) (Detail, error) {
	row := s.r.QueryRowContext(ctx, s.d.q(`SELECT id, class, name, attributes, created, updated, last_seen, stale, operational_status
		FROM cis WHERE id = ?`), id)
	c, err := scanCI(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Detail{}, fmt.Errorf("store: CI %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Detail{}, fmt.Errorf("store: get %s: %w", id, err)
	}
	d := Detail{CI: c, Sources: map[string]AttrSource{}, Identifiers: []Key{}, Outgoing: []Relation{}, Incoming: []Relation{}}

	var sources string
	if err := s.r.QueryRowContext(ctx, s.d.q(`SELECT sources FROM cis WHERE id = ?`), id).Scan(&sources); err != nil {
		return Detail{}, fmt.Errorf("store: get %s sources: %w", id, err)
	}
	if err := decodeSources(id, sources, func(attr, source string, observed int64) {
		d.Sources[attr] = AttrSource{Source: source, Observed: fromNanos(observed)}
	}); err != nil {
		return Detail{}, err
	}

	rows, err := s.r.QueryContext(ctx, s.d.q(`SELECT family, kind, value FROM ci_identifiers WHERE ci_id = ? ORDER BY family, kind, value`), id)
	if err != nil {
		return Detail{}, fmt.Errorf("store: get %s identifiers: %w", id, err)
	}
	for rows.Next() {
		var k Key
		if err := rows.Scan(&k.Family, &k.Kind, &k.Value); err != nil {
			rows.Close()
			return Detail{}, fmt.Errorf("store: get %s identifiers: %w", id, err)
		}
		d.Identifiers = append(d.Identifiers, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return Detail{}, fmt.Errorf("store: get %s identifiers: %w", id, err)
	}

	if d.Outgoing, err = s.relationsOf(ctx, id, true); err != nil {
		return Detail{}, err
	}
	if d.Incoming, err = s.relationsOf(ctx, id, false); err != nil {
		return Detail{}, err
	}
	h, err := s.History(ctx, HistoryQuery{CIID: id, Limit: DetailHistory})
	if err != nil {
		return Detail{}, err
	}
	d.History = h.Items
	return d, nil
}

func (s *sqlStore) relationsOf(ctx context.Context, id string, outgoing bool) ([]Relation, error) {
	self, peer := "from_ci", "to_ci"
	if !outgoing {
		self, peer = peer, self
	}
	rows, err := s.r.QueryContext(ctx, s.d.q(`SELECT r.id, r.type, r.from_ci, r.to_ci, r.source, r.created, r.last_seen, p.id, p.class, p.name
		FROM relations r JOIN cis p ON p.id = r.`+peer+` WHERE r.`+self+` = ? ORDER BY r.type, p.name, p.id`), id)
	if err != nil {
		return nil, fmt.Errorf("store: relations of %s: %w", id, err)
	}
	defer rows.Close()
	out := []Relation{}
	for rows.Next() {
		var r Relation
		var created, seen int64
		if err := rows.Scan(&r.ID, &r.Type, &r.From, &r.To, &r.Source, &created, &seen, &r.Peer.ID, &r.Peer.Class, &r.Peer.Name); err != nil {
			return nil, fmt.Errorf("store: relations of %s: %w", id, err)
		}
		r.Created, r.LastSeen = fromNanos(created), fromNanos(seen)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: relations of %s: %w", id, err)
	}
	return out, nil
}

func (s *sqlStore) History(ctx context.Context, q HistoryQuery) (HistoryPage, error) {
	limit := limitOf(q.Limit)
	query := `SELECT id, attr, old, new, source, time FROM history WHERE ci_id = ?`
	args := []any{q.CIID}
	if q.Cursor != "" {
		before, err := decodeCursor(q.Cursor)
		if err != nil {
			return HistoryPage{}, err
		}
		query += " AND id < ?"
		args = append(args, before)
	}
	query += " ORDER BY id DESC LIMIT ?"
	args = append(args, limit+1)
	rows, err := s.r.QueryContext(ctx, s.d.q(query), args...)
	if err != nil {
		return HistoryPage{}, fmt.Errorf("store: history of %s: %w", q.CIID, err)
	}
	defer rows.Close()
	page := HistoryPage{Items: []HistoryEntry{}}
	for rows.Next() {
		h := HistoryEntry{CIID: q.CIID}
		var old, nw sql.NullString
		var t int64
		if err := rows.Scan(&h.ID, &h.Attr, &old, &nw, &h.Source, &t); err != nil {
			return HistoryPage{}, fmt.Errorf("store: history of %s: %w", q.CIID, err)
		}
		if old.Valid {
			h.Old = json.RawMessage(old.String)
		}
		if nw.Valid {
			h.New = json.RawMessage(nw.String)
		}
		h.Time = fromNanos(t)
		page.Items = append(page.Items, h)
	}
	if err := rows.Err(); err != nil {
		return HistoryPage{}, fmt.Errorf("store: history of %s: %w", q.CIID, err)
	}
	if len(page.Items) > limit {
		page.Items = page.Items[:limit]
		page.Next = encodeCursor(page.Items[limit-1].ID)
	}
	return page, nil
}

// Graph walks relations breadth first, one pair of queries per level, so depth N costs
// 2N+1 queries whatever the fan-out.
func (s *sqlStore) Graph(ctx context.Context, id string, depth, maxNodes int) (Graph, error) {
	if maxNodes <= 0 {
		maxNodes = 500
	}
	depthOf := map[string]int{id: 0}
	order := []string{id}
	edges := map[string]Edge{}
	frontier := []string{id}
	truncated := false
	for level := 1; level <= depth && len(frontier) > 0 && !truncated; level++ {
		var next []string
		for _, part := range stringChunks(frontier, inChunk) {
			ph, args := placeholders(part)
			rows, err := s.r.QueryContext(ctx, s.d.q(`SELECT id, type, from_ci, to_ci FROM relations WHERE from_ci IN (`+ph+`)
				UNION SELECT id, type, from_ci, to_ci FROM relations WHERE to_ci IN (`+ph+`)`), append(args, args...)...)
			if err != nil {
				return Graph{}, fmt.Errorf("store: graph of %s: %w", id, err)
			}
			for rows.Next() {
				var e Edge
				if err := rows.Scan(&e.ID, &e.Type, &e.From, &e.To); err != nil {
					rows.Close()
					return Graph{}, fmt.Errorf("store: graph of %s: %w", id, err)
				}
				for _, n := range []string{e.From, e.To} {
					if _, ok := depthOf[n]; ok {
						continue
					}
					if len(depthOf) >= maxNodes {
						truncated = true
						continue
					}
					depthOf[n] = level
					order = append(order, n)
					next = append(next, n)
				}
				_, okFrom := depthOf[e.From]
				_, okTo := depthOf[e.To]
				if okFrom && okTo {
					edges[e.ID] = e
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return Graph{}, fmt.Errorf("store: graph of %s: %w", id, err)
			}
		}
		frontier = next
	}

	refs := map[string]Ref{}
	for _, part := range stringChunks(order, inChunk) {
		ph, args := placeholders(part)
		rows, err := s.r.QueryContext(ctx, s.d.q(`SELECT id, class, name FROM cis WHERE id IN (`+ph+`)`), args...)
		if err != nil {
			return Graph{}, fmt.Errorf("store: graph of %s: %w", id, err)
		}
		for rows.Next() {
			var r Ref
			if err := rows.Scan(&r.ID, &r.Class, &r.Name); err != nil {
				rows.Close()
				return Graph{}, fmt.Errorf("store: graph of %s: %w", id, err)
			}
			refs[r.ID] = r
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return Graph{}, fmt.Errorf("store: graph of %s: %w", id, err)
		}
	}
	if _, ok := refs[id]; !ok {
		return Graph{}, fmt.Errorf("store: CI %s: %w", id, ErrNotFound)
	}
	g := Graph{Nodes: make([]Node, 0, len(order)), Edges: make([]Edge, 0, len(edges)), Truncated: truncated}
	for _, n := range order {
		g.Nodes = append(g.Nodes, Node{Ref: refs[n], Depth: depthOf[n]})
	}
	for _, e := range edges {
		g.Edges = append(g.Edges, e)
	}
	sort.Slice(g.Edges, func(i, j int) bool { return g.Edges[i].ID < g.Edges[j].ID })
	return g, nil
}

func (s *sqlStore) CountByClass(ctx context.Context) (map[string]int64, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT class, COUNT(*) FROM cis GROUP BY class`)
	if err != nil {
		return nil, fmt.Errorf("store: count: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var c string
		var n int64
		if err := rows.Scan(&c, &n); err != nil {
			return nil, fmt.Errorf("store: count: %w", err)
		}
		out[c] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: count: %w", err)
	}
	return out, nil
}

func (s *sqlStore) Conflicts(ctx context.Context, q ConflictQuery) (ConflictPage, error) {
	limit := limitOf(q.Limit)
	query := `SELECT id, source, native_key, class, ref, item, candidates, reason, first_seen, last_seen, count FROM conflicts`
	var args []any
	if q.Cursor != "" {
		before, err := decodeCursor(q.Cursor)
		if err != nil {
			return ConflictPage{}, err
		}
		query += " WHERE id < ?"
		args = append(args, before)
	}
	query += " ORDER BY id DESC LIMIT ?"
	args = append(args, limit+1)
	rows, err := s.r.QueryContext(ctx, s.d.q(query), args...)
	if err != nil {
		return ConflictPage{}, fmt.Errorf("store: conflicts: %w", err)
	}
	defer rows.Close()
	page := ConflictPage{Items: []Conflict{}}
	for rows.Next() {
		var c Conflict
		var item, cands string
		var first, last int64
		if err := rows.Scan(&c.ID, &c.Source, &c.NativeKey, &c.Class, &c.Ref, &item, &cands, &c.Reason, &first, &last, &c.Count); err != nil {
			return ConflictPage{}, fmt.Errorf("store: conflicts: %w", err)
		}
		c.Item = json.RawMessage(item)
		if err := json.Unmarshal([]byte(cands), &c.Candidates); err != nil {
			return ConflictPage{}, fmt.Errorf("store: conflict %s candidates: %w", c.ID, err)
		}
		c.FirstSeen, c.LastSeen = fromNanos(first), fromNanos(last)
		page.Items = append(page.Items, c)
	}
	if err := rows.Err(); err != nil {
		return ConflictPage{}, fmt.Errorf("store: conflicts: %w", err)
	}
	if len(page.Items) > limit {
		page.Items = page.Items[:limit]
		page.Next = encodeCursor(page.Items[limit-1].ID)
	}
	return page, nil
}

func (s *sqlStore) MarkStale(ctx context.Context, seenBefore, now time.Time, source string, announce func([]Ref) ([]OutboxMsg, error)) ([]Ref, error) {
	var out []Ref
	err := s.Update(ctx, func(ctx context.Context, txi Tx) error {
		out = nil
		t := txi.(*tx).t
		rows, err := t.QueryContext(ctx, s.d.q(`SELECT id, class, name FROM cis WHERE stale = FALSE AND last_seen < ?`), nanos(seenBefore))
		if err != nil {
			return fmt.Errorf("store: mark stale: %w", err)
		}
		for rows.Next() {
			var r Ref
			if err := rows.Scan(&r.ID, &r.Class, &r.Name); err != nil {
				rows.Close()
				return fmt.Errorf("store: mark stale: %w", err)
			}
			out = append(out, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("store: mark stale: %w", err)
		}
		if len(out) == 0 {
			return nil
		}
		ids := make([]string, len(out))
		for i, r := range out {
			ids[i] = r.ID
		}
		for _, part := range stringChunks(ids, inChunk) {
			ph, args := placeholders(part)
			if _, err := t.ExecContext(ctx, s.d.q(`UPDATE cis SET stale = TRUE, updated = ? WHERE id IN (`+ph+`)`),
				append([]any{nanos(now)}, args...)...); err != nil {
				return fmt.Errorf("store: mark stale: %w", err)
			}
		}
		f, tr := "false", "true"
		hist := make([]HistoryRow, len(out))
		for i, r := range out {
			hist[i] = HistoryRow{ID: NewID(), CIID: r.ID, Attr: "stale", Old: &f, New: &tr, Source: source, Time: now}
		}
		b := &Batch{History: hist}
		if announce != nil {
			if b.Outbox, err = announce(out); err != nil {
				return err
			}
		}
		return txi.Write(ctx, b)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func anys(values []string) []any {
	out := make([]any, len(values))
	for i, v := range values {
		out[i] = v
	}
	return out
}
