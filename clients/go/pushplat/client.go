package pushplat

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	pb "github.com/pushplat/pushplat/clients/go/pushplatv1"
)

const (
	// DefaultHeartbeatInterval is used when neither Options nor the Welcome give one.
	DefaultHeartbeatInterval = 30 * time.Second
	// MissedHeartbeats is how many heartbeat intervals without any frame from the edge make
	// a connection dead.
	MissedHeartbeats = 3
	// AckLinger is how long an ack waits for company, so that a burst of messages costs one
	// Ack frame, not many.
	AckLinger = 10 * time.Millisecond
	// MaxAckIDs is the most message ids the edge takes in one Ack frame; more go in several.
	// As many waiting acks go out at once, without the linger.
	MaxAckIDs = 1000
	// DefaultReceiveLimit is gRPC's default receive limit, used until an edge announces larger
	// frames in its Welcome (max_frame_bytes); the client then reconnects at once with a
	// limit to match.
	DefaultReceiveLimit = 4 * 1024 * 1024
	// DefaultConnectTimeout bounds the wait for the Welcome after Hello.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultCloseGrace is how long Close lets the edge end the stream cleanly.
	DefaultCloseGrace = time.Second
)

// Options configure a Client. Give Token, or (only when the edge runs without auth)
// DeviceID and UserID.
type Options struct {
	// Token is the device token (an HS256 JWT from `pushplat token`).
	Token string
	// UserID and DeviceID are honoured by the edge only when auth is off.
	UserID   string
	DeviceID string
	// ClientVersion is sent in Hello; default "pushplat-go/<Version>".
	ClientVersion string
	// DisableAutoAck turns off acking a message when Recv (or Messages) hands it over; the
	// application then calls Ack itself.
	DisableAutoAck bool
	// DedupCapacity is how many message ids are remembered to drop duplicates; default
	// DefaultDedupCapacity.
	DedupCapacity int
	// Backoff spaces out reconnects after failures; default DefaultBackoff().
	Backoff BackoffPolicy
	// HeartbeatInterval overrides the Welcome's heartbeat_interval_ms when > 0.
	HeartbeatInterval time.Duration
	// DisableReconnect makes the first lost connection final: Recv returns its error (or
	// ErrClosed if the edge ended the stream cleanly).
	DisableReconnect bool
	// ConnectTimeout bounds the wait for the Welcome; default DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// TLS, when set, connects over TLS with this configuration (see LoadTLS); nil means
	// plaintext.
	TLS *tls.Config
	// DialOptions are added to each connection's grpc.NewClient call (after the transport
	// credentials, which they may override).
	DialOptions []grpc.DialOption
	// Logger receives connection events; default: discarded.
	Logger *slog.Logger
}

// Client holds a stream to an edge and hands the application the messages pushed to this
// device. One goroutine owns the connection: it dials, says Hello, reads frames,
// heartbeats, and reconnects (exponential backoff with full jitter, or the edge's GoAway
// delay). All methods are safe for concurrent use.
//
// With auto-ack (the default) a message is acked when Recv or the Messages channel hands it
// over. A message already seen (by message_id) is acked again if it was acked before, but
// never handed over twice. Non-retriable statuses (UNAUTHENTICATED, INVALID_ARGUMENT,
// PERMISSION_DENIED, UNIMPLEMENTED) stop the client: Recv returns the *Error.
type Client struct {
	edge    string
	hello   *pb.Hello
	opts    Options
	log     *slog.Logger
	backoff BackoffPolicy

	// Ids handed over before (dedup), and ids the application acked: a redelivery of an
	// acked message is acked again, one not yet acked waits for the application's ack.
	seen  *RecentIDs
	acked *RecentIDs

	ctx     context.Context // cancelled at the end of Close: stops everything
	cancel  context.CancelFunc
	closeCh chan struct{} // closed when Close starts
	done    chan struct{} // closed when the connection loop has stopped
	avail   chan struct{} // cap 1: "the message queue may be non-empty"

	mu         sync.Mutex
	queue      []*pb.Message
	pending    []string // ids still to ack, in order; survives reconnects
	pendingSet map[string]struct{}
	sess       *session // the live session, nil between sessions
	connected  bool
	connCh     chan struct{} // closed on Welcome; replaced when the session ends
	stopped    bool
	err        *Error
	closed     bool
	sessionID  string
	edgeID     string
	connects   int
	lastGoAway *pb.GoAway

	msgsOnce sync.Once
	msgs     chan *pb.Message

	// The receive limit of the next connection: the largest frame an edge announced, at least
	// DefaultReceiveLimit. Used by the connection goroutine only.
	recvLimit int
}

