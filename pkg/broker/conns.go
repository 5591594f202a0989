package broker

import "sync"

// connRegistry is the set of live connections that outlive their HTTP
// handler (websockets, parked long-polls), for Shutdown. Its lock is a
// leaf: nothing else is locked while it is held.
type connRegistry struct {
	mu     sync.Mutex
	ws     map[*wsConn]struct{}
	parked map[*parkedPoll]struct{}
}

func (r *connRegistry) trackWS(c *wsConn, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !on {
		delete(r.ws, c)
		return
	}
	if r.ws == nil {
		r.ws = map[*wsConn]struct{}{}
	}
	r.ws[c] = struct{}{}
}

func (r *connRegistry) trackParked(p *parkedPoll, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !on {
		delete(r.parked, p)
		return
	}
	if r.parked == nil {
		r.parked = map[*parkedPoll]struct{}{}
	}
	r.parked[p] = struct{}{}
}

// webSockets returns a snapshot of the live websockets.
func (r *connRegistry) webSockets() []*wsConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*wsConn, 0, len(r.ws))
	for c := range r.ws {
		out = append(out, c)
	}
	return out
}

func (r *connRegistry) webSocketCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ws)
}

// parkedPolls returns a snapshot of the parked long-polls.
func (r *connRegistry) parkedPolls() []*parkedPoll {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*parkedPoll, 0, len(r.parked))
	for p := range r.parked {
		out = append(out, p)
	}
	return out
}
