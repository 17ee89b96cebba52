package ire

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/services/cmdb/classes"
	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// run is one attempt at ingesting a plan inside one transaction. Everything it knows is
// rebuilt when the store retries the transaction.
type run struct {
	e    *Engine
	pl   *plan
	now  time.Time
	res  []resolution // by item index
	keys map[store.Key]string
	// held lists the identifiers each CI holds: from the store, plus what this payload
	// registered.
	held map[string][]store.Key
	// names are the names of CIs an item's serial matched while their adapters did not:
	// the evidence that tells a device reporting some of its adapters from a cloned serial.
	names map[string]string
	works map[string]*work
	order []string // CI ids in first-touched order, for deterministic output
	batch store.Batch
	out   Outcome
	// after, when set, adds to the batch what the outcome announces, before it is written.
	after func(Outcome, *store.Batch) error
}

// resolution is what identification decided for an item.
type resolution struct {
	ci    string
	isNew bool
	skip  string // non-empty: not ingested, why
}

// work is one CI being reconciled: its state before, and what the payload makes of it.
type work struct {
	row      store.CIRow
	isNew    bool
	attrs    map[string]store.AttrRow
	changed  map[string]bool // attributes whose value changed
	replaced []store.AttrChange
	history  []store.HistoryRow
	refs     []string
	touched  bool // last_seen or class or stale moved: the row must be written
}

func newRun(e *Engine, pl *plan, now time.Time) *run {
	return &run{
		e: e, pl: pl, now: now,
		res:   make([]resolution, len(pl.items)),
		keys:  make(map[store.Key]string, 3*len(pl.items)),
		held:  make(map[string][]store.Key, len(pl.items)),
		works: make(map[string]*work, len(pl.items)),
		order: make([]string, 0, len(pl.items)),
	}
}

func (r *run) run(ctx context.Context, tx store.Tx) (Outcome, error) {
	for _, level := range r.pl.levels {
		if err := r.identify(ctx, tx, level); err != nil {
			return Outcome{}, err
		}
	}
	if err := r.reconcile(ctx, tx); err != nil {
		return Outcome{}, err
	}
	if err := r.relations(ctx, tx); err != nil {
		return Outcome{}, err
	}
	r.finish()
	if r.after != nil {
		if err := r.after(r.out, &r.batch); err != nil {
			return Outcome{}, err
		}
	}
	if !r.batch.Empty() {
		if err := tx.Write(ctx, &r.batch); err != nil {
			return Outcome{}, err
		}
	}
	return r.out, nil
}

// group is the keys one rule (or the native key) offers for an item.
type group struct {
	rule *classes.Rule // nil: the source's native key
	keys []store.Key
}

func (r *run) groups(it *item) []group {
	fam := it.family
	prefix := ""
	if it.parent != nil {
		prefix = r.res[it.parent.idx].ci + "|"
	}
	// Sized once: grown append by append, these were a fortieth of an ingest's allocations.
	gs := make([]group, 0, len(fam.Rules)+1)
	if it.native != "" {
		gs = append(gs, group{keys: []store.Key{{Family: fam.Name, Kind: "native:" + r.pl.source, Value: it.native}}})
	}
	for i := range fam.Rules {
		rule := &fam.Rules[i]
		g := group{rule: rule}
		if n := len(it.values[i]); n > 0 {
			g.keys = make([]store.Key, 0, n)
		}
		for _, v := range it.values[i] {
			g.keys = append(g.keys, store.Key{Family: fam.Name, Kind: rule.Name, Value: prefix + v})
		}
		gs = append(gs, g)
	}
	return gs
}

