package discovery

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes"
	"github.com/outpost-dev/outpost/libs/probes/httpget"
	"github.com/outpost-dev/outpost/libs/probes/ldapsearch"
	"github.com/outpost-dev/outpost/libs/probes/snmpget"
	"github.com/outpost-dev/outpost/libs/probes/snmpwalk"
	"github.com/outpost-dev/outpost/libs/probes/sshexec"
	"github.com/outpost-dev/outpost/libs/probes/tcpscan"
	"github.com/outpost-dev/outpost/libs/probes/tlscert"
	"github.com/outpost-dev/outpost/libs/probes/winrmexec"
	"github.com/outpost-dev/outpost/libs/telemetry"
)

// handleResult applies one result chunk to its run. It is idempotent: a chunk of a probe
// that is no longer pending (already applied, run finished) is acknowledged and ignored.
//
// With ShareRuns a result of a run another replica owns is handed over to it (owner.go), and
// one of a run nobody owns any more (its replica died) makes this replica its owner.
func (s *service) handleResult(ctx context.Context, _ envelope.Meta, res *envelope.Result) error {
	if res.Run == "" || res.App != Service {
		return nil
	}
	if s.own != nil {
		rs, holder, err := s.own.ownerOf(ctx, res.Run)
		switch {
		case err != nil:
			return err // transient: retried, then delivered again
		case holder != "":
			return s.own.forward(ctx, holder, handoff{Kind: handoffResult, Run: res.Run, Result: res})
		case rs == nil:
			return nil // finished or unknown run
		}
		return s.applyResult(ctx, rs, res)
	}
	// a replica whose lease is gone (frozen past it, taken over) must not even ack: what it
	// holds in memory is stale, and a result it acked for a probe the active replica sent
	// since (unknown here) would be lost to that replica. Nacked, it is delivered again —
	// to the active replica once this one stood down.
	if err := s.fence(); err != nil {
		return err
	}
	rs, err := s.loadRun(ctx, res.Run)
	if err != nil {
		return err // transient: KV unavailable, retried
	}
	if rs == nil {
		return nil
	}
	return s.applyResult(ctx, rs, res)
}

// applyResult applies a result chunk to a run this replica owns.
func (s *service) applyResult(ctx context.Context, rs *runState, res *envelope.Result) error {
	// as above: a run whose lease is lost is not even acked (its next owner gets the result)
	if err := rs.fence(); err != nil {
		return err
	}
	rs.mu.Lock()
	r := rs.run
	p, ok := r.Pending[res.Probe]
	if !ok || terminalState(r.State) {
		rs.mu.Unlock()
		return nil
	}
	h := rs.hosts[p.IP]
	if h != nil && h.Done[res.Probe] || !p.accepts(res) {
		rs.mu.Unlock()
		return nil
	}
	if errCode(res) == probes.CodeExpired {
		// The bridge took the probe after its deadline and did not run it: nothing was asked
		// of the target, so this is no answer (a sweep's "no SNMP here", a port's silence).
		// The probe stays pending, marked; the next turn's expire sends it again at once,
		// within its resend budget (stage.go). Acked without a write: lost in a crash, the
		// mark only costs the wait to the deadline's grace, when expire resends it anyway.
		if p.NotRun == "" {
			p.NotRun = res.Agent + ": " + errText(res)
			r.Counters.ProbesNotRun++
			rs.dirty = true
		}
		rs.mu.Unlock()
		return nil
	}
	// KV writes of a result outlive a shutdown that starts meanwhile
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	defer cancel()
	touched, err := s.apply(ctx, rs, p, res)
	if err != nil {
		rs.mu.Unlock()
		return err
	}
	final, complete := p.progress(res)
	h = rs.hosts[p.IP]
	if tp := telemetry.TraceParent(ctx); h != nil && tp != "" && tp != h.Trace {
		h.Trace = tp
		touched[h.IP] = h
	}
	if complete && h != nil {
		if h.Done == nil {
			h.Done = map[string]bool{}
		}
		h.Done[res.Probe] = true
		touched[h.IP] = h
	}
	// hosts are written before the ack, and the probe leaves pending only once they are:
	// a crash or a failed write loses nothing (the result is delivered again)
	for _, th := range touched {
		if err := s.saveHost(ctx, rs, th); err != nil {
			if complete && h != nil {
				delete(h.Done, res.Probe)
			}
			rs.mu.Unlock()
			return fmt.Errorf("save host %s: %w", th.IP, err)
		}
	}
	p.record(res, final)
	if complete {
		delete(r.Pending, res.Probe)
		r.Counters.ProbesDone++
	}
	rs.dirty = true
	if p.Step == StepScan {
		// a scan chunk applied is not written anywhere else: a restart must not wait for it
		// (nor, the probe complete, for a copy the bus drops as a duplicate)
		if err := s.savePending(ctx, rs, true); err != nil {
			s.log.Warn("save pending scan chunks", "run", r.ID, "err", err)
		}
	}
	rs.mu.Unlock()
	return nil
}

