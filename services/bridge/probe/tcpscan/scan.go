package tcpscan

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/outpost-dev/outpost/libs/clock"
	contract "github.com/outpost-dev/outpost/libs/probes/tcpscan"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/capture"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/target"
)

// The contract of the kind (libs/probes/tcpscan): what a probe asks and what it answers.
type (
	Host    = contract.Host
	Chunk   = contract.Chunk
	Summary = contract.Summary
)

// port states
const (
	stUnknown byte = iota
	stOpen
	stClosed
	stFiltered
	// outcomes only
	stTimeout
	stLocal   // a local resource ran out (ports, files): try again, it does not count
	stAborted // the scan was cancelled
)

type timing struct {
	srtt, rttvar time.Duration
	n            int
}

func (t *timing) add(r time.Duration) {
	if t.n == 0 {
		t.srtt, t.rttvar = r, r/2
	} else {
		d := t.srtt - r
		if d < 0 {
			d = -d
		}
		t.rttvar = (3*t.rttvar + d) / 4
		t.srtt = (7*t.srtt + r) / 8
	}
	t.n++
}

type retry struct {
	pi  int32
	try uint8
}

type host struct {
	addr     netip.Addr
	offset   int
	next     int // first tries handed out
	retries  []retry
	inflight int
	settled  int
	state    []byte // by port index
	t        timing
	inReady  bool
	// retries spent on this address and how many of them got an answer
	retried, retryAnswers int
}

// retryProbe is how many retries a silent address gets before they must have paid: an
// address that never answered anything and whose retries got no answer either (a
// firewall dropping every SYN) is not retried further — nmap's max_successful_tryno in
// spirit. An address that answers on some port keeps its retries: a lost open port costs
// more than a slower scan.
const retryProbe = 8

func (h *host) pending(nports int) bool { return h.next < nports || len(h.retries) > 0 }

type job struct {
	h       *host
	addr    netip.AddrPort
	pi      int32
	try     uint8
	local   uint8
	timeout time.Duration
}

// wall is the real clock: the engine's pace (rate limit, round-trip times that size the
// adaptive timeouts, flushes) is the network's, kept on wall time whatever clock the
// bridge runs on; what a scan reports about itself (its duration) reads the settings' clock.
var wall = clock.Real()

type outcome struct {
	j   job
	st  byte
	rtt time.Duration
}

func (r *runner) scan(ctx context.Context, pl *plan, all []netip.Addr, emit probe.Emit) (any, error) {
	start := r.set.Time()
	sum := &Summary{Ports: len(pl.ports), Rate: effectiveRate(pl.rate, r.cfg.Rate), BridgeRate: r.cfg.Rate, PerHost: pl.perHost}
	addrs := make([]netip.Addr, 0, len(all))
	var denied []netip.Addr
	for _, a := range all {
		if target.Allowed(r.set, a) {
			addrs = append(addrs, a)
		} else {
			denied = append(denied, a)
		}
	}
	sum.Denied, sum.DeniedCount = compactAddrs(denied), len(denied)
	if len(sum.Denied) > 64 {
		sum.Denied = append(sum.Denied[:64:64], "…")
	}
	if len(addrs) == 0 {
		return nil, probe.Errorf(probe.CodeDenied, "every target (%d addresses) is outside the site's allowed ranges", len(denied))
	}
	sum.Addresses = len(addrs)
	seed := rand.Uint64()
	if pl.seed != nil {
		seed = *pl.seed
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x5DEECE66D))
	rng.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	ports := slices.Clone(pl.ports)
	rng.Shuffle(len(ports), func(i, j int) { ports[i], ports[j] = ports[j], ports[i] })

	total := int64(len(addrs)) * int64(len(ports))
	workers := int(min(int64(pl.inFlight), total))
	sum.MaxInFlight = workers
	out := &sink{emit: emit, total: len(addrs), maxOut: capture.Limit(r.set.MaxOutput)}

	// The raw engine is one loop on one thread, like nmap: it runs as several shards (one
	// per CPU, each over its share of the addresses, in-flight budget and rate) so that
	// the kernel's connect work spreads over the cores. The dial engine's workers are
	// parallel already.
	raw := r.cfg.Engine != "dial" && rawAvailable
	shards := 1
	if raw {
		shards = max(1, min(runtime.GOMAXPROCS(0), 8, len(addrs), workers/16))
	}
	engines := make([]*engine, shards)
	for k := range engines {
		spl := *pl
		spl.rate = pl.rate / float64(shards)
		own := newBucket(spl.rate)
		w := workers / shards
		if k < workers%shards {
			w++
		}
		part := addrs[k*len(addrs)/shards : (k+1)*len(addrs)/shards]
		engines[k] = &engine{
			pl: &spl, ports: ports, addrs: part, rng: rand.New(rand.NewPCG(seed+uint64(k), seed^0x5DEECE66D)), out: out, sum: &Summary{},
			dial: target.Dialer(r.set), maxOut: out.maxOut, workers: w, own: own, shared: r.budget,
			group: max(r.cfg.HostGroup/shards, 2*w/max(pl.perHost, 1)+1, 16),
		}
	}
	sum.Engine = "dial"
	if raw {
		sum.Engine = "raw"
	}
	errs := make([]error, shards)
	fellBack := make([]bool, shards)
	var wg sync.WaitGroup
	for k, e := range engines {
		wg.Go(func() {
			if raw {
				if errs[k] = e.runRaw(ctx, e.workers); !errors.Is(errs[k], errRawUnavailable) {
					return
				}
				fellBack[k] = true
			}
			errs[k] = e.run(ctx, e.workers)
		})
	}
	wg.Wait()
	if slices.Contains(fellBack, true) {
		sum.Engine = "dial"
	}
	for _, e := range engines {
		sum.Probes += e.probes.Load()
		sum.Retries += e.sum.Retries
		sum.Open += e.sum.Open
		sum.Closed += e.sum.Closed
		sum.Filtered += e.sum.Filtered
		sum.HostsUp += e.sum.HostsUp
		sum.HostsSilent += e.sum.HostsSilent
	}
	sum.Chunks = out.chunks
	elapsed := r.set.Since(start)
	sum.DurationMS = elapsed.Milliseconds()
	if s := elapsed.Seconds(); s > 0 {
		sum.ProbesPerS = float64(sum.Probes) / s
	}
	if err := errors.Join(errs...); err != nil {
		if ctx.Err() != nil {
			return sum, ctx.Err()
		}
		return sum, err
	}
	if emit == nil {
		out.fill(sum)
	}
	return sum, nil
}

