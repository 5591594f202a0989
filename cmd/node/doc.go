// Command node runs one broker node.
//
// Every flag has a BAYEUX_* environment variable fallback (flag --max-interval
// reads BAYEUX_MAX_INTERVAL); an explicit flag wins. With no --redis the node
// runs the embedded in-memory engine as a single node. It prints the URL it
// serves on standard output once it is listening, serves /healthz and
// /readyz, and on SIGTERM or SIGINT answers held connects with "retry"
// advice and exits within --shutdown-grace.
package main
