package broker

import (
	"errors"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// A /meta/connect forwarded to its session's owner is held there for at
// most its hold (its timeout), so its reply comes back within that and a
// round trip. The forwarding node does not rely on it: if the reply has
// not come connectMargin after the hold, it asks the owner to release it
// (Broker.forwardTo, releaseForwarded), and only if the owner cannot be
// asked or does not answer, it cancels the request on the owner (whose
// session keeps its queue: a cancelled connect delivers nothing) and
// answers the client itself (overdueOutcome). A client whose
// connect outlives its own patience (Faye gives up after 1.2 × the
// advised timeout) aborts it and resends, and, with deliveries piling up
// meanwhile, a stuck reply shows as connects answered late with hundreds
// of messages at once.

// defaultConnectMargin is connectMargin unless a test sets another.
const defaultConnectMargin = 5 * time.Second

// errConnectOverdue is the cause of a forwarded held connect cancelled
// because its owner had not answered it within its hold plus the margin.
var errConnectOverdue = errors.New("forwarded connect not answered within its hold plus the margin")

// connectHold returns how long the owner may hold the /meta/connect among
// msgs (the timeout it proposes, clamped as connect does, else the
// configured timeout); 0 if none of them is a connect.
func (b *Broker) connectHold(msgs []*protocol.Message) time.Duration {
	for _, m := range msgs {
		if m.Channel != protocol.ChannelConnect {
			continue
		}
		if m.Advice != nil && m.Advice.Timeout != nil {
			return min(max(time.Duration(*m.Advice.Timeout)*time.Millisecond, 0), b.cfg.MaxTimeout)
		}
		return b.cfg.Timeout
	}
	return 0
}

// overdueOutcome answers a forwarded request holding a /meta/connect that
// its owner did not answer in time, and that was cancelled there. A lone
// connect gets the reply a node gives when it stops holding a connect
// (successful, reconnect retry, interval 0, no messages): the client
// connects again at once, and what the session queued meanwhile stays
// with the owner for that connect. A request with other messages as well
// is lost the way a failed connection is (outcome.lost): the owner may
// have processed them, and a Bayeux failure would make the client send
// them again or take them as refused.
func (b *Broker) overdueOutcome(msgs []*protocol.Message) outcome {
	if len(msgs) != 1 || msgs[0].Channel != protocol.ChannelConnect {
		return outcome{lost: true}
	}
	r := protocol.ReplyTo(msgs[0])
	r.ClientID = msgs[0].ClientID
	r.Succeed()
	r.Advice = &protocol.Advice{Reconnect: protocol.ReconnectRetry, Interval: protocol.Int64(0)}
	b.observeReply(r)
	return outcome{body: appendResponse(nil, []*protocol.Reply{r}, nil, nil)}
}
