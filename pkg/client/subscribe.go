package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/bayeux-cluster/bayeux/pkg/broker/channel"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// Subscription is one Subscribe call.
type Subscription struct {
	c       *Client
	pattern string
	handler Handler
	replay  *int64
}

// Pattern returns the subscribed channel or pattern.
func (s *Subscription) Pattern() string { return s.pattern }

// Unsubscribe removes this subscription; the server is told when it was the
// last one on its pattern.
func (s *Subscription) Unsubscribe(ctx context.Context) error { return s.c.unsubscribe(ctx, s) }

// SubscribeOption configures a subscription.
type SubscribeOption func(*Subscription)

// WithReplayID subscribes from replay id (replay extension): -1 for new
// events only, -2 for everything retained, or the last id already seen.
func WithReplayID(id int64) SubscribeOption { return func(s *Subscription) { s.replay = &id } }

// Publish publishes data (marshalled with encoding/json; a json.RawMessage
// is sent as is) to a concrete channel and waits for the server's
// acknowledgement. A refusal is an *Error carrying the Bayeux error.
func (c *Client) Publish(ctx context.Context, ch string, data any) error {
	raw, ok := data.(json.RawMessage)
	if !ok {
		var err error
		if raw, err = json.Marshal(data); err != nil {
			return fmt.Errorf("publish %s: %w", ch, err)
		}
	}
	id, ct, err := c.session(ctx)
	if err != nil {
		return err
	}
	r, err := c.request(ctx, ct, c.requestTimeout(ctx), &protocol.Message{Channel: ch, ClientID: id, Data: raw})
	if err != nil && serverWentAway(err) && ctx.Err() == nil {
		// The node closed the websocket for its shutdown without answering:
		// it did not process the publish (it answers everything it
		// processed before closing), so sending it again, on the next
		// socket, cannot repeat it.
		r, err = c.request(ctx, ct, c.requestTimeout(ctx), &protocol.Message{Channel: ch, ClientID: id, Data: raw})
	}
	if err != nil {
		return fmt.Errorf("publish %s: %w", ch, err)
	}
	if !r[0].ok() {
		c.noteAdvice(id, r[0].Advice)
		return r[0].bayeuxError("publish", ch)
	}
	return nil
}

// Subscribe subscribes handler to pattern (a channel or a wildcard
// pattern). It returns when the server confirmed the subscription.
func (c *Client) Subscribe(ctx context.Context, pattern string, handler Handler, opts ...SubscribeOption) (*Subscription, error) {
	if handler == nil {
		return nil, errors.New("subscribe: nil handler")
	}
	if _, _, err := channel.Parse(pattern); err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", pattern, err)
	}
	s := &Subscription{c: c, pattern: pattern, handler: handler}
	for _, o := range opts {
		o(s)
	}
	id, ct, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if len(c.subs[pattern]) == 0 {
		c.subOrder = append(c.subOrder, pattern)
	}
	c.subs[pattern] = append(c.subs[pattern], s)
	m := c.subscribeMsgLocked(id, pattern, s.replay)
	c.mu.Unlock()
	r, err := c.request(ctx, ct, c.requestTimeout(ctx), m)
	if err == nil && !r[0].ok() {
		c.noteAdvice(id, r[0].Advice)
		err = r[0].bayeuxError("subscribe", pattern)
	}
	if err != nil {
		c.removeSub(s)
		return nil, err
	}
	c.seedReplayIDs(r[0])
	return s, nil
}

// seedReplayIDs records, from a subscribe reply's ext.replay, the replay
// id each new stream starts after, for channels with no id seen yet: a
// later delivery at or below it is a repeat.
func (c *Client) seedReplayIDs(rep *wireMsg) {
	raw := rep.Ext["replay"]
	if len(raw) == 0 {
		return
	}
	var starts map[string]int64
	if json.Unmarshal(raw, &starts) != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch, id := range starts {
		if _, ok := c.replayIDs[ch]; !ok && id >= 0 {
			c.replayIDs[ch] = id
		}
	}
}

