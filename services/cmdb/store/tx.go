package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// tx implements Tx. Every read takes a whole set of keys or ids in a few statements: the
// engine never queries per item, so a payload of hundreds of CIs costs a handful of round
// trips.
type tx struct {
	s *sqlStore
	t *sql.Tx // nil in a chain (see Chain): its writes run on the chain's writer
	q queryer // where reads run: t, or the chain's connection
	// created counts the CIs Write created, for the analyzer.
	created int
}

// queryer is what the reads need of a transaction or a connection.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// inChunk bounds IN lists; padded to powers of two by placeholders.
const inChunk = 512

func (x *tx) LookupIdentifiers(ctx context.Context, keys []Key) (map[Key]string, error) {
	out := make(map[Key]string, len(keys))
	type group struct{ family, kind string }
	groups := map[group][]string{}
	var order []group
	for _, k := range keys {
		g := group{k.Family, k.Kind}
		if _, ok := groups[g]; !ok {
			order = append(order, g)
		}
		groups[g] = append(groups[g], k.Value)
	}
	for _, g := range order {
		for _, part := range stringChunks(dedupe(groups[g]), inChunk) {
			ph, args := placeholders(part)
			args = append([]any{g.family, g.kind}, args...)
			rows, err := x.q.QueryContext(ctx, x.s.d.q(`SELECT value, ci_id FROM ci_identifiers
				WHERE family = ? AND kind = ? AND value IN (`+ph+`)`), args...)
			if err != nil {
				return nil, fmt.Errorf("store: lookup identifiers: %w", err)
			}
			for rows.Next() {
				var value string
				var ci sql.NullString
				if err := rows.Scan(&value, &ci); err != nil {
					rows.Close()
					return nil, fmt.Errorf("store: lookup identifiers: %w", err)
				}
				out[Key{Family: g.family, Kind: g.kind, Value: value}] = ci.String
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return nil, fmt.Errorf("store: lookup identifiers: %w", err)
			}
		}
	}
	return out, nil
}

func (x *tx) IdentifiersOf(ctx context.Context, ciIDs []string) (map[string][]Key, error) {
	out := map[string][]Key{}
	for _, part := range stringChunks(dedupe(ciIDs), inChunk) {
		ph, args := placeholders(part)
		rows, err := x.q.QueryContext(ctx, x.s.d.q(`SELECT ci_id, family, kind, value FROM ci_identifiers
			WHERE ci_id IN (`+ph+`)`), args...)
		if err != nil {
			return nil, fmt.Errorf("store: identifiers of: %w", err)
		}
		for rows.Next() {
			var id string
			var k Key
			if err := rows.Scan(&id, &k.Family, &k.Kind, &k.Value); err != nil {
				rows.Close()
				return nil, fmt.Errorf("store: identifiers of: %w", err)
			}
			out[id] = append(out[id], k)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("store: identifiers of: %w", err)
		}
	}
	return out, nil
}

func (x *tx) LoadCIs(ctx context.Context, ids []string) (map[string]*CIState, error) {
	ids = dedupe(ids)
	sort.Strings(ids) // lock rows in one global order: concurrent ingests cannot deadlock on them
	out := make(map[string]*CIState, len(ids))
	for _, part := range stringChunks(ids, inChunk) {
		ph, args := placeholders(part)
		rows, err := x.q.QueryContext(ctx, x.s.d.q(`SELECT id, class, name, attributes, sources, created, updated, last_seen, stale, operational_status
			FROM cis WHERE id IN (`+ph+`) ORDER BY id`+x.s.d.forUpdate), args...)
		if err != nil {
			return nil, fmt.Errorf("store: load CIs: %w", err)
		}
		for rows.Next() {
			st := &CIState{}
			var attrs, sources string
			var created, updated, seen int64
			if err := rows.Scan(&st.ID, &st.Class, &st.Name, &attrs, &sources, &created, &updated, &seen, &st.Stale, &st.OperationalStatus); err != nil {
				rows.Close()
				return nil, fmt.Errorf("store: load CIs: %w", err)
			}
			st.Created, st.Updated, st.LastSeen = fromNanos(created), fromNanos(updated), fromNanos(seen)
			if st.Attrs, err = decodeAttrs(st.ID, attrs, sources); err != nil {
				rows.Close()
				return nil, err
			}
			out[st.ID] = st
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("store: load CIs: %w", err)
		}
	}
	return out, nil
}

