package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// TestCommands runs each command against a real node, as an operator
// would: the key from a key file, the API address from the environment.
func TestCommands(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keyFile, []byte("# ops\nctl-test-key-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := testproc.StartNode(t, nil, "--api-key-file", keyFile)
	p := &bayeuxtest.Peer{T: t, URL: n.URL}
	id := p.Handshake(nil)
	p.MustSucceed(bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": id, "subscription": "/ops/room"})
	env := map[string]string{"BAYEUX_API": n.API, "BAYEUX_API_KEY_FILE": keyFile}
	ctl := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, func(k string) string { return env[k] }, &out, &errOut)
		return out.String() + errOut.String(), err
	}
	cases := []struct {
		args []string
		want string // regexp
	}{
		{[]string{"publish", "/ops/room", `{"text":"hi"}`}, `published on /ops/room, replay id 1`},
		{[]string{"publish", "/ops/room", `"again"`}, `replay id 2`},
		{[]string{"channels"}, `(?m)^/ops/room\s+1$`},
		{[]string{"presence", "/ops/room"}, `(?m)^` + id + `\s+standalone\s+long-polling`},
		{[]string{"history", "/ops/room", "1"}, `(?m)^2\s+"again"$`},
		{[]string{"--json", "history", "/ops/room"}, `"replayId": 1`},
		{[]string{"nodes"}, `(?m)^standalone\s+1\s`},
		{[]string{"unsubscribe", id, "/ops/room"}, `unsubscribed: true`},
		{[]string{"disconnect", id}, `disconnected ` + id},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			out, err := ctl(c.args...)
			if err != nil || !regexp.MustCompile(c.want).MatchString(out) {
				t.Errorf("output %q (err %v), want %s", out, err, c.want)
			}
		})
	}
	for _, bad := range [][]string{{"publish", "/ops/room", "not json"}, {"frobnicate"}, {"presence"}, {"disconnect", "nobody"}} {
		if out, err := ctl(bad...); err == nil {
			t.Errorf("%v succeeded: %s", bad, out)
		}
	}
	env["BAYEUX_API_KEY_FILE"] = ""
	env["BAYEUX_API_KEY"] = "wrong-key-0123456789"
	if _, err := ctl("nodes"); err == nil || !strings.Contains(err.Error(), "wrong API key") {
		t.Errorf("wrong key: %v", err)
	}
}
