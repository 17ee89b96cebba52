//go:build linux

package tcpscan

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"
	"unsafe"
)

// The raw engine: non-blocking sockets and one epoll set driven by the scan's own loop, as
// nmap's connect scan does — no goroutine, channel, timer or netpoller registration per
// attempt, which on a busy or virtualised machine costs as much as the connect itself.
// It connects only to the addresses the plan checked against Settings.Allowed (every
// target address is checked before the scan starts; nothing else is ever dialled), but
// it does not go through Settings.Dial: Config.Engine "dial" keeps every attempt on it.

const rawAvailable = true

var errRawUnavailable = errors.New("raw connect engine unavailable")

type rawConn struct {
	fd       int
	j        job
	start    time.Time
	deadline time.Time
	idx      int
}

type deadlines []*rawConn

func (d deadlines) Len() int           { return len(d) }
func (d deadlines) Less(i, j int) bool { return d[i].deadline.Before(d[j].deadline) }
func (d deadlines) Swap(i, j int)      { d[i], d[j] = d[j], d[i]; d[i].idx = i; d[j].idx = j }
func (d *deadlines) Push(x any)        { c := x.(*rawConn); c.idx = len(*d); *d = append(*d, c) }
func (d *deadlines) Pop() any {
	old := *d
	c := old[len(old)-1]
	*d = old[:len(old)-1]
	c.idx = -1
	return c
}

func (e *engine) runRaw(ctx context.Context, maxInFlight int) error {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return errRawUnavailable
	}
	defer syscall.Close(epfd)
	conns := map[int32]*rawConn{}
	dl := &deadlines{}
	defer func() {
		for _, c := range conns {
			syscall.Close(c.fd)
		}
	}()
	events := make([]syscall.EpollEvent, 512)
	nextFlush := wall.Now().Add(time.Second)
	var backoff time.Time // a local resource ran out: wait before the next attempt
	finishConn := func(c *rawConn, st byte, now time.Time) error {
		delete(conns, int32(c.fd))
		if c.idx >= 0 {
			heap.Remove(dl, c.idx)
		}
		closeFD(c.fd, st == stOpen)
		return e.handle(ctx, outcome{j: c.j, st: st, rtt: now.Sub(c.start)})
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		e.activate()
		if e.active == 0 {
			break
		}
		now := wall.Now()
		wait := 20 * time.Millisecond
		for len(conns) < maxInFlight && len(e.ready) > 0 && !now.Before(backoff) {
			ok, w := e.token(now)
			if !ok {
				wait = min(wait, w)
				break
			}
			j := e.stage()
			c, o := e.connectRaw(epfd, j, now)
			if c != nil {
				conns[int32(c.fd)] = c
				heap.Push(dl, c)
				continue
			}
			if o.st == stLocal {
				backoff = now.Add(time.Duration(o.j.local) * time.Millisecond)
			}
			if err := e.handle(ctx, o); err != nil {
				return err
			}
			e.activate()
			now = wall.Now()
		}
		if e.active == 0 {
			break
		}
		if dl.Len() > 0 {
			wait = min(wait, max(0, (*dl)[0].deadline.Sub(now)))
		}
		if !backoff.IsZero() && backoff.After(now) {
			wait = min(wait, backoff.Sub(now))
		}
		msec := int((wait + time.Millisecond - 1) / time.Millisecond)
		if len(conns) == 0 && len(e.ready) > 0 && wait == 0 {
			msec = 0
		}
		var n int
		if msec == 0 {
			n, err = rawEpollPoll(epfd, events)
		} else {
			n, err = syscall.EpollWait(epfd, events, msec)
		}
		if err != nil && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("tcp_scan: epoll_wait: %w", err)
		}
		now = wall.Now()
		for _, ev := range events[:max(n, 0)] {
			c := conns[ev.Fd]
			if c == nil {
				continue
			}
			soerr, gerr := rawSoError(c.fd)
			st := stOpen
			if gerr != nil {
				st = stFiltered
			} else if soerr != 0 {
				st = classifyErrno(syscall.Errno(soerr))
			} else if ev.Events&(syscall.EPOLLOUT) == 0 {
				continue // spurious: no error, not writable yet
			}
			if err := finishConn(c, st, now); err != nil {
				return err
			}
		}
		for dl.Len() > 0 && !(*dl)[0].deadline.After(now) {
			if err := finishConn((*dl)[0], stTimeout, now); err != nil {
				return err
			}
		}
		if now.After(nextFlush) {
			nextFlush = now.Add(time.Second)
			if len(e.batch)+len(e.silent) > 0 {
				if err := e.flush(ctx); err != nil {
					return err
				}
			}
		}
	}
	return e.end(ctx)
}

