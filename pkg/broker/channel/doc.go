// Package channel parses and matches Bayeux channel names.
//
// Grammar: name = "/" token ("/" token)*, token = (alphanum | - _ ! ~ ( ) $ @)+.
// A wildcard segment ("*" one segment, "**" any depth of at least one) is
// allowed only as the last segment of a subscription pattern.
//
// Matching is done by enumeration rather than by scanning subscriptions:
// Candidates lists every pattern that can match a concrete name (the name,
// its "/*" sibling pattern and "/**" at every ancestor), so an index keyed by
// pattern answers "who matches" in depth+2 look-ups whatever its size.
// All functions are pure and safe for concurrent use.
package channel
