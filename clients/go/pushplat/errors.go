package pushplat

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// RetryAfterKey is the trailing-metadata key in which a server asks for a minimum delay
// (milliseconds) before the next attempt, e.g. with RESOURCE_EXHAUSTED.
const RetryAfterKey = "retry-after-ms"

// ErrClosed is returned by Recv (and WaitConnected) once the client is closed, or once its
// stream ended cleanly while reconnecting was disabled.
var ErrClosed = errors.New("pushplat: client closed")

// Error is a failed call or stream: its gRPC status code and the server's explanation.
type Error struct {
	Code    codes.Code
	Message string
	// RetryAfter is the delay the server asked for (trailer "retry-after-ms"); 0 if none.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "pushplat: " + e.Code.String()
	}
	return "pushplat: " + e.Code.String() + ": " + e.Message
}

// GRPCStatus lets status.FromError and status.Code see through an *Error.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

// Retriable reports whether retrying might help; see IsRetriable.
func (e *Error) Retriable() bool { return IsRetriable(e.Code) }

// IsAuth reports whether the server rejected the token or API key (UNAUTHENTICATED).
func (e *Error) IsAuth() bool { return e.Code == codes.Unauthenticated }

// IsRetriable reports whether a status is worth retrying. The request or credentials are
// wrong, or the server does not speak this API, for UNAUTHENTICATED, INVALID_ARGUMENT,
// PERMISSION_DENIED and UNIMPLEMENTED, and ALREADY_EXISTS means an idempotency key was reused
// for another request; everything else (UNAVAILABLE, ...) is transient.
func IsRetriable(code codes.Code) bool {
	switch code {
	case codes.Unauthenticated, codes.InvalidArgument, codes.PermissionDenied, codes.Unimplemented,
		codes.AlreadyExists:
		return false
	}
	return true
}

// IsAuthError reports whether err is an *Error with code UNAUTHENTICATED.
func IsAuthError(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.IsAuth()
}

// retryAfter reads the "retry-after-ms" hint from trailing metadata; 0 if absent or bad.
func retryAfter(md metadata.MD) time.Duration {
	values := md.Get(RetryAfterKey)
	if len(values) == 0 {
		return 0
	}
	ms, err := strconv.ParseFloat(strings.TrimSpace(values[0]), 64)
	if err != nil || ms <= 0 {
		return 0
	}
	return time.Duration(ms * float64(time.Millisecond))
}

// errorFrom converts an error from a gRPC call into an *Error (nil stays nil).
func errorFrom(err error, trailer metadata.MD) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Code: codes.DeadlineExceeded, Message: err.Error()}
	}
	if errors.Is(err, context.Canceled) {
		return &Error{Code: codes.Canceled, Message: err.Error()}
	}
	if errors.Is(err, io.EOF) {
		return &Error{Code: codes.Unavailable, Message: "stream ended unexpectedly"}
	}
	st, ok := status.FromError(err)
	if !ok {
		return &Error{Code: codes.Unknown, Message: err.Error()}
	}
	return &Error{Code: st.Code(), Message: st.Message(), RetryAfter: retryAfter(trailer)}
}

func newError(code codes.Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}
