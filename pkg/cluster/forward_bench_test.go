package cluster

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
)

// BenchmarkForwardedConnect measures one long-polling /meta/connect
// (advice.timeout 0: answered at once) served by its session's owner
// (local) and sent to the other node of a two-node in-process cluster,
// which forwards it over gRPC (forwarded). One op is one connect, both
// nodes' work together; the HTTP request is handed to the broker
// directly (no client socket). cpu-ns/op is the process's CPU time
// (getrusage: user and system, every goroutine of both nodes) per
// connect, which the machine's other load affects less than the elapsed
// time.
func BenchmarkForwardedConnect(b *testing.B) {
	owner := startInprocNode(b, "a", "", nil)
	other := startInprocNode(b, "b", owner.c.GossipAddr(), nil)
	bayeuxtest.Eventually(b, 10*time.Second, func() error {
		if len(owner.c.Members()) != 2 || len(other.c.Members()) != 2 {
			return errors.New("waiting for two members")
		}
		return nil
	})
	id := owner.peer.Handshake(nil)
	body := fmt.Sprintf(`[{"channel":"/meta/connect","clientId":%q,"connectionType":"long-polling","advice":{"timeout":0}}]`, id)
	for _, tc := range []struct {
		name string
		node *inprocNode
	}{{"local", owner}, {"forwarded", other}} {
		b.Run(tc.name, func(b *testing.B) {
			connect := func() {
				req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				rec := httptest.NewRecorder()
				tc.node.b.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"successful":true`) {
					b.Fatalf("connect: %d %s", rec.Code, rec.Body)
				}
			}
			connect()
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := processCPU(b)
			for i := 0; i < b.N; i++ {
				connect()
			}
			b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// processCPU returns the CPU time (user and system) this process used.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
