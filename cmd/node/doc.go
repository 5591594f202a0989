// Command node runs one broker node; the built binary is named
// bayeux-node (go build -o bayeux-node ./cmd/node, and in the image).
//
// Every setting is a flag, a BAYEUX_* environment variable (flag
// --max-interval reads BAYEUX_MAX_INTERVAL) and a key of the optional
// --config file (YAML or TOML, key max-interval). Precedence: flag >
// environment > file > default (configsrc.go). An unknown flag, file key
// or BAYEUX_* variable, or a value that does not parse, stops the node
// before it serves with one line on stderr and exit code 2; --print-config
// prints the effective settings (secrets redacted), --version the build.
//
// With no --redis the node runs the embedded in-memory engine as a single
// node. Once listening it prints on standard output the URLs a person
// needs (demo, cluster page, Bayeux endpoint, metrics, health; urls.go),
// the first line being "bayeux node serving <Bayeux URL>" for tools. It
// serves /healthz and /readyz, and on SIGTERM or SIGINT answers held
// connects with "retry" advice and exits within --shutdown-grace.
//
// Every log line goes through one log/slog handler (--log-format,
// --log-level), go-redis's and memberlist's included (internal/logbridge).
package main
