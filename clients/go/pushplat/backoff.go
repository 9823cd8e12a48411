package pushplat

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// BackoffPolicy hands out the delays between failed connection attempts. The Client calls
// Next after a failure and Reset after each successful Welcome. A GoAway is a planned
// reconnect, not a failure: its delay comes from the edge and the policy is not consulted.
type BackoffPolicy interface {
	Next() time.Duration
	Reset()
}

// Backoff is exponential backoff with full jitter: the n-th delay (from 0) is drawn
// uniformly from [0, min(Cap, Base*2^n)).
//
// Full jitter (rather than "exponential plus a little noise") spreads a crowd of clients
// that lost the same edge over the whole window, so they do not reconnect in waves.
// Safe for concurrent use.
type Backoff struct {
	base, cap time.Duration
	mu        sync.Mutex
	rng       *rand.Rand
	attempt   int
}

// Default backoff bounds, the same as the Python SDK's.
const (
	DefaultBackoffBase = 200 * time.Millisecond
	DefaultBackoffCap  = 30 * time.Second
)

// NewBackoff returns a Backoff from base up to cap. rng may be nil (a randomly seeded one is
// used); pass a seeded one for reproducible tests.
func NewBackoff(base, cap time.Duration, rng *rand.Rand) (*Backoff, error) {
	if base <= 0 {
		return nil, fmt.Errorf("pushplat: backoff base must be > 0, got %v", base)
	}
	if cap < base {
		return nil, fmt.Errorf("pushplat: backoff cap must be >= base, got cap=%v base=%v", cap, base)
	}
	if rng == nil {
		rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return &Backoff{base: base, cap: cap, rng: rng}, nil
}

// DefaultBackoff is NewBackoff(DefaultBackoffBase, DefaultBackoffCap, nil).
func DefaultBackoff() *Backoff {
	b, _ := NewBackoff(DefaultBackoffBase, DefaultBackoffCap, nil)
	return b
}

// Base returns the first window's upper bound.
func (b *Backoff) Base() time.Duration { return b.base }

// Cap returns the largest window.
func (b *Backoff) Cap() time.Duration { return b.cap }

// Attempt is how many delays were handed out since the last Reset (it stops growing once
// the window reaches the cap).
func (b *Backoff) Attempt() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.attempt
}

// Ceiling is the upper bound of the next delay.
func (b *Backoff) Ceiling() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ceiling()
}

func (b *Backoff) ceiling() time.Duration {
	c := b.base
	for i := 0; i < b.attempt && c < b.cap; i++ {
		c *= 2
	}
	return min(c, b.cap)
}

// Next returns the next delay; each call widens the window until it reaches the cap.
func (b *Backoff) Next() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.ceiling()
	// Stop counting once capped: the window cannot grow further.
	if c < b.cap {
		b.attempt++
	}
	return time.Duration(b.rng.Int64N(int64(c)))
}

// Reset starts over from the base (after a successful connection).
func (b *Backoff) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.attempt = 0
}

func (b *Backoff) String() string {
	return fmt.Sprintf("Backoff(base=%v, cap=%v, attempt=%d)", b.base, b.cap, b.Attempt())
}