// session is the write side of one live stream. Its fields are guarded by Client.mu; the
// single writer goroutine (gRPC allows one sender at a time) sleeps on wake.
type session struct {
	wake        chan struct{}
	acksFull    chan struct{} // cap 1: MaxAckIDs acks are waiting, end the linger
	flushQueued bool          // one flush at a time; it collects every id added before it runs
	pingDue     bool
	halfClose   bool
	topics      topicWaiters
}

func (s *session) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Dial validates the options and starts connecting to edge (host:port) in the background;
// it does not wait for the connection (see WaitConnected).
func Dial(edge string, opts Options) (*Client, error) {
	if edge == "" {
		return nil, errors.New("pushplat: Dial needs the edge address, e.g. \"127.0.0.1:50051\"")
	}
	if opts.Token == "" && opts.DeviceID == "" {
		return nil, errors.New("pushplat: Dial needs a Token, or a DeviceID (with UserID) when the edge runs without auth")
	}
	if opts.HeartbeatInterval < 0 {
		return nil, errors.New("pushplat: HeartbeatInterval must be >= 0")
	}
	if opts.ConnectTimeout < 0 {
		return nil, errors.New("pushplat: ConnectTimeout must be >= 0")
	}
	if opts.ConnectTimeout == 0 {
		opts.ConnectTimeout = DefaultConnectTimeout
	}
	if opts.DedupCapacity == 0 {
		opts.DedupCapacity = DefaultDedupCapacity
	}
	seen, err := NewRecentIDs(opts.DedupCapacity)
	if err != nil {
		return nil, err
	}
	acked, _ := NewRecentIDs(opts.DedupCapacity)
	if opts.ClientVersion == "" {
		opts.ClientVersion = "pushplat-go/" + Version
	}
	if opts.Backoff == nil {
		opts.Backoff = DefaultBackoff()
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	device := opts.DeviceID
	if device == "" {
		device = "-"
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		edge: edge,
		hello: &pb.Hello{
			Token: opts.Token, UserId: opts.UserID, DeviceId: opts.DeviceID, ClientVersion: opts.ClientVersion,
		},
		opts:       opts,
		log:        logger.With("device", device),
		backoff:    opts.Backoff,
		seen:       seen,
		acked:      acked,
		ctx:        ctx,
		cancel:     cancel,
		closeCh:    make(chan struct{}),
		done:       make(chan struct{}),
		avail:      make(chan struct{}, 1),
		pendingSet: make(map[string]struct{}),
		connCh:     make(chan struct{}),
		recvLimit:  DefaultReceiveLimit,
	}
	go c.run()
	return c, nil
}

// -- public surface ------------------------------------------------------------------

// Recv waits for the next message and returns it, acking it unless auto-ack is off.
// Messages that arrived before a failure are handed over first; then Recv returns the
// *Error that stopped the client, or ErrClosed once it is closed. ctx bounds the wait.
func (c *Client) Recv(ctx context.Context) (*Message, error) {
	m, err := c.next(ctx)
	if err != nil {
		return nil, err
	}
	if !c.opts.DisableAutoAck && m.GetMessageId() != "" {
		c.recordAcks([]string{m.GetMessageId()})
	}
	return m, nil
}

// Messages returns a channel of messages, an alternative to Recv (use one or the other).
// A message counts as handed over (and is auto-acked) when the channel receive happens.
// The channel is closed when the client stops; Err then says why (nil after Close).
func (c *Client) Messages() <-chan *Message {
	c.msgsOnce.Do(func() {
		c.msgs = make(chan *Message)
		go c.pump()
	})
	return c.msgs
}

func (c *Client) pump() {
	defer close(c.msgs)
	for {
		m, err := c.next(context.Background())
		if err != nil {
			return
		}
		select {
		case c.msgs <- m:
			if !c.opts.DisableAutoAck && m.GetMessageId() != "" {
				c.recordAcks([]string{m.GetMessageId()})
			}
		case <-c.closeCh:
			return
		}
	}
}

// Ack acks messages by id. Acks are coalesced and sent within ~10 ms on the live stream,
// or after the next reconnect if there is none. Ignored once the client is closed.
func (c *Client) Ack(ids ...string) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		c.log.Debug("ack ignored: client closed")
		return
	}
	c.recordAcks(ids)
}

