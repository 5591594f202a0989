package broker

import (
	"context"
	"net/http"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// DebugHandler returns a test-only HTTP API, to be mounted under a prefix
// stripped with http.StripPrefix. It must never be exposed in production:
// it lets a caller end sessions and lose replies.
//
//	POST sessions/{clientId}/expire             end the session as if swept
//	POST sessions/{clientId}/drop-next-connect  lose the next connect reply carrying messages
//	GET  sessions/{clientId}                    {"id","subscriptions","transport","held"}
//
// It also registers the service /service/echo, which answers the publisher
// with the same data and nobody else.
func (b *Broker) DebugHandler() http.Handler {
	_ = b.HandleService("/service/echo", func(_ context.Context, s *Session, m *protocol.Message) *protocol.Error {
		s.Deliver(m.Channel, m.Data)
		return nil
	})
	mux := http.NewServeMux()
	mux.HandleFunc("POST /sessions/{id}/{op}", func(w http.ResponseWriter, r *http.Request) {
		found, err := b.SessionOp(r.Context(), r.PathValue("id"), r.PathValue("op"))
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