// resyncReplay resubscribes every concrete channel from the last replay id
// seen on it. A replay session without the ack extension learns nothing
// about a connect reply lost in transit (the server counts the next
// connect as its acknowledgement), so after a failed connect the client
// asks again for everything after what it has; repeats are dropped.
func (c *Client) resyncReplay(ctx context.Context) error {
	c.mu.Lock()
	id, ct := c.clientID, c.connType
	var msgs []*protocol.Message
	for _, p := range c.subOrder {
		if c.replayResumable(p) {
			msgs = append(msgs, c.subscribeMsgLocked(id, p, nil))
		}
	}
	c.mu.Unlock()
	if len(msgs) == 0 {
		return nil
	}
	rs, err := c.request(ctx, ct, c.requestTimeout(ctx), msgs...)
	if err != nil {
		return fmt.Errorf("replay resync: %w", err)
	}
	for i, r := range rs {
		if !r.ok() {
			if r.Advice != nil && r.Advice.Reconnect == protocol.ReconnectHandshake {
				return nil // the session is gone; the handshake resubscribes from the last ids
			}
			return fmt.Errorf("replay resync of %v: %w", msgs[i].Subscription.Names, r.bayeuxError("subscribe", msgs[i].Subscription.Names[0]))
		}
	}
	return nil
}

func (c *Client) subscribeMsgLocked(id, pattern string, replay *int64) *protocol.Message {
	m := &protocol.Message{Channel: protocol.ChannelSubscribe, ClientID: id, Subscription: protocol.Subscription{Names: []string{pattern}}}
	if !c.replayOn {
		return m
	}
	if channel.IsWildcard(pattern) {
		// Replay ids are per channel: the pattern takes -1/-2 and every
		// channel under it seen so far resumes after its last id.
		ids := map[string]int64{}
		for ch, id := range c.replayIDs {
			if !channel.IsWildcard(ch) && channel.Match(pattern, ch) {
				ids[ch] = id
			}
		}
		if replay != nil && *replay < 0 {
			ids[pattern] = *replay
		}
		if len(ids) > 0 {
			m.Ext, _ = json.Marshal(map[string]any{"replay": ids})
		}
		return m
	}
	var from *int64
	if v, ok := c.replayIDs[pattern]; ok {
		from = &v
	} else if replay != nil {
		from = replay
	}
	if from != nil {
		m.Ext, _ = json.Marshal(map[string]any{"replay": map[string]int64{pattern: *from}})
	}
	return m
}

// replayResumable reports whether a replay id was seen on pattern (a
// channel) or on a channel under it (a wildcard). c.mu is held.
func (c *Client) replayResumable(pattern string) bool {
	if !channel.IsWildcard(pattern) {
		_, ok := c.replayIDs[pattern]
		return ok
	}
	for ch := range c.replayIDs {
		if channel.Match(pattern, ch) {
			return true
		}
	}
	return false
}

// removeSub forgets s and reports whether its pattern has no subscription left.
func (c *Client) removeSub(s *Subscription) (last, found bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	list := c.subs[s.pattern]
	for i, x := range list {
		if x == s {
			list = append(list[:i:i], list[i+1:]...)
			found = true
			break
		}
	}
	if len(list) == 0 {
		delete(c.subs, s.pattern)
		for i, p := range c.subOrder {
			if p == s.pattern {
				c.subOrder = append(c.subOrder[:i:i], c.subOrder[i+1:]...)
				break
			}
		}
		return true, found
	}
	c.subs[s.pattern] = list
	return false, found
}

func (c *Client) unsubscribe(ctx context.Context, s *Subscription) error {
	last, found := c.removeSub(s)
	if !found || !last {
		return nil
	}
	id, ct, err := c.session(ctx)
	if err != nil {
		return err
	}
	r, err := c.request(ctx, ct, c.requestTimeout(ctx), &protocol.Message{
		Channel: protocol.ChannelUnsubscribe, ClientID: id, Subscription: protocol.Subscription{Names: []string{s.pattern}}})
	if err != nil {
		return fmt.Errorf("unsubscribe %s: %w", s.pattern, err)
	}
	if !r[0].ok() {
		return r[0].bayeuxError("unsubscribe", s.pattern)
	}
	return nil
}

// Unsubscribe removes every subscription on pattern.
func (c *Client) Unsubscribe(ctx context.Context, pattern string) error {
	c.mu.Lock()
	list := append([]*Subscription(nil), c.subs[pattern]...)
	c.mu.Unlock()
	var err error
	for _, s := range list {
		err = errors.Join(err, s.Unsubscribe(ctx))
	}
	return err
}