// The sources column groups attributes by who set them and when, since most attributes of
// a CI come from one observation: [[source, observed, attr, attr…], …]. It is read on
// every reconciliation and written with every CI, so it is kept small.

func decodeSources(id, sources string, each func(attr, source string, observed int64)) error {
	var groups [][]json.RawMessage
	if err := json.Unmarshal([]byte(sources), &groups); err != nil {
		return fmt.Errorf("store: CI %s sources: %w", id, err)
	}
	for _, g := range groups {
		var src string
		var observed int64
		if len(g) < 2 || json.Unmarshal(g[0], &src) != nil || json.Unmarshal(g[1], &observed) != nil {
			return fmt.Errorf("store: CI %s sources: malformed group", id)
		}
		for _, raw := range g[2:] {
			var attr string
			if err := json.Unmarshal(raw, &attr); err != nil {
				return fmt.Errorf("store: CI %s sources: %w", id, err)
			}
			each(attr, src, observed)
		}
	}
	return nil
}

func decodeAttrs(id, attrs, sources string) (map[string]AttrRow, error) {
	var values map[string]json.RawMessage
	if err := json.Unmarshal([]byte(attrs), &values); err != nil {
		return nil, fmt.Errorf("store: CI %s attributes: %w", id, err)
	}
	out := make(map[string]AttrRow, len(values))
	for a, v := range values {
		out[a] = AttrRow{CIID: id, Attr: a, Value: string(v)}
	}
	err := decodeSources(id, sources, func(attr, source string, observed int64) {
		if r, ok := out[attr]; ok {
			r.Source, r.Observed = source, fromNanos(observed)
			out[attr] = r
		}
	})
	return out, err
}

// encodeAttrs returns the attributes and sources columns of a CI, keys sorted so that
// the same state always encodes the same. It runs for every CI an ingest writes (5 µs of
// a new CI's CPU when it used strconv.Quote and a map of groups): names and sources are
// written as they are when they need no JSON escaping, as they practically always do, and
// the groups — usually one per CI — are found by a scan of a short list.
func encodeAttrs(attrs map[string]AttrRow) (string, string) {
	names := make([]string, 0, len(attrs))
	size := 2
	for a, r := range attrs {
		names = append(names, a)
		size += len(a) + len(r.Value) + 4
	}
	sort.Strings(names)
	type group struct {
		source   string
		observed int64
		attrs    []string
	}
	var groupsBuf [4]group
	groups := groupsBuf[:0]
	var v strings.Builder
	v.Grow(size)
	v.WriteByte('{')
	for i, a := range names {
		if i > 0 {
			v.WriteByte(',')
		}
		r := attrs[a]
		writeJSONString(&v, a)
		v.WriteByte(':')
		v.WriteString(r.Value) // already JSON
		o := nanos(r.Observed)
		gi := -1
		for j := range groups {
			if groups[j].source == r.Source && groups[j].observed == o {
				gi = j
				break
			}
		}
		if gi < 0 {
			gi = len(groups)
			groups = append(groups, group{source: r.Source, observed: o, attrs: make([]string, 0, len(names)-i)})
		}
		groups[gi].attrs = append(groups[gi].attrs, a)
	}
	v.WriteByte('}')
	size = 2
	for _, g := range groups {
		size += len(g.source) + 24
		for _, a := range g.attrs {
			size += len(a) + 3
		}
	}
	var src strings.Builder
	src.Grow(size)
	src.WriteByte('[')
	var num [20]byte
	for i, g := range groups {
		if i > 0 {
			src.WriteByte(',')
		}
		src.WriteByte('[')
		writeJSONString(&src, g.source)
		src.WriteByte(',')
		src.Write(strconv.AppendInt(num[:0], g.observed, 10))
		for _, a := range g.attrs {
			src.WriteByte(',')
			writeJSONString(&src, a)
		}
		src.WriteByte(']')
	}
	src.WriteByte(']')
	return v.String(), src.String()
}

