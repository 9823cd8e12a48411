// Command interop drives the Go SDK for the cross-language tests in tests/interop: it
// listens as a device or sends as a backend, and prints one JSON object per line.
//
//	interop listen --edge HOST:PORT (--token T | --user U --device D) [--count N] [--timeout-ms MS]
//	               [--tls-ca FILE] [--digest] [--topic T]
//	interop send --api HOST:PORT [--api-key K] [--tls-ca FILE [--tls-cert FILE --tls-key FILE]]
//	             (--user U | --device D | --topic T) [--priority high]
//	             [--ttl S] [--collapse-key K] [--idempotency-key K] [--at-least-once]
//	             [--content-type T] [--label K=V]... PAYLOAD
//
// listen prints {"event":"connected",...} once welcomed, then {"event":"message",...} per
// message (acked as it is handed over), and exits 0 after --count messages. Failures print
// {"event":"error","code":"UNAUTHENTICATED","details":...} and exit 1 (2 for a timeout).
package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/status"

	"github.com/pushplat/pushplat/clients/go/pushplat"
)

type labels map[string]string

func (l labels) String() string { return fmt.Sprint(map[string]string(l)) }

func (l labels) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("label %q is not K=V", s)
	}
	l[k] = v
	return nil
}

func emit(v map[string]any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(b))
}

func fail(err error) int {
	code := status.Code(err).String()
	details := err.Error()
	var perr *pushplat.Error
	if errors.As(err, &perr) {
		details = perr.Message
	}
	if errors.Is(err, context.DeadlineExceeded) {
		emit(map[string]any{"event": "error", "code": "TIMEOUT", "details": details})
		return 2
	}
	emit(map[string]any{"event": "error", "code": strings.ToUpper(codeName(code)), "details": details})
	return 1
}

// codeName turns grpc's "Unauthenticated" into "UNAUTHENTICATED" (the proto/Python spelling).
func codeName(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func listen(args []string) int {
	fs := flag.NewFlagSet("listen", flag.ExitOnError)
	edge := fs.String("edge", "127.0.0.1:50051", "edge address")
	token := fs.String("token", "", "device token")
	user := fs.String("user", "", "user id (auth off)")
	device := fs.String("device", "", "device id (auth off)")
	count := fs.Int("count", 1, "exit after this many messages")
	timeoutMs := fs.Int("timeout-ms", 30_000, "give up after this many milliseconds")
	tlsCA := fs.String("tls-ca", "", "connect over TLS, checking the edge against this PEM CA")
	digest := fs.Bool("digest", false, "print payload_bytes and payload_sha256 instead of the payload")
	topic := fs.String("topic", "", "subscribe the device to this topic once connected")
	_ = fs.Parse(args)

	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(*timeoutMs)*time.Millisecond)
	defer cancel()
	tlsConfig, err := tlsFrom(*tlsCA, "", "")
	if err != nil {
		return fail(err)
	}
	client, err := pushplat.Dial(*edge, pushplat.Options{Token: *token, UserID: *user, DeviceID: *device, TLS: tlsConfig})
	if err != nil {
		return fail(err)
	}
	defer client.Close()
	if err := client.WaitConnected(ctx); err != nil {
		return fail(err)
	}
	emit(map[string]any{"event": "connected", "session_id": client.SessionID(), "edge_id": client.EdgeID()})
	if *topic != "" {
		result, err := client.Subscribe(ctx, *topic)
		if err != nil {
			return fail(err)
		}
		emit(map[string]any{"event": "subscribed", "applied": result.GetApplied(), "refused": len(result.GetRefused())})
	}
	for received := 0; received < *count; received++ {
		m, err := client.Recv(ctx)
		if err != nil {
			return fail(err)
		}
		out := map[string]any{
			"event":         "message",
			"message_id":    m.GetMessageId(),
			"priority":      pushplat.PriorityName(m.GetPriority()),
			"content_type":  m.GetContentType(),
			"collapse_key":  m.GetCollapseKey(),
			"created_at_ms": m.GetCreatedAtMs(),
			"requires_ack":  m.GetRequiresAck(),
			"labels":        m.GetLabels(),
			"topic":         m.GetTopic(),
			"session_id":    client.SessionID(),
			"connects":      client.Connects(),
		}
		sum := sha256.Sum256(m.GetPayload())
		out["payload_bytes"] = len(m.GetPayload())
		out["payload_sha256"] = hex.EncodeToString(sum[:])
		if *digest {
			// Large payloads: the digest says they arrived whole without printing megabytes.
		} else if utf8.Valid(m.GetPayload()) {
			out["payload"] = string(m.GetPayload())
		} else {
			out["payload"] = m.GetPayload() // base64 in JSON
			out["payload_encoding"] = "base64"
		}
		emit(out)
	}
	return 0
}

