// Package e2e holds end-to-end tests that run real node processes and the
// real third-party Bayeux clients (npm cometd + cometd-nodejs-client, npm
// faye) against them. They need Node.js and the interop suite's npm
// packages (installed by scripts/test.sh with npm ci); without them the
// tests fail, never skip.
package e2e