// identify resolves the items of one level (their parents are resolved already) with one
// lookup of all their identifiers.
func (r *run) identify(ctx context.Context, tx store.Tx, level []*item) error {
	var lookup []store.Key
	gs := make(map[*item][]group, len(level))
	for _, it := range level {
		if it.parent != nil && r.res[it.parent.idx].skip != "" {
			r.res[it.idx].skip = fmt.Sprintf("parent %q was not ingested", it.parent.raw.Ref)
			r.out.Skipped = append(r.out.Skipped, Skip{Ref: it.raw.Ref, Reason: r.res[it.idx].skip})
			continue
		}
		gs[it] = r.groups(it)
		for _, g := range gs[it] {
			for _, k := range g.keys {
				if _, ok := r.keys[k]; !ok {
					lookup = append(lookup, k)
				}
			}
		}
	}
	if len(lookup) > 0 {
		found, err := tx.LookupIdentifiers(ctx, lookup)
		if err != nil {
			return err
		}
		for k, ci := range found {
			r.keys[k] = ci
		}
		// Shared-value detection and the single-valued checks compare with what the
		// candidates hold; fetch that for all of them at once.
		var cands []string
		for _, ci := range found {
			if _, ok := r.held[ci]; ci != "" && !ok {
				cands = append(cands, ci)
			}
		}
		if len(cands) > 0 {
			held, err := tx.IdentifiersOf(ctx, cands)
			if err != nil {
				return err
			}
			for _, ci := range cands {
				r.held[ci] = held[ci]
			}
		}
		if err := r.loadNames(ctx, tx, level, gs); err != nil {
			return err
		}
	}
	for _, it := range level {
		if g, ok := gs[it]; ok {
			r.resolve(it, g)
		}
	}
	return nil
}

// owner returns who holds a key: a CI id, "" for a value known shared, ok=false if nobody.
func (r *run) owner(k store.Key) (string, bool) {
	ci, ok := r.keys[k]
	return ci, ok
}

// resolve applies the family's rules to one item, strongest first. See the comments in
// classes/model/identification.yaml for what each rule flag means.
func (r *run) resolve(it *item, gs []group) {
	// usable[i] are the keys of group i that can identify: not known shared.
	// Usually all of them: then usable[i] is g.keys itself (read only below), not a copy —
	// copies were a fiftieth of an ingest's allocations.
	usable := make([][]store.Key, len(gs))
	shared := func(k store.Key) bool { ci, ok := r.owner(k); return ok && ci == "" }
	for i, g := range gs {
		usable[i] = g.keys
		for j, k := range g.keys {
			if !shared(k) {
				continue
			}
			// shared by several devices: identifies nothing
			u := append(make([]store.Key, 0, len(g.keys)-1), g.keys[:j]...)
			for _, k := range g.keys[j+1:] {
				if !shared(k) {
					u = append(u, k)
				}
			}
			usable[i] = u
			break
		}
	}
	// childKeys are the identifiers the item takes from its children (adapter MACs); they
	// are the evidence that tells a shared serial from a real match.
	var childKeys []store.Key
	for i, g := range gs {
		if g.rule != nil && g.rule.Children != nil {
			childKeys = append(childKeys, usable[i]...)
		}
	}

	chosen, chosenGroup := "", -1
	var move []store.Key // reassignable keys the item takes over from another CI
	for gi := 0; gi < len(gs) && chosen == ""; gi++ {
		g := gs[gi]
		owners := r.owners(usable[gi])
		if len(owners) == 0 {
			continue
		}
		if len(owners) > 1 {
			r.conflict(it, owners, fmt.Sprintf("%s matches %d different CIs", ruleName(g), len(owners)))
			return
		}
		x := owners[0]
		if g.rule != nil && g.rule.DetectShared && len(childKeys) > 0 {
			theirs := r.heldLike(x, childKeys)
			if len(theirs) > 0 && !overlaps(theirs, childKeys) && !r.sameName(it, x) {
				// Same value, different adapters: the value is a placeholder several devices
				// report (cloned BIOS, OEM default). It stops identifying anyone, x included.
				for _, k := range usable[gi] {
					r.keys[k] = ""
					r.held[x] = slices.DeleteFunc(r.held[x], func(h store.Key) bool { return h == k })
					r.batch.SharedIdentifiers = append(r.batch.SharedIdentifiers, k)
				}
				usable[gi] = nil
				continue
			}
		}
		if strong := r.contradicts(x, gs[:gi], usable[:gi]); strong != "" {
			if g.rule != nil && g.rule.Reassignable {
				// A reused name and IP on a device whose serial differs: a new device took
				// them over.
				move = append(move, usable[gi]...)
				break
			}
			r.conflict(it, []string{x}, fmt.Sprintf("%s matches %s but its %s differs", ruleName(g), x, strong))
			return
		}
		chosen, chosenGroup = x, gi
	}

	// Any other rule tying the item to another CI is a contradiction, not a reason to pick.
	for gi, g := range gs {
		if gi == chosenGroup {
			continue
		}
		for _, k := range usable[gi] {
			o, ok := r.owner(k)
			if !ok || o == chosen || slices.Contains(move, k) {
				continue
			}
			if g.rule != nil && g.rule.Reassignable {
				move = append(move, k)
				continue
			}
			if chosen == "" {
				// A weaker rule found an owner after a reassignable rule decided "new device".
				r.conflict(it, []string{o}, fmt.Sprintf("%s is held by %s", ruleName(g), o))
				return
			}
			r.conflict(it, []string{chosen, o}, fmt.Sprintf("%s matches %s but %s matches %s", ruleName(gs[chosenGroup]), chosen, ruleName(g), o))
			return
		}
	}

	var all []store.Key
	for _, u := range usable {
		all = append(all, u...)
	}
	if len(all) == 0 {
		r.conflict(it, nil, "no usable identifier: every value it offers is shared by several devices")
		return
	}
	res := &r.res[it.idx]
	if chosen == "" {
		res.ci, res.isNew = newID(), true
	} else {
		res.ci = chosen
	}
	for _, k := range all {
		o, ok := r.owner(k)
		switch {
		case ok && o == res.ci:
			continue
		case ok && slices.Contains(move, k):
			r.batch.MovedIdentifiers = append(r.batch.MovedIdentifiers, store.Identifier{Key: k, CIID: res.ci})
			r.held[o] = slices.DeleteFunc(r.held[o], func(h store.Key) bool { return h == k })
		case ok:
			continue // unreachable: owned keys of other CIs were either moved or a conflict
		default:
			r.batch.NewIdentifiers = append(r.batch.NewIdentifiers, store.Identifier{Key: k, CIID: res.ci})
		}
		r.keys[k] = res.ci
		r.held[res.ci] = append(r.held[res.ci], k)
	}
}

