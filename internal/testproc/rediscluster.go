package testproc

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Host is where a helper process runs: an IP address it binds to, which
// the test process can reach, free ports on it, and how to build a command
// that runs there. Loopback is the test's own network namespace; a NetNS
// (netns.go) is another one.
type Host interface {
	// IP is the address processes on the host bind to.
	IP() string
	// Port returns a TCP port free on IP() a moment ago.
	Port(t testing.TB) int
	// Command builds a command running name with args on the host. It must
	// exec the program in place (keep its PID), so that stopping the
	// process by PID stops the program.
	Command(name string, args ...string) *exec.Cmd
}

type loopbackHost struct{}

func (loopbackHost) IP() string            { return "127.0.0.1" }
func (loopbackHost) Port(t testing.TB) int { t.Helper(); return FreePort(t) }
func (loopbackHost) Command(name string, args ...string) *exec.Cmd {
	return exec.Command(name, args...)
}

// Loopback runs processes in the test's own network namespace, bound to
// 127.0.0.1.
var Loopback Host = loopbackHost{}

// startCmd starts cmd as a Proc: own process group, output captured,
// killed (by PID, with its group) when the test ends.
func startCmd(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{Cmd: cmd, Log: &SyncBuffer{}, done: make(chan struct{})}
	p.Cmd.Stdout, p.Cmd.Stderr = p.Log, p.Log
	ownGroup(p.Cmd)
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %v: %v (run scripts/test.sh to install it)", cmd.Args, err)
	}
	go func() { _ = p.Cmd.Wait(); close(p.done) }()
	t.Cleanup(p.Stop)
	return p
}

// RedisInstance is one redis-server of a RedisCluster.
type RedisInstance struct {
	*Proc
	Host    Host
	Addr    string // IP:port, as the cluster and its clients know it
	BusPort int    // cluster bus port
}

// RedisCluster is a real Redis Cluster (redis-server --cluster-enabled
// yes, formed by redis-cli --cluster create) whose processes are stopped
// when the test ends.
type RedisCluster struct {
	Instances []*RedisInstance // in start order
	masters   []string         // master addresses once formed, in Instances order
}

// StartRedisCluster starts masters × (1 + replicasPerMaster) redis-server
// processes on free loopback ports, forms a cluster of them with masters
// masters (at least 3, as redis-cli requires) and replicasPerMaster
// replicas each, and returns once every node reports cluster_state:ok with
// all 16384 slots assigned and every replica linked to its master. It
// fails the test otherwise.
func StartRedisCluster(t testing.TB, masters, replicasPerMaster int) *RedisCluster {
	t.Helper()
	return StartRedisClusterOn(t, []Host{Loopback}, masters, replicasPerMaster)
}

// StartRedisClusterOn is StartRedisCluster with instance i running on
// hosts[i % len(hosts)] (bound to, and announcing, that host's IP): give
// it network namespaces to spread the cluster over several addresses.
// Which instances become masters is redis-cli's choice (it spreads
// masters over IPs); Masters and URL report the outcome.
func StartRedisClusterOn(t testing.TB, hosts []Host, masters, replicasPerMaster int) *RedisCluster {
	t.Helper()
	if len(hosts) == 0 || masters < 3 || replicasPerMaster < 0 {
		t.Fatalf("StartRedisClusterOn: need hosts, at least 3 masters and replicas >= 0 (got %d hosts, %d, %d)", len(hosts), masters, replicasPerMaster)
	}
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is not installed: run scripts/test.sh, which installs what the tests need", bin)
		}
	}
	dir := t.TempDir()
	c := &RedisCluster{}
	total := masters * (1 + replicasPerMaster)
	for i := range total {
		c.Instances = append(c.Instances, startClusterInstance(t, hosts[i%len(hosts)], dir, i))
	}

	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", fmt.Sprint(replicasPerMaster), "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli %s: %v\n%s%s", strings.Join(args, " "), err, out, c.logs())
	}
	if err := c.awaitOK(20 * time.Second); err != nil {
		t.Fatalf("redis cluster did not become ready: %v%s", err, c.logs())
	}
	return c
}

// startClusterInstance starts the i-th redis-server of a cluster on h, on
// fresh ports again if the chosen ones were taken before it bound them.
func startClusterInstance(t testing.TB, h Host, dir string, i int) *RedisInstance {
	t.Helper()
	for attempt := 1; ; attempt++ {
		port, bus := h.Port(t), h.Port(t)
		for bus == port {
			bus = h.Port(t)
		}
		addr := fmt.Sprintf("%s:%d", h.IP(), port)
		cmd := h.Command("redis-server",
			"--port", fmt.Sprint(port), "--bind", h.IP(), "--daemonize", "no", "--protected-mode", "no",
			"--save", "", "--appendonly", "no", "--dir", dir,
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, fmt.Sprintf("nodes-%d-%d.conf", i, port)),
			"--cluster-node-timeout", "1000", "--repl-diskless-sync-delay", "0", "--cluster-port", fmt.Sprint(bus), "--cluster-announce-ip", h.IP())
		p := startCmd(t, cmd)
		err := listening(addr, p)
		if err == nil {
			return &RedisInstance{Proc: p, Host: h, Addr: addr, BusPort: bus}
		}
		if !errors.Is(err, errPortTaken) || attempt == portAttempts {
			t.Fatal(err)
		}
	}
}

