package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/auth"
	"github.com/bayeux-cluster/bayeux/pkg/cluster"
	"github.com/bayeux-cluster/bayeux/pkg/tracing/otlp"
)

// config is every setting of the node, filled from flags, BAYEUX_*
// environment variables and the --config file (configsrc.go).
type config struct {
	ConfigFile  string // --config
	PrintConfig bool   // --print-config
	Version     bool   // --version

	flags *flag.FlagSet // the flags bound to these fields (--print-config reads them)

	Listen         string
	Path           string
	Timeout        time.Duration
	Interval       time.Duration
	MaxInterval    time.Duration
	MaxQueue       int
	MaxRequest     int64
	WSFrameTimeout time.Duration
	WSCompression  bool
	Origins        string
	LogLevel       string
	LogFormat      string
	DebugAPI       bool
	Demo           bool
	Pprof          bool
	GCPercent      int
	ShutdownGrace  time.Duration

	Redis        string
	NodeID       string
	GossipListen string
	GRPCListen   string
	Advertise    string
	Join         string
	GossipFast   bool
	LeaseTTL     time.Duration // --lease-ttl
	HistorySize  int
	HistoryTTL   time.Duration
	SessionTTL   time.Duration
	Retention    string
	AdviceHosts  string
	DrainJitter  time.Duration
	HandOverHold time.Duration
	// ReorderWindow and PeerLossGrace: see broker.Config.
	ReorderWindow time.Duration
	PeerLossGrace time.Duration

	RedisWaitReplicas  int           // --redis-wait-replicas
	RedisPipelineSize  int           // --redis-pipeline-size
	RedisPipelineDelay time.Duration // --redis-pipeline-delay

	Auth auth.Options // --auth-* and --acl-file

	PublishRate           float64
	MaxSessionsPerBrowser int
	MaxSessionsPerIP      int
	MaxHeldPerIP          int
	TrustedProxies        string

	// Transport security and server timeouts (issue 7).
	TLSCert, TLSKey   string
	CookieSecure      bool
	ClusterTLS        cluster.TLSFiles
	GossipKeyFile     string
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	IdleTimeout       time.Duration

	// Server API (issue 18).
	APIListen, APIKeyFile string
	APIRate               float64

	Tracing otlp.Config // --otel-*
}

