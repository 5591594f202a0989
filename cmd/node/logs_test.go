package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// TestLogsAreStructured runs two clustered nodes with --log-format json
// through a Redis outage and a node leaving: every line either writes
// (the node's, go-redis's, memberlist's) is one JSON object with no
// repeated key, no null value (err=<nil>), durations as text, and
// memberlist's [LEVEL] prefixes turned into levels. A drain is routine:
// the node that leaves logs nothing at ERROR (memberlist's complaints
// about its own sockets closing under it are DEBUG).
func TestLogsAreStructured(t *testing.T) {
	r := testproc.StartRedis(t)
	c := testproc.StartClusterOn(t, r, 2, "--log-format", "json", "--log-level", "debug", "--shutdown-grace", "3s")
	// A Redis outage: go-redis reports its dropped connections.
	r.Stop()
	bayeuxtest.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(c.Nodes[0].Log.String(), `"component":"go-redis"`) {
			return fmt.Errorf("no go-redis line yet")
		}
		return nil
	})
	testproc.StartRedisOn(t, r.Port)
	// A node leaves: memberlist and membership lines on the other.
	if err := c.Nodes[1].Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, exited := c.Nodes[1].Wait(15 * time.Second); !exited {
		t.Fatal("node did not stop")
	}
	bayeuxtest.Eventually(t, 15*time.Second, func() error {
		if !strings.Contains(c.Nodes[0].Log.String(), `"msg":"membership change"`) {
			return fmt.Errorf("no membership line yet")
		}
		return nil
	})

	for i, n := range c.Nodes {
		seen := map[string]bool{}
		for _, line := range strings.Split(strings.TrimSpace(n.Log.String()), "\n") {
			rec, err := decodeStrict(line)
			if err != nil {
				t.Errorf("node %d: %v: %s", i, err, line)
				continue
			}
			for k, v := range rec {
				if v == nil {
					t.Errorf("node %d: %s is null: %s", i, k, line)
				}
			}
			for _, k := range durationKeys {
				if d, ok := rec[k]; ok {
					if _, isText := d.(string); !isText {
						t.Errorf("node %d: duration %s not as text: %s", i, k, line)
					}
				}
			}
			if i == 1 && rec["level"] == "ERROR" {
				t.Errorf("node %d (drained) logged an ERROR: %s", i, line)
			}
			msg, _ := rec["msg"].(string)
			if libraryPrefix.MatchString(msg) {
				t.Errorf("node %d: library prefix kept in the message: %s", i, line)
			}
			comp, _ := rec["component"].(string)
			seen[comp] = true
		}
		if i == 0 && (!seen["go-redis"] || !seen["gossip"]) {
			t.Errorf("node %d: components seen %v, want go-redis and gossip lines", i, seen)
		}
	}
}

// durationKeys are the attributes the node logs durations under.
var durationKeys = []string{"grace", "after", "window", "took", "interval", "timeout", "delay", "age"}

// libraryPrefix matches what the libraries put before their messages:
// memberlist's level and name, go-redis's name, gRPC's component.
var libraryPrefix = regexp.MustCompile(`^(\[(DEBUG|INFO|WARN|ERR|ERROR|core|transport)\]|memberlist:|redis:)`)

// decodeStrict decodes one JSON object, refusing a repeated key at any
// level.
func decodeStrict(line string) (map[string]any, error) {
	dec := json.NewDecoder(strings.NewReader(line))
	if err := noDuplicateKeys(dec); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("more than one JSON value on the line")
	}
	var rec map[string]any
	if err := json.NewDecoder(bytes.NewReader([]byte(line))).Decode(&rec); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	return rec, nil
}

func noDuplicateKeys(dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	switch tok {
	case json.Delim('{'):
		keys := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return err
			}
			k := kt.(string)
			if keys[k] {
				return fmt.Errorf("key %q repeated", k)
			}
			keys[k] = true
			if err := noDuplicateKeys(dec); err != nil {
				return err
			}
		}
		_, err = dec.Token()
		return err
	case json.Delim('['):
		for dec.More() {
			if err := noDuplicateKeys(dec); err != nil {
				return err
			}
		}
		_, err = dec.Token()
		return err
	}
	return nil
}
