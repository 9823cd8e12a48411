package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/pushplat/pushplat/clients/go/pushplatv1"
)

// Push.SendStream (issue 11). This speaks its wire format with raw bytes rather than the
// generated stubs, so that the sender's own cost stays small and older servers still answer:
//
//	rpc SendStream(stream SendRequest) returns (stream SendResponse);
//	SendRequest.request_id  = 11  (string, chosen by the client)
//	SendResponse.request_id = 3   (string, echoed; responses may come in any order)
//	SendResponse.message_id = 1   (empty: the request was refused, see error)
//	SendResponse.error      = 4   (SendError, shaped like google.rpc.Status; optional)
const (
	streamMethod          = "/pushplat.v1.Push/SendStream"
	streamRequestIDField  = protowire.Number(11)
	streamResponseIDField = protowire.Number(3)
	streamMessageIDField  = protowire.Number(1)
	streamErrorField      = protowire.Number(4)
)

// rawCodec passes pre-encoded protobuf bytes through gRPC untouched.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func encodeStreamRequest(req *pb.SendRequest, id int) ([]byte, error) {
	b, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	b = protowire.AppendTag(b, streamRequestIDField, protowire.BytesType)
	return protowire.AppendString(b, strconv.Itoa(id)), nil
}

// decodeStreamResponse returns the echoed request id, the message id and an error detail.
func decodeStreamResponse(b []byte) (id int, messageID, detail string, err error) {
	id = -1
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return -1, "", "", protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == streamResponseIDField || num == streamMessageIDField || num == streamErrorField) {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return -1, "", "", protowire.ParseError(n)
			}
			switch num {
			case streamResponseIDField:
				if id, err = strconv.Atoi(string(v)); err != nil {
					return -1, "", "", fmt.Errorf("request id %q is not one this sender chose", v)
				}
			case streamMessageIDField:
				messageID = string(v)
			case streamErrorField:
				detail = fmt.Sprintf("error status (%d bytes)", len(v))
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return -1, "", "", protowire.ParseError(n)
		}
		b = b[n:]
	}
	return id, messageID, detail, nil
}

// runStream sends every request on one SendStream with at most inflight unanswered.
func (s *sender) runStream(reqs []*pb.SendRequest, r *result, rate float64) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.timeout)
	defer cancel()
	desc := &grpc.StreamDesc{StreamName: "SendStream", ClientStreams: true, ServerStreams: true}
	stream, err := s.conn.NewStream(ctx, desc, streamMethod, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		r.fail(err)
		return
	}
	m := len(reqs)
	sent := make([]int64, m)
	answered := make([]int64, m)
	window := make(chan struct{}, s.cfg.inflight)
	var readErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // reader
		defer wg.Done()
		defer cancel()
		for got := 0; got < m; {
			var b []byte
			if err := stream.RecvMsg(&b); err != nil {
				if !errors.Is(err, io.EOF) {
					readErr = err
				} else if got < m {
					readErr = status.Errorf(codes.Internal, "SendStream ended after %d of %d responses", got, m)
				}
				return
			}
			now := monoNow()
			id, messageID, detail, err := decodeStreamResponse(b)
			if err == nil && (id < 0 || id >= m || answered[id] != 0) {
				err = fmt.Errorf("response for request id %d, which is unknown or already answered", id)
			}
			if err != nil {
				readErr = status.Errorf(codes.Internal, "cannot match SendStream responses (check the field numbers in benchmarks/loadgen/stream.go): %v", err)
				return
			}
			got++
			if messageID == "" {
				answered[id] = -1 // refused: counted here, not as accepted
				r.fail(status.Errorf(codes.Unknown, "SendStream refused request %d: %s", id, detail))
			} else {
				answered[id] = now
			}
			<-window
		}
	}()
	write := func(i int, due int64) bool {
		select {
		case window <- struct{}{}:
		case <-ctx.Done():
			return false
		}
		b, err := encodeStreamRequest(reqs[i], i)
		if err != nil {
			fail("encoding a stream request: %v", err)
		}
		sent[i] = due
		if err := stream.SendMsg(&b); err != nil {
			return false // the reader learns the stream's status
		}
		return true
	}
	if rate <= 0 {
		for i := 0; i < m && write(i, monoNow()); i++ {
		}
	} else {
		r.BehindMs = float64(s.schedule(m, 1, rate, func(lo, _ int, due int64) bool { return write(lo, due) })) / 1e6
	}
	_ = stream.CloseSend()
	wg.Wait()
	if readErr != nil {
		if status.Code(readErr) == codes.Unimplemented {
			r.Unsupported = "Push.SendStream: " + status.Convert(readErr).Message()
		}
		r.fail(readErr)
	}
	for i := 0; i < m; i++ {
		if answered[i] > 0 && sent[i] != 0 {
			r.ok(i, i+1, sent[i], answered[i]-sent[i])
		}
	}
}