// Chunk assembly. Two executions of one probe (redelivered to a sibling after its bridge
// died mid-scan) split their output into chunks differently, so their seqs mean nothing to
// each other: the chunks of the newest execution (highest attempt) are counted, a newer
// execution starts the count afresh, and a chunk of an older one is ignored (what it held
// was applied already, or the newer execution covers it). Results without an attempt
// (0) count as one execution.

// accepts reports whether a result still counts for the probe: not a chunk already
// applied, nor one of an execution older than the one being assembled.
func (p *pendingProbe) accepts(res *envelope.Result) bool {
	switch {
	case res.Attempt < p.Attempt:
		return false
	case res.Attempt > p.Attempt:
		return true
	}
	return !p.Chunks[res.Seq]
}

// progress is the probe's chunk count (final seq + 1, 0 while unknown) and whether it is
// complete once res is applied.
func (p *pendingProbe) progress(res *envelope.Result) (final int, complete bool) {
	final, seen := p.Final, len(p.Chunks)+1
	if res.Attempt > p.Attempt {
		final, seen = 0, 1
	}
	if res.Final {
		final = res.Seq + 1
	}
	return final, final > 0 && seen >= final
}

// record notes res as applied, once its hosts are saved.
func (p *pendingProbe) record(res *envelope.Result, final int) {
	if res.Attempt > p.Attempt {
		p.Attempt, p.Chunks = res.Attempt, nil
	}
	if p.Chunks == nil {
		p.Chunks = map[int]bool{}
	}
	p.Chunks[res.Seq] = true
	p.Final = final
}

// host returns the host record of ip, creating it (alive) when create is set.
func (s *service) host(rs *runState, ip string, create bool) *Host {
	if h := rs.hosts[ip]; h != nil || !create {
		return h
	}
	h := &Host{IP: ip, Run: rs.run.ID, Stage: stageNew, Facts: Facts{IP: ip}}
	rs.hosts[ip] = h
	rs.run.Counters.Alive++
	return h
}

// errCode is the stable code of a failed result ("" when it did not fail): what discovery
// decides on, never the message.
func errCode(res *envelope.Result) string {
	if res.Error == nil {
		return ""
	}
	return res.Error.Code
}

func errText(res *envelope.Result) string {
	if res.Error == nil {
		return ""
	}
	return res.Error.Code + ": " + res.Error.Message
}

