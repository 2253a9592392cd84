package natsx

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// AnchorOptions tune KeepAnchor; zero values take the defaults.
type AnchorOptions struct {
	// Check is how often the stream's last sequence is read while the
	// stream moves (default 100 ms).
	Check time.Duration
	// Idle is the longest wait between reads while it does not (default
	// 1 s): a stream that stores nothing does not roll to a new block, so
	// its anchor cannot go stale.
	Idle time.Duration
	// Refresh is how many messages the stream may store after the anchor
	// before a new one is published (default 256).
	Refresh uint64
}

func (o AnchorOptions) withDefaults() AnchorOptions {
	if o.Check <= 0 {
		o.Check = 100 * time.Millisecond
	}
	if o.Idle < o.Check {
		o.Idle = max(time.Second, o.Check)
	}
	if o.Refresh == 0 {
		o.Refresh = 256
	}
	return o
}

// KeepAnchor keeps one message that no consumer reads (the anchor, on
// AnchorSubject(stream)) near the end of a work-queue stream until ctx
// ends.
//
// Why: nats-server's file store removes the last block file of a stream
// that drains to empty and creates a new one holding a tombstone. Below
// saturation a work-queue stream drains after nearly every ack, so each
// ack opened, wrote and unlinked a file: at 100 req/s that was 17% of
// `up`'s CPU (docs/performance.md, "Anchored work queues"; upstream:
// nats-io/nats-server#7487). A stream holding the anchor in its last block
// never drains. Blocks roll over at a few MB, so once the stream has
// stored Refresh messages after the anchor a new anchor is published; its
// Nats-Rollup header removes the old one, and the stream always holds
// exactly one (the stream must allow rollups: Streams sets AllowRollup).
//
// Several processes may keep the same stream's anchor: each publishes
// when it finds the last anchor it published stale, and the rollup leaves
// one. Errors (a stream not yet created, one created before it allowed
// rollups, a server away) are logged once each and retried every Idle:
// without an anchor the stream works as before, only more slowly.
func KeepAnchor(ctx context.Context, js jetstream.JetStream, stream string, log zerolog.Logger, o AnchorOptions) {
	o = o.withDefaults()
	a := anchor{js: js, stream: stream, log: log.With().Str("stream", stream).Logger(), o: o}
	wait := time.Duration(0)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		moved, err := a.step(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			a.failed(err)
			wait = o.Idle
		case moved:
			a.lastErr = ""
			wait = o.Check
		default:
			a.lastErr = ""
			wait = min(max(2*wait, o.Check), o.Idle)
		}
		timer.Reset(wait)
	}
}

type anchor struct {
	js      jetstream.JetStream
	stream  string
	log     zerolog.Logger
	o       AnchorOptions
	s       jetstream.Stream
	seq     uint64 // the sequence of the last anchor this keeper stored; 0: none yet
	last    uint64 // the stream's last sequence when last read
	lastErr string
}

// step reads the stream's last sequence and publishes a new anchor when
// there is none yet, the stream was recreated (its sequence went back) or
// Refresh messages followed the anchor. It reports whether the stream
// stored anything since the previous step.
func (a *anchor) step(ctx context.Context) (moved bool, err error) {
	if a.s == nil {
		if a.s, err = a.js.Stream(ctx, a.stream); err != nil {
			return false, err
		}
	}
	info, err := a.s.Info(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			a.s, a.seq = nil, 0
		}
		return false, err
	}
	last := info.State.LastSeq
	moved = last != a.last
	a.last = last
	if a.seq != 0 && last >= a.seq && last-a.seq < a.o.Refresh {
		return moved, nil
	}
	msg := nats.NewMsg(AnchorSubject(a.stream))
	msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	ack, err := a.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(a.stream))
	if err != nil {
		return moved, err
	}
	a.seq, a.last = ack.Sequence, ack.Sequence
	return true, nil
}

// failed logs an error the first time it is seen in a row.
func (a *anchor) failed(err error) {
	if msg := err.Error(); msg != a.lastErr {
		a.lastErr = msg
		a.log.Warn().Err(err).Msg("stream anchor not kept; retrying (the stream works without it, at more CPU per message)")
	}
}

// WorkMessages is how many messages stream holds besides its anchor: in a
// work-queue stream, the work still queued or in flight.
func WorkMessages(ctx context.Context, s jetstream.Stream) (uint64, error) {
	subject := AnchorSubject(s.CachedInfo().Config.Name)
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, err
	}
	return info.State.Msgs - info.State.Subjects[subject], nil
}
