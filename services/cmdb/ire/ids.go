package ire

import "github.com/outpost-dev/outpost/services/cmdb/store"

// newID is the store's id generator: the engine's ids and the store's own (stale marking's
// history rows) must come from one generator to sort in the order they were made.
func newID() string { return store.NewID() }
