package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	serverv1 "github.com/bayeux-cluster/bayeux/api/proto/server/v1"
	"github.com/bayeux-cluster/bayeux/internal/bayeuxtest"
	"github.com/bayeux-cluster/bayeux/internal/testproc"
	"github.com/bayeux-cluster/bayeux/pkg/serverapi"
)

const (
	apiKey1 = "first-api-key-0123456789"
	apiKey2 = "rotated-api-key-0123456789"
)

// apiCluster starts three nodes behind the balancer with a server API key
// file and returns the cluster, the key file and a client per node.
func apiCluster(t *testing.T) (*testproc.Cluster, string, []*serverapi.Client) {
	t.Helper()
	keyFile := filepath.Join(t.TempDir(), "api-keys")
	if err := os.WriteFile(keyFile, []byte("# test keys\n"+apiKey1+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := testproc.StartCluster(t, 3, "--api-key-file", keyFile)
	var clients []*serverapi.Client
	for _, n := range c.Nodes {
		if n.API == "" {
			t.Fatalf("node %s printed no API address", n.URL)
		}
		clients = append(clients, serverapi.NewClient(n.API, apiKey1, &http.Client{Timeout: 20 * time.Second}))
	}
	return c, keyFile, clients
}

// nodeIDs returns the id of each node (by index), as the API names them.
func nodeIDs(t *testing.T, clients []*serverapi.Client) []string {
	t.Helper()
	var ids []string
	for _, c := range clients {
		r, err := c.Nodes(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.Self)
	}
	return ids
}

// TestServerAPICluster drives the server API of three nodes with
// subscribers owned by each node: publish from every node in channel
// order, broadcast, channels and presence across nodes, history pages and
// replay, disconnect and unsubscribe of sessions owned by another node.
func TestServerAPICluster(t *testing.T) {
	c, _, clients := apiCluster(t)
	f := &apiClusterFixture{c: c, clients: clients, ids: nodeIDs(t, clients), ch: "/api/orders"}
	for _, n := range c.Nodes { // one subscriber owned by each node, one through the balancer
		f.subs = append(f.subs, newRawSubscriber(t, n.URL, "long-polling", f.ch))
	}
	f.subs = append(f.subs, newRawSubscriber(t, c.URL(), "websocket", f.ch, "/api/other"))
	t.Run("presence and channels span the nodes", f.presenceAndChannels)
	t.Run("publish from every node reaches every subscriber in order", f.publishInOrder)
	t.Run("broadcast", f.broadcast)
	t.Run("history pages and replay", f.historyAndReplay)
	t.Run("unsubscribe reaches the owner", f.unsubscribe)
	t.Run("disconnect reaches the owner and tells the client", f.disconnect)
}

// apiClusterFixture is the cluster of TestServerAPICluster, its API
// clients and node ids (by node index), the channel, and its subscribers:
// one owned by each node (long-polling) and one through the balancer
// (websocket, also on /api/other).
type apiClusterFixture struct {
	c       *testproc.Cluster
	clients []*serverapi.Client
	ids     []string
	ch      string
	subs    []*rawSubscriber
}

// apiPerNode is how many publishes publishInOrder makes through each node.
const apiPerNode = 20

// presenceAndChannels: presence and channels span the nodes.
func (f *apiClusterFixture) presenceAndChannels(t *testing.T) {
	ctx, ids, ch, subs, clients := context.Background(), f.ids, f.ch, f.subs, f.clients
	for i, cl := range clients {
		p, err := cl.Presence(ctx, ch)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		nodes := map[string]bool{}
		for _, s := range p.Sessions {
			got = append(got, s.ClientID)
			nodes[s.Node] = true
		}
		for j, s := range subs {
			if !slices.Contains(got, s.id) {
				t.Errorf("presence via node %d lacks subscriber %d (%s): %v", i, j, s.id, p.Sessions)
			}
		}
		for _, id := range ids {
			if !nodes[id] {
				t.Errorf("presence via node %d has no session of node %s: %v", i, id, p.Sessions)
			}
		}
		chs, err := cl.Channels(ctx, "/api/**")
		if err != nil {
			t.Fatal(err)
		}
		want := []serverapi.ChannelInfo{{Channel: "/api/orders", Subscribers: 4}, {Channel: "/api/other", Subscribers: 1}}
		if !slices.Equal(chs.Channels, want) {
			t.Errorf("channels via node %d: %v, want %v", i, chs.Channels, want)
		}
	}
}

// publishInOrder: publish from every node reaches every subscriber in order.
func (f *apiClusterFixture) publishInOrder(t *testing.T) {
	ctx, ch, subs, clients := context.Background(), f.ch, f.subs, f.clients
	var want []string
	for i := range apiPerNode * len(clients) {
		data := fmt.Sprintf(`{"n":%d}`, i)
		r, err := clients[i%len(clients)].Publish(ctx, ch, json.RawMessage(data))
		if err != nil {
			t.Fatal(err)
		}
		if r.ReplayID != int64(i+1) {
			t.Fatalf("publish %d: replay id %d, want %d", i, r.ReplayID, i+1)
		}
		want = append(want, data)
	}
	waitReceived(t, subs, len(want), 20*time.Second)
	for i, s := range subs {
		got, errStr := s.received()
		if errStr != "" || !slices.Equal(got, want) {
			t.Errorf("subscriber %d: error %q, got %d messages %v", i, errStr, len(got), head(got))
		}
	}
}

// broadcast: one call publishes on several channels; a meta channel fails alone.
func (f *apiClusterFixture) broadcast(t *testing.T) {
	ctx, ch, subs, clients := context.Background(), f.ch, f.subs, f.clients
	r, err := clients[1].Broadcast(ctx, []string{ch, "/api/other", "/meta/nope"}, map[string]string{"b": "x"})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Results) != 3 || r.Results[0].Error != nil || r.Results[1].Error != nil || r.Results[2].Error == nil {
		t.Fatalf("broadcast results %+v", r.Results)
	}
	waitReceived(t, subs, apiPerNode*len(clients)+1, 10*time.Second)
	ws := subs[len(subs)-1]
	bayeuxtest.Eventually(t, 10*time.Second, func() error {
		got, _ := ws.received()
		if n := strings.Count(strings.Join(got, ""), `{"b":"x"}`); n != 2 {
			return fmt.Errorf("websocket subscriber of both channels has %d broadcast copies", n)
		}
		return nil
	})
}

// historyAndReplay: history pages and replay.
func (f *apiClusterFixture) historyAndReplay(t *testing.T) {
	c, ctx, ch, clients := f.c, context.Background(), f.ch, f.clients
	var all []serverapi.HistoryMessage
	since := int64(-1)
	for page := 0; ; page++ {
		h, err := clients[page%3].History(ctx, ch, since, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(h.Messages) == 0 {
			break
		}
		all = append(all, h.Messages...)
		since = h.Messages[len(h.Messages)-1].ReplayID
	}
	if len(all) != apiPerNode*3+1 {
		t.Fatalf("history has %d messages, want %d", len(all), apiPerNode*3+1)
	}
	for i, m := range all {
		if m.ReplayID != int64(i+1) {
			t.Fatalf("history message %d has replay id %d", i, m.ReplayID)
		}
	}
	// A replay subscription (on another node) accepts an id from the
	// history and delivers what follows it, with those ids.
	p := &bayeuxtest.Peer{T: t, URL: c.Nodes[2].URL}
	id := p.Handshake(bayeuxtest.Msg{"replay": true})
	after := all[len(all)-5].ReplayID
	p.MustSucceed(bayeuxtest.Msg{"channel": "/meta/subscribe", "clientId": id, "subscription": ch,
		"ext": bayeuxtest.Msg{"replay": bayeuxtest.Msg{ch: after}}})
	var ids []int64
	bayeuxtest.Eventually(t, 10*time.Second, func() error {
		d, _ := bayeuxtest.Split(p.Connect(id, nil))
		for _, m := range d {
			ext, _ := m["ext"].(map[string]any)
			f, _ := ext["replay"].(float64)
			ids = append(ids, int64(f))
		}
		if len(ids) < 4 {
			return fmt.Errorf("replayed ids %v", ids)
		}
		return nil
	})
	if want := []int64{after + 1, after + 2, after + 3, after + 4}; !slices.Equal(ids, want) {
		t.Errorf("replayed ids %v, want %v", ids, want)
	}
}

// unsubscribe: unsubscribe reaches the owner.
func (f *apiClusterFixture) unsubscribe(t *testing.T) {
	ctx, ch, subs, clients := context.Background(), f.ch, f.subs, f.clients
	target := subs[0] // owned by node 0; asked through node 2
	r, err := clients[2].Unsubscribe(ctx, target.id, ch)
	if err != nil || !r.Unsubscribed {
		t.Fatalf("unsubscribe: %+v %v", r, err)
	}
	before, _ := target.received()
	if _, err := clients[1].Publish(ctx, ch, json.RawMessage(`"after-unsubscribe"`)); err != nil {
		t.Fatal(err)
	}
	waitReceived(t, subs[1:], len(before)+1, 10*time.Second)
	if got, _ := target.received(); len(got) != len(before) {
		t.Errorf("unsubscribed session still received %v", got[len(before):])
	}
	if _, err := clients[0].Unsubscribe(ctx, target.id, ch); !serverapi.IsCode(err, serverapi.CodeNotFound) {
		t.Errorf("second unsubscribe: %v, want not_found", err)
	}
}

// disconnect: disconnect reaches the owner and tells the client.
func (f *apiClusterFixture) disconnect(t *testing.T) {
	c, ctx, clients := f.c, context.Background(), f.clients
	for _, tc := range []struct {
		reconnect bool
		advice    string
		wantOK    bool
	}{{true, "handshake", false}, {false, "none", false}} {
		p := &bayeuxtest.Peer{T: t, URL: c.Nodes[0].URL}
		id := p.Handshake(nil)
		held := make(chan []bayeuxtest.Msg, 1)
		go func() { held <- p.Connect(id, nil) }()
		waitHeld(t, c.Nodes[0], id)
		req := serverapi.DisconnectRequest{ClientID: id}
		if !tc.reconnect {
			req.Reconnect = &tc.reconnect
		}
		r, err := clients[1].Disconnect(ctx, req)
		if err != nil || !slices.Equal(r.Disconnected, []string{id}) {
			t.Fatalf("disconnect: %+v %v", r, err)
		}
		var reply []bayeuxtest.Msg
		select {
		case reply = <-held:
		case <-time.After(10 * time.Second):
			t.Fatal("held connect not answered after disconnect")
		}
		if advice, _ := find(reply, "/meta/connect")["advice"].(map[string]any); advice["reconnect"] != tc.advice {
			t.Errorf("reconnect=%v: connect reply %v, want advice %q", tc.reconnect, reply, tc.advice)
		}
		next := p.Connect(id, nil) // the client's next request learns the same
		if advice, _ := find(next, "/meta/connect")["advice"].(map[string]any); advice["reconnect"] != tc.advice {
			t.Errorf("reconnect=%v: next connect %v, want advice %q", tc.reconnect, next, tc.advice)
		}
	}
	if _, err := clients[0].Disconnect(ctx, serverapi.DisconnectRequest{ClientID: "nobody"}); !serverapi.IsCode(err, serverapi.CodeNotFound) {
		t.Errorf("disconnect of an unknown session: %v, want not_found", err)
	}
}

// TestServerAPIGRPC runs the same operations through the gRPC service
// bayeux.server.v1.ServerAPI of one node, on sessions owned by others.
func TestServerAPIGRPC(t *testing.T) {
	c, _, _ := apiCluster(t)
	conn, err := grpc.NewClient(strings.TrimPrefix(c.Nodes[2].API, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	g := serverv1.NewServerAPIClient(conn)
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+apiKey1), 60*time.Second)
	defer cancel()
	ch := "/grpc/room"
	subs := []*rawSubscriber{newRawSubscriber(t, c.Nodes[0].URL, "long-polling", ch), newRawSubscriber(t, c.Nodes[1].URL, "websocket", ch)}

	p, err := g.Presence(ctx, &serverv1.PresenceRequest{Channel: ch})
	if err != nil || len(p.GetSessions()) != 2 || p.GetSessions()[0].GetNode() == p.GetSessions()[1].GetNode() {
		t.Fatalf("presence: %v %v", p, err)
	}
	chs, err := g.Channels(ctx, &serverv1.ChannelsRequest{Pattern: "/grpc/*"})
	if err != nil || len(chs.GetChannels()) != 1 || chs.GetChannels()[0].GetSubscribers() != 2 {
		t.Fatalf("channels: %v %v", chs, err)
	}
	var want []string
	for i := range 10 {
		data := fmt.Sprintf(`{"g":%d}`, i)
		r, err := g.Publish(ctx, &serverv1.PublishRequest{Channel: ch, Data: []byte(data)})
		if err != nil || r.GetReplayId() != int64(i+1) {
			t.Fatalf("publish %d: %v %v", i, r, err)
		}
		want = append(want, data)
	}
	b, err := g.Broadcast(ctx, &serverv1.BroadcastRequest{Channels: []string{ch}, Data: []byte(`{"g":"b"}`)})
	if err != nil || len(b.GetResults()) != 1 || b.GetResults()[0].GetErrorCode() != "" {
		t.Fatalf("broadcast: %v %v", b, err)
	}
	want = append(want, `{"g":"b"}`)
	waitReceived(t, subs, len(want), 20*time.Second)
	for i, s := range subs {
		if got, e := s.received(); e != "" || !slices.Equal(got, want) {
			t.Errorf("subscriber %d: %q %v", i, e, got)
		}
	}
	since := int64(8)
	h, err := g.History(ctx, &serverv1.HistoryRequest{Channel: ch, Since: &since, Limit: 2})
	if err != nil || len(h.GetMessages()) != 2 || h.GetMessages()[0].GetReplayId() != 9 || string(h.GetMessages()[0].GetData()) != `{"g":8}` {
		t.Fatalf("history: %v %v", h, err)
	}
	u, err := g.Unsubscribe(ctx, &serverv1.UnsubscribeRequest{ClientId: subs[0].id, Channel: ch})
	if err != nil || !u.GetUnsubscribed() {
		t.Fatalf("unsubscribe: %v %v", u, err)
	}
	d, err := g.Disconnect(ctx, &serverv1.DisconnectRequest{ClientId: subs[1].id})
	if err != nil || !slices.Equal(d.GetDisconnected(), []string{subs[1].id}) {
		t.Fatalf("disconnect: %v %v", d, err)
	}
	bayeuxtest.Eventually(t, 10*time.Second, func() error {
		if _, e := subs[1].received(); !strings.Contains(e, "402") {
			return fmt.Errorf("disconnected websocket subscriber: %q", e)
		}
		return nil
	})
	if _, err := g.Disconnect(ctx, &serverv1.DisconnectRequest{ClientId: "nobody"}); status.Code(err) != codes.NotFound {
		t.Errorf("disconnect of nobody: %v, want NotFound", err)
	}
	if _, err := g.Publish(ctx, &serverv1.PublishRequest{Channel: "/meta/x", Data: []byte(`1`)}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("publish to a meta channel: %v, want InvalidArgument", err)
	}
	p, err = g.Presence(ctx, &serverv1.PresenceRequest{Channel: ch})
	if err != nil || len(p.GetSessions()) != 0 {
		t.Errorf("presence after unsubscribe and disconnect: %v %v", p, err)
	}
}

// waitHeld waits until node holds a /meta/connect of session id.
func waitHeld(t *testing.T, n *testproc.Node, id string) {
	t.Helper()
	bayeuxtest.Eventually(t, 10*time.Second, func() error {
		resp, err := http.Get(n.Base + "/debug/bayeux/sessions/" + id)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var s struct{ Held bool }
		if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || !s.Held {
			return fmt.Errorf("not held yet (%v)", err)
		}
		return nil
	})
}

func head(s []string) []string {
	if len(s) > 5 {
		return s[:5]
	}
	return s
}

// TestServerAPIKeys: missing and wrong keys get 401 with a JSON error on
// HTTP and gRPC; a rotated key file is used after SIGHUP; a node without a
// key file says how to configure one.
func TestServerAPIKeys(t *testing.T) {
	c, keyFile, clients := apiCluster(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name, header, value, code string
	}{
		{"missing", "", "", serverapi.CodeUnauthorized},
		{"wrong bearer", "Authorization", "Bearer not-the-key-0123456789", serverapi.CodeUnauthorized},
		{"wrong x-api-key", "X-API-Key", "not-the-key-0123456789", serverapi.CodeUnauthorized},
		{"right x-api-key", "X-API-Key", apiKey1, ""},
		{"right bearer", "Authorization", "Bearer " + apiKey1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, code := rawCall(t, c.Nodes[0].API+"/api/v1/nodes", tc.header, tc.value)
			if tc.code == "" && status != 200 || tc.code != "" && (status != 401 || code != tc.code) {
				t.Errorf("status %d code %q, want %q", status, code, tc.code)
			}
		})
	}
	// gRPC with the same key.
	conn, err := grpc.NewClient(strings.TrimPrefix(c.Nodes[1].API, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	g := serverv1.NewServerAPIClient(conn)
	withKey := func(k string) context.Context {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+k), 10*time.Second)
		t.Cleanup(cancel)
		return ctx
	}
	if _, err := g.Nodes(withKey("wrong-key-0123456789"), &serverv1.NodesRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("gRPC with a wrong key: %v, want Unauthenticated", err)
	}
	if r, err := g.Nodes(withKey(apiKey1), &serverv1.NodesRequest{}); err != nil || len(r.GetNodes()) != 3 {
		t.Errorf("gRPC nodes: %v %v", r, err)
	}

	// Rotation: the file now has only the new key; each node uses it
	// after SIGHUP.
	if err := os.WriteFile(keyFile, []byte(apiKey2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, n := range c.Nodes {
		if err := n.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		bayeuxtest.Eventually(t, 10*time.Second, func() error {
			if st, _ := rawCall(t, n.API+"/api/v1/nodes", "X-API-Key", apiKey2); st != 200 {
				return fmt.Errorf("node %d: new key gets %d", i, st)
			}
			return nil
		})
		if st, _ := rawCall(t, n.API+"/api/v1/nodes", "X-API-Key", apiKey1); st != 401 {
			t.Errorf("node %d: old key gets %d after rotation", i, st)
		}
	}
	if _, err := clients[0].Nodes(ctx); !serverapi.IsCode(err, serverapi.CodeUnauthorized) {
		t.Errorf("client with the old key: %v", err)
	}
	if _, err := g.Nodes(withKey(apiKey1), &serverv1.NodesRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("gRPC with the old key: %v, want Unauthenticated", err)
	}
	if _, err := g.Nodes(withKey(apiKey2), &serverv1.NodesRequest{}); err != nil {
		t.Errorf("gRPC with the new key: %v", err)
	}

	// No key file: refused, with a how-to.
	n := testproc.StartNode(t, nil)
	st, code := rawCall(t, n.API+"/api/v1/nodes", "X-API-Key", apiKey1)
	if st != 401 || code != serverapi.CodeNotConfigured {
		t.Errorf("node without key file: %d %q", st, code)
	}
	_, err = serverapi.NewClient(n.API, apiKey1, nil).Nodes(ctx)
	if err == nil || !strings.Contains(err.Error(), "--api-key-file") {
		t.Errorf("refusal without key file should say how to configure one: %v", err)
	}
	for _, nd := range append(c.Nodes, n) {
		if strings.Contains(nd.Log.String(), apiKey1) || strings.Contains(nd.Log.String(), apiKey2) {
			t.Errorf("node %s logged an API key", nd.URL)
		}
	}
}

// rawCall GETs url with one header and returns the status and error code.
func rawCall(t *testing.T, url, header, value string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if header != "" {
		req.Header.Set(header, value)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error *serverapi.Error `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != 200 && (body.Error == nil || resp.Header.Get("Content-Type") != "application/json") {
		t.Errorf("%s: %d without a JSON error body", url, resp.StatusCode)
	}
	if body.Error != nil {
		return resp.StatusCode, body.Error.Code
	}
	return resp.StatusCode, ""
}

// TestServerAPIPeerDown: a node that stops answering (SIGSTOP) does not
// hang cluster-wide queries: they answer within the peer timeout, without
// its sessions, naming it unreachable while it is still a member.
func TestServerAPIPeerDown(t *testing.T) {
	c, _, clients := apiCluster(t)
	ids := nodeIDs(t, clients)
	ch := "/down/room"
	for _, n := range c.Nodes {
		newRawSubscriber(t, n.URL, "websocket", ch)
	}
	ctx := context.Background()
	if p, err := clients[0].Presence(ctx, ch); err != nil || len(p.Sessions) != 3 {
		t.Fatalf("presence before: %+v %v", p, err)
	}
	if err := c.Nodes[2].Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Nodes[2].Signal(syscall.SIGCONT) }()
	bayeuxtest.Eventually(t, 10*time.Second, func() error { // the signal is delivered asynchronously
		s, err := testproc.ReadProcStat(c.Nodes[2].PID())
		if err != nil {
			return err
		}
		if s.State != 'T' {
			return fmt.Errorf("node 2 not stopped yet: state %c", s.State)
		}
		return nil
	})
	start := time.Now()
	p, err := clients[0].Presence(ctx, ch)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if took > 6*time.Second {
		t.Errorf("presence with a stopped peer took %v", took)
	}
	for _, s := range p.Sessions {
		if s.Node == ids[2] {
			t.Errorf("a stopped node's session listed: %+v", s)
		}
	}
	if len(p.Sessions) != 2 || (len(p.Unreachable) != 0 && !slices.Equal(p.Unreachable, []string{ids[2]})) {
		t.Errorf("presence with node 2 stopped: %+v", p)
	}
	t.Logf("presence with a stopped peer: %v, unreachable %v", took.Round(time.Millisecond), p.Unreachable)
	if err := c.Nodes[2].Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	bayeuxtest.Eventually(t, 20*time.Second, func() error {
		p, err := clients[0].Presence(ctx, ch)
		if err != nil || len(p.Sessions) != 3 || len(p.Unreachable) != 0 {
			return fmt.Errorf("presence after SIGCONT: %+v %v", p, err)
		}
		return nil
	})
}
