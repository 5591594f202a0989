// Package serverapi is the server API of a node: what an application's
// backend and an operator use to publish, list channels and presence, read
// history and end or unsubscribe sessions, cluster-wide, from any node.
//
// Layout:
//   - Service implements the operations once, over narrow interfaces of
//     the node (Publisher, History, Presence, SessionControl, Stats) and,
//     in a cluster, Peers: queries about sessions fan out to every live
//     node, which answers from memory; nothing is written per subscribe.
//   - Handler serves them as HTTP JSON under /api/v1/ (described by the
//     embedded OpenAPI document, served at /api/v1/openapi.json), the gRPC
//     service bayeux.server.v1.ServerAPI, and the admin console at /admin/.
//   - Keys holds the API keys of a key file (re-read on demand, e.g. on
//     SIGHUP); every call needs one, compared in constant time.
//   - Client is a typed Go client of the HTTP API.
//
// Package nodeapi (below) adapts a broker, its engine and its cluster to
// the interfaces here and starts the listener.
package serverapi
