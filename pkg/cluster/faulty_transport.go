package cluster

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// GossipFaults injects faults into a node's gossip, for tests and chaos
// drills only (a node exposes it with --debug-api). While isolated, the
// node's memberlist transport drops every packet it sends or receives and
// refuses every stream in either direction, so the node and its peers see
// each other fail exactly as in a network partition, while every other
// link of the node (HTTP, gRPC, Redis) stays up. The zero value is ready to
// use and not isolated; it is safe for concurrent use.
type GossipFaults struct {
	isolated atomic.Bool
	dropped  atomic.Int64
}

// Isolate starts dropping all gossip traffic to and from peers.
func (f *GossipFaults) Isolate() { f.isolated.Store(true) }

// Restore lets gossip traffic through again.
func (f *GossipFaults) Restore() { f.isolated.Store(false) }

// Isolated reports whether gossip is cut off.
func (f *GossipFaults) Isolated() bool { return f.isolated.Load() }

// Dropped returns how many packets were dropped and streams refused so far.
func (f *GossipFaults) Dropped() int64 { return f.dropped.Load() }

// drop reports whether traffic is to be dropped now, counting it if so.
func (f *GossipFaults) drop() bool {
	if f.isolated.Load() {
		f.dropped.Add(1)
		return true
	}
	return false
}

// errIsolated is what a refused outgoing stream fails with.
var errIsolated = errors.New("gossip isolated (fault injection)")

// faultyTransport wraps a memberlist transport (the NetTransport memberlist
// would create itself) and applies GossipFaults to all of its traffic.
// Incoming packets and streams are relayed from the inner transport's
// channels by two goroutines, which end at Shutdown.
type faultyTransport struct {
	inner    memberlist.NodeAwareTransport
	f        *GossipFaults
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	stopping chan struct{} // Shutdown began: relays stop handing over
	done     chan struct{} // the inner transport is down: relays return
	wg       sync.WaitGroup
	once     sync.Once
}

var _ memberlist.NodeAwareTransport = (*faultyTransport)(nil)

// newFaultyTransport binds the NetTransport memberlist.Create would bind for
// mc (same address, same retries on a racy port-0 bind), wraps it with f
// and installs it as mc.Transport. With port 0, mc.BindPort and
// mc.AdvertisePort become the bound port, as memberlist does for its own
// transport.
func newFaultyTransport(mc *memberlist.Config, f *GossipFaults) (*faultyTransport, error) {
	nc := &memberlist.NetTransportConfig{BindAddrs: []string{mc.BindAddr}, BindPort: mc.BindPort, Logger: mc.Logger}
	tries := 1
	if mc.BindPort == 0 {
		tries = 10 // TCP and UDP must get the same port: retry a lost race
	}
	var nt *memberlist.NetTransport
	var err error
	for range tries {
		if nt, err = memberlist.NewNetTransport(nc); err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("gossip transport: %w", err)
	}
	if mc.BindPort == 0 {
		port := nt.GetAutoBindPort()
		mc.BindPort, mc.AdvertisePort = port, port
	}
	t := &faultyTransport{
		inner:    nt,
		f:        f,
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
		stopping: make(chan struct{}),
		done:     make(chan struct{}),
	}
	t.wg.Add(2)
	go t.relayPackets()
	go t.relayStreams()
	mc.Transport = t
	return t, nil
}

// relayPackets hands the inner transport's packets to memberlist unless
// they are to be dropped. Once stopping, it only drains the inner
// transport (whose listeners block until a packet is taken) until done.
func (t *faultyTransport) relayPackets() {
	defer t.wg.Done()
	in := t.inner.PacketCh()
	for {
		select {
		case p := <-in:
			if t.f.drop() {
				continue
			}
			select {
			case t.packetCh <- p:
			case <-t.stopping:
			}
		case <-t.done:
			return
		}
	}
}

// relayStreams is relayPackets for incoming streams: a refused stream is
// closed at once.
func (t *faultyTransport) relayStreams() {
	defer t.wg.Done()
	in := t.inner.StreamCh()
	for {
		select {
		case c := <-in:
			if t.f.drop() {
				_ = c.Close()
				continue
			}
			select {
			case t.streamCh <- c:
			case <-t.stopping:
				_ = c.Close()
			}
		case <-t.done:
			return
		}
	}
}

func (t *faultyTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

// WriteTo drops the packet while isolated, as a lost datagram: no error.
func (t *faultyTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.f.drop() {
		return time.Now(), nil
	}
	return t.inner.WriteTo(b, addr)
}

func (t *faultyTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	if t.f.drop() {
		return time.Now(), nil
	}
	return t.inner.WriteToAddress(b, addr)
}

func (t *faultyTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

func (t *faultyTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.f.drop() {
		return nil, errIsolated
	}
	return t.inner.DialTimeout(addr, timeout)
}

func (t *faultyTransport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.f.drop() {
		return nil, errIsolated
	}
	return t.inner.DialAddressTimeout(addr, timeout)
}

func (t *faultyTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown stops the inner transport while the relays keep draining it (its
// listeners may be blocked handing over a packet), then the relays. It is
// safe to call more than once and whether or not memberlist still reads.
func (t *faultyTransport) Shutdown() error {
	var err error
	t.once.Do(func() {
		close(t.stopping)
		err = t.inner.Shutdown()
		close(t.done)
		t.wg.Wait()
	})
	return err
}