// part is what one shard finished since its last flush.
type part struct {
	hosts  []Host
	silent []netip.Addr
}

// sink streams the shards' parts as chunks (serialising Emit), or gathers them for the
// summary when the caller takes no stream.
type sink struct {
	mu     sync.Mutex
	emit   probe.Emit
	total  int
	done   int
	chunks int
	maxOut int
	hosts  []Host
	silent []netip.Addr
}

func (s *sink) put(ctx context.Context, p part) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done += len(p.hosts) + len(p.silent)
	if s.emit == nil {
		s.hosts = append(s.hosts, p.hosts...)
		s.silent = append(s.silent, p.silent...)
		return nil
	}
	c := Chunk{Hosts: p.hosts, Silent: compactAddrs(p.silent), Done: s.done, Total: s.total}
	if c.Hosts == nil {
		c.Hosts = []Host{}
	}
	s.chunks++
	return s.emit(ctx, c)
}

// fill puts the gathered results in the summary, as many as fit in one chunk.
func (s *sink) fill(sum *Summary) {
	slices.SortFunc(s.hosts, func(a, b Host) int { return netip.MustParseAddr(a.IP).Compare(netip.MustParseAddr(b.IP)) })
	slices.SortFunc(s.silent, func(a, b netip.Addr) int { return a.Compare(b) })
	sum.Hosts, sum.Silent = s.hosts, compactAddrs(s.silent)
	size := 34 * len(s.silent)
	for _, h := range s.hosts {
		size += hostSize(h)
	}
	if size > s.maxOut*3/4 {
		keep, n := 0, 0
		for keep < len(sum.Hosts) && n+hostSize(sum.Hosts[keep]) < s.maxOut*3/4 {
			n += hostSize(sum.Hosts[keep])
			keep++
		}
		sum.Hosts, sum.Silent, sum.Truncated = sum.Hosts[:keep], nil, true
	}
}

func hostSize(h Host) int { return 120 + len(h.Closed) + len(h.Filtered) + 6*len(h.Open) }

type engine struct {
	pl      *plan
	ports   []uint16
	addrs   []netip.Addr
	rng     *rand.Rand
	out     *sink
	sum     *Summary
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	maxOut  int
	group   int
	workers int

	global timing
	// the window of addresses being scanned
	ready            []*host
	active, nextHost int
	// own is the probe's own rate (this shard's share of it), shared the bridge's budget
	// that every tcp_scan probe of the bridge draws from; nil: no limit
	own, shared *bucket

	batch  []Host
	silent []netip.Addr
	bytes  int
	done   int
	probes atomic.Int64
}

