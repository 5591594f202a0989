package nodeapi

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/engine"
	"github.com/bayeux-cluster/bayeux/pkg/serverapi"
)

const testKey = "node-api-test-key-0123456789"

// startNode runs a broker with the in-memory engine and its API.
func startNode(t *testing.T, o Options) (*Server, *prometheus.Registry, *bytes.Buffer) {
	t.Helper()
	eng := engine.NewMemory(engine.MemoryConfig{})
	b, err := broker.New(broker.Config{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	keyFile := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keyFile, []byte(testKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	logs := &bytes.Buffer{}
	o.Listen, o.KeyFile, o.Broker, o.Engine, o.Registry = "127.0.0.1:0", keyFile, b, eng, reg
	o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	s, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Shutdown(context.Background())
		cancel()
		<-done
		_ = eng.Close()
	})
	return s, reg, logs
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

// TestLimits: a body over the size limit gets 413, calls over the rate get
// 429, bad input gets 400; every call is counted by call and result.
func TestLimits(t *testing.T) {
	s, reg, _ := startNode(t, Options{MaxBodyBytes: 200})
	u := s.URL() + "/api/v1/publish"
	cases := []struct {
		name, body string
		status     int
		code       string
	}{
		{"ok", `{"channel":"/a","data":1}`, 200, ""},
		{"too large", `{"channel":"/a","data":"` + strings.Repeat("x", 300) + `"}`, 413, serverapi.CodeTooLarge},
		{"not json", `{`, 400, serverapi.CodeBadRequest},
		{"unknown field", `{"chanel":"/a","data":1}`, 400, serverapi.CodeBadRequest},
		{"wildcard", `{"channel":"/a/*","data":1}`, 400, serverapi.CodeBadRequest},
		{"meta", `{"channel":"/meta/x","data":1}`, 400, serverapi.CodeBadRequest},
		{"no data", `{"channel":"/a"}`, 400, serverapi.CodeBadRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, body := post(t, u, c.body)
			if st != c.status || (c.code != "" && !strings.Contains(body, `"code":"`+c.code+`"`)) {
				t.Errorf("status %d body %s, want %d %s", st, body, c.status, c.code)
			}
		})
	}
	if n := testutil.ToFloat64(counter(t, reg, "publish", "http", serverapi.CodeTooLarge)); n != 1 {
		t.Errorf("too_large counted %v", n)
	}
	// Rate 1/s, burst 2: of ten calls made at once most are refused.
	s, reg, _ = startNode(t, Options{Rate: 1})
	u = s.URL() + "/api/v1/publish"
	limited := 0
	for range 10 {
		if st, _ := post(t, u, `{"channel":"/a","data":1}`); st == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited == 0 {
		t.Error("no call was rate limited")
	}
	if n := testutil.ToFloat64(counter(t, reg, "publish", "http", serverapi.CodeRateLimited)); n != float64(limited) {
		t.Errorf("rate_limited counted %v, want %d", n, limited)
	}
}

func counter(t *testing.T, reg *prometheus.Registry, labels ...string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "bayeux_api_calls_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			lp := m.GetLabel()
			if lp[0].GetValue() == labels[0] && lp[1].GetValue() == labels[2] && lp[2].GetValue() == labels[1] {
				c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
				c.Add(m.GetCounter().GetValue())
				return c
			}
		}
	}
	return prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
}

// TestAuditAndSecrets: disconnect and unsubscribe leave INFO lines; keys
// never appear in logs.
func TestAuditAndSecrets(t *testing.T) {
	s, _, logs := startNode(t, Options{})
	st, _ := post(t, s.URL()+"/api/v1/disconnect", `{"clientId":"nobody"}`)
	if st != http.StatusNotFound {
		t.Errorf("disconnect of nobody: %d", st)
	}
	st, _ = post(t, s.URL()+"/api/v1/unsubscribe", `{"clientId":"nobody","channel":"/a"}`)
	if st != http.StatusNotFound {
		t.Errorf("unsubscribe of nobody: %d", st)
	}
	out := logs.String()
	for _, want := range []string{`level=INFO msg="server API: disconnect" component=api clientId=nobody`, `level=INFO msg="server API: unsubscribe" component=api clientId=nobody`} {
		if !strings.Contains(out, want) {
			t.Errorf("no audit line %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, testKey) {
		t.Error("a key was logged")
	}
}
