package cluster

import (
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"
)

// SentinelScheme and SentinelTLSScheme select Redis Sentinel mode in
// RedisConfig.URL:
//
//	redis+sentinel://[user:password@]host:26379[,host:26379...]/MASTER_NAME[?db=N]
//
// The hosts are sentinels; the user and password are those of the Redis
// servers (primary and replicas). Sentinels that require a password of
// their own take it as ?sentinel_password=...&sentinel_username=....
// rediss+sentinel:// uses TLS to the Redis servers and the sentinels.
// Other query parameters are go-redis failover options (dial_timeout=2s,
// ...); an unknown one is an error.
const (
	SentinelScheme    = "redis+sentinel"
	SentinelTLSScheme = "rediss+sentinel"
)

// IsSentinelURL reports whether u selects Redis Sentinel mode.
func IsSentinelURL(u string) bool {
	return strings.HasPrefix(u, SentinelScheme+"://") || strings.HasPrefix(u, SentinelTLSScheme+"://")
}

// redisURLForms is the list of accepted URL forms, for error messages.
const redisURLForms = "redis://[user:password@]host:port[/db], rediss://..., " +
	"redis+sentinel://[user:password@]host:26379[,host:26379...]/MASTER_NAME[?db=N], rediss+sentinel://..., " +
	"redis+cluster://host:port[,host:port...][?partitions=N] or rediss+cluster://..."

// CheckRedisURL parses u as NewRedis would, without connecting, and
// returns an error naming what was given (password hidden) and the
// accepted forms.
func CheckRedisURL(u string) error {
	var err error
	switch {
	case IsClusterURL(u):
		_, _, err = parseClusterURL(u)
	case IsSentinelURL(u):
		_, err = parseSentinelURL(u)
	case strings.HasPrefix(u, "redis://") || strings.HasPrefix(u, "rediss://"):
		_, err = redis.ParseURL(u)
	default:
		err = fmt.Errorf("unknown scheme")
	}
	if err != nil {
		return fmt.Errorf("redis URL %q: %w; want %s", redactRedisURL(u), err, redisURLForms)
	}
	return nil
}

// redactRedisURL hides the password of a URL (with or without several
// hosts) for messages.
func redactRedisURL(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	at := strings.LastIndexByte(rest[:end], '@')
	if at < 0 {
		return s
	}
	user, _, hasPw := strings.Cut(rest[:at], ":")
	if !hasPw {
		return s
	}
	return scheme + "://" + user + ":xxxxx" + rest[at:]
}

// parseSentinelURL parses a redis+sentinel:// URL (see SentinelScheme) into
// go-redis failover options.
func parseSentinelURL(raw string) (*redis.FailoverOptions, error) {
	scheme, rest, _ := strings.Cut(raw, "://")
	base := "redis"
	switch scheme {
	case SentinelScheme:
	case SentinelTLSScheme:
		base = "rediss"
	default:
		return nil, fmt.Errorf("not a %s:// URL", SentinelScheme)
	}
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	userinfo, hosts := "", authority
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		userinfo, hosts = authority[:i], authority[i+1:]
	}
	sentinels := strings.Split(hosts, ",")
	for i, s := range sentinels {
		if s == "" {
			return nil, fmt.Errorf("empty sentinel address in %q", hosts)
		}
		if _, _, err := net.SplitHostPort(s); err != nil {
			sentinels[i] = net.JoinHostPort(s, "26379")
		}
	}
	path, query, _ := strings.Cut(tail, "?")
	master := strings.Trim(path, "/")
	if master == "" || strings.Contains(master, "/") {
		return nil, fmt.Errorf("the path must be the master name (/MASTER_NAME), got %q", path)
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	if q.Has("master_name") || q.Has("addr") {
		return nil, fmt.Errorf("give the master name as the path and sentinels as the host list, not as master_name= or addr=")
	}
	sentUser, sentPass := q.Get("sentinel_username"), q.Get("sentinel_password")
	q.Del("sentinel_username")
	q.Del("sentinel_password")
	q.Set("master_name", master)
	for _, s := range sentinels[1:] {
		q.Add("addr", s)
	}
	// go-redis reads the userinfo as the sentinels' credentials; they are
	// the servers' here, so they go through the query (moved below).
	if userinfo != "" {
		ui, err := url.Parse("redis://" + userinfo + "@h")
		if err != nil {
			return nil, fmt.Errorf("user info: %w", err)
		}
		pw, _ := ui.User.Password()
		q.Set("username", ui.User.Username())
		q.Set("password", pw)
	}
	opts, err := redis.ParseFailoverURL(base + "://" + sentinels[0] + "/?" + q.Encode())
	if err != nil {
		return nil, err
	}
	opts.SentinelUsername, opts.SentinelPassword = sentUser, sentPass
	return opts, nil
}
