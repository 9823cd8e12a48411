package pushplat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/pushplat/pushplat/clients/go/pushplatv1"
)

func dialTest(t *testing.T, e *fakeEdge, opts Options) *Client {
	t.Helper()
	if opts.UserID == "" {
		opts.UserID = "u1"
	}
	if opts.DeviceID == "" {
		opts.DeviceID = "d1"
	}
	if opts.Backoff == nil {
		opts.Backoff = newCountingBackoff(t, 10*time.Millisecond, 50*time.Millisecond)
	}
	c, err := Dial(e.addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func recv(t *testing.T, c *Client) *Message {
	t.Helper()
	m, err := c.Recv(ctxWait(t))
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	return m
}

func waitConnected(t *testing.T, c *Client) {
	t.Helper()
	if err := c.WaitConnected(ctxWait(t)); err != nil {
		t.Fatalf("WaitConnected: %v", err)
	}
}

func TestDialNeedsATokenOrADeviceID(t *testing.T) {
	if _, err := Dial("127.0.0.1:1", Options{}); err == nil {
		t.Fatal("Dial without token or device id succeeded")
	}
	if _, err := Dial("127.0.0.1:1", Options{UserID: "u1"}); err == nil {
		t.Fatal("Dial with only a user id succeeded")
	}
	if _, err := Dial("", Options{Token: "t"}); err == nil {
		t.Fatal("Dial without an address succeeded")
	}
	for _, opts := range []Options{{Token: "t"}, {DeviceID: "d1"}} {
		c, err := Dial("127.0.0.1:1", opts)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.CloseWithGrace(0)
	}
}

func TestHelloWelcomeThenPushesInOrder(t *testing.T) {
	e := startFakeEdge(t)
	c := dialTest(t, e, Options{Token: "tok", ClientVersion: "test/1"})
	conn := e.nextConn(t)
	h := conn.hello
	if h.GetToken() != "tok" || h.GetUserId() != "u1" || h.GetDeviceId() != "d1" || h.GetClientVersion() != "test/1" {
		t.Fatalf("unexpected hello %v", h)
	}
	conn.send(t, &pb.ServerFrame{Frame: &pb.ServerFrame_Welcome{Welcome: &pb.Welcome{SessionId: "sess-1", EdgeId: "edge-7"}}})
	waitConnected(t, c)
	if c.SessionID() != "sess-1" || c.EdgeID() != "edge-7" || c.Connects() != 1 || !c.Connected() {
		t.Fatalf("after welcome: session=%q edge=%q connects=%d connected=%v", c.SessionID(), c.EdgeID(), c.Connects(), c.Connected())
	}
	conn.push(t, msg("m1", func(m *pb.Message) {
		m.Payload = []byte("hello")
		m.ContentType = "text/plain"
		m.Labels = map[string]string{"k": "v"}
	}), msg("m2"))
	conn.push(t, msg("m3"))
	var got []*Message
	for range 3 {
		got = append(got, recv(t, c))
	}
	ids := []string{got[0].GetMessageId(), got[1].GetMessageId(), got[2].GetMessageId()}
	if !slices.Equal(ids, []string{"m1", "m2", "m3"}) {
		t.Fatalf("order: %v", ids)
	}
	if string(got[0].GetPayload()) != "hello" || got[0].GetContentType() != "text/plain" || got[0].GetLabels()["k"] != "v" {
		t.Fatalf("fields lost: %v", got[0])
	}
}

func TestAutoAcksArriveCoalesced(t *testing.T) {
	e := startFakeEdge(t)
	c := dialTest(t, e, Options{})
	conn := e.nextConn(t)
	conn.welcome(t, "s0", 0)
	var batch []*pb.Message
	var ids []string
	for i := range 50 {
		id := "m" + string(rune('A'+i/26)) + string(rune('a'+i%26))
		ids = append(ids, id)
		batch = append(batch, msg(id))
	}
	conn.push(t, batch...)
	for range 50 {
		recv(t, c)
	}
	frames := conn.acksUntil(t, ids...)
	// Handed over in one burst, so the acks travel together, not one frame per message.
	if len(frames) > 2 {
		t.Fatalf("50 acks took %d frames", len(frames))
	}
}

func TestDuplicateIsAckedButNotHandedOver(t *testing.T) {
	e := startFakeEdge(t)
	c := dialTest(t, e, Options{})
	conn := e.nextConn(t)
	conn.welcome(t, "s0", 0)
	conn.push(t, msg("m1"))
	if id := recv(t, c).GetMessageId(); id != "m1" {
		t.Fatalf("got %s", id)
	}
	conn.acksUntil(t, "m1")
	// The edge redelivers m1 (e.g. an inbox replay): the app must not see it again, but the
	// edge must get its ack again so it can drop the copy.
	conn.push(t, msg("m1", func(m *pb.Message) { m.RequiresAck = true }))
	if ack := conn.nextAck(t); !slices.Equal(ack.GetMessageIds(), []string{"m1"}) {
		t.Fatalf("re-ack: %v", ack.GetMessageIds())
	}
	conn.push(t, msg("m2"))
	if id := recv(t, c).GetMessageId(); id != "m2" {
		t.Fatalf("got %s, want m2 (the duplicate must be dropped)", id)
	}
}

func TestDuplicateWithinOneBatchIsDropped(t *testing.T) {
	e := startFakeEdge(t)
	c := dialTest(t, e, Options{})
	conn := e.nextConn(t)
	conn.welcome(t, "s0", 0)
	conn.push(t, msg("m1"), msg("m1"), msg("m2"))
	if a, b := recv(t, c).GetMessageId(), recv(t, c).GetMessageId(); a != "m1" || b != "m2" {
		t.Fatalf("got %s %s", a, b)
	}
	conn.acksUntil(t, "m1", "m2")
}

func TestManualAck(t *testing.T) {
	e := startFakeEdge(t)
	c := dialTest(t, e, Options{DisableAutoAck: true})
	conn := e.nextConn(t)
	conn.welcome(t, "s0", 0)
	conn.push(t, msg("m1"), msg("m2"))
	recv(t, c)
	recv(t, c)
	c.Ack("m2")
	// Nothing was acked on its own: the first ack frame holds only what the app acked.
	if ack := conn.nextAck(t); !slices.Equal(ack.GetMessageIds(), []string{"m2"}) {
		t.Fatalf("first ack: %v", ack.GetMessageIds())
	}
	c.Ack("m1")
	if ack := conn.nextAck(t); !slices.Equal(ack.GetMessageIds(), []string{"m1"}) {
		t.Fatalf("second ack: %v", ack.GetMessageIds())
	}
}

func TestALargeAckGoesOutInFramesTheEdgeAccepts(t *testing.T) {
	e := startFakeEdge(t)
	c := dialTest(t, e, Options{DisableAutoAck: true})
	conn := e.nextConn(t)
	conn.welcome(t, "s0", 0)
	ids := make([]string, 2500)
	for i := range ids {
		ids[i] = fmt.Sprintf("m%d", i)
	}
	c.Ack(ids...)
	var sizes []int
	for total := 0; total < len(ids); {
		n := len(conn.nextAck(t).GetMessageIds())
		sizes = append(sizes, n)
		total += n
	}
	if !slices.Equal(sizes, []int{1000, 1000, 500}) {
		t.Fatalf("ack frame sizes %v, want [1000 1000 500]", sizes)
	}
	if got := conn.ackedIDs(); !slices.Equal(got, ids) {
		t.Fatalf("acked %d ids, not each of the 2500 once in order", len(got))
	}
}

func TestAcksMadeWhileDisconnectedGoOutAfterReconnect(t *testing.T) {
	e := startFakeEdge(t)
	c := dialTest(t, e, Options{DisableAutoAck: true})
	first := e.nextConn(t)
	first.welcome(t, "s0", 0)
	first.push(t, msg("m1"))
	recv(t, c)
	first.abort(codes.Unavailable, "edge restarting")
	second := e.nextConn(t) // the client is now between Hello and Welcome
	c.Ack("m1")
	second.welcome(t, "s1", 0)
	if ack := second.nextAck(t); !slices.Equal(ack.GetMessageIds(), []string{"m1"}) {
		t.Fatalf("ack after reconnect: %v", ack.GetMessageIds())
	}
}

func TestHeartbeatPingsUseTheWelcomeIntervalAndPongsKeepItAlive(t *testing.T) {
	e := startFakeEdge(t)
	c := dialTest(t, e, Options{})
	conn := e.nextConn(t)
	welcomedAt := time.Now()
	conn.welcome(t, "s0", 100)
	waitConnected(t, c)
	conn.nextPing(t)
	if d := time.Since(welcomedAt); d < 90*time.Millisecond {
		t.Fatalf("first ping after %v: not paced by the Welcome", d)
	}
	// Four pings span 400 ms, beyond the 300 ms silence limit: the pongs kept it alive.
	for range 3 {
		conn.nextPing(t)
	}
	if c.Connects() != 1 || len(e.connections()) != 1 || conn.isGone() {
		t.Fatalf("reconnected: connects=%d conns=%d", c.Connects(), len(e.connections()))
	}
}

func TestSilentEdgeIsTreatedAsDeadAndReplaced(t *testing.T) {
	e := startFakeEdge(t)
	c := dialTest(t, e, Options{HeartbeatInterval: 50 * time.Millisecond})
	first := e.nextConn(t)
	first.autoPong.Store(false)
	welcomedAt := time.Now()
	first.welcome(t, "s0", 10_000) // the client's own interval wins
	first.nextPing(t)
	second := e.nextConn(t)
	// Dead only after three silent intervals, not at the first unanswered ping.
	if d := second.helloAt.Sub(welcomedAt); d < 140*time.Millisecond {
		t.Fatalf("declared dead after %v", d)
	}
	first.waitGone(t)
	second.welcome(t, "s1", 0)
	waitConnected(t, c)
	if c.Connects() != 2 {
		t.Fatalf("connects = %d", c.Connects())
	}
}

func TestGoAwayReconnectsAfterTheDelayWithoutBackoff(t *testing.T) {
	e := startFakeEdge(t)
	backoff := newCountingBackoff(t, 5*time.Second, 5*time.Second) // would blow the time limit if used
	c := dialTest(t, e, Options{Backoff: backoff})
	first := e.nextConn(t)
	first.welcome(t, "s-old", 0)
	waitConnected(t, c)
	sentAt := time.Now()
	first.goAway(t, 300, pb.GoAway_DRAINING)
	second := e.nextConn(t)
	if d := second.helloAt.Sub(sentAt); d < 290*time.Millisecond {
		t.Fatalf("reconnected after %v, before the GoAway delay", d)
	}
	if second.hello.GetDeviceId() != "d1" {
		t.Fatalf("hello %v", second.hello)
	}
	first.waitGone(t) // the old stream was closed
	g := c.LastGoAway()
	if g == nil || g.GetReason() != pb.GoAway_DRAINING || g.GetReconnectAfterMs() != 300 {
		t.Fatalf("last GoAway %v", g)
	}
	second.welcome(t, "s-new", 0)
	second.push(t, msg("after"))
	if id := recv(t, c).GetMessageId(); id != "after" {
		t.Fatalf("got %s", id)
	}
	if c.SessionID() != "s-new" || c.Connects() != 2 || backoff.calls.Load() != 0 {
		t.Fatalf("session=%s connects=%d backoff calls=%d", c.SessionID(), c.Connects(), backoff.calls.Load())
	}
}

func TestGoAwayBeforeWelcomeIsHonoured(t *testing.T) {
	e := startFakeEdge(t)
	backoff := newCountingBackoff(t, 5*time.Second, 5*time.Second)
	c := dialTest(t, e, Options{Backoff: backoff})
	first := e.nextConn(t)
	sentAt := time.Now()
	first.goAway(t, 100, pb.GoAway_DRAINING)
	second := e.nextConn(t)
	if d := second.helloAt.Sub(sentAt); d < 90*time.Millisecond {
		t.Fatalf("reconnected after %v", d)
	}
	second.welcome(t, "s1", 0)
	waitConnected(t, c)
	if c.Connects() != 1 || backoff.calls.Load() != 0 {
		t.Fatalf("connects=%d backoff calls=%d", c.Connects(), backoff.calls.Load())
	}
}

func TestUnavailableThenReconnects(t *testing.T) {
	e := startFakeEdge(t)
	backoff := newCountingBackoff(t, 10*time.Millisecond, 50*time.Millisecond)
	c := dialTest(t, e, Options{Backoff: backoff})
	first := e.nextConn(t)
	first.abort(codes.Unavailable, "try later")
	second := e.nextConn(t)
	second.welcome(t, "s1", 0)
	second.push(t, msg("m1"))
	if id := recv(t, c).GetMessageId(); id != "m1" {
		t.Fatalf("got %s", id)
	}
	if c.Connects() != 1 || backoff.calls.Load() != 1 || backoff.Attempt() != 0 {
		t.Fatalf("connects=%d calls=%d attempt=%d (want 1, 1, 0: reset by the Welcome)", c.Connects(), backoff.calls.Load(), backoff.Attempt())
	}
}

func TestCleanEndOfStreamReconnects(t *testing.T) {
	e := startFakeEdge(t)
	c := dialTest(t, e, Options{})
	first := e.nextConn(t)
	first.welcome(t, "s0", 0)
	waitConnected(t, c)
	first.end()
	second := e.nextConn(t)
	second.welcome(t, "s1", 0)
	second.push(t, msg("m1"))
	if id := recv(t, c).GetMessageId(); id != "m1" || c.Connects() != 2 {
		t.Fatalf("got %s connects=%d", id, c.Connects())
	}
}

func TestResourceExhaustedHonoursRetryAfter(t *testing.T) {
	e := startFakeEdge(t)
	c := dialTest(t, e, Options{})
	first := e.nextConn(t)
	abortedAt := time.Now()
	first.abort(codes.ResourceExhausted, "slow down", RetryAfterKey, "300")
	second := e.nextConn(t)
	// The backoff alone (base 10 ms) would have come back much sooner.
	if d := second.helloAt.Sub(abortedAt); d < 290*time.Millisecond {
		t.Fatalf("reconnected after %v", d)
	}
	second.welcome(t, "s1", 0)
	waitConnected(t, c)
}

func TestUnauthenticatedSurfacesAndStops(t *testing.T) {
	e := startFakeEdge(t)
	c := dialTest(t, e, Options{Token: "bad"})
	conn := e.nextConn(t)
	conn.abort(codes.Unauthenticated, "token expired")
	_, err := c.Recv(ctxWait(t))
	var perr *Error
	if !errors.As(err, &perr) || perr.Code != codes.Unauthenticated || perr.Message != "token expired" {
		t.Fatalf("Recv error %v", err)
	}
	if !IsAuthError(err) || perr.Retriable() || status.Code(err) != codes.Unauthenticated {
		t.Fatalf("classification of %v", err)
	}
	// Sticky, from every entry point, and no retry was made.
	if _, err := c.Recv(ctxWait(t)); !IsAuthError(err) {
		t.Fatalf("second Recv: %v", err)
	}
	if err := c.WaitConnected(ctxWait(t)); !IsAuthError(err) {
		t.Fatalf("WaitConnected: %v", err)
	}
	if !IsAuthError(c.Err()) {
		t.Fatalf("Err: %v", c.Err())
	}
	if n := len(e.connections()); n != 1 {
		t.Fatalf("%d connections: it retried", n)
	}
}

func TestInvalidArgumentAndPermissionDeniedSurface(t *testing.T) {
	for _, code := range []codes.Code{codes.InvalidArgument, codes.PermissionDenied} {
		t.Run(code.String(), func(t *testing.T) {
			e := startFakeEdge(t)
			c := dialTest(t, e, Options{})
			e.nextConn(t).abort(code, "no")
			err := c.WaitConnected(ctxWait(t))
			var perr *Error
			if !errors.As(err, &perr) || perr.Code != code || perr.Retriable() || IsAuthError(err) {
				t.Fatalf("WaitConnected: %v", err)
			}
		})
	}
}

func TestReconnectOffSurfacesTheRetriableError(t *testing.T) {
	e := startFakeEdge(t)
	c := dialTest(t, e, Options{DisableReconnect: true})
	conn := e.nextConn(t)
	conn.welcome(t, "s0", 0)
	conn.push(t, msg("m1"))
	conn.abort(codes.Unavailable, "gone")
	// Messages that arrived before the failure are still handed over first.
	if id := recv(t, c).GetMessageId(); id != "m1" {
		t.Fatalf("got %s", id)
	}
	_, err := c.Recv(ctxWait(t))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Recv: %v", err)
	}
}

func TestCloseFlushesAcksHalfClosesAndStopsRecv(t *testing.T) {
	e := startFakeEdge(t)
	c := dialTest(t, e, Options{})
	conn := e.nextConn(t)
	conn.welcome(t, "s0", 0)
	conn.push(t, msg("m1"))
	recv(t, c)
	blocked := make(chan error, 1)
	go func() { _, err := c.Recv(context.Background()); blocked <- err }()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// The ack went out before the stream was half-closed.
	if got := conn.ackedIDs(); !slices.Equal(got, []string{"m1"}) {
		t.Fatalf("acked %v", got)
	}
	select {
	case <-conn.halfClosed:
	default:
		t.Fatal("stream not half-closed")
	}
	select {
	case err := <-blocked:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("blocked Recv: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("a blocked Recv was not released by Close")
	}
	if _, err := c.Recv(ctxWait(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Recv after Close: %v", err)
	}
	if !c.Closed() || c.Connected() {
		t.Fatal("state after Close")
	}
	if err := c.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
}

func TestWaitConnectedTimesOutWhenTheEdgeIsUnreachable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close() // a port nobody listens on
	c, err := Dial(addr, Options{DeviceID: "d1", Backoff: newCountingBackoff(t, 10*time.Millisecond, 50*time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := c.WaitConnected(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitConnected: %v", err)
	}
	if c.Connects() != 0 {
		t.Fatal("connected to nothing")
	}
}

func TestCloseDoesNotHangOnAnEdgeThatIgnoresTheHalfClose(t *testing.T) {
	e := startFakeEdge(t)
	e.endOnHalfClose.Store(false)
	c := dialTest(t, e, Options{})
	conn := e.nextConn(t)
	conn.welcome(t, "s0", 0)
	waitConnected(t, c)
	started := time.Now()
	_ = c.CloseWithGrace(100 * time.Millisecond)
	if d := time.Since(started); d > 900*time.Millisecond {
		t.Fatalf("Close took %v", d)
	}
	conn.waitGone(t) // cancelled once the grace ran out
}

func TestMessagesChannelHandsOverAndAutoAcks(t *testing.T) {
	e := startFakeEdge(t)
	c := dialTest(t, e, Options{})
	conn := e.nextConn(t)
	conn.welcome(t, "s0", 0)
	conn.push(t, msg("m1"), msg("m2"))
	ch := c.Messages()
	for _, want := range []string{"m1", "m2"} {
		select {
		case m := <-ch:
			if m.GetMessageId() != want {
				t.Fatalf("got %s want %s", m.GetMessageId(), want)
			}
		case <-time.After(wait):
			t.Fatal("no message on the channel")
		}
	}
	conn.acksUntil(t, "m1", "m2")
	_ = c.Close()
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("message after Close")
		}
	case <-time.After(wait):
		t.Fatal("channel not closed after Close")
	}
	if c.Err() != nil {
		t.Fatalf("Err after a plain Close: %v", c.Err())
	}
}

func TestMessagesChannelClosesWithTheStopError(t *testing.T) {
	e := startFakeEdge(t)
	c := dialTest(t, e, Options{})
	ch := c.Messages()
	e.nextConn(t).abort(codes.Unauthenticated, "bad token")
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("unexpected message")
		}
	case <-time.After(wait):
		t.Fatal("channel not closed")
	}
	if !IsAuthError(c.Err()) {
		t.Fatalf("Err: %v", c.Err())
	}
}
