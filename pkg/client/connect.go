package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/channel"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// noteAdvice records advice that arrived on a non-connect reply; a
// "handshake" advice is acted on by the connect loop at its next turn.
func (c *Client) noteAdvice(id string, a *protocol.Advice) {
	if a == nil {
		return
	}
	c.mu.Lock()
	if id != c.clientID {
		c.mu.Unlock()
		return // advice about a session already replaced
	}
	mergeAdvice(&c.advice, a)
	c.mu.Unlock()
}

func mergeAdvice(dst *protocol.Advice, a *protocol.Advice) {
	if a.Reconnect != "" {
		dst.Reconnect = a.Reconnect
	}
	if a.Interval != nil {
		dst.Interval = a.Interval
	}
	if a.Timeout != nil {
		dst.Timeout = a.Timeout
	}
	if a.MaxInterval != nil {
		dst.MaxInterval = a.MaxInterval
	}
	dst.MultipleClients = a.MultipleClients
}

// ---- handshake and connect loop ----

// closing reports whether Close has been called.
func (c *Client) closing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCalled
}

func (c *Client) handshakeMsg() *protocol.Message {
	ext := map[string]any{}
	for k, v := range c.cfg.HandshakeExt {
		ext[k] = v
	}
	if !c.cfg.DisableAck {
		ext["ack"] = true
	}
	if c.cfg.Replay {
		ext["replay"] = true
	}
	m := &protocol.Message{Channel: protocol.ChannelHandshake, Version: protocol.Version, MinimumVersion: protocol.Version,
		SupportedConnectionTypes: c.cfg.Transports}
	if len(ext) > 0 {
		m.Ext, _ = json.Marshal(ext)
	}
	return m
}

// handshake performs one handshake (trying the transports in order for the
// handshake itself), negotiates the connection type and resubscribes.
func (c *Client) handshake(ctx context.Context) error {
	if c.closing() {
		return ErrClosed
	}
	rep, err := c.handshakeRequest(ctx)
	if err != nil {
		return err
	}
	if !rep.ok() {
		e := rep.bayeuxError("handshake", "")
		if rep.Advice != nil && rep.Advice.Reconnect == protocol.ReconnectNone {
			return e
		}
		if rep.Advice == nil || rep.Advice.Reconnect == "" {
			return e // no advice: do not hammer the server
		}
		return &transportError{e} // retry advice: back off and retry
	}
	connType, err := c.negotiate(rep)
	if err != nil {
		return err
	}
	if c.closing() {
		// Close began while this handshake was in flight: end the new
		// session now rather than leave it for the server to sweep.
		_, _ = c.request(ctx, connType, c.cfg.RequestTimeout, &protocol.Message{Channel: protocol.ChannelDisconnect, ClientID: rep.ClientID})
		return ErrClosed
	}
	var ack, replay bool
	_ = json.Unmarshal(rep.Ext["ack"], &ack)
	_ = json.Unmarshal(rep.Ext["replay"], &replay)
	c.mu.Lock()
	c.advice = protocol.Advice{}
	if rep.Advice != nil {
		mergeAdvice(&c.advice, rep.Advice)
	}
	c.advice.Reconnect = protocol.ReconnectRetry
	c.clientID = rep.ClientID
	c.connType = connType
	c.ackEnabled = ack && !c.cfg.DisableAck
	c.lastAck = 0
	c.resync = false // the resubscription below starts from the last replay ids
	c.replayOn = replay && c.cfg.Replay
	c.handshakes++
	var resub []*protocol.Message
	for _, p := range c.subOrder {
		var from *int64
		if l := c.subs[p]; len(l) > 0 {
			from = l[0].replay
		}
		resub = append(resub, c.subscribeMsgLocked(rep.ClientID, p, from))
	}
	c.mu.Unlock()
	if connType != protocol.WebSocket {
		c.ws.closeConn()
	}
	if err := c.resubscribe(ctx, connType, resub); err != nil {
		return err
	}
	c.mu.Lock()
	select {
	case <-c.ready:
	default:
		close(c.ready)
	}
	c.mu.Unlock()
	return nil
}

// handshakeRequest sends the handshake, trying the transports in order.
func (c *Client) handshakeRequest(ctx context.Context) (*wireMsg, error) {
	var r []*wireMsg
	var err error
	for i, t := range c.cfg.Transports {
		r, err = c.request(ctx, t, c.cfg.RequestTimeout, c.handshakeMsg())
		if err == nil || ctx.Err() != nil {
			break
		}
		if i < len(c.cfg.Transports)-1 {
			c.log.Debug("bayeux handshake failed, trying the next transport", "transport", t, "err", err)
		}
	}
	if err != nil {
		return nil, err
	}
	return r[0], nil
}

