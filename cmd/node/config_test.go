package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(*config) bool
		wantErr string
	}{
		{name: "defaults", check: func(c *config) bool {
			return c.Listen == ":8080" && c.Path == "/cometd" && c.Timeout == 30*time.Second && c.MaxInterval == 10*time.Second
		}},
		{name: "env fallback", env: map[string]string{"BAYEUX_LISTEN": "127.0.0.1:9", "BAYEUX_MAX_INTERVAL": "3s", "BAYEUX_DEBUG_API": "true"},
			check: func(c *config) bool { return c.Listen == "127.0.0.1:9" && c.MaxInterval == 3*time.Second && c.DebugAPI }},
		{name: "flag beats env", args: []string{"--listen", ":1"}, env: map[string]string{"BAYEUX_LISTEN": ":2"},
			check: func(c *config) bool { return c.Listen == ":1" }},
		{name: "bad env value", env: map[string]string{"BAYEUX_TIMEOUT": "soon"}, wantErr: `BAYEUX_TIMEOUT="soon": want a duration with a unit, such as 500ms, 30s or 2m`},
		{name: "duration without unit", args: []string{"--timeout", "30"}, wantErr: `--timeout "30": want a duration with a unit, such as 500ms, 30s or 2m (did you mean 30s?)`},
		{name: "duration without unit, = form", args: []string{"--max-interval=10"}, wantErr: `--max-interval "10": want a duration with a unit, such as 500ms, 30s or 2m (did you mean 10s?)`},
		{name: "bad int", args: []string{"--max-queue", "many"}, wantErr: `--max-queue "many": want a whole number`},
		{name: "bad bool in env", env: map[string]string{"BAYEUX_DEMO": "nope"}, wantErr: `BAYEUX_DEMO="nope": want true or false`},
		{name: "bad float", args: []string{"--publish-rate", "fast"}, wantErr: `--publish-rate "fast": want a number`},
		{name: "redis address without scheme", args: []string{"--redis", "127.0.0.1:6379"},
			wantErr: `--redis "127.0.0.1:6379" is not a Redis URL: want ` + redisURLForms + ` (did you mean redis://127.0.0.1:6379?)`},
		{name: "redis host:port without scheme", args: []string{"--redis", "localhost:6379"}, wantErr: `(did you mean redis://localhost:6379?)`},
		{name: "redis password hidden", args: []string{"--redis", "user:secret@localhost:6379"}, wantErr: `--redis "xxxxx@localhost:6379" is not a Redis URL`},
		{name: "redis unknown scheme", args: []string{"--redis", "http://u:secret@h:6379"}, wantErr: `--redis "http://u:xxxxx@h:6379": unknown scheme "http"`},
		{name: "redis URL ok", args: []string{"--redis", "redis://127.0.0.1:6379/2"}, check: func(c *config) bool { return c.Redis == "redis://127.0.0.1:6379/2" }},
		{name: "redis cluster URL ok", args: []string{"--redis", "redis+cluster://a:1,b:2"}, check: func(c *config) bool { return c.Redis != "" }},
		{name: "unknown env variable", env: map[string]string{"BAYEUX_REDIS_URL": "redis://x:6379"}, wantErr: "unknown environment variable BAYEUX_REDIS_URL (did you mean BAYEUX_REDIS?)"},
		{name: "unknown env variable, empty", env: map[string]string{"BAYEUX_MAXINTERVAL": ""}, wantErr: "unknown environment variable BAYEUX_MAXINTERVAL (did you mean BAYEUX_MAX_INTERVAL?)"},
		{name: "command-only flag has no env variable", env: map[string]string{"BAYEUX_PRINT_CONFIG": "true"}, wantErr: "unknown environment variable BAYEUX_PRINT_CONFIG"},
		{name: "other env ignored", env: map[string]string{"GOGC": "100", "REDIS_URL": "x"}, check: func(c *config) bool { return c.Redis == "" }},
		{name: "unknown flag", args: []string{"--redis-url", "x"}, wantErr: "unknown flag --redis-url (did you mean --redis?)"},
		{name: "flag without value", args: []string{"--listen"}, wantErr: "flag --listen needs a value"},
		{name: "bad log level", args: []string{"--log-level", "verbose"}, wantErr: `--log-level "verbose": want debug, info, warn or error`},
		{name: "bad path", args: []string{"--path", "cometd"}, wantErr: "--path"},
		{name: "trailing slash path", args: []string{"--path", "/cometd/"}, wantErr: "--path"},
		{name: "zero timeout", args: []string{"--timeout", "0s"}, wantErr: "--timeout"},
		{name: "bad log format", args: []string{"--log-format", "xml"}, wantErr: "--log-format"},
		{name: "stray argument", args: []string{"extra"}, wantErr: "unexpected"},
		{name: "limits from env", env: map[string]string{"BAYEUX_PUBLISH_RATE": "50", "BAYEUX_MAX_SESSIONS_PER_BROWSER": "-1"},
			check: func(c *config) bool { return c.PublishRate == 50 && c.MaxSessionsPerBrowser == -1 }},
		{name: "zero publish rate", args: []string{"--publish-rate", "0"}, wantErr: "--publish-rate"},
		{name: "per-address limits", args: []string{"--max-sessions-per-ip", "5", "--max-held-per-ip", "-1", "--trusted-proxies", "10.0.0.0/8, 192.0.2.7"},
			check: func(c *config) bool {
				p, err := c.trustedProxies()
				return c.MaxSessionsPerIP == 5 && c.MaxHeldPerIP == -1 && err == nil && len(p) == 2 && p[1].Bits() == 32
			}},
		{name: "zero sessions per ip", args: []string{"--max-sessions-per-ip", "0"}, wantErr: "--max-sessions-per-ip"},
		{name: "bad trusted proxy", args: []string{"--trusted-proxies", "10.0.0.0/33"}, wantErr: "--trusted-proxies"},
		{name: "server timeouts default", check: func(c *config) bool {
			return c.ReadHeaderTimeout == 10*time.Second && c.ReadTimeout == 30*time.Second && c.IdleTimeout == 2*time.Minute
		}},
		{name: "server timeouts from flags and env", args: []string{"--read-header-timeout", "1s"}, env: map[string]string{"BAYEUX_IDLE_TIMEOUT": "5s"},
			check: func(c *config) bool { return c.ReadHeaderTimeout == time.Second && c.IdleTimeout == 5*time.Second }},
		{name: "zero read header timeout", args: []string{"--read-header-timeout", "0s"}, wantErr: "--read-header-timeout"},
		{name: "tls cert without key", args: []string{"--tls-cert-file", "/c"}, wantErr: "--tls-key-file"},
		{name: "cluster tls incomplete", args: []string{"--redis", "redis://x", "--cluster-tls-cert", "/c", "--cluster-tls-key", "/k"}, wantErr: "--cluster-tls-ca"},
		{name: "gossip key without cluster", args: []string{"--gossip-key-file", "/k"}, wantErr: "cluster mode"},
		{name: "security flags from env", env: map[string]string{"BAYEUX_TLS_CERT_FILE": "/c", "BAYEUX_TLS_KEY_FILE": "/k", "BAYEUX_REDIS": "rediss://u:p@r:6380",
			"BAYEUX_CLUSTER_TLS_CERT": "/nc", "BAYEUX_CLUSTER_TLS_KEY": "/nk", "BAYEUX_CLUSTER_TLS_CA": "/ca", "BAYEUX_GOSSIP_KEY_FILE": "/g"},
			check: func(c *config) bool {
				return c.TLSCert == "/c" && c.TLSKey == "/k" && c.ClusterTLS.CA == "/ca" && c.ClusterTLS.Key == "/nk" && c.GossipKeyFile == "/g"
			}},
		{name: "auth flags from env", env: map[string]string{"BAYEUX_AUTH_JWT_HMAC_SECRET_FILE": "/s", "BAYEUX_AUTH_JWT_AUDIENCE": "aud", "BAYEUX_ACL_FILE": "/acl.json"},
			check: func(c *config) bool {
				return c.Auth.JWTHMACSecretFile == "/s" && c.Auth.JWTAudience == "aud" && c.Auth.ACLFile == "/acl.json" && c.Auth.JWTRolesClaim == "roles"
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, environ(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("err = %v, want one line containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Fatalf("config %+v", c)
			}
		})
	}
}

// environ turns a map into KEY=VALUE pairs, as os.Environ gives them.
func environ(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}
