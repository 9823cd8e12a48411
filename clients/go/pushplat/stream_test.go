package pushplat

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/pushplat/pushplat/clients/go/pushplatv1"
)

// streamHold, when set on fakePush.hold, keeps the fake from answering until it is closed.
var streamGate sync.Map // *fakePush -> chan struct{}

// SendStream on the fake: reads everything, answers in order once the gate (if any) opens;
// payload "refuse" gets an INVALID_ARGUMENT item error.
func (f *fakePush) SendStream(stream grpc.BidiStreamingServer[pb.SendRequest, pb.SendResponse]) error {
	if err := f.check(stream.Context()); err != nil {
		return err
	}
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	queue := make(chan *pb.SendRequest, 1000)
	go func() {
		defer close(queue)
		for {
			req, err := stream.Recv()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.requests = append(f.requests, req)
			f.mu.Unlock()
			queue <- req
		}
	}()
	for req := range queue {
		if gate, ok := streamGate.Load(f); ok {
			<-gate.(chan struct{})
		}
		resp := &pb.SendResponse{RequestId: req.GetRequestId(), MessageId: "m-" + req.GetRequestId()}
		if string(req.GetPayload()) == "refuse" {
			resp = &pb.SendResponse{RequestId: req.GetRequestId(), Error: &pb.SendError{
				Code: int32(codes.InvalidArgument), Message: "refused", RetryAfterMs: 0}}
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakePush) received() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

func TestStreamMatchesAnswersToSends(t *testing.T) {
	fake, addr := startFakePush(t)
	s := newTestSender(t, addr, SenderOptions{APIKey: "k"})
	st, err := s.OpenStream(context.Background(), StreamOptions{Window: 8})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	replies := make([]*pb.SendResponse, 50)
	for i := range replies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := st.Send(context.Background(), SendOptions{DeviceID: "d", Payload: []byte(fmt.Sprint(i))})
			if err != nil {
				t.Error(err)
			}
			replies[i] = r
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, r := range replies {
		if r == nil || r.GetMessageId() != "m-"+r.GetRequestId() || seen[r.GetRequestId()] {
			t.Fatalf("answer %v not matched to its own request", r)
		}
		seen[r.GetRequestId()] = true
	}
	if err := st.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fake.auth[0] != "[Bearer k]" || fake.received() != 50 {
		t.Fatalf("auth %v, %d requests", fake.auth, fake.received())
	}
}

func TestStreamWindowBoundsUnansweredRequests(t *testing.T) {
	fake, addr := startFakePush(t)
	gate := make(chan struct{})
	streamGate.Store(fake, gate)
	defer streamGate.Delete(fake)
	s := newTestSender(t, addr, SenderOptions{})
	st, err := s.OpenStream(context.Background(), StreamOptions{Window: 3})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 10)
	for i := 0; i < 10; i++ {
		go func() {
			_, err := st.Send(context.Background(), SendOptions{DeviceID: "d", Payload: []byte("x")})
			errs <- err
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for fake.received() < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got, held := fake.received(), st.Unanswered(); got != 3 || held != 3 {
		t.Fatalf("the api got %d requests with %d unanswered; the window is 3", got, held)
	}
	close(gate)
	for i := 0; i < 10; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if fake.received() != 10 {
		t.Fatalf("%d requests", fake.received())
	}
	_ = st.Close(context.Background())
}

func TestStreamRefusedItemFailsOnlyItsSend(t *testing.T) {
	_, addr := startFakePush(t)
	s := newTestSender(t, addr, SenderOptions{})
	st, err := s.OpenStream(context.Background(), StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close(context.Background())
	_, err = st.Send(context.Background(), SendOptions{DeviceID: "d", Payload: []byte("refuse")})
	var e *Error
	if !asError(err, &e) || e.Code != codes.InvalidArgument || e.Message != "refused" || e.Retriable() {
		t.Fatalf("want the item's INVALID_ARGUMENT, got %v", err)
	}
	if r, err := st.Send(context.Background(), SendOptions{DeviceID: "d", Payload: []byte("ok")}); err != nil || r.GetMessageId() == "" {
		t.Fatalf("the stream must carry on: %v %v", r, err)
	}
}

func TestStreamRefusedByTheAPI(t *testing.T) {
	fake, addr := startFakePush(t)
	fake.fail = status.Error(codes.Unauthenticated, "unknown API key")
	s := newTestSender(t, addr, SenderOptions{APIKey: "wrong"})
	_, err := s.OpenStream(context.Background(), StreamOptions{})
	if !IsAuthError(err) {
		t.Fatalf("want UNAUTHENTICATED from OpenStream, got %v", err)
	}
	if _, err := s.OpenStream(context.Background(), StreamOptions{Window: -1}); err == nil {
		t.Fatal("a negative window must be refused")
	}
}

func asError(err error, target **Error) bool {
	e, ok := err.(*Error)
	if ok {
		*target = e
	}
	return ok
}