// writeJSONString writes s as a JSON string: as it is when it needs no escaping (names of
// attributes and sources), through encoding/json otherwise.
func writeJSONString(b *strings.Builder, s string) {
	if !needsEscape(s) && !strings.ContainsAny(s, "<>&") {
		b.WriteByte('"')
		b.WriteString(s)
		b.WriteByte('"')
		return
	}
	q, _ := json.Marshal(s)
	b.Write(q)
}

func (x *tx) LoadRelations(ctx context.Context, fromIDs []string) ([]RelationRow, error) {
	var out []RelationRow
	for _, part := range stringChunks(dedupe(fromIDs), inChunk) {
		ph, args := placeholders(part)
		rows, err := x.q.QueryContext(ctx, x.s.d.q(`SELECT id, type, from_ci, to_ci, source, created, last_seen
			FROM relations WHERE from_ci IN (`+ph+`)`), args...)
		if err != nil {
			return nil, fmt.Errorf("store: load relations: %w", err)
		}
		for rows.Next() {
			var r RelationRow
			var created, seen int64
			if err := rows.Scan(&r.ID, &r.Type, &r.From, &r.To, &r.Source, &created, &seen); err != nil {
				rows.Close()
				return nil, fmt.Errorf("store: load relations: %w", err)
			}
			r.Created, r.LastSeen = fromNanos(created), fromNanos(seen)
			out = append(out, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("store: load relations: %w", err)
		}
	}
	return out, nil
}

func (x *tx) LoadReceipts(ctx context.Context, keys []string) (map[string]string, error) {
	out := make(map[string]string, len(keys))
	for _, part := range stringChunks(dedupe(keys), inChunk) {
		ph, args := placeholders(part)
		rows, err := x.q.QueryContext(ctx, x.s.d.q(`SELECT payload, body FROM receipts WHERE payload IN (`+ph+`)`), args...)
		if err != nil {
			return nil, fmt.Errorf("store: load receipts: %w", err)
		}
		for rows.Next() {
			var k, body string
			if err := rows.Scan(&k, &body); err != nil {
				rows.Close()
				return nil, fmt.Errorf("store: load receipts: %w", err)
			}
			out[k] = body
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("store: load receipts: %w", err)
		}
	}
	return out, nil
}

// inserts are the statements Write issues.
type inserts struct {
	newCI, changedCI, sharedIdent, movedIdent, newIdent, newIndex, index, history, newRel, seenRel, conflicts, outbox, receipts insert
}

func newInserts() inserts {
	const (
		ci    = "INSERT INTO cis (id, class, name, attributes, sources, created, updated, last_seen, stale, operational_status)"
		ident = "INSERT INTO ci_identifiers (family, kind, value, ci_id)"
		rel   = "INSERT INTO relations (from_ci, type, to_ci, id, source, created, last_seen)"
	)
	return inserts{
		newCI: insert{ci, 10, ""},
		changedCI: insert{ci, 10, ` ON CONFLICT (id) DO UPDATE SET class = excluded.class, name = excluded.name,
			attributes = excluded.attributes, sources = excluded.sources, updated = excluded.updated,
			last_seen = excluded.last_seen, stale = excluded.stale, operational_status = excluded.operational_status`},
		sharedIdent: insert{ident, 4, " ON CONFLICT (value, family, kind) DO UPDATE SET ci_id = NULL"},
		movedIdent:  insert{ident, 4, " ON CONFLICT (value, family, kind) DO UPDATE SET ci_id = excluded.ci_id"},
		newIdent:    insert{ident, 4, ""},
		// A new CI's entries cannot exist yet (its id is new): no conflict clause, which
		// spares the database a uniqueness probe per entry.
		newIndex: insert{"INSERT INTO ci_index (attr, norm, ci_id)", 3, ""},
		index:    insert{"INSERT INTO ci_index (attr, norm, ci_id)", 3, " ON CONFLICT (attr, norm, ci_id) DO NOTHING"},
		history:  insert{"INSERT INTO history (ci_id, id, attr, old, new, source, time)", 7, ""},
		newRel:   insert{rel, 7, ""},
		seenRel:  insert{rel, 7, " ON CONFLICT (from_ci, type, to_ci) DO UPDATE SET last_seen = excluded.last_seen"},
		conflicts: insert{"INSERT INTO conflicts (id, dedup_key, source, native_key, class, ref, item, candidates, reason, first_seen, last_seen, count)", 12,
			` ON CONFLICT (dedup_key) DO UPDATE SET last_seen = excluded.last_seen, count = conflicts.count + 1,
			item = excluded.item, candidates = excluded.candidates WHERE conflicts.last_seen < excluded.last_seen`},
		outbox: insert{"INSERT INTO outbox (msgs, created)", 2, ""},
		// A payload's receipt is written once: a later ingest of it replays the stored one.
		receipts: insert{"INSERT INTO receipts (payload, body, created)", 3, " ON CONFLICT (payload) DO NOTHING"},
	}
}

func (in inserts) all() []insert {
	return []insert{in.newCI, in.changedCI, in.sharedIdent, in.movedIdent, in.newIdent, in.newIndex, in.index, in.history, in.newRel, in.seenRel, in.conflicts, in.outbox, in.receipts}
}

// Write applies the batch in dependency order: CIs before the rows that reference them.
func (x *tx) Write(ctx context.Context, b *Batch) error {
	x.created += len(b.NewCIs)
	return x.s.execute(ctx, x.t, x.s.compile(b))
}

// statement is one statement of a compiled batch: its text and bound values; what names
// the rows in an error.
type statement struct {
	what string
	text string
	args []any
}

// execute runs a compiled batch's statements in t, in order.
func (s *sqlStore) execute(ctx context.Context, t *sql.Tx, prog []statement) error {
	for _, st := range prog {
		if err := s.exec(ctx, t, st.text, st.args); err != nil {
			return fmt.Errorf("%s: %w", st.what, err)
		}
	}
	return nil
}

// compile turns a batch into its statements, in dependency order (CIs before the rows that
// reference them). It is all the Go work of a write — encoding attributes, outbox rows and
// index objects, boxing values — and touches no connection, so that a pipelined
// transaction (UpdatePipelined) does it beside the writer instead of on it.
func (s *sqlStore) compile(b *Batch) []statement {
	in := s.ins
	// The index has every attribute of a new CI, and follows the changes of the others:
	// old text out, new text in.
	//
	// Row values are boxed (any) once: a string converted to an interface is an
	// allocation, and a CI's id and the attribute names repeat in most rows of a batch.
	//
	// The same holds for times: a row's created, updated, last seen and history times are
	// mostly the batch's observation or ingest time, and an int64 in an interface is an
	// allocation too. Boxed once each, CI ids, classes, sources, relation types and times
	// cost a map lookup instead of an allocation per row (about a seventh of an ingest's
	// allocations were these boxes: each relation row was seven).
	boxes := make(map[string]any, 2*len(b.NewCIs)+16)
	box := func(s string) any {
		if v, ok := boxes[s]; ok {
			return v
		}
		v := any(s)
		boxes[s] = v
		return v
	}
	times := make(map[int64]any, 4)
	boxTime := func(t time.Time) any {
		n := nanos(t)
		if v, ok := times[n]; ok {
			return v
		}
		v := any(n)
		times[n] = v
		return v
	}
	ciRow := func(rows []CIState) func(int, []any) []any {
		return func(i int, a []any) []any {
			c := rows[i]
			attrs, sources := encodeAttrs(c.Attrs)
			return append(a, box(c.ID), box(c.Class), c.Name, attrs, sources, boxTime(c.Created), boxTime(c.Updated), boxTime(c.LastSeen), c.Stale, box(c.OperationalStatus))
		}
	}
	type entry struct{ attr, norm, ci any }
	// A new CI's entries: on SQLite, each CI's as one JSON object {attr: norm} that the
	// statement expands (objs, see insertIndexObjects); on PostgreSQL, or for a CI with a
	// value JSON would have to escape, as rows (fresh).
	var fresh []entry
	var objs []indexObject
	if s.d.indexObjects {
		objs = make([]indexObject, 0, len(b.NewCIs))
	}
	for _, c := range b.NewCIs {
		if s.d.indexObjects {
			if obj, ok := indexObjectOf(c.Attrs); ok {
				if obj != "" {
					objs = append(objs, indexObject{ci: box(c.ID), obj: obj})
				}
				continue
			}
		}
		id := box(c.ID)
		for a, v := range c.Attrs {
			if n, ok := normOf(v.Value); ok {
				fresh = append(fresh, entry{box(a), n, id})
			}
		}
	}
	var add, drop []entry
	for _, c := range b.AttrChanges {
		if n, ok := normOf(c.Old); ok {
			drop = append(drop, entry{c.Attr, n, c.CIID})
		}
		if n, ok := normOf(c.New); ok {
			add = append(add, entry{box(c.Attr), n, c.CIID})
		}
	}
	identRow := func(rows []Identifier) func(int, []any) []any {
		return func(i int, a []any) []any {
			k := rows[i]
			ci := any(nil)
			if k.CIID != "" {
				ci = box(k.CIID)
			}
			return append(a, box(k.Family), box(k.Kind), k.Value, ci)
		}
	}
	relRow := func(rows []RelationRow) func(int, []any) []any {
		return func(i int, a []any) []any {
			r := rows[i]
			return append(a, box(r.From), box(r.Type), box(r.To), r.ID, box(r.Source), boxTime(r.Created), boxTime(r.LastSeen))
		}
	}
	var outboxRow string // the batch's messages, in one outbox row
	shared := make([]Identifier, len(b.SharedIdentifiers))
	for i, k := range b.SharedIdentifiers {
		shared[i] = Identifier{Key: k}
	}
	steps := []struct {
		in  insert
		n   int
		row func(int, []any) []any
	}{
		{in.newCI, len(b.NewCIs), ciRow(b.NewCIs)},
		{in.changedCI, len(b.ChangedCIs), ciRow(b.ChangedCIs)},
		{in.sharedIdent, len(shared), identRow(shared)},
		{in.movedIdent, len(b.MovedIdentifiers), identRow(b.MovedIdentifiers)},
		{in.newIdent, len(b.NewIdentifiers), identRow(b.NewIdentifiers)},
		{in.newIndex, len(fresh), func(i int, a []any) []any {
			e := fresh[i]
			return append(a, e.attr, e.norm, e.ci)
		}},
		{in.index, len(add), func(i int, a []any) []any {
			e := add[i]
			return append(a, e.attr, e.norm, e.ci)
		}},
		{in.history, len(b.History), func(i int, a []any) []any {
			h := b.History[i]
			return append(a, box(h.CIID), h.ID, box(h.Attr), nullString(h.Old), nullString(h.New), box(h.Source), boxTime(h.Time))
		}},
		{in.newRel, len(b.NewRelations), relRow(b.NewRelations)},
		{in.seenRel, len(b.SeenRelations), relRow(b.SeenRelations)},
		{in.conflicts, len(b.Conflicts), func(i int, a []any) []any {
			c := b.Conflicts[i]
			cands, _ := json.Marshal(c.Candidates)
			if c.Candidates == nil {
				cands = []byte("[]")
			}
			item := string(c.Item)
			if item == "" {
				item = "null"
			}
			return append(a, c.ID, c.DedupKey, c.Source, c.NativeKey, c.Class, c.Ref, item, string(cands), c.Reason,
				nanos(c.Time), nanos(c.Time), int64(1))
		}},
		{in.outbox, min(1, len(b.Outbox)), func(_ int, a []any) []any {
			return append(a, outboxRow, nanos(time.Now()))
		}},
		{in.receipts, len(b.Receipts), func(i int, a []any) []any {
			r := b.Receipts[i]
			return append(a, r.Payload, r.Body, nanos(r.Created))
		}},
	}
	if len(b.Outbox) > 0 {
		outboxRow = encodeOutbox(b.Outbox)
	}
	var prog []statement
	// Replaced values leave the index before new ones enter, so that a value that only
	// changed case keeps its entry. Replacements are rare next to inserts: one statement each.
	for _, e := range drop {
		prog = append(prog, statement{"store: index", s.d.q(`DELETE FROM ci_index WHERE attr = ? AND norm = ? AND ci_id = ?`), []any{e.attr, e.norm, e.ci}})
	}
	for i, st := range steps {
		prog = s.insertRows(prog, st.in, st.n, st.row)
		if i == 0 { // after the CIs, with the other rows that reference them
			prog = insertIndexObjects(prog, objs)
		}
	}
	return prog
}

// indexObject is a new CI's search-index entries as one JSON object {attr: norm, …}.
type indexObject struct {
	ci  any // boxed once per batch (see compile)
	obj string
}

// indexObjectOf returns the JSON object of a new CI's index entries ("" when it has
// none), or false when a name or value holds a character JSON would escape (a quote, a
// backslash, a control character): such a CI's entries are written as rows, so that what
// the index holds never depends on an escaping round trip.
func indexObjectOf(attrs map[string]AttrRow) (string, bool) {
	var b []byte
	for a, v := range attrs {
		n, ok := normOf(v.Value)
		if !ok {
			continue
		}
		if needsEscape(a) || needsEscape(n) {
			return "", false
		}
		if b == nil {
			b = make([]byte, 0, 32*len(attrs))
			b = append(b, '{')
		} else {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, a...)
		b = append(b, '"', ':', '"')
		b = append(b, n...)
		b = append(b, '"')
	}
	if b == nil {
		return "", true
	}
	return string(append(b, '}')), true
}

// needsEscape tells whether s cannot go into a JSON string as it is: it holds a quote, a
// backslash or a control character, or is not UTF-8 (which SQLite's JSON parser may refuse).
func needsEscape(s string) bool {
	ascii := true
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20, c == '"', c == '\\', c == 0x7f:
			return true
		case c >= 0x80:
			ascii = false
		}
	}
	return !ascii && !utf8.ValidString(s)
}

