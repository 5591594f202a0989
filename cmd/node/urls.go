package main

import (
	"fmt"
	"io"
)

// endpoint is one URL a person may need, printed at start.
type endpoint struct {
	Name string // what it is, e.g. "demo"
	URL  string
	Note string // how to use it (optional)
}

// urls lists what the node serves at base (scheme://host:port), the
// first a person should open first. Every listener the node serves on
// adds its line here (the server API listener, --api-listen, belongs
// after "metrics").
func (n *node) urls(base string) []endpoint {
	c := n.c
	var out []endpoint
	if n.app != nil {
		out = append(out,
			endpoint{"demo", base + "/", "open in a browser: chat"},
			endpoint{"cluster", base + "/cluster", "live view of the nodes"})
	}
	out = append(out,
		endpoint{"bayeux", base + c.Path, "endpoint for CometD and Faye clients (not a web page)"},
		endpoint{"metrics", base + "/metrics", "Prometheus"})
	if n.api != nil {
		out = append(out,
			endpoint{"api", n.api.URL() + "/api/v1/", "server API for backends (a key of --api-key-file)"},
			endpoint{"admin", n.api.URL() + "/admin/", "admin console"})
	}
	out = append(out, endpoint{"health", base + "/healthz", "and " + base + "/readyz"})
	if c.Pprof {
		out = append(out, endpoint{"pprof", base + "/debug/pprof/", "Go profiling"})
	}
	if c.DebugAPI {
		out = append(out, endpoint{"debug", base + "/debug/bayeux/", "test-only debug API"})
	}
	return out
}

// printURLs writes the URLs on stdout: first the line tools parse
// ("bayeux node serving <Bayeux endpoint>"), then one line per endpoint.
func printURLs(w io.Writer, eps []endpoint) {
	for _, e := range eps {
		if e.Name == "bayeux" {
			fmt.Fprintf(w, "bayeux node serving %s\n", e.URL)
		}
	}
	for _, e := range eps {
		line := fmt.Sprintf("  %-8s %s", e.Name, e.URL)
		if e.Note != "" {
			line = fmt.Sprintf("%-50s %s", line, e.Note)
		}
		fmt.Fprintln(w, line)
	}
}
