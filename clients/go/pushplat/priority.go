package pushplat

import (
	"fmt"
	"strings"

	pb "github.com/pushplat/pushplat/clients/go/pushplatv1"
)

// Priorities, re-exported so applications need not import the generated package.
const (
	PriorityUnspecified = pb.Priority_PRIORITY_UNSPECIFIED
	PriorityLow         = pb.Priority_PRIORITY_LOW
	PriorityNormal      = pb.Priority_PRIORITY_NORMAL
	PriorityHigh        = pb.Priority_PRIORITY_HIGH
)

// Message is what a Client receives.
type Message = pb.Message

// ParsePriority turns "high", "normal", "low" (or "PRIORITY_HIGH", any case, or
// "unspecified") into the enum.
func ParsePriority(s string) (pb.Priority, error) {
	key := strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "priority_")
	switch key {
	case "low":
		return PriorityLow, nil
	case "normal":
		return PriorityNormal, nil
	case "high":
		return PriorityHigh, nil
	case "unspecified":
		return PriorityUnspecified, nil
	}
	return 0, fmt.Errorf("pushplat: invalid priority %q; expected \"high\", \"normal\" or \"low\"", s)
}

// PriorityName is "high", "normal" or "low"; unspecified reads as "normal" (the contract
// says so) and unknown values as "unknown(N)".
func PriorityName(p pb.Priority) string {
	switch p {
	case PriorityLow:
		return "low"
	case PriorityNormal, PriorityUnspecified:
		return "normal"
	case PriorityHigh:
		return "high"
	}
	return fmt.Sprintf("unknown(%d)", int32(p))
}
