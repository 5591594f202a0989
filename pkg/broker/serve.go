package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// inbound is one decoded request, as every transport (and a forwarded
// request's gRPC call) hands it to serve.
type inbound struct {
	info      RequestInfo
	browserID string // BAYEUX_BROWSER cookie; empty for websocket
	msgs      []*protocol.Message
	parts     [][]byte // the raw JSON texts the messages came from, forwarded as they are
	hops      int      // forwards this request went through (0: from its client)
	// async, if set, is how a request forwarded while it holds a
	// /meta/connect is answered: serve forwards it on a goroutine of its
	// own and returns at once (a websocket keeps reading meanwhile).
	async func(outcome)
	// keepPending: publishes processed here may be left pending in the
	// result (request.keepPending).
	keepPending bool
	// mover, set by a websocket, lets its session move to this node
	// instead of being forwarded (adopt_handover.go).
	mover *moveGate
}

// outcome is what serving a request produced: the local result, or the
// encoded response of the session's owner.
type outcome struct {
	res *result // processed here (nil: forwarded)
	// Forwarded: body is the owner's response, written as it is; gone
	// means the client went away meanwhile (write nothing).
	body []byte
	gone bool
	// lost: a forwarded request holding a /meta/connect got no response
	// from the owner, which may have answered it with messages (a batch
	// recorded as delivered). The transport loses the reply the way a
	// failed connection does (an HTTP 503 whose body is not Bayeux, a
	// websocket closed with 1013), never with a Bayeux reply: a client
	// takes an unsuccessful reply as the connect's answer, and a client of
	// Faye's family would then send a connect with a new id, which
	// acknowledges the batch it never got (Session.implicitAck); after a
	// failed connection it resends the connect with the same id, which
	// gets the batch again.
	lost bool
	// refused counts publishes refused for their rate (see throttle).
	refused int
}

// serve is the one entry of every request: it routes it, then forwards it
// to the session's owner or processes it here. A /meta/connect processed
// here comes back held (outcome.res.connect): the transport holds it.
func (b *Broker) serve(ctx context.Context, in *inbound) outcome {
	rt, node := b.route(ctx, in.msgs, in.hops, in.mover)
	switch rt {
	case routeForward, routeUnavailable:
		if rt == routeForward && in.async != nil && holdsConnect(in.msgs) {
			go func() { in.async(b.forward(ctx, rt, node, in)) }()
			return outcome{}
		}
		return b.forward(ctx, rt, node, in)
	}
	res := b.process(ctx, &request{info: in.info, browserID: in.browserID, msgs: in.msgs, received: time.Now(), keepPending: in.keepPending})
	return outcome{res: res, refused: res.refused}
}

// routing is where serve sends a request.
type routing uint8

const (
	routeLocal       routing = iota // served here (the session is, or was just adopted, here)
	routeForward                    // to the owner node
	routeUnavailable                // nobody can serve it now: 503 with retry advice
)

// route decides where a decoded request is served (with routeForward, the
// node tag). A request carrying a handshake is always served here (the
// new session is local); so is one whose session is here, or ended here
// recently. Otherwise the Router decides (adopting the session here first
// if it says so). A websocket's request (mover) may first move a session
// owned elsewhere to this node (moveHere).
func (b *Broker) route(ctx context.Context, msgs []*protocol.Message, hops int, mover *moveGate) (routing, string) {
	if b.router == nil {
		return routeLocal, ""
	}
	// A node without its lease serves no session of its own (nor makes
	// one) until it has it again and knows which are still its own
	// (adopt_fence.go); it still relays requests for other owners.
	for _, m := range msgs {
		if m.Channel == protocol.ChannelHandshake {
			if !b.awaitFence(ctx) {
				return routeUnavailable, ""
			}
			return routeLocal, ""
		}
	}
	local := func(id string) bool {
		_, ok := b.Session(id)
		return ok || b.tombstone(id) != nil
	}
	for _, m := range msgs {
		if m.ClientID == "" {
			continue
		}
		if local(m.ClientID) {
			if !b.awaitFence(ctx) {
				return routeUnavailable, ""
			}
			if local(m.ClientID) { // not moved meanwhile
				return routeLocal, ""
			}
		}
		rt, err := b.resolve(ctx, m.ClientID, hops)
		if err == nil && rt.node != "" && hops == 0 && mover != nil {
			rt, err = b.moveHere(ctx, mover, rt, m.ClientID)
		}
		switch {
		case err != nil:
			b.log.Warn("session route unknown", "session", m.ClientID, "err", err)
			return routeUnavailable, ""
		case rt.unavailable:
			return routeUnavailable, ""
		case rt.node != "":
			if hops >= maxHops {
				return routeUnavailable, ""
			}
			return routeForward, rt.node
		case rt.adopt != nil:
			if _, err := b.adopt(ctx, rt.adopt); err != nil {
				b.log.Warn("session adoption failed", "session", m.ClientID, "err", err)
				return routeUnavailable, ""
			}
		}
		return routeLocal, ""
	}
	return routeLocal, ""
}

