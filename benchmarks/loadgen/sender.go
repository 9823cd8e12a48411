package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	rpccode "google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pushplat/pushplat/clients/go/pushplat"
	pb "github.com/pushplat/pushplat/clients/go/pushplatv1"
)

type senderConfig struct {
	mode         string // single | batch | stream
	devices      int    // round robin over <devicePrefix>0..devices-1 ...
	devicePrefix string
	user         string // ... or every message to this user (fan-out)
	payloadBytes int
	inflight     int     // calls (single, batch) or unanswered requests (stream) at once
	batchSize    int     // messages per SendBatch
	rate         float64 // offered msg/s; 0 = closed loop
	maxOpen      int     // open loop: calls in flight before the generator falls behind
	timeout      time.Duration
}

type sender struct {
	cfg    senderConfig
	conn   *grpc.ClientConn
	client pb.PushClient
}

// result is one phase (warm-up or the measured run) as bench.py reads it.
type result struct {
	Accepted    int            `json:"accepted"`
	Errors      map[string]int `json:"errors"`
	FirstError  string         `json:"first_error,omitempty"`
	Unsupported string         `json:"unsupported,omitempty"`
	// Call time of each message by sequence number (0: not accepted). Open loop: the time
	// the schedule said to send it, so a generator that falls behind cannot hide latency.
	TCall     []int64 `json:"t_call,omitempty"`
	Start     int64   `json:"start"`
	End       int64   `json:"end"`
	RPCP50Ms  float64 `json:"rpc_p50_ms"`
	RPCP99Ms  float64 `json:"rpc_p99_ms"`
	BehindMs  float64 `json:"behind_schedule_max_ms"`
	Calls     int     `json:"calls"`
	mu        sync.Mutex
	durations []int64
}

func newResult(m int) *result { return &result{Errors: map[string]int{}, TCall: make([]int64, m)} }

func codeName(c codes.Code) string {
	if name, ok := rpccode.Code_name[int32(c)]; ok {
		return name
	}
	return c.String()
}

func (r *result) fail(err error) {
	st := status.Convert(err)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Errors[codeName(st.Code())]++
	if r.FirstError == "" {
		r.FirstError = codeName(st.Code()) + ": " + st.Message()
	}
}

func (r *result) ok(lo, hi int, t0, took int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := lo; i < hi; i++ {
		r.TCall[i] = t0
	}
	r.Accepted += hi - lo
	r.durations = append(r.durations, took)
}

func (r *result) finish() {
	slices.Sort(r.durations)
	pct := func(p float64) float64 {
		if len(r.durations) == 0 {
			return 0
		}
		rank := max(1, int(p/100*float64(len(r.durations))+0.999999))
		return float64(r.durations[rank-1]) / 1e6
	}
	r.RPCP50Ms, r.RPCP99Ms = pct(50), pct(99)
	r.Calls = len(r.durations)
}

func (s *sender) request(kind byte, seq int) *pb.SendRequest {
	o := pushplat.SendOptions{Payload: makePayload(s.cfg.payloadBytes, kind, uint32(seq))}
	if s.cfg.user != "" {
		o.UserID = s.cfg.user
	} else {
		o.DeviceID = s.cfg.devicePrefix + strconv.Itoa(seq%s.cfg.devices)
	}
	req, err := pushplat.MakeRequest(o)
	if err != nil {
		fail("building a request: %v", err) // the flags name no target: a bench bug
	}
	return req
}

func (s *sender) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.cfg.timeout)
}

// probe sends one message with plain Send (every server has it) to the first target.
func (s *sender) probe() map[string]any {
	ctx, cancel := s.ctx()
	defer cancel()
	if _, err := s.client.Send(ctx, s.request(kindProbe, 0)); err != nil {
		st := status.Convert(err)
		return map[string]any{"ok": false, "error": codeName(st.Code()) + ": " + st.Message()}
	}
	return map[string]any{"ok": true}
}

// run sends m messages with sequence numbers first..first+m-1 (TCall[i] is first+i's).
func (s *sender) run(kind byte, m, first int, rate float64) *result {
	reqs := make([]*pb.SendRequest, m)
	for i := range reqs {
		reqs[i] = s.request(kind, first+i)
	}
	r := newResult(m)
	r.Start = monoNow()
	if s.cfg.mode == "stream" {
		s.runStream(reqs, r, rate)
	} else {
		s.runUnary(reqs, r, rate)
	}
	r.End = monoNow()
	r.finish()
	return r
}

