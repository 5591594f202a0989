// Package nodeapi runs the server API (package serverapi) on a node: it
// adapts the broker, its engine and, in a cluster, the cluster's Call RPC to
// the API's interfaces, listens on the API address, and re-reads the key
// file on SIGHUP. The adapters are the only code of the API that knows the
// broker and the cluster.
package nodeapi
