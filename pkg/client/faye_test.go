package client

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// startFaye runs Faye's own Node server (interop/reference/faye-server.mjs,
// unchanged) on a random loopback port and returns its endpoint. Missing
// node or interop/node_modules is a failure, not a skip.
func startFaye(t *testing.T) *server {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed: run scripts/test.sh (it installs node and runs npm ci in interop/)")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(root, "interop", "reference", "faye-server.mjs")
	if _, err := os.Stat(filepath.Join(root, "interop", "node_modules", "faye", "package.json")); err != nil {
		t.Fatalf("interop/node_modules/faye is missing: run scripts/test.sh (or cd interop && npm ci): %v", err)
	}
	cmd := exec.Command(node, script, "--port", "0")
	cmd.Stderr = &testWriter{t: t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start faye server: %v", err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	urls := make(chan [2]string, 1)
	go func() {
		defer close(exited)
		var u [2]string
		sent := false
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "BAYEUX_URL="); ok {
				u[0] = v
			} else if v, ok := strings.CutPrefix(line, "BAYEUX_DEBUG_URL="); ok {
				u[1] = v
			}
			if u[0] != "" && u[1] != "" && !sent {
				urls <- u
				sent = true
			}
		}
		_ = cmd.Wait()
	}()
	select {
	case u := <-urls:
		return &server{url: u[0], debugURL: u[1]}
	case <-exited:
		t.Fatal("faye server exited before printing its URL")
	case <-time.After(20 * time.Second):
		t.Fatal("faye server did not print its URL within 20s")
	}
	return nil
}

type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Logf("faye: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestFaye(t *testing.T) {
	s := startFaye(t)
	for _, tr := range transports {
		t.Run(tr+"/pubsub", func(t *testing.T) {
			sub, pub := s.dial(t, tr, nil), s.dial(t, tr, nil)
			if sub.AckEnabled() {
				t.Fatal("faye has no ack extension, yet ack is on")
			}
			var got collector
			if _, err := sub.Subscribe(ctxT(t), "/faye/"+tr2ch(tr)+"/*", got.handle); err != nil {
				t.Fatal(err)
			}
			for i := range 20 {
				mustPublish(t, pub, "/faye/"+tr2ch(tr)+"/x", i)
			}
			checkSequence(t, &got, 20)
		})
		t.Run(tr+"/rehandshake", func(t *testing.T) { testRehandshake(t, s, tr) })
	}
}

func tr2ch(tr string) string {
	switch tr {
	case protocol.WebSocket:
		return "ws"
	case protocol.CallbackPolling:
		return "cp"
	}
	return "lp"
}