// negotiate picks the connection type from a successful handshake reply:
// the first of ours the server supports.
func (c *Client) negotiate(rep *wireMsg) (string, error) {
	connType := ""
	for _, mine := range c.cfg.Transports {
		for _, theirs := range rep.SupportedConnectionTypes {
			if mine == theirs {
				connType = mine
				break
			}
		}
		if connType != "" {
			break
		}
	}
	if connType == "" {
		return "", &Error{Op: "handshake", Err: protocol.NewError(protocol.CodeConnectionType, "No common connection type")}
	}
	if rep.ClientID == "" {
		return "", &Error{Op: "handshake", Err: protocol.NewError(protocol.CodeBadRequest, "Handshake reply without clientId")}
	}
	return connType, nil
}

// resubscribe subscribes a new session to every pattern the client has.
func (c *Client) resubscribe(ctx context.Context, connType string, resub []*protocol.Message) error {
	if len(resub) == 0 {
		return nil
	}
	rs, err := c.request(ctx, connType, c.cfg.RequestTimeout, resub...)
	if err != nil {
		return fmt.Errorf("resubscribe: %w", err)
	}
	for i, r := range rs {
		c.seedReplayIDs(r)
		if !r.ok() {
			// Keep the handler: the pattern stays in the client's set and
			// is tried again on the next handshake.
			c.log.Warn("bayeux resubscribe refused", "subscription", resub[i].Subscription.Names, "error", r.Error)
		}
	}
	return nil
}

// lose marks the session as gone: callers wait for the next handshake.
func (c *Client) lose() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clientID = ""
	select {
	case <-c.ready:
		c.ready = make(chan struct{})
	default:
	}
}

func (c *Client) stop(err error) {
	c.mu.Lock()
	if c.stopped == nil {
		c.stopped = err
	}
	select {
	case <-c.ready:
	default:
		close(c.ready) // wake waiters: they see stopped
	}
	c.mu.Unlock()
}

func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.BackoffMin
	for i := 0; i < attempt && d < c.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, c.cfg.BackoffMax)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// step is what one stage of the connect loop tells the loop to do next.
type step uint8

const (
	stepOn    step = iota // go on (to the next stage, or the next round)
	stepRetry             // backed off already: count an attempt, start over
	stepStop              // the client is stopped or closing: end the loop
)

// connectLoop keeps the session: it handshakes when it must, resyncs
// replay positions after a lost reply, and holds one /meta/connect after
// another, following the server's advice.
func (c *Client) connectLoop() {
	defer c.wg.Done()
	ctx := c.ctx
	attempt := 0
	needHandshake := false
	for ctx.Err() == nil {
		st := stepOn
		if needHandshake {
			if st = c.rehandshake(ctx, attempt); st == stepOn {
				needHandshake = false
			}
		}
		if st == stepOn {
			st = c.resyncStep(ctx, attempt)
		}
		if st == stepOn {
			st, needHandshake = c.connectOnce(ctx, &attempt)
		}
		switch st {
		case stepStop:
			return
		case stepRetry:
			attempt++
		}
	}
}

// retryAfter backs off before attempt number attempt is retried.
func (c *Client) retryAfter(ctx context.Context, attempt int) step {
	if !sleepCtx(ctx, c.backoff(attempt)) {
		return stepStop
	}
	return stepRetry
}

// rehandshake ends the lost session and handshakes again.
func (c *Client) rehandshake(ctx context.Context, attempt int) step {
	c.lose()
	err := c.handshake(ctx)
	switch {
	case err == nil:
		return stepOn
	case ctx.Err() != nil || errors.Is(err, ErrClosed):
		return stepStop
	}
	var te *transportError
	if !errors.As(err, &te) {
		// Refused (advice none, no advice, no common type).
		c.log.Error("bayeux handshake refused; client stopped", "err", err)
		c.stop(err)
		return stepStop
	}
	c.log.Debug("bayeux handshake failed", "err", err, "attempt", attempt)
	return c.retryAfter(ctx, attempt)
}

