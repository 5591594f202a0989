//go:build linux

package netpoll

import (
	"errors"
	"sync"
	"syscall"
)

// Poller lets an idle connection wait for its next bytes without a
// goroutine: one shared epoll instance watches every parked socket and
// starts a goroutine for a socket only when it turns readable (data, EOF or
// error). Go's own netpoller keeps its registration of the same socket;
// this is a second, independent epoll set (EPOLLONESHOT, level-triggered,
// so bytes that arrived before the registration are reported at once).
//
// Contract: a socket is parked by at most one caller at a time; the caller
// owns the socket until its Readable method runs (on a new goroutine, at
// most once per park) or until it calls Cancel. Closing a parked socket
// removes it from the epoll set (the kernel does that on close); the owner
// must still call Cancel to drop its entry here.
//
// A server has one. Its epoll instance and goroutine exist only while
// something is parked: the loop closes the instance when it ends.
type Poller struct {
	mu      sync.Mutex
	epfd    int // -1: not created yet (or closed); -2: epoll unavailable
	running bool
	next    uint64
	waiting map[uint64]Readable
}

// NewPoller returns a Poller; it opens nothing until a socket is parked.
func NewPoller() *Poller { return &Poller{epfd: -1, waiting: map[uint64]Readable{}} }

// pollWaitMillis bounds one epoll_wait, so that the poller goroutine ends
// soon after the last socket leaves (no goroutine outlives its sockets).
const pollWaitMillis = 100

// Available reports whether sockets can be parked (epoll works here).
func (p *Poller) Available() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.openLocked()
}

// openLocked creates the epoll instance if there is none; p.mu held.
func (p *Poller) openLocked() bool {
	if p.epfd == -1 {
		fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			fd = -2
		}
		p.epfd = fd
	}
	return p.epfd >= 0
}

// Park registers rc. It returns the id to cancel with, or ok=false if
// parking is not possible (no epoll, or the socket is already closed): the
// caller must then read (block) itself.
func (p *Poller) Park(rc syscall.RawConn, r Readable) (id uint64, ok bool) {
	p.mu.Lock()
	if !p.openLocked() {
		p.mu.Unlock()
		return 0, false
	}
	epfd := p.epfd
	p.next++
	id = p.next
	p.waiting[id] = r
	if !p.running {
		p.running = true
		go p.loop(epfd)
	}
	p.mu.Unlock()

	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT}
	setEventID(&ev, id)
	var ctlErr error
	err := rc.Control(func(fd uintptr) {
		ctlErr = syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
		if errors.Is(ctlErr, syscall.EEXIST) {
			// Still registered from an earlier park whose one-shot fired.
			ctlErr = syscall.EpollCtl(epfd, syscall.EPOLL_CTL_MOD, int(fd), &ev)
		}
	})
	if err != nil || ctlErr != nil {
		p.Cancel(id)
		return 0, false
	}
	return id, true
}

// Cancel drops a parked entry; a readiness event for it is then ignored.
func (p *Poller) Cancel(id uint64) {
	p.mu.Lock()
	delete(p.waiting, id)
	p.mu.Unlock()
}

func setEventID(ev *syscall.EpollEvent, id uint64) {
	ev.Fd, ev.Pad = int32(uint32(id)), int32(uint32(id>>32))
}

func eventID(ev *syscall.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// loop dispatches readiness events until nothing is parked.
func (p *Poller) loop(epfd int) {
	var events [128]syscall.EpollEvent
	var ready []Readable
	for {
		n, err := syscall.EpollWait(epfd, events[:], pollWaitMillis)
		if err != nil && !errors.Is(err, syscall.EINTR) {
			n = 0
		}
		ready = ready[:0]
		p.mu.Lock()
		for i := 0; i < n; i++ {
			id := eventID(&events[i])
			if r, ok := p.waiting[id]; ok {
				delete(p.waiting, id)
				ready = append(ready, r)
			}
		}
		if n <= 0 && len(p.waiting) == 0 {
			// Nothing parked: end, and drop the epoll instance (a socket
			// parked later gets a new one, under p.mu).
			p.running = false
			_ = syscall.Close(epfd)
			p.epfd = -1
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		for _, r := range ready {
			go r.Readable()
		}
		clear(ready)
	}
}

// WriteNonBlocking writes p to the socket with one write(2), without
// waiting: it returns how much the socket took (0 if its buffer is full).
// The caller must be the socket's only writer.
func WriteNonBlocking(rc syscall.RawConn, p []byte) (int, error) {
	var n int
	var werr error
	if err := rc.Control(func(fd uintptr) { n, werr = syscall.Write(int(fd), p) }); err != nil {
		return 0, err
	}
	if errors.Is(werr, syscall.EAGAIN) || errors.Is(werr, syscall.EINTR) {
		return 0, nil
	}
	if werr != nil {
		return 0, werr
	}
	return n, nil
}
