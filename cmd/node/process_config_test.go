package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// runNode runs the node binary to completion (bounded) and returns its
// exit code, stdout and stderr.
func runNode(t *testing.T, bin string, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(testproc.NodeEnviron(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("node %v did not exit within 20s:\n%s", args, stderr.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

// TestNodeRefusesBadConfig runs the real binary: a misconfiguration stops
// it before it serves, with exactly one line on stderr (no usage dump)
// and exit code 2.
func TestNodeRefusesBadConfig(t *testing.T) {
	bin := testproc.NodeBinary(t)
	dir := t.TempDir()
	badKey := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(badKey, []byte("listen: 127.0.0.1:0\nredis-url: redis://127.0.0.1:6379\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"typo of BAYEUX_REDIS", []string{"BAYEUX_REDIS_URL=redis://127.0.0.1:6379"}, nil,
			"bayeux-node: unknown environment variable BAYEUX_REDIS_URL (did you mean BAYEUX_REDIS?)"},
		{"duration without unit", nil, []string{"--timeout", "30"},
			`bayeux-node: --timeout "30": want a duration with a unit, such as 500ms, 30s or 2m (did you mean 30s?)`},
		{"redis address without scheme", nil, []string{"--redis", "127.0.0.1:6379"},
			`bayeux-node: --redis "127.0.0.1:6379" is not a Redis URL: want ` + redisURLForms + ` (did you mean redis://127.0.0.1:6379?)`},
		{"bad env duration", []string{"BAYEUX_MAX_INTERVAL=10"}, nil,
			`bayeux-node: BAYEUX_MAX_INTERVAL="10": want a duration with a unit, such as 500ms, 30s or 2m (did you mean 10s?)`},
		{"unknown flag", nil, []string{"--max-intervall", "10s"}, "bayeux-node: unknown flag --max-intervall (did you mean --max-interval?)"},
		{"unknown config key", nil, []string{"--config", badKey}, `bayeux-node: node.yaml: unknown key "redis-url" (did you mean "redis"?)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runNode(t, bin, tt.env, append([]string{"--listen", "127.0.0.1:0"}, tt.args...)...)
			if code != 2 || stderr != tt.want+"\n" || stdout != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2 and the one line %q", code, stdout, stderr, tt.want)
			}
		})
	}
}

// TestNodeInformationalFlags: --version, --print-config and --help print
// to stdout and exit 0 without serving.
func TestNodeInformationalFlags(t *testing.T) {
	bin := testproc.NodeBinary(t)
	tests := []struct {
		args       []string
		env        []string
		wantPrefix string
		want       string
	}{
		{[]string{"--version"}, nil, "bayeux-node ", "(revision "},
		{[]string{"--print-config"}, []string{"BAYEUX_REDIS=redis://u:pw@127.0.0.1:6379"}, "# effective configuration", "redis: redis://xxxxx@127.0.0.1:6379\n"},
		{[]string{"--help"}, nil, "Usage: bayeux-node [flags]", "-print-config"},
	}
	for _, tt := range tests {
		t.Run(tt.args[0], func(t *testing.T) {
			code, stdout, stderr := runNode(t, bin, tt.env, tt.args...)
			if code != 0 || !strings.HasPrefix(stdout, tt.wantPrefix) || !strings.Contains(stdout, tt.want) || stderr != "" {
				t.Fatalf("exit %d, stderr %q, stdout:\n%s", code, stderr, stdout)
			}
		})
	}
}

// TestNodeVersionStamped builds the node the way the Dockerfile does
// (linker-stamped version and revision) and checks --version and
// bayeux_build_info.
func TestNodeVersionStamped(t *testing.T) {
	const pkg = "github.com/bayeux-cluster/bayeux/internal/buildinfo"
	dockerfile, err := os.ReadFile(filepath.Join(testproc.RepoRoot(), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []string{"-X " + pkg + ".version=${VERSION}", "-X " + pkg + ".revision=${REVISION}"} {
		if !strings.Contains(string(dockerfile), x) {
			t.Errorf("the Dockerfile does not stamp %q", x)
		}
	}
	bin := filepath.Join(t.TempDir(), "bayeux-node")
	build := exec.Command("go", "build", "-o", bin, "-ldflags", "-X "+pkg+".version=v9.8.7 -X "+pkg+".revision=0123abc", "./cmd/node")
	build.Dir = testproc.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	code, stdout, _ := runNode(t, bin, nil, "--version")
	if code != 0 || !strings.HasPrefix(stdout, "bayeux-node v9.8.7 (revision 0123abc, go1.") {
		t.Fatalf("--version: exit %d, %q", code, stdout)
	}

	urls := startAndReadURLs(t, bin)
	resp, err := http.Get(urls["metrics"])
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `bayeux_build_info{go_version="go1.`) || !strings.Contains(string(body), `revision="0123abc",version="v9.8.7"} 1`) {
		t.Fatalf("no bayeux_build_info with the stamped version:\n%s", grepLines(string(body), "build_info"))
	}
}

// TestNodePrintsURLs: at start the node prints every URL a person needs,
// each of which answers.
func TestNodePrintsURLs(t *testing.T) {
	urls := startAndReadURLs(t, testproc.NodeBinary(t))
	for name, want := range map[string]string{"demo": "text/html", "cluster": "text/html", "metrics": "text/plain", "health": "text/plain", "admin": "text/html"} {
		u, ok := urls[name]
		if !ok {
			t.Errorf("no %s URL printed: %v", name, urls)
			continue
		}
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), want) {
			t.Errorf("%s %s: %d %s", name, u, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	if !strings.HasSuffix(urls["bayeux"], "/cometd") {
		t.Errorf("bayeux URL %q", urls["bayeux"])
	}
}

// startAndReadURLs starts bin on a random port, reads the URL lines it
// prints (name URL note) until the health line, and stops it (SIGTERM,
// by PID) when the test ends.
func startAndReadURLs(t *testing.T, bin string) map[string]string {
	t.Helper()
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0")
	cmd.Env = testproc.NodeEnviron()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("node did not stop on SIGTERM")
		}
	})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	urls := map[string]string{}
	deadline := time.After(20 * time.Second)
	for urls["health"] == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("node exited: %s", stderr.String())
			}
			if f := strings.Fields(l); len(f) >= 2 && strings.HasPrefix(l, "  ") {
				urls[f[0]] = f[1]
			}
		case <-deadline:
			t.Fatalf("no health URL printed within 20s: %v", urls)
		}
	}
	go func() {
		for range lines { // drain
		}
	}()
	return urls
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
