// Command loadgen is the client side of scripts/bench: `loadgen devices` holds device
// streams and records when each message arrives; `loadgen send` sends messages and records
// when each call was made; `loadgen health` waits for a server to be SERVING.
//
// benchmarks/bench.py drives it over stdin/stdout: one command per line in, one JSON
// object per line out. Times are CLOCK_MONOTONIC nanoseconds, which every process on the
// machine shares, so a receive time minus a call time is the latency across processes.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// A bench payload starts with magic, a kind byte and a big-endian sequence number; the
// rest is filler up to the configured size. Devices ignore anything else (counted as strays).
const (
	payloadMagic  = "PPB1"
	payloadHeader = len(payloadMagic) + 1 + 4
	kindMeasured  = byte(0)
	kindProbe     = byte(1)
	kindWarmup    = byte(2)
)

func makePayload(size int, kind byte, seq uint32) []byte {
	p := make([]byte, max(size, payloadHeader))
	copy(p, payloadMagic)
	p[len(payloadMagic)] = kind
	binary.BigEndian.PutUint32(p[len(payloadMagic)+1:], seq)
	for i := payloadHeader; i < len(p); i++ {
		p[i] = 'x'
	}
	return p
}

func parsePayload(p []byte) (kind byte, seq uint32, ok bool) {
	if len(p) < payloadHeader || string(p[:len(payloadMagic)]) != payloadMagic {
		return 0, 0, false
	}
	return p[len(payloadMagic)], binary.BigEndian.Uint32(p[len(payloadMagic)+1:]), true
}

// monoNow is CLOCK_MONOTONIC in ns: comparable between the sender and device processes
// (Go's own monotonic reading is relative to each process's start).
func monoNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// wire writes one JSON object per line to stdout; safe for concurrent use.
type wire struct {
	mu  sync.Mutex
	out *bufio.Writer
}

var stdout = &wire{out: bufio.NewWriterSize(os.Stdout, 1<<20)}

func (w *wire) send(v any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"error": "cannot encode reply: " + err.Error()})
	}
	w.out.Write(b)
	w.out.WriteByte('\n')
	w.out.Flush()
}

// commands yields stdin lines as (verb, args); EOF (the bench went away) yields "quit".
func commands() <-chan []string {
	ch := make(chan []string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) > 0 {
				ch <- f
			}
		}
		ch <- []string{"quit"}
	}()
	return ch
}

func dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "loadgen: "+format+"\n", args...)
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: loadgen devices|send|health [flags] (see -h of each)")
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "devices":
		runDevices(args)
	case "send":
		runSender(args)
	case "health":
		runHealth(args)
	default:
		fail("unknown command %q: want devices, send or health", os.Args[1])
	}
}

// runHealth exits 0 once every address answers grpc.health.v1 SERVING, 1 on timeout.
func runHealth(args []string) {
	fs := flag.NewFlagSet("health", flag.ExitOnError)
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	fs.Parse(args)
	deadline := time.Now().Add(*timeout)
	for _, addr := range fs.Args() {
		conn, err := dial(addr)
		if err != nil {
			fail("%s: %v", addr, err)
		}
		client := healthpb.NewHealthClient(conn)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
			cancel()
			if err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "loadgen: %s not SERVING after %v (last: %v)\n", addr, *timeout, err)
				os.Exit(1)
			}
			time.Sleep(50 * time.Millisecond)
		}
		conn.Close()
	}
}
