package testproc

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// RepoRoot returns the module root (the directory holding go.mod).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// NodeBinary builds cmd/node (once per process) and returns its path.
func NodeBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "bayeux-node-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "node")
		args := []string{"build", "-o", binPath}
		if os.Getenv("BAYEUX_TEST_RACE") == "1" {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/node")...)
		cmd.Dir = RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/node: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Node is a running node process.
type Node struct {
	URL    string // the Bayeux endpoint, e.g. http://127.0.0.1:PORT/cometd (https:// with TLS)
	Base   string // scheme://host:port
	Gossip string // gossip address (cluster mode)
	GRPC   string // node-to-node gRPC address (cluster mode)
	Tag    string // node tag (cluster mode): the prefix of its clientIds
	API    string // the server API's base URL, e.g. http://127.0.0.1:PORT
	Cmd    *exec.Cmd
	Log    *SyncBuffer // stderr (logs)

	waitOnce sync.Once
	waitErr  error
	done     chan struct{}
}

// SyncBuffer is a goroutine-safe bytes buffer.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// StartNode starts a node with args (plus --listen 127.0.0.1:0 unless args
// set --listen) and waits until it prints its URL. The process is killed
// when the test ends if still running.
func StartNode(t testing.TB, env []string, args ...string) *Node {
	t.Helper()
	return StartNodeVia(t, nil, env, args...)
}

// StartNodeVia is StartNode with the node binary run through a command
// prefix: with prefix {"ip", "netns", "exec", "ns1"} the process is
// `ip netns exec ns1 <node> args...`. The prefix must exec the node in
// place (keep its PID), so that stopping the process by PID stops the node.
func StartNodeVia(t testing.TB, prefix []string, env []string, args ...string) *Node {
	t.Helper()
	bin := NodeBinary(t)
	hasListen, hasAPI := false, false
	for _, a := range args {
		hasListen = hasListen || strings.HasPrefix(a, "--listen")
		hasAPI = hasAPI || strings.HasPrefix(a, "--api-listen")
	}
	if !hasListen {
		args = append([]string{"--listen", "127.0.0.1:0"}, args...)
	}
	if !hasAPI {
		args = append([]string{"--api-listen", "127.0.0.1:0"}, args...)
	}
	if lvl := os.Getenv("BAYEUX_TEST_NODE_LOG_LEVEL"); lvl != "" {
		args = append(args, "--log-level", lvl)
	}
	argv := append(append(append([]string(nil), prefix...), bin), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(NodeEnviron(), env...)
	ownGroup(cmd)
	n := &Node{Cmd: cmd, Log: &SyncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = n.Log
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	go func() {
		n.waitErr = cmd.Wait()
		close(n.done)
	}()
	t.Cleanup(func() {
		killGroup(cmd)
		<-n.done
		if t.Failed() {
			t.Logf("node %s (pid %d) log:\n%s", n.URL, cmd.Process.Pid, tail(n.Log.String(), 8000))
		}
		keepNodeLog(t, n, cmd.Process.Pid)
	})
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if g, ok := strings.CutPrefix(line, "bayeux node gossip "); ok {
				f := strings.Fields(g)
				if len(f) >= 5 {
					n.Gossip, n.GRPC, n.Tag = f[0], f[2], f[4]
				}
			}
			if u, ok := strings.CutPrefix(line, "bayeux node api "); ok {
				n.API = u
			}
			if u, ok := strings.CutPrefix(line, "bayeux node serving "); ok {
				select {
				case urlc <- u:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case n.URL = <-urlc:
	case <-n.done:
		t.Fatalf("node exited before serving: %v\n%s", n.waitErr, n.Log.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("node did not print its URL within 20s\n%s", n.Log.String())
	}
	hostStart := strings.Index(n.URL, "://") + len("://") // http:// or, with --tls-cert-file, https://
	i := strings.Index(n.URL[hostStart:], "/")
	n.Base = n.URL[:hostStart+i]
	return n
}

// NodeEnviron is this process's environment without its BAYEUX_*
// variables: those of the test harness (BAYEUX_TEST_RACE, ...) are no
// settings, and a node refuses a BAYEUX_* variable it does not know. A
// test passes a node its settings explicitly.
func NodeEnviron() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BAYEUX_") {
			out = append(out, kv)
		}
	}
	return out
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func (n *Node) alive() bool {
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Members returns the number of live cluster members the node reports.
func (n *Node) Members(ctx context.Context) (int, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.Base+"/debug/bayeux/members", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out struct {
		Members []json.RawMessage `json:"members"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return 0, fmt.Errorf("members: %w", err)
	}
	return len(out.Members), nil
}

// PID returns the process id.
func (n *Node) PID() int { return n.Cmd.Process.Pid }

// Signal sends sig to the process.
func (n *Node) Signal(sig os.Signal) error { return n.Cmd.Process.Signal(sig) }

// Wait waits for the process to exit (up to d) and returns its exit error.
func (n *Node) Wait(d time.Duration) (error, bool) {
	select {
	case <-n.done:
		return n.waitErr, true
	case <-time.After(d):
		return nil, false
	}
}

// WaitReady polls /readyz until it answers 200 or ctx ends.
func (n *Node) WaitReady(ctx context.Context) error {
	for {
		resp, err := http.Get(n.Base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s not ready: %w", n.Base, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// keepNodeLog writes n's whole log to a file in the directory named by
// BAYEUX_TEST_NODE_LOGS, if set (diagnosis of a rare failure: the test's
// own output keeps only the tail of a failed test's node logs).
func keepNodeLog(t testing.TB, n *Node, pid int) {
	dir := os.Getenv("BAYEUX_TEST_NODE_LOGS")
	if dir == "" {
		return
	}
	name := filepath.Join(dir, fmt.Sprintf("%s-%d.log", strings.ReplaceAll(t.Name(), "/", "_"), pid))
	if err := os.WriteFile(name, []byte(n.Log.String()), 0o644); err != nil {
		t.Logf("node log not kept: %v", err)
	}
}
