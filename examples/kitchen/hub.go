package kitchen

import "sync"

// hub fans display updates out to the connected pages.
type hub struct {
	mu   sync.Mutex
	subs map[chan []byte]struct{}
}

// subscribe returns a channel of updates. A subscriber that falls more than
// its buffer behind is dropped (its channel closed): the page reconnects and
// starts again from a snapshot, instead of slowing the consumer down.
func (h *hub) subscribe() chan []byte {
	ch := make(chan []byte, 1024)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch
}

func (h *hub) unsubscribe(ch chan []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[ch]; ok {
		delete(h.subs, ch)
		close(ch)
	}
}

func (h *hub) broadcast(b []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- b:
		default:
			delete(h.subs, ch)
			close(ch)
		}
	}
}