// resyncStep re-reads replay positions after a lost connect reply, before
// the next connect, which the server takes as the acknowledgement of the
// reply that was lost.
func (c *Client) resyncStep(ctx context.Context, attempt int) step {
	c.mu.Lock()
	resync := c.resync
	c.resync = false
	c.mu.Unlock()
	if !resync {
		return stepOn
	}
	if err := c.resyncReplay(ctx); err != nil {
		c.log.Debug("bayeux replay resync failed", "err", err, "attempt", attempt)
		c.mu.Lock()
		c.resync = true
		c.mu.Unlock()
		return c.retryAfter(ctx, attempt)
	}
	return stepOn
}

// connectOnce sends one /meta/connect and follows the advice of its
// reply; handshake reports that the next round must handshake first.
func (c *Client) connectOnce(ctx context.Context, attempt *int) (_ step, handshake bool) {
	c.mu.Lock()
	id, ct := c.clientID, c.connType
	adv := c.advice
	m := &protocol.Message{Channel: protocol.ChannelConnect, ClientID: id, ConnectionType: ct}
	if c.ackEnabled {
		m.Ext, _ = json.Marshal(map[string]int64{"ack": c.lastAck})
	}
	c.mu.Unlock()
	if adv.Reconnect == protocol.ReconnectHandshake {
		return stepOn, true
	}
	timeout := c.cfg.DefaultTimeout
	if adv.Timeout != nil {
		timeout = time.Duration(*adv.Timeout) * time.Millisecond
	}
	r, err := c.request(ctx, ct, timeout+c.cfg.TimeoutMargin, m)
	if err != nil {
		if ctx.Err() != nil {
			return stepStop, false
		}
		c.connectFailures.Add(1)
		c.log.Debug("bayeux connect failed", "err", err, "attempt", *attempt)
		c.mu.Lock()
		if c.replayOn && !c.ackEnabled {
			c.resync = true
		}
		c.mu.Unlock()
		if ct == protocol.WebSocket {
			c.ws.closeConn() // a socket that missed its deadline is dead
		}
		return c.retryAfter(ctx, *attempt), false
	}
	return c.afterConnect(ctx, r[0], attempt)
}

// afterConnect follows the advice of a connect reply: reconnect at its
// interval, handshake again, back off, or stop.
func (c *Client) afterConnect(ctx context.Context, rep *wireMsg, attempt *int) (_ step, handshake bool) {
	c.mu.Lock()
	if rep.Advice != nil {
		mergeAdvice(&c.advice, rep.Advice)
	}
	adv := c.advice
	if rep.ok() && c.ackEnabled {
		var a int64
		// Batch ids only grow within a session; never step back.
		if json.Unmarshal(rep.Ext["ack"], &a) == nil && a > c.lastAck {
			c.lastAck = a
		}
	}
	c.mu.Unlock()
	interval := time.Duration(0)
	if adv.Interval != nil {
		interval = time.Duration(*adv.Interval) * time.Millisecond
	}
	switch adv.Reconnect {
	case protocol.ReconnectNone:
		err := error(ErrClosed)
		if !rep.ok() {
			err = rep.bayeuxError("connect", "")
		}
		c.stop(err)
		return stepStop, false
	case protocol.ReconnectHandshake:
		*attempt = 0
		if !sleepCtx(ctx, max(interval, 0)) {
			return stepStop, true
		}
		return stepOn, true
	}
	if !rep.ok() {
		// Refused without handshake advice: back off, then retry.
		c.log.Debug("bayeux connect refused", "error", rep.Error)
		if !sleepCtx(ctx, max(interval, c.backoff(*attempt))) {
			return stepStop, false
		}
		return stepRetry, false
	}
	*attempt = 0
	if interval < 0 {
		c.stop(errors.New("bayeux: server advised not to reconnect (negative interval)"))
		return stepStop, false
	}
	if !sleepCtx(ctx, interval) {
		return stepStop, false
	}
	return stepOn, false
}

// ---- dispatcher ----

func (c *Client) dispatchLoop() {
	defer c.wg.Done()
	var buf []string
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.dispWake:
		}
		c.dispMu.Lock()
		batch := c.dispQueue
		c.dispQueue = nil
		c.dispMu.Unlock()
		for _, m := range batch {
			if c.ctx.Err() != nil {
				return
			}
			buf = channel.Candidates(buf[:0], m.Channel)
			var hs []Handler
			c.mu.Lock()
			for _, p := range c.subOrder {
				for _, cand := range buf {
					if cand == p {
						for _, s := range c.subs[p] {
							hs = append(hs, s.handler)
						}
						break
					}
				}
			}
			c.mu.Unlock()
			for _, h := range hs {
				h(m)
			}
		}
	}
}
