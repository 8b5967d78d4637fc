package agent

import "sync"

// mailbox holds the latest value of something and signals its arrival;
// older values not yet taken are replaced.
type mailbox[T any] struct {
	mu  *sync.Mutex
	v   *T
	ch  chan struct{}
	has *bool
}

func newMailbox[T any]() mailbox[T] {
	var v T
	has := false
	return mailbox[T]{mu: &sync.Mutex{}, v: &v, ch: make(chan struct{}, 1), has: &has}
}

func (m *mailbox[T]) put(v T) {
	m.mu.Lock()
	*m.v, *m.has = v, true
	m.mu.Unlock()
	select {
	case m.ch <- struct{}{}:
	default:
	}
}

func (m *mailbox[T]) take() (T, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := *m.v, *m.has
	var zero T
	*m.v, *m.has = zero, false
	return v, ok
}
