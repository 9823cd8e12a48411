package pushplat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/pushplat/pushplat/clients/go/pushplatv1"
)

// fakePush records requests and metadata; it answers with ids, or fails as told.
type fakePush struct {
	pb.UnimplementedPushServer
	mu        sync.Mutex
	requests  []*pb.SendRequest
	auth      []string
	fail      error
	trailer   metadata.MD
	deadlines []time.Duration
}

func (f *fakePush) check(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	md, _ := metadata.FromIncomingContext(ctx)
	f.auth = append(f.auth, fmt.Sprint(md.Get("authorization")))
	if dl, ok := ctx.Deadline(); ok {
		f.deadlines = append(f.deadlines, time.Until(dl))
	}
	if f.fail != nil {
		if f.trailer != nil {
			_ = grpc.SetTrailer(ctx, f.trailer)
		}
		return f.fail
	}
	return nil
}

func (f *fakePush) Send(ctx context.Context, req *pb.SendRequest) (*pb.SendResponse, error) {
	if err := f.check(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, req)
	return &pb.SendResponse{MessageId: fmt.Sprintf("m%d", len(f.requests)), Duplicate: req.GetIdempotencyKey() == "dup"}, nil
}

func (f *fakePush) SendBatch(ctx context.Context, req *pb.SendBatchRequest) (*pb.SendBatchResponse, error) {
	if err := f.check(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &pb.SendBatchResponse{}
	for _, r := range req.GetRequests() {
		f.requests = append(f.requests, r)
		resp.Responses = append(resp.Responses, &pb.SendResponse{MessageId: fmt.Sprintf("m%d", len(f.requests))})
	}
	return resp, nil
}

func startFakePush(t *testing.T, opts ...grpc.ServerOption) (*fakePush, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePush{}
	srv := grpc.NewServer(opts...)
	pb.RegisterPushServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return f, lis.Addr().String()
}

func newTestSender(t *testing.T, addr string, opts SenderOptions) *Sender {
	t.Helper()
	s, err := NewSender(addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestSendBuildsTheRequestAndReturnsTheResponse(t *testing.T) {
	fake, addr := startFakePush(t)
	s := newTestSender(t, addr, SenderOptions{})
	resp, err := s.Send(context.Background(), SendOptions{
		UserID: "u1", Payload: []byte("hi"), ContentType: "text/plain", Priority: PriorityHigh,
		TTLSeconds: 60, CollapseKey: "score", IdempotencyKey: "dup", AtLeastOnce: true,
		Labels: map[string]string{"campaign": "c1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetMessageId() != "m1" || !resp.GetDuplicate() {
		t.Fatalf("response %v", resp)
	}
	r := fake.requests[0]
	if r.GetUserId() != "u1" || string(r.GetPayload()) != "hi" || r.GetContentType() != "text/plain" ||
		r.GetPriority() != PriorityHigh || r.GetTtlSeconds() != 60 || r.GetCollapseKey() != "score" ||
		r.GetIdempotencyKey() != "dup" || r.GetDelivery() != pb.DeliveryMode_AT_LEAST_ONCE || r.GetLabels()["campaign"] != "c1" {
		t.Fatalf("request %v", r)
	}
	if fake.auth[0] != "[]" {
		t.Fatalf("authorization sent without a key: %s", fake.auth[0])
	}
	// A default deadline travels with the call.
	if len(fake.deadlines) != 1 || fake.deadlines[0] <= 0 || fake.deadlines[0] > DefaultSendTimeout {
		t.Fatalf("deadlines %v", fake.deadlines)
	}
}

func TestSendToADeviceWithDefaults(t *testing.T) {
	fake, addr := startFakePush(t)
	s := newTestSender(t, addr, SenderOptions{})
	if _, err := s.Send(context.Background(), SendOptions{DeviceID: "d1", Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	r := fake.requests[0]
	if r.GetDeviceId() != "d1" || r.GetUserId() != "" || r.GetPriority() != PriorityNormal ||
		r.GetDelivery() != pb.DeliveryMode_AT_MOST_ONCE || r.GetTtlSeconds() != 0 {
		t.Fatalf("request %v", r)
	}
}

func TestAPIKeyIsSentAsBearerMetadata(t *testing.T) {
	fake, addr := startFakePush(t)
	s := newTestSender(t, addr, SenderOptions{APIKey: "k-123"})
	if _, err := s.Send(context.Background(), SendOptions{UserID: "u1"}); err != nil {
		t.Fatal(err)
	}
	if fake.auth[0] != "[Bearer k-123]" {
		t.Fatalf("authorization %s", fake.auth[0])
	}
}

func TestSendBatchKeepsOrder(t *testing.T) {
	fake, addr := startFakePush(t)
	s := newTestSender(t, addr, SenderOptions{APIKey: "k"})
	resps, err := s.SendBatch(context.Background(), []SendOptions{{UserID: "u1", Payload: []byte("a")}, {DeviceID: "d2", Payload: []byte("b")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resps) != 2 || resps[0].GetMessageId() != "m1" || resps[1].GetMessageId() != "m2" {
		t.Fatalf("responses %v", resps)
	}
	if fake.requests[1].GetDeviceId() != "d2" || fake.auth[0] != "[Bearer k]" {
		t.Fatal("batch request")
	}
	if _, err := s.SendBatch(context.Background(), []SendOptions{{UserID: "u1"}, {}}); err == nil {
		t.Fatal("a batch with a bad item was sent")
	}
}

func TestGRPCErrorsBecomeErrors(t *testing.T) {
	for _, tc := range []struct {
		code      codes.Code
		retriable bool
	}{{codes.Unauthenticated, false}, {codes.InvalidArgument, false}, {codes.PermissionDenied, false}, {codes.Unavailable, true}} {
		t.Run(tc.code.String(), func(t *testing.T) {
			fake, addr := startFakePush(t)
			fake.fail = status.Error(tc.code, "because")
			s := newTestSender(t, addr, SenderOptions{})
			_, err := s.Send(context.Background(), SendOptions{UserID: "u1"})
			var perr *Error
			if !errors.As(err, &perr) || perr.Code != tc.code || perr.Message != "because" || perr.Retriable() != tc.retriable {
				t.Fatalf("error %v", err)
			}
			if IsAuthError(err) != (tc.code == codes.Unauthenticated) {
				t.Fatal("IsAuthError")
			}
		})
	}
}

func TestRateLimitCarriesTheRetryHint(t *testing.T) {
	fake, addr := startFakePush(t)
	fake.fail = status.Error(codes.ResourceExhausted, "slow down")
	fake.trailer = metadata.Pairs(RetryAfterKey, "250")
	s := newTestSender(t, addr, SenderOptions{})
	_, err := s.Send(context.Background(), SendOptions{UserID: "u1"})
	var perr *Error
	if !errors.As(err, &perr) || perr.RetryAfter != 250*time.Millisecond || !perr.Retriable() {
		t.Fatalf("error %#v", err)
	}
}

func TestTargetIsCheckedBeforeSending(t *testing.T) {
	fake, addr := startFakePush(t)
	s := newTestSender(t, addr, SenderOptions{})
	for _, o := range []SendOptions{{}, {UserID: "u", DeviceID: "d"}} {
		if _, err := s.Send(context.Background(), o); err == nil {
			t.Fatalf("%+v accepted", o)
		}
	}
	if len(fake.requests) != 0 {
		t.Fatal("a bad request reached the server")
	}
	if _, err := NewSender("", SenderOptions{}); err == nil {
		t.Fatal("empty address accepted")
	}
}