// forward sends a request to node; if the node cannot be reached (or rt
// is routeUnavailable) the client gets per-message errors with retry
// advice, so it tries again (membership soon settles who owns the
// session).
func (b *Broker) forward(ctx context.Context, rt routing, node string, in *inbound) outcome {
	if rt == routeForward {
		req := &ForwardedRequest{Transport: in.info.Transport, Parts: in.parts, BrowserID: in.browserID, RemoteAddr: in.info.RemoteAddr, Hops: in.hops + 1}
		resp, err := b.forwardTo(ctx, node, req, in.msgs)
		if err == nil {
			return outcome{body: resp.Body, refused: resp.RateRefused}
		}
		if ctx.Err() != nil {
			return outcome{gone: true}
		}
		if errors.Is(err, errConnectOverdue) {
			return b.overdueOutcome(in.msgs)
		}
		if b.draining.Err() == nil {
			b.log.Warn("forward to session owner failed", "owner", node, "err", err)
		}
		if holdsConnect(in.msgs) {
			return outcome{lost: true}
		}
	}
	clientID := clientIDOf(in.msgs)
	replies := make([]*protocol.Reply, 0, len(in.msgs))
	for _, m := range in.msgs {
		r := protocol.ReplyTo(m)
		r.Fail(protocol.NewError(protocol.CodeServerUnavailable, "Session owner unavailable", clientID))
		r.Advice = &protocol.Advice{Reconnect: protocol.ReconnectRetry, Interval: protocol.Int64(500)}
		b.observeReply(r)
		replies = append(replies, r)
	}
	return outcome{body: appendResponse(nil, replies, nil, nil)}
}

// forwardTo calls the Router. A request holding a /meta/connect is held by
// the owner for at most its hold; if no reply came connectMargin after
// that, the owner is asked to release it as below, and only if it cannot
// be asked or does not answer within releaseWait is the call cancelled
// (the owner ends the connect without delivering) and forwardTo returns
// errConnectOverdue, on which the caller answers the client itself
// (overdueOutcome). (Cancelling at once dropped a reply the owner made
// as the bound passed, with messages in it: lost for a replay session,
// TestChaosRealClients/freeze.) Once this node
// drains (Shutdown, after the hand-off), the owner is asked to release
// it (answer it at once, empty; the queue stays), every drainTick until
// the reply is back: the connect may reach the owner after a release
// did. Its reply comes back the normal way. Cancelling the call instead
// could lose a reply the owner had already made, with messages in it. If
// the owner cannot be asked, or does not answer within releaseWait, the
// call is cancelled.
func (b *Broker) forwardTo(ctx context.Context, node string, req *ForwardedRequest, msgs []*protocol.Message) (*ForwardedResponse, error) {
	id := clientIDOf(msgs)
	if id == "" || !holdsConnect(msgs) {
		return b.router.Forward(ctx, node, req)
	}
	fctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer context.AfterFunc(b.draining, func() { b.releaseForwarded(fctx, func() { cancel(nil) }, node, id) })()
	bound := b.connectHold(msgs) + b.connectMargin
	overdue := time.AfterFunc(bound, func() {
		// Asked to release it, the owner answers at once (empty; the
		// queue stays) and its reply comes back the normal way, as does
		// one it had already made: cancelling at once could lose that
		// one, with messages in it. Cancelled only if the owner cannot be
		// asked or does not answer (releaseForwarded).
		b.log.Warn("forwarded connect not answered by its owner within its hold plus the margin; asking the owner to release it",
			"owner", node, "session", id, "bound", bound)
		b.releaseForwarded(fctx, func() { cancel(errConnectOverdue) }, node, id)
	})
	defer overdue.Stop()
	start := time.Now()
	// The diagnostics' arguments would be built for every forwarded
	// connect (a hot path of long-polling): only when debug is on.
	debug := b.log.Enabled(ctx, slog.LevelDebug)
	if debug {
		b.log.Debug("forwarded connect sent", "owner", node, "session", id, "hops", req.Hops, "bound", bound)
	}
	resp, err := b.router.Forward(fctx, node, req)
	took := time.Since(start)
	switch {
	case err == nil:
		if debug {
			b.log.Debug("forwarded connect answered", "owner", node, "session", id, "took", took)
		}
	case ctx.Err() == nil && errors.Is(context.Cause(fctx), errConnectOverdue):
		b.log.Warn("forwarded connect not released by its owner; answered here, cancelled there",
			"owner", node, "session", id, "waited", took, "bound", bound, "err", err)
		return nil, errConnectOverdue
	default:
		if debug {
			b.log.Debug("forwarded connect failed", "owner", node, "session", id, "took", took, "err", err)
		}
	}
	return resp, err
}

