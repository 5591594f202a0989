package auth

import (
	"context"
	"encoding/json"

	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// Authenticator decides whether a /meta/handshake may proceed and who the
// client is. A nil *Identity with a nil error is not allowed: return an
// error to deny. Errors are sent to the client as is (403 for a denial, 503
// when the authority cannot be reached).
type Authenticator interface {
	Authenticate(ctx context.Context, info broker.RequestInfo, m *protocol.Message) (*Identity, *protocol.Error)
}

// Identity is an authenticated client. It is attached to the session and
// must not be modified once returned.
type Identity struct {
	User   string         // the JWT "sub", or the webhook's "user"
	Roles  []string       // matched by "role:NAME" principals
	Claims map[string]any // matched by "claim:NAME=VALUE" principals
	// Grants, when not empty, are per-session rules checked before the ACL
	// (first covering grant decides); see the package documentation.
	Grants []Grant
}

// Grant allows or denies one pattern for one identity.
type Grant struct {
	Pattern   string `json:"pattern"`
	Subscribe bool   `json:"subscribe"`
	Publish   bool   `json:"publish"`
}

// HasRole reports whether the identity has role r.
func (id *Identity) HasRole(r string) bool {
	if id == nil {
		return false
	}
	for _, x := range id.Roles {
		if x == r {
			return true
		}
	}
	return false
}

// identityKey is the Session attribute key of the *Identity.
type identityKey struct{}

// IdentityOf returns the identity attached to s at handshake, or nil for an
// anonymous session (no Authenticator configured) or a nil session.
func IdentityOf(s *broker.Session) *Identity {
	if s == nil {
		return nil
	}
	if v, ok := s.Get(identityKey{}); ok {
		id, _ := v.(*Identity)
		return id
	}
	// A session adopted from another node carries its identity in its
	// durable state (see broker.Session.SetDurable).
	raw, ok := s.Durable(durableIdentity)
	if !ok {
		return nil
	}
	var id Identity
	if json.Unmarshal(raw, &id) != nil {
		return nil
	}
	s.Set(identityKey{}, &id)
	return &id
}

// durableIdentity is the key of the identity in a session's durable state.
const durableIdentity = "auth.identity"

// Errors sent to clients.
var (
	errTokenMissing = protocol.NewError(protocol.CodeDenied, "Authentication required")
	errTokenInvalid = protocol.NewError(protocol.CodeDenied, "Invalid token")
	errTokenExpired = protocol.NewError(protocol.CodeDenied, "Token expired")
	errAuthFailed   = protocol.NewError(protocol.CodeDenied, "Authentication failed")
	errUnavailable  = protocol.NewError(protocol.CodeServerUnavailable, "Authentication unavailable")
	errNoIdentity   = protocol.NewError(protocol.CodeDenied, "Not authenticated")
)