// newFlagSet defines every flag of the node on c, with its default. Each
// flag's name is also its config-file key and, through envName, its
// environment variable.
func newFlagSet(c *config) *flag.FlagSet {
	fs := flag.NewFlagSet("bayeux-node", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported in one line by parseConfig; --help prints usage
	fs.Usage = func() {}
	fs.StringVar(&c.ConfigFile, "config", "", "YAML (.yaml, .yml) or TOML (.toml) file of settings, keyed by flag name (e.g. max-interval: 10s); precedence: flag > BAYEUX_* environment > file > default")
	fs.BoolVar(&c.PrintConfig, "print-config", false, "print the effective configuration (YAML, secrets redacted) and exit")
	fs.BoolVar(&c.Version, "version", false, "print the version and exit")
	fs.StringVar(&c.Listen, "listen", ":8080", "HTTP listen address")
	fs.StringVar(&c.Path, "path", "/cometd", "URL path of the Bayeux endpoint")
	fs.DurationVar(&c.Timeout, "timeout", 30*time.Second, "how long a /meta/connect is held")
	fs.DurationVar(&c.Interval, "interval", 0, "advised pause between connects")
	fs.DurationVar(&c.MaxInterval, "max-interval", 10*time.Second, "session lifetime without a connect")
	fs.IntVar(&c.MaxQueue, "max-queue", 10000, "messages a session may have waiting before it is terminated")
	fs.Int64Var(&c.MaxRequest, "max-request-bytes", 1<<20, "largest HTTP body or websocket frame")
	fs.StringVar(&c.Origins, "allowed-origins", "", "comma-separated origin host patterns for CORS and websocket (empty: any)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "text or json")
	fs.StringVar(&c.APIListen, "api-listen", ":8081", "listen address of the server API and admin console (\"\": off); keep it inside the cluster")
	fs.StringVar(&c.APIKeyFile, "api-key-file", "", "file of server API keys, one per line (# comments); re-read on SIGHUP; without it every API call is refused")
	fs.Float64Var(&c.APIRate, "api-rate", 1000, "server API calls per second (burst twice that); over it calls get 429")
	fs.BoolVar(&c.Demo, "demo", true, "serve the browser demo (chat, cluster page) at / and publish node stats on /cluster/nodes every second")
	fs.BoolVar(&c.DebugAPI, "debug-api", false, "serve the test-only debug API under /debug/bayeux/ (never in production)")
	fs.BoolVar(&c.Pprof, "pprof", false, "serve Go profiling under /debug/pprof/ (expose only to operators)")
	fs.IntVar(&c.GCPercent, "gc-percent", 50, "Go GC target percentage of the node, used unless GOGC is set: connections cost memory more than CPU, and 50 keeps an idle websocket near 6.5 KB of RSS (8 KB at 100) with no measured CPU cost (docs/benchmarks.md); 0: Go's default (100)")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", 10*time.Second, "how long shutdown may take")
	fs.StringVar(&c.Redis, "redis", "", "Redis URL of the cluster backplane: redis://host:port (one instance), redis+sentinel://host:26379,host:26379/MASTER_NAME (primary and replicas behind Redis Sentinel) or redis+cluster://host:port,host:port (Redis Cluster, sharded pub/sub; ?partitions=N, default 64); rediss... for TLS; empty: single node, embedded in-memory engine")
	fs.IntVar(&c.RedisWaitReplicas, "redis-wait-replicas", 0, "acknowledge a publish only once this many Redis replicas have it (WAIT, 1s timeout; fewer is a 503 publish failure), so a Redis failover loses no acknowledged publish; for Sentinel and Redis Cluster")
	fs.IntVar(&c.RedisPipelineSize, "redis-pipeline-size", cluster.DefaultPipelineSize, "most publishes the node sends to Redis in one pipeline (all sessions' publishes are batched; one pipeline in flight at a time)")
	fs.DurationVar(&c.RedisPipelineDelay, "redis-pipeline-delay", 0, "how long a publish pipeline waits for more publishes before it is sent; 0: what is queued is sent as soon as the previous pipeline has returned")
	fs.StringVar(&c.NodeID, "node-id", "", "unique node id (default: hostname plus a random suffix)")
	fs.StringVar(&c.GossipListen, "gossip-listen", ":7946", "gossip (memberlist) listen address")
	fs.StringVar(&c.GRPCListen, "grpc-listen", ":7947", "node-to-node gRPC listen address")
	fs.StringVar(&c.Advertise, "advertise", "", "host or IP the other nodes reach this node at (default: the bound address)")
	fs.StringVar(&c.Join, "join", "", "comma-separated gossip seeds: host:port, or a DNS name resolving to several nodes")
	fs.IntVar(&c.HistorySize, "history-size", 1000, "publications kept per channel for recovery and replay")
	fs.DurationVar(&c.HistoryTTL, "history-ttl", 5*time.Minute, "age limit of history: older publications are not replayed or used for recovery (the stream itself is trimmed by count, --history-size, and expires this long after the channel's last publication)")
	fs.StringVar(&c.Retention, "retention", "", "history per channel pattern, overriding --history-size/--history-ttl: pattern=size:ttl,... (e.g. /chat/**=500:10m,/quotes/*=100:30s)")
	fs.DurationVar(&c.SessionTTL, "session-ttl", 0, "how long a session record outlives its owner, for adoption (cluster mode; default 3 x max-interval)")
	fs.StringVar(&c.AdviceHosts, "advice-hosts", "", "comma-separated host:port list advised (advice.hosts) to clients moved off a draining node")
	fs.DurationVar(&c.HandOverHold, "handover-hold", 2*time.Second, "a session whose websocket reaches a node that does not own it moves there unless it moved less than this ago (a websocket asks at most once per this); 0 disables the hand-over (frames are forwarded to the owner)")
	fs.DurationVar(&c.DrainJitter, "drain-jitter", 2*time.Second, "upper bound of the random reconnect interval advised when a draining node moves its clients")
	fs.DurationVar(&c.ReorderWindow, "reorder-window", 2*time.Second, "how long a message waits for the ones its client numbered before it, sent on concurrent requests (negative: no reordering)")
	fs.DurationVar(&c.PeerLossGrace, "peer-loss-grace", time.Minute, "added to --max-interval for sessions whose clients go quiet around the loss of a peer (negative: none)")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", 0, "time to live of the node's lease in Redis (renewed every fifth of it): a frozen or cut-off node stops acting on its sessions when it lapses, and other nodes adopt them only after; 0: 5s (1.5s with --gossip-fast), below failure detection plus the adoption delay")
	fs.BoolVar(&c.GossipFast, "gossip-fast", false, "short gossip timers: faster failure detection on a quiet LAN (tests)")
	fs.StringVar(&c.Auth.JWTHMACSecretFile, "auth-jwt-hmac-secret-file", "", "file holding the HMAC secret (>= 32 bytes) verifying HS256/384/512 handshake tokens (ext.authToken)")
	fs.StringVar(&c.Auth.JWTPublicKeyFile, "auth-jwt-public-key-file", "", "PEM RSA or ECDSA public key verifying RS256/384/512 or ES256/384/512 handshake tokens (ext.authToken)")
	fs.StringVar(&c.Auth.JWTAudience, "auth-jwt-audience", "", "required JWT aud value (empty: not checked)")
	fs.StringVar(&c.Auth.JWTIssuer, "auth-jwt-issuer", "", "required JWT iss value (empty: not checked)")
	fs.StringVar(&c.Auth.JWTRolesClaim, "auth-jwt-roles-claim", "roles", "JWT claim holding the roles")
	fs.StringVar(&c.Auth.Webhook, "auth-webhook", "", "URL POSTed each handshake for an allow/deny decision (fails closed); exclusive with JWT")
	fs.Float64Var(&c.PublishRate, "publish-rate", 2000, "publishes per second per session (token bucket, burst twice this); negative: unlimited")
	fs.IntVar(&c.MaxSessionsPerBrowser, "max-sessions-per-browser", 100, "live sessions per BAYEUX_BROWSER cookie on a node; negative: unlimited")
	fs.IntVar(&c.MaxSessionsPerIP, "max-sessions-per-ip", 1000, "live sessions per client address on a node; negative: unlimited")
	fs.IntVar(&c.MaxHeldPerIP, "max-held-per-ip", 1000, "held HTTP /meta/connects per client address on a node; negative: unlimited")
	fs.StringVar(&c.TrustedProxies, "trusted-proxies", "", "comma-separated CIDRs of balancers whose X-Forwarded-For gives the client address (for the per-address limits and the auth hooks)")
	fs.StringVar(&c.Auth.ACLFile, "acl-file", "", "JSON channel ACL file (see pkg/auth); when given, what no rule allows is denied")
	fs.StringVar(&c.TLSCert, "tls-cert-file", "", "PEM certificate (chain) for HTTPS; with --tls-key-file the node serves https:// and wss://")
	fs.StringVar(&c.TLSKey, "tls-key-file", "", "PEM private key of --tls-cert-file")
	fs.BoolVar(&c.CookieSecure, "cookie-secure", false, "mark the BAYEUX_BROWSER cookie Secure (always on with --tls-cert-file; set it behind a TLS-terminating proxy)")
	fs.StringVar(&c.ClusterTLS.Cert, "cluster-tls-cert", "", "PEM certificate of this node for node-to-node mutual TLS (gRPC); needs --cluster-tls-key and --cluster-tls-ca")
	fs.StringVar(&c.ClusterTLS.Key, "cluster-tls-key", "", "PEM private key of --cluster-tls-cert")
	fs.StringVar(&c.ClusterTLS.CA, "cluster-tls-ca", "", "PEM CA that signed every node's certificate: peers must present a certificate it signed")
	fs.StringVar(&c.ClusterTLS.ServerName, "cluster-tls-server-name", "", "name (DNS SAN) every node certificate must carry (default: only the chain to --cluster-tls-ca is checked)")
	fs.StringVar(&c.GossipKeyFile, "gossip-key-file", "", "file of base64 gossip encryption keys (16, 24 or 32 bytes; several for rotation, the first encrypts)")
	fs.DurationVar(&c.ReadHeaderTimeout, "read-header-timeout", 10*time.Second, "time allowed to read a request's headers (slowloris defence)")
	fs.DurationVar(&c.ReadTimeout, "read-timeout", 30*time.Second, "time allowed to read a whole request, body included (not the held connect that follows)")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 2*time.Minute, "how long an idle keep-alive connection stays open")
	fs.BoolVar(&c.WSCompression, "ws-compression", true, "negotiate permessage-deflate with websocket clients that offer it (no context takeover; --max-request-bytes bounds the decompressed size)")
	fs.DurationVar(&c.WSFrameTimeout, "ws-frame-timeout", 30*time.Second, "time allowed to send the rest of a websocket frame once it started (a client idle between frames is not affected)")
	fs.StringVar(&c.Tracing.Endpoint, "otel-endpoint", "", "OpenTelemetry collector (OTLP/gRPC, host:port) receiving traces of publishes and node-to-node calls; empty: tracing off")
	fs.BoolVar(&c.Tracing.Insecure, "otel-insecure", false, "send traces to --otel-endpoint without TLS")
	return fs
}

func (c *config) validate() error {
	if !strings.HasPrefix(c.Path, "/") || strings.HasSuffix(c.Path, "/") {
		return fmt.Errorf("--path %q must start with / and not end with /", c.Path)
	}
	if c.Timeout <= 0 || c.MaxInterval <= 0 || c.Interval < 0 {
		return fmt.Errorf("--timeout and --max-interval must be positive, --interval not negative")
	}
	if c.HistorySize <= 0 || c.HistoryTTL <= 0 {
		return fmt.Errorf("--history-size and --history-ttl must be positive")
	}
	if c.PublishRate == 0 || c.MaxSessionsPerBrowser == 0 || c.MaxSessionsPerIP == 0 || c.MaxHeldPerIP == 0 {
		return fmt.Errorf("--publish-rate, --max-sessions-per-browser, --max-sessions-per-ip and --max-held-per-ip must not be 0 (negative disables)")
	}
	if _, err := c.trustedProxies(); err != nil {
		return err
	}
	if c.MaxQueue <= 0 || c.MaxRequest <= 0 {
		return fmt.Errorf("--max-queue and --max-request-bytes must be positive")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return fmt.Errorf("--tls-cert-file and --tls-key-file go together")
	}
	if c.ClusterTLS.Enabled() && (c.ClusterTLS.Cert == "" || c.ClusterTLS.Key == "" || c.ClusterTLS.CA == "") {
		return fmt.Errorf("--cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca go together")
	}
	if (c.ClusterTLS.Enabled() || c.GossipKeyFile != "") && c.Redis == "" {
		return fmt.Errorf("--cluster-tls-* and --gossip-key-file need cluster mode (--redis)")
	}
	if c.ReadHeaderTimeout <= 0 || c.ReadTimeout <= 0 || c.IdleTimeout <= 0 || c.WSFrameTimeout <= 0 {
		return fmt.Errorf("--read-header-timeout, --read-timeout, --idle-timeout and --ws-frame-timeout must be positive")
	}
	if err := checkRedisURL(c.Redis); err != nil {
		return err
	}
	if c.RedisWaitReplicas < 0 || (c.RedisWaitReplicas > 0 && c.Redis == "") {
		return fmt.Errorf("--redis-wait-replicas %d: want 0, or a positive count with --redis", c.RedisWaitReplicas)
	}
	if c.LeaseTTL < 0 {
		return fmt.Errorf("--lease-ttl %v: want a positive duration, or 0 for the default", c.LeaseTTL)
	}
	if c.RedisPipelineSize <= 0 || c.RedisPipelineDelay < 0 {
		return fmt.Errorf("--redis-pipeline-size must be positive and --redis-pipeline-delay not negative")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("--log-format %q: want text or json", c.LogFormat)
	}
	return nil
}

// redisURLForms is what --redis accepts, for messages.
const redisURLForms = "redis://[user:password@]host:port[/db], rediss:// (TLS), redis+sentinel://host:26379,host:26379/MASTER_NAME (rediss+sentinel:// for TLS) or redis+cluster://host:port,host:port (rediss+cluster:// for TLS)"

// checkRedisURL rejects a --redis value that is not a URL of a known
// scheme, naming what was given (password hidden) and what is expected.
func checkRedisURL(s string) error {
	if s == "" || cluster.IsClusterURL(s) { // a cluster URL lists several hosts: parsed at start
		return nil
	}
	if cluster.IsSentinelURL(s) { // several hosts too: the cluster package parses it
		if err := cluster.CheckRedisURL(s); err != nil {
			return fmt.Errorf("--redis: %w", err)
		}
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		hint := ""
		if !strings.Contains(s, "://") {
			hint = fmt.Sprintf(" (did you mean redis://%s?)", redactUserinfo(s))
		}
		return fmt.Errorf("--redis %q is not a Redis URL: want %s%s", redactUserinfo(s), redisURLForms, hint)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return fmt.Errorf("--redis %q: unknown scheme %q: want %s", u.Redacted(), u.Scheme, redisURLForms)
	}
	return nil
}

// redactUserinfo hides whatever precedes the last @ of a URL-like string
// (a password), whether or not the string parses as a URL.
func redactUserinfo(s string) string {
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return s
	}
	start := 0
	if i := strings.Index(s[:at], "://"); i >= 0 {
		start = i + len("://")
	}
	return s[:start] + "xxxxx" + s[at:]
}

func (c *config) origins() []string { return splitList(c.Origins) }

func (c *config) seeds() []string { return splitList(c.Join) }

// trustedProxies parses --trusted-proxies (CIDRs, or single addresses).
func (c *config) trustedProxies() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range splitList(c.TrustedProxies) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("--trusted-proxies %q: %w", s, err)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, o := range strings.Split(s, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, o)
		}
	}
	return out
}

// handOverHold maps the flag (0 disables) to broker.Config.HandOverHold
// (negative disables).
func handOverHold(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}
