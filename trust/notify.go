package trust

import "sync"

// notifier fans a "something changed" signal out to any number of
// watchers. Signals coalesce: each watcher's channel has a buffer of one, so
// a slow watcher sees at least one signal after the last change and then
// reads the current state; it never blocks the notifier.
type notifier struct {
	mu   sync.Mutex
	next int
	subs map[int]chan struct{}
}

// watch returns a channel that receives after every change, and a function
// that stops the watch. The channel is never closed.
func (n *notifier) watch() (<-chan struct{}, func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.subs == nil {
		n.subs = make(map[int]chan struct{})
	}
	id := n.next
	n.next++
	ch := make(chan struct{}, 1)
	n.subs[id] = ch
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			n.mu.Lock()
			delete(n.subs, id)
			n.mu.Unlock()
		})
	}
}

// notify signals every watcher without blocking.
func (n *notifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ch := range n.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
