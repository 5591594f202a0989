package cluster

import (
	"context"
	"strings"

	"github.com/bayeux-cluster/bayeux/pkg/broker"
)

// ParseClientID returns the node tag of a clientId issued by a cluster
// node (a 6-character tag, then broker.ClientIDRandomLen characters, all
// in the tag alphabet). ok is false for any other string.
func ParseClientID(id string) (tag string, ok bool) {
	tag, _, ok = broker.SplitClientID(id, TagLen)
	if !ok {
		return "", false
	}
	for i := 0; i < len(tag); i++ {
		if strings.IndexByte(tagAlphabet, tag[i]) < 0 {
			return "", false
		}
	}
	return tag, true
}

// idGuard is the Router the broker sees: a clientId no node can have
// issued is answered as unknown (402) at once, without a Redis look-up or
// a forward to the node its first characters happen to name.
type idGuard struct{ *Cluster }

func (g idGuard) Resolve(ctx context.Context, clientID string, hops int) (broker.Route, error) {
	if _, ok := ParseClientID(clientID); !ok {
		return broker.Route{}, nil
	}
	return g.Cluster.Resolve(ctx, clientID, hops)
}