// releaseForwarded asks node to release the held connect of session id
// until fctx ends (the forwarded call returned), every drainTick; it
// cancels the call when node cannot be asked or releaseWait passed.
func (b *Broker) releaseForwarded(fctx context.Context, cancel context.CancelFunc, node, id string) {
	defer cancel()
	deadline := time.NewTimer(releaseWait)
	defer deadline.Stop()
	tick := time.NewTicker(drainTick)
	defer tick.Stop()
	for {
		rctx, rcancel := context.WithTimeout(fctx, releaseWait)
		_, err := b.router.SessionOp(rctx, node, id, OpReleaseConnect)
		rcancel()
		if err != nil && fctx.Err() == nil {
			b.log.Debug("release of a forwarded connect failed", "owner", node, "session", id, "err", err)
			return
		}
		select {
		case <-fctx.Done():
			return
		case <-deadline.C:
			return
		case <-tick.C:
		}
	}
}

// ServeForwarded serves a request another node forwarded to this node, the
// session's owner, through serve like any other. A /meta/connect is held
// by this call until it is due, or until ctx ends (then nothing is
// delivered and the messages stay queued).
func (b *Broker) ServeForwarded(ctx context.Context, req *ForwardedRequest) (*ForwardedResponse, error) {
	var msgs []*protocol.Message
	var err error
	for _, p := range req.Parts {
		if msgs, err = protocol.DecodeAppend(msgs, p, b.cfg.Limits); err != nil {
			var re *protocol.RequestError
			if errors.As(err, &re) {
				return nil, fmt.Errorf("forwarded request: %w", re)
			}
			return nil, fmt.Errorf("forwarded request: %w", err)
		}
	}
	out := b.serve(ctx, &inbound{
		info:      RequestInfo{Transport: req.Transport, RemoteAddr: req.RemoteAddr},
		browserID: req.BrowserID,
		msgs:      msgs,
		parts:     req.Parts,
		hops:      req.Hops,
	})
	if out.res == nil {
		if out.gone {
			return nil, ctx.Err()
		}
		if out.lost {
			return nil, ErrReplyLost
		}
		return &ForwardedResponse{Body: out.body, RateRefused: out.refused}, nil
	}
	res := out.res
	if hc := res.connect; hc != nil {
		start := time.Now()
		if hc.wait(ctx, 0) == waitGone {
			hc.cancel()
			if b.log.Enabled(ctx, slog.LevelDebug) {
				b.log.Debug("forwarded connect cancelled by the forwarding node", "session", hc.s.id, "held", time.Since(start))
			}
			return nil, ctx.Err()
		}
		pubs, drop := hc.answer(true)
		if b.log.Enabled(ctx, slog.LevelDebug) {
			b.log.Debug("forwarded connect answered here", "session", hc.s.id, "held", time.Since(start), "deliveries", len(pubs), "hops", req.Hops)
		}
		if drop {
			// Debug API: the reply is lost on its way; the forwarding
			// node answers its client 503 (owner unavailable).
			return nil, ErrReplyDropped
		}
		return &ForwardedResponse{Body: appendResponse(nil, res.replies, pubs, hc.reply), RateRefused: res.refused}, nil
	}
	return &ForwardedResponse{Body: appendResponse(nil, res.replies, nil, nil), RateRefused: res.refused}, nil
}