// loadNames reads the names of the CIs that detect_shared rules of the level's items
// match, when the item offers child identifiers (adapter MACs) none of which the CI holds:
// resolve tells a shared serial from a partial view of the same device by them (sameName).
// Candidates were prefetched with their batch, so this rarely reads the store.
func (r *run) loadNames(ctx context.Context, tx store.Tx, level []*item, gs map[*item][]group) error {
	var want []string
	for _, it := range level {
		g, ok := gs[it]
		if !ok || !hasName(it) {
			continue
		}
		var childKeys []store.Key
		for _, x := range g {
			if x.rule != nil && x.rule.Children != nil {
				childKeys = append(childKeys, x.keys...)
			}
		}
		if len(childKeys) == 0 {
			continue
		}
		for _, x := range g {
			if x.rule == nil || !x.rule.DetectShared {
				continue
			}
			for _, k := range x.keys {
				ci, ok := r.keys[k]
				if _, known := r.names[ci]; !ok || ci == "" || known || slices.Contains(want, ci) {
					continue
				}
				if theirs := r.heldLike(ci, childKeys); len(theirs) > 0 && !overlaps(theirs, childKeys) {
					want = append(want, ci)
				}
			}
		}
	}
	if len(want) == 0 {
		return nil
	}
	states, err := tx.LoadCIs(ctx, want)
	if err != nil {
		return err
	}
	if r.names == nil {
		r.names = make(map[string]string, len(states))
	}
	for id, st := range states {
		r.names[id] = st.Name
	}
	return nil
}

// hasName tells whether an item carries a name that can tell devices apart.
func hasName(it *item) bool {
	av, ok := it.attrs["name"]
	return ok && classes.IdentifierValue(av.canonical) != ""
}

