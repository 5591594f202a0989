package testproc

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelMaster is the master name a Sentinel set monitors.
const SentinelMaster = "bx"

// Sentinel is a Redis primary with replicas watched by three sentinels,
// every one a real redis-server (sentinels run as redis-server --sentinel)
// on a random loopback port, without persistence.
type Sentinel struct {
	Servers   []*Redis // [0] is the first primary
	Sentinels []*Proc
	Addrs     []string // the sentinels' addresses
}

// sentinelDownAfter is how long a primary must be unreachable for the
// sentinels to fail it over (plus an election, about a second). At 1s, a
// primary (or the sentinels) starved of CPU on a loaded machine was taken
// for down: a second failover the tests did not cause.
const sentinelDownAfter = 3000 * time.Millisecond

// StartSentinel starts a primary, replicas replicas of it and three
// sentinels (quorum 2), and waits until the sentinels know the replicas
// and each other.
func StartSentinel(t testing.TB, replicas int) *Sentinel {
	t.Helper()
	s := &Sentinel{}
	// A replica writes the full synchronization it receives to its
	// directory (and a primary that turned replica too): a temporary one.
	dir := t.TempDir()
	primary := startRedisFree(t, []string{"--save", "", "--appendonly", "no", "--dir", dir, "--dbfilename", "primary.rdb"})
	s.Servers = append(s.Servers, primary)
	for i := range replicas {
		s.Servers = append(s.Servers, startRedisFree(t, []string{"--save", "", "--appendonly", "no", "--dir", dir,
			"--dbfilename", fmt.Sprintf("replica-%d.rdb", i), "--replicaof", "127.0.0.1", fmt.Sprint(primary.Port)}))
	}
	for i := range 3 {
		port := FreePort(t)
		conf := filepath.Join(dir, fmt.Sprintf("sentinel-%d.conf", i))
		body := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\n"+
			"sentinel monitor %s 127.0.0.1 %d 2\n"+
			"sentinel down-after-milliseconds %s %d\n"+
			"sentinel failover-timeout %s 10000\n"+
			"sentinel parallel-syncs %s 1\n",
			port, SentinelMaster, primary.Port, SentinelMaster, sentinelDownAfter.Milliseconds(), SentinelMaster, SentinelMaster)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		p := startProc(t, "redis-server", conf, "--sentinel")
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		waitTCP(t, addr, p)
		s.Sentinels = append(s.Sentinels, p)
		s.Addrs = append(s.Addrs, addr)
	}
	if err := s.awaitSettled(replicas, 30*time.Second); err != nil {
		t.Fatalf("sentinels did not settle: %v\n%s", err, s.logs())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.AwaitReplicas(ctx, replicas); err != nil {
		t.Fatalf("replicas not in sync: %v", err)
	}
	return s
}

// URL returns the nodes' --redis URL for this set.
func (s *Sentinel) URL() string {
	return "redis+sentinel://" + strings.Join(s.Addrs, ",") + "/" + SentinelMaster
}

// Primary asks a sentinel for the current primary's address.
func (s *Sentinel) Primary(ctx context.Context) (string, error) {
	var last error
	for _, a := range s.Addrs {
		sc := redis.NewSentinelClient(&redis.Options{Addr: a, MaxRetries: -1})
		addr, err := sc.GetMasterAddrByName(ctx, SentinelMaster).Result()
		_ = sc.Close()
		if err == nil && len(addr) == 2 {
			return addr[0] + ":" + addr[1], nil
		}
		last = err
	}
	return "", fmt.Errorf("no sentinel names a primary: %w", last)
}

// Server returns the server listening on addr, or nil.
func (s *Sentinel) Server(addr string) *Redis {
	for _, r := range s.Servers {
		if r.Addr == addr {
			return r
		}
	}
	return nil
}

// RestartAsReplica starts the server at addr again after Kill, as a
// replica of the current primary: how a crashed primary without
// persistence must come back. Started as a primary, it would be an empty
// one until the sentinels make it a replica, about ten seconds; a
// failover meanwhile (the new primary taken for down) may promote it, and
// the others then resynchronize from it: the data set, acknowledged
// writes included, is wiped (Redis's replication guide, "Safety of
// replication when master has persistence turned off").
func (s *Sentinel) RestartAsReplica(ctx context.Context, t testing.TB, addr string) error {
	t.Helper()
	r := s.Server(addr)
	if r == nil {
		return fmt.Errorf("no server at %s", addr)
	}
	primary, err := s.Primary(ctx)
	if err != nil {
		return err
	}
	if primary == addr {
		return fmt.Errorf("%s is still the primary", addr)
	}
	host, port, err := net.SplitHostPort(primary)
	if err != nil {
		return fmt.Errorf("primary %q: %w", primary, err)
	}
	args := make([]string, 0, len(r.args)+3)
	for i := 0; i < len(r.args); i++ {
		if r.args[i] == "--replicaof" {
			i += 2 // the former primary's host and port
			continue
		}
		args = append(args, r.args[i])
	}
	nr := startRedis(t, r.Port, append(args, "--replicaof", host, port))
	r.Proc = nr.Proc
	return nil
}

// awaitSettled waits until every sentinel sees the primary with want
// replicas and the two other sentinels.
func (s *Sentinel) awaitSettled(want int, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var last error
	for {
		last = s.settled(ctx, want)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *Sentinel) settled(ctx context.Context, want int) error {
	for _, a := range s.Addrs {
		sc := redis.NewSentinelClient(&redis.Options{Addr: a, MaxRetries: -1})
		m, err := sc.Master(ctx, SentinelMaster).Result()
		_ = sc.Close()
		if err != nil {
			return fmt.Errorf("sentinel %s: %w", a, err)
		}
		if m["num-slaves"] != fmt.Sprint(want) || m["num-other-sentinels"] != "2" || strings.Contains(m["flags"], "down") {
			return fmt.Errorf("sentinel %s: replicas %s, other sentinels %s, flags %s", a, m["num-slaves"], m["num-other-sentinels"], m["flags"])
		}
	}
	return nil
}

// AwaitFailover waits until the sentinels name a primary other than old,
// and returns it.
func (s *Sentinel) AwaitFailover(ctx context.Context, old string) (string, error) {
	for {
		p, err := s.Primary(ctx)
		if err == nil && p != old {
			return p, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no failover from %s (last: %s, %v)", old, p, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// AwaitReplicas waits until the current primary reports want connected
// replicas, every one online (in sync, so WAIT counts it).
func (s *Sentinel) AwaitReplicas(ctx context.Context, want int) error {
	for {
		p, err := s.Primary(ctx)
		if err == nil {
			c := redis.NewClient(&redis.Options{Addr: p, MaxRetries: -1})
			var info string
			info, err = c.Info(ctx, "replication").Result()
			_ = c.Close()
			if err == nil && strings.Contains(info, fmt.Sprintf("connected_slaves:%d", want)) && strings.Count(info, "state=online") == want {
				return nil
			}
			if err == nil {
				err = fmt.Errorf("primary %s: not %d replicas yet", p, want)
			}
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *Sentinel) logs() string {
	var b strings.Builder
	for i, p := range s.Sentinels {
		fmt.Fprintf(&b, "--- sentinel %d\n%s\n", i, tail(p.Log.String(), 2000))
	}
	return b.String()
}
