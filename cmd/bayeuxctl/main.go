package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/serverapi"
)

const usage = `usage: bayeuxctl [flags] COMMAND [ARGS]

Commands:
  publish CHANNEL JSON              publish JSON data on CHANNEL
  broadcast JSON CHANNEL...         publish JSON data on every CHANNEL
  channels [PATTERN]                subscriptions in use (e.g. /chat/**), cluster-wide
  presence CHANNEL                  sessions subscribed to CHANNEL, cluster-wide
  history CHANNEL [SINCE [LIMIT]]   retained messages after replay id SINCE
  disconnect CLIENTID               end a session (it handshakes again)
  disconnect --user USER            end every session of USER
  unsubscribe CLIENTID CHANNEL      stop a session receiving CHANNEL
  nodes                             the live nodes

Flags:
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bayeuxctl:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("see bayeuxctl -h")

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bayeuxctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	api := fs.String("api", envOr(getenv, "BAYEUX_API", "http://localhost:8081"), "base URL of a node's server API (env BAYEUX_API)")
	key := fs.String("key", getenv("BAYEUX_API_KEY"), "API key (env BAYEUX_API_KEY)")
	keyFile := fs.String("key-file", getenv("BAYEUX_API_KEY_FILE"), "file whose first key is used (env BAYEUX_API_KEY_FILE)")
	asJSON := fs.Bool("json", false, "print the API's JSON answer")
	user := fs.String("user", "", "disconnect: every session of this user")
	noReconnect := fs.Bool("no-reconnect", false, "disconnect: tell the client not to reconnect")
	timeout := fs.Duration("timeout", 10*time.Second, "bound on the call")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	k, err := apiKey(*key, *keyFile)
	if err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return errUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	c := serverapi.NewClient(*api, k, nil)
	out, err := call(ctx, c, rest[0], rest[1:], *user, *noReconnect)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	return printTable(stdout, out)
}

func envOr(getenv func(string) string, k, def string) string {
	if v := getenv(k); v != "" {
		return v
	}
	return def
}

// apiKey returns key, or the first key of keyFile.
func apiKey(key, keyFile string) (string, error) {
	if key != "" || keyFile == "" {
		if key == "" {
			return "", fmt.Errorf("no API key: set --key, BAYEUX_API_KEY, --key-file or BAYEUX_API_KEY_FILE: %w", errUsage)
		}
		return key, nil
	}
	raw, err := os.ReadFile(keyFile)
	if err != nil {
		return "", err
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			return line, nil
		}
	}
	return "", fmt.Errorf("%s has no key", keyFile)
}

func call(ctx context.Context, c *serverapi.Client, cmd string, args []string, user string, noReconnect bool) (any, error) {
	need := func(min, max int) error {
		if len(args) < min || len(args) > max {
			return fmt.Errorf("%s: wrong number of arguments: %w", cmd, errUsage)
		}
		return nil
	}
	switch cmd {
	case "publish":
		if err := need(2, 2); err != nil {
			return nil, err
		}
		if !json.Valid([]byte(args[1])) {
			return nil, fmt.Errorf("publish: %q is not JSON (quote strings: '\"text\"')", args[1])
		}
		return c.Publish(ctx, args[0], json.RawMessage(args[1]))
	case "broadcast":
		if err := need(2, 1000); err != nil {
			return nil, err
		}
		if !json.Valid([]byte(args[0])) {
			return nil, fmt.Errorf("broadcast: %q is not JSON", args[0])
		}
		return c.Broadcast(ctx, args[1:], json.RawMessage(args[0]))
	case "channels":
		if err := need(0, 1); err != nil {
			return nil, err
		}
		pattern := ""
		if len(args) == 1 {
			pattern = args[0]
		}
		return c.Channels(ctx, pattern)
	case "presence":
		if err := need(1, 1); err != nil {
			return nil, err
		}
		return c.Presence(ctx, args[0])
	case "history":
		return history(ctx, c, args)
	case "disconnect":
		req := serverapi.DisconnectRequest{User: user}
		if user == "" {
			if err := need(1, 1); err != nil {
				return nil, err
			}
			req.ClientID = args[0]
		}
		if noReconnect {
			f := false
			req.Reconnect = &f
		}
		return c.Disconnect(ctx, req)
	case "unsubscribe":
		if err := need(2, 2); err != nil {
			return nil, err
		}
		return c.Unsubscribe(ctx, args[0], args[1])
	case "nodes":
		if err := need(0, 0); err != nil {
			return nil, err
		}
		return c.Nodes(ctx)
	}
	return nil, fmt.Errorf("unknown command %q: %w", cmd, errUsage)
}

func history(ctx context.Context, c *serverapi.Client, args []string) (any, error) {
	if len(args) < 1 || len(args) > 3 {
		return nil, fmt.Errorf("history: wrong number of arguments: %w", errUsage)
	}
	since, limit := int64(-1), 0
	if len(args) > 1 {
		if _, err := fmt.Sscan(args[1], &since); err != nil {
			return nil, fmt.Errorf("history: SINCE %q is not a replay id", args[1])
		}
	}
	if len(args) > 2 {
		if _, err := fmt.Sscan(args[2], &limit); err != nil {
			return nil, fmt.Errorf("history: LIMIT %q is not a number", args[2])
		}
	}
	return c.History(ctx, args[0], since, limit)
}

// printTable prints an answer for people.
func printTable(w io.Writer, out any) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	switch v := out.(type) {
	case serverapi.PublishResult:
		fmt.Fprintf(tw, "published on %s, replay id %d\n", v.Channel, v.ReplayID)
	case serverapi.BroadcastResult:
		fmt.Fprintln(tw, "CHANNEL\tREPLAY ID\tERROR")
		for _, r := range v.Results {
			e := ""
			if r.Error != nil {
				e = r.Error.Message
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\n", r.Channel, r.ReplayID, e)
		}
	case serverapi.ChannelsResult:
		fmt.Fprintln(tw, "CHANNEL\tSUBSCRIBERS")
		for _, ch := range v.Channels {
			fmt.Fprintf(tw, "%s\t%d\n", ch.Channel, ch.Subscribers)
		}
		unreachable(tw, v.Unreachable)
	case serverapi.PresenceResult:
		fmt.Fprintln(tw, "CLIENT ID\tNODE\tTRANSPORT\tUSER")
		for _, s := range v.Sessions {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.ClientID, s.Node, s.Transport, s.User)
		}
		unreachable(tw, v.Unreachable)
	case serverapi.HistoryResult:
		fmt.Fprintln(tw, "REPLAY ID\tDATA")
		for _, m := range v.Messages {
			fmt.Fprintf(tw, "%d\t%s\n", m.ReplayID, m.Data)
		}
	case serverapi.DisconnectResult:
		for _, id := range v.Disconnected {
			fmt.Fprintf(tw, "disconnected %s\n", id)
		}
		unreachable(tw, v.Unreachable)
	case serverapi.UnsubscribeResult:
		fmt.Fprintf(tw, "unsubscribed: %v\n", v.Unsubscribed)
		unreachable(tw, v.Unreachable)
	case serverapi.NodesResult:
		fmt.Fprintln(tw, "NODE\tSESSIONS\tPUBLISHES/S\tDELIVERIES/S\tVERSION")
		for _, n := range v.Nodes {
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%s\n", n.ID, n.Sessions, n.PublishRate, n.DeliveryRate, n.Version)
		}
		unreachable(tw, v.Unreachable)
	}
	return tw.Flush()
}

func unreachable(w io.Writer, nodes []string) {
	if len(nodes) > 0 {
		fmt.Fprintf(w, "(no answer from %s: the list may be incomplete)\n", strings.Join(nodes, ", "))
	}
}
