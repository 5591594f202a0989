package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// Meta channel names.
const (
	ChannelHandshake   = "/meta/handshake"
	ChannelConnect     = "/meta/connect"
	ChannelSubscribe   = "/meta/subscribe"
	ChannelUnsubscribe = "/meta/unsubscribe"
	ChannelDisconnect  = "/meta/disconnect"
)

// Connection types.
const (
	LongPolling     = "long-polling"
	CallbackPolling = "callback-polling"
	WebSocket       = "websocket"
)

// Version is the Bayeux protocol version this server speaks.
const Version = "1.0"

// Message is one decoded incoming Bayeux message. Fields whose shape varies
// between clients (id, data, ext) stay raw JSON and are echoed verbatim.
type Message struct {
	Channel                  string          `json:"channel"`
	ID                       json.RawMessage `json:"id,omitempty"`
	ClientID                 string          `json:"clientId,omitempty"`
	Data                     json.RawMessage `json:"data,omitempty"`
	Ext                      json.RawMessage `json:"ext,omitempty"`
	Advice                   *Advice         `json:"advice,omitempty"`
	Version                  string          `json:"version,omitempty"`
	MinimumVersion           string          `json:"minimumVersion,omitempty"`
	SupportedConnectionTypes []string        `json:"supportedConnectionTypes,omitempty"`
	ConnectionType           string          `json:"connectionType,omitempty"`
	Subscription             Subscription    `json:"subscription,omitempty"`

	// Invalid is set by the decoder when the message could not be decoded
	// completely (wrong field types, not an object, too large). The broker
	// answers such a message with this error and does not act on it.
	Invalid *Error `json:"-"`
	// Received is when the transport received the message (set by the
	// broker; used by the timesync extension).
	Received time.Time `json:"-"`

	ext map[string]json.RawMessage // lazily decoded Ext
}

// ExtField returns the raw value of ext[name], or nil when absent or when ext
// is not an object.
func (m *Message) ExtField(name string) json.RawMessage {
	if len(m.Ext) == 0 {
		return nil
	}
	if m.ext == nil {
		m.ext = map[string]json.RawMessage{}
		if err := json.Unmarshal(m.Ext, &m.ext); err != nil {
			return nil
		}
	}
	return m.ext[name]
}

// IsMeta reports whether the message is on a /meta/ channel.
func (m *Message) IsMeta() bool { return IsMeta(m.Channel) }

// IsMeta reports whether channel is under /meta/.
func IsMeta(channel string) bool {
	return len(channel) >= 6 && channel[:6] == "/meta/"
}

// IsService reports whether channel is under /service/.
func IsService(channel string) bool {
	return len(channel) >= 9 && channel[:9] == "/service/"
}

// Subscription is the subscription field: a single channel name or an array
// of names. It is encoded back in the form it arrived in.
type Subscription struct {
	Names []string
	Array bool
}

// UnmarshalJSON accepts a string or an array of strings.
func (s *Subscription) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*s = Subscription{} // null is absent, as for every other field
		return nil
	}
	if len(b) > 0 && b[0] == '[' {
		s.Array = true
		return json.Unmarshal(b, &s.Names)
	}
	var one string
	if err := json.Unmarshal(b, &one); err != nil {
		return err
	}
	s.Names = []string{one}
	return nil
}

// MarshalJSON writes a string or an array, as it arrived.
func (s Subscription) MarshalJSON() ([]byte, error) {
	if !s.Array && len(s.Names) == 1 {
		return json.Marshal(s.Names[0])
	}
	if s.Names == nil {
		return []byte("[]"), nil
	}
	return json.Marshal(s.Names)
}

// IsZero lets omitempty drop an absent subscription.
func (s Subscription) IsZero() bool { return s.Names == nil && !s.Array }

// Advice is the advice field, both in requests (a client may propose a
// timeout) and in replies.
type Advice struct {
	Reconnect       string   `json:"reconnect,omitempty"`
	Interval        *int64   `json:"interval,omitempty"`
	Timeout         *int64   `json:"timeout,omitempty"`
	MaxInterval     *int64   `json:"maxInterval,omitempty"`
	MultipleClients bool     `json:"multiple-clients,omitempty"`
	Hosts           []string `json:"hosts,omitempty"`
}

// Reconnect advice values.
const (
	ReconnectRetry     = "retry"
	ReconnectHandshake = "handshake"
	ReconnectNone      = "none"
)

// Int64 returns a pointer to v, for Advice fields.
func Int64(v int64) *int64 { return &v }

// Reply is an outgoing meta, service or publish-acknowledgement message.
// Ext is an object built by the extensions; nil means absent.
type Reply struct {
	Channel                  string          `json:"channel"`
	ID                       json.RawMessage `json:"id,omitempty"`
	ClientID                 string          `json:"clientId,omitempty"`
	Successful               *bool           `json:"successful,omitempty"`
	Error                    string          `json:"error,omitempty"`
	Version                  string          `json:"version,omitempty"`
	SupportedConnectionTypes []string        `json:"supportedConnectionTypes,omitempty"`
	Subscription             *Subscription   `json:"subscription,omitempty"`
	Advice                   *Advice         `json:"advice,omitempty"`
	Data                     json.RawMessage `json:"data,omitempty"`
	Ext                      map[string]any  `json:"ext,omitempty"`

	code int // of the Error set by Fail (not encoded)
}

// SetExt sets ext[name] = v, creating the map.
func (r *Reply) SetExt(name string, v any) {
	if r.Ext == nil {
		r.Ext = make(map[string]any, 2)
	}
	r.Ext[name] = v
}

var (
	trueVal  = true
	falseVal = false
)

// Succeed marks the reply successful.
func (r *Reply) Succeed() { r.Successful = &trueVal; r.Error = "" }

// Fail marks the reply failed with err.
func (r *Reply) Fail(err *Error) {
	r.Successful, r.Error, r.code = &falseVal, err.String(), err.Code
}

// ErrorCode returns the Bayeux code of a failed reply's error: the one
// Fail set, or, for an error written into Error directly (an extension),
// its leading three digits; 0 if there is none.
func (r *Reply) ErrorCode() int {
	if r.code != 0 {
		return r.code
	}
	s := r.Error
	if len(s) < 3 {
		return 0
	}
	n := 0
	for i := 0; i < 3; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// OK reports whether the reply is marked successful.
func (r *Reply) OK() bool { return r.Successful != nil && *r.Successful }

// ReplyTo starts a reply to m, echoing its channel and id.
func ReplyTo(m *Message) *Reply {
	return &Reply{Channel: m.Channel, ID: m.ID}
}

// String is for logs and test failures.
func (m *Message) String() string {
	return fmt.Sprintf("{channel:%q clientId:%q id:%s}", m.Channel, m.ClientID, m.ID)
}
