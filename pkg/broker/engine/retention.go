package engine

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker/channel"
)

// RetentionRule keeps, on the channels Pattern matches, the last Size
// publications, each for at most TTL.
type RetentionRule struct {
	Pattern string
	Size    int
	TTL     time.Duration
}

// Retention chooses how much history a channel keeps: the rule of the most
// specific matching pattern (the channel itself, then "/*" of its parent,
// then "/**" from the deepest ancestor up), else the default. It is
// immutable and safe for concurrent use.
type Retention struct {
	def   RetentionRule
	rules map[string]RetentionRule
	max   time.Duration
}

// NewRetention returns the retention with default def and rules.
func NewRetention(def RetentionRule, rules []RetentionRule) (*Retention, error) {
	if def.Size <= 0 || def.TTL <= 0 {
		return nil, fmt.Errorf("retention: default size and ttl must be positive (got %d, %v)", def.Size, def.TTL)
	}
	r := &Retention{def: def, rules: map[string]RetentionRule{}, max: def.TTL}
	for _, rule := range rules {
		if _, _, err := channel.Parse(rule.Pattern); err != nil {
			return nil, fmt.Errorf("retention pattern %q: %w", rule.Pattern, err)
		}
		if rule.Size <= 0 || rule.TTL <= 0 {
			return nil, fmt.Errorf("retention %q: size and ttl must be positive", rule.Pattern)
		}
		r.rules[rule.Pattern] = rule
		r.max = max(r.max, rule.TTL)
	}
	return r, nil
}

// DefaultRetention keeps size publications for ttl on every channel.
func DefaultRetention(size int, ttl time.Duration) *Retention {
	return &Retention{def: RetentionRule{Pattern: "/**", Size: size, TTL: ttl}, rules: map[string]RetentionRule{}, max: ttl}
}

// For returns the history size and age limit of the concrete channel ch.
func (r *Retention) For(ch string) (int, time.Duration) {
	if len(r.rules) > 0 {
		var buf [channel.MaxDepth + 2]string
		for _, p := range channel.Candidates(buf[:0], ch) {
			if rule, ok := r.rules[p]; ok {
				return rule.Size, rule.TTL
			}
		}
	}
	return r.def.Size, r.def.TTL
}

// MaxTTL is the longest age limit of any rule.
func (r *Retention) MaxTTL() time.Duration { return r.max }

// ParseRetentionRules parses "pattern=size:ttl" items separated by commas,
// e.g. "/chat/**=500:10m,/quotes/*=100:30s".
func ParseRetentionRules(spec string) ([]RetentionRule, error) {
	var out []RetentionRule
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		pattern, limits, ok := strings.Cut(item, "=")
		sizeS, ttlS, ok2 := strings.Cut(limits, ":")
		if !ok || !ok2 {
			return nil, fmt.Errorf("retention %q: want pattern=size:ttl", item)
		}
		size, err := strconv.Atoi(sizeS)
		if err != nil {
			return nil, fmt.Errorf("retention %q: size: %w", item, err)
		}
		ttl, err := time.ParseDuration(ttlS)
		if err != nil {
			return nil, fmt.Errorf("retention %q: ttl: %w", item, err)
		}
		out = append(out, RetentionRule{Pattern: strings.TrimSpace(pattern), Size: size, TTL: ttl})
	}
	return out, nil
}
