package pushplat

import (
	"context"
	"crypto/tls"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	pb "github.com/pushplat/pushplat/clients/go/pushplatv1"
)

// DefaultSendTimeout is the gRPC deadline of a Send when ctx has none.
const DefaultSendTimeout = 10 * time.Second

// SenderOptions configure a Sender.
type SenderOptions struct {
	// APIKey, when set, is sent as "authorization: Bearer <APIKey>" on every call.
	APIKey string
	// Timeout is the gRPC deadline for calls whose ctx has none; default DefaultSendTimeout.
	Timeout time.Duration
	// TLS, when set, connects over TLS with this configuration (see LoadTLS; give it a
	// client certificate for an api that requires mutual TLS); nil means plaintext.
	TLS *tls.Config
	// DialOptions are added to grpc.NewClient (after the transport credentials).
	DialOptions []grpc.DialOption
}

// SendOptions describe one message. Give exactly one of UserID (every device of the user),
// DeviceID, or Topic (every device subscribed to it that is connected when the message
// reaches its edge: at-most-once).
type SendOptions struct {
	UserID   string
	DeviceID string
	Topic    string
	Payload  []byte
	// ContentType describes Payload, e.g. "application/json".
	ContentType string
	// Priority picks the lane; unspecified means normal.
	Priority pb.Priority
	// TTLSeconds is how long the message stays deliverable; 0 means the server default.
	TTLSeconds int64
	// CollapseKey: a newer message with the same key replaces an older one.
	CollapseKey string
	// IdempotencyKey: a repeated Send with the same key returns the first message_id with
	// Duplicate = true, which makes retries safe.
	IdempotencyKey string
	// AtLeastOnce keeps the message in the device's inbox until it acks (or the TTL ends).
	AtLeastOnce bool
	Labels      map[string]string
}

// Sender sends messages through the api's Push service. A Send returns once the message is
// enqueued (fire-and-forget). gRPC failures come back as *Error; the Sender does not retry,
// since only the caller knows whether a retry is safe (use IdempotencyKey to make it so).
// Safe for concurrent use.
type Sender struct {
	api     string
	conn    *grpc.ClientConn
	stub    pb.PushClient
	apiKey  string
	timeout time.Duration
}

// NewSender creates a Sender for the api at addr (host:port). It connects lazily.
func NewSender(addr string, opts SenderOptions) (*Sender, error) {
	if addr == "" {
		return nil, errors.New("pushplat: NewSender needs the api address, e.g. \"127.0.0.1:50052\"")
	}
	if opts.Timeout < 0 {
		return nil, errors.New("pushplat: Timeout must be >= 0")
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultSendTimeout
	}
	dialOpts := append([]grpc.DialOption{transport(opts.TLS)}, opts.DialOptions...)
	conn, err := grpc.NewClient(addr, dialOpts...)
	if err != nil {
		return nil, err
	}
	return &Sender{api: addr, conn: conn, stub: pb.NewPushClient(conn), apiKey: opts.APIKey, timeout: opts.Timeout}, nil
}

// Close closes the connection.
func (s *Sender) Close() error { return s.conn.Close() }

// MakeRequest builds a SendRequest from SendOptions, checking what the server would reject
// locally (the target).
func MakeRequest(o SendOptions) (*pb.SendRequest, error) {
	// The target is a oneof: setting both would silently keep only one of them.
	targets := 0
	for _, t := range []string{o.UserID, o.DeviceID, o.Topic} {
		if t != "" {
			targets++
		}
	}
	if targets != 1 {
		return nil, errors.New("pushplat: give exactly one of UserID, DeviceID or Topic")
	}
	priority := o.Priority
	if priority == PriorityUnspecified {
		priority = PriorityNormal
	}
	delivery := pb.DeliveryMode_AT_MOST_ONCE
	if o.AtLeastOnce {
		delivery = pb.DeliveryMode_AT_LEAST_ONCE
	}
	payload := o.Payload
	if payload == nil {
		payload = []byte{}
	}
	req := &pb.SendRequest{
		Payload:        payload,
		ContentType:    o.ContentType,
		Priority:       priority,
		TtlSeconds:     o.TTLSeconds,
		CollapseKey:    o.CollapseKey,
		IdempotencyKey: o.IdempotencyKey,
		Delivery:       delivery,
		Labels:         o.Labels,
	}
	if o.UserID != "" {
		req.Target = &pb.SendRequest_UserId{UserId: o.UserID}
	} else if o.Topic != "" {
		req.Target = &pb.SendRequest_Topic{Topic: o.Topic}
	} else {
		req.Target = &pb.SendRequest_DeviceId{DeviceId: o.DeviceID}
	}
	return req, nil
}

func (s *Sender) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	cancel := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		// A gRPC deadline, not a local timer: the server sees it and stops work past it.
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
	}
	if s.apiKey != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.apiKey)
	}
	return ctx, cancel
}

// Send sends one message to a user (all their devices) or one device.
func (s *Sender) Send(ctx context.Context, o SendOptions) (*pb.SendResponse, error) {
	req, err := MakeRequest(o)
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	var trailer metadata.MD
	resp, err := s.stub.Send(ctx, req, grpc.Trailer(&trailer))
	if err != nil {
		return nil, errorFrom(err, trailer)
	}
	return resp, nil
}

// SendBatch sends many messages in one call; all are enqueued or the call fails.
// Responses are in request order.
func (s *Sender) SendBatch(ctx context.Context, messages []SendOptions) ([]*pb.SendResponse, error) {
	batch := &pb.SendBatchRequest{Requests: make([]*pb.SendRequest, 0, len(messages))}
	for _, o := range messages {
		req, err := MakeRequest(o)
		if err != nil {
			return nil, err
		}
		batch.Requests = append(batch.Requests, req)
	}
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	var trailer metadata.MD
	resp, err := s.stub.SendBatch(ctx, batch, grpc.Trailer(&trailer))
	if err != nil {
		return nil, errorFrom(err, trailer)
	}
	return resp.GetResponses(), nil
}

func (s *Sender) String() string {
	key := "none"
	if s.apiKey != "" {
		key = "set"
	}
	return "Sender(api=" + s.api + ", api_key=" + key + ")"
}
