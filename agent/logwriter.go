package agent

import (
	"io"
	"sync"
)

// LogWriter is the output of a node's log: what is written to it goes out
// through one goroutine, which writes everything written since its last
// write in one call. A leader writes an audit line for every accepted
// write (docs/security.md); written straight to stderr that was a system
// call per line on the write path, made under the logger's lock, and under
// Docker a wake-up of the container's log reader per line. Batched, a busy
// leader makes one call for the lines of many writes.
//
// Order is kept: lines go out in the order they were written. A line is
// held only while the previous batch is being written, so nothing waits
// for a timer. What is pending is bounded (logPendingMax): past it a write
// waits for the batch in flight, as a write to a full pipe waits today, so
// a stalled reader of the log slows the node rather than growing it.
//
// Close writes what is pending and stops the goroutine; later writes go
// straight to the output. A crash loses what is pending at that instant:
// at most the lines written during the one output write in flight.
type LogWriter struct {
	out io.Writer

	mu      sync.Mutex
	room    sync.Cond // signalled when a batch has been written
	pending []byte
	closed  bool

	wake chan struct{} // capacity 1: pending has something
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// logPendingMax bounds the bytes a LogWriter holds before writes wait.
const logPendingMax = 1 << 20

// NewLogWriter returns a LogWriter writing to out; Close stops it.
func NewLogWriter(out io.Writer) *LogWriter {
	w := &LogWriter{out: out, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	w.room.L = &w.mu
	go w.loop()
	return w
}

// Write queues p for the output. It returns at once unless logPendingMax
// bytes are pending; it never fails (the output's errors are dropped, as
// the logger drops them).
func (w *LogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	for !w.closed && len(w.pending) > 0 && len(w.pending)+len(p) > logPendingMax {
		w.room.Wait()
	}
	if w.closed {
		defer w.mu.Unlock() // in order with other late writes
		_, _ = w.out.Write(p)
		return len(p), nil
	}
	w.pending = append(w.pending, p...)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default: // already woken: the next batch takes p too
	}
	return len(p), nil
}

func (w *LogWriter) loop() {
	defer close(w.done)
	var spare []byte
	for {
		select {
		case <-w.wake:
			spare = w.flush(spare)
		case <-w.stop:
			w.flush(spare)
			return
		}
	}
}

// flush writes what is pending, if anything, and returns the buffer to
// gather the next batch in.
func (w *LogWriter) flush(spare []byte) []byte {
	w.mu.Lock()
	batch := w.pending
	w.pending = spare[:0]
	w.mu.Unlock()
	if len(batch) > 0 {
		_, _ = w.out.Write(batch)
	}
	w.mu.Lock()
	w.room.Broadcast()
	w.mu.Unlock()
	if cap(batch) > 64<<10 {
		return nil // a burst's buffer is not kept
	}
	return batch[:0]
}

// Close writes what is pending and stops the writer's goroutine. Writes
// after it go straight to the output.
func (w *LogWriter) Close() error {
	w.once.Do(func() {
		close(w.stop)
		<-w.done
		w.mu.Lock()
		w.closed = true
		if len(w.pending) > 0 { // written after the last batch was taken
			_, _ = w.out.Write(w.pending)
			w.pending = nil
		}
		w.room.Broadcast()
		w.mu.Unlock()
	})
	return nil
}