func (e *engine) timeout(h *host, try uint8) time.Duration {
	t := e.pl.initial
	switch {
	case h.t.n > 0:
		t = h.t.srtt + 4*h.t.rttvar
	case e.global.n > 0:
		t = e.global.srtt + 4*e.global.rttvar
	}
	t = min(max(t, e.pl.min), e.pl.max)
	if try > 0 {
		// a port that did not answer in the adaptive time may have met a local stall (a
		// busy CPU, a full accept queue): its retry waits at least the initial timeout
		t = max(t, e.pl.initial)
		for range try {
			t = min(2*t, e.pl.max)
		}
	}
	return t
}

// activate fills the window of addresses being scanned.
func (e *engine) activate() {
	for e.active < e.group && e.nextHost < len(e.addrs) {
		h := &host{addr: e.addrs[e.nextHost], offset: e.rng.IntN(len(e.ports)), state: make([]byte, len(e.ports))}
		e.nextHost++
		e.active++
		e.addReady(h)
	}
}

func (e *engine) addReady(h *host) {
	if !h.inReady && h.inflight < e.pl.perHost && h.pending(len(e.ports)) {
		h.inReady = true
		e.ready = append(e.ready, h)
	}
}

// token takes one attempt's worth of the probe's own rate and of the bridge's budget; when
// either has none left it says how long to wait.
func (e *engine) token(now time.Time) (bool, time.Duration) {
	if ok, wait := e.own.take(now); !ok {
		return false, wait
	}
	if ok, wait := e.shared.take(now); !ok {
		e.own.giveBack()
		return false, wait
	}
	return true, 0
}

// handle settles an outcome and streams the address when it is finished.
func (e *engine) handle(ctx context.Context, o outcome) error {
	h := o.j.h
	h.inflight--
	if e.settle(o) {
		e.active--
		return e.finish(ctx, h)
	}
	e.addReady(h)
	return nil
}

// run scans with the site's Dial: a pool of workers, each one connection attempt at a time.
func (e *engine) run(ctx context.Context, workers int) error {
	jobs := make(chan job, workers)
	outs := make(chan outcome, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() { e.worker(ctx, jobs, outs) })
	}
	stop := func() {
		close(jobs)
		go func() { wg.Wait(); close(outs) }()
		for range outs {
		}
	}
	var rateTimer *time.Timer
	defer func() {
		if rateTimer != nil {
			rateTimer.Stop()
		}
	}()
	flush := time.NewTicker(time.Second)
	defer flush.Stop()

	var staged job
	hasStaged := false
	for {
		e.activate()
		if e.active == 0 {
			break
		}
		var waitC <-chan time.Time
		if !hasStaged && len(e.ready) > 0 {
			if ok, wait := e.token(wall.Now()); ok {
				staged, hasStaged = e.stage(), true
			} else {
				if rateTimer == nil {
					rateTimer = time.NewTimer(wait)
				} else {
					rateTimer.Reset(wait)
				}
				waitC = rateTimer.C
			}
		}
		var jobsC chan<- job
		if hasStaged {
			jobsC = jobs
		}
		select {
		case jobsC <- staged:
			hasStaged = false
		case o := <-outs:
			if err := e.handle(ctx, o); err != nil {
				stop()
				return err
			}
		case <-waitC:
		case <-flush.C:
			if len(e.batch)+len(e.silent) > 0 {
				if err := e.flush(ctx); err != nil {
					stop()
					return err
				}
			}
		case <-ctx.Done():
			stop()
			return ctx.Err()
		}
	}
	stop()
	return e.end(ctx)
}

// end streams what is left.
func (e *engine) end(ctx context.Context) error { return e.flush(ctx) }

// stage takes the next attempt of a random ready address.
func (e *engine) stage() job {
	rs := e.ready
	i := e.rng.IntN(len(rs))
	h := rs[i]
	var j job
	if n := len(h.retries); n > 0 {
		rt := h.retries[n-1]
		h.retries = h.retries[:n-1]
		j = job{h: h, pi: rt.pi, try: rt.try}
	} else {
		j = job{h: h, pi: int32((h.next + h.offset) % len(e.ports))}
		h.next++
	}
	j.addr = netip.AddrPortFrom(h.addr, e.ports[j.pi])
	j.timeout = e.timeout(h, j.try)
	h.inflight++
	if h.inflight >= e.pl.perHost || !h.pending(len(e.ports)) {
		rs[i] = rs[len(rs)-1]
		e.ready = rs[:len(rs)-1]
		h.inReady = false
	}
	return j
}

