package testproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Proc is a helper process started by this package.
type Proc struct {
	Cmd  *exec.Cmd
	Log  *SyncBuffer
	done chan struct{}
}

func startProc(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Cmd: exec.Command(name, args...), Log: &SyncBuffer{}, done: make(chan struct{})}
	p.Cmd.Stdout, p.Cmd.Stderr = p.Log, p.Log
	ownGroup(p.Cmd)
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v (run scripts/test.sh to install it)", name, err)
	}
	go func() { _ = p.Cmd.Wait(); close(p.done) }()
	t.Cleanup(p.Stop)
	return p
}

// Stop kills the process and everything it started, and waits for it.
func (p *Proc) Stop() {
	killGroup(p.Cmd)
	<-p.done
}

// ownGroup makes cmd the leader of a new process group, so killGroup also
// reaches its children (nginx workers); WaitDelay bounds waiting for
// output pipes held by anything that escaped.
func ownGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 2 * time.Second
}

// killGroup sends SIGKILL to cmd's process group.
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

// waitTCP waits until addr accepts connections.
func waitTCP(t testing.TB, addr string, p *Proc) {
	t.Helper()
	if err := listening(addr, p); err != nil {
		t.Fatal(err)
	}
}

// errPortTaken: the process exited because a port chosen by FreePort was
// taken meanwhile (by another test's server, or as the local port of an
// outgoing connection: both come from the ephemeral range).
var errPortTaken = errors.New("port taken since it was chosen")

// listening waits until p accepts connections on addr. It returns an error
// wrapping errPortTaken if p exited because a port it was to listen on was
// in use.
func listening(addr string, p *Proc) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.done:
			if log := p.Log.String(); strings.Contains(log, "Address already in use") {
				return fmt.Errorf("%s exited, %w: %s", p.Cmd.Path, errPortTaken, log)
			}
			return fmt.Errorf("%s exited: %s", p.Cmd.Path, p.Log.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not listening on %s: %s", p.Cmd.Path, addr, p.Log.String())
}

// portAttempts bounds the starts of a server on fresh ports when the
// chosen ones were taken meanwhile.
const portAttempts = 5

// Redis is a real redis-server on a random loopback port.
type Redis struct {
	*Proc
	Addr string
	Port int
	args []string // persistence options, reused by StartAgain
}

// URL returns the redis:// URL.
func (r *Redis) URL() string { return "redis://" + r.Addr }

// StartRedis starts redis-server with no persistence on a random port.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	return startRedisFree(t, []string{"--save", "", "--appendonly", "no"})
}

// StartRedisOn starts redis-server on port (to restart one on the same
// address).
func StartRedisOn(t testing.TB, port int) *Redis {
	t.Helper()
	return startRedis(t, port, []string{"--save", "", "--appendonly", "no"})
}

// StartRedisDurable starts a redis-server that keeps its data across a
// crash: an append-only file fsynced on every write (appendfsync always),
// so that whatever Redis acknowledged survives kill -9 and StartAgain.
func StartRedisDurable(t testing.TB) *Redis {
	t.Helper()
	return startRedisFree(t, []string{"--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", t.TempDir()})
}

// StartRedisWith starts redis-server with no persistence, listening on
// port, with extra config directives ("--requirepass", "pw", ...). For a
// TLS-only server pass "--port", "0", "--tls-port", port and the TLS files:
// it waits for port to accept connections either way.
func StartRedisWith(t testing.TB, port int, extra ...string) *Redis {
	t.Helper()
	return startRedis(t, port, append([]string{"--save", "", "--appendonly", "no"}, extra...))
}

func startRedis(t testing.TB, port int, persistence []string) *Redis {
	t.Helper()
	r, err := tryStartRedis(t, port, persistence)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// startRedisFree starts redis-server on a port FreePort chooses, on
// another one if that was taken before redis-server bound it.
func startRedisFree(t testing.TB, persistence []string) *Redis {
	t.Helper()
	for attempt := 1; ; attempt++ {
		r, err := tryStartRedis(t, FreePort(t), persistence)
		if err == nil {
			return r
		}
		if !errors.Is(err, errPortTaken) || attempt == portAttempts {
			t.Fatal(err)
		}
	}
}

func tryStartRedis(t testing.TB, port int, persistence []string) (*Redis, error) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not installed: run scripts/test.sh, which installs what the tests need")
	}
	args := append([]string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--daemonize", "no", "--protected-mode", "no"}, persistence...)
	p := startProc(t, "redis-server", args...)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := listening(addr, p); err != nil {
		return nil, err
	}
	return &Redis{Proc: p, Addr: addr, Port: port, args: persistence}, nil
}

// Balancer is a real nginx doing plain round-robin (no stickiness) over
// HTTP and WebSocket to a set of backends.
type Balancer struct {
	*Proc
	URL  string // http://127.0.0.1:PORT (append the Bayeux path)
	Addr string
}

