package testproc

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Network namespaces, so that each process of a test can have its own IP
// address, as on separate hosts. Everything is named with netnsPrefix and
// a subnet number X (bxt<X>br: the bridge, bxt<X>n<i>: namespace i,
// bxt<X>v<i> and bxt<X>p<i>: its veth pair, ends in the root namespace and
// in namespace i). Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and `ip`
// (iproute2); without them the test fails, it never skips.

const netnsPrefix = "bxt"

var (
	netnsBridgeRE = regexp.MustCompile(`^` + netnsPrefix + `(\d+)br$`)
	netnsNameRE   = regexp.MustCompile(`^` + netnsPrefix + `(\d+)n\d+$`)
)

// Net is a Linux bridge in the root network namespace, with address
// 10.231.X.1/24, and the namespaces plugged into it. Processes in the
// namespaces reach each other and the root namespace (the bridge address),
// and the test process reaches them at their namespace addresses.
type Net struct {
	Bridge  string // bridge interface in the root namespace
	Gateway string // the bridge's address: 10.231.X.1
	x       int

	mu     sync.Mutex
	spaces []*NetNS
}

// NetNS is a network namespace with one address, 10.231.X.(10+i)/24, its
// loopback up and a default route via the bridge. It is a Host.
type NetNS struct {
	Name string // namespace name, for `ip netns exec`
	Addr string // its IP address
	net  *Net

	mu       sync.Mutex
	nextPort int
}

// StartNet creates a bridge for the test. It first removes what crashed
// earlier runs left (bridges whose owning process is gone, with their
// namespaces and the processes in them), picks a free subnet X from the
// test process's PID, and registers a cleanup that kills every process
// still in its namespaces (by PID), deletes the namespaces, then the
// bridge. Cleanups registered later (processes started in the namespaces)
// run before it.
func StartNet(t testing.TB) *Net {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("ip (iproute2) is not installed; the network namespace tests need it")
	}
	unlock := netnsLock(t)
	defer unlock()
	removeStaleNets(t)
	x := pickSubnet(t)
	n := &Net{Bridge: fmt.Sprintf("%s%dbr", netnsPrefix, x), Gateway: fmt.Sprintf("10.231.%d.1", x), x: x}
	t.Cleanup(func() {
		for _, err := range removeNet(x) {
			t.Errorf("network namespace cleanup: %v", err)
		}
	})
	ipCmds(t,
		[]string{"link", "add", n.Bridge, "type", "bridge"},
		[]string{"link", "set", n.Bridge, "alias", fmt.Sprintf("bayeux testproc pid=%d", os.Getpid())},
		[]string{"addr", "add", n.Gateway + "/24", "dev", n.Bridge},
		[]string{"link", "set", n.Bridge, "up"},
	)
	return n
}

