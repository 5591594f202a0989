package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// subcommand runs the helpers a distroless image needs instead of a shell
// and curl: "sleep DURATION" (a Kubernetes preStop hook that keeps the pod
// serving while endpoints stop sending it traffic, before SIGTERM starts
// the drain) and "probe URL" (a container healthcheck: GET within 3 s,
// exit 0 on a 2xx status, 1 otherwise). ok is false when args name no
// subcommand: the node runs.
func subcommand(args []string, stderr io.Writer) (code int, ok bool) {
	if len(args) != 2 {
		return 0, false
	}
	switch args[0] {
	case "sleep":
		d, err := time.ParseDuration(args[1])
		if err != nil || d < 0 || d > 5*time.Minute {
			fmt.Fprintln(stderr, "bayeux-node sleep: want a duration between 0 and 5m")
			return 2, true
		}
		time.Sleep(d)
		return 0, true
	case "probe":
		return probe(args[1], stderr), true
	}
	return 0, false
}

// probe GETs url within 3 s: 0 on a 2xx status, 1 otherwise (the reason
// on stderr).
func probe(url string, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		fmt.Fprintf(stderr, "bayeux-node probe: %v\n", err)
		return 2
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "bayeux-node probe: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		fmt.Fprintf(stderr, "bayeux-node probe: %s: %s\n", url, resp.Status)
		return 1
	}
	return 0
}
