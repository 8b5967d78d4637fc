package wan

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"
)

// Shape is how one direction of a [Link] treats traffic.
//
//   - Latency is added to every byte and datagram.
//   - Jitter is a uniform random offset in [-Jitter, +Jitter] added to the
//     latency (never below zero). Datagrams may be reordered by it; a TCP
//     stream never is: a chunk is never delivered before the one read ahead
//     of it.
//   - Loss is the probability that a UDP datagram is dropped. A TCP stream
//     cannot lose bytes; a lost segment costs a retransmission instead: a
//     chunk of n bytes carries ceil(n/1460) segments, and if any of them is
//     lost (each with probability Loss) the chunk is delayed by one
//     retransmission timeout, max(200 ms, 2×Latency).
//   - Bandwidth caps the rate in bytes per second with a token bucket of
//     Burst bytes (default: 10 ms worth of Bandwidth, at least 1500). A TCP
//     stream queues behind the cap (its relay reads ahead at most 16 chunks
//     of 16 KiB); a UDP datagram that would wait more than 250 ms for tokens
//     is dropped (tail drop), as a router's queue would.
//
// The zero Shape is a perfect link.
type Shape struct {
	Latency   time.Duration
	Jitter    time.Duration
	Loss      float64
	Bandwidth int64
	Burst     int64
}

// Option changes one property of a [Shape]; see [Link.Set].
type Option func(*Shape)

// Latency sets the one-way delay.
func Latency(d time.Duration) Option {
	if d < 0 {
		panic(fmt.Sprintf("wan.Latency(%v): must be at least 0", d))
	}
	return func(s *Shape) { s.Latency = d }
}

// Jitter sets the random variation of the delay, uniform in [-d, +d].
func Jitter(d time.Duration) Option {
	if d < 0 {
		panic(fmt.Sprintf("wan.Jitter(%v): must be at least 0", d))
	}
	return func(s *Shape) { s.Jitter = d }
}

// Loss sets the probability, in [0, 1], that a datagram is lost (for TCP: that
// a segment needs a retransmission).
func Loss(p float64) Option {
	if !(p >= 0 && p <= 1) {
		panic(fmt.Sprintf("wan.Loss(%v): must be in [0, 1]", p))
	}
	return func(s *Shape) { s.Loss = p }
}

// Bandwidth caps the direction at bytesPerSec; 0 removes the cap.
func Bandwidth(bytesPerSec int64) Option {
	if bytesPerSec < 0 {
		panic(fmt.Sprintf("wan.Bandwidth(%d): must be at least 0", bytesPerSec))
	}
	return func(s *Shape) { s.Bandwidth = bytesPerSec }
}

// Burst sets the token bucket's size in bytes for [Bandwidth]; 0 is the
// default, 10 ms worth of Bandwidth and at least 1500.
func Burst(bytes int64) Option {
	if bytes < 0 {
		panic(fmt.Sprintf("wan.Burst(%d): must be at least 0", bytes))
	}
	return func(s *Shape) { s.Burst = bytes }
}

// Perfect resets every property: no delay, no loss, no cap.
func Perfect() Option { return func(s *Shape) { *s = Shape{} } }

// DirectionStats counts what one direction of a link did.
type DirectionStats struct {
	Bytes       int64 // payload bytes delivered (TCP and UDP)
	Datagrams   int64 // UDP datagrams delivered
	Lost        int64 // UDP datagrams dropped by Loss
	Blocked     int64 // UDP datagrams dropped by a partition
	Overflow    int64 // UDP datagrams dropped by the Bandwidth queue
	Retransmits int64 // TCP chunks delayed by a simulated retransmission
	Conns       int64 // TCP connections opened in this direction
}

const (
	tcpSegment      = 1460
	minRTO          = 200 * time.Millisecond
	udpMaxQueueWait = 250 * time.Millisecond
)

// direction is the state of one direction of a link: its shape, whether it is
// partitioned, its random source and token bucket. Every decision about a
// chunk or datagram is made by admit, under mu, from the time it entered the
// relay: the schedule is a pure function of the arrival times, the shape and
// the seed.
type direction struct {
	mu     sync.Mutex
	shape  Shape
	down   bool
	healed chan struct{} // closed when up; replaced when partitioned
	rng    *rand.Rand
	tokens float64
	last   time.Time // of the last bucket update; zero: bucket is full
	stats  DirectionStats
}