// WaitConnected waits until the edge has welcomed the client. It returns ctx's error on
// timeout, the *Error that stopped the client, or ErrClosed.
func (c *Client) WaitConnected(ctx context.Context) error {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if c.connected {
		c.mu.Unlock()
		return nil
	}
	ch := c.connCh
	c.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-c.done:
		// A connect that came and went while we were waking up still counts.
		select {
		case <-ch:
			return nil
		default:
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.err != nil {
			return c.err
		}
		if c.closed {
			return ErrClosed
		}
		return &Error{Code: codes.Unavailable, Message: "connection ended and reconnect is off"}
	case <-c.closeCh:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the client for good, with DefaultCloseGrace. See CloseWithGrace.
func (c *Client) Close() error { return c.CloseWithGrace(DefaultCloseGrace) }

// CloseWithGrace stops the client for good. Pending acks are flushed and the stream
// half-closed, giving the edge up to grace to end it cleanly; then everything is cancelled.
// It returns when the connection goroutine has stopped. Calling it again is a no-op.
func (c *Client) CloseWithGrace(grace time.Duration) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.done
		return nil
	}
	c.closed = true
	close(c.closeCh)
	s := c.sess
	if s != nil && grace > 0 {
		if len(c.pending) > 0 {
			c.kickFlushLocked()
		}
		s.halfClose = true
		s.signal()
	}
	c.mu.Unlock()
	if s != nil && grace > 0 {
		t := time.NewTimer(grace)
		select {
		case <-c.done:
		case <-t.C:
		}
		t.Stop()
	}
	c.cancel()
	<-c.done
	c.log.Info("closed")
	return nil
}

// Err is the error that stopped the client (nil while it runs, or after a plain Close).
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		return nil
	}
	return c.err
}

// SessionID is the current (or last) session id from the Welcome; "" before the first.
func (c *Client) SessionID() string { c.mu.Lock(); defer c.mu.Unlock(); return c.sessionID }

// EdgeID is the current (or last) edge id from the Welcome.
func (c *Client) EdgeID() string { c.mu.Lock(); defer c.mu.Unlock(); return c.edgeID }

// Connects is how many Welcomes were received (1 + successful reconnects).
func (c *Client) Connects() int { c.mu.Lock(); defer c.mu.Unlock(); return c.connects }

// LastGoAway is the last GoAway received, or nil.
func (c *Client) LastGoAway() *pb.GoAway { c.mu.Lock(); defer c.mu.Unlock(); return c.lastGoAway }

// Connected reports whether a welcomed stream is live.
func (c *Client) Connected() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.connected }

// Closed reports whether Close was called.
func (c *Client) Closed() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.closed }

