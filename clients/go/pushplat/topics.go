package pushplat

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	pb "github.com/pushplat/pushplat/clients/go/pushplatv1"
)

// MaxTopicsPerRequest is the most topics the edge takes in one Subscribe/Unsubscribe frame
// (and the api in one call); a frame with more ends the stream.
const MaxTopicsPerRequest = 100

// topicWaiters are the Subscribe/Unsubscribe frames sent on the live stream and not answered
// yet, by request_id. Guarded by Client.mu.
type topicWaiters struct {
	next    int
	waiting map[string]chan topicAnswer
	frames  []*pb.ClientFrame // queued for the writer
}

type topicAnswer struct {
	result *pb.SubscriptionResult
	err    *Error
}

// Subscribe subscribes this device to topics (at most MaxTopicsPerRequest). Subscriptions
// belong to the device: the edge keeps them across reconnects, on any edge. The result names
// the Applied topics and the Refused ones, each with a gRPC status Code and a Message (a bad
// name, the device's topic limit, the store down, too many changes a second). It waits for a
// connection first; if the stream ends before the answer it returns an *Error with
// codes.Unavailable (retrying is safe: subscribing is idempotent).
func (c *Client) Subscribe(ctx context.Context, topics ...string) (*pb.SubscriptionResult, error) {
	return c.changeTopics(ctx, true, topics)
}

// Unsubscribe is the reverse of Subscribe.
func (c *Client) Unsubscribe(ctx context.Context, topics ...string) (*pb.SubscriptionResult, error) {
	return c.changeTopics(ctx, false, topics)
}

func (c *Client) changeTopics(ctx context.Context, subscribe bool, topics []string) (*pb.SubscriptionResult, error) {
	if len(topics) == 0 {
		return nil, errors.New("pushplat: give at least one topic")
	}
	if len(topics) > MaxTopicsPerRequest {
		return nil, fmt.Errorf("pushplat: at most %d topics per call, got %d", MaxTopicsPerRequest, len(topics))
	}
	if err := c.WaitConnected(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	s := c.sess
	if s == nil {
		c.mu.Unlock()
		return nil, &Error{Code: codes.Unavailable, Message: "not connected; retry"}
	}
	if s.topics.waiting == nil {
		s.topics.waiting = map[string]chan topicAnswer{}
	}
	s.topics.next++
	id := strconv.Itoa(s.topics.next)
	answer := make(chan topicAnswer, 1)
	s.topics.waiting[id] = answer
	var frame *pb.ClientFrame
	if subscribe {
		frame = &pb.ClientFrame{Frame: &pb.ClientFrame_Subscribe{Subscribe: &pb.Subscribe{Topics: topics, RequestId: id}}}
	} else {
		frame = &pb.ClientFrame{Frame: &pb.ClientFrame_Unsubscribe{Unsubscribe: &pb.Unsubscribe{Topics: topics, RequestId: id}}}
	}
	s.topics.frames = append(s.topics.frames, frame)
	c.mu.Unlock()
	s.signal()
	select {
	case a := <-answer:
		if a.err != nil {
			return nil, a.err
		}
		return a.result, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(s.topics.waiting, id)
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}

// takeTopicFrames hands the writer the frames queued since it last looked.
func (c *Client) takeTopicFrames(s *session) []*pb.ClientFrame {
	c.mu.Lock()
	defer c.mu.Unlock()
	frames := s.topics.frames
	s.topics.frames = nil
	return frames
}

// onSubscription delivers the edge's answer to the call that waits for it.
func (c *Client) onSubscription(r *pb.SubscriptionResult) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.sess; s != nil {
		if answer, ok := s.topics.waiting[r.GetRequestId()]; ok {
			delete(s.topics.waiting, r.GetRequestId())
			answer <- topicAnswer{result: r}
		}
	}
}

// failTopicWaiters ends every unanswered call when the session ends. Called with c.mu held.
func (s *session) failTopicWaiters() {
	for id, answer := range s.topics.waiting {
		answer <- topicAnswer{err: &Error{Code: codes.Unavailable, Message: "the stream ended before the edge answered; retry"}}
		delete(s.topics.waiting, id)
	}
	s.topics.frames = nil
}

// SubscribeOptions name whose subscriptions Sender.Subscribe and Sender.Unsubscribe change:
// devices by id, and every known device of each user. At most 1,000 devices (users
// expanded) and MaxTopicsPerRequest topics per call.
type SubscribeOptions struct {
	DeviceIDs []string
	UserIDs   []string
	Topics    []string
}

// Subscribe subscribes devices to topics (Push.Subscribe); per device, what was applied and
// what was refused.
func (s *Sender) Subscribe(ctx context.Context, o SubscribeOptions) (*pb.SubscribeResponse, error) {
	return s.changeTopics(ctx, o, s.stub.Subscribe)
}

// Unsubscribe is the reverse of Subscribe (Push.Unsubscribe).
func (s *Sender) Unsubscribe(ctx context.Context, o SubscribeOptions) (*pb.SubscribeResponse, error) {
	return s.changeTopics(ctx, o, s.stub.Unsubscribe)
}

type topicCall func(context.Context, *pb.SubscribeRequest, ...grpc.CallOption) (*pb.SubscribeResponse, error)

func (s *Sender) changeTopics(ctx context.Context, o SubscribeOptions, call topicCall) (*pb.SubscribeResponse, error) {
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	var trailer metadata.MD
	resp, err := call(ctx, &pb.SubscribeRequest{DeviceIds: o.DeviceIDs, UserIds: o.UserIDs, Topics: o.Topics}, grpc.Trailer(&trailer))
	if err != nil {
		return nil, errorFrom(err, trailer)
	}
	return resp, nil
}

// GetSubscriptions lists the topics one device is subscribed to, sorted.
func (s *Sender) GetSubscriptions(ctx context.Context, deviceID string) ([]string, error) {
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	var trailer metadata.MD
	resp, err := s.stub.GetSubscriptions(ctx, &pb.GetSubscriptionsRequest{DeviceId: deviceID}, grpc.Trailer(&trailer))
	if err != nil {
		return nil, errorFrom(err, trailer)
	}
	return resp.GetTopics(), nil
}