func newDirection(seed, stream uint64) *direction {
	up := make(chan struct{})
	close(up)
	return &direction{healed: up, rng: rand.New(rand.NewPCG(seed, stream))}
}

func (d *direction) set(opts []Option) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, o := range opts {
		o(&d.shape)
	}
	d.last = time.Time{} // refill the bucket for the new shape
}

func (d *direction) getShape() Shape {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.shape
}

func (d *direction) getStats() DirectionStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

func (d *direction) partition() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.down {
		d.down = true
		d.healed = make(chan struct{})
	}
}

func (d *direction) heal() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.down {
		d.down = false
		close(d.healed)
	}
}

func (d *direction) isDown() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.down
}

// waitUp returns when the direction is not partitioned, or ctx's error.
func (d *direction) waitUp(ctx context.Context) error {
	for {
		d.mu.Lock()
		down, healed := d.down, d.healed
		d.mu.Unlock()
		if !down {
			return nil
		}
		select {
		case <-healed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// admitDatagram decides the fate of a datagram of n bytes that entered at
// now: ok false means dropped (and counted); otherwise it is to be delivered
// at at.
func (d *direction) admitDatagram(now time.Time, n int) (at time.Time, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.down {
		d.stats.Blocked++
		return time.Time{}, false
	}
	if d.shape.Loss > 0 && d.rng.Float64() < d.shape.Loss {
		d.stats.Lost++
		return time.Time{}, false
	}
	depart, ok := d.bucket(now, n, udpMaxQueueWait)
	if !ok {
		d.stats.Overflow++
		return time.Time{}, false
	}
	return depart.Add(d.delay()), true
}

// admitStream schedules a chunk of n bytes of a TCP stream that was read at
// now. The caller keeps chunks in order.
func (d *direction) admitStream(now time.Time, n int) time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	depart, _ := d.bucket(now, n, 0)
	at := depart.Add(d.delay())
	if d.shape.Loss > 0 {
		segments := (n + tcpSegment - 1) / tcpSegment
		pLost := 1 - math.Pow(1-d.shape.Loss, float64(segments))
		if d.rng.Float64() < pLost {
			d.stats.Retransmits++
			at = at.Add(max(minRTO, 2*d.shape.Latency))
		}
	}
	return at
}

// delay is the latency plus a jitter sample. Called with mu held.
func (d *direction) delay() time.Duration {
	delay := d.shape.Latency
	if j := d.shape.Jitter; j > 0 {
		delay += time.Duration(d.rng.Int64N(2*int64(j)+1)) - j
	}
	return max(delay, 0)
}

// bucket takes n bytes from the token bucket at now and returns when they
// may depart. The bucket may go into debt: that is the queue. With
// maxWait > 0, bytes that would wait longer are refused and take nothing.
// Called with mu held.
func (d *direction) bucket(now time.Time, n int, maxWait time.Duration) (time.Time, bool) {
	bw := d.shape.Bandwidth
	if bw <= 0 {
		return now, true
	}
	burst := float64(d.shape.Burst)
	if burst == 0 {
		burst = max(float64(bw)/100, tcpSegment+40)
	}
	if d.last.IsZero() {
		d.tokens = burst
	} else if now.After(d.last) {
		d.tokens = min(burst, d.tokens+float64(bw)*float64(now.Sub(d.last))/float64(time.Second))
	}
	if now.After(d.last) {
		d.last = now
	}
	var wait time.Duration
	if deficit := float64(n) - d.tokens; deficit > 0 {
		wait = time.Duration(math.Ceil(deficit * float64(time.Second) / float64(bw)))
	}
	if maxWait > 0 && wait > maxWait {
		return time.Time{}, false
	}
	d.tokens -= float64(n)
	return now.Add(wait), true
}

func (d *direction) delivered(n int, datagram bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stats.Bytes += int64(n)
	if datagram {
		d.stats.Datagrams++
	}
}

// deliverable reports whether a datagram due now may go out, counting it as
// blocked if the direction was partitioned while it was in flight.
func (d *direction) deliverable() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.down {
		d.stats.Blocked++
		return false
	}
	return true
}

func (d *direction) connOpened() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stats.Conns++
}