func (c *Client) next(ctx context.Context) (*Message, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClosed
		}
		if len(c.queue) > 0 {
			m := c.queue[0]
			c.queue[0] = nil
			c.queue = c.queue[1:]
			if len(c.queue) > 0 {
				c.signalAvail() // for another goroutine receiving on the same client
			}
			c.mu.Unlock()
			return m, nil
		}
		if c.stopped {
			err := c.err
			c.mu.Unlock()
			if err != nil {
				return nil, err
			}
			return nil, ErrClosed
		}
		c.mu.Unlock()
		select {
		case <-c.avail:
		case <-c.done:
		case <-c.closeCh:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (c *Client) signalAvail() {
	select {
	case c.avail <- struct{}{}:
	default:
	}
}

// -- connection loop -----------------------------------------------------------------

func (c *Client) isClosing() bool {
	select {
	case <-c.closeCh:
		return true
	default:
		return false
	}
}

func (c *Client) run() {
	defer func() {
		c.mu.Lock()
		c.stopped = true
		c.connected = false
		c.mu.Unlock()
		close(c.done)
	}()
	for !c.isClosing() {
		goAway, goAwayDelay, err := c.session()
		if c.isClosing() {
			return
		}
		var delay time.Duration
		switch {
		case err != nil:
			if !err.Retriable() || c.opts.DisableReconnect {
				level := slog.LevelWarn
				if !err.Retriable() {
					level = slog.LevelError
				}
				c.log.Log(context.Background(), level, "stopped", "code", err.Code.String(), "details", err.Message)
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
				return
			}
			delay = c.backoff.Next()
			// The server knows its load better than our backoff does.
			delay = max(delay, err.RetryAfter)
			c.log.Warn("connection lost", "code", err.Code.String(), "details", err.Message, "retry_in", delay)
		case c.opts.DisableReconnect:
			return
		case goAway:
			// A GoAway is planned (deploy, max age), not a failure: use the edge's
			// already-jittered delay and leave the backoff alone.
			delay = goAwayDelay
			c.log.Info("reconnecting after GoAway", "in", delay)
		default:
			delay = c.backoff.Next()
			c.log.Info("stream ended by edge", "retry_in", delay)
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-c.closeCh:
			t.Stop()
			return
		}
	}
}

type readResult struct {
	goAway bool
	delay  time.Duration
	err    *Error
}

// session runs one connection. It returns (true, delay, nil) after a GoAway,
// (false, 0, nil) when the edge ended the stream cleanly, and an error when it failed.
func (c *Client) session() (bool, time.Duration, *Error) {
	// A fresh channel (TCP connection) per attempt: behind a layer-4 load balancer a reused
	// channel would stick to the edge that just told us to go away.
	dialOpts := append([]grpc.DialOption{
		transport(c.opts.TLS),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(c.recvLimit)),
	}, c.opts.DialOptions...)
	conn, err := grpc.NewClient(c.edge, dialOpts...)
	if err != nil {
		return false, 0, newError(codes.InvalidArgument, "cannot dial edge %q: %v", c.edge, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()

	c.log.Debug("connecting", "edge", c.edge)
	first, stream, herr := c.handshake(ctx, cancel, pb.NewEdgeClient(conn))
	if herr != nil || first == nil {
		return false, 0, herr
	}
	var welcome *pb.Welcome
	switch f := first.Frame.(type) {
	case *pb.ServerFrame_GoAway:
		// A draining edge may turn us away before welcoming us; that is still a plan.
		return true, c.onGoAway(f.GoAway), nil
	case *pb.ServerFrame_Welcome:
		welcome = f.Welcome
	default:
		return false, 0, newError(codes.Internal, "edge sent %s before Welcome", frameKind(first))
	}

	s := &session{wake: make(chan struct{}, 1), acksFull: make(chan struct{}, 1)}
	interval := c.onWelcome(welcome, s)
	defer c.endSession(s)
	if limit := welcome.GetMaxFrameBytes(); limit > int64(c.recvLimit) {
		// Frames this large would fail the stream on this connection, and the edge would resend
		// the same frame after every reconnect: reconnect at once with a limit to match.
		c.recvLimit = int(limit)
		c.log.Info("edge frames may be larger than the receive limit; reconnecting with a limit to match", "max_frame_bytes", limit)
		return true, 0, nil
	}
	var lastRx atomic.Int64
	lastRx.Store(time.Now().UnixNano())

	var wg sync.WaitGroup
	readerDone := make(chan readResult, 1)
	writerDone := make(chan struct{})
	wg.Add(2)
	go func() {
		defer wg.Done()
		readerDone <- c.readLoop(stream, &lastRx)
	}()
	go func() {
		defer wg.Done()
		defer close(writerDone)
		c.writeLoop(ctx, stream, s)
	}()
	defer func() {
		cancel()
		wg.Wait()
	}()

	// Heartbeats: a Ping every interval, and the connection is dead after MissedHeartbeats
	// intervals without any frame from the edge.
	nextPing := time.Now().Add(interval)
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		now := time.Now()
		deadline := time.Unix(0, lastRx.Load()).Add(MissedHeartbeats * interval)
		if !now.Before(deadline) {
			return false, 0, newError(codes.DeadlineExceeded, "no frame from the edge for %v", MissedHeartbeats*interval)
		}
		if !now.Before(nextPing) {
			c.mu.Lock()
			s.pingDue = true
			c.mu.Unlock()
			s.signal()
			nextPing = nextPing.Add(interval)
			if nextPing.Before(now) {
				nextPing = now
			}
		}
		wake := nextPing
		if deadline.Before(wake) {
			wake = deadline
		}
		timer.Reset(max(wake.Sub(now), 0))
		select {
		case r := <-readerDone:
			return r.goAway, r.delay, r.err
		case <-writerDone:
			// The writer stopped because the call ended under it; the reader is about to
			// learn the real status, which says more than the failed write did.
			select {
			case r := <-readerDone:
				return r.goAway, r.delay, r.err
			case <-time.After(time.Second):
				return false, 0, newError(codes.Unavailable, "stream closed while writing")
			}
		case <-ctx.Done():
			return false, 0, newError(codes.Canceled, "client is closed")
		case <-timer.C:
		}
	}
}

// handshake sends Hello and returns the first ServerFrame (a Welcome or a GoAway), or nil
// (and no error) when the edge ended the stream without one.
func (c *Client) handshake(ctx context.Context, cancel context.CancelFunc, edge pb.EdgeClient) (*pb.ServerFrame, pb.Edge_ConnectClient, *Error) {
	var timedOut atomic.Bool
	timer := time.AfterFunc(c.opts.ConnectTimeout, func() {
		timedOut.Store(true)
		cancel()
	})
	defer timer.Stop()
	timeout := func(err *Error) *Error {
		if timedOut.Load() {
			return newError(codes.DeadlineExceeded, "no Welcome from %s within %v", c.edge, c.opts.ConnectTimeout)
		}
		return err
	}
	stream, err := edge.Connect(ctx)
	if err != nil {
		return nil, nil, timeout(errorFrom(err, nil))
	}
	if err := stream.Send(&pb.ClientFrame{Frame: &pb.ClientFrame_Hello{Hello: c.hello}}); err != nil && !errors.Is(err, io.EOF) {
		// io.EOF means the call finished before Hello went out: Recv tells why.
		return nil, nil, timeout(errorFrom(err, nil))
	}
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return nil, nil, timeout(nil)
	}
	if err != nil {
		return nil, nil, timeout(errorFrom(err, stream.Trailer()))
	}
	if !timer.Stop() {
		// The timeout fired as the Welcome came in: the stream's context is cancelled.
		return nil, nil, newError(codes.DeadlineExceeded, "no Welcome from %s within %v", c.edge, c.opts.ConnectTimeout)
	}
	return first, stream, nil
}

