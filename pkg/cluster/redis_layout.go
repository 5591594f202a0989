package cluster

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Key layout.
//
// Single instance ("redis://"): a channel's keys are hash-tagged with the
// channel name, "bx:{/a/b}:m" (meta hash: epoch, last offset) and
// "bx:{/a/b}:h" (history stream), and the node subscribes to the classic
// pub/sub channels "bx:s:/a/b" and "bx:s:/a/*".
//
// Redis Cluster ("redis+cluster://"): the channel space is cut into a fixed
// number of partitions (default 64). A channel's partition is FNV-1a of its
// name modulo the partition count; every partition has a hash tag chosen
// so that the partitions' slots are spread evenly over the 16384 slots.
// All keys and shard channels of a partition carry its tag, so they live on
// the one shard that owns the slot:
//
//	bx:{P7.3}:m:/a/b   meta hash
//	bx:{P7.3}:h:/a/b   history stream
//	bx:{P7.3}:s:/a/b   shard channel of the concrete channel
//	bx:{P7.3}:s:/a/*   shard channel of a wildcard pattern, for channels
//	                   of partition 7 only
//
// The publish script therefore runs on one shard and SPUBLISHes to the
// channel and to every wildcard pattern that could match it within the
// same slot. A node subscribes a concrete channel on its partition only,
// and a wildcard pattern on every partition (once per node, whatever the
// number of its clients). The partition count and the hash are part of
// the on-Redis format: every node of a cluster must use the same count
// (changing it starts every channel on a new epoch: subscribers are told
// of the gap).
type layout interface {
	metaKey(ch string) string
	streamKey(ch string) string
	// psChan is the pub/sub (or shard) channel of pattern in partition p.
	psChan(p int, pattern string) string
	// partition of a concrete channel, in [0, partitions()).
	partition(ch string) int
	partitions() int
	// metaMatch is the SCAN MATCH glob of the meta keys of channels whose
	// name starts with prefix (already glob-escaped); metaName inverts a
	// meta key into its channel name ("" if the key is not a meta key).
	metaMatch(escapedPrefix string) string
	metaName(key string) string
}

// singleLayout is the single-instance key layout (see layout).
type singleLayout struct{ prefix string }

func (l singleLayout) metaKey(ch string) string        { return l.prefix + ":{" + ch + "}:m" }
func (l singleLayout) streamKey(ch string) string      { return l.prefix + ":{" + ch + "}:h" }
func (l singleLayout) psChan(_ int, pat string) string { return l.prefix + ":s:" + pat }
func (l singleLayout) partition(string) int            { return 0 }
func (l singleLayout) partitions() int                 { return 1 }
func (l singleLayout) metaMatch(p string) string       { return l.prefix + ":{" + p + "*}:m" }
func (l singleLayout) metaName(key string) string {
	rest, ok := strings.CutPrefix(key, l.prefix+":{")
	if !ok {
		return ""
	}
	name, ok := strings.CutSuffix(rest, "}:m")
	if !ok {
		return ""
	}
	return name
}

// clusterLayout is the Redis Cluster key layout (see layout).
type clusterLayout struct {
	prefix string
	// heads[p] is "bx:{tag}:" for partition p.
	heads []string
}

// maxPartitions bounds the partition count: each partition is one pub/sub
// connection per node.
const maxPartitions = 1024

func newClusterLayout(prefix string, n int) clusterLayout {
	l := clusterLayout{prefix: prefix, heads: make([]string, n)}
	for p := range n {
		l.heads[p] = prefix + ":{" + partitionTag(p, n) + "}:"
	}
	return l
}

