package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotPrimary means a new connection in Sentinel mode reached a server
// that the sentinels no longer name as the primary: the connection is
// closed instead of used.
var ErrNotPrimary = errors.New("redis: the server is not the primary the sentinels name")

// primaryCheckTimeout bounds the question to one sentinel: go-redis's
// default read timeout, which its own questions to the sentinels have.
const primaryCheckTimeout = 3 * time.Second

// primaryCheck confirms, once a connection of the Sentinel-mode client is
// made, that the sentinels still name its server as the primary.
//
// go-redis asks a sentinel for the primary's address, then dials it. On a
// loaded host the answer can be stale by the time the connection is made:
// the sentinels failed over meanwhile and the old primary, restarted (as
// an operator or a supervisor does), answers on its old address, empty and
// a primary of its own until the sentinels make it a replica (about ten
// seconds later). A connection made there would stay in use, and go-redis
// even takes the stale address for a switch back and drops its
// connections to the real primary: publishes would start every channel on
// a new epoch (subscribers told 410) on a server about to be wiped, and a
// pub/sub connection there would receive nothing (go-redis never moves a
// pub/sub connection on a switch). Asking again after the connection is
// made closes that window: the old primary is reachable again only after
// the sentinels switched. The dial then fails, and go-redis's next dial
// asks, and gets, the new primary.
//
// The sentinels are asked in the URL's order; the first that answers
// decides, as in go-redis. Every new connection costs one more round trip
// to a sentinel; connections are pooled, so that is rare.
type primaryCheck struct {
	master    string
	sentinels []*redis.SentinelClient
	addrs     []string // the sentinels' addresses, for errors
	log       *slog.Logger
}

func newPrimaryCheck(opts *redis.FailoverOptions, log *slog.Logger) *primaryCheck {
	pc := &primaryCheck{master: opts.MasterName, log: log}
	for _, a := range opts.SentinelAddrs {
		pc.addrs = append(pc.addrs, a)
		pc.sentinels = append(pc.sentinels, redis.NewSentinelClient(&redis.Options{
			Addr: a, Username: opts.SentinelUsername, Password: opts.SentinelPassword,
			TLSConfig: opts.TLSConfig, DialTimeout: primaryCheckTimeout, ReadTimeout: primaryCheckTimeout,
			WriteTimeout: primaryCheckTimeout, MaxRetries: -1, PoolSize: 2, Protocol: 2,
		}))
	}
	return pc
}

func (pc *primaryCheck) close() {
	for _, s := range pc.sentinels {
		_ = s.Close()
	}
}

// DialHook implements redis.Hook: a connection whose server the sentinels
// do not name as the primary is closed, and the dial fails.
func (pc *primaryCheck) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if err := pc.confirm(ctx, conn.RemoteAddr()); err != nil {
			_ = conn.Close()
			return nil, err
		}
		return conn, nil
	}
}

// ProcessHook implements redis.Hook (unchanged).
func (pc *primaryCheck) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

// ProcessPipelineHook implements redis.Hook (unchanged).
func (pc *primaryCheck) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// confirm returns nil when the first sentinel that answers names remote as
// the primary, ErrNotPrimary when it names another server, and an error
// when no sentinel answers.
func (pc *primaryCheck) confirm(ctx context.Context, remote net.Addr) error {
	var errs []error
	for i, s := range pc.sentinels {
		sctx, cancel := context.WithTimeout(ctx, primaryCheckTimeout)
		named, err := s.GetMasterAddrByName(sctx, pc.master).Result()
		if err == nil && len(named) != 2 {
			err = fmt.Errorf("unexpected answer %v", named)
		}
		if err != nil {
			cancel()
			errs = append(errs, fmt.Errorf("sentinel %s: %w", pc.addrs[i], err))
			continue
		}
		same := sameEndpoint(sctx, named[0], named[1], remote)
		cancel()
		if same {
			return nil
		}
		primary := net.JoinHostPort(named[0], named[1])
		pc.log.Warn("redis: connection refused: the sentinels name another primary (failover under way)", "server", remote.String(), "primary", primary)
		return fmt.Errorf("%w: connected to %s, sentinels name %s", ErrNotPrimary, remote, primary)
	}
	return fmt.Errorf("redis: confirming the primary %s: no sentinel answered: %w", pc.master, errors.Join(errs...))
}

// sameEndpoint reports whether remote is host:port, resolving host when
// it is a name. An address it cannot compare counts as the same.
func sameEndpoint(ctx context.Context, host, port string, remote net.Addr) bool {
	rh, rp, err := net.SplitHostPort(remote.String())
	if err != nil {
		return true
	}
	if rp != port {
		return false
	}
	rip := net.ParseIP(rh)
	if rip == nil {
		return rh == host
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.Equal(rip)
	}
	ips, err := net.DefaultResolver.LookupIP(ctx, "ip", host)
	if err != nil {
		return true
	}
	for _, ip := range ips {
		if ip.Equal(rip) {
			return true
		}
	}
	return false
}
