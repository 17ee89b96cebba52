package ire

import (
	"context"
	"maps"
	"slices"

	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// overlay is the store.Tx the payloads of one batch are reconciled through: it answers
// reads from what it read before plus what the batch wrote so far, and keeps the writes
// until flush writes them all with one multi-row statement per table.
//
// Why: an import sends one row per payload. Reconciled one by one against the database,
// each payload costs a lookup and half a dozen INSERT statements, and the statements, not
// the reconciliation, bound the throughput; through the overlay, a batch of hundreds of
// payloads costs one lookup per identifier kind (prefetch) and one statement per table.
//
// The payloads see exactly what they would see one after the other in one transaction:
// every read of the database is completed with the batch's own writes, and the writes are
// folded so that what flush writes is the end state (a CI created then updated in the batch
// is inserted once, with its last attributes; an identifier created then marked shared is
// inserted shared; the search index follows each attribute from its first old value to its
// last new one).
type overlay struct {
	tx store.Tx

	keys map[store.Key]keyState
	held map[string][]store.Key // complete identifier sets of CIs, once read
	// wrote are the identifiers the batch gave to each CI (to complete a later read).
	wrote map[string][]store.Key
	cis   map[string]*ciState
	// rels are the relations the batch read or wrote, relsFrom their keys by from CI (one
	// map for all, not one per CI: a map per CI was a twentieth of an ingest's allocations).
	rels     map[relKey]relState
	relsFrom map[string][]relKey
	// relsRead: rels holds every relation of from (read from the database).
	relsRead map[string]bool
	receipts map[string]*string // nil: known absent

	// Pending writes, in first-written order.
	newKeys, movedKeys []store.Key
	keyIsNew           map[store.Key]bool
	keyIsMoved         map[store.Key]bool
	ciOrder            []string
	attrChanges        []store.AttrChange
	attrAt             map[[2]string]int
	history            []store.HistoryRow
	relOrder           []relKey // written relations, in first-written order
	conflicts          []store.ConflictRow
	conflictAt         map[string]int
	outbox             []store.OutboxMsg
	receiptRows        []store.ReceiptRow
}

// keyState is what the overlay knows of an identifier: its holder ("" = shared) when it
// exists, or that it does not.
type keyState struct {
	ci     string
	exists bool
}

type ciState struct {
	st    store.CIState
	isNew bool // created in this batch: inserted at flush
	dirty bool // existing and written: upserted at flush
}

type relKey struct{ typ, from, to string }

type relState struct {
	row     store.RelationRow
	isNew   bool // created in this batch: inserted at flush
	written bool // in relOrder: written at flush
}

// newOverlay sizes its maps for a batch of plans (nil entries allowed): most of a batch's
// items become or find one CI each, with a few identifiers and their relations, and maps
// grown one doubling at a time were a tenth of an ingest's allocations.
func newOverlay(tx store.Tx, plans []*plan) *overlay { return newOverlaySized(tx, plans, 1) }

// newOverlaySized sizes the maps for times as many items as plans hold: a chain's overlay
// (Chain) holds what all its batches wrote, and maps that grew batch after batch were 1–2 %
// of the engine's CPU (rehashing).
func newOverlaySized(tx store.Tx, plans []*plan, times int) *overlay {
	items, rels := 0, 0
	for _, pl := range plans {
		if pl != nil {
			items += len(pl.items)
			rels += len(pl.relations) + len(pl.items) // parent links are relations too
		}
	}
	items, rels = items*max(1, times), rels*max(1, times)
	return &overlay{
		tx:         tx,
		keys:       make(map[store.Key]keyState, 3*items),
		held:       map[string][]store.Key{},
		wrote:      make(map[string][]store.Key, items),
		cis:        make(map[string]*ciState, items),
		rels:       make(map[relKey]relState, rels),
		relsFrom:   make(map[string][]relKey, items),
		relsRead:   map[string]bool{},
		receipts:   make(map[string]*string, len(plans)),
		keyIsNew:   make(map[store.Key]bool, 3*items),
		keyIsMoved: map[store.Key]bool{},
		attrAt:     map[[2]string]int{},
		conflictAt: map[string]int{},
		ciOrder:    make([]string, 0, items),
		newKeys:    make([]store.Key, 0, 3*items),
		relOrder:   make([]relKey, 0, rels),
		// A new CI has a history row and a change event; every payload its receipt.
		history: make([]store.HistoryRow, 0, items),
		outbox:  make([]store.OutboxMsg, 0, items+len(plans)),
	}
}

func (o *overlay) LookupIdentifiers(ctx context.Context, keys []store.Key) (map[store.Key]string, error) {
	var missing []store.Key
	for _, k := range keys {
		if _, ok := o.keys[k]; !ok {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		found, err := o.tx.LookupIdentifiers(ctx, missing)
		if err != nil {
			return nil, err
		}
		for _, k := range missing {
			ci, ok := found[k]
			o.keys[k] = keyState{ci: ci, exists: ok}
		}
	}
	out := make(map[store.Key]string, len(keys))
	for _, k := range keys {
		if s := o.keys[k]; s.exists {
			out[k] = s.ci
		}
	}
	return out, nil
}

func (o *overlay) IdentifiersOf(ctx context.Context, ciIDs []string) (map[string][]store.Key, error) {
	var missing []string
	for _, id := range ciIDs {
		if _, ok := o.held[id]; !ok && !slices.Contains(missing, id) {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		db, err := o.tx.IdentifiersOf(ctx, missing)
		if err != nil {
			return nil, err
		}
		for _, id := range missing {
			var keys []store.Key
			for _, k := range db[id] {
				s, known := o.keys[k]
				if known && s.exists && s.ci != id {
					continue // the batch moved it away or found it shared
				}
				if !known {
					o.keys[k] = keyState{ci: id, exists: true}
				}
				keys = append(keys, k)
			}
			for _, k := range o.wrote[id] {
				if o.keys[k].ci == id && !slices.Contains(keys, k) {
					keys = append(keys, k)
				}
			}
			o.held[id] = keys
		}
	}
	out := make(map[string][]store.Key, len(ciIDs))
	for _, id := range ciIDs {
		if keys := o.held[id]; len(keys) > 0 {
			out[id] = slices.Clone(keys)
		}
	}
	return out, nil
}

func (o *overlay) LoadCIs(ctx context.Context, ids []string) (map[string]*store.CIState, error) {
	var missing []string
	for _, id := range ids {
		if _, ok := o.cis[id]; !ok {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		db, err := o.tx.LoadCIs(ctx, missing)
		if err != nil {
			return nil, err
		}
		for id, st := range db {
			o.cis[id] = &ciState{st: *st}
		}
	}
	out := make(map[string]*store.CIState, len(ids))
	for _, id := range ids {
		if c, ok := o.cis[id]; ok {
			// A copy: the engine reconciles into the state it gets.
			st := c.st
			st.Attrs = maps.Clone(c.st.Attrs)
			out[id] = &st
		}
	}
	return out, nil
}

func (o *overlay) LoadRelations(ctx context.Context, fromIDs []string) ([]store.RelationRow, error) {
	var missing []string
	for _, id := range fromIDs {
		if !o.relsRead[id] && !slices.Contains(missing, id) {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		rows, err := o.tx.LoadRelations(ctx, missing)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			k := relKey{r.Type, r.From, r.To}
			if _, ok := o.rels[k]; ok {
				continue // the batch's row is newer
			}
			o.rels[k] = relState{row: r}
			o.relsFrom[r.From] = append(o.relsFrom[r.From], k)
		}
		for _, id := range missing {
			o.relsRead[id] = true
		}
	}
	var out []store.RelationRow
	for _, id := range dedupeIDs(fromIDs) {
		for _, k := range o.relsFrom[id] {
			out = append(out, o.rels[k].row)
		}
	}
	return out, nil
}

// putRel notes a relation the batch writes: new (inserted) or seen again (last_seen).
func (o *overlay) putRel(r store.RelationRow, isNew bool) {
	k := relKey{r.Type, r.From, r.To}
	st, ok := o.rels[k]
	if !ok {
		from := o.relsFrom[r.From]
		if from == nil {
			// Room for a few: a CI's relations are appended one by one, and a slice grown
			// from nil was three allocations for the usual three.
			from = make([]relKey, 0, 4)
		}
		o.relsFrom[r.From] = append(from, k)
	}
	if !st.written {
		st.written = true
		o.relOrder = append(o.relOrder, k)
	}
	st.row, st.isNew = r, st.isNew || isNew
	o.rels[k] = st
}

func (o *overlay) LoadReceipts(ctx context.Context, keys []string) (map[string]string, error) {
	var missing []string
	for _, k := range keys {
		if _, ok := o.receipts[k]; !ok {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		db, err := o.tx.LoadReceipts(ctx, missing)
		if err != nil {
			return nil, err
		}
		for _, k := range missing {
			if body, ok := db[k]; ok {
				o.receipts[k] = &body
			} else {
				o.receipts[k] = nil
			}
		}
	}
	out := map[string]string{}
	for _, k := range keys {
		if b := o.receipts[k]; b != nil {
			out[k] = *b
		}
	}
	return out, nil
}

// Write folds a payload's batch into the pending writes; nothing reaches the database
// before flush. It takes the batch's CI states as they are, attribute maps included: a
// run writes its batch once, as its last act, and every read hands out copies.
func (o *overlay) Write(_ context.Context, b *store.Batch) error {
	for _, c := range b.NewCIs {
		o.cis[c.ID] = &ciState{st: c, isNew: true}
		o.ciOrder = append(o.ciOrder, c.ID)
	}
	for _, c := range b.ChangedCIs {
		cur, ok := o.cis[c.ID]
		switch {
		case ok && cur.isNew:
			cur.st = c // still inserted once, as it ends
		case ok && cur.dirty:
			cur.st = c
		default:
			o.cis[c.ID] = &ciState{st: c, dirty: true}
			o.ciOrder = append(o.ciOrder, c.ID)
		}
	}
	for _, c := range b.AttrChanges {
		if cur, ok := o.cis[c.CIID]; ok && cur.isNew {
			continue // a new CI's index entries are made from its final attributes
		}
		k := [2]string{c.CIID, c.Attr}
		if i, ok := o.attrAt[k]; ok {
			o.attrChanges[i].New = c.New
			continue
		}
		o.attrAt[k] = len(o.attrChanges)
		o.attrChanges = append(o.attrChanges, c)
	}
	for _, k := range b.SharedIdentifiers {
		o.setKey(k, "")
	}
	for _, id := range b.MovedIdentifiers {
		o.setKey(id.Key, id.CIID)
	}
	for _, id := range b.NewIdentifiers {
		o.setKey(id.Key, id.CIID)
	}
	o.history = append(o.history, b.History...)
	for _, r := range b.NewRelations {
		o.putRel(r, true)
	}
	for _, r := range b.SeenRelations {
		o.putRel(r, false)
	}
	for _, c := range b.Conflicts {
		if i, ok := o.conflictAt[c.DedupKey]; ok {
			if c.Time.After(o.conflicts[i].Time) {
				o.conflicts[i].Time, o.conflicts[i].Item, o.conflicts[i].Candidates = c.Time, c.Item, c.Candidates
			}
			continue
		}
		o.conflictAt[c.DedupKey] = len(o.conflicts)
		o.conflicts = append(o.conflicts, c)
	}
	o.outbox = append(o.outbox, b.Outbox...)
	for _, r := range b.Receipts {
		body := r.Body
		o.receipts[r.Payload] = &body
		o.receiptRows = append(o.receiptRows, r)
	}
	return nil
}

// setKey gives k to ci ("" = shared), keeping the known identifier sets in step.
func (o *overlay) setKey(k store.Key, ci string) {
	prev := o.keys[k]
	switch {
	case o.keyIsNew[k] || o.keyIsMoved[k]:
	case prev.exists:
		o.keyIsMoved[k] = true
		o.movedKeys = append(o.movedKeys, k)
	default:
		o.keyIsNew[k] = true
		o.newKeys = append(o.newKeys, k)
	}
	if prev.exists && prev.ci != "" && prev.ci != ci {
		if h, ok := o.held[prev.ci]; ok {
			o.held[prev.ci] = slices.DeleteFunc(h, func(x store.Key) bool { return x == k })
		}
	}
	o.keys[k] = keyState{ci: ci, exists: true}
	if ci != "" {
		o.wrote[ci] = append(o.wrote[ci], k)
		if h, ok := o.held[ci]; ok && !slices.Contains(h, k) {
			o.held[ci] = append(h, k)
		}
	}
}

// flush writes the batch's end state (what a partial flush left) in one store Write.
func (o *overlay) flush(ctx context.Context) error { return o.write(ctx, true) }

// flushPart writes what the batch changed so far, except its conflicts, outbox messages
// and receipts, which flush writes once at the end (a conflict met twice in a batch counts
// once; a batch's messages share one outbox row). Later writes of what it wrote become
// updates: a CI inserted here is upserted if a later payload changes it, an identifier
// moved, a relation seen again. What the overlay answers reads with is unchanged.
//
// Why: through a pipelined store (store.Pipelined) the writes run on the writer while the
// next payloads are reconciled, instead of all at the end.
func (o *overlay) flushPart(ctx context.Context) error { return o.write(ctx, false) }

// pending is how many CIs and relations the next flush would write.
func (o *overlay) pending() int { return len(o.ciOrder) + len(o.relOrder) }

func (o *overlay) write(ctx context.Context, final bool) error {
	b := store.Batch{History: o.history}
	if final {
		b.Conflicts, b.Outbox, b.Receipts = o.conflicts, o.outbox, o.receiptRows
	}
	b.NewCIs = make([]store.CIState, 0, len(o.ciOrder))
	b.NewIdentifiers = make([]store.Identifier, 0, len(o.newKeys))
	b.NewRelations = make([]store.RelationRow, 0, len(o.relOrder))
	for _, id := range o.ciOrder {
		c := o.cis[id]
		if c.isNew {
			b.NewCIs = append(b.NewCIs, c.st)
		} else {
			b.ChangedCIs = append(b.ChangedCIs, c.st)
		}
	}
	for _, c := range o.attrChanges {
		if c.Old != c.New {
			b.AttrChanges = append(b.AttrChanges, c)
		}
	}
	for _, k := range o.newKeys {
		b.NewIdentifiers = append(b.NewIdentifiers, store.Identifier{Key: k, CIID: o.keys[k].ci})
	}
	for _, k := range o.movedKeys {
		// The upsert gives the key its holder, or NULL (shared) when the holder is "".
		b.MovedIdentifiers = append(b.MovedIdentifiers, store.Identifier{Key: k, CIID: o.keys[k].ci})
	}
	for _, k := range o.relOrder {
		st := o.rels[k]
		r := st.row
		if st.isNew {
			b.NewRelations = append(b.NewRelations, r)
		} else {
			b.SeenRelations = append(b.SeenRelations, r)
		}
	}
	if b.Empty() {
		return nil
	}
	if err := o.tx.Write(ctx, &b); err != nil {
		return err
	}
	if final {
		// A chain's next batch (Chain) starts with none of these; compile is done with them.
		o.conflicts, o.outbox, o.receiptRows = o.conflicts[:0], o.outbox[:0], o.receiptRows[:0]
		clear(o.conflictAt)
	}
	// Written: from here on, these rows exist in the transaction (for a chain's next
	// batch, in the database once this batch commits).
	for _, id := range o.ciOrder {
		c := o.cis[id]
		c.isNew, c.dirty = false, false
	}
	for _, k := range o.relOrder {
		st := o.rels[k]
		st.isNew, st.written = false, false
		o.rels[k] = st
	}
	clear(o.keyIsNew)
	clear(o.keyIsMoved)
	clear(o.attrAt)
	o.ciOrder, o.relOrder, o.newKeys, o.movedKeys = o.ciOrder[:0], o.relOrder[:0], o.newKeys[:0], o.movedKeys[:0]
	o.attrChanges, o.history = o.attrChanges[:0], o.history[:0]
	return nil
}

// prefetch reads, for a whole batch at once, what the payloads' runs will ask for one by
// one: the holders of the identifiers of their top-level items, and the state, identifier
// sets and relations of the CIs found. Dependent items are looked up by their runs (their
// identifiers include the parent's id).
func (o *overlay) prefetch(ctx context.Context, plans []*plan) error {
	var keys []store.Key
	seen := map[store.Key]bool{}
	for _, pl := range plans {
		if pl == nil || len(pl.levels) == 0 {
			continue
		}
		for _, it := range pl.levels[0] {
			fam := it.family
			if it.native != "" {
				k := store.Key{Family: fam.Name, Kind: "native:" + pl.source, Value: it.native}
				if !seen[k] {
					seen[k] = true
					keys = append(keys, k)
				}
			}
			for i := range fam.Rules {
				for _, v := range it.values[i] {
					k := store.Key{Family: fam.Name, Kind: fam.Rules[i].Name, Value: v}
					if !seen[k] {
						seen[k] = true
						keys = append(keys, k)
					}
				}
			}
		}
	}
	if len(keys) == 0 {
		return nil
	}
	found, err := o.LookupIdentifiers(ctx, keys)
	if err != nil {
		return err
	}
	var cis []string
	for _, ci := range found {
		if ci != "" {
			cis = append(cis, ci)
		}
	}
	cis = dedupeIDs(cis)
	if len(cis) == 0 {
		return nil
	}
	slices.Sort(cis)
	if _, err := o.IdentifiersOf(ctx, cis); err != nil {
		return err
	}
	if _, err := o.LoadCIs(ctx, cis); err != nil {
		return err
	}
	_, err = o.LoadRelations(ctx, cis)
	return err
}

func dedupeIDs(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}
