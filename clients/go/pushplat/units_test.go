package pushplat

import (
	"math/rand/v2"
	"testing"
	"time"

	pb "github.com/pushplat/pushplat/clients/go/pushplatv1"
)

func TestBackoffWindowsDoubleUpToTheCap(t *testing.T) {
	b, err := NewBackoff(100*time.Millisecond, time.Second, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		w *= time.Millisecond
		if c := b.Ceiling(); c != w {
			t.Fatalf("step %d: ceiling %v, want %v", i, c, w)
		}
		if d := b.Next(); d < 0 || d >= w {
			t.Fatalf("step %d: delay %v outside [0, %v)", i, d, w)
		}
	}
	// Capped: the attempt counter stops growing.
	if b.Attempt() != 4 {
		t.Fatalf("attempt = %d", b.Attempt())
	}
	b.Reset()
	if b.Attempt() != 0 || b.Ceiling() != 100*time.Millisecond {
		t.Fatal("reset did not start over")
	}
}

func TestBackoffIsFullJitter(t *testing.T) {
	// Full jitter: delays spread over the whole window, including its lower half.
	b, _ := NewBackoff(time.Second, time.Second, rand.New(rand.NewPCG(3, 4)))
	low, high := 0, 0
	for range 1000 {
		d := b.Next()
		if d < 0 || d >= time.Second {
			t.Fatalf("delay %v outside [0, 1s)", d)
		}
		if d < 250*time.Millisecond {
			low++
		}
		if d > 750*time.Millisecond {
			high++
		}
	}
	if low < 150 || high < 150 {
		t.Fatalf("not uniform over the window: %d below 250ms, %d above 750ms", low, high)
	}
}

func TestBackoffRejectsBadBounds(t *testing.T) {
	if _, err := NewBackoff(0, time.Second, nil); err == nil {
		t.Fatal("base 0 accepted")
	}
	if _, err := NewBackoff(time.Second, time.Millisecond, nil); err == nil {
		t.Fatal("cap < base accepted")
	}
	b := DefaultBackoff()
	if b.Base() != DefaultBackoffBase || b.Cap() != DefaultBackoffCap {
		t.Fatal(b)
	}
}

func TestBackoffDoesNotOverflowWhenOfflineForLong(t *testing.T) {
	b, _ := NewBackoff(time.Nanosecond, time.Hour, nil)
	for range 10_000 {
		if d := b.Next(); d < 0 || d >= time.Hour {
			t.Fatalf("delay %v", d)
		}
	}
}

func TestRecentIDsRemembersTheMostRecent(t *testing.T) {
	r, err := NewRecentIDs(3)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "c"} {
		if r.Seen(id) {
			t.Fatalf("%s seen before it was added", id)
		}
	}
	if !r.Seen("a") { // a hit refreshes a: b is now the oldest
		t.Fatal("a forgotten")
	}
	r.Seen("d") // evicts b
	if r.Contains("b") || !r.Contains("a") || !r.Contains("c") || !r.Contains("d") {
		t.Fatal("wrong eviction")
	}
	if r.Len() != 3 || r.Capacity() != 3 {
		t.Fatalf("len %d", r.Len())
	}
	r.Add("e") // evicts c (Contains does not refresh)
	if r.Contains("c") {
		t.Fatal("c should be evicted")
	}
	r.Clear()
	if r.Len() != 0 || r.Contains("a") {
		t.Fatal("clear")
	}
}

func TestRecentIDsIsBounded(t *testing.T) {
	r, _ := NewRecentIDs(100)
	for i := range 10_000 {
		r.Seen(string(rune(i)))
	}
	if r.Len() != 100 {
		t.Fatalf("len %d", r.Len())
	}
	if _, err := NewRecentIDs(0); err == nil {
		t.Fatal("capacity 0 accepted")
	}
}

func TestPriorityHelpers(t *testing.T) {
	for in, want := range map[string]pb.Priority{
		"high": PriorityHigh, "HIGH": PriorityHigh, "PRIORITY_HIGH": PriorityHigh, " low ": PriorityLow,
		"normal": PriorityNormal, "unspecified": PriorityUnspecified,
	} {
		got, err := ParsePriority(in)
		if err != nil || got != want {
			t.Fatalf("ParsePriority(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParsePriority("urgent"); err == nil {
		t.Fatal("urgent accepted")
	}
	if PriorityName(PriorityUnspecified) != "normal" || PriorityName(PriorityHigh) != "high" || PriorityName(9) != "unknown(9)" {
		t.Fatal("PriorityName")
	}
}
