// Package clusterv1 is the generated node-to-node gRPC API (cluster.proto).
// Regenerate with scripts/genproto.sh; do not edit the generated files.
package clusterv1
