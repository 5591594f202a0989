package main

import (
	"encoding/json"
	"net/http"

	"github.com/bayeux-cluster/bayeux/pkg/cluster"
)

// registerGossipDebug adds the gossip fault-injection endpoints of the
// test-only debug API (--debug-api) to mux:
//
//	POST /debug/bayeux/gossip/isolate  drop all gossip to and from peers
//	POST /debug/bayeux/gossip/restore  let gossip through again
//	GET  /debug/bayeux/gossip          {"isolated":bool,"dropped":N}
//
// Each answers with the state after the call. f is nil when the node runs
// without a cluster (no --redis): the endpoints then answer 409.
func registerGossipDebug(mux *http.ServeMux, f *cluster.GossipFaults) {
	handle := func(pattern string, op func(*cluster.GossipFaults)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, _ *http.Request) {
			if f == nil {
				http.Error(w, "gossip fault injection needs cluster mode (--redis)", http.StatusConflict)
				return
			}
			if op != nil {
				op(f)
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"isolated": f.Isolated(), "dropped": f.Dropped()})
		})
	}
	handle("POST /debug/bayeux/gossip/isolate", (*cluster.GossipFaults).Isolate)
	handle("POST /debug/bayeux/gossip/restore", (*cluster.GossipFaults).Restore)
	handle("GET /debug/bayeux/gossip", nil)
}