// runUnary sends with Send (one message per call) or SendBatch (batchSize per call).
func (s *sender) runUnary(reqs []*pb.SendRequest, r *result, rate float64) {
	unit := 1
	if s.cfg.mode == "batch" {
		unit = s.cfg.batchSize
	}
	var unimplemented atomic.Bool
	call := func(lo, hi int, t0 int64) {
		ctx, cancel := s.ctx()
		defer cancel()
		start := monoNow()
		var err error
		if unit == 1 {
			_, err = s.client.Send(ctx, reqs[lo])
		} else {
			_, err = s.client.SendBatch(ctx, &pb.SendBatchRequest{Requests: reqs[lo:hi]})
		}
		if err != nil {
			if status.Code(err) == codes.Unimplemented {
				unimplemented.Store(true)
			}
			r.fail(err)
			return
		}
		r.ok(lo, hi, t0, monoNow()-start)
	}
	m := len(reqs)
	if rate <= 0 {
		var next atomic.Int64
		var wg sync.WaitGroup
		for w := 0; w < s.cfg.inflight; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !unimplemented.Load() {
					lo := int(next.Add(1)-1) * unit
					if lo >= m {
						return
					}
					call(lo, min(lo+unit, m), monoNow())
				}
			}()
		}
		wg.Wait()
	} else {
		sem := make(chan struct{}, s.cfg.maxOpen)
		var wg sync.WaitGroup
		behind := s.schedule(m, unit, rate, func(lo, hi int, due int64) bool {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				call(lo, hi, due)
			}()
			return !unimplemented.Load()
		})
		wg.Wait()
		r.BehindMs = float64(behind) / 1e6
	}
	if unimplemented.Load() {
		r.Unsupported = r.FirstError
	}
}

// schedule calls fire for each unit of messages at its due time on a steady rate (open
// loop) and returns how far behind schedule the generator ever was, in ns.
func (s *sender) schedule(m, unit int, rate float64, fire func(lo, hi int, due int64) bool) int64 {
	start := monoNow()
	var behind int64
	for lo := 0; lo < m; lo += unit {
		due := start + int64(float64(lo)/rate*1e9)
		if wait := due - monoNow(); wait > 0 {
			time.Sleep(time.Duration(wait))
		}
		if late := monoNow() - due; late > behind {
			behind = late
		}
		if !fire(lo, min(lo+unit, m), due) {
			break
		}
	}
	return behind
}

func runSender(args []string) {
	fs := flag.NewFlagSet("send", flag.ExitOnError)
	api := fs.String("api", "", "api address host:port")
	var cfg senderConfig
	fs.StringVar(&cfg.mode, "mode", "single", "single (Send), batch (SendBatch) or stream (SendStream)")
	fs.IntVar(&cfg.devices, "devices", 1, "round robin over this many devices")
	fs.StringVar(&cfg.devicePrefix, "device-prefix", "d", "device id prefix")
	fs.StringVar(&cfg.user, "user", "", "send every message to this user instead (fan-out)")
	fs.IntVar(&cfg.payloadBytes, "payload-bytes", 100, "payload size")
	fs.IntVar(&cfg.inflight, "inflight", 64, "calls (or unanswered stream requests) in flight")
	fs.IntVar(&cfg.batchSize, "batch-size", 100, "messages per SendBatch")
	fs.Float64Var(&cfg.rate, "rate", 0, "offered messages/s in the measured run; 0 = closed loop")
	fs.IntVar(&cfg.maxOpen, "max-open", 10000, "open loop: calls in flight before the generator falls behind")
	fs.DurationVar(&cfg.timeout, "timeout", 30*time.Second, "deadline of each call (stream: of the whole stream)")
	fs.Parse(args)
	if *api == "" {
		fail("send: -api is required")
	}
	if cfg.inflight < 1 || cfg.batchSize < 1 || cfg.devices < 1 || cfg.maxOpen < 1 {
		fail("send: -inflight, -batch-size, -devices and -max-open must be >= 1")
	}
	conn, err := dial(*api)
	if err != nil {
		fail("send: %v", err)
	}
	defer conn.Close()
	s := &sender{cfg: cfg, conn: conn, client: pb.NewPushClient(conn)}
	stdout.send(map[string]any{"event": "ready"})
	for cmd := range commands() {
		switch cmd[0] {
		case "probe":
			stdout.send(s.probe())
		case "warmup", "run":
			// warmup|run COUNT [FIRST]: FIRST lets the bench send a run in steps (fan-out).
			if len(cmd) < 2 || len(cmd) > 3 {
				stdout.send(map[string]any{"error": cmd[0] + " wants COUNT [FIRST]"})
				continue
			}
			m, err := strconv.Atoi(cmd[1])
			first := 0
			if err == nil && len(cmd) == 3 {
				first, err = strconv.Atoi(cmd[2])
			}
			if err != nil || m < 0 || first < 0 {
				stdout.send(map[string]any{"error": fmt.Sprintf("bad count or first sequence number in %q", cmd)})
				continue
			}
			if cmd[0] == "warmup" {
				r := s.run(kindWarmup, m, first, 0)
				r.TCall = nil
				stdout.send(r)
			} else {
				stdout.send(s.run(kindMeasured, m, first, cfg.rate))
			}
		case "quit":
			stdout.send(map[string]any{"ok": true})
			return
		default:
			stdout.send(map[string]any{"error": "unknown command " + cmd[0]})
		}
	}
}
