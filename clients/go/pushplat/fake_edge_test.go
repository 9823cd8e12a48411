package pushplat

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/pushplat/pushplat/clients/go/pushplatv1"
)

// wait is the upper bound for any single expected event; tests normally take milliseconds.
const wait = 3 * time.Second

// fakeConn is the server's view of one Connect stream, driven by the test by hand.
type fakeConn struct {
	stream  pb.Edge_ConnectServer
	hello   *pb.Hello
	index   int
	helloAt time.Time

	acks       chan *pb.Ack
	pings      chan struct{}
	topics     chan *pb.ClientFrame // Subscribe and Unsubscribe frames
	halfClosed chan struct{}
	gone       chan struct{}
	goneOnce   sync.Once
	finish     chan outcome
	autoPong   atomic.Bool

	writeMu sync.Mutex
	mu      sync.Mutex
	acked   []string
}

func (c *fakeConn) send(t *testing.T, f *pb.ServerFrame) {
	t.Helper()
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if err := c.stream.Send(f); err != nil {
		t.Fatalf("fake edge: send: %v", err)
	}
}

func (c *fakeConn) welcome(t *testing.T, sessionID string, heartbeatMs int64) {
	t.Helper()
	c.send(t, &pb.ServerFrame{Frame: &pb.ServerFrame_Welcome{Welcome: &pb.Welcome{
		SessionId: sessionID, EdgeId: "edge-test", HeartbeatIntervalMs: heartbeatMs,
	}}})
}

func (c *fakeConn) push(t *testing.T, msgs ...*pb.Message) {
	t.Helper()
	c.send(t, &pb.ServerFrame{Frame: &pb.ServerFrame_Pushes{Pushes: &pb.PushBatch{Messages: msgs}}})
}

func (c *fakeConn) goAway(t *testing.T, reconnectAfterMs int64, reason pb.GoAway_Reason) {
	t.Helper()
	c.send(t, &pb.ServerFrame{Frame: &pb.ServerFrame_GoAway{GoAway: &pb.GoAway{
		Reason: reason, ReconnectAfterMs: reconnectAfterMs, Detail: "test",
	}}})
}

// outcome is how the handler ends the stream: err nil is OK.
type outcome struct {
	err     error
	trailer metadata.MD
}

// end ends the stream with OK.
func (c *fakeConn) end() {
	select {
	case c.finish <- outcome{}:
	default:
	}
}

// abort ends the stream with a status, and trailing metadata given as key, value pairs.
func (c *fakeConn) abort(code codes.Code, msg string, trailer ...string) {
	select {
	case c.finish <- outcome{err: status.Error(code, msg), trailer: metadata.Pairs(trailer...)}:
	default:
	}
}

func (c *fakeConn) nextAck(t *testing.T) *pb.Ack {
	t.Helper()
	select {
	case a := <-c.acks:
		return a
	case <-time.After(wait):
		t.Fatal("timed out waiting for an Ack frame")
		return nil
	}
}

func (c *fakeConn) nextPing(t *testing.T) {
	t.Helper()
	select {
	case <-c.pings:
	case <-time.After(wait):
		t.Fatal("timed out waiting for a Ping frame")
	}
}

// acksUntil collects Ack frames until every id has been acked; it returns the frames.
func (c *fakeConn) acksUntil(t *testing.T, ids ...string) []*pb.Ack {
	t.Helper()
	var frames []*pb.Ack
	deadline := time.After(wait)
	for {
		c.mu.Lock()
		got := map[string]bool{}
		for _, id := range c.acked {
			got[id] = true
		}
		c.mu.Unlock()
		all := true
		for _, id := range ids {
			all = all && got[id]
		}
		if all {
			return frames
		}
		select {
		case a := <-c.acks:
			frames = append(frames, a)
		case <-deadline:
			t.Fatalf("timed out waiting for acks of %v (got %v)", ids, got)
		}
	}
}

func (c *fakeConn) ackedIDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.acked...)
}

func (c *fakeConn) waitGone(t *testing.T) {
	t.Helper()
	select {
	case <-c.gone:
	case <-time.After(wait):
		t.Fatal("timed out waiting for the stream to end")
	}
}