// indexObjectTexts are the statements writing the index entries of n new CIs from their
// objects (SQLite only): each CI is two bound values — its id and its object — instead of
// three per entry. Binding a text value is most of what a row costs the driver (a C copy
// of the string, freed after the step), and a CI has about eight entries.
var indexObjectSizes = []int{64, 16, 4, 1}

var indexObjectTexts = func() map[int]string {
	m := map[int]string{}
	for _, n := range indexObjectSizes {
		m[n] = indexObjectText(n)
	}
	return m
}()

func indexObjectText(n int) string {
	var b strings.Builder
	b.WriteString("INSERT OR ROLLBACK INTO ci_index (attr, norm, ci_id) ") // see dialect.rollbackOnConflict
	for i := range n {
		if i > 0 {
			b.WriteString(" UNION ALL ")
		}
		b.WriteString("SELECT key, value, ? FROM json_each(?)")
	}
	return b.String()
}

// insertIndexObjects appends the statements writing the entries of objs with the
// prepared indexObjectText statements.
func insertIndexObjects(prog []statement, objs []indexObject) []statement {
	i := 0
	for _, size := range indexObjectSizes {
		for len(objs)-i >= size {
			args := make([]any, 0, 2*size)
			for end := i + size; i < end; i++ {
				args = append(args, objs[i].ci, objs[i].obj)
			}
			prog = append(prog, statement{"store: index", indexObjectTexts[size], args})
		}
	}
	return prog
}

