package discovery

import "context"

// ActiveLeaseKey is the key of the leases bucket held by the replica that runs discovery's
// schedules and retention; with ShareRuns off (`--discovery-standby`), by the replica that
// runs everything, as described here. With ShareRuns (the default) runs are shared, each
// owned through a lease of its own (owner.go).
//
// A run's state lives in the memory of the replica that advances it (written through to KV
// for restarts), so two replicas must never advance the same runs. Replicas are therefore
// active/standby: the one holding the lease serves everything — endpoints, result and
// receipt consumers, ticks, schedules — and the others wait, trying every ActiveLease/4. The
// lease is a key with a TTL, renewed well before it runs out; a replica that cannot renew
// it within its TTL stops serving before anyone else may take it, and a stopping replica
// deletes it so a standby takes over at once. A replica restarted with the same Replica name
// (the hub's is stable per data dir) takes its own lease back without waiting for the TTL.
// The mechanics are libs/lease's, shared with orchestration and correlation.
const ActiveLeaseKey = "discovery.active"

// serveWhenActive waits for the lease, serves while it holds it, and goes back to waiting
// if it is lost; it returns when ctx ends.
func (s *service) serveWhenActive(ctx context.Context) error {
	return s.active.Serve(ctx, s.serve, func() {
		s.mu.Lock()
		s.runs = map[string]*runState{} // the next active replica owns them now
		s.mu.Unlock()
	})
}
