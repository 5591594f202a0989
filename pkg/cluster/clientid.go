package cluster

import (
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
