package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/bayeux-cluster/bayeux/internal/logbridge"
)

// ProtocolVersion is the node-to-node protocol version carried in gossip
// metadata and every gRPC request. Peers with another version are not
// routed to. Version 2: peers forward requests over Node.Forward streams
// (a version 1 node does not serve them).
const ProtocolVersion = 2

// TagLen is the length of a node tag, the prefix of every clientId the node
// issues.
const TagLen = 6

const tagAlphabet = "abcdefghijklmnopqrstuvwxyz234567"

// NodeTag derives a node's tag from its id: 6 base-32 characters (30 bits)
// of SHA-256. Node ids are unique per process incarnation, so a restarted
// node has a new tag.
func NodeTag(nodeID string) string {
	sum := sha256.Sum256([]byte(nodeID))
	v := uint64(sum[0])<<32 | uint64(sum[1])<<24 | uint64(sum[2])<<16 | uint64(sum[3])<<8 | uint64(sum[4])
	b := make([]byte, TagLen)
	for i := range b {
		b[i] = tagAlphabet[v&31]
		v >>= 5
	}
	return string(b)
}

// Meta is what a node tells the others about itself through gossip.
type Meta struct {
	ID    string `json:"id"`
	Tag   string `json:"tag"`
	GRPC  string `json:"grpc"`
	Proto int    `json:"v"`
	// Leaving is set by a node that is about to leave on purpose (drain),
	// so that its departure is not counted as a failure (see Quorum).
	Leaving bool `json:"leaving,omitempty"`
}

// MembershipConfig configures gossip.
type MembershipConfig struct {
	Self   Meta
	Listen string   // host:port to bind (port 0: any)
	Advert string   // host or host:port to advertise (default: the bound address)
	Join   []string // seeds: host:port or a DNS name resolving to several addresses
	// Fast shortens probe and gossip intervals (tests, small LANs).
	Fast   bool
	Logger *slog.Logger
	// Observer, if not nil, is told the number of live nodes on every change.
	Observer Observer
	// OnPeerLost, if not nil, is called (outside any lock) when another
	// node leaves, failed or drained.
	OnPeerLost func()
	// Faults, if not nil, lets tests cut this node's gossip off (see
	// GossipFaults). Never set in production.
	Faults *GossipFaults
	// OnDepart, if not nil, is called (outside locks, from memberlist's
	// event goroutine: it must not block) with a node that left or failed.
	OnDepart func(Meta)
	// Keys, if not empty, encrypt and authenticate gossip (AES-GCM; 16, 24
	// or 32 bytes each): the first encrypts, any of them decrypts. A node
	// without a matching key cannot join.
	Keys [][]byte
}

// Membership tracks the live nodes. Its delegates never block: they update
// a map under a short lock.
type Membership struct {
	cfg MembershipConfig
	ml  *memberlist.Memberlist
	log *slog.Logger

	mu       sync.RWMutex
	byTag    map[string]Meta      // live nodes, self included
	departed map[string]departure // nodes that failed recently (see Quorum)
	joinWhy  string               // why the node is not joined ("" once it is; see Joined)

	leaveOnce sync.Once
	leaving   atomic.Bool   // Leave began: memberlist's complaints are DEBUG
	announced chan struct{} // closed once the departure is announced (AnnounceLeaving)
}

