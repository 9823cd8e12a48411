package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/pushplat/pushplat/clients/go/pushplatv1"
)

// The edge's WebSocket wire format (README "WebSocket"): subprotocol pushplat.v1 on
// /connect, one binary message per frame, close code 4000+c for gRPC status c.
const (
	wsSubprotocol = "pushplat.v1"
	wsStatusBase  = 4000
)

type wsDevice struct {
	conn   *websocket.Conn
	ctx    context.Context
	cancel context.CancelFunc
}

func dialWebSocket(edge string) (deviceConn, error) {
	url := strings.TrimRight(edge, "/")
	if !strings.HasSuffix(url, "/connect") {
		url += "/connect"
	}
	ctx, cancel := context.WithCancel(context.Background())
	dialCtx, dialCancel := context.WithTimeout(ctx, 30*time.Second)
	defer dialCancel()
	conn, _, err := websocket.Dial(dialCtx, url, &websocket.DialOptions{
		Subprotocols:    []string{wsSubprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		cancel()
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	conn.SetReadLimit(64 << 20) // the edge caps its frames; this client takes what it sends
	return &wsDevice{conn: conn, ctx: ctx, cancel: cancel}, nil
}

func (w *wsDevice) Send(f *pb.ClientFrame) error {
	data, err := proto.Marshal(f)
	if err != nil {
		return err
	}
	if err := w.conn.Write(w.ctx, websocket.MessageBinary, data); err != nil {
		return wsError(err)
	}
	return nil
}

func (w *wsDevice) Recv() (*pb.ServerFrame, error) {
	kind, data, err := w.conn.Read(w.ctx)
	if err != nil {
		return nil, wsError(err)
	}
	if kind != websocket.MessageBinary {
		return nil, status.Error(codes.Internal, "the edge sent a text message")
	}
	frame := &pb.ServerFrame{}
	if err := proto.Unmarshal(data, frame); err != nil {
		return nil, status.Error(codes.Internal, fmt.Sprintf("malformed ServerFrame: %v", err))
	}
	return frame, nil
}

func (w *wsDevice) Close() {
	w.conn.Close(websocket.StatusNormalClosure, "")
	w.cancel()
}

// wsError maps a close to what a gRPC stream would have ended with: io.EOF for a normal
// close, the status for 4000+c, UNAVAILABLE for a dropped connection.
func wsError(err error) error {
	code := websocket.CloseStatus(err)
	switch {
	case code == websocket.StatusNormalClosure || code == websocket.StatusGoingAway:
		return io.EOF
	case code >= wsStatusBase && code <= wsStatusBase+16:
		reason := err.Error()
		var closeErr websocket.CloseError
		if errors.As(err, &closeErr) {
			reason = closeErr.Reason
		}
		return status.Error(codes.Code(code-wsStatusBase), reason)
	default:
		return status.Error(codes.Unavailable, err.Error())
	}
}
