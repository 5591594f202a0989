package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/bayeux-cluster/bayeux/pkg/cluster"
)

func TestGossipDebugEndpoints(t *testing.T) {
	f := &cluster.GossipFaults{}
	for _, tc := range []struct {
		name     string
		faults   *cluster.GossipFaults
		method   string
		path     string
		status   int
		body     string
		isolated bool
	}{
		{"state", f, http.MethodGet, "/debug/bayeux/gossip", 200, `"isolated":false`, false},
		{"isolate", f, http.MethodPost, "/debug/bayeux/gossip/isolate", 200, `"isolated":true`, true},
		{"isolate is idempotent", f, http.MethodPost, "/debug/bayeux/gossip/isolate", 200, `"isolated":true`, true},
		{"state while isolated", f, http.MethodGet, "/debug/bayeux/gossip", 200, `"isolated":true`, true},
		{"isolate needs POST", f, http.MethodGet, "/debug/bayeux/gossip/isolate", 405, "", true},
		{"restore", f, http.MethodPost, "/debug/bayeux/gossip/restore", 200, `"isolated":false`, false},
		{"single node", nil, http.MethodPost, "/debug/bayeux/gossip/isolate", 409, "cluster mode", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mux := http.NewServeMux()
			registerGossipDebug(mux, tc.faults)
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.body) {
				t.Fatalf("%s %s = %d %q, want %d containing %q", tc.method, tc.path, rec.Code, rec.Body, tc.status, tc.body)
			}
			if tc.faults != nil && tc.faults.Isolated() != tc.isolated {
				t.Fatalf("after %s %s: isolated %v, want %v", tc.method, tc.path, tc.faults.Isolated(), tc.isolated)
			}
		})
	}
}