// NewMembership starts gossip on cfg.Listen. Call Join to find peers.
func NewMembership(cfg MembershipConfig) (*Membership, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Membership{cfg: cfg, log: cfg.Logger, byTag: map[string]Meta{}, departed: map[string]departure{}}
	if len(cfg.Join) > 0 {
		m.joinWhy = "joining: no seed answered yet"
	}
	mc := memberlist.DefaultLANConfig()
	if cfg.Fast {
		mc.ProbeInterval = 200 * time.Millisecond
		mc.ProbeTimeout = 100 * time.Millisecond
		mc.GossipInterval = 50 * time.Millisecond
		mc.PushPullInterval = 5 * time.Second
		mc.SuspicionMult = 2
	}
	mc.Name = cfg.Self.ID
	host, port, err := splitHostPort(cfg.Listen, 7946)
	if err != nil {
		return nil, fmt.Errorf("gossip listen %q: %w", cfg.Listen, err)
	}
	mc.BindAddr, mc.BindPort = host, port
	if cfg.Advert != "" {
		ah, ap, err := splitHostPort(cfg.Advert, port)
		if err != nil {
			return nil, fmt.Errorf("advertise %q: %w", cfg.Advert, err)
		}
		ip, err := resolveIP(ah)
		if err != nil {
			return nil, fmt.Errorf("advertise %q: %w", cfg.Advert, err)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = ip, ap
	}
	if len(cfg.Keys) > 0 {
		kr, err := memberlist.NewKeyring(cfg.Keys, cfg.Keys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip keys: %w", err)
		}
		mc.Keyring = kr
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	// memberlist's [LEVEL] lines at their level, through slog; DEBUG once
	// this node leaves (its sockets close under memberlist's goroutines).
	mc.Logger = logbridge.Memberlist(cfg.Logger, m.leaving.Load)
	mc.Delegate = (*delegate)(m)
	mc.Events = (*events)(m)
	var ft *faultyTransport
	if cfg.Faults != nil {
		if ft, err = newFaultyTransport(mc, cfg.Faults); err != nil {
			return nil, err
		}
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		if ft != nil {
			_ = ft.Shutdown()
		}
		return nil, fmt.Errorf("gossip: %w", err)
	}
	m.ml = ml
	m.mu.Lock()
	m.byTag[cfg.Self.Tag] = cfg.Self
	n := len(m.byTag)
	m.mu.Unlock()
	if cfg.Observer != nil {
		cfg.Observer.Members(n)
	}
	return m, nil
}

// resolveIP returns host if it is an IP, else its first IPv4 (or any)
// address: memberlist advertises IP literals only.
func resolveIP(host string) (string, error) {
	if net.ParseIP(host) != nil {
		return host, nil
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return "", fmt.Errorf("resolve %s: %w", host, err)
	}
	for _, ip := range ips {
		if ip.To4() != nil {
			return ip.String(), nil
		}
	}
	return ips[0].String(), nil
}

// splitHostPort splits "host:port" or a bare "host" (port defPort; a
// port of 0 means the bound port).
func splitHostPort(s string, defPort int) (string, int, error) {
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		return s, defPort, nil
	}
	p, err := strconv.Atoi(ps)
	if err != nil {
		return "", 0, err
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, p, nil
}

// Addr returns the advertised gossip address.
func (m *Membership) Addr() string {
	n := m.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// Join keeps trying the seeds until at least one answers or ctx ends. DNS
// names are resolved to every address they carry (a Kubernetes headless
// Service). Until it succeeds, Joined reports why, and a WARN says so at
// most every joinWarnEvery (a seed that does not resolve is named).
func (m *Membership) Join(ctx context.Context) error {
	if len(m.cfg.Join) == 0 {
		return nil
	}
	m.setJoinState(false, "joining: no seed answered yet")
	backoff := 100 * time.Millisecond
	started := time.Now()
	var warned time.Time
	for {
		n, err := m.ml.Join(m.cfg.Join)
		if n > 0 {
			m.setJoinState(true, "")
			m.log.Info("joined cluster", "contacted", n, "members", m.ml.NumMembers())
			return nil
		}
		why := fmt.Sprintf("joined nobody: no seed of %v answered", m.cfg.Join)
		if err != nil {
			why += ": " + err.Error()
		}
		m.setJoinState(false, why)
		if now := time.Now(); now.Sub(warned) >= joinWarnEvery {
			warned = now
			for _, seed := range unresolvedSeeds(ctx, m.cfg.Join) {
				m.log.Warn("gossip seed does not resolve", "seed", seed)
			}
			m.log.Warn("not joined to any node; not ready until a seed answers", "seeds", m.cfg.Join, "for", now.Sub(started).Round(time.Second).String(), "err", errString(err))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("join %v: %w (last error: %w)", m.cfg.Join, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// joinWarnEvery bounds the WARN lines of a node that joined nobody.
const joinWarnEvery = 10 * time.Second

// Joined reports whether this node is part of a cluster: it had no seeds,
// or one answered (the node stays joined when its peers leave later). If
// not, why says what went wrong.
func (m *Membership) Joined() (ok bool, why string) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.joinWhy == "", m.joinWhy
}

func (m *Membership) setJoinState(ok bool, why string) {
	if ok {
		why = ""
	}
	m.mu.Lock()
	m.joinWhy = why
	m.mu.Unlock()
}

// unresolvedSeeds returns the seeds whose host is a name that does not
// resolve.
func unresolvedSeeds(ctx context.Context, seeds []string) []string {
	var out []string
	for _, s := range seeds {
		host, _, err := net.SplitHostPort(s)
		if err != nil {
			host = s
		}
		if host == "" || net.ParseIP(host) != nil {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = net.DefaultResolver.LookupHost(lctx, host)
		cancel()
		if err != nil && ctx.Err() == nil {
			out = append(out, s)
		}
	}
	return out
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Alive returns the live node with tag, if any.
func (m *Membership) Alive(tag string) (Meta, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	meta, ok := m.byTag[tag]
	return meta, ok
}

// Members returns the live nodes.
func (m *Membership) Members() []Meta {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]Meta, 0, len(m.byTag))
	for _, v := range m.byTag {
		out = append(out, v)
	}
	return out
}

// AnnounceLeaving starts telling the peers (in this node's metadata) that
// it is about to leave on purpose, so that they do not count its departure
// as a failure; Leave waits for the announcement (up to timeout). A
// draining node calls it first, so that the announcement travels while it
// hands its sessions off. Calls after the first do nothing.
func (m *Membership) AnnounceLeaving(timeout time.Duration) {
	m.leaveOnce.Do(func() {
		m.mu.Lock()
		self := m.byTag[m.cfg.Self.Tag]
		self.Leaving = true
		m.byTag[m.cfg.Self.Tag] = self
		m.mu.Unlock()
		m.announced = make(chan struct{})
		go func() {
			defer close(m.announced)
			if err := m.ml.UpdateNode(timeout); err != nil {
				m.log.Warn("gossip: announcing departure", "err", err)
			}
		}()
	})
}

// Leave announces departure (AnnounceLeaving, if not called yet, then the
// departure itself) and stops gossip.
func (m *Membership) Leave(timeout time.Duration) error {
	m.AnnounceLeaving(timeout)
	<-m.announced
	m.leaving.Store(true)
	if err := m.ml.Leave(timeout); err != nil {
		m.log.Warn("gossip leave", "err", err)
	}
	return m.ml.Shutdown()
}

func (m *Membership) set(n *memberlist.Node, alive bool) {
	var meta Meta
	if err := json.Unmarshal(n.Meta, &meta); err != nil || meta.Tag == "" {
		m.log.Warn("gossip: member without valid metadata", "peer", n.Name)
		return
	}
	if meta.Proto != ProtocolVersion {
		m.log.Warn("gossip: member speaks another protocol version; not routing to it", "peer", n.Name, "version", meta.Proto)
		alive = false
	}
	departed := false
	m.mu.Lock()
	if alive {
		if old, ok := m.byTag[meta.Tag]; ok && old.ID != meta.ID {
			m.log.Error("gossip: two live nodes share a tag; sessions of one are unreachable", "tag", meta.Tag, "a", old.ID, "b", meta.ID)
		}
		m.byTag[meta.Tag] = meta
	} else if prev := m.byTag[meta.Tag]; prev.ID == meta.ID && meta.ID != m.cfg.Self.ID {
		delete(m.byTag, meta.Tag)
		departed = true
		if !prev.Leaving && !meta.Leaving { // a drain is no failure
			m.noteDepartedLocked(meta.Tag, n.Address())
		}
	}
	if alive {
		delete(m.departed, meta.Tag)
	}
	live := len(m.byTag)
	m.mu.Unlock()
	if m.cfg.Observer != nil {
		m.cfg.Observer.Members(live)
	}
	if !alive && meta.ID != m.cfg.Self.ID && m.cfg.OnPeerLost != nil {
		m.cfg.OnPeerLost()
	}
	m.log.Info("membership change", "peer", meta.ID, "tag", meta.Tag, "alive", alive)
	if departed && m.cfg.OnDepart != nil {
		m.cfg.OnDepart(meta)
	}
}

// delegate provides node metadata; it carries no user messages.
type delegate Membership

func (d *delegate) NodeMeta(limit int) []byte {
	d.mu.RLock()
	self := d.byTag[d.cfg.Self.Tag]
	d.mu.RUnlock()
	if self.Tag == "" {
		self = d.cfg.Self // before NewMembership registered it
	}
	b, _ := json.Marshal(self)
	if len(b) > limit {
		return nil
	}
	return b
}
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// events keeps byTag current. Memberlist calls these serially; they only
// take m.mu briefly.
type events Membership

func (e *events) NotifyJoin(n *memberlist.Node)   { (*Membership)(e).set(n, true) }
func (e *events) NotifyLeave(n *memberlist.Node)  { (*Membership)(e).set(n, false) }
func (e *events) NotifyUpdate(n *memberlist.Node) { (*Membership)(e).set(n, true) }
