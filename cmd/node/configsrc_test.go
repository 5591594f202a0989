package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConfigFile: a YAML or TOML file holds the same keys as the flags;
// flag > environment > file > default; unknown keys and values that do
// not parse stop the node with one line.
func TestConfigFile(t *testing.T) {
	const yamlFile = `
listen: 127.0.0.1:9000
max-interval: 20s
timeout: 45s
max-queue: 500
publish-rate: 12.5
demo: false
join: [10.0.0.1:7946, 10.0.0.2:7946]
`
	const tomlFile = `
listen = "127.0.0.1:9000"
max-interval = "20s"
timeout = "45s"
max-queue = 500
publish-rate = 12.5
demo = false
join = ["10.0.0.1:7946", "10.0.0.2:7946"]
`
	fromFile := func(c *config) bool {
		return c.Listen == "127.0.0.1:9000" && c.MaxInterval == 20*time.Second && c.Timeout == 45*time.Second &&
			c.MaxQueue == 500 && c.PublishRate == 12.5 && !c.Demo && c.Join == "10.0.0.1:7946,10.0.0.2:7946"
	}
	tests := []struct {
		name, file, body string
		args             []string
		env              map[string]string
		check            func(*config) bool
		wantErr          string
	}{
		{name: "yaml", file: "node.yaml", body: yamlFile, check: fromFile},
		{name: "yml", file: "node.yml", body: yamlFile, check: fromFile},
		{name: "toml", file: "node.toml", body: tomlFile, check: fromFile},
		{name: "default where the file is silent", file: "node.yaml", body: yamlFile, check: func(c *config) bool {
			return c.Path == "/cometd" && c.HistorySize == 1000
		}},
		{name: "environment beats file", file: "node.yaml", body: yamlFile, env: map[string]string{"BAYEUX_MAX_INTERVAL": "7s"},
			check: func(c *config) bool { return c.MaxInterval == 7*time.Second && c.Timeout == 45*time.Second }},
		{name: "flag beats environment and file", file: "node.yaml", body: yamlFile, args: []string{"--max-interval", "3s"},
			env:   map[string]string{"BAYEUX_MAX_INTERVAL": "7s"},
			check: func(c *config) bool { return c.MaxInterval == 3*time.Second }},
		{name: "flag false beats file true", file: "node.yaml", body: "pprof: true\n", args: []string{"--pprof=false"},
			check: func(c *config) bool { return !c.Pprof }},
		{name: "file from BAYEUX_CONFIG", file: "node.yaml", body: yamlFile, env: map[string]string{"BAYEUX_CONFIG": "$FILE"}, check: fromFile},
		{name: "unknown key", file: "node.yaml", body: "max-intervall: 10s\n", wantErr: `node.yaml: unknown key "max-intervall" (did you mean "max-interval"?)`},
		{name: "unknown key toml", file: "node.toml", body: "redis_url = \"redis://x\"\n", wantErr: `node.toml: unknown key "redis_url" (did you mean "redis"?)`},
		{name: "nested key", file: "node.yaml", body: "auth:\n  jwt-audience: x\n", wantErr: `node.yaml: unknown key "auth.jwt-audience" (did you mean "auth-jwt-audience"?)`},
		{name: "command-only key", file: "node.yaml", body: "version: true\n", wantErr: `node.yaml: unknown key "version"`},
		{name: "duration without unit", file: "node.yaml", body: "timeout: 30\n", wantErr: `node.yaml: timeout: "30": want a duration with a unit, such as 500ms, 30s or 2m (did you mean 30s?)`},
		{name: "bad bool", file: "node.toml", body: "demo = \"maybe\"\n", wantErr: `node.toml: demo: "maybe": want true or false`},
		{name: "map value", file: "node.yaml", body: "join: [{a: 1}]\n", wantErr: `node.yaml: join: list item`},
		{name: "syntax error", file: "node.yaml", body: "listen: [\n", wantErr: `--config`},
		{name: "other extension", file: "node.json", body: "{}", wantErr: `--config`},
		{name: "missing file", file: "", wantErr: `--config`},
		{name: "file values validated", file: "node.yaml", body: "redis: 127.0.0.1:6379\n", wantErr: `--redis "127.0.0.1:6379" is not a Redis URL`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "missing.yaml")
			if tt.file != "" {
				path = filepath.Join(t.TempDir(), tt.file)
				if err := os.WriteFile(path, []byte(tt.body), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			env := map[string]string{}
			for k, v := range tt.env {
				env[k] = strings.ReplaceAll(v, "$FILE", path)
			}
			args := tt.args
			if env["BAYEUX_CONFIG"] == "" {
				args = append([]string{"--config", path}, args...)
			}
			c, err := parseConfig(args, environ(env))
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

// TestPrintConfig: --print-config writes the effective configuration as a
// --config file, secrets redacted, and reading it back gives the same
// configuration.
func TestPrintConfig(t *testing.T) {
	args := []string{"--print-config", "--listen", "127.0.0.1:9", "--redis", "redis://user:s3cret@r:6379/0",
		"--auth-webhook", "https://hook:pw@auth.example/check?token=abc&room=1", "--max-interval", "90s"}
	c, err := parseConfig(args, environ(map[string]string{"BAYEUX_JOIN": "a:7946,b:7946"}))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := printConfig(c, &out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{
		"listen: 127.0.0.1:9\n", "max-interval: 1m30s\n", "join: a:7946,b:7946\n", "demo: true\n", "max-queue: 10000\n",
		"redis: redis://xxxxx@r:6379/0\n", "auth-webhook: https://xxxxx@auth.example/check?room=1&token=xxxxx\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %q in:\n%s", want, text)
		}
	}
	for _, secret := range []string{"s3cret", "pw@", "abc"} {
		if strings.Contains(text, secret) {
			t.Errorf("secret %q printed:\n%s", secret, text)
		}
	}
	for _, key := range notInFile {
		if strings.Contains(text, "\n"+key+":") {
			t.Errorf("command-only key %s printed", key)
		}
	}
	// Round trip (without the redacted URLs): the printed file is a valid
	// --config giving the same settings.
	path := filepath.Join(t.TempDir(), "printed.yaml")
	var kept []string
	for _, l := range strings.Split(text, "\n") {
		if !strings.Contains(l, "xxxxx") {
			kept = append(kept, l)
		}
	}
	if err := os.WriteFile(path, []byte(strings.Join(kept, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	back, err := parseConfig([]string{"--config", path}, nil)
	if err != nil {
		t.Fatalf("printed config does not load: %v\n%s", err, text)
	}
	if back.Listen != c.Listen || back.MaxInterval != c.MaxInterval || back.Join != c.Join || back.MaxQueue != c.MaxQueue || back.Demo != c.Demo {
		t.Fatalf("round trip: got %+v, want %+v", back, c)
	}
}

func TestRedact(t *testing.T) {
	tests := []struct {
		name string
		in   any
		want any
	}{
		{"auth-jwt-hmac-secret-file", "/run/secret", "/run/secret"}, // a path, not the secret
		{"api-token", "t0k3n", redacted},
		{"api-key", "k3y", redacted},
		{"gossip-key-file", "/etc/bayeux/gossip.key", "/etc/bayeux/gossip.key"},
		{"redis", "rediss+cluster://u:p@a:1,b:2", "rediss+cluster://xxxxx@a:1,b:2"},
		{"redis", "redis://r:6379", "redis://r:6379"},
		{"listen", ":8080", ":8080"},
		{"max-queue", 5, 5},
	}
	for _, tt := range tests {
		if got := redact(tt.name, tt.in); got != tt.want {
			t.Errorf("redact(%s, %v) = %v, want %v", tt.name, tt.in, got, tt.want)
		}
	}
}