func (c *fakeConn) isGone() bool {
	select {
	case <-c.gone:
		return true
	default:
		return false
	}
}

func (c *fakeConn) readLoop() {
	for {
		f, err := c.stream.Recv()
		if errors.Is(err, io.EOF) {
			close(c.halfClosed)
			return
		}
		if err != nil {
			c.goneOnce.Do(func() { close(c.gone) })
			return
		}
		switch fr := f.Frame.(type) {
		case *pb.ClientFrame_Ack:
			c.mu.Lock()
			c.acked = append(c.acked, fr.Ack.GetMessageIds()...)
			c.mu.Unlock()
			c.acks <- fr.Ack
		case *pb.ClientFrame_Subscribe, *pb.ClientFrame_Unsubscribe:
			c.topics <- f
		case *pb.ClientFrame_Ping:
			if c.autoPong.Load() {
				c.writeMu.Lock()
				_ = c.stream.Send(&pb.ServerFrame{Frame: &pb.ServerFrame_Pong{Pong: &pb.Pong{}}})
				c.writeMu.Unlock()
			}
			c.pings <- struct{}{}
		}
	}
}

// fakeEdge is a scriptable Edge server on a free loopback port.
type fakeEdge struct {
	pb.UnimplementedEdgeServer
	addr           string
	conns          chan *fakeConn
	endOnHalfClose atomic.Bool

	mu  sync.Mutex
	all []*fakeConn
}

func startFakeEdge(t *testing.T, opts ...grpc.ServerOption) *fakeEdge {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &fakeEdge{addr: lis.Addr().String(), conns: make(chan *fakeConn, 100)}
	e.endOnHalfClose.Store(true)
	srv := grpc.NewServer(opts...)
	pb.RegisterEdgeServer(srv, e)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() {
		for _, c := range e.connections() {
			c.end()
		}
		srv.Stop()
	})
	return e
}

func (e *fakeEdge) connections() []*fakeConn {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*fakeConn(nil), e.all...)
}

func (e *fakeEdge) nextConn(t *testing.T) *fakeConn {
	t.Helper()
	select {
	case c := <-e.conns:
		return c
	case <-time.After(wait):
		t.Fatal("timed out waiting for a connection")
		return nil
	}
}

func (e *fakeEdge) Connect(stream pb.Edge_ConnectServer) error {
	first, err := stream.Recv()
	if err != nil {
		return nil
	}
	e.mu.Lock()
	c := &fakeConn{
		stream: stream, hello: first.GetHello(), index: len(e.all), helloAt: time.Now(),
		acks: make(chan *pb.Ack, 1000), pings: make(chan struct{}, 1000), topics: make(chan *pb.ClientFrame, 100),
		halfClosed: make(chan struct{}), gone: make(chan struct{}), finish: make(chan outcome, 1),
	}
	c.autoPong.Store(true)
	e.all = append(e.all, c)
	e.mu.Unlock()
	defer c.goneOnce.Do(func() { close(c.gone) })
	go c.readLoop()
	e.conns <- c

	halfClosed := c.halfClosed
	if !e.endOnHalfClose.Load() {
		halfClosed = nil
	}
	select {
	case o := <-c.finish:
		if len(o.trailer) > 0 {
			stream.SetTrailer(o.trailer)
		}
		return o.err
	case <-halfClosed:
		return nil
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
}

// countingBackoff is a real Backoff that counts how often the client asked for a delay.
type countingBackoff struct {
	*Backoff
	calls atomic.Int32
}

func newCountingBackoff(t *testing.T, base, cap time.Duration) *countingBackoff {
	t.Helper()
	b, err := NewBackoff(base, cap, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &countingBackoff{Backoff: b}
}

func (b *countingBackoff) Next() time.Duration {
	b.calls.Add(1)
	return b.Backoff.Next()
}

func msg(id string, fields ...func(*pb.Message)) *pb.Message {
	m := &pb.Message{MessageId: id, Payload: []byte("x")}
	for _, f := range fields {
		f(m)
	}
	return m
}

func ctxWait(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}
