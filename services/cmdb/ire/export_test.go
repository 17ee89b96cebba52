package ire

// SetFlushEvery makes e's batches write what they reconciled every n CIs and relations,
// whatever the store, so that tests take the partial flushes on every database.
func SetFlushEvery(e *Engine, n int) { e.flushEvery = n }
