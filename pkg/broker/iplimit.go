package broker

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Per-client-address limits (Config.MaxSessionsPerIP, MaxHeldPerIP). The
// client address is the TCP peer's, or, when the peer is one of
// Config.TrustedProxies, the right-most X-Forwarded-For address that is
// not itself a trusted proxy. Counts are per node, like the per-browser
// ones: in a cluster the limits bound what one address can hold on each
// node.

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
