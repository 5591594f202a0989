package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clusterv1 "github.com/bayeux-cluster/bayeux/api/proto/cluster/v1"
	"github.com/bayeux-cluster/bayeux/pkg/broker"
)

// fwdBroker is a Broker serving forwarded requests by their one part:
// "echo:X" answers X, "hold:X" answers X once released (or ends with
// its context), "lost" and "dropped" fail as the broker's errors do,
// anything else fails as a bad request.
type fwdBroker struct {
	release chan struct{} // closed: held requests answer
	mu      sync.Mutex
	held    int // requests holding now
	gone    int // held requests whose context ended
}

func newFwdBroker() *fwdBroker { return &fwdBroker{release: make(chan struct{})} }

func (f *fwdBroker) Config() broker.Config                         { return broker.Config{} }
func (f *fwdBroker) SetCluster(broker.Router, broker.SessionStore) {}
func (f *fwdBroker) ShuttingDown() bool                            { return false }
func (f *fwdBroker) PeerLost(time.Time)                            {}
func (f *fwdBroker) LocalSessionOp(string, broker.SessionOpKind) (bool, error) {
	return false, nil
}

func (f *fwdBroker) ServeForwarded(ctx context.Context, req *broker.ForwardedRequest) (*broker.ForwardedResponse, error) {
	part := string(req.Parts[0])
	switch {
	case strings.HasPrefix(part, "echo:"):
		return &broker.ForwardedResponse{Body: []byte(part[5:])}, nil
	case strings.HasPrefix(part, "hold:"):
		f.mu.Lock()
		f.held++
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			f.held--
			if ctx.Err() != nil {
				f.gone++
			}
			f.mu.Unlock()
		}()
		select {
		case <-f.release:
			return &broker.ForwardedResponse{Body: []byte(part[5:])}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	case part == "lost":
		return nil, broker.ErrReplyLost
	case part == "dropped":
		return nil, broker.ErrReplyDropped
	}
	return nil, errors.New("bad request")
}

func (f *fwdBroker) counts() (held, gone int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held, f.gone
}

// fwdOwner serves the Node API for b on addr ("" for any port).
func fwdOwner(t *testing.T, addr string, b Broker) (*grpc.Server, *nodeServer, string) {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	ns := &nodeServer{b: b, stopping: make(chan struct{})}
	clusterv1.RegisterNodeServer(srv, ns)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return srv, ns, ln.Addr().String()
}

// fwdPeer returns the forwarding side's connection to addr.
func fwdPeer(t *testing.T, addr string) *peerConn {
	t.Helper()
	p := newPeers(nil, nil)
	t.Cleanup(p.close)
	pc, release, err := p.conn(addr)
	if err != nil {
		t.Fatal(err)
	}
	release()
	return pc
}

func fwdReq(part string) *clusterv1.ProcessRequest {
	return &clusterv1.ProcessRequest{ProtocolVersion: ProtocolVersion, Transport: "long-polling", Parts: [][]byte{[]byte(part)}}
}

