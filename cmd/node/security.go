package main

import (
	"crypto/tls"
	"fmt"

	"github.com/bayeux-cluster/bayeux/pkg/cluster"
)

// security is the key material a node loads at start, so that a bad file
// stops it before it serves anything.
type security struct {
	httpTLS                *tls.Config // nil: plain HTTP
	grpcServer, grpcClient *tls.Config // nil: plaintext node-to-node gRPC
	gossipKeys             [][]byte    // nil: unencrypted gossip
}

func loadSecurity(c *config) (*security, error) {
	sec := &security{}
	if c.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert-file/--tls-key-file: %w", err)
		}
		sec.httpTLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	if c.ClusterTLS.Enabled() {
		var err error
		if sec.grpcServer, sec.grpcClient, err = cluster.LoadTLS(c.ClusterTLS); err != nil {
			return nil, err
		}
	}
	if c.GossipKeyFile != "" {
		var err error
		if sec.gossipKeys, err = cluster.LoadGossipKeys(c.GossipKeyFile); err != nil {
			return nil, err
		}
	}
	return sec, nil
}
