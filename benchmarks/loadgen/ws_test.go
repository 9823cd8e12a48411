package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/pushplat/pushplat/clients/go/pushplatv1"
)

// A fake WebSocket edge: reads the Hello, answers Welcome, then closes with the given code.
func fakeWsEdge(t *testing.T, code websocket.StatusCode, reason string) string {
	t.Helper()
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/connect" {
			http.NotFound(w, r)
			return
		}
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{wsSubprotocol}})
		if err != nil || c.Subprotocol() != wsSubprotocol {
			t.Errorf("handshake: %v (subprotocol %q)", err, c.Subprotocol())
			return
		}
		kind, data, err := c.Read(r.Context())
		hello := &pb.ClientFrame{}
		if err != nil || kind != websocket.MessageBinary || proto.Unmarshal(data, hello) != nil || hello.GetHello() == nil {
			t.Errorf("expected a binary Hello, got %v %v", kind, err)
		}
		welcome, _ := proto.Marshal(&pb.ServerFrame{Frame: &pb.ServerFrame_Welcome{Welcome: &pb.Welcome{SessionId: "s"}}})
		_ = c.Write(r.Context(), websocket.MessageBinary, welcome)
		c.Close(code, reason)
	}))
	t.Cleanup(server.Close)
	return "ws" + strings.TrimPrefix(server.URL, "http")
}

func TestWebSocketDeviceMapsCloseCodesToStatuses(t *testing.T) {
	for _, tc := range []struct {
		code websocket.StatusCode
		want codes.Code
		eof  bool
	}{
		{websocket.StatusNormalClosure, codes.OK, true},
		{4000 + websocket.StatusCode(codes.ResourceExhausted), codes.ResourceExhausted, false},
		{4000 + websocket.StatusCode(codes.Unauthenticated), codes.Unauthenticated, false},
	} {
		conn, err := dialWebSocket(fakeWsEdge(t, tc.code, "why"))
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.Send(&pb.ClientFrame{Frame: &pb.ClientFrame_Hello{Hello: &pb.Hello{DeviceId: "d"}}}); err != nil {
			t.Fatal(err)
		}
		if f, err := conn.Recv(); err != nil || f.GetWelcome().GetSessionId() != "s" {
			t.Fatalf("welcome: %v %v", f, err)
		}
		_, err = conn.Recv()
		if tc.eof {
			if err == nil || err.Error() != "EOF" {
				t.Fatalf("close %d: want io.EOF, got %v", tc.code, err)
			}
		} else if status.Code(err) != tc.want || status.Convert(err).Message() != "why" {
			t.Fatalf("close %d: want %v 'why', got %v", tc.code, tc.want, err)
		}
		conn.Close()
	}
}