func send(args []string) int {
	fs := flag.NewFlagSet("send", flag.ExitOnError)
	api := fs.String("api", "127.0.0.1:50052", "api address")
	apiKey := fs.String("api-key", "", "API key")
	user := fs.String("user", "", "send to every device of this user")
	device := fs.String("device", "", "send to this device")
	topic := fs.String("topic", "", "send to every device subscribed to this topic")
	priority := fs.String("priority", "normal", "high, normal or low")
	ttl := fs.Int64("ttl", 0, "seconds the message stays deliverable")
	collapseKey := fs.String("collapse-key", "", "collapse key")
	idempotencyKey := fs.String("idempotency-key", "", "idempotency key")
	atLeastOnce := fs.Bool("at-least-once", false, "keep in the inbox until acked")
	contentType := fs.String("content-type", "text/plain", "payload content type")
	lbls := labels{}
	fs.Var(lbls, "label", "K=V (repeatable)")
	timeoutMs := fs.Int("timeout-ms", 10_000, "call deadline in milliseconds")
	tlsCA := fs.String("tls-ca", "", "connect over TLS, checking the api against this PEM CA")
	tlsCert := fs.String("tls-cert", "", "client certificate for mutual TLS")
	tlsKey := fs.String("tls-key", "", "key of --tls-cert")
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "interop send: give exactly one PAYLOAD")
		return 2
	}
	prio, err := pushplat.ParsePriority(*priority)
	if err != nil {
		return fail(err)
	}
	tlsConfig, err := tlsFrom(*tlsCA, *tlsCert, *tlsKey)
	if err != nil {
		return fail(err)
	}
	sender, err := pushplat.NewSender(*api, pushplat.SenderOptions{
		APIKey: *apiKey, Timeout: time.Duration(*timeoutMs) * time.Millisecond, TLS: tlsConfig,
	})
	if err != nil {
		return fail(err)
	}
	defer sender.Close()
	resp, err := sender.Send(context.Background(), pushplat.SendOptions{
		UserID: *user, DeviceID: *device, Topic: *topic, Payload: []byte(fs.Arg(0)), ContentType: *contentType,
		Priority: prio, TTLSeconds: *ttl, CollapseKey: *collapseKey, IdempotencyKey: *idempotencyKey,
		AtLeastOnce: *atLeastOnce, Labels: lbls,
	})
	if err != nil {
		return fail(err)
	}
	emit(map[string]any{"event": "sent", "message_id": resp.GetMessageId(), "duplicate": resp.GetDuplicate()})
	return 0
}

// tlsFrom is nil (plaintext) unless a CA or a client certificate is given.
func tlsFrom(ca, cert, key string) (*tls.Config, error) {
	if ca == "" && cert == "" {
		return nil, nil
	}
	return pushplat.LoadTLS(pushplat.TLSFiles{CAFile: ca, CertFile: cert, KeyFile: key})
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: interop listen|send [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "listen":
		os.Exit(listen(os.Args[2:]))
	case "send":
		os.Exit(send(os.Args[2:]))
	default:
		fmt.Fprintf(os.Stderr, "interop: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}