// partitionTag returns the hash tag of partition p of n: the first string
// "P<p>.<i>" whose slot falls in the p-th of n equal slot ranges, so that
// the partitions spread evenly over shards that own contiguous ranges (as
// `redis-cli --cluster create` assigns them).
func partitionTag(p, n int) string {
	lo, hi := p*16384/n, (p+1)*16384/n
	for i := 0; ; i++ {
		tag := "P" + strconv.Itoa(p) + "." + strconv.Itoa(i)
		if s := int(crc16([]byte(tag)) % 16384); s >= lo && s < hi {
			return tag
		}
	}
}

func (l clusterLayout) partition(ch string) int {
	h := uint32(2166136261)
	for i := 0; i < len(ch); i++ {
		h ^= uint32(ch[i])
		h *= 16777619
	}
	return int(h % uint32(len(l.heads)))
}
func (l clusterLayout) partitions() int { return len(l.heads) }
func (l clusterLayout) metaKey(ch string) string {
	return l.heads[l.partition(ch)] + "m:" + ch
}
func (l clusterLayout) streamKey(ch string) string {
	return l.heads[l.partition(ch)] + "h:" + ch
}
func (l clusterLayout) psChan(p int, pat string) string { return l.heads[p] + "s:" + pat }
func (l clusterLayout) metaMatch(p string) string       { return l.prefix + ":{*}:m:" + p + "*" }
func (l clusterLayout) metaName(key string) string {
	rest, ok := strings.CutPrefix(key, l.prefix+":{")
	if !ok {
		return ""
	}
	_, name, ok := strings.Cut(rest, "}:m:")
	if !ok {
		return ""
	}
	return name
}

// crc16 is CRC-16/XMODEM, the hash of Redis Cluster's key slots.
func crc16(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc ^= uint16(c) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// ClusterScheme and ClusterTLSScheme select Redis Cluster mode in
// RedisConfig.URL: "redis+cluster://[user:pass@]host:port[,host:port...][/?partitions=N]".
const (
	ClusterScheme    = "redis+cluster"
	ClusterTLSScheme = "rediss+cluster"
)

// IsClusterURL reports whether u selects Redis Cluster mode.
func IsClusterURL(u string) bool {
	return strings.HasPrefix(u, ClusterScheme+"://") || strings.HasPrefix(u, ClusterTLSScheme+"://")
}

// parseClusterURL parses a redis+cluster:// URL into go-redis cluster
// options and the partition count (default 64). Every listed host is a
// seed; the rest of the topology is discovered.
func parseClusterURL(raw string) (*redis.ClusterOptions, int, error) {
	scheme, rest, _ := strings.Cut(raw, "://")
	base := "redis"
	if scheme == ClusterTLSScheme {
		base = "rediss"
	} else if scheme != ClusterScheme {
		return nil, 0, fmt.Errorf("not a %s:// URL", ClusterScheme)
	}
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	userinfo, hosts := "", authority
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		userinfo, hosts = authority[:i+1], authority[i+1:]
	}
	seeds := strings.Split(hosts, ",")
	for _, s := range seeds {
		if s == "" {
			return nil, 0, fmt.Errorf("empty seed address in %q", hosts)
		}
	}
	path, query, _ := strings.Cut(tail, "?")
	if path != "" && path != "/" {
		return nil, 0, fmt.Errorf("cluster URL path %q: Redis Cluster has only database 0", path)
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, 0, fmt.Errorf("cluster URL query: %w", err)
	}
	parts := 64
	if v := q.Get("partitions"); v != "" {
		parts, err = strconv.Atoi(v)
		if err != nil || parts < 1 || parts > maxPartitions {
			return nil, 0, fmt.Errorf("partitions=%q: want 1..%d", v, maxPartitions)
		}
	}
	q.Del("partitions")
	for _, s := range seeds[1:] {
		q.Add("addr", s)
	}
	u := base + "://" + userinfo + seeds[0]
	if enc := q.Encode(); enc != "" {
		u += "?" + enc
	}
	opts, err := redis.ParseClusterURL(u)
	if err != nil {
		return nil, 0, fmt.Errorf("cluster URL: %w", err)
	}
	return opts, parts, nil
}
