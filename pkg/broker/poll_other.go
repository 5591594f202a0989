//go:build !linux

package broker

import "syscall"

// readPoller is Linux-only (epoll); elsewhere nothing parks and every
// connection keeps a goroutine blocked in its read.
type readPoller struct{}

type readable interface{ readable() }

func newReadPoller() *readPoller { return &readPoller{} }

func (p *readPoller) available() bool { return false }

func (p *readPoller) park(syscall.RawConn, readable) (uint64, bool) { return 0, false }

func (p *readPoller) cancel(uint64) {}

// writeNonBlocking writes nothing here: the writer goroutine writes.
func writeNonBlocking(syscall.RawConn, []byte) (int, error) { return 0, nil }
