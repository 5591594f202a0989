package channel

import (
	"errors"
	"strings"
)

// Kind classifies a parsed channel name.
type Kind uint8

const (
	Concrete     Kind = iota // no wildcard
	WildcardOne              // ends in "/*"
	WildcardDeep             // ends in "/**"
)

// MaxLength and MaxDepth bound a channel name.
const (
	MaxLength = 512
	MaxDepth  = 32
)

// Errors returned by Parse.
var (
	ErrEmpty            = errors.New("channel name is empty")
	ErrNoLeadingSlash   = errors.New("channel name must start with /")
	ErrEmptySegment     = errors.New("channel name has an empty segment")
	ErrInvalidChar      = errors.New("channel name has an invalid character")
	ErrWildcardPosition = errors.New("wildcard allowed only as the last segment")
	ErrTooLong          = errors.New("channel name too long")
	ErrTooDeep          = errors.New("channel name has too many segments")
)

// Parse validates name and returns its kind and depth (number of segments).
func Parse(name string) (Kind, int, error) {
	if name == "" {
		return 0, 0, ErrEmpty
	}
	if len(name) > MaxLength {
		return 0, 0, ErrTooLong
	}
	if name[0] != '/' {
		return 0, 0, ErrNoLeadingSlash
	}
	kind := Concrete
	depth := 0
	segStart := 1
	for i := 1; i <= len(name); i++ {
		if i < len(name) && name[i] != '/' {
			continue
		}
		seg := name[segStart:i]
		depth++
		if depth > MaxDepth {
			return 0, 0, ErrTooDeep
		}
		last := i == len(name)
		switch {
		case seg == "":
			return 0, 0, ErrEmptySegment
		case seg == "*" || seg == "**":
			if !last {
				return 0, 0, ErrWildcardPosition
			}
			if seg == "*" {
				kind = WildcardOne
			} else {
				kind = WildcardDeep
			}
		default:
			for j := 0; j < len(seg); j++ {
				if !tokenChar(seg[j]) {
					if seg[j] == '*' {
						return 0, 0, ErrWildcardPosition
					}
					return 0, 0, ErrInvalidChar
				}
			}
		}
		segStart = i + 1
	}
	return kind, depth, nil
}

func tokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '-', '_', '!', '~', '(', ')', '$', '@':
		return true
	}
	return false
}

// IsWildcard reports whether a valid name is a pattern.
func IsWildcard(name string) bool {
	return strings.HasSuffix(name, "/*") || strings.HasSuffix(name, "/**")
}

// Match reports whether the concrete channel name matches pattern (which may
// itself be concrete). Both must be valid names.
func Match(pattern, name string) bool {
	switch {
	case strings.HasSuffix(pattern, "/**"):
		prefix := pattern[:len(pattern)-2] // keeps the trailing "/"
		return len(name) > len(prefix) && strings.HasPrefix(name, prefix)
	case strings.HasSuffix(pattern, "/*"):
		prefix := pattern[:len(pattern)-1]
		return len(name) > len(prefix) && strings.HasPrefix(name, prefix) &&
			strings.IndexByte(name[len(prefix):], '/') < 0
	default:
		return pattern == name
	}
}

// Candidates appends to dst every pattern that matches the concrete channel
// name, most specific first: the name itself, the "/*" pattern of its parent,
// then "/**" from the deepest ancestor up to the root. The order is fixed and
// is what fan-out uses to deliver a publication once per session.
//
// For "/a/b/c": "/a/b/c", "/a/b/*", "/a/b/**", "/a/**", "/**".
func Candidates(dst []string, name string) []string {
	dst = append(dst, name)
	last := strings.LastIndexByte(name, '/')
	if last < 0 {
		return dst
	}
	dst = append(dst, name[:last+1]+"*")
	for i := last; i >= 0; i-- {
		if name[i] == '/' {
			dst = append(dst, name[:i+1]+"**")
		}
	}
	return dst
}
