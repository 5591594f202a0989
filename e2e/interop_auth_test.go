package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// TestInteropJsforceAuthFailure runs jsforce's AuthFailure extension
// (interop/auth) against a node whose --auth-webhook allows the access
// token "good-token" (jsforce sends "Authorization: OAuth <token>") and
// denies any other.
func TestInteropJsforceAuthFailure(t *testing.T) {
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Headers map[string][]string `json:"headers"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		allow := len(req.Headers["Authorization"]) == 1 && req.Headers["Authorization"][0] == "OAuth good-token"
		w.Header().Set("Content-Type", "application/json")
		if allow {
			_, _ = w.Write([]byte(`{"allow":true,"user":"integration-user"}`))
			return
		}
		_, _ = w.Write([]byte(`{"allow":false}`))
	}))
	defer hook.Close()
	n := testproc.StartNode(t, nil, "--debug-api", "--auth-webhook", hook.URL)
	out := runInterop(t, n.URL, n.Base+"/debug/bayeux", "auth/jsforce-auth.test.mjs")
	t.Logf("interop summary:\n%s", interopSummary(out))
}
