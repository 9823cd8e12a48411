package pushplat

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	pb "github.com/pushplat/pushplat/clients/go/pushplatv1"
)

func nextTopicFrame(t *testing.T, conn *fakeConn) *pb.ClientFrame {
	t.Helper()
	select {
	case f := <-conn.topics:
		return f
	case <-time.After(wait):
		t.Fatal("timed out waiting for a Subscribe/Unsubscribe frame")
		return nil
	}
}

func TestSubscribeSendsAFrameAndReturnsTheEdgesAnswer(t *testing.T) {
	e := startFakeEdge(t)
	c := dialTest(t, e, Options{DeviceID: "d1"})
	conn := e.nextConn(t)
	conn.welcome(t, "s1", 0)
	waitConnected(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	type reply struct {
		r   *pb.SubscriptionResult
		err error
	}
	done := make(chan reply, 1)
	go func() {
		r, err := c.Subscribe(ctx, "news", "bad name")
		done <- reply{r, err}
	}()
	f := nextTopicFrame(t, conn).GetSubscribe()
	if !slices.Equal(f.GetTopics(), []string{"news", "bad name"}) || f.GetRequestId() == "" {
		t.Fatalf("frame %v", f)
	}
	conn.send(t, &pb.ServerFrame{Frame: &pb.ServerFrame_Subscription{Subscription: &pb.SubscriptionResult{
		RequestId: f.GetRequestId(), Applied: []string{"news"}, TopicCount: 1,
		Refused: []*pb.TopicRefusal{{Topic: "bad name", Code: int32(codes.InvalidArgument), Message: "topic names must match"}},
	}}})
	got := <-done
	if got.err != nil || !slices.Equal(got.r.GetApplied(), []string{"news"}) || got.r.GetRefused()[0].GetCode() != int32(codes.InvalidArgument) {
		t.Fatalf("result %v, %v", got.r, got.err)
	}

	go func() {
		r, err := c.Unsubscribe(ctx, "news")
		done <- reply{r, err}
	}()
	u := nextTopicFrame(t, conn).GetUnsubscribe()
	if !slices.Equal(u.GetTopics(), []string{"news"}) || u.GetRequestId() == f.GetRequestId() {
		t.Fatalf("unsubscribe frame %v", u)
	}
	// The stream ends before the answer: the call fails with UNAVAILABLE instead of hanging.
	conn.abort(codes.Unavailable, "edge went away")
	got = <-done
	var perr *Error
	if !errors.As(got.err, &perr) || perr.Code != codes.Unavailable {
		t.Fatalf("want UNAVAILABLE, got %v", got.err)
	}
}

func TestSubscribeChecksTheTopicCountLocally(t *testing.T) {
	e := startFakeEdge(t)
	c := dialTest(t, e, Options{DeviceID: "d1"})
	many := make([]string, MaxTopicsPerRequest+1)
	for i := range many {
		many[i] = "t"
	}
	if _, err := c.Subscribe(context.Background(), many...); err == nil {
		t.Fatal("101 topics were accepted")
	}
	if _, err := c.Subscribe(context.Background()); err == nil {
		t.Fatal("no topic was accepted")
	}
}

func TestSendToATopic(t *testing.T) {
	req, err := MakeRequest(SendOptions{Topic: "news", Payload: []byte("x"), Priority: PriorityHigh})
	if err != nil || req.GetTopic() != "news" || req.GetPriority() != PriorityHigh {
		t.Fatalf("%v %v", req, err)
	}
	if _, err := MakeRequest(SendOptions{Topic: "news", DeviceID: "d"}); err == nil {
		t.Fatal("two targets were accepted")
	}
}
