// Package demo is the browser demo a node serves at "/": the classic
// CometD chat (rooms, a member list, messages) at / and a live cluster page
// at /cluster, both talking Bayeux to the node's own endpoint with a small
// browser client of the project (static/bayeux.js: long-polling,
// callback-polling and websocket, no third-party code). The files are
// embedded with go:embed, so `go run ./cmd/node` serves them with no npm
// step. Pages take ?transport=websocket|long-polling|callback-polling
// (default: websocket, falling back to long-polling) and, for interop
// tests, ?client=cometd, which loads the CometD JavaScript client from
// /static/vendor/cometd/ (not shipped: whoever serves it provides it).
//
// # Channels
//
//   - /chat/<room>: chat messages, published by the pages.
//   - /service/members: a page publishes {op: "join"|"leave", room, name,
//     token}; the node answers the joining session with the room's member
//     list (Session.Deliver on /service/members) and broadcasts each change
//     (Broker.Publish on /members/<room>). A page repeats its join every 10
//     s as a refresh.
//   - /cluster/nodes: every node publishes its NodeStats every second; the
//     cluster page aggregates them by node id and drops a node not heard
//     from for 5 s.
//
// # Member list in a cluster
//
// Any node may serve any request, and a service handler runs on the node
// that owns the publishing session, so the room registry cannot be a
// node's memory. It is a Registry: in memory on a single node, in Redis in
// cluster mode (the node passes its engine, whose Redis client the demo
// uses). Each room is a Redis hash changed only by Lua scripts that first
// drop the room's expired members, so each change happens once, on one
// node, which is the node that broadcasts it. Every list carries a version
// that only grows (max(previous+1, now in ms)), and a page keeps the list
// with the highest version, so broadcasts published by different nodes may
// reach it in any order. A member is keyed by a public id derived from a
// secret token of the page (so a re-handshake with a new clientId keeps
// the same member, and only the page can make itself leave). A member
// ends by an explicit leave (also sent with navigator.sendBeacon when the
// page is closed), by the end of its Bayeux session (the node that holds
// the session sees it end and removes it, if that session is still the
// one that last joined it), or by expiry 30 s after its last refresh
// (pages gone with their node). A draining node leaves the members of the
// sessions it hands over alone (their refreshes go on at the adopter). If a
// session is taken from a node that was cut off, that node sees it end and
// removes the member; the page sees itself missing from the list and joins
// again at once.
package demo
