package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// TokenExtField is the handshake ext field carrying the JWT:
// {"channel":"/meta/handshake", ..., "ext":{"authToken":"eyJ..."}}.
const TokenExtField = "authToken"

// DefaultLeeway is the clock skew tolerated on exp and nbf.
const DefaultLeeway = 30 * time.Second

// minHMACSecret is the shortest accepted HMAC secret (256 bits).
const minHMACSecret = 32

// JWTConfig configures NewJWT. Exactly one of HMACSecret and PublicKey is set.
type JWTConfig struct {
	// HMACSecret verifies HS256, HS384 and HS512 tokens (at least 32 bytes).
	HMACSecret []byte
	// PublicKey (*rsa.PublicKey or *ecdsa.PublicKey) verifies RS256/384/512
	// tokens (RSA) or the one ES algorithm of the key's curve (P-256: ES256,
	// P-384: ES384, P-521: ES512).
	PublicKey any
	// Audience, if set, must be one of the token's "aud" values.
	Audience string
	// Issuer, if set, must equal the token's "iss".
	Issuer string
	// RolesClaim names the claim holding the roles: an array of strings or a
	// single string (default "roles").
	RolesClaim string
	// Leeway tolerated on exp and nbf (default DefaultLeeway; negative: none).
	Leeway time.Duration
	// Now is the clock (default time.Now); for tests.
	Now func() time.Time
	// Logger receives why tokens are rejected, at debug level (default
	// slog.Default()).
	Logger *slog.Logger
}

// JWT authenticates handshakes carrying a JWT in ext.authToken.
type JWT struct {
	key        any
	parser     *jwt.Parser
	rolesClaim string
	log        *slog.Logger
}

// NewJWT validates cfg and returns the authenticator.
func NewJWT(cfg JWTConfig) (*JWT, error) {
	var key any
	var algs []string
	switch {
	case cfg.HMACSecret != nil && cfg.PublicKey != nil:
		return nil, errors.New("jwt: set either an HMAC secret or a public key, not both")
	case cfg.HMACSecret != nil:
		if len(cfg.HMACSecret) < minHMACSecret {
			return nil, fmt.Errorf("jwt: HMAC secret is %d bytes, want at least %d", len(cfg.HMACSecret), minHMACSecret)
		}
		key, algs = cfg.HMACSecret, []string{"HS256", "HS384", "HS512"}
	case cfg.PublicKey != nil:
		switch k := cfg.PublicKey.(type) {
		case *rsa.PublicKey:
			if k.N.BitLen() < 2048 {
				return nil, fmt.Errorf("jwt: RSA key is %d bits, want at least 2048", k.N.BitLen())
			}
			key, algs = k, []string{"RS256", "RS384", "RS512"}
		case *ecdsa.PublicKey:
			var alg string
			switch k.Curve {
			case elliptic.P256():
				alg = "ES256"
			case elliptic.P384():
				alg = "ES384"
			case elliptic.P521():
				alg = "ES512"
			default:
				return nil, errors.New("jwt: unsupported ECDSA curve")
			}
			key, algs = k, []string{alg}
		default:
			return nil, fmt.Errorf("jwt: unsupported public key type %T", cfg.PublicKey)
		}
	default:
		return nil, errors.New("jwt: no HMAC secret or public key")
	}
	leeway := cfg.Leeway
	if leeway == 0 {
		leeway = DefaultLeeway
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(algs), // fixes the algorithms: rejects "none" and confusion
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(max(leeway, 0)),
	}
	if cfg.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(cfg.Now))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	rc := cfg.RolesClaim
	if rc == "" {
		rc = "roles"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &JWT{key: key, parser: jwt.NewParser(opts...), rolesClaim: rc, log: log}, nil
}

// ReadHMACSecretFile reads a secret file; trailing CR/LF are dropped.
func ReadHMACSecretFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("jwt secret: %w", err)
	}
	return bytes.TrimRight(b, "\r\n"), nil
}

// ReadPublicKeyFile reads a PEM "PUBLIC KEY" (PKIX), "RSA PUBLIC KEY"
// (PKCS#1) or "CERTIFICATE" block and returns its public key.
func ReadPublicKeyFile(path string) (any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("jwt public key: %w", err)
	}
	return ParsePublicKeyPEM(b)
}

// ParsePublicKeyPEM parses the first PEM block of b; see ReadPublicKeyFile.
func ParsePublicKeyPEM(b []byte) (any, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("jwt public key: no PEM block")
	}
	switch blk.Type {
	case "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(blk.Bytes)
	case "RSA PUBLIC KEY":
		return x509.ParsePKCS1PublicKey(blk.Bytes)
	case "CERTIFICATE":
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		return c.PublicKey, nil
	}
	return nil, fmt.Errorf("jwt public key: unsupported PEM block %q (private keys are refused)", blk.Type)
}

// Authenticate implements Authenticator.
func (j *JWT) Authenticate(_ context.Context, info broker.RequestInfo, m *protocol.Message) (*Identity, *protocol.Error) {
	raw := m.ExtField(TokenExtField)
	if len(raw) == 0 {
		return nil, errTokenMissing
	}
	var tok string
	if err := json.Unmarshal(raw, &tok); err != nil || tok == "" {
		return nil, errTokenInvalid
	}
	claims := jwt.MapClaims{}
	_, err := j.parser.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return j.key, nil })
	if err != nil {
		j.log.Debug("jwt rejected", "remote", info.RemoteAddr, "err", err)
		if errors.Is(err, jwt.ErrTokenExpired) {
			return nil, errTokenExpired
		}
		return nil, errTokenInvalid
	}
	sub, _ := claims["sub"].(string)
	if sub == "" {
		j.log.Debug("jwt rejected", "remote", info.RemoteAddr, "err", "no sub")
		return nil, errTokenInvalid
	}
	var roles []string
	switch v := claims[j.rolesClaim].(type) {
	case string:
		roles = []string{v}
	case []any:
		for _, r := range v {
			if s, ok := r.(string); ok {
				roles = append(roles, s)
			}
		}
	}
	return &Identity{User: sub, Roles: roles, Claims: map[string]any(claims)}, nil
}