func (c *Client) onWelcome(w *pb.Welcome, s *session) time.Duration {
	interval := c.opts.HeartbeatInterval
	if interval <= 0 {
		interval = time.Duration(w.GetHeartbeatIntervalMs()) * time.Millisecond
	}
	if interval <= 0 {
		interval = DefaultHeartbeatInterval
	}
	c.backoff.Reset()
	c.mu.Lock()
	c.sessionID = w.GetSessionId()
	c.edgeID = w.GetEdgeId()
	c.connects++
	connects := c.connects
	c.connected = true
	close(c.connCh)
	c.sess = s
	if len(c.pending) > 0 {
		c.kickFlushLocked()
	}
	c.mu.Unlock()
	c.log.Info("connected", "edge", w.GetEdgeId(), "session", w.GetSessionId(), "heartbeat", interval, "connects", connects)
	return interval
}

func (c *Client) endSession(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == s {
		c.sess = nil
	}
	s.failTopicWaiters()
	if c.connected {
		c.connected = false
		c.connCh = make(chan struct{})
	}
}

func (c *Client) onGoAway(g *pb.GoAway) time.Duration {
	c.mu.Lock()
	c.lastGoAway = g
	c.mu.Unlock()
	c.log.Info("go_away", "reason", g.GetReason().String(), "reconnect_after_ms", g.GetReconnectAfterMs(), "detail", g.GetDetail())
	return time.Duration(max(g.GetReconnectAfterMs(), 0)) * time.Millisecond
}