// sameName tells whether item it names the device CI x is: the same serial, the same name,
// other adapters is one device reported in parts (an SCCM import sends one row per network
// adapter), not a serial shared by clones. A junk name ("localhost", say, when listed)
// tells nothing.
func (r *run) sameName(it *item, x string) bool {
	av, ok := it.attrs["name"]
	if !ok {
		return false
	}
	v := classes.IdentifierValue(av.canonical)
	if v == "" || r.e.model.IsJunk(v) {
		return false
	}
	name, ok := r.names[x]
	return ok && classes.IdentifierValue(name) == v
}

// owners returns the distinct CIs holding keys, sorted.
func (r *run) owners(keys []store.Key) []string {
	var out []string
	for _, k := range keys {
		if ci, ok := r.owner(k); ok && ci != "" && !slices.Contains(out, ci) {
			out = append(out, ci)
		}
	}
	sort.Strings(out)
	return out
}

// heldLike returns the identifiers x holds of the same family and kind as like.
func (r *run) heldLike(x string, like []store.Key) []store.Key {
	var out []store.Key
	for _, h := range r.held[x] {
		for _, l := range like {
			if h.Family == l.Family && h.Kind == l.Kind {
				out = append(out, h)
				break
			}
		}
	}
	return out
}

func overlaps(a, b []store.Key) bool {
	for _, k := range a {
		if slices.Contains(b, k) {
			return true
		}
	}
	return false
}

// contradicts names the first single-valued identifier (a serial number) that the item and
// CI x both have with different values: then x is another device, whatever weaker rules say.
func (r *run) contradicts(x string, stronger []group, usable [][]store.Key) string {
	for i, g := range stronger {
		if g.rule == nil || !g.rule.Single || len(usable[i]) == 0 {
			continue
		}
		theirs := r.heldLike(x, usable[i])
		if len(theirs) > 0 && !overlaps(theirs, usable[i]) {
			return g.rule.Name
		}
	}
	return ""
}

func ruleName(g group) string {
	if g.rule == nil {
		return "native key"
	}
	return "rule " + g.rule.Name
}

// conflict records that an item was not ingested, once per distinct conflict.
func (r *run) conflict(it *item, candidates []string, reason string) {
	r.res[it.idx].skip = reason
	r.out.Conflicts = append(r.out.Conflicts, ConflictReport{Ref: it.raw.Ref, Class: it.class.Name, Reason: reason, Candidates: candidates})
	raw, err := json.Marshal(it.raw)
	if err != nil {
		raw = []byte("null")
	}
	h := sha256.New()
	for _, part := range []string{r.pl.source, it.class.Name, it.raw.Ref, it.native, reason, strings.Join(candidates, ","), string(raw)} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	r.batch.Conflicts = append(r.batch.Conflicts, store.ConflictRow{
		ID:         newID(),
		DedupKey:   hex.EncodeToString(h.Sum(nil)),
		Source:     r.pl.source,
		NativeKey:  it.native,
		Class:      it.class.Name,
		Ref:        it.raw.Ref,
		Item:       raw,
		Candidates: candidates,
		Reason:     reason,
		Time:       r.pl.observed,
	})
}

// change notes that attr of an existing CI changed; a new CI is all change, and the store
// indexes its attributes whole.
func (w *work) change(attr string, c *store.AttrChange) {
	if w.isNew {
		return
	}
	if w.changed == nil {
		w.changed = map[string]bool{}
	}
	w.changed[attr] = true
	if c != nil {
		w.replaced = append(w.replaced, *c)
	}
}

