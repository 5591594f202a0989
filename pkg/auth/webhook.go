package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/bayeux-cluster/bayeux/pkg/broker"
	"github.com/bayeux-cluster/bayeux/pkg/broker/channel"
	"github.com/bayeux-cluster/bayeux/pkg/broker/protocol"
)

// DefaultWebhookTimeout bounds one webhook call.
const DefaultWebhookTimeout = 5 * time.Second

// DefaultWebhookHeaders are the request headers forwarded to the webhook.
var DefaultWebhookHeaders = []string{"Authorization", "Cookie", "Origin", "User-Agent", "X-Forwarded-For", "X-Real-Ip"}

// maxWebhookResponse bounds the webhook's response body.
const maxWebhookResponse = 1 << 20

// WebhookConfig configures NewWebhook.
type WebhookConfig struct {
	URL     string        // http:// or https:// endpoint (required)
	Timeout time.Duration // per call (default DefaultWebhookTimeout)
	Headers []string      // forwarded request headers (default DefaultWebhookHeaders)
	Client  *http.Client  // default: a dedicated client; redirects are never followed
	Logger  *slog.Logger  // default slog.Default()
}

// WebhookRequest is the JSON body POSTed to the webhook.
type WebhookRequest struct {
	Ext        json.RawMessage     `json:"ext"` // the handshake's ext, null when absent
	RemoteAddr string              `json:"remoteAddr"`
	Transport  string              `json:"transport"`
	Headers    map[string][]string `json:"headers"` // canonical names; only the configured subset
}

// WebhookResponse is the JSON body the webhook answers with status 200.
type WebhookResponse struct {
	Allow  bool           `json:"allow"`
	User   string         `json:"user"`
	Roles  []string       `json:"roles"`
	Claims map[string]any `json:"claims"`
	Grants []Grant        `json:"grants"`
}

// Webhook authenticates handshakes by asking an HTTP endpoint.
type Webhook struct {
	url     string
	timeout time.Duration
	headers []string
	client  *http.Client
	log     *slog.Logger
}

// NewWebhook validates cfg and returns the authenticator.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("webhook: %q is not an http(s) URL", cfg.URL)
	}
	w := &Webhook{url: cfg.URL, timeout: cfg.Timeout, headers: cfg.Headers, client: cfg.Client, log: cfg.Logger}
	if w.timeout <= 0 {
		w.timeout = DefaultWebhookTimeout
	}
	if w.headers == nil {
		w.headers = DefaultWebhookHeaders
	}
	if w.client == nil {
		w.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	c := *w.client // never follow redirects: a 3xx is an unavailable webhook
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	w.client = &c
	if w.log == nil {
		w.log = slog.Default()
	}
	return w, nil
}

// RequestHeaders lists the request headers forwarded to the webhook.
func (w *Webhook) RequestHeaders() []string { return w.headers }

// Close releases idle connections to the webhook.
func (w *Webhook) Close() { w.client.CloseIdleConnections() }

// Authenticate implements Authenticator. Status 200 with a valid body and
// "allow":true allows; 200 with "allow":false, or a 4xx status, denies with
// 403; anything else (unreachable, timeout, 5xx, 3xx, malformed body, allow
// without a user, invalid grant pattern) denies with 503 (fail closed).
func (w *Webhook) Authenticate(ctx context.Context, info broker.RequestInfo, m *protocol.Message) (*Identity, *protocol.Error) {
	req := WebhookRequest{Ext: m.Ext, RemoteAddr: info.RemoteAddr, Transport: info.Transport, Headers: map[string][]string{}}
	if len(req.Ext) == 0 || !json.Valid(req.Ext) {
		req.Ext = json.RawMessage("null")
	}
	for _, h := range w.headers {
		if v := info.Header.Values(h); len(v) > 0 {
			req.Headers[http.CanonicalHeaderKey(h)] = v
		}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, w.unavailable(info, err)
	}
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return nil, w.unavailable(info, err)
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Accept", "application/json")
	resp, err := w.client.Do(hr)
	if err != nil {
		return nil, w.unavailable(info, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxWebhookResponse+1))
	if err != nil {
		return nil, w.unavailable(info, err)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		w.log.Debug("webhook denied", "remote", info.RemoteAddr, "status", resp.StatusCode)
		return nil, errAuthFailed
	default:
		return nil, w.unavailable(info, fmt.Errorf("status %d", resp.StatusCode))
	}
	if len(raw) > maxWebhookResponse {
		return nil, w.unavailable(info, errors.New("response too large"))
	}
	var out WebhookResponse
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, w.unavailable(info, fmt.Errorf("response: %w", err))
	}
	if !out.Allow {
		w.log.Debug("webhook denied", "remote", info.RemoteAddr)
		return nil, errAuthFailed
	}
	if out.User == "" {
		return nil, w.unavailable(info, errors.New("allow without a user"))
	}
	for _, g := range out.Grants {
		if _, _, err := channel.Parse(g.Pattern); err != nil {
			return nil, w.unavailable(info, fmt.Errorf("grant pattern %q: %w", g.Pattern, err))
		}
	}
	return &Identity{User: out.User, Roles: out.Roles, Claims: out.Claims, Grants: out.Grants}, nil
}

func (w *Webhook) unavailable(info broker.RequestInfo, err error) *protocol.Error {
	w.log.Warn("auth webhook failed: denying handshake", "remote", info.RemoteAddr, "err", err)
	return errUnavailable
}
