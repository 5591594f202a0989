package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
	"github.com/bayeux-cluster/bayeux/pkg/cluster"
)

// TestLocalClusterScript runs scripts/local-cluster.sh for real: it
// prints a URL that serves the demo and Bayeux through the balancer to
// every node, and on SIGINT (to the script alone, or to its whole process
// group as a terminal's Ctrl-C does) it stops every process it started
// and leaves nothing behind, in the checkout or in TMPDIR.
func TestLocalClusterScript(t *testing.T) {
	root := testproc.RepoRoot()
	bin := testproc.NodeBinary(t)
	before := checkoutStatus(t, root)
	for _, tc := range []struct {
		name  string
		group bool
	}{
		{"SIGINT to the script", false},
		{"Ctrl-C to the process group", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			cmd := exec.Command("bash", filepath.Join(root, "scripts", "local-cluster.sh"))
			cmd.Env = append(testproc.NodeEnviron(), "NODE_BIN="+bin, "TMPDIR="+tmp)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			cmd.WaitDelay = 2 * time.Second
			var stderr testproc.SyncBuffer
			cmd.Stderr = &stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			t.Cleanup(func() { // a failed test leaves nothing running either
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			})

			urls := readScriptURLs(t, stdout, done, &stderr)
			bayeux := urls["bayeux"]
			tags := map[string]bool{}
			for i := 0; i < 6; i++ { // round-robin: the handshakes reach every node
				id := (&bayeuxtest.Peer{T: t, URL: bayeux}).Handshake(nil)
				tags[id[:cluster.TagLen]] = true // the owner node's tag
			}
			if len(tags) < 3 {
				t.Errorf("6 handshakes through %s reached %d nodes (%v), want 3", bayeux, len(tags), tags)
			}
			// The server API, with the key the script printed, publishes
			// through any node to the whole cluster.
			req, _ := http.NewRequest(http.MethodPost, urls["api"]+"publish", strings.NewReader(`{"channel":"/local/x","data":{"n":1}}`))
			req.Header.Set("Authorization", "Bearer "+urls["api-key"])
			if resp, err := http.DefaultClient.Do(req); err != nil {
				t.Errorf("API publish: %v", err)
			} else {
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("API publish through %s: %d", urls["api"], resp.StatusCode)
				}
			}
			resp, err := http.Get(urls["demo"])
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("demo %s: %d", urls["demo"], resp.StatusCode)
			}

			started := descendants(cmd.Process.Pid)
			if len(started) < 6 { // redis, 3 nodes, nginx master and worker
				t.Fatalf("processes started by the script: %v, want at least 6", started)
			}
			if tc.group {
				err = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
			} else {
				err = cmd.Process.Signal(syscall.SIGINT)
			}
			if err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 130 {
					t.Errorf("script exit: %v, want 130 (SIGINT)", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("script still running 30s after SIGINT:\n%s", stderr.String())
			}
			bayeuxtest.Eventually(t, 5*time.Second, func() error {
				for _, pid := range started {
					if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
						return fmt.Errorf("process %d (%s) still exists", pid, procName(pid))
					}
				}
				return nil
			})
			if left, _ := os.ReadDir(tmp); len(left) > 0 {
				t.Errorf("left in TMPDIR: %v", left)
			}
		})
	}
	if after := checkoutStatus(t, root); after != before {
		t.Errorf("the checkout changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// readScriptURLs reads the script's URL lines ("  name URL ...") until
// "Ctrl-C stops everything.".
func readScriptURLs(t *testing.T, stdout interface{ Read([]byte) (int, error) }, done <-chan error, stderr *testproc.SyncBuffer) map[string]string {
	t.Helper()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	urls := map[string]string{}
	deadline := time.After(90 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("script output ended: %s", stderr.String())
			}
			if strings.HasPrefix(l, "Ctrl-C") {
				go func() {
					for range lines {
					}
				}()
				if urls["bayeux"] == "" || urls["demo"] == "" {
					t.Fatalf("no bayeux or demo URL printed: %v", urls)
				}
				return urls
			}
			if f := strings.Fields(l); len(f) >= 2 && strings.HasPrefix(l, "  ") {
				urls[f[0]] = f[1]
			}
		case err := <-done:
			t.Fatalf("script exited (%v): %s", err, stderr.String())
		case <-deadline:
			t.Fatalf("script printed no URL within 90s: %s", stderr.String())
		}
	}
}

// descendants lists the processes below pid (children, grandchildren...).
func descendants(pid int) []int {
	parent := map[int]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ")".
		rest := string(stat[bytes.LastIndexByte(stat, ')')+1:])
		if f := strings.Fields(rest); len(f) > 1 {
			parent[p], _ = strconv.Atoi(f[1])
		}
	}
	var out []int
	for p := range parent {
		for q := parent[p]; q > 1; q = parent[q] {
			if q == pid {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

func procName(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return strings.ReplaceAll(string(b), "\x00", " ")
}

// checkoutStatus is git's view of the checkout (untracked files included,
// ignored ones not).
func checkoutStatus(t *testing.T, root string) string {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=all").Output()
	if err != nil {
		t.Fatalf("git status: %v", err)
	}
	return string(out)
}