// reconcile merges every identified item into its CI, by attribute precedence.
func (r *run) reconcile(ctx context.Context, tx store.Tx) error {
	var existing []string
	seen := make(map[string]bool, len(r.pl.items))
	for _, it := range r.pl.items {
		res := r.res[it.idx]
		if res.skip == "" && !res.isNew && !seen[res.ci] {
			seen[res.ci] = true
			existing = append(existing, res.ci)
		}
	}
	states := map[string]*store.CIState{}
	if len(existing) > 0 {
		var err error
		if states, err = tx.LoadCIs(ctx, existing); err != nil {
			return err
		}
	}
	for _, it := range r.pl.items {
		res := r.res[it.idx]
		if res.skip != "" {
			continue
		}
		w := r.works[res.ci]
		if w == nil {
			if res.isNew {
				w = &work{isNew: true, row: store.CIRow{ID: res.ci, Class: it.class.Name, Created: r.now, Updated: r.now,
					LastSeen: r.pl.observed, OperationalStatus: "operational"}, attrs: make(map[string]store.AttrRow, len(it.attrs))}
			} else {
				st, ok := states[res.ci]
				if !ok {
					// Identifiers point at a CI that is not there: only a manual deletion
					// racing with us does that. Fail so that redelivery tries again.
					return fmt.Errorf("ire: CI %s held by identifiers is missing", res.ci)
				}
				w = &work{row: st.CIRow, attrs: st.Attrs}
			}
			r.works[res.ci] = w
			r.order = append(r.order, res.ci)
		}
		w.refs = append(w.refs, it.raw.Ref)
		r.merge(w, it)
	}
	return nil
}

// merge applies one item to its CI.
func (r *run) merge(w *work, it *item) {
	src, obs := r.pl.source, r.pl.observed
	prec := r.e.prec
	strJSON := func(s string) *string { b, _ := json.Marshal(s); v := string(b); return &v }

	// A new CI gets one "created" history row (written by finish); per-attribute rows
	// start with its first change.
	record := func(h store.HistoryRow) {
		if !w.isNew {
			w.history = append(w.history, h)
		}
	}
	// weaker: the item's class evidence ranks below the CI's (an SNMP guess about a machine
	// already classified by a credentialed probe on another of its addresses): neither its
	// class nor its evidence attributes replace the CI's.
	weaker := evidenceRank(it.attrs[EvidenceAttr].json) < evidenceRank(w.attrs[EvidenceAttr].Value)
	if it.class.Name != w.row.Class && r.classWins(w, it.class.Name, weaker) {
		record(store.HistoryRow{Attr: "class", Old: strJSON(w.row.Class), New: strJSON(it.class.Name), Source: src, Time: obs})
		if !w.isNew {
			r.e.log.Info("ire: CI reclassified", "ci", w.row.ID, "from", w.row.Class, "to", it.class.Name, "source", src,
				"evidence", it.attrs[EvidenceAttr].json, "by", it.attrs[EvidenceSourceAttr].json)
		}
		w.row.Class = it.class.Name
		w.change("class", nil)
		w.touched = true
	}
	if !w.isNew && w.row.Stale && obs.After(w.row.LastSeen) {
		f, t := "false", "true"
		w.history = append(w.history, store.HistoryRow{Attr: "stale", Old: &t, New: &f, Source: src, Time: obs})
		w.row.Stale = false
		w.change("stale", nil)
		w.touched = true
	}
	if obs.After(w.row.LastSeen) {
		w.row.LastSeen = obs
		w.touched = true
	}

	names := make([]string, 0, len(it.attrs))
	for a := range it.attrs {
		names = append(names, a)
	}
	sort.Strings(names)
	for _, a := range names {
		if weaker && (a == EvidenceAttr || a == EvidenceSourceAttr) {
			continue
		}
		v := it.attrs[a]
		cur, ok := w.attrs[a]
		next := store.AttrRow{CIID: w.row.ID, Attr: a, Value: v.json, Source: src, Observed: obs}
		switch {
		case !ok:
			if !w.isNew { // as record does, before nv is made: it would escape for nothing
				nv := v.json
				w.history = append(w.history, store.HistoryRow{Attr: a, New: &nv, Source: src, Time: obs})
			}
			w.change(a, &store.AttrChange{CIID: w.row.ID, Attr: a, New: v.json})
		case cur.Value == v.json:
			// Same value: a stronger source takes ownership (so weaker ones cannot change it
			// later); otherwise nothing to write, which keeps re-ingest free of writes.
			if prec.Rank(a, src) <= prec.Rank(a, cur.Source) {
				continue
			}
			w.touched = true
		default:
			rs, rc := prec.Rank(a, src), prec.Rank(a, cur.Source)
			if rs < rc || (rs == rc && obs.Before(cur.Observed)) {
				continue // weaker source, or an older observation delivered late
			}
			old, nv := cur.Value, v.json
			record(store.HistoryRow{Attr: a, Old: &old, New: &nv, Source: src, Time: obs})
			w.change(a, &store.AttrChange{CIID: w.row.ID, Attr: a, Old: cur.Value, New: v.json})
		}
		w.attrs[a] = next
	}
	if n, ok := w.attrs["name"]; ok {
		if name, ok := jsonString(n.Value); ok && name != w.row.Name {
			w.row.Name = name
			w.touched = true
		}
	}
}

