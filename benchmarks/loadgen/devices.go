package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/pushplat/pushplat/clients/go/pushplatv1"
)

// Devices talk to the edge on the raw Edge.Connect stubs, not the SDK's Client: the SDK
// coalesces acks (10 ms linger) and dedups, while this harness, like the side-by-side one,
// acks every pushed frame the moment it arrives and records duplicates instead of hiding them.

// deviceConn is one device's transport: a gRPC Edge.Connect stream, or a WebSocket to the
// edge's --ws-port (ws.go), each binary message one ClientFrame or ServerFrame.
type deviceConn interface {
	Send(*pb.ClientFrame) error
	Recv() (*pb.ServerFrame, error)
	Close()
}

type grpcDevice struct {
	conn   *grpc.ClientConn
	stream pb.Edge_ConnectClient
	cancel context.CancelFunc
}

func (g *grpcDevice) Send(f *pb.ClientFrame) error   { return g.stream.Send(f) }
func (g *grpcDevice) Recv() (*pb.ServerFrame, error) { return g.stream.Recv() }
func (g *grpcDevice) Close()                         { g.cancel(); g.conn.Close() }

func dialDevice(transport, edge string) (deviceConn, error) {
	switch transport {
	case "grpc":
		// One ClientConn per device: its own TCP connection, as a real device has.
		conn, err := dial(edge)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		stream, err := pb.NewEdgeClient(conn).Connect(ctx)
		if err != nil {
			cancel()
			conn.Close()
			return nil, err
		}
		return &grpcDevice{conn: conn, stream: stream, cancel: cancel}, nil
	case "ws":
		return dialWebSocket(edge)
	default:
		return nil, fmt.Errorf("the load generator has no %q device transport (grpc or ws)", transport)
	}
}

type device struct {
	index  int
	conn   deviceConn
	sendMu sync.Mutex // acks (reader goroutine) and pings (ticker) share the stream
	recMu  sync.Mutex
	seqs   []uint32
	times  []int64
	closed atomic.Bool
}

func (d *device) send(f *pb.ClientFrame) error {
	d.sendMu.Lock()
	defer d.sendMu.Unlock()
	return d.conn.Send(f)
}

type fleet struct {
	edge, transport string
	topic           string // subscribe every device to it before it counts as connected
	connected       atomic.Int64
	measured        atomic.Int64
	probes          atomic.Int64
	warmup          atomic.Int64
	strays          atomic.Int64
	frames          atomic.Int64
	lost            atomic.Int64 // streams that ended while the bench still wanted them
	goAways         atomic.Int64
	errMu           sync.Mutex
	errors          []string
	devices         []*device
}

func (f *fleet) addError(format string, args ...any) {
	f.errMu.Lock()
	defer f.errMu.Unlock()
	if len(f.errors) < 10 { // the first few say what went wrong; more would flood the pipe
		f.errors = append(f.errors, fmt.Sprintf(format, args...))
	}
}

// connect opens one device's stream and waits for its Welcome, retrying what the edge
// may refuse under a connect burst (admission control) until the deadline.
func (f *fleet) connect(d *device, hello *pb.Hello, deadline time.Time) error {
	backoff := 50 * time.Millisecond
	for {
		err := f.connectOnce(d, hello)
		if err == nil {
			return nil
		}
		code := status.Code(err)
		retriable := code == codes.ResourceExhausted || code == codes.Unavailable
		if !retriable || time.Now().Add(backoff).After(deadline) {
			return err
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, time.Second)
	}
}

func (f *fleet) connectOnce(d *device, hello *pb.Hello) error {
	conn, err := dialDevice(f.transport, f.edge)
	if err != nil {
		return err
	}
	if err := conn.Send(&pb.ClientFrame{Frame: &pb.ClientFrame_Hello{Hello: hello}}); err != nil && !errors.Is(err, io.EOF) {
		conn.Close()
		return err
	}
	first, err := conn.Recv()
	if err != nil {
		conn.Close()
		return err
	}
	welcome := first.GetWelcome()
	if welcome == nil {
		conn.Close()
		return status.Errorf(codes.Unavailable, "edge answered Hello with %T, not Welcome", first.Frame)
	}
	if f.topic != "" {
		if err := subscribe(conn, f.topic); err != nil {
			conn.Close()
			return err
		}
	}
	d.conn = conn
	f.connected.Add(1)
	interval := time.Duration(welcome.GetHeartbeatIntervalMs()) * time.Millisecond
	go f.read(d)
	if interval > 0 {
		go d.heartbeat(interval)
	}
	return nil
}

// subscribe sends one Subscribe frame and waits for its SubscriptionResult (before the reader
// starts, so nothing else reads the stream meanwhile).
func subscribe(conn deviceConn, topic string) error {
	frame := &pb.ClientFrame{Frame: &pb.ClientFrame_Subscribe{Subscribe: &pb.Subscribe{Topics: []string{topic}, RequestId: "bench"}}}
	if err := conn.Send(frame); err != nil {
		return err
	}
	for {
		reply, err := conn.Recv()
		if err != nil {
			return err
		}
		if result := reply.GetSubscription(); result != nil {
			if len(result.GetRefused()) > 0 {
				refused := result.GetRefused()[0]
				// Retriable like a refused connect: the store was down, or the rate was hit.
				return status.Errorf(codes.Code(refused.GetCode()), "subscribe %q refused: %s", refused.GetTopic(), refused.GetMessage())
			}
			return nil
		}
	}
}

