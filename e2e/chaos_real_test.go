//go:build realchaos

// This scenario is built only with -tags realchaos, because it does not
// pass yet (issue "Real clients, real guarantees", item 7): run it with
//
//	go test -tags realchaos -count=1 -v -run TestChaosRealClients ./e2e/
//
// Measured on the first run (kill -9 of one of three nodes, 9 CometD ack
// clients and 4 jsforce replay subscribers beside the 36 Go subscribers,
// which lost nothing): CometD ack clients lost 31 acknowledged messages
// (long-polling 14, callback-polling 2, websocket 15) around the fault,
// every clientId kept; jsforce subscribers received one event twice
// (replayed from history by the adopting node: a replay session without
// the ack extension acknowledges a batch only with its next connect, which
// the dead owner never saw). It joins the CI run once both are fixed.

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// TestChaosRealClients is the chaos suite with the clients people run:
// beside the Go subscribers of TestChaos, unchanged CometD clients with
// their AckExtension (long-polling, callback-polling, websocket) and
// jsforce replay subscribers (StreamingExtension.Replay, which follows
// data.event.replayId and does not de-duplicate) subscribe through the
// balancer, which keeps sending the failed node its share of requests
// (nginx max_fails=0, proxy_next_upstream off). Each fault must lose
// nothing acknowledged, deliver nothing twice to the application and keep
// every clientId.
func TestChaosRealClients(t *testing.T) {
	for _, sc := range []struct {
		name  string
		fault func(t *testing.T, env *chaosEnv) error
	}{
		{"kill9", chaosKill9},
		{"sigterm", chaosSigterm},
	} {
		t.Run(sc.name, func(t *testing.T) {
			env := &chaosEnv{c: testproc.StartClusterOn(t, testproc.StartRedisDurable(t), 3, chaosNodeArgs...)}
			r := startChaos(t, "real-"+sc.name, env.c)
			rc := startRealClients(t, env.c, r.channels)
			if err := pollUntil(20*time.Second, func() error { return rc.receivedFromAll(t, len(r.pubs)) }); err != nil {
				t.Fatalf("real clients before the fault: %v", err)
			}
			if err := sc.fault(t, env); err != nil {
				t.Errorf("recovery from the fault: %v", err)
			}
			if err := r.flowing(50, 15*time.Second); err != nil {
				t.Errorf("traffic after the fault: %v", err)
			}
			r.finish(20*time.Second, true)
			rc.check(t, r, 30*time.Second)
		})
	}
}

// realClients is the interop/chaos/real-clients.mjs process.
type realClients struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

type realReport struct {
	Kind, Transport, First, Last string
	Channels                     []string
	Handshakes, NoReplayID       int
	Keys                         [][2]int
}

