package broker

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"
)

// Per-client-address limits (Config.MaxSessionsPerIP, MaxHeldPerIP). The
// client address is the TCP peer's, or, when the peer is one of
// Config.TrustedProxies, the right-most X-Forwarded-For address that is
// not itself a trusted proxy. Counts are per node, like the per-browser
// ones: in a cluster the limits bound what one address can hold on each
// node.

// The per-address limits, as the Observer names them.
const (
	LimitSessionsPerIP = "sessions_per_ip" // Config.MaxSessionsPerIP
	LimitHeldPerIP     = "held_per_ip"     // Config.MaxHeldPerIP
)

// limitWarnEvery bounds the WARN of refusals by a per-address limit to one
// per limit per interval (the metric counts every refusal).
const limitWarnEvery = time.Minute

// limitWarnings remembers when each per-address limit was last logged
// (unix ns).
type limitWarnings struct{ sessions, held atomic.Int64 }

// limitRefused counts a refusal by the per-address limit (max) for addr
// and, at most once per limitWarnEvery per limit, logs a WARN: behind a
// balancer or proxy that is not in TrustedProxies, every client has the
// balancer's address, and the limit caps the whole deployment.
func (b *Broker) limitRefused(limit, addr string, max int) {
	b.obs.LimitRefused(limit)
	last := &b.limitWarned.sessions
	if limit == LimitHeldPerIP {
		last = &b.limitWarned.held
	}
	now := time.Now().UnixNano()
	prev := last.Load()
	if prev != 0 && now-prev < int64(limitWarnEvery) || !last.CompareAndSwap(prev, now) {
		return
	}
	b.log.Warn("per-address limit reached; refusing", "limit", limit, "max", max, "address", addr,
		"hint", "if clients reach this node through a balancer or proxy, list its addresses in --trusted-proxies so that limits apply to client addresses")
}

// clientIP returns the address limits apply to ("" if unknown).
func (b *Broker) clientIP(r *http.Request) string {
	peer := hostOf(r.RemoteAddr)
	if len(b.cfg.TrustedProxies) == 0 || !b.trusted(peer) {
		return peer
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		h := strings.TrimSpace(hops[i])
		if _, err := netip.ParseAddr(h); err != nil {
			return peer // malformed: do not let the header choose
		}
		if !b.trusted(h) {
			return h
		}
	}
	return peer
}

func (b *Broker) trusted(ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range b.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// hostOf strips the port of host:port (the address itself otherwise).
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
