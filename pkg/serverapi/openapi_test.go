package serverapi

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
)

type openAPIDoc struct {
	OpenAPI string                                `json:"openapi"`
	Paths   map[string]map[string]json.RawMessage `json:"paths"`
	Comps   struct {
		Schemas map[string]struct {
			Properties map[string]json.RawMessage `json:"properties"`
			Required   []string                   `json:"required"`
		} `json:"schemas"`
	} `json:"components"`
}

// TestOpenAPIMatchesHandlers checks the committed document against the
// handler: the same calls, and each body schema has the JSON fields of
// its Go type.
func TestOpenAPIMatchesHandlers(t *testing.T) {
	var doc openAPIDoc
	if err := json.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q, want 3.x", doc.OpenAPI)
	}
	h := NewHandler(HandlerConfig{})
	want := map[string]bool{"GET /api/v1/openapi.json": true}
	for _, rt := range h.routes() {
		want[rt.method+" "+rt.path] = true
	}
	got := map[string]bool{}
	for p, ops := range doc.Paths {
		for m := range ops {
			got[strings.ToUpper(m)+" "+p] = true
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("documented calls %v\nhandler calls %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
	}
	types := map[string]any{
		"Error": Error{}, "PublishRequest": PublishRequest{}, "PublishResult": PublishResult{},
		"BroadcastRequest": BroadcastRequest{}, "BroadcastResult": BroadcastResult{},
		"ChannelInfo": ChannelInfo{}, "ChannelsResult": ChannelsResult{}, "SessionInfo": SessionInfo{},
		"PresenceResult": PresenceResult{}, "HistoryMessage": HistoryMessage{}, "HistoryResult": HistoryResult{},
		"DisconnectRequest": DisconnectRequest{}, "DisconnectResult": DisconnectResult{},
		"UnsubscribeRequest": UnsubscribeRequest{}, "UnsubscribeResult": UnsubscribeResult{},
		"NodeInfo": NodeInfo{}, "NodesResult": NodesResult{}, "ErrorBody": errorBody{},
	}
	for name, v := range types {
		s, ok := doc.Comps.Schemas[name]
		if !ok {
			t.Errorf("schema %s missing", name)
			continue
		}
		fields := jsonFields(reflect.TypeOf(v))
		if props := slices.Sorted(maps.Keys(s.Properties)); !slices.Equal(props, fields) {
			t.Errorf("schema %s properties %v, Go type fields %v", name, props, fields)
		}
		for _, r := range s.Required {
			if !slices.Contains(fields, r) {
				t.Errorf("schema %s requires %q, not a field", name, r)
			}
		}
	}
	if len(doc.Comps.Schemas) != len(types) {
		t.Errorf("%d schemas documented, %d checked: add the new ones to this test", len(doc.Comps.Schemas), len(types))
	}
}

func jsonFields(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}