// read records every pushed message and acks each frame as soon as it arrives.
func (f *fleet) read(d *device) {
	for {
		frame, err := d.conn.Recv()
		if err != nil {
			if !d.closed.Load() {
				f.lost.Add(1)
				f.connected.Add(-1)
				f.addError("device %d: stream ended: %v", d.index, err)
			}
			return
		}
		switch x := frame.Frame.(type) {
		case *pb.ServerFrame_Pushes:
			now := monoNow()
			f.frames.Add(1)
			msgs := x.Pushes.GetMessages()
			ids := make([]string, 0, len(msgs))
			d.recMu.Lock()
			for _, m := range msgs {
				ids = append(ids, m.GetMessageId())
				kind, seq, ok := parsePayload(m.GetPayload())
				switch {
				case !ok:
					f.strays.Add(1)
				case kind == kindMeasured:
					d.seqs = append(d.seqs, seq)
					d.times = append(d.times, now)
					f.measured.Add(1)
				case kind == kindProbe:
					f.probes.Add(1)
				case kind == kindWarmup:
					f.warmup.Add(1)
				default:
					f.strays.Add(1)
				}
			}
			d.recMu.Unlock()
			if err := d.send(&pb.ClientFrame{Frame: &pb.ClientFrame_Ack{Ack: &pb.Ack{MessageIds: ids}}}); err != nil && !d.closed.Load() {
				f.addError("device %d: ack failed: %v", d.index, err)
			}
		case *pb.ServerFrame_GoAway:
			f.goAways.Add(1)
			f.addError("device %d: GoAway %s: %s", d.index, x.GoAway.GetReason(), x.GoAway.GetDetail())
		}
	}
}

func (d *device) heartbeat(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for range t.C {
		if d.closed.Load() {
			return
		}
		if err := d.send(&pb.ClientFrame{Frame: &pb.ClientFrame_Ping{Ping: &pb.Ping{}}}); err != nil {
			return
		}
	}
}

func runDevices(args []string) {
	fs := flag.NewFlagSet("devices", flag.ExitOnError)
	edge := fs.String("edge", "", "edge address host:port")
	transport := fs.String("transport", "grpc", "device transport: grpc, or ws (then -edge is ws://HOST:PORT)")
	first := fs.Int("first", 0, "index of the first device (device ids are <device-prefix><index>)")
	count := fs.Int("count", 1, "devices to connect")
	devicePrefix := fs.String("device-prefix", "d", "device id prefix")
	userPrefix := fs.String("user-prefix", "u", "user id prefix (user id = prefix + index) unless -user is set")
	user := fs.String("user", "", "one user id for every device (fan-out)")
	slice := fs.Int("connect-slice", 100, "devices that handshake at once")
	connectTimeout := fs.Duration("connect-timeout", 60*time.Second, "bound on connecting them all")
	topic := fs.String("topic", "", "subscribe every device to this topic (over its stream) once connected")
	fs.Parse(args)
	if *edge == "" {
		fail("devices: -edge is required")
	}

	f := &fleet{edge: *edge, transport: *transport, topic: *topic}
	for i := 0; i < *count; i++ {
		f.devices = append(f.devices, &device{index: *first + i})
	}
	deadline := time.Now().Add(*connectTimeout)
	var failed atomic.Int64
	for start := 0; start < len(f.devices); start += *slice {
		var wg sync.WaitGroup
		for _, d := range f.devices[start:min(start+*slice, len(f.devices))] {
			hello := &pb.Hello{
				DeviceId:      fmt.Sprintf("%s%d", *devicePrefix, d.index),
				UserId:        fmt.Sprintf("%s%d", *userPrefix, d.index),
				ClientVersion: "pushplat-bench-loadgen",
			}
			if *user != "" {
				hello.UserId = *user
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := f.connect(d, hello, deadline); err != nil {
					failed.Add(1)
					f.addError("device %d: connect: %v", d.index, err)
				}
			}()
		}
		wg.Wait()
	}
	if failed.Load() > 0 {
		stdout.send(map[string]any{"event": "error", "error": fmt.Sprintf("%d of %d devices did not connect", failed.Load(), *count), "errors": f.errors})
	} else {
		stdout.send(map[string]any{"event": "ready", "connected": f.connected.Load()})
	}

	for cmd := range commands() {
		switch cmd[0] {
		case "status":
			f.errMu.Lock()
			errs := append([]string{}, f.errors...)
			f.errMu.Unlock()
			stdout.send(map[string]any{
				"connected": f.connected.Load(), "measured": f.measured.Load(), "probes": f.probes.Load(),
				"warmup": f.warmup.Load(), "strays": f.strays.Load(), "frames": f.frames.Load(),
				"lost_streams": f.lost.Load(), "goaways": f.goAways.Load(), "errors": errs,
			})
		case "reset":
			// The next phase starts: frame counts are per phase.
			f.frames.Store(0)
			stdout.send(map[string]any{"ok": true})
		case "dump":
			var dev []int
			var seq []uint32
			var times []int64
			for _, d := range f.devices {
				d.recMu.Lock()
				for range d.seqs {
					dev = append(dev, d.index)
				}
				seq = append(seq, d.seqs...)
				times = append(times, d.times...)
				d.recMu.Unlock()
			}
			stdout.send(map[string]any{"dev": dev, "seq": seq, "t": times})
		case "quit", "close":
			for _, d := range f.devices {
				d.closed.Store(true)
				if d.conn != nil {
					d.conn.Close()
				}
			}
			stdout.send(map[string]any{"ok": true})
			return
		default:
			stdout.send(map[string]any{"error": "unknown command " + cmd[0]})
		}
	}
}
