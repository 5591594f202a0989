package broker

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// ErrReplyDropped is ServeForwarded's error for a reply the debug API
// asked to lose (drop-next-connect): the forwarding node then loses its
// client's reply too (outcome.lost).
var ErrReplyDropped = errors.New("broker: reply dropped (debug API)")

// ErrReplyLost is ServeForwarded's error for a connect this node forwarded
// once more and whose reply did not come back (outcome.lost).
var ErrReplyLost = errors.New("broker: the session owner's reply was lost")

// debugFaults holds the faults the debug API armed. Without any armed it
// costs one atomic load per answered connect that carries messages.
type debugFaults struct {
	armed    atomic.Int32
	mu       sync.Mutex
	dropNext map[string]struct{} // sessions whose next connect reply carrying messages is lost
}

// armDrop makes session id's next connect reply that carries messages be
// lost in transit.
func (f *debugFaults) armDrop(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dropNext == nil {
		f.dropNext = map[string]struct{}{}
	}
	if _, ok := f.dropNext[id]; !ok {
		f.dropNext[id] = struct{}{}
		f.armed.Add(1)
	}
}

// takeDrop reports (once) whether session id's reply is to be lost.
func (f *debugFaults) takeDrop(id string) bool {
	if f.armed.Load() == 0 {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.dropNext[id]; !ok {
		return false
	}
	delete(f.dropNext, id)
	f.armed.Add(-1)
	return true
}

// DebugHandler returns a test-only HTTP API, to be mounted under a prefix
// stripped with http.StripPrefix. It must never be exposed in production:
// it lets a caller end sessions and lose replies.
//
//	POST sessions/{clientId}/expire             end the session as if swept
//	POST sessions/{clientId}/drop-next-connect  lose the next connect reply carrying messages
//	GET  sessions/{clientId}                    {"id","subscriptions","transport","held"}
//
// A lost reply is lost the way its transport can: the connection is
// closed (HTTP, websocket), or the forwarded call fails and the forwarding
// node answers 503.
func (b *Broker) DebugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /sessions/{id}/{op}", func(w http.ResponseWriter, r *http.Request) {
		found, err := b.SessionOp(r.Context(), r.PathValue("id"), SessionOpKind(r.PathValue("op")))
		switch {
		case err != nil:
			http.Error(w, err.Error(), http.StatusBadRequest)
		case !found:
			http.NotFound(w, r)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})
	mux.HandleFunc("GET /sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		s, ok := b.Session(r.PathValue("id"))
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		out := []byte(`{"id":`)
		out = protocol.AppendString(out, s.id)
		out = append(out, `,"subscriptions":[`...)
		for i, p := range s.Subscriptions() {
			if i > 0 {
				out = append(out, ',')
			}
			out = protocol.AppendString(out, p)
		}
		out = append(out, `],"transport":`...)
		s.mu.Lock()
		out = protocol.AppendString(out, s.transport)
		if s.waiter != nil {
			out = append(out, `,"held":true`...)
		} else {
			out = append(out, `,"held":false`...)
		}
		s.mu.Unlock()
		_, _ = w.Write(append(out, "}\n"...))
	})
	return mux
}

// HandleDebugServices registers the services the interop suites use
// (test-only, like DebugHandler): /service/echo answers the publisher
// with the same data and nobody else.
func (b *Broker) HandleDebugServices() error {
	return b.HandleService("/service/echo", func(_ context.Context, s *Session, m *protocol.Message) *protocol.Error {
		s.Deliver(m.Channel, m.Data)
		return nil
	})
}
