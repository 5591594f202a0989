package protocol

import (
	"encoding/json"
	"strings"
)

// Known message fields, as bits. encoding/json matches object keys to
// struct fields case-insensitively; Bayeux field names are case-sensitive,
// so a message with a key such as "ID" is rebuilt without it before
// decoding (it is an unknown field, ignored).
const (
	fChannel uint16 = 1 << iota
	fID
	fClientID
	fData
	fExt
	fAdvice
	fVersion
	fMinimumVersion
	fSupported
	fConnectionType
	fSubscription
)

var fieldBits = map[string]uint16{
	"channel": fChannel, "id": fID, "clientId": fClientID, "data": fData, "ext": fExt,
	"advice": fAdvice, "version": fVersion, "minimumVersion": fMinimumVersion,
	"supportedConnectionTypes": fSupported, "connectionType": fConnectionType, "subscription": fSubscription,
}

// topLevelKeys returns the bits of the known fields present with their
// exact names in the JSON object obj (which must be valid JSON), and whether
// some other key differs from a known field name only in case (or uses
// escapes), in which case the caller must decode the slow way. It scans
// without allocating.
func topLevelKeys(obj []byte) (bits uint16, inexact bool) {
	depth := 0
	expectKey := false
	for i := 0; i < len(obj); i++ {
		switch c := obj[i]; c {
		case '{':
			depth++
			expectKey = depth == 1
		case '[':
			depth++
		case '}', ']':
			depth--
		case ',':
			expectKey = depth == 1
		case '"':
			start := i + 1
			escaped := false
			for i++; i < len(obj); i++ {
				if obj[i] == '\\' {
					escaped = true
					i++
					continue
				}
				if obj[i] == '"' {
					break
				}
			}
			if expectKey && i <= len(obj) {
				key := obj[start:i]
				if b, ok := fieldBits[string(key)]; ok && !escaped {
					bits |= b
				} else if escaped || foldsToField(key) {
					inexact = true
				}
			}
			expectKey = false
		}
	}
	return bits, inexact
}

// foldsToField reports whether key matches a known field under Unicode
// case folding (as encoding/json matches it: "ſubscription" folds to
// "subscription", so lengths may differ).
func foldsToField(key []byte) bool {
	for name := range fieldBits {
		if strings.EqualFold(name, string(key)) {
			return true
		}
	}
	return false
}

// exactOnly rebuilds obj keeping only keys that are not case variants of a
// known field: the slow path for the rare message that has such keys.
func exactOnly(obj []byte) []byte {
	var all map[string]json.RawMessage
	if json.Unmarshal(obj, &all) != nil {
		return obj
	}
	for k := range all {
		if _, ok := fieldBits[k]; !ok && foldsToField([]byte(k)) {
			delete(all, k)
		}
	}
	out, err := json.Marshal(all)
	if err != nil {
		return obj
	}
	return out
}
