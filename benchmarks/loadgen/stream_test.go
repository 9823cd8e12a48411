package main

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/pushplat/pushplat/clients/go/pushplatv1"
)

// A fake Push server that speaks the assumed SendStream wire format (see stream.go), so
// the client side is checked before the real server has the method. It answers every
// pair of requests in reverse order, since responses may come in any order; a request
// whose payload is "refuse" gets a response without a message id.
func fakeStreamServer(t *testing.T, withStream bool) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	handler := func(_ any, stream grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(stream)
		if !withStream || method != streamMethod {
			return status.Errorf(codes.Unimplemented, "unknown method %s", method)
		}
		var held [][]byte
		flush := func() error {
			for i := len(held) - 1; i >= 0; i-- {
				if err := stream.SendMsg(&held[i]); err != nil {
					return err
				}
			}
			held = held[:0]
			return nil
		}
		for {
			var b []byte
			if err := stream.RecvMsg(&b); err != nil {
				if errors.Is(err, io.EOF) {
					return flush()
				}
				return err
			}
			var req pb.SendRequest
			if err := proto.Unmarshal(b, &req); err != nil {
				return err
			}
			// Read from the raw bytes: the generated SendRequest now knows field 11 itself.
			id := requestIDOf(t, b)
			var resp []byte
			if string(req.GetPayload()) != "refuse" {
				resp = protowire.AppendTag(resp, streamMessageIDField, protowire.BytesType)
				resp = protowire.AppendString(resp, "m-"+id)
			}
			resp = protowire.AppendTag(resp, streamResponseIDField, protowire.BytesType)
			resp = protowire.AppendString(resp, id)
			if held = append(held, resp); len(held) == 2 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(handler))
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func requestIDOf(t *testing.T, unknown []byte) string {
	for len(unknown) > 0 {
		num, typ, n := protowire.ConsumeTag(unknown)
		unknown = unknown[n:]
		if num == streamRequestIDField && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(unknown)
			return string(v)
		}
		unknown = unknown[protowire.ConsumeFieldValue(num, typ, unknown):]
	}
	t.Fatal("request without a request_id")
	return ""
}

func newStreamSender(t *testing.T, addr string, inflight int) *sender {
	conn, err := dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	cfg := senderConfig{mode: "stream", devices: 3, devicePrefix: "d", payloadBytes: 20, inflight: inflight, timeout: 10 * time.Second}
	return &sender{cfg: cfg, conn: conn, client: pb.NewPushClient(conn)}
}

func TestStreamMatchesResponsesByRequestID(t *testing.T) {
	s := newStreamSender(t, fakeStreamServer(t, true), 4)
	r := s.run(kindMeasured, 101, 0, 0)
	if r.Unsupported != "" || len(r.Errors) != 0 || r.Accepted != 101 {
		t.Fatalf("accepted %d, errors %v, unsupported %q", r.Accepted, r.Errors, r.Unsupported)
	}
	for i, tc := range r.TCall {
		if tc == 0 {
			t.Fatalf("message %d has no call time", i)
		}
	}
}

func TestStreamCountsRefusedRequests(t *testing.T) {
	s := newStreamSender(t, fakeStreamServer(t, true), 8)
	reqs := []*pb.SendRequest{s.request(kindMeasured, 0), s.request(kindMeasured, 1), s.request(kindMeasured, 2)}
	reqs[1].Payload = []byte("refuse")
	r := newResult(len(reqs))
	s.runStream(reqs, r, 0)
	if r.Accepted != 2 || r.Errors["UNKNOWN"] != 1 || r.TCall[1] != 0 {
		t.Fatalf("accepted %d, errors %v, t_call %v", r.Accepted, r.Errors, r.TCall)
	}
}

func TestStreamOnAServerWithoutItIsUnsupported(t *testing.T) {
	s := newStreamSender(t, fakeStreamServer(t, false), 4)
	r := s.run(kindMeasured, 10, 0, 0)
	if r.Accepted != 0 || !strings.HasPrefix(r.Unsupported, "Push.SendStream:") {
		t.Fatalf("accepted %d, unsupported %q, errors %v", r.Accepted, r.Unsupported, r.Errors)
	}
}

func TestOpenLoopStreamKeepsTheSchedule(t *testing.T) {
	s := newStreamSender(t, fakeStreamServer(t, true), 64)
	r := s.run(kindMeasured, 50, 0, 500) // 50 messages at 500/s: about 100 ms
	if r.Accepted != 50 {
		t.Fatalf("accepted %d, errors %v", r.Accepted, r.Errors)
	}
	// Call times are the schedule's: 2 ms apart.
	if gap := r.TCall[49] - r.TCall[0]; gap < int64(98*time.Millisecond)-1000 || gap > int64(98*time.Millisecond)+1000 {
		t.Fatalf("scheduled span %v, want 98ms", time.Duration(gap))
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	p := makePayload(100, kindWarmup, 123456)
	if kind, seq, ok := parsePayload(p); !ok || kind != kindWarmup || seq != 123456 || len(p) != 100 {
		t.Fatalf("got kind %d seq %d ok %v len %d", kind, seq, ok, len(p))
	}
	if _, _, ok := parsePayload([]byte("hello, not ours")); ok {
		t.Fatal("a foreign payload parsed as a bench payload")
	}
}