// Add creates one more namespace plugged into the bridge.
func (n *Net) Add(t testing.TB) *NetNS {
	t.Helper()
	n.mu.Lock()
	i := len(n.spaces)
	ns := &NetNS{Name: fmt.Sprintf("%s%dn%d", netnsPrefix, n.x, i), Addr: fmt.Sprintf("10.231.%d.%d", n.x, 10+i), net: n, nextPort: 20000}
	n.spaces = append(n.spaces, ns)
	n.mu.Unlock()
	if i >= 240 {
		t.Fatalf("Net.Add: at most 240 namespaces")
	}
	host, peer := fmt.Sprintf("%s%dv%d", netnsPrefix, n.x, i), fmt.Sprintf("%s%dp%d", netnsPrefix, n.x, i)
	ipCmds(t,
		[]string{"netns", "add", ns.Name},
		[]string{"link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns.Name},
		[]string{"link", "set", host, "master", n.Bridge, "up"},
		[]string{"-n", ns.Name, "link", "set", "lo", "up"},
		[]string{"-n", ns.Name, "addr", "add", ns.Addr + "/24", "dev", peer},
		[]string{"-n", ns.Name, "link", "set", peer, "up"},
		[]string{"-n", ns.Name, "route", "add", "default", "via", n.Gateway},
	)
	return ns
}

// AddN creates k namespaces.
func (n *Net) AddN(t testing.TB, k int) []*NetNS {
	t.Helper()
	out := make([]*NetNS, k)
	for i := range out {
		out[i] = n.Add(t)
	}
	return out
}

// IP returns the namespace's address.
func (ns *NetNS) IP() string { return ns.Addr }

// Port returns the next port of 20000, 20001, ...: the namespace is the
// test's alone, so they are free.
func (ns *NetNS) Port(testing.TB) int {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	ns.nextPort++
	return ns.nextPort - 1
}

// Command runs name with args inside the namespace (`ip netns exec`, which
// execs the program in place: same PID).
func (ns *NetNS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// StartNode starts a node process inside the namespace, as StartNode does
// (same output parsing and cleanup), with --listen on the namespace's
// address unless args set it.
func (ns *NetNS) StartNode(t testing.TB, env []string, args ...string) *Node {
	t.Helper()
	hasListen, hasAPI := false, false
	for _, a := range args {
		hasListen = hasListen || strings.HasPrefix(a, "--listen")
		hasAPI = hasAPI || strings.HasPrefix(a, "--api-listen")
	}
	if !hasListen {
		args = append([]string{"--listen", fmt.Sprintf("%s:%d", ns.Addr, ns.Port(t))}, args...)
	}
	if !hasAPI {
		args = append([]string{"--api-listen="}, args...) // no server API in namespaces
	}
	return StartNodeVia(t, []string{"ip", "netns", "exec", ns.Name}, env, args...)
}

// StartClusterNode starts a cluster node inside the namespace: HTTP,
// gossip and gRPC bound to the namespace's address on ports of their own,
// the debug API and fast gossip on, using redisURL and joining seeds
// (gossip addresses; joining retries until one answers), plus extra args.
func (ns *NetNS) StartClusterNode(t testing.TB, redisURL string, seeds []string, extra ...string) *Node {
	t.Helper()
	args := []string{
		"--listen", fmt.Sprintf("%s:%d", ns.Addr, ns.Port(t)),
		"--gossip-listen", fmt.Sprintf("%s:%d", ns.Addr, ns.Port(t)),
		"--grpc-listen", fmt.Sprintf("%s:%d", ns.Addr, ns.Port(t)),
		"--redis", redisURL, "--gossip-fast", "--debug-api",
	}
	if len(seeds) > 0 {
		args = append(args, "--join", strings.Join(seeds, ","))
	}
	return ns.StartNode(t, nil, append(args, extra...)...)
}

// ipCmds runs `ip` once per argument list, failing the test with the
// output of the first that fails.
func ipCmds(t testing.TB, cmds ...[]string) {
	t.Helper()
	for _, args := range cmds {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s(network namespaces need root: CAP_NET_ADMIN and CAP_SYS_ADMIN)", strings.Join(args, " "), err, out)
		}
	}
}

// netnsLock takes an exclusive lock shared by every test process of this
// machine, held while removing stale nets and creating a bridge, so that
// two runs neither pick the same subnet nor remove each other's bridges.
func netnsLock(t testing.TB) func() {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "bayeux-testproc-netns.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatal(err)
	}
	return func() { f.Close() } // closing releases the lock
}

// bridgeOwner returns the PID recorded in a bridge's alias (0 if none).
func bridgeOwner(bridge string) int {
	b, _ := os.ReadFile(filepath.Join("/sys/class/net", bridge, "ifalias"))
	_, s, ok := strings.Cut(strings.TrimSpace(string(b)), "pid=")
	if !ok {
		return 0
	}
	pid, _ := strconv.Atoi(s)
	return pid
}

// liveBridges returns, by subnet number, the bridges with our prefix.
func liveBridges() map[int]string {
	out := map[int]string{}
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if m := netnsBridgeRE.FindStringSubmatch(i.Name); m != nil {
			x, _ := strconv.Atoi(m[1])
			out[x] = i.Name
		}
	}
	return out
}

// removeStaleNets removes the bridges whose owner process is gone and the
// namespaces without a bridge, with the processes left in them.
func removeStaleNets(t testing.TB) {
	t.Helper()
	bridges := liveBridges()
	for x, br := range bridges {
		pid := bridgeOwner(br)
		if pid == 0 || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue // alive (or not ours to judge)
		}
		t.Logf("removing network namespaces left by a crashed run (bridge %s, pid %d)", br, pid)
		for _, err := range removeNet(x) {
			t.Logf("stale cleanup: %v", err)
		}
		delete(bridges, x)
	}
	for _, name := range netnsNames() {
		m := netnsNameRE.FindStringSubmatch(name)
		if x, _ := strconv.Atoi(m[1]); bridges[x] == "" {
			t.Logf("removing stale network namespace %s", name)
			if err := removeNetNS(name); err != nil {
				t.Logf("stale cleanup: %v", err)
			}
		}
	}
}

// netnsNames lists the namespaces with our prefix.
func netnsNames() []string {
	out, _ := exec.Command("ip", "netns", "list").Output()
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && netnsNameRE.MatchString(f[0]) {
			names = append(names, f[0])
		}
	}
	return names
}