// apply merges a result into the run's hosts; it returns the hosts it changed.
func (s *service) apply(ctx context.Context, rs *runState, p *pendingProbe, res *envelope.Result) (map[string]*Host, error) {
	r := rs.run
	touched := map[string]*Host{}
	now := s.now()
	logEntry := HostLog{Time: now, Step: p.Step, Kind: res.Kind, Probe: res.Probe, Status: string(res.Status), Error: errText(res), Bridge: res.Agent}
	switch res.Kind {
	case tcpscan.Kind:
		hosts, err := scanHosts(res)
		if err != nil {
			r.errorf("scan result " + res.ID + ": " + err.Error())
			return touched, nil
		}
		for _, sh := range hosts {
			if len(sh.Open) > 0 && !inScope(r.Ranges, r.Exclude, sh.IP) {
				// Nothing of the chunk is applied: a bridge reporting hosts it was not asked
				// about is broken or hostile, and its word goes to the DLQ with the reason.
				return touched, bus.Permanent(fmt.Errorf("scan result %s from %s/%s reports %s, outside run %s's ranges %v (excluding %v)",
					res.ID, res.Site, res.Agent, sh.IP, r.ID, r.Ranges, r.Exclude))
			}
		}
		for _, sh := range hosts {
			if len(sh.Open) == 0 {
				continue
			}
			h := s.host(rs, sh.IP, true)
			for _, port := range sh.Open {
				if !slices.Contains(h.Facts.Ports, port) {
					h.Facts.Ports = append(h.Facts.Ports, port)
				}
			}
			slices.Sort(h.Facts.Ports)
			h.logf(HostLog{Time: now, Step: StepScan, Kind: "tcp_scan", Probe: res.Probe, Status: "open", Note: "open TCP ports " + joinInts(h.Facts.Ports), Bridge: res.Agent})
			touched[h.IP] = h
		}
		if res.Final {
			r.Counters.Scanned += p.Addrs
			if res.Status != envelope.StatusOK {
				r.errorf(fmt.Sprintf("scan probe %s: %s %s", res.Probe, res.Status, errText(res)))
			}
		}
	case snmpget.Kind, snmpwalk.Kind:
		values, attempt, err := snmpData(res)
		if err != nil {
			r.errorf("snmp result " + res.ID + ": " + err.Error())
			return touched, nil
		}
		answered := false
		for _, x := range values {
			if x.Value != nil {
				answered = true
				break
			}
		}
		h := s.host(rs, p.IP, answered && p.Step == StepSweep)
		if h == nil {
			return touched, nil // silent address of the sweep
		}
		h.Facts.addSNMP(values)
		if res.Final {
			s.noteCredentials(ctx, rs, h, "snmp", attempt.Credential, attempt.FailedCredentials, &logEntry)
			if p.Kind == snmpwalk.Kind {
				h.LLDP = h.Facts.lldpNeighbours()
			}
			h.logf(logEntry)
		}
		touched[h.IP] = h
	case sshexec.Kind:
		h := s.host(rs, p.IP, false)
		if h == nil {
			return touched, nil
		}
		// when every credential is refused the result fails with auth_failed and its data
		// still names them (failed_credentials)
		v, err := decode[sshexec.Result](res.Data)
		if err != nil {
			logEntry.Error = "decode: " + err.Error()
		}
		h.Facts.addSSH(&v)
		s.noteHostKey(ctx, rs, h, res, &v, &logEntry)
		s.noteCredentials(ctx, rs, h, "ssh", v.Credential, v.FailedCredentials, &logEntry)
		if v.Credential == "" && p.Step == StepClassify && (len(v.FailedCredentials) > 0 || errCode(res) == probes.CodeAuth) {
			h.Facts.SSHFailed = true
			logEntry.Note = "every SSH credential failed: classified by ports"
		}
		h.logf(logEntry)
		touched[h.IP] = h
	case httpget.Kind:
		h := s.host(rs, p.IP, false)
		if h == nil {
			return touched, nil
		}
		v, err := decode[httpget.Result](res.Data)
		if err == nil && res.Status == envelope.StatusOK && v.Status > 0 {
			if h.Facts.HTTP == nil {
				h.Facts.HTTP = map[int]HTTPFact{}
			}
			f := HTTPFact{Status: v.Status, Server: v.Server, Title: v.Title, TLS: v.TLS != nil}
			h.Facts.HTTP[p.Port] = f
			logEntry.Note = fmt.Sprintf("port %d: %d %s %q", p.Port, v.Status, v.Server, v.Title)
		}
		h.logf(logEntry)
		touched[h.IP] = h
	case tlscert.Kind:
		h := s.host(rs, p.IP, false)
		if h == nil {
			return touched, nil
		}
		v, err := decode[tlscert.Result](res.Data)
		if err == nil && v.Certificate != nil {
			if h.Facts.TLS == nil {
				h.Facts.TLS = map[int]probes.Certificate{}
			}
			h.Facts.TLS[p.Port] = *v.Certificate
			logEntry.Note = fmt.Sprintf("port %d: %s, not after %s", p.Port, v.Certificate.SubjectCN, v.Certificate.NotAfter.Format("2006-01-02"))
		}
		h.logf(logEntry)
		touched[h.IP] = h
	case ldapsearch.Kind:
		h := s.host(rs, p.IP, false)
		if h == nil {
			return touched, nil
		}
		entries, worked, failed, err := ldapData(res)
		if err == nil {
			for _, e := range entries {
				if e.DN == "" {
					h.Facts.LDAP = e.Attributes
				}
			}
			if res.Final {
				s.noteCredentials(ctx, rs, h, "ldap", worked, failed, &logEntry)
			}
		}
		if res.Final {
			h.logf(logEntry)
		}
		touched[h.IP] = h
	case winrmexec.Kind:
		h := s.host(rs, p.IP, false)
		if h == nil {
			return touched, nil
		}
		// like ssh_exec: a result refused by every credential still names them
		v, err := decode[winrmexec.Result](res.Data)
		if err != nil {
			logEntry.Error = "decode: " + err.Error()
		}
		h.Facts.addWinRM(&v)
		s.noteCredentials(ctx, rs, h, "winrm", v.Credential, v.FailedCredentials, &logEntry)
		if v.Credential == "" {
			logEntry.Note = "no WinRM inventory: the host is classified by its ports"
		}
		h.logf(logEntry)
		touched[h.IP] = h
	default:
		r.logf(now, "result of unexpected kind "+res.Kind)
	}
	return touched, nil
}

