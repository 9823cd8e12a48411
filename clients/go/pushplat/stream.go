package pushplat

import (
	"context"
	"errors"
	"io"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	pb "github.com/pushplat/pushplat/clients/go/pushplatv1"
)

// DefaultStreamWindow is how many requests a SendStream has unanswered at most by default.
const DefaultStreamWindow = 256

// StreamOptions configure a SendStream.
type StreamOptions struct {
	// Window is the most requests unanswered at once; Send waits for a free slot beyond it, so
	// a fast producer cannot queue without bound. Default DefaultStreamWindow.
	Window int
}

type streamAnswer struct {
	resp *pb.SendResponse
	err  error
}

// SendStream is one Push.SendStream call: many sends without one RPC per message. Each
// request carries a request_id of the stream's choosing and is answered with it, in any order.
// A refused request fails only its own Send (an *Error with the code a Send of it alone would
// get); if the stream itself ends, every unanswered Send fails with that status and the stream
// is done: open a new one. Safe for concurrent use; Send blocks while Window requests are
// unanswered.
type SendStream struct {
	stream  pb.Push_SendStreamClient
	cancel  context.CancelFunc
	slots   chan struct{}
	writeMu sync.Mutex

	mu       sync.Mutex
	next     uint64
	waiting  map[string]chan streamAnswer
	err      error
	closed   bool
	inflight sync.WaitGroup
	done     chan struct{}
}

// OpenStream starts a Push.SendStream. ctx bounds the whole stream (give it no deadline for a
// long-lived one); it returns once the api accepted the stream, or with the api's refusal
// (e.g. UNAUTHENTICATED for a bad key).
func (s *Sender) OpenStream(ctx context.Context, opts StreamOptions) (*SendStream, error) {
	if opts.Window < 0 {
		return nil, errors.New("pushplat: StreamOptions.Window must be >= 0")
	}
	if opts.Window == 0 {
		opts.Window = DefaultStreamWindow
	}
	ctx, cancel := context.WithCancel(ctx)
	if s.apiKey != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.apiKey)
	}
	stream, err := s.stub.SendStream(ctx)
	if err != nil {
		cancel()
		return nil, errorFrom(err, nil)
	}
	// The api sends its headers once it accepted the stream; a refusal ends it instead (no
	// headers: the status comes from Recv).
	header, err := stream.Header()
	if err == nil && header == nil {
		_, err = stream.Recv()
	}
	if err != nil {
		cancel()
		return nil, errorFrom(err, stream.Trailer())
	}
	st := &SendStream{
		stream:  stream,
		cancel:  cancel,
		slots:   make(chan struct{}, opts.Window),
		waiting: map[string]chan streamAnswer{},
		done:    make(chan struct{}),
	}
	go st.read()
	return st, nil
}

func (st *SendStream) read() {
	defer close(st.done)
	for {
		resp, err := st.stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				st.mu.Lock()
				closed := st.closed
				st.mu.Unlock()
				err = newError(codes.Unavailable, "SendStream ended before every request was answered")
				if closed {
					err = newError(codes.Canceled, "the stream is closed")
				}
			}
			st.fail(errorFrom(err, st.stream.Trailer()))
			return
		}
		st.mu.Lock()
		answer, ok := st.waiting[resp.GetRequestId()]
		delete(st.waiting, resp.GetRequestId())
		st.mu.Unlock()
		if !ok {
			continue // not ours: nothing waits for it
		}
		if e := resp.GetError(); e != nil && e.GetCode() != 0 {
			answer <- streamAnswer{err: &Error{
				Code:       codes.Code(e.GetCode()),
				Message:    e.GetMessage(),
				RetryAfter: time.Duration(e.GetRetryAfterMs()) * time.Millisecond,
			}}
		} else {
			answer <- streamAnswer{resp: resp}
		}
	}
}

func (st *SendStream) fail(err *Error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.err == nil {
		st.err = err
	}
	for id, answer := range st.waiting {
		answer <- streamAnswer{err: st.err}
		delete(st.waiting, id)
	}
}

// Send sends one message on the stream and waits for its answer (or ctx).
func (st *SendStream) Send(ctx context.Context, o SendOptions) (*pb.SendResponse, error) {
	req, err := MakeRequest(o)
	if err != nil {
		return nil, err
	}
	return st.SendRequest(ctx, req)
}

// SendRequest is Send for a prepared request; its RequestId is set by the stream.
func (st *SendStream) SendRequest(ctx context.Context, req *pb.SendRequest) (*pb.SendResponse, error) {
	select {
	case st.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, errorFrom(ctx.Err(), nil)
	case <-st.done:
		return nil, st.Err()
	}
	defer func() { <-st.slots }()
	item := proto.Clone(req).(*pb.SendRequest)
	answer := make(chan streamAnswer, 1)
	st.mu.Lock()
	if st.err != nil || st.closed {
		st.mu.Unlock()
		if st.err != nil {
			return nil, st.err
		}
		return nil, newError(codes.Canceled, "the stream is closed")
	}
	st.inflight.Add(1)
	defer st.inflight.Done()
	st.next++
	item.RequestId = strconv.FormatUint(st.next, 10)
	st.waiting[item.RequestId] = answer
	st.mu.Unlock()
	st.writeMu.Lock()
	err := st.stream.Send(item)
	st.writeMu.Unlock()
	if err != nil && !errors.Is(err, io.EOF) {
		st.fail(errorFrom(err, nil)) // io.EOF: the stream ended; the reader has its status
	}
	select {
	case a := <-answer:
		return a.resp, a.err
	case <-ctx.Done():
		st.mu.Lock()
		delete(st.waiting, item.RequestId)
		st.mu.Unlock()
		return nil, errorFrom(ctx.Err(), nil)
	}
}

// Unanswered is how many requests wait for their answers (at most the window).
func (st *SendStream) Unanswered() int { return len(st.slots) }

// Err is the status that ended the stream, or nil while it is open.
func (st *SendStream) Err() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.err == nil {
		return nil
	}
	return st.err
}

// Close waits for the answers still due (bounded by ctx), then ends the stream. Sends after
// Close fail with CANCELLED.
func (st *SendStream) Close(ctx context.Context) error {
	st.mu.Lock()
	st.closed = true
	st.mu.Unlock()
	answered := make(chan struct{})
	go func() { st.inflight.Wait(); close(answered) }()
	select {
	case <-answered:
	case <-ctx.Done():
		st.cancel()
		return errorFrom(ctx.Err(), nil)
	}
	st.writeMu.Lock()
	_ = st.stream.CloseSend()
	st.writeMu.Unlock()
	select {
	case <-st.done:
	case <-ctx.Done():
	}
	st.cancel()
	return nil
}
