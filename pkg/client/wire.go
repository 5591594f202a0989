package client

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// ---- wire ----

type wireMsg struct {
	Channel                  string                     `json:"channel"`
	ID                       json.RawMessage            `json:"id,omitempty"`
	ClientID                 string                     `json:"clientId,omitempty"`
	Successful               *bool                      `json:"successful,omitempty"`
	Error                    string                     `json:"error,omitempty"`
	Advice                   *protocol.Advice           `json:"advice,omitempty"`
	Data                     json.RawMessage            `json:"data,omitempty"`
	Ext                      map[string]json.RawMessage `json:"ext,omitempty"`
	SupportedConnectionTypes []string                   `json:"supportedConnectionTypes,omitempty"`
}

func (m *wireMsg) ok() bool { return m.Successful != nil && *m.Successful }

func (m *wireMsg) bayeuxError(op, ch string) *Error {
	msg := m.Error
	if msg == "" {
		msg = "request failed"
	}
	pe, ok := protocol.ParseError(msg)
	if !ok {
		pe = &protocol.Error{Message: msg}
	}
	return &Error{Op: op, Channel: ch, Err: pe, Advice: m.Advice}
}

func idKey(raw json.RawMessage) string {
	s := string(raw)
	if len(s) >= 2 && s[0] == '"' {
		var v string
		if json.Unmarshal(raw, &v) == nil {
			return v
		}
	}
	return s
}

// handleIncoming routes replies to their waiters and queues deliveries, in
// the order of msgs. It is called with one transport response or frame.
func (c *Client) handleIncoming(msgs []*wireMsg) {
	var deliveries []*Message
	for _, m := range msgs {
		if m == nil || m.Channel == "" {
			continue
		}
		if m.Successful != nil || protocol.IsMeta(m.Channel) {
			if len(m.ID) == 0 {
				continue
			}
			c.pendMu.Lock()
			ch := c.pending[idKey(m.ID)]
			c.pendMu.Unlock()
			if ch != nil {
				select {
				case ch <- m:
				default:
				}
			}
			continue
		}
		d := &Message{Channel: m.Channel, Data: m.Data}
		if len(m.Ext) > 0 {
			d.Ext, _ = json.Marshal(m.Ext)
		}
		d.ReplayID = replayIDOf(m)
		deliveries = append(deliveries, d)
	}
	if len(deliveries) == 0 {
		return
	}
	// Replay delivery is at least once on the wire (a batch resent after
	// the session moved to another node may have been received already);
	// an event at or below the channel's last replay id is a repeat and is
	// dropped, which makes it exactly once for the handlers.
	c.mu.Lock()
	kept := deliveries[:0]
	for _, d := range deliveries {
		if d.ReplayID != 0 {
			if last, ok := c.replayIDs[d.Channel]; ok && d.ReplayID <= last {
				c.replayRepeats++
				continue
			}
			c.replayIDs[d.Channel] = d.ReplayID
		}
		kept = append(kept, d)
	}
	deliveries = kept
	c.mu.Unlock()
	if len(deliveries) == 0 {
		return
	}
	c.dispMu.Lock()
	c.dispQueue = append(c.dispQueue, deliveries...)
	c.dispMu.Unlock()
	select {
	case c.dispWake <- struct{}{}:
	default:
	}
}

func replayIDOf(m *wireMsg) int64 {
	if raw := m.Ext["replay"]; len(raw) > 0 {
		var id int64
		if json.Unmarshal(raw, &id) == nil {
			return id
		}
	}
	if len(m.Data) > 0 && m.Data[0] == '{' {
		var d struct {
			Event struct {
				ReplayID *int64 `json:"replayId"`
			} `json:"event"`
		}
		if json.Unmarshal(m.Data, &d) == nil && d.Event.ReplayID != nil {
			return *d.Event.ReplayID
		}
	}
	return 0
}

// ---- requests ----

// request sends msgs in one transport request of type transportName and
// waits for one reply per message (each message gets an id here), bounded
// by ctx and timeout.
func (c *Client) request(ctx context.Context, transportName string, timeout time.Duration, msgs ...*protocol.Message) ([]*wireMsg, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	chans := make([]chan *wireMsg, len(msgs))
	keys := make([]string, len(msgs))
	c.pendMu.Lock()
	for i, m := range msgs {
		keys[i] = strconv.FormatInt(c.nextID.Add(1), 10)
		m.ID = json.RawMessage(strconv.Quote(keys[i]))
		chans[i] = make(chan *wireMsg, 1)
		c.pending[keys[i]] = chans[i]
	}
	c.pendMu.Unlock()
	defer func() {
		c.pendMu.Lock()
		for _, k := range keys {
			delete(c.pending, k)
		}
		c.pendMu.Unlock()
	}()
	body, err := json.Marshal(msgs)
	if err != nil {
		return nil, err
	}
	var dead <-chan struct{}
	var deadErr func() error
	switch transportName {
	case protocol.WebSocket:
		conn, err := c.ws.conn(ctx)
		if err != nil {
			return nil, err
		}
		if err := conn.send(ctx, body); err != nil {
			return nil, err
		}
		dead, deadErr = conn.done, conn.error
	case protocol.CallbackPolling:
		if err := c.cp.send(ctx, msgs, body); err != nil {
			return nil, err
		}
	default:
		if err := c.lp.post(ctx, body); err != nil {
			return nil, err
		}
	}
	out := make([]*wireMsg, len(msgs))
	for i, ch := range chans {
		if dead == nil {
			select {
			case r := <-ch:
				out[i] = r
			default:
				return nil, &transportError{fmt.Errorf("no reply to %s in the response", msgs[i].Channel)}
			}
			continue
		}
		select {
		case r := <-ch:
			out[i] = r
		case <-dead:
			select {
			case r := <-ch:
				out[i] = r
				continue
			default:
			}
			return nil, &transportError{deadErr()}
		case <-ctx.Done():
			if c.ctx.Err() != nil {
				return nil, ErrClosed
			}
			return nil, &transportError{fmt.Errorf("waiting for %s reply: %w", msgs[i].Channel, ctx.Err())}
		}
	}
	return out, nil
}

// session waits until a session is established and returns its clientId
// and connection type.
func (c *Client) session(ctx context.Context) (string, string, error) {
	for {
		c.mu.Lock()
		ready, id, ct, stopped := c.ready, c.clientID, c.connType, c.stopped
		c.mu.Unlock()
		if stopped != nil {
			return "", "", stopped
		}
		select {
		case <-ready:
			if id != "" {
				return id, ct, nil
			}
		case <-ctx.Done():
			return "", "", ctx.Err()
		case <-c.ctx.Done():
			return "", "", ErrClosed
		}
	}
}

func (c *Client) requestTimeout(ctx context.Context) time.Duration {
	if _, ok := ctx.Deadline(); ok {
		return 24 * time.Hour // the caller's deadline bounds it
	}
	return c.cfg.RequestTimeout
}