func startRealClients(t *testing.T, cl *testproc.Cluster, channels []string) *realClients {
	t.Helper()
	dir := requireInterop(t)
	cmd := exec.Command("node", filepath.Join("chaos", "real-clients.mjs"))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "BAYEUX_URL="+cl.URL(), "BAYEUX_DEBUG_URL="+cl.Nodes[0].Base+"/debug/bayeux",
		"CHAOS_CHANNELS="+strings.Join(channels, ","), "CHAOS_COMETD_PER_TRANSPORT=3", "CHAOS_JSFORCE=4")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr testproc.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start real clients: %v", err)
	}
	rc := &realClients{cmd: cmd, stdin: stdin, lines: make(chan string, 16)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(rc.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			rc.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		_, _ = io.WriteString(stdin, "exit\n")
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		wg.Wait()
		if t.Failed() {
			t.Logf("real clients' stderr:\n%s", stderr.String())
		}
	})
	select {
	case l, ok := <-rc.lines:
		if !ok || l != "READY" {
			t.Fatalf("real clients did not start (%q): %s", l, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("real clients not ready within 60s: %s", stderr.String())
	}
	return rc
}

// report asks the clients for what they received.
func (rc *realClients) report(t *testing.T) []realReport {
	t.Helper()
	if _, err := io.WriteString(rc.stdin, "report\n"); err != nil {
		t.Fatalf("real clients: %v", err)
	}
	select {
	case l, ok := <-rc.lines:
		if !ok || !strings.HasPrefix(l, "REPORT ") {
			t.Fatalf("real clients: no report (%q)", l)
		}
		var out []realReport
		if err := json.Unmarshal([]byte(strings.TrimPrefix(l, "REPORT ")), &out); err != nil {
			t.Fatalf("real clients' report: %v", err)
		}
		return out
	case <-time.After(30 * time.Second):
		t.Fatal("real clients: no report within 30s")
	}
	return nil
}

// receivedFromAll: every client received something from every publisher.
func (rc *realClients) receivedFromAll(t *testing.T, pubs int) error {
	for _, c := range rc.report(t) {
		from := map[int]bool{}
		for _, k := range c.Keys {
			from[k[0]] = true
		}
		if len(from) < pubs {
			return fmt.Errorf("%s/%s %s: deliveries from %d of %d publishers", c.Kind, c.Transport, c.First, len(from), pubs)
		}
	}
	return nil
}

// check waits until every client has every acknowledged publish of its
// channels (or d passes), logs one line per client kind and asserts
// nothing lost, nothing duplicated, every clientId kept and a replay id
// on every jsforce delivery.
func (rc *realClients) check(t *testing.T, r *chaosRun, d time.Duration) {
	t.Helper()
	acked := map[string][]chaosKey{} // channel -> acknowledged keys
	for _, p := range r.pubs {
		p.mu.Lock()
		for _, k := range p.acked {
			ch := r.channels[k.S%len(r.channels)]
			acked[ch] = append(acked[ch], k)
		}
		p.mu.Unlock()
	}
	type figures struct{ clients, lost, dup, kept, rehs, noReplay int }
	var reps []realReport
	measure := func() (map[string]*figures, []string) {
		reps = rc.report(t)
		by := map[string]*figures{}
		var problems []string
		for _, c := range reps {
			name := c.Kind + "/" + c.Transport
			f := by[name]
			if f == nil {
				f = &figures{}
				by[name] = f
			}
			seen := map[chaosKey]int{}
			first := map[int]int{} // publisher -> first sequence received (it subscribed while they published)
			for _, k := range c.Keys {
				seen[chaosKey{k[0], k[1]}]++
				if f, ok := first[k[0]]; !ok || k[1] < f {
					first[k[0]] = k[1]
				}
			}
			f.clients++
			for _, ch := range c.Channels {
				for _, k := range acked[ch] {
					if from, ok := first[k.P]; !ok || k.S < from {
						continue // published before this client subscribed
					}
					if seen[k] == 0 {
						f.lost++
						if len(problems) < 10 {
							problems = append(problems, fmt.Sprintf("%s %s never received %v", name, c.First, k))
						}
					}
				}
			}
			for k, n := range seen {
				if n > 1 {
					f.dup += n - 1
					if len(problems) < 20 {
						problems = append(problems, fmt.Sprintf("%s %s received %v %d times", name, c.First, k, n))
					}
				}
			}
			if c.Last == c.First {
				f.kept++
			}
			f.rehs += max(c.Handshakes-1, 0)
			f.noReplay += c.NoReplayID
		}
		return by, problems
	}
	var by map[string]*figures
	var problems []string
	_ = pollUntil(d, func() error {
		by, problems = measure()
		for name, f := range by {
			if f.lost > 0 {
				return fmt.Errorf("%s: %d lost", name, f.lost)
			}
		}
		return nil
	})
	total := figures{}
	for name, f := range by {
		t.Logf("CHAOS-REAL scenario=%s clients=%s count=%d lost=%d duplicated=%d rehandshakes=%d clientid_kept=%d/%d without_replay_id=%d",
			r.name, name, f.clients, f.lost, f.dup, f.rehs, f.kept, f.clients, f.noReplay)
		total.clients += f.clients
		total.lost += f.lost
		total.dup += f.dup
		total.kept += f.kept
		total.noReplay += f.noReplay
	}
	for _, p := range problems {
		t.Error(p)
	}
	if total.lost != 0 || total.dup != 0 {
		t.Errorf("real clients: lost=%d duplicated=%d", total.lost, total.dup)
	}
	if total.kept != total.clients {
		t.Errorf("real clients: clientid_kept=%d/%d", total.kept, total.clients)
	}
	if total.noReplay != 0 {
		t.Errorf("jsforce: %d deliveries without data.event.replayId", total.noReplay)
	}
}