// noteCredentials records which credential worked (affinity: tried first next time) and
// which failed.
func (s *service) noteCredentials(ctx context.Context, rs *runState, h *Host, typ, worked string, failed []string, e *HostLog) {
	e.Credential, e.Failed = worked, failed
	if len(failed) > 0 {
		if h.Failed == nil {
			h.Failed = map[string][]string{}
		}
		for _, f := range failed {
			if !slices.Contains(h.Failed[typ], f) {
				h.Failed[typ] = append(h.Failed[typ], f)
			}
		}
	}
	if worked == "" {
		return
	}
	if h.Worked == nil {
		h.Worked = map[string]string{}
	}
	h.Worked[typ] = worked
	if s.replayOf(rs.run.ID) != nil {
		return // a replay changes nothing but its own run (and, not dry, the CMDB)
	}
	if _, err := s.kvAff.Put(ctx, affinityKey(rs.run.Site, typ, h.IP), []byte(worked)); err != nil {
		s.log.Warn("credential affinity", "err", err)
	}
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

// noteHostKey records the SSH host key an ssh_exec probe saw (trust on first use), or
// reports, in the host's log, the run and an event, that the host presented another key.
func (s *service) noteHostKey(ctx context.Context, rs *runState, h *Host, res *envelope.Result, v *sshexec.Result, entry *HostLog) {
	site := rs.run.Site
	if errCode(res) == sshexec.CodeHostKeyMismatch {
		known, _ := s.knownHostKey(ctx, site, h.IP)
		h.Facts.SSHHostKeyChanged = res.Error.Message
		h.Facts.SSHFailed = true // classified as if SSH had refused us: it did not get the chance
		entry.Note = strings.TrimSpace(entry.Note + " SSH host key changed: nothing was sent; the host is classified without SSH")
		rs.run.errorf(res.Error.Message)
		s.hostKeyChanged(ctx, site, h.IP, known, v.HostKey, rs.run.ID, res.Error.Message)
		return
	}
	if v.HostKey == "" {
		return
	}
	if s.replayOf(rs.run.ID) != nil {
		h.Facts.SSHHostKey = v.HostKey // a replay records no host key
		return
	}
	first, changed, err := s.seeHostKey(ctx, site, h.IP, v.HostKey, v.HostKeyType, rs.run.ID)
	switch {
	case err != nil:
		rs.run.errorf("host key of " + h.IP + ": " + err.Error())
	case changed != "":
		// a probe that left before the key was on record met another key than a sibling did
		msg := fmt.Sprintf("host key for %s changed from %s to %s; if the host was rebuilt, run `outpost hostkeys forget %s`", h.IP, changed, v.HostKey, h.IP)
		h.Facts.SSHHostKeyChanged = msg
		entry.Note = strings.TrimSpace(entry.Note + " " + msg)
		rs.run.errorf(msg)
		s.hostKeyChanged(ctx, site, h.IP, changed, v.HostKey, rs.run.ID, msg)
	default:
		h.Facts.SSHHostKey = v.HostKey
		if first {
			entry.Note = strings.TrimSpace(entry.Note + " SSH host key " + v.HostKey + " recorded (trust on first use)")
		}
	}
}
