//go:build !linux

package broker

import "syscall"

// readPoller is Linux-only (epoll); elsewhere nothing parks and every
// connection keeps a goroutine blocked in its read.
type readPoller struct{}

type readable interface{ readable() }

var poller = &readPoller{}

func (p *readPoller) available() bool { return false }

func (p *readPoller) park(syscall.RawConn, readable) (uint64, bool) { return 0, false }

func (p *readPoller) cancel(uint64) {}
