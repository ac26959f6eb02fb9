package store

import (
	"container/list"
	"sync"
)

// chunkCache keeps decoded, verified pieces of files (chunks, and recipe tensors'
// outputs) in memory for FileReaders, so a server handing the same model to many
// clients decodes and hashes each piece once rather than once per download. Pieces
// are content-addressed and immutable, so a cached piece can never be stale; it was
// verified against its hash when it was decoded. Least recently used pieces are
// dropped beyond the byte budget. Safe for concurrent use.
type chunkCache struct {
	max int64

	mu    sync.Mutex
	size  int64                // +checklocks:mu
	order *list.List           // +checklocks:mu: front = most recently used; values are *cacheEntry
	items map[ID]*list.Element // +checklocks:mu
}

type cacheEntry struct {
	id   ID
	data []byte
}

func newChunkCache(max int64) *chunkCache {
	if max <= 0 {
		return nil
	}
	return &chunkCache{max: max, order: list.New(), items: map[ID]*list.Element{}}
}

// get returns a cached piece (callers must not modify it).
func (c *chunkCache) get(id ID) ([]byte, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[id]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*cacheEntry).data, true
}

// put adds a decoded, verified piece; callers must not modify data afterwards.
func (c *chunkCache) put(id ID, data []byte) {
	if c == nil || int64(len(data)) > c.max/4 {
		return // a piece that would evict a quarter of the cache is not worth it
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[id]; ok {
		return
	}
	c.items[id] = c.order.PushFront(&cacheEntry{id: id, data: data})
	c.size += int64(len(data))
	for c.size > c.max {
		last := c.order.Back()
		ent := last.Value.(*cacheEntry)
		c.order.Remove(last)
		delete(c.items, ent.id)
		c.size -= int64(len(ent.data))
	}
}

// layoutCache keeps the layouts of recently opened files (with a read cache, that
// is in `heft serve`), so a server answering many range requests on one file loads
// its file and tensor objects once: opening a 150-tensor shard costs milliseconds.
// Layouts never change (file objects are immutable); a location gc has since moved
// is followed through the index by readLocated.
type layoutCache struct {
	mu      sync.Mutex
	entries map[ID]*fileLayoutEntry // +checklocks:mu
}

type fileLayoutEntry struct {
	size   int64
	layout []placedChunk
	locs   map[ID]Location
}

// maxLayouts bounds layoutCache; past it the cache starts over.
const maxLayouts = 4096

func newLayoutCache(enabled bool) *layoutCache {
	if !enabled {
		return nil
	}
	return &layoutCache{entries: map[ID]*fileLayoutEntry{}}
}

func (c *layoutCache) get(id ID) (*fileLayoutEntry, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[id]
	return e, ok
}

func (c *layoutCache) put(id ID, e *fileLayoutEntry) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= maxLayouts {
		c.entries = map[ID]*fileLayoutEntry{}
	}
	c.entries[id] = e
}
