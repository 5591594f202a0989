package auth

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// Policy is a broker.Policy combining an optional Authenticator and an
// optional ACL. Install both Policy (broker.Config.Policy) and
// Policy.Extension() (broker.Config.Extensions, preferably last): the
// extension is what attaches the Identity to the new session.
type Policy struct {
	auth Authenticator
	acl  *ACL

	pending  sync.Map // *protocol.Message -> *Identity, from CanHandshake to Outgoing
	npending atomic.Int64
	ext      *identityExtension
}

// NewPolicy combines authn (nil: anonymous sessions) and acl (nil: no
// channel rules). See the package documentation for the decision order.
func NewPolicy(authn Authenticator, acl *ACL) *Policy {
	p := &Policy{auth: authn, acl: acl}
	p.ext = &identityExtension{p: p}
	return p
}

var _ broker.Policy = (*Policy)(nil)

// Extension returns the broker.Extension that attaches the Identity
// authenticated by CanHandshake to the session created for it.
func (p *Policy) Extension() broker.Extension { return p.ext }

// RequestHeaders lists the request headers the policy reads (the webhook's
// forwarded headers); a node keeps only these per session
// (broker.Config.KeepHeaders). Never nil.
func (p *Policy) RequestHeaders() []string {
	if h, ok := p.auth.(interface{ RequestHeaders() []string }); ok {
		return append([]string{}, h.RequestHeaders()...)
	}
	return []string{}
}

// Close releases the authenticator's resources (idle webhook connections).
func (p *Policy) Close() {
	if c, ok := p.auth.(interface{ Close() }); ok {
		c.Close()
	}
}

// CanHandshake authenticates m when an Authenticator is configured.
func (p *Policy) CanHandshake(ctx context.Context, info broker.RequestInfo, m *protocol.Message) *protocol.Error {
	if p.auth == nil {
		return nil
	}
	id, err := p.auth.Authenticate(ctx, info, m)
	if err != nil {
		return err
	}
	if id == nil {
		return errAuthFailed
	}
	if _, loaded := p.pending.Swap(m, id); !loaded {
		p.npending.Add(1)
	}
	return nil
}

// CanSubscribe applies grants, then the ACL, to the requested channel or
// pattern.
func (p *Policy) CanSubscribe(_ context.Context, s *broker.Session, ch string, _ *protocol.Message) *protocol.Error {
	return p.check(s, OpSubscribe, ch, "Subscription denied")
}

// CanPublish applies grants, then the ACL, to the concrete channel.
func (p *Policy) CanPublish(_ context.Context, s *broker.Session, ch string, _ *protocol.Message) *protocol.Error {
	return p.check(s, OpPublish, ch, "Publish denied")
}

func (p *Policy) check(s *broker.Session, op Op, ch, msg string) *protocol.Error {
	id := IdentityOf(s)
	if p.auth != nil && id == nil {
		// Authentication is configured but the session carries no
		// identity: the extension is not installed. Fail closed.
		return errNoIdentity
	}
	if p.Allowed(id, op, ch) {
		return nil
	}
	return protocol.NewError(protocol.CodeDenied, msg, ch)
}

// Allowed is the authorization decision for id (nil: anonymous): the first
// of id's grants covering ch decides; else the ACL decides; with no ACL,
// an identity with grants is denied and anyone else allowed.
func (p *Policy) Allowed(id *Identity, op Op, ch string) bool {
	if ok, decided := grantDecision(id, op, ch); decided {
		return ok
	}
	if p.acl != nil {
		return p.acl.Allowed(id, op, ch)
	}
	return id == nil || len(id.Grants) == 0
}

// pendingCount is the number of identities awaiting their handshake reply.
func (p *Policy) pendingCount() int64 { return p.npending.Load() }

// identityExtension moves the Identity from the pending map to the session.
type identityExtension struct{ p *Policy }

// Incoming does nothing.
func (*identityExtension) Incoming(context.Context, *broker.Session, *protocol.Message) *protocol.Error {
	return nil
}

// Outgoing attaches the pending Identity on a successful handshake reply
// and forgets it in every case.
func (e *identityExtension) Outgoing(_ context.Context, s *broker.Session, m *protocol.Message, r *protocol.Reply) {
	if m.Channel != protocol.ChannelHandshake {
		return
	}
	v, ok := e.p.pending.LoadAndDelete(m)
	if !ok {
		return
	}
	e.p.npending.Add(-1)
	if s != nil && r.OK() {
		id := v.(*Identity)
		s.Set(identityKey{}, id)
		// Persisted with the session so that the node adopting it (owner
		// lost or drained) authorizes it the same way.
		if raw, err := json.Marshal(id); err == nil {
			s.SetDurable(durableIdentity, raw)
		}
	}
}

// Options are the node's command-line settings (see cmd/node).
type Options struct {
	JWTHMACSecretFile string
	JWTPublicKeyFile  string
	JWTAudience       string
	JWTIssuer         string
	JWTRolesClaim     string
	Webhook           string
	ACLFile           string
}

// Enabled reports whether any option other than JWTRolesClaim is set.
func (o Options) Enabled() bool {
	o.JWTRolesClaim = ""
	return o != (Options{})
}

// Build makes the Policy o describes, or returns nil, nil when o is empty.
// JWT and webhook authentication are mutually exclusive.
func Build(o Options) (*Policy, error) {
	if !o.Enabled() {
		return nil, nil
	}
	jwtSet := o.JWTHMACSecretFile != "" || o.JWTPublicKeyFile != ""
	if !jwtSet && (o.JWTAudience != "" || o.JWTIssuer != "") {
		return nil, errors.New("auth: JWT audience or issuer given without a JWT secret or public key file")
	}
	if jwtSet && o.Webhook != "" {
		return nil, errors.New("auth: JWT and webhook authentication are mutually exclusive")
	}
	var authn Authenticator
	switch {
	case jwtSet:
		cfg := JWTConfig{Audience: o.JWTAudience, Issuer: o.JWTIssuer, RolesClaim: o.JWTRolesClaim}
		if o.JWTHMACSecretFile != "" && o.JWTPublicKeyFile != "" {
			return nil, errors.New("auth: give a JWT HMAC secret file or a public key file, not both")
		}
		var err error
		if o.JWTHMACSecretFile != "" {
			cfg.HMACSecret, err = ReadHMACSecretFile(o.JWTHMACSecretFile)
		} else {
			cfg.PublicKey, err = ReadPublicKeyFile(o.JWTPublicKeyFile)
		}
		if err != nil {
			return nil, err
		}
		j, err := NewJWT(cfg)
		if err != nil {
			return nil, err
		}
		authn = j
	case o.Webhook != "":
		w, err := NewWebhook(WebhookConfig{URL: o.Webhook})
		if err != nil {
			return nil, err
		}
		authn = w
	}
	var acl *ACL
	if o.ACLFile != "" {
		var err error
		if acl, err = LoadACL(o.ACLFile); err != nil {
			return nil, err
		}
	}
	return NewPolicy(authn, acl), nil
}