// connectRaw starts one attempt; it returns the pending connection, or the outcome when
// the kernel answered at once (loopback often does).
func (e *engine) connectRaw(epfd int, j job, now time.Time) (*rawConn, outcome) {
	e.probes.Add(1)
	a := j.addr.Addr()
	var sa syscall.Sockaddr
	family := syscall.AF_INET
	if a.Is4() {
		sa = &syscall.SockaddrInet4{Port: int(j.addr.Port()), Addr: a.As4()}
	} else {
		family = syscall.AF_INET6
		sa = &syscall.SockaddrInet6{Port: int(j.addr.Port()), Addr: a.As16()}
	}
	local := func() (*rawConn, outcome) {
		j.local++
		if j.local > 50 {
			return nil, outcome{j: j, st: stFiltered}
		}
		return nil, outcome{j: j, st: stLocal}
	}
	fd, err := rawSocket(family)
	if err != nil {
		return local()
	}
	err = rawConnect(fd, sa)
	switch {
	case err == nil:
		closeFD(fd, true)
		return nil, outcome{j: j, st: stOpen, rtt: wall.Since(now)}
	case errors.Is(err, syscall.EINPROGRESS):
		ev := syscall.EpollEvent{Events: syscall.EPOLLOUT | syscall.EPOLLERR | syscall.EPOLLHUP, Fd: int32(fd)}
		if _, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, uintptr(epfd), syscall.EPOLL_CTL_ADD, uintptr(fd), uintptr(unsafe.Pointer(&ev)), 0, 0); errno != 0 {
			rawClose(fd)
			return local()
		}
		return &rawConn{fd: fd, j: j, start: now, deadline: now.Add(j.timeout), idx: -1}, outcome{}
	}
	rawClose(fd)
	errno, _ := err.(syscall.Errno)
	st := classifyErrno(errno)
	if st == stLocal {
		return local()
	}
	return nil, outcome{j: j, st: st, rtt: wall.Since(now)}
}

func classifyErrno(e syscall.Errno) byte {
	switch e {
	case 0:
		return stOpen
	case syscall.ECONNREFUSED:
		return stClosed
	case syscall.ETIMEDOUT:
		return stTimeout
	case syscall.EADDRNOTAVAIL, syscall.EAGAIN, syscall.ENOBUFS, syscall.EMFILE, syscall.ENFILE, syscall.EADDRINUSE, syscall.EINTR:
		return stLocal
	}
	return stFiltered // unreachable, prohibited, refused by a local firewall
}

// closeFD closes a socket; an open one with a reset (linger 0), leaving no TIME_WAIT.
func closeFD(fd int, reset bool) {
	if reset {
		l := syscall.Linger{Onoff: 1, Linger: 0}
		syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), syscall.SOL_SOCKET, syscall.SO_LINGER, uintptr(unsafe.Pointer(&l)), unsafe.Sizeof(l), 0)
	}
	rawClose(fd)
}

// The calls below never block (the sockets are non-blocking), so they go to the kernel
// without telling the Go scheduler: with syscall.Syscall every attempt could hand the
// processor to another thread, which costs more than the connect itself.

func rawSocket(family int) (int, error) {
	fd, _, errno := syscall.RawSyscall(syscall.SYS_SOCKET, uintptr(family), syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

func rawConnect(fd int, sa syscall.Sockaddr) error {
	var ptr unsafe.Pointer
	var size uintptr
	var r4 syscall.RawSockaddrInet4
	var r6 syscall.RawSockaddrInet6
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		r4.Family = syscall.AF_INET
		p := (*[2]byte)(unsafe.Pointer(&r4.Port))
		p[0], p[1] = byte(a.Port>>8), byte(a.Port)
		r4.Addr = a.Addr
		ptr, size = unsafe.Pointer(&r4), unsafe.Sizeof(r4)
	case *syscall.SockaddrInet6:
		r6.Family = syscall.AF_INET6
		p := (*[2]byte)(unsafe.Pointer(&r6.Port))
		p[0], p[1] = byte(a.Port>>8), byte(a.Port)
		r6.Addr = a.Addr
		ptr, size = unsafe.Pointer(&r6), unsafe.Sizeof(r6)
	default:
		return syscall.EAFNOSUPPORT
	}
	_, _, errno := syscall.RawSyscall(syscall.SYS_CONNECT, uintptr(fd), uintptr(ptr), size)
	if errno != 0 {
		return errno
	}
	return nil
}

func rawClose(fd int) { syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0) }

func rawSoError(fd int) (int, error) {
	var v int32
	l := uint32(4)
	_, _, errno := syscall.RawSyscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), syscall.SOL_SOCKET, syscall.SO_ERROR, uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return 0, errno
	}
	return int(v), nil
}

// rawEpollPoll collects ready events without waiting. epoll_pwait with no signal mask is
// epoll_wait, and unlike it exists on every Linux architecture (arm64 has no epoll_wait).
func rawEpollPoll(epfd int, events []syscall.EpollEvent) (int, error) {
	n, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
