package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
)

// TLSFiles names the PEM files of node-to-node mutual TLS. Every node uses
// a certificate (with its key) signed by CA, the cluster's own CA: a peer is
// a member if and only if it presents a certificate CA signed.
type TLSFiles struct {
	Cert, Key, CA string
	// ServerName, if set, is the name every node's certificate must carry
	// (a DNS SAN) for the client side to accept it. Empty: the chain to CA
	// is verified, not the name (peers are reached by pod IP).
	ServerName string
}

// Enabled reports whether any file is set.
func (f TLSFiles) Enabled() bool { return f.Cert != "" || f.Key != "" || f.CA != "" }

// LoadTLS reads f and returns the gRPC server configuration (requires and
// verifies a client certificate signed by the CA) and the client
// configuration (presents the node's certificate, verifies the server's
// against the same CA). All three files are required.
func LoadTLS(f TLSFiles) (server, client *tls.Config, err error) {
	if f.Cert == "" || f.Key == "" || f.CA == "" {
		return nil, nil, errors.New("cluster TLS needs a certificate, its key and the CA (all three)")
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster TLS certificate: %w", err)
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("cluster TLS CA %s: no PEM certificate", f.CA)
	}
	return ServerTLS(cert, pool), ClientTLS(cert, pool, f.ServerName), nil
}

// ServerTLS is the gRPC server side of mutual TLS: cert is presented, and a
// client certificate chaining to ca is required.
func ServerTLS(cert tls.Certificate, ca *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca,
	}
}

// ClientTLS is the gRPC client side of mutual TLS: cert is presented and
// the server's certificate must chain to ca (and carry serverName, if not
// empty). Peers are dialled by IP, so without a serverName only the chain
// is verified: the CA must be dedicated to the cluster.
func ClientTLS(cert tls.Certificate, ca *x509.CertPool, serverName string) *tls.Config {
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		RootCAs:      ca,
		ServerName:   serverName,
	}
	if serverName == "" {
		// Standard verification would check the dialled IP against the
		// certificate's SANs; check the chain to the cluster CA instead.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("cluster TLS: peer presented no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots:         ca,
				Intermediates: inter,
				KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			})
			if err != nil {
				return fmt.Errorf("cluster TLS: peer certificate: %w", err)
			}
			return nil
		}
	}
	return cfg
}

// LoadGossipKeys reads memberlist encryption keys from a file: one or more
// base64 keys of 16, 24 or 32 bytes (AES-128/192/256), separated by
// newlines, commas or spaces. The first encrypts; all decrypt. To rotate,
// deploy "old,new" on every node, then "new,old", then "new".
func LoadGossipKeys(path string) ([][]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gossip key file: %w", err)
	}
	return ParseGossipKeys(string(raw))
}

// ParseGossipKeys parses the content of a gossip key file (see
// LoadGossipKeys).
func ParseGossipKeys(s string) ([][]byte, error) {
	var keys [][]byte
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' }) {
		k, err := base64.StdEncoding.DecodeString(f)
		if err != nil {
			return nil, fmt.Errorf("gossip key %d: not base64: %w", len(keys)+1, err)
		}
		switch len(k) {
		case 16, 24, 32:
		default:
			return nil, fmt.Errorf("gossip key %d: %d bytes, want 16, 24 or 32", len(keys)+1, len(k))
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("gossip key file holds no key")
	}
	return keys, nil
}