// settle records an outcome; it reports whether the address is finished.
func (e *engine) settle(o outcome) bool {
	h := o.j.h
	switch o.st {
	case stOpen, stClosed:
		if o.j.try > 0 {
			h.retryAnswers++
		}
		h.t.add(o.rtt)
		e.global.add(o.rtt)
		h.state[o.j.pi] = o.st
		h.settled++
	case stTimeout:
		if int(o.j.try) < e.pl.retries && (h.retried < retryProbe || h.retryAnswers > 0 || h.t.n > 0) {
			h.retries = append(h.retries, retry{pi: o.j.pi, try: o.j.try + 1})
			h.retried++
			e.sum.Retries++
		} else {
			h.state[o.j.pi] = stFiltered
			h.settled++
		}
	case stFiltered:
		h.state[o.j.pi] = stFiltered
		h.settled++
	case stLocal:
		h.retries = append(h.retries, retry{pi: o.j.pi, try: o.j.try})
	case stAborted:
	}
	return h.settled == len(e.ports) && h.inflight == 0
}

func (e *engine) finish(ctx context.Context, h *host) error {
	e.done++
	var open, closed, filtered []uint16
	for pi, st := range h.state {
		switch st {
		case stOpen:
			open = append(open, e.ports[pi])
		case stClosed:
			closed = append(closed, e.ports[pi])
		default:
			filtered = append(filtered, e.ports[pi])
		}
	}
	e.sum.Open += int64(len(open))
	e.sum.Closed += int64(len(closed))
	e.sum.Filtered += int64(len(filtered))
	if len(open)+len(closed) == 0 {
		e.sum.HostsSilent++
		e.silent = append(e.silent, h.addr)
		e.bytes += 34
	} else {
		e.sum.HostsUp++
		slices.Sort(open)
		slices.Sort(closed)
		slices.Sort(filtered)
		hr := Host{IP: h.addr.String(), Open: make([]int, len(open)), Closed: compactPorts(closed), ClosedCount: len(closed),
			Filtered: compactPorts(filtered), FilteredCount: len(filtered)}
		for i, p := range open {
			hr.Open[i] = int(p)
		}
		if h.t.n > 0 {
			hr.RTTMS = float64(h.t.srtt.Microseconds()) / 1000
		}
		e.batch = append(e.batch, hr)
		e.bytes += hostSize(hr)
	}
	if len(e.batch) >= e.pl.chunk || e.bytes >= e.maxOut/2 {
		return e.flush(ctx)
	}
	return nil
}

func (e *engine) flush(ctx context.Context) error {
	if len(e.batch)+len(e.silent) == 0 {
		return nil
	}
	slices.SortFunc(e.batch, func(a, b Host) int {
		return netip.MustParseAddr(a.IP).Compare(netip.MustParseAddr(b.IP))
	})
	slices.SortFunc(e.silent, func(a, b netip.Addr) int { return a.Compare(b) })
	p := part{hosts: e.batch, silent: e.silent}
	e.batch, e.silent, e.bytes = nil, nil, 0
	return e.out.put(ctx, p)
}

func (e *engine) worker(ctx context.Context, jobs <-chan job, outs chan<- outcome) {
	for j := range jobs {
		if ctx.Err() != nil {
			outs <- outcome{j: j, st: stAborted}
			continue
		}
		e.probes.Add(1)
		t0 := wall.Now()
		dctx, cancel := context.WithTimeout(ctx, j.timeout)
		c, err := e.dial(dctx, "tcp", j.addr.String())
		rtt := wall.Since(t0)
		st := classify(ctx, dctx, err)
		cancel()
		if c != nil {
			if l, ok := c.(interface{ SetLinger(int) error }); ok {
				l.SetLinger(0) // reset, not FIN: no TIME_WAIT left behind by a scan
			}
			c.Close()
		}
		if st == stLocal {
			j.local++
			if j.local > 50 {
				st = stFiltered
			} else {
				select {
				case <-ctx.Done():
				case <-time.After(time.Duration(j.local) * 5 * time.Millisecond):
				}
			}
		}
		outs <- outcome{j: j, st: st, rtt: rtt}
	}
}

func classify(ctx, dctx context.Context, err error) byte {
	switch {
	case err == nil:
		return stOpen
	case errors.Is(err, syscall.ECONNREFUSED):
		return stClosed
	case ctx.Err() != nil:
		return stAborted
	case dctx.Err() != nil || target.IsTimeout(err):
		return stTimeout
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE),
		errors.Is(err, syscall.ENOBUFS), errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EADDRINUSE):
		return stLocal
	}
	// host/network unreachable, administratively prohibited, denied by the dial guard
	return stFiltered
}