func (c *Client) readLoop(stream pb.Edge_ConnectClient, lastRx *atomic.Int64) readResult {
	for {
		frame, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return readResult{}
		}
		if err != nil {
			return readResult{err: errorFrom(err, stream.Trailer())}
		}
		lastRx.Store(time.Now().UnixNano())
		switch f := frame.Frame.(type) {
		case *pb.ServerFrame_Pushes:
			c.onPushes(f.Pushes.GetMessages())
		case *pb.ServerFrame_Pong:
			c.log.Debug("pong")
		case *pb.ServerFrame_Subscription:
			c.onSubscription(f.Subscription)
		case *pb.ServerFrame_GoAway:
			return readResult{goAway: true, delay: c.onGoAway(f.GoAway)}
		default:
			// A newer edge may send frames we do not know; they still prove liveness.
			c.log.Debug("ignored frame", "kind", frameKind(frame))
		}
	}
}

func (c *Client) onPushes(messages []*pb.Message) {
	for _, m := range messages {
		id := m.GetMessageId()
		if id != "" && c.seen.Seen(id) {
			// Already handed over. Re-ack only if the app acked the original; otherwise its
			// own (pending) ack covers this copy too.
			if c.acked.Contains(id) {
				c.queueAcks([]string{id})
			}
			c.log.Debug("duplicate", "message_id", id)
			continue
		}
		c.mu.Lock()
		c.queue = append(c.queue, m)
		c.mu.Unlock()
		c.signalAvail()
	}
	c.log.Debug("pushes", "count", len(messages))
}

// writeLoop is the only sender on the stream (gRPC allows one at a time).
func (c *Client) writeLoop(ctx context.Context, stream pb.Edge_ConnectClient, s *session) {
	halfClosed := false
	for {
		select {
		case <-s.wake:
		case <-ctx.Done():
			return
		}
		c.mu.Lock()
		flush, ping, half := s.flushQueued, s.pingDue, s.halfClose && !halfClosed
		s.pingDue = false
		c.mu.Unlock()
		if halfClosed {
			continue // nothing more may be written
		}
		if flush && !c.flushAcks(ctx, stream, s) {
			return
		}
		if ping {
			if err := stream.Send(&pb.ClientFrame{Frame: &pb.ClientFrame_Ping{Ping: &pb.Ping{}}}); err != nil {
				c.log.Debug("write failed", "err", err)
				return
			}
		}
		for _, frame := range c.takeTopicFrames(s) {
			if err := stream.Send(frame); err != nil {
				c.log.Debug("write failed", "err", err)
				return
			}
		}
		if half {
			halfClosed = true
			if err := stream.CloseSend(); err != nil {
				c.log.Debug("half-close failed", "err", err)
			}
			c.log.Debug("half-closed")
		}
	}
}

