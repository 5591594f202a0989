//go:build !linux

package netpoll

import "syscall"

// Poller is Linux-only (epoll); elsewhere nothing parks and every
// connection keeps a goroutine blocked in its read.
type Poller struct{}

// NewPoller returns a Poller that parks nothing.
func NewPoller() *Poller { return &Poller{} }

// Available reports false: there is no epoll here.
func (p *Poller) Available() bool { return false }

// Park never parks here.
func (p *Poller) Park(syscall.RawConn, Readable) (uint64, bool) { return 0, false }

// Cancel does nothing here.
func (p *Poller) Cancel(uint64) {}

// WriteNonBlocking writes nothing here: the caller's writer goroutine writes.
func WriteNonBlocking(syscall.RawConn, []byte) (int, error) { return 0, nil }
