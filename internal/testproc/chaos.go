package testproc

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fault injection for the chaos suite: crash and restart Redis, slow down
// and cut one node's Redis link, cut a node off gossip.

// Kill crashes redis-server (SIGKILL by PID) and waits until it exited.
// Everything it stored is lost (no persistence), as after the crash of a
// cache-only Redis.
func (r *Redis) Kill() {
	if r.Cmd.Process != nil {
		_ = r.Cmd.Process.Kill()
	}
	<-r.done
}

// StartAgain starts redis-server again on the same port after Kill
// (clients reconnect to the same address), with the same persistence: a
// durable Redis (StartRedisDurable) comes back with its data, another one
// empty.
func (r *Redis) StartAgain(t testing.TB) {
	t.Helper()
	nr := startRedis(t, r.Port, r.args)
	r.Proc = nr.Proc
}

// Restart kills redis-server and starts a new one on the same port after
// down.
func (r *Redis) Restart(t testing.TB, down time.Duration) {
	t.Helper()
	r.Kill()
	time.Sleep(down)
	r.StartAgain(t)
}

// FaultProxy is a TCP proxy that can add latency to its link as well as
// cut and restore it (the link of one node to Redis). Latency delays each
// chunk of bytes by the same amount in each direction while keeping the
// byte stream in order; it does not limit throughput.
type FaultProxy struct {
	Addr   string
	target string
	ln     net.Listener

	mu    sync.Mutex
	cut   bool
	delay time.Duration
	links map[*link]struct{}
	wg    sync.WaitGroup
}

// link is one proxied connection: the client side, the upstream side and
// a channel closed when either fails.
type link struct {
	a, b net.Conn
	once sync.Once
	dead chan struct{}
}

func (l *link) close() {
	l.once.Do(func() {
		close(l.dead)
		l.a.Close()
		l.b.Close()
	})
}

// StartFaultProxy proxies a random loopback port to target until the test
// ends.
func StartFaultProxy(t testing.TB, target string) *FaultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &FaultProxy{Addr: ln.Addr().String(), target: target, ln: ln, links: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.Cut()
		p.wg.Wait()
	})
	return p
}

func (p *FaultProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		cut := p.cut
		p.mu.Unlock()
		if cut {
			c.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			c.Close()
			continue
		}
		l := &link{a: c, b: up, dead: make(chan struct{})}
		p.mu.Lock()
		if p.cut { // cut while dialling
			p.mu.Unlock()
			l.close()
			continue
		}
		p.links[l] = struct{}{}
		p.wg.Add(4)
		p.mu.Unlock()
		p.direction(l, l.b, l.a)
		p.direction(l, l.a, l.b)
	}
}

type chunk struct {
	b  []byte
	at time.Time
}

// direction copies src to dst through a queue of time-stamped chunks, each
// written once the current delay has passed since it was read.
func (p *FaultProxy) direction(l *link, dst, src net.Conn) {
	q := make(chan chunk, 256)
	go func() { // reader
		defer p.wg.Done()
		defer close(q)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				select {
				case q <- chunk{buf[:n], time.Now()}:
				case <-l.dead:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	go func() { // writer
		defer p.wg.Done()
		defer p.drop(l)
		for c := range q {
			if wait := time.Until(c.at.Add(p.currentDelay())); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-l.dead:
					t.Stop()
					return
				}
			}
			if _, err := dst.Write(c.b); err != nil {
				return
			}
		}
	}()
}

func (p *FaultProxy) drop(l *link) {
	l.close()
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// Delay sets the latency added in each direction (0: none). It applies to
// bytes already queued as well.
func (p *FaultProxy) Delay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

func (p *FaultProxy) currentDelay() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay
}

// Cut closes every proxied connection and refuses new ones.
func (p *FaultProxy) Cut() {
	p.mu.Lock()
	p.cut = true
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
}

// Restore accepts connections again.
func (p *FaultProxy) Restore() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// StartClusterWithProxy is StartCluster where node number proxied reaches
// Redis through a FaultProxy; every node is behind the balancer.
func StartClusterWithProxy(t testing.TB, n, proxied int, extra ...string) (*Cluster, *FaultProxy) {
	t.Helper()
	c := &Cluster{Redis: StartRedis(t), Path: "/cometd"}
	proxy := StartFaultProxy(t, c.Redis.Addr)
	for i := 0; i < n; i++ {
		url := c.Redis.URL()
		if i == proxied {
			url = "redis://" + proxy.Addr
		}
		c.Nodes = append(c.Nodes, c.StartNodeWithRedis(t, url, extra...))
	}
	c.WaitMembers(t, n, 10*time.Second)
	var backends []string
	for _, nd := range c.Nodes {
		backends = append(backends, strings.TrimPrefix(nd.Base, "http://"))
	}
	c.Balancer = StartBalancer(t, backends)
	return c, proxy
}

// AwaitMembers is WaitMembers returning an error instead of failing the
// test: it waits until every live node reports want members or ctx ends.
func (c *Cluster) AwaitMembers(ctx context.Context, want int) error {
	reason := "not asked yet"
	for {
		ok := true
		for _, nd := range c.Nodes {
			if !nd.alive() {
				continue
			}
			got, err := nd.Members(ctx)
			if err == nil && got == want {
				continue
			}
			ok = false
			if ctx.Err() == nil { // keep the last answer, not the deadline
				reason = fmt.Sprintf("node %s reports %d members (err %v), want %d", nd.Tag, got, err, want)
			}
			break
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("membership: %s", reason)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// GossipIsolate cuts the node off gossip (debug API; see
// cluster.GossipFaults): its peers and it see each other fail.
func (n *Node) GossipIsolate(ctx context.Context) error {
	return n.debugPost(ctx, "/debug/bayeux/gossip/isolate")
}

// GossipRestore lets the node's gossip through again.
func (n *Node) GossipRestore(ctx context.Context) error {
	return n.debugPost(ctx, "/debug/bayeux/gossip/restore")
}

func (n *Node) debugPost(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.Base+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