// Addrs returns every instance's address (IP:port), in start order.
func (c *RedisCluster) Addrs() []string {
	out := make([]string, len(c.Instances))
	for i, in := range c.Instances {
		out[i] = in.Addr
	}
	return out
}

// Masters returns the masters' addresses, in start order, as of the last
// successful AwaitOK (StartRedisClusterOn's: the masters as formed).
func (c *RedisCluster) Masters() []string { return slices.Clone(c.masters) }

// URL returns the seed URL the broker's cluster engine accepts:
// redis+cluster://IP:port,IP:port,... listing the masters (see Masters),
// no path.
func (c *RedisCluster) URL() string { return "redis+cluster://" + strings.Join(c.masters, ",") }

// Instance returns the instance at addr, or nil.
func (c *RedisCluster) Instance(addr string) *RedisInstance {
	for _, in := range c.Instances {
		if in.Addr == addr {
			return in
		}
	}
	return nil
}

// Kill crashes the instance at addr (SIGKILL by PID) and waits until it
// exited. It fails the test if no instance has that address.
func (c *RedisCluster) Kill(t testing.TB, addr string) {
	t.Helper()
	in := c.Instance(addr)
	if in == nil {
		t.Fatalf("RedisCluster.Kill: no instance at %s (have %v)", addr, c.Addrs())
	}
	in.Stop()
}

// alive reports whether the instance's process still runs.
func (in *RedisInstance) alive() bool {
	select {
	case <-in.done:
		return false
	default:
		return true
	}
}

// AwaitOK waits until every live instance reports cluster_state:ok, all
// 16384 slots assigned and ok, no node flagged fail, and (replicas) its
// master link up; it returns the last reason if d passes first. After a
// Kill it reports when the cluster has failed over.
func (c *RedisCluster) AwaitOK(d time.Duration) error { return c.awaitOK(d) }

func (c *RedisCluster) awaitOK(d time.Duration) error {
	clients := map[string]*redis.Client{}
	defer func() {
		for _, rc := range clients {
			_ = rc.Close()
		}
	}()
	deadline := time.Now().Add(d)
	for {
		err := c.checkOK(clients)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkOK asks every live instance once; on success it records the
// masters.
func (c *RedisCluster) checkOK(clients map[string]*redis.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var masters []string
	live := 0
	for _, in := range c.Instances {
		if in.alive() {
			live++
		}
	}
	for _, in := range c.Instances {
		if !in.alive() {
			continue
		}
		rc := clients[in.Addr]
		if rc == nil {
			rc = redis.NewClient(&redis.Options{Addr: in.Addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Second})
			clients[in.Addr] = rc
		}
		info, err := rc.ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: CLUSTER INFO: %w", in.Addr, err)
		}
		fields := map[string]string{}
		for _, line := range strings.Split(info, "\n") {
			if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
				fields[k] = v
			}
		}
		for k, want := range map[string]string{"cluster_state": "ok", "cluster_slots_assigned": "16384", "cluster_slots_ok": "16384"} {
			if fields[k] != want {
				return fmt.Errorf("%s: CLUSTER INFO %s:%s, want %s", in.Addr, k, fields[k], want)
			}
		}
		nodes, err := rc.ClusterNodes(ctx).Result()
		if err != nil {
			return fmt.Errorf("%s: CLUSTER NODES: %w", in.Addr, err)
		}
		self, good, err := parseClusterNodes(nodes)
		if err != nil {
			return fmt.Errorf("%s: %w", in.Addr, err)
		}
		if good != live {
			return fmt.Errorf("%s: knows %d healthy connected nodes, want %d:\n%s", in.Addr, good, live, nodes)
		}
		if self == "master" {
			masters = append(masters, in.Addr)
			continue
		}
		repl, err := rc.Info(ctx, "replication").Result()
		if err != nil {
			return fmt.Errorf("%s: INFO replication: %w", in.Addr, err)
		}
		if !strings.Contains(repl, "master_link_status:up") {
			return fmt.Errorf("%s: replica not linked to its master yet", in.Addr)
		}
	}
	if len(masters) == 0 {
		return fmt.Errorf("no live master")
	}
	c.masters = masters
	return nil
}

// parseClusterNodes reads CLUSTER NODES output: the role of the answering
// node ("master" or "slave") and how many nodes it sees healthy (not
// failing, not in handshake) with a connected link (itself included).
// Nodes flagged failing are skipped: a killed node stays listed.
func parseClusterNodes(out string) (self string, good int, err error) {
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return "", 0, fmt.Errorf("CLUSTER NODES line %q", line)
		}
		flags := strings.Split(f[2], ",")
		if slices.ContainsFunc(flags, func(s string) bool {
			return s == "fail" || s == "fail?" || s == "handshake" || s == "noaddr"
		}) || f[7] != "connected" {
			continue
		}
		good++
		if slices.Contains(flags, "myself") {
			self = "slave"
			if slices.Contains(flags, "master") {
				self = "master"
			}
		}
	}
	if self == "" {
		return "", 0, fmt.Errorf("CLUSTER NODES has no healthy myself line:\n%s", out)
	}
	return self, good, nil
}

// logs returns the instances' output, for failure messages.
func (c *RedisCluster) logs() string {
	var b strings.Builder
	for _, in := range c.Instances {
		fmt.Fprintf(&b, "\n--- redis %s:\n%s", in.Addr, tail(in.Log.String(), 2000))
	}
	return b.String()
}