// TestForwardStreamMatchesReplies sends many requests at once over one
// stream, half of them held until the rest were answered: every caller
// gets its own reply, and held requests hold up nobody.
func TestForwardStreamMatchesReplies(t *testing.T) {
	fb := newFwdBroker()
	_, _, addr := fwdOwner(t, "", fb)
	pc := fwdPeer(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const n = 400
	errs := make(chan error, n)
	var echoes, holds sync.WaitGroup
	for i := range n {
		wg, kind := &echoes, "echo"
		if i%2 == 1 {
			wg, kind = &holds, "hold"
		}
		wg.Go(func() {
			want := fmt.Sprintf("r%d", i)
			resp, err := pc.forward(ctx, fwdReq(kind+":"+want), "")
			if err == nil && string(resp.GetBody()) != want {
				err = fmt.Errorf("request %s got reply %q", want, resp.GetBody())
			}
			if err != nil {
				errs <- err
			}
		})
	}
	echoes.Wait()
	waitFor(t, 10*time.Second, "every held request at the owner", func() bool { h, _ := fb.counts(); return h == n/2 })
	close(fb.release)
	holds.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestForwardStreamErrors: the owner's failures reach the caller with
// the codes Process fails with.
func TestForwardStreamErrors(t *testing.T) {
	_, _, addr := fwdOwner(t, "", newFwdBroker())
	pc := fwdPeer(t, addr)
	for _, tc := range []struct {
		name string
		req  *clusterv1.ProcessRequest
		want codes.Code
	}{
		{"reply lost further on", fwdReq("lost"), codes.Unavailable},
		{"reply dropped (debug API)", fwdReq("dropped"), codes.Aborted},
		{"bad request", fwdReq("nonsense"), codes.InvalidArgument},
		{"other protocol version", &clusterv1.ProcessRequest{ProtocolVersion: ProtocolVersion + 1, Parts: [][]byte{[]byte("echo:x")}}, codes.FailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := pc.forward(ctx, tc.req, "")
			if status.Code(err) != tc.want {
				t.Fatalf("error %v, want code %v", err, tc.want)
			}
		})
	}
}

// TestForwardStreamCancel: a caller that gives up cancels its request at
// the owner (a held connect's messages stay queued there), and the
// stream serves the next request.
func TestForwardStreamCancel(t *testing.T) {
	fb := newFwdBroker()
	_, _, addr := fwdOwner(t, "", fb)
	pc := fwdPeer(t, addr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := pc.forward(ctx, fwdReq("hold:x"), "")
		done <- err
	}()
	waitFor(t, 5*time.Second, "the request held at the owner", func() bool { h, _ := fb.counts(); return h == 1 })
	cancel()
	if err := <-done; status.Code(err) != codes.Canceled {
		t.Fatalf("cancelled call: %v, want Canceled", err)
	}
	waitFor(t, 5*time.Second, "the owner's request cancelled", func() bool { h, g := fb.counts(); return h == 0 && g == 1 })
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if resp, err := pc.forward(ctx2, fwdReq("echo:next"), ""); err != nil || string(resp.GetBody()) != "next" {
		t.Fatalf("next request: %v %q", err, resp.GetBody())
	}
}

// TestForwardStreamCancelledBeforeSending: a request whose context ended
// before it was forwarded (its client went away while the node was
// frozen, and has sent later messages through other nodes since) never
// reaches the owner, where it would be processed after those.
func TestForwardStreamCancelledBeforeSending(t *testing.T) {
	fb := newFwdBroker()
	_, _, addr := fwdOwner(t, "", fb)
	pc := fwdPeer(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if resp, err := pc.forward(ctx, fwdReq("echo:first"), ""); err != nil || string(resp.GetBody()) != "first" {
		t.Fatalf("first request: %v %q", err, resp.GetBody()) // the stream is open
	}
	gone, stop := context.WithCancel(context.Background())
	stop()
	if _, err := pc.forward(gone, fwdReq("hold:late"), ""); status.Code(err) != codes.Canceled {
		t.Fatalf("call with an ended context: %v, want Canceled", err)
	}
	if resp, err := pc.forward(ctx, fwdReq("echo:next"), ""); err != nil || string(resp.GetBody()) != "next" {
		t.Fatalf("next request: %v %q", err, resp.GetBody())
	}
	// Sent, the late request would have reached the owner before the
	// next one (one sender, in order); give its worker time to show.
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if h, g := fb.counts(); h+g > 0 {
			t.Fatalf("the owner served a request whose client had gone (held %d, ended %d)", h, g)
		}
	}
}

// TestForwardStreamPeerDies: an owner that dies mid-stream fails every
// request in flight with Unavailable (a held connect's reply is then
// lost, never a Bayeux reply); the next request dials again and reaches
// the owner back at its address.
func TestForwardStreamPeerDies(t *testing.T) {
	fb := newFwdBroker()
	srv, _, addr := fwdOwner(t, "", fb)
	pc := fwdPeer(t, addr)
	const n = 5
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := pc.forward(context.Background(), fwdReq(fmt.Sprintf("hold:%d", i)), "")
			errs <- err
		}()
	}
	waitFor(t, 5*time.Second, "requests held", func() bool { h, _ := fb.counts(); return h == n })
	srv.Stop()
	for range n {
		if err := <-errs; status.Code(err) != codes.Unavailable {
			t.Fatalf("request in flight: %v, want Unavailable", err)
		}
	}
	_, _, _ = fwdOwner(t, addr, fb)
	bayeuxEventually(t, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := pc.forward(ctx, fwdReq("echo:again"), "")
		if err == nil && string(resp.GetBody()) != "again" {
			t.Fatalf("reply %q", resp.GetBody())
		}
		return err
	})
}