// jsonString decodes a JSON string value; false when v is not one. Plain strings (no
// escapes), as names are, are sliced out without the decoder.
func jsonString(v string) (string, bool) {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' && strings.IndexByte(v, '\\') < 0 {
		return v[1 : len(v)-1], true
	}
	var s string
	if json.Unmarshal([]byte(v), &s) != nil {
		return "", false
	}
	return s, true
}

// EvidenceAttr is the attribute saying what a CI's class rests on (a source may set it, as
// discovery does: "credentialed" OS probe > "snmp" system group > "ports"); EvidenceSourceAttr
// says which probe of which address gave it.
const (
	EvidenceAttr       = "class_evidence"
	EvidenceSourceAttr = "class_evidence_source"
)

// evidenceRank ranks a JSON class_evidence value; 0 when absent or unknown (which never
// blocks anything: sources without evidence keep the rules below).
func evidenceRank(v string) int {
	switch v {
	case `"credentialed"`:
		return 3
	case `"snmp"`:
		return 2
	case `"ports"`:
		return 1
	}
	return 0
}

// classWins decides whether an item's class replaces the CI's: a more specific class
// always does (server → linux_server), a more general one never does, and a different
// branch (linux_server vs windows_server) only when the item's evidence is not weaker than
// the CI's and its source ranks at least as high as every source that set one of the CI's
// attributes.
func (r *run) classWins(w *work, class string, weaker bool) bool {
	m := r.e.model
	switch {
	case m.IsA(class, w.row.Class):
		return true
	case m.IsA(w.row.Class, class), weaker:
		return false
	}
	mine := r.e.prec.Rank(classes.ClassAttribute, r.pl.source)
	for _, a := range w.attrs {
		if r.e.prec.Rank(classes.ClassAttribute, a.Source) > mine {
			return false
		}
	}
	return true
}

// CreatedAttr is the history attribute of a CI's creation; its new value is
// {"class": …}. The first values are not repeated there: each attribute's first change
// row holds it as its old value, and an attribute never changed still has it.
const CreatedAttr = "created"

func createdRow(w *work, pl *plan) store.HistoryRow {
	cls, _ := json.Marshal(w.row.Class)
	v := `{"class":` + string(cls) + `}`
	return store.HistoryRow{Attr: CreatedAttr, New: &v, Source: pl.source, Time: pl.observed}
}

