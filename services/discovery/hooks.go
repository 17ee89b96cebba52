package discovery

import "github.com/outpost-dev/outpost/libs/envelope"

// Hooks lets a test stop the service at a precise point of a run — a crash point: right
// after a step's effects left (its probes or payload published, a receipt applied), or right
// before a turn's writes. A test's hook kills the service there (closes its connection, so
// nothing more of it reaches the bus), or freezes it (SIGSTOP) to play a stalled replica. It
// is nil in production; a hook must not block unless it means to freeze the service.
type Hooks interface {
	At(point Point, run string)
}

// Point is a crash point of a run.
type Point string

// The crash points. The burst points are reached once per turn that published probes of
// the step (the SNMP sweep goes with the scan burst); the write points before the writes
// of a turn that is about to publish probes of the step.
const (
	PointScanBurst     Point = "scan"
	PointClassifyBurst Point = "classify"
	PointExploreBurst  Point = "explore"
	PointPayload       Point = "payload"  // a host's payload published to the CMDB stream
	PointReceipt       Point = "receipt"  // a CMDB receipt applied, not yet acknowledged
	PointScheduleFire  Point = "schedule" // a schedule's slot is due, its run not started yet
	PointWriteScan     Point = "write:scan"
	PointWriteClassify Point = "write:classify"
	PointWriteExplore  Point = "write:explore"
)

// burstPoints are the burst points of probes (caller holds rs.mu): by probe id.
func burstPoints(rs *runState, probes []*envelope.Probe) map[string]Point {
	out := make(map[string]Point, len(probes))
	for _, p := range probes {
		pt := PointClassifyBurst
		if pp := rs.run.Pending[p.ID]; pp != nil {
			switch pp.Step {
			case StepScan, StepSweep:
				pt = PointScanBurst
			case StepExplore:
				pt = PointExploreBurst
			}
		}
		out[p.ID] = pt
	}
	return out
}

// at calls the hooks once per burst point among probes, in pipeline order; before: the
// write points.
func (s *service) at(points map[string]Point, probes []*envelope.Probe, run string, before bool) {
	if s.cfg.Hooks == nil || len(probes) == 0 {
		return
	}
	seen := map[Point]bool{}
	for _, p := range probes {
		seen[points[p.ID]] = true
	}
	for _, pt := range []Point{PointScanBurst, PointClassifyBurst, PointExploreBurst} {
		if !seen[pt] {
			continue
		}
		if before {
			pt = "write:" + pt
		}
		s.cfg.Hooks.At(pt, run)
	}
}

// ProbeFaults, when a Hooks value implements it too, lets a test make the build of a probe
// fail as its dependencies do under load (a credential or host-key lookup, the site's
// bridges timing out): ProbeFault is called as each build begins (ip "" for a scan chunk),
// and a non-nil error is the build's.
type ProbeFaults interface {
	ProbeFault(run string, step Step, kind, ip string) error
}