// bayeuxEventually retries f (gRPC's reconnection back-off) for 10 s.
func bayeuxEventually(t *testing.T, f func() error) {
	t.Helper()
	var err error
	waitFor(t, 10*time.Second, "a forward to succeed", func() bool { err = f(); return err == nil })
}

// TestForwardStreamStopping: a stopping owner answers the requests in
// flight, refuses new ones with Unavailable, and ends the stream.
func TestForwardStreamStopping(t *testing.T) {
	fb := newFwdBroker()
	_, ns, addr := fwdOwner(t, "", fb)
	pc := fwdPeer(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	held := make(chan error, 1)
	go func() {
		resp, err := pc.forward(ctx, fwdReq("hold:answered"), "")
		if err == nil && string(resp.GetBody()) != "answered" {
			err = fmt.Errorf("reply %q", resp.GetBody())
		}
		held <- err
	}()
	waitFor(t, 5*time.Second, "the request held", func() bool { h, _ := fb.counts(); return h == 1 })
	ns.stop()
	s, err := pc.stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.call(ctx, fwdReq("echo:late"), ""); status.Code(err) != codes.Unavailable {
		t.Fatalf("request to a stopping owner: %v, want Unavailable", err)
	}
	close(fb.release)
	if err := <-held; err != nil {
		t.Fatalf("request in flight when stopping: %v", err)
	}
	waitFor(t, 5*time.Second, "the stream ended", s.broken)
}

// stalledStream is a forward stream whose Send blocks until unblocked
// (an owner that does not read) and whose Recv waits for its end.
type stalledStream struct {
	grpc.ClientStream
	sending chan struct{} // receives once a Send blocks
	unblock chan struct{}
}

func (s *stalledStream) Send(*clusterv1.ForwardBatch) error {
	s.sending <- struct{}{}
	<-s.unblock
	return errors.New("stalled")
}

func (s *stalledStream) Recv() (*clusterv1.ForwardReplies, error) {
	<-s.unblock
	return nil, errors.New("stalled")
}

// TestForwardStreamQueueFull: with the owner not reading, fwdQueued
// requests wait in the queue and the next one fails at once (the owner
// is then unavailable to it); once the stream breaks, the queued ones
// fail with Unavailable.
func TestForwardStreamQueueFull(t *testing.T) {
	st := &stalledStream{sending: make(chan struct{}, 1), unblock: make(chan struct{})}
	s := newFwdStream(st, func() {})
	ctx := context.Background()
	errs := make(chan error, fwdQueued+1)
	go func() { _, err := s.call(ctx, fwdReq("echo:first"), ""); errs <- err }()
	<-st.sending // the first is being written, and blocks
	for range fwdQueued {
		go func() { _, err := s.call(ctx, fwdReq("echo:queued"), ""); errs <- err }()
	}
	waitFor(t, 10*time.Second, "a full queue", func() bool {
		s.out.mu.Lock()
		defer s.out.mu.Unlock()
		return len(s.out.items) == fwdQueued
	})
	if _, err := s.call(ctx, fwdReq("echo:over"), ""); !errors.Is(err, errFwdQueue) {
		t.Fatalf("request past a full queue: %v, want %v", err, errFwdQueue)
	}
	close(st.unblock)
	for range fwdQueued + 1 {
		if err := <-errs; status.Code(err) != codes.Unavailable {
			t.Fatalf("queued request on a broken stream: %v, want Unavailable", err)
		}
	}
}

// recordingStream is a forward stream whose first Send blocks until
// unblocked, recording the number of frames of every Send.
type recordingStream struct {
	grpc.ClientStream
	sending chan struct{} // receives as the first Send blocks
	unblock chan struct{}
	end     chan struct{}
	mu      sync.Mutex
	sizes   []int
}

func (s *recordingStream) Send(m *clusterv1.ForwardBatch) error {
	s.mu.Lock()
	s.sizes = append(s.sizes, len(m.GetFrames()))
	first := len(s.sizes) == 1
	s.mu.Unlock()
	if first {
		s.sending <- struct{}{}
		<-s.unblock
	}
	return nil
}

func (s *recordingStream) Recv() (*clusterv1.ForwardReplies, error) {
	<-s.end
	return nil, errors.New("ended")
}

func (s *recordingStream) sent() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.sizes...)
}

