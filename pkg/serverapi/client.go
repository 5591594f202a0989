package serverapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Client calls the HTTP API of a node. It is safe for concurrent use.
//
//	c := serverapi.NewClient("http://bayeux:8081", key, nil)
//	res, err := c.Publish(ctx, "/orders/42", map[string]any{"status": "shipped"})
//
// A refused call returns a *Error (with its HTTP Status).
type Client struct {
	base string
	key  string
	hc   *http.Client
}

// NewClient returns a client of the API at baseURL (scheme://host:port)
// calling with key. hc nil means http.DefaultClient.
func NewClient(baseURL, key string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimSuffix(baseURL, "/"), key: key, hc: hc}
}

// maxResponse bounds a response body the client reads.
const maxResponse = 64 << 20

func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("serverapi: encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	u := c.base + "/api/v1/" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("serverapi: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("serverapi: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("serverapi: %s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		if json.Unmarshal(raw, &eb) != nil || eb.Error == nil {
			return &Error{Code: "http_" + strconv.Itoa(resp.StatusCode), Message: strings.TrimSpace(string(raw)), Status: resp.StatusCode}
		}
		eb.Error.Status = resp.StatusCode
		return eb.Error
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("serverapi: %s %s: decode response: %w", method, path, err)
	}
	return nil
}

// IsCode reports whether err is an API error with code (e.g. CodeNotFound).
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

func jsonData(data any) (json.RawMessage, error) {
	if raw, ok := data.(json.RawMessage); ok {
		return raw, nil
	}
	b, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("serverapi: encode data: %w", err)
	}
	return b, nil
}

// Publish publishes data (any JSON-encodable value, or a json.RawMessage)
// on channel.
func (c *Client) Publish(ctx context.Context, channel string, data any) (PublishResult, error) {
	raw, err := jsonData(data)
	if err != nil {
		return PublishResult{}, err
	}
	var out PublishResult
	err = c.do(ctx, http.MethodPost, "publish", nil, PublishRequest{Channel: channel, Data: raw}, &out)
	return out, err
}

// Broadcast publishes data on each channel.
func (c *Client) Broadcast(ctx context.Context, channels []string, data any) (BroadcastResult, error) {
	raw, err := jsonData(data)
	if err != nil {
		return BroadcastResult{}, err
	}
	var out BroadcastResult
	err = c.do(ctx, http.MethodPost, "broadcast", nil, BroadcastRequest{Channels: channels, Data: raw}, &out)
	return out, err
}

// Channels lists the subscriptions in use matching pattern ("" for all).
func (c *Client) Channels(ctx context.Context, pattern string) (ChannelsResult, error) {
	q := url.Values{}
	if pattern != "" {
		q.Set("pattern", pattern)
	}
	var out ChannelsResult
	err := c.do(ctx, http.MethodGet, "channels", q, nil, &out)
	return out, err
}

// Presence lists the sessions subscribed to channel.
func (c *Client) Presence(ctx context.Context, channel string) (PresenceResult, error) {
	var out PresenceResult
	err := c.do(ctx, http.MethodGet, "presence", url.Values{"channel": {channel}}, nil, &out)
	return out, err
}

// History returns up to limit messages of channel after replay id since
// (since < 0: from the oldest retained; limit 0: the server's default).
func (c *Client) History(ctx context.Context, channel string, since int64, limit int) (HistoryResult, error) {
	q := url.Values{"channel": {channel}}
	if since >= 0 {
		q.Set("since", strconv.FormatInt(since, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out HistoryResult
	err := c.do(ctx, http.MethodGet, "history", q, nil, &out)
	return out, err
}

// Disconnect ends the session req.ClientID or every session of req.User.
func (c *Client) Disconnect(ctx context.Context, req DisconnectRequest) (DisconnectResult, error) {
	var out DisconnectResult
	err := c.do(ctx, http.MethodPost, "disconnect", nil, req, &out)
	return out, err
}

// Unsubscribe removes clientID's subscription to channel.
func (c *Client) Unsubscribe(ctx context.Context, clientID, channel string) (UnsubscribeResult, error) {
	var out UnsubscribeResult
	err := c.do(ctx, http.MethodPost, "unsubscribe", nil, UnsubscribeRequest{ClientID: clientID, Channel: channel}, &out)
	return out, err
}

// Nodes describes the live nodes.
func (c *Client) Nodes(ctx context.Context) (NodesResult, error) {
	var out NodesResult
	err := c.do(ctx, http.MethodGet, "nodes", nil, nil, &out)
	return out, err
}
