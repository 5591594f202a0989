// Package auth authenticates Bayeux handshakes and authorizes subscriptions
// and publishes: a broker.Policy built from an optional Authenticator (JWT
// or webhook) and an optional ACL.
//
// # Installing
//
//	p := auth.NewPolicy(authn, acl)
//	cfg.Policy = p
//	cfg.Extensions = append(cfg.Extensions, p.Extension()) // last: its Outgoing runs first
//
// broker.Policy.CanHandshake runs before the session exists, so the Policy
// keeps the authenticated Identity keyed by the handshake *protocol.Message
// and its Extension moves it onto the session (Session.Set) when the
// successful /meta/handshake reply goes out; a failed handshake reply (s ==
// nil) just forgets it. Without the extension every subscribe and publish of
// an authenticated Policy is denied with 403::Not authenticated (fail
// closed). Service code reads the identity with IdentityOf(session).
//
// # Handshake (authentication)
//
// With no Authenticator every handshake is allowed and sessions are
// anonymous (IdentityOf returns nil). Denied handshakes get the error below
// and, from the broker, advice reconnect "none".
//
// JWT: the token is the string ext.authToken of the handshake:
//
//	{"channel":"/meta/handshake","version":"1.0",...,"ext":{"authToken":"eyJ..."}}
//
// The key fixes the accepted algorithms (alg "none" and algorithm
// confusion are rejected): an HMAC secret (at least 32 bytes) accepts
// HS256/384/512; an RSA public key (at least 2048 bits) RS256/384/512; an
// ECDSA public key only the ES algorithm of its curve. exp is required; exp
// and nbf are checked with DefaultLeeway (30s); aud must contain the
// configured audience and iss equal the configured issuer, when configured.
// The user is "sub" (required); roles are the configured claim (default
// "roles": an array of strings or one string); Claims are all claims.
// Errors: 403::Authentication required (no token), 403::Token expired,
// 403::Invalid token (anything else; the reason is logged at debug level).
//
// Webhook: the broker POSTs application/json
//
//	{"ext":<handshake ext or null>,"remoteAddr":"ip:port","transport":"long-polling",
//	 "headers":{"Authorization":["..."],...}}
//
// (headers: only DefaultWebhookHeaders, or the configured subset) with a
// timeout (DefaultWebhookTimeout, 5s). Status 200 with
//
//	{"allow":true,"user":"alice","roles":["admin"],"claims":{"tenant":"acme"},
//	 "grants":[{"pattern":"/a/**","subscribe":true,"publish":false}]}
//
// allows (user required; roles, claims and grants optional). 200 with
// "allow":false, or any 4xx status, denies with 403::Authentication failed.
// Everything else fails closed with 503::Authentication unavailable: the
// webhook unreachable or timing out, a 3xx (redirects are not followed) or
// 5xx status, a malformed or oversized (> 1 MiB) body, allow without a user,
// an invalid grant pattern.
//
// # Subscribe and publish (authorization)
//
// A subscription is checked as the requested name itself, wildcard or not;
// a publish as its concrete channel. A pattern P covers a request R when
// every channel R matches, P matches: "/chat/**" covers "/chat/a",
// "/chat/*" and "/chat/a/**"; "/chat/*" covers "/chat/a" and "/chat/*" but
// not "/chat/**"; "/chat/a" covers only itself (not "/chat/*").
//
// Decision order: (1) the session's Grants (from the webhook), in order: the
// first grant covering the channel decides with its subscribe or publish
// flag; (2) otherwise the ACL, if configured: the first rule, in file order,
// covering the channel decides; its list for the operation must hold a
// principal matching the identity; no covering rule denies (default deny);
// (3) with no ACL, an identity with grants is denied, anyone else allowed.
//
// In (1) and (2), an entry met before the covering one whose pattern lies
// inside a wildcard subscription must allow too, or the subscription is
// denied: with rules "/chat/admin/**" (admins) then "/chat/**" (everyone),
// a non-admin may subscribe to "/chat/*" and "/chat/room/**" but not to
// "/chat/**", which would deliver /chat/admin/ channels. (Patterns only end
// in wildcards, so two patterns either nest or are disjoint.)
// Denials are 403::Subscription denied (arg: the pattern) and
// 403::Publish denied (arg: the channel).
//
// The broker itself refuses publishing to /meta/** and subscribing to
// /meta/** (405) before asking the Policy, and never asks it about
// /service/** (service handlers check IdentityOf themselves).
//
// # ACL file
//
// JSON, unknown fields rejected:
//
//	{"rules":[
//	  {"pattern":"/chat/admin/**","subscribe":["role:admin"],"publish":["role:admin"]},
//	  {"pattern":"/chat/**","subscribe":["authenticated"],"publish":["user:alice","claim:tenant=acme"]},
//	  {"pattern":"/public/*","subscribe":["*"]}
//	]}
//
// Principals: "*" (anyone, anonymous included), "authenticated" (any
// identity), "user:NAME" (Identity.User), "role:NAME" (one of
// Identity.Roles), "claim:NAME=VALUE" (the claim is the string VALUE, or
// an array containing it; numbers and booleans compare by their JSON text).
// An omitted list allows nobody.
package auth