// StartBalancer starts nginx in front of backends ("host:port").
func StartBalancer(t testing.TB, backends []string) *Balancer {
	t.Helper()
	if _, err := exec.LookPath("nginx"); err != nil {
		t.Fatal("nginx is not installed: run scripts/test.sh, which installs what the tests need")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	port := FreePort(t)
	var ups strings.Builder
	for _, b := range backends {
		fmt.Fprintf(&ups, "    server %s max_fails=0;\n", b)
	}
	conf := fmt.Sprintf(nginxConf, dir, dir, ups.String(), port, dir, dir, dir, dir, dir)
	if logs := os.Getenv("BAYEUX_TEST_NODE_LOGS"); logs != "" {
		// Diagnosis: every request's times and upstream, next to the nodes' logs.
		conf = strings.Replace(conf, "access_log off;", `log_format timing '$time_iso8601 $msec rt=$request_time urt=$upstream_response_time up=$upstream_addr $status $request_method $request_length $bytes_sent "$request_uri"';
  access_log `+filepath.Join(logs, "nginx-access.log")+` timing;`, 1)
	}
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "nginx", "-c", path, "-p", dir, "-g", "daemon off;")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitTCP(t, addr, p)
	return &Balancer{Proc: p, URL: "http://" + addr, Addr: addr}
}

// nginxConf is a round-robin balancer with no stickiness that passes
// WebSocket upgrades through, does not buffer long polls and keeps its
// connections to the backends alive (keepalive, and no "Connection:
// close" on requests other than upgrades), as deploy/nginx/nginx.conf.
const nginxConf = `worker_processes 1;
error_log %s/error.log warn;
pid %s/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  upstream bayeux {
%s    keepalive 1024;
  }
  map $http_upgrade $connection_upgrade { default upgrade; '' ''; }
  server {
    listen 127.0.0.1:%d;
    client_body_temp_path %s/body;
    proxy_temp_path %s/proxy;
    fastcgi_temp_path %s/fastcgi;
    uwsgi_temp_path %s/uwsgi;
    scgi_temp_path %s/scgi;
    client_max_body_size 2m;
    location / {
      proxy_pass http://bayeux;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 180s;
      proxy_send_timeout 180s;
      proxy_next_upstream off;
    }
  }
}
`

// Proxy is the TCP proxy of the Redis-link tests: a FaultProxy (cut,
// restore, delay).
type Proxy = FaultProxy

// StartProxy proxies a random loopback port to target until the test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	return StartFaultProxy(t, target)
}

// Cluster is Redis, n nodes and a balancer in front of them.
type Cluster struct {
	Redis    *Redis // nil when the backplane is not a single Redis of testproc's
	RedisURL string // the nodes' --redis (default: Redis's URL)
	Nodes    []*Node
	Balancer *Balancer
	Path     string
}

// URL is the balancer's Bayeux endpoint.
func (c *Cluster) URL() string { return c.Balancer.URL + c.Path }

// StartCluster starts Redis, n nodes joined to each other (with the debug
// API and fast gossip) and a round-robin balancer. extra args go to every
// node.
func StartCluster(t testing.TB, n int, extra ...string) *Cluster {
	t.Helper()
	return StartClusterOn(t, StartRedis(t), n, extra...)
}

// StartClusterOn is StartCluster with a Redis of the caller's.
func StartClusterOn(t testing.TB, r *Redis, n int, extra ...string) *Cluster {
	t.Helper()
	return startCluster(t, &Cluster{Redis: r, RedisURL: r.URL(), Path: "/cometd"}, n, extra...)
}

// StartClusterOnURL is StartCluster with the nodes' --redis URL of the
// caller's, such as a RedisCluster's.
func StartClusterOnURL(t testing.TB, redisURL string, n int, extra ...string) *Cluster {
	t.Helper()
	return startCluster(t, &Cluster{RedisURL: redisURL, Path: "/cometd"}, n, extra...)
}

func startCluster(t testing.TB, c *Cluster, n int, extra ...string) *Cluster {
	t.Helper()
	for i := 0; i < n; i++ {
		c.Nodes = append(c.Nodes, c.StartNode(t, extra...))
	}
	c.WaitMembers(t, n, 10*time.Second)
	var backends []string
	for _, nd := range c.Nodes {
		backends = append(backends, strings.TrimPrefix(nd.Base, "http://"))
	}
	c.Balancer = StartBalancer(t, backends)
	return c
}

// StartNode starts one more node joined to the cluster.
func (c *Cluster) StartNode(t testing.TB, extra ...string) *Node {
	t.Helper()
	url := c.RedisURL
	if url == "" && c.Redis != nil {
		url = c.Redis.URL()
	}
	return c.StartNodeWithRedis(t, url, extra...)
}

// StartNodeWithRedis starts a node using redisURL (e.g. through a Proxy).
func (c *Cluster) StartNodeWithRedis(t testing.TB, redisURL string, extra ...string) *Node {
	t.Helper()
	args := []string{"--redis", redisURL, "--gossip-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0",
		"--gossip-fast", "--debug-api"}
	for _, nd := range c.Nodes {
		if nd.Gossip != "" && nd.alive() {
			args = append(args, "--join", nd.Gossip)
			break
		}
	}
	return StartNode(t, nil, append(args, extra...)...)
}

// WaitMembers waits until every live node reports want members.
func (c *Cluster) WaitMembers(t testing.TB, want int, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		ok := true
		for _, nd := range c.Nodes {
			if !nd.alive() {
				continue
			}
			if got, err := nd.Members(ctx); err != nil || got != want {
				ok = false
				break
			}
		}
		if ok {
			return time.Since(start)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("membership did not converge to %d within %v", want, d)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