// flushAcks sends every pending ack, in frames of at most MaxAckIDs ids; false if a write failed.
func (c *Client) flushAcks(ctx context.Context, stream pb.Edge_ConnectClient, s *session) bool {
	c.mu.Lock()
	full := len(c.pending) >= MaxAckIDs
	c.mu.Unlock()
	if !c.isClosing() && !full {
		// Linger for company, but no longer than it takes MaxAckIDs acks to gather.
		t := time.NewTimer(AckLinger)
		select {
		case <-t.C:
		case <-s.acksFull:
			t.Stop()
		case <-ctx.Done():
			t.Stop()
			return false
		}
	}
	c.mu.Lock()
	s.flushQueued = false
	ids := c.pending
	c.pending = nil
	clear(c.pendingSet)
	c.mu.Unlock()
	if len(ids) == 0 {
		return true
	}
	// The edge ends a stream whose Ack frame carries more than MaxAckIDs ids.
	for start := 0; start < len(ids); start += MaxAckIDs {
		chunk := ids[start:min(start+MaxAckIDs, len(ids))]
		if err := stream.Send(&pb.ClientFrame{Frame: &pb.ClientFrame_Ack{Ack: &pb.Ack{MessageIds: chunk}}}); err != nil {
			c.restoreAcks(ids[start:])
			c.log.Debug("ack write failed", "err", err)
			return false
		}
	}
	c.log.Debug("acked", "count", len(ids))
	return true
}

// restoreAcks puts ids that are not known to be delivered back in front of the pending acks,
// for the next stream (acks are idempotent).
func (c *Client) restoreAcks(ids []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	restored := make([]string, 0, len(ids)+len(c.pending))
	set := make(map[string]struct{}, cap(restored))
	for _, id := range append(ids[:len(ids):len(ids)], c.pending...) {
		if _, dup := set[id]; !dup {
			set[id] = struct{}{}
			restored = append(restored, id)
		}
	}
	c.pending, c.pendingSet = restored, set
}

// -- acks ----------------------------------------------------------------------------

func (c *Client) recordAcks(ids []string) {
	kept := ids[:0:0]
	for _, id := range ids {
		if id != "" {
			c.acked.Add(id)
			kept = append(kept, id)
		}
	}
	c.queueAcks(kept)
}

func (c *Client) queueAcks(ids []string) {
	if len(ids) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		if _, ok := c.pendingSet[id]; !ok {
			c.pendingSet[id] = struct{}{}
			c.pending = append(c.pending, id)
		}
	}
	c.kickFlushLocked()
	if c.sess != nil && len(c.pending) >= MaxAckIDs {
		select {
		case c.sess.acksFull <- struct{}{}:
		default:
		}
	}
}

func (c *Client) kickFlushLocked() {
	if c.sess != nil && !c.sess.flushQueued {
		c.sess.flushQueued = true
		c.sess.signal()
	}
}

func frameKind(f *pb.ServerFrame) string {
	switch f.GetFrame().(type) {
	case *pb.ServerFrame_Welcome:
		return "welcome"
	case *pb.ServerFrame_Pushes:
		return "pushes"
	case *pb.ServerFrame_GoAway:
		return "go_away"
	case *pb.ServerFrame_Pong:
		return "pong"
	case nil:
		return "an empty frame"
	}
	return "an unknown frame"
}
