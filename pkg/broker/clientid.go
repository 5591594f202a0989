package broker

// ClientIDRandomLen is the length of the random part of every clientId a
// broker issues: 26 base-32 characters (a-z, 2-7) carrying 130 random bits,
// after Config.IDPrefix.
const ClientIDRandomLen = 26

// SplitClientID splits id, as issued by a broker whose IDPrefix is
// prefixLen bytes long, into that prefix and its random part. ok is false
// for anything such a broker cannot have issued: another length, or a
// random part outside the base-32 alphabet. The prefix is not checked (the
// caller knows what its prefixes look like). A cluster uses it to refuse a
// forged clientId before it costs a Redis look-up or a forward.
func SplitClientID(id string, prefixLen int) (prefix, random string, ok bool) {
	if prefixLen < 0 || len(id) != prefixLen+ClientIDRandomLen {
		return "", "", false
	}
	random = id[prefixLen:]
	for i := 0; i < len(random); i++ {
		if !isIDChar(random[i]) {
			return "", "", false
		}
	}
	return id[:prefixLen], random, true
}

// isIDChar reports whether c is in the clientId alphabet (idEncoding's).
func isIDChar(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= '2' && c <= '7') }
