package serverapi

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
)

// Keys is the set of API keys read from a key file: one key per line,
// blank lines and lines starting with # ignored, surrounding spaces
// trimmed. Only the keys' SHA-256 digests are kept; Check compares in
// constant time. Keys are never logged. Safe for concurrent use.
type Keys struct {
	path string
	mu   sync.RWMutex
	sums [][sha256.Size]byte
}

// ErrNoKeys is returned for a key file without any key.
var ErrNoKeys = errors.New("API key file has no keys")

// minKeyLen is the shortest key accepted: shorter ones are guessable.
const minKeyLen = 16

// LoadKeys reads the key file at path.
func LoadKeys(path string) (*Keys, error) {
	k := &Keys{path: path}
	if err := k.Reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// Reload reads the key file again. On error the previous keys stay.
func (k *Keys) Reload() error {
	raw, err := os.ReadFile(k.path)
	if err != nil {
		return fmt.Errorf("read API key file: %w", err)
	}
	sums, err := parseKeys(raw)
	if err != nil {
		return fmt.Errorf("API key file %s: %w", k.path, err)
	}
	k.mu.Lock()
	k.sums = sums
	k.mu.Unlock()
	return nil
}

func parseKeys(raw []byte) ([][sha256.Size]byte, error) {
	var sums [][sha256.Size]byte
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if len(line) < minKeyLen || strings.ContainsAny(line, " \t") {
			return nil, fmt.Errorf("line %d: a key is at least %d characters without spaces", n, minKeyLen)
		}
		sums = append(sums, sha256.Sum256([]byte(line)))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(sums) == 0 {
		return nil, ErrNoKeys
	}
	return sums, nil
}

// Len returns how many keys are loaded.
func (k *Keys) Len() int {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return len(k.sums)
}

// Check reports whether key is one of the keys. It compares against every
// key, in constant time each, whatever matches.
func (k *Keys) Check(key string) bool {
	if key == "" {
		return false
	}
	sum := sha256.Sum256([]byte(key))
	k.mu.RLock()
	defer k.mu.RUnlock()
	ok := 0
	for i := range k.sums {
		ok |= subtle.ConstantTimeCompare(sum[:], k.sums[i][:])
	}
	return ok == 1
}
