package pushplat

import (
	"container/list"
	"fmt"
	"sync"
)

// DefaultDedupCapacity is how many message ids a Client remembers by default.
const DefaultDedupCapacity = 10_000

// RecentIDs is an LRU set of message ids with a fixed capacity.
//
// Redeliveries (inbox replay after a reconnect, a retry across edges) arrive close to the
// original, so remembering the most recent ids catches them without growing forever.
// Safe for concurrent use.
type RecentIDs struct {
	mu       sync.Mutex
	capacity int
	order    *list.List // front = most recent
	index    map[string]*list.Element
}

// NewRecentIDs returns an empty set that holds at most capacity ids (capacity >= 1).
func NewRecentIDs(capacity int) (*RecentIDs, error) {
	if capacity < 1 {
		return nil, fmt.Errorf("pushplat: RecentIDs capacity must be >= 1, got %d", capacity)
	}
	return &RecentIDs{capacity: capacity, order: list.New(), index: make(map[string]*list.Element)}, nil
}

// Capacity is the most ids the set holds.
func (r *RecentIDs) Capacity() int { return r.capacity }

// Seen reports whether id was seen before; if not, it remembers it. A hit counts as use:
// an id that keeps coming back is not evicted.
func (r *RecentIDs) Seen(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if el, ok := r.index[id]; ok {
		r.order.MoveToFront(el)
		return true
	}
	r.add(id)
	return false
}

// Add remembers id as the most recent, evicting the oldest beyond capacity.
func (r *RecentIDs) Add(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.add(id)
}

func (r *RecentIDs) add(id string) {
	if el, ok := r.index[id]; ok {
		r.order.MoveToFront(el)
		return
	}
	r.index[id] = r.order.PushFront(id)
	for r.order.Len() > r.capacity {
		oldest := r.order.Back()
		r.order.Remove(oldest)
		delete(r.index, oldest.Value.(string))
	}
}

// Contains reports membership without refreshing recency.
func (r *RecentIDs) Contains(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.index[id]
	return ok
}

// Len is how many ids are remembered.
func (r *RecentIDs) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.order.Len()
}

// Clear forgets every id.
func (r *RecentIDs) Clear() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.order.Init()
	clear(r.index)
}