// maxNorm bounds the indexed text of an attribute: longer values are not filter targets.
const maxNorm = 256

// normOf returns the text that filters and search compare for a JSON value: strings
// trimmed and lower-cased, numbers and booleans as written; false for lists, objects,
// null and long text.
func normOf(jsonValue string) (string, bool) {
	if jsonValue == "" {
		return "", false
	}
	var n string
	switch jsonValue[0] {
	case '"':
		s := jsonValue[1 : len(jsonValue)-1]
		if strings.IndexByte(s, '\\') >= 0 { // escapes: let the decoder resolve them
			// Decoded into a variable of its own: one whose address reaches Unmarshal is
			// moved to the heap, an allocation per call (3 % of an ingest's) when it was s.
			var unq string
			if err := json.Unmarshal([]byte(jsonValue), &unq); err != nil {
				return "", false
			}
			s = unq
		}
		n = strings.ToLower(strings.TrimSpace(s))
	case '[', '{', 'n':
		return "", false
	default:
		n = strings.ToLower(jsonValue)
	}
	if len(n) > maxNorm {
		return "", false
	}
	return n, true
}

func dedupe(values []string) []string {
	seen := make(map[string]struct{}, len(values))
	out := make([]string, 0, len(values))
	for _, v := range values {
		if _, ok := seen[v]; ok {
			continue
		}
		seen[v] = struct{}{}
		out = append(out, v)
	}
	return out
}