// relations resolves payload relations and parent links to CI ids and writes the new ones.
func (r *run) relations(ctx context.Context, tx store.Tx) error {
	type triple struct{ typ, from, to string }
	want := make([]triple, 0, len(r.pl.relations)+len(r.pl.items))
	seen := make(map[triple]bool, cap(want))
	addRel := func(typ string, from, to *item) {
		rf, rt := r.res[from.idx], r.res[to.idx]
		if rf.skip != "" || rt.skip != "" || rf.ci == rt.ci {
			return
		}
		t := triple{typ, rf.ci, rt.ci}
		if !seen[t] {
			seen[t] = true
			want = append(want, t)
		}
	}
	for _, it := range r.pl.items {
		if it.parent == nil || it.family.ParentRelation == nil {
			continue
		}
		pr := it.family.ParentRelation
		if pr.Direction == classes.ParentToChild {
			addRel(pr.Type, it.parent, it)
		} else {
			addRel(pr.Type, it, it.parent)
		}
	}
	for _, rel := range r.pl.relations {
		addRel(rel.typ, rel.from, rel.to)
	}
	if len(want) == 0 {
		return nil
	}
	var from []string
	fromSeen := map[string]bool{}
	for _, t := range want {
		if w := r.works[t.from]; w != nil && !w.isNew && !fromSeen[t.from] {
			fromSeen[t.from] = true
			from = append(from, t.from)
		}
	}
	have := map[triple]store.RelationRow{}
	if len(from) > 0 {
		rows, err := tx.LoadRelations(ctx, from)
		if err != nil {
			return err
		}
		for _, row := range rows {
			have[triple{row.Type, row.From, row.To}] = row
		}
	}
	r.batch.NewRelations = slices.Grow(r.batch.NewRelations, len(want))
	r.out.Relations = slices.Grow(r.out.Relations, len(want))
	for _, t := range want {
		if row, ok := have[t]; ok {
			if r.pl.observed.After(row.LastSeen) {
				row.LastSeen = r.pl.observed
				r.batch.SeenRelations = append(r.batch.SeenRelations, row)
			}
			continue
		}
		r.batch.NewRelations = append(r.batch.NewRelations, store.RelationRow{
			ID: newID(), Type: t.typ, From: t.from, To: t.to,
			Source: r.pl.source, Created: r.now, LastSeen: r.pl.observed,
		})
		r.out.Relations = append(r.out.Relations, RelationChange{Type: t.typ, From: t.from, To: t.to})
	}
	return nil
}

// finish turns the reconciled CIs into the batch and the outcome.
func (r *run) finish() {
	nHist := 0
	for _, id := range r.order {
		nHist += len(r.works[id].history) + 1
	}
	b := &r.batch
	b.History = slices.Grow(b.History, nHist)
	b.NewCIs = slices.Grow(b.NewCIs, len(r.order))
	r.out.Created = slices.Grow(r.out.Created, len(r.order))
	for _, id := range r.order {
		w := r.works[id]
		var changedAttrs []string
		if len(w.changed) > 0 {
			changedAttrs = make([]string, 0, len(w.changed))
			for a := range w.changed {
				changedAttrs = append(changedAttrs, a)
			}
			sort.Strings(changedAttrs)
		}
		ch := Change{ID: id, Class: w.row.Class, Refs: w.refs, Attributes: changedAttrs}
		state := store.CIState{CIRow: w.row, Attrs: w.attrs}
		switch {
		case w.isNew:
			b.NewCIs = append(b.NewCIs, state)
			r.out.Created = append(r.out.Created, ch)
			w.history = append(w.history, createdRow(w, r.pl))
		case len(w.changed) > 0:
			state.Updated = r.now
			b.ChangedCIs = append(b.ChangedCIs, state)
			r.out.Updated = append(r.out.Updated, ch)
		default:
			if w.touched {
				b.ChangedCIs = append(b.ChangedCIs, state)
			}
			r.out.Unchanged = append(r.out.Unchanged, ch)
		}
		b.AttrChanges = append(b.AttrChanges, collapse(w.replaced)...)
		for _, h := range w.history {
			h.ID = newID()
			h.CIID = id
			b.History = append(b.History, h)
		}
	}
}

// collapse keeps one change per attribute, from its first old value to its last new one:
// two items of a payload may change the same attribute of one CI.
func collapse(changes []store.AttrChange) []store.AttrChange {
	dup := false
	for i := range changes {
		for j := range i {
			dup = dup || changes[i].Attr == changes[j].Attr
		}
	}
	if !dup {
		return changes
	}
	out := make([]store.AttrChange, 0, len(changes))
	at := map[string]int{}
	for _, c := range changes {
		if i, ok := at[c.Attr]; ok {
			out[i].New = c.New
			continue
		}
		at[c.Attr] = len(out)
		out = append(out, c)
	}
	return slices.DeleteFunc(out, func(c store.AttrChange) bool { return c.Old == c.New })
}