// pickSubnet returns a subnet number in [20, 220) that no bridge of ours
// uses and no interface address of this machine falls in, starting from
// one derived from the PID.
func pickSubnet(t testing.TB) int {
	t.Helper()
	used := liveBridges()
	addrs, _ := net.InterfaceAddrs()
	start := os.Getpid() % 200
	for k := range 200 {
		x := 20 + (start+k)%200
		if used[x] != "" {
			continue
		}
		_, subnet, _ := net.ParseCIDR(fmt.Sprintf("10.231.%d.0/24", x))
		clash := false
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && subnet.Contains(ipn.IP) {
				clash = true
			}
		}
		if !clash {
			return x
		}
	}
	t.Fatal("no free 10.231.X.0/24 subnet for network namespaces")
	return 0
}

// removeNet removes subnet x: namespaces (processes first), then bridge.
func removeNet(x int) []error {
	var errs []error
	prefix := fmt.Sprintf("%s%dn", netnsPrefix, x)
	for _, name := range netnsNames() {
		if strings.HasPrefix(name, prefix) {
			if err := removeNetNS(name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	br := fmt.Sprintf("%s%dbr", netnsPrefix, x)
	if _, err := net.InterfaceByName(br); err == nil {
		if out, err := exec.Command("ip", "link", "del", br).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip link del %s: %v: %s", br, err, bytes.TrimSpace(out)))
		}
	}
	return errs
}

// removeNetNS kills (SIGKILL, by PID) the processes left in namespace
// name, waits for them to be gone, and deletes it (its veth pair goes
// with it).
func removeNetNS(name string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _ := exec.Command("ip", "netns", "pids", name).Output()
		pids := strings.Fields(string(out))
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("namespace %s: processes %v survive SIGKILL", name, pids)
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", name, err, bytes.TrimSpace(out))
	}
	return nil
}

// upstreamRE matches the server lines of the balancer's upstream block.
var upstreamRE = regexp.MustCompile(`(?s)(upstream bayeux \{\n).*?(\n\s*\})`)

// SetBackends replaces the balancer's backends ("host:port") and reloads
// nginx (SIGHUP to its master, by PID). Requests and websockets in flight
// finish on the old workers; new connections go to the new backends. It
// returns once a worker started on the new configuration and every old
// worker stopped taking requests (it is gone, or shutting down: its
// listening sockets closed, its idle keep-alive connections too), and
// fails the test if that takes over 10s (e.g. nginx rejected the
// configuration). Until then an old worker still sends new requests to
// the old backends: a backend stopped earlier refuses them (502).
func (b *Balancer) SetBackends(t testing.TB, backends []string) {
	t.Helper()
	path := ""
	for i, a := range b.Cmd.Args {
		if a == "-c" && i+1 < len(b.Cmd.Args) {
			path = b.Cmd.Args[i+1]
		}
	}
	conf, err := os.ReadFile(path)
	if err != nil || !upstreamRE.Match(conf) {
		t.Fatalf("balancer configuration %q: %v (no upstream block)", path, err)
	}
	var ups strings.Builder
	for _, be := range backends {
		fmt.Fprintf(&ups, "    server %s max_fails=0;\n", be)
	}
	conf = upstreamRE.ReplaceAllLiteral(conf, []byte("upstream bayeux {\n"+strings.TrimSuffix(ups.String(), "\n")+"\n  }"))
	if err := os.WriteFile(path, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	master := b.Cmd.Process.Pid
	old := map[int]bool{}
	for _, pid := range childPIDs(master) {
		old[pid] = true
	}
	if err := b.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("reload balancer: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		started, oldServing := false, false
		for _, pid := range childPIDs(master) {
			if !old[pid] {
				started = true
			} else if workerServing(pid) {
				oldServing = true
			}
		}
		if started && !oldServing {
			return
		}
		if time.Now().After(deadline) {
			errLog, _ := os.ReadFile(filepath.Join(filepath.Dir(path), "error.log"))
			t.Fatalf("balancer did not reload within 10s:\n%s", tail(string(errLog), 4000))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// workerServing reports whether the nginx worker pid still takes
// requests: it is alive and not "shutting down" (the process title an
// nginx worker takes once told to quit).
func workerServing(pid int) bool {
	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	title := string(cmdline)
	return strings.Contains(title, "worker process") && !strings.Contains(title, "shutting down")
}

// childPIDs returns the processes whose parent is ppid (from /proc).
func childPIDs(ppid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if f := strings.Fields(string(stat[i+1:])); i > 0 && len(f) > 1 {
			if p, _ := strconv.Atoi(f[1]); p == ppid {
				out = append(out, pid)
			}
		}
	}
	return out
}