// TestForwardStreamBatches: requests queued while the sender writes go
// out together, as one stream message.
func TestForwardStreamBatches(t *testing.T) {
	st := &recordingStream{sending: make(chan struct{}, 1), unblock: make(chan struct{}), end: make(chan struct{})}
	s := newFwdStream(st, func() {})
	const queued = 10
	errs := make(chan error, queued+1)
	call := func() { _, err := s.call(context.Background(), fwdReq("echo:x"), ""); errs <- err }
	go call()
	<-st.sending
	for range queued {
		go call()
	}
	waitFor(t, 5*time.Second, "requests queued", func() bool {
		s.out.mu.Lock()
		defer s.out.mu.Unlock()
		return len(s.out.items) == queued
	})
	close(st.unblock)
	waitFor(t, 5*time.Second, "the queued requests sent", func() bool { return len(st.sent()) == 2 })
	if got := st.sent(); got[0] != 1 || got[1] != queued {
		t.Fatalf("frames per message %v, want [1 %d]", got, queued)
	}
	close(st.end)
	for range queued + 1 {
		<-errs
	}
}

// TestForwardStreamGathersReady: requests from goroutines that become
// ready together go out in a few stream messages, not one each, on a
// single processor (where the scheduler runs the woken sender before the
// other ready goroutines; gather).
func TestForwardStreamGathersReady(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	unblock := make(chan struct{})
	close(unblock)
	st := &recordingStream{sending: make(chan struct{}, 1), unblock: unblock, end: make(chan struct{})}
	s := newFwdStream(st, func() {})
	const callers = 32
	gate := make(chan struct{})
	errs := make(chan error, callers)
	for range callers {
		go func() {
			<-gate
			_, err := s.call(context.Background(), fwdReq("echo:x"), "")
			errs <- err
		}()
	}
	close(gate)
	waitFor(t, 5*time.Second, "every request sent", func() bool {
		n := 0
		for _, f := range st.sent() {
			n += f
		}
		return n == callers
	})
	if got := st.sent(); len(got) > callers/4 {
		t.Errorf("%d requests in %d stream messages %v, want at most %d messages", callers, len(got), got, callers/4)
	}
	close(st.end)
	for range callers {
		<-errs
	}
}

// TestChunks: a batch is split where its sizes would pass the limit; an
// item larger than it goes alone.
func TestChunks(t *testing.T) {
	for _, tc := range []struct {
		sizes []int
		want  [][]int
	}{
		{nil, nil},
		{[]int{3}, [][]int{{3}}},
		{[]int{3, 4, 3}, [][]int{{3, 4, 3}}},
		{[]int{6, 5, 1}, [][]int{{6}, {5, 1}}},
		{[]int{20, 1, 2}, [][]int{{20}, {1, 2}}},
		{[]int{1, 20, 2}, [][]int{{1}, {20}, {2}}},
	} {
		var got [][]int
		err := chunks(tc.sizes, func(n int) int { return n }, 10, func(c []int) error {
			got = append(got, append([]int(nil), c...))
			return nil
		})
		if err != nil || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("chunks(%v) = %v, %v; want %v", tc.sizes, got, err, tc.want)
		}
	}
}
