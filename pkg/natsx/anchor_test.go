package natsx_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/switchyard-llm/switchyard/pkg/natsserver"
	"github.com/switchyard-llm/switchyard/pkg/natsx"
	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// anchoredServer starts a server on its own store directory (returned, so
// a test can look at the block files), creates the topology and, when
// anchored, keeps LLM_PIPELINE's anchor until the test ends.
func anchoredServer(t *testing.T, anchored bool, o natsx.AnchorOptions) (jetstream.JetStream, string) {
	t.Helper()
	dir := t.TempDir()
	ns, err := natsserver.Start(natsserver.Options{Port: -1, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	_, js := testkit.Connect(t, ns.ClientURL())
	testkit.WithTopology(t, js)
	if anchored {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); natsx.KeepAnchor(ctx, js, natsx.StreamPipeline, zerolog.Nop(), o) }()
		t.Cleanup(func() { cancel(); <-done })
		waitAnchor(t, js, 1)
	}
	return js, dir
}

// waitAnchor waits until LLM_PIPELINE's anchor is stored at sequence
// minSeq or later and returns its sequence.
func waitAnchor(t *testing.T, js jetstream.JetStream, minSeq uint64) uint64 {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := js.Stream(ctx, natsx.StreamPipeline)
		if err == nil {
			if m, err := s.GetLastMsgForSubject(ctx, natsx.AnchorSubject(natsx.StreamPipeline)); err == nil && m.Sequence >= minSeq {
				return m.Sequence
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no anchor at sequence %d or later within 10s", minSeq)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lastBlock is the index of the newest block file of a stream.
func lastBlock(t *testing.T, dir, stream string) int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "jetstream", "*", "streams", stream, "msgs", "*.blk"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no block files of %s under %s (%v)", stream, dir, err)
	}
	last := 0
	for _, f := range files {
		n, err := strconv.Atoi(strings.TrimSuffix(filepath.Base(f), ".blk"))
		if err != nil {
			t.Fatalf("block file %s: %v", f, err)
		}
		last = max(last, n)
	}
	return last
}

// A work-queue stream drained by every ack replaces its last block file
// each time; with its anchor kept it writes on in the same block, and the
// consumer never sees the anchor.
func TestAnchorStopsDrainedWorkQueueReplacingItsBlock(t *testing.T) {
	const rounds = 30
	for _, tc := range []struct {
		name      string
		anchored  bool
		maxBlocks int // the newest block's index after the rounds
		minBlocks int
	}{
		{name: "without anchor", anchored: false, minBlocks: rounds},
		{name: "anchored", anchored: true, maxBlocks: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js, dir := anchoredServer(t, tc.anchored, natsx.AnchorOptions{})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cons, err := js.CreateOrUpdateConsumer(ctx, natsx.StreamPipeline, jetstream.ConsumerConfig{
				Durable: "anchor-test", FilterSubject: natsx.SubjectClassified, AckPolicy: jetstream.AckExplicitPolicy})
			if err != nil {
				t.Fatal(err)
			}
			for i := range rounds {
				if _, err := js.Publish(ctx, natsx.SubjectClassified, fmt.Appendf(nil, "m%d", i)); err != nil {
					t.Fatal(err)
				}
				m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
				if err != nil {
					t.Fatalf("round %d: %v", i, err)
				}
				if m.Subject() != natsx.SubjectClassified || string(m.Data()) != fmt.Sprintf("m%d", i) {
					t.Fatalf("round %d: got %s %q", i, m.Subject(), m.Data())
				}
				if err := m.DoubleAck(ctx); err != nil {
					t.Fatal(err)
				}
			}
			last := lastBlock(t, dir, natsx.StreamPipeline)
			if last < tc.minBlocks || (tc.maxBlocks > 0 && last > tc.maxBlocks) {
				t.Fatalf("newest block is %d.blk after %d drained rounds, want between %d and %d", last, rounds, tc.minBlocks, tc.maxBlocks)
			}
			info, err := cons.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.NumPending != 0 || info.NumAckPending != 0 {
				t.Fatalf("consumer has %d pending, %d awaiting ack: it must see only its own subject", info.NumPending, info.NumAckPending)
			}
		})
	}
}

// Once Refresh messages follow the anchor a new one is stored and the old
// one removed, so the stream holds exactly one; a recreated stream gets
// its anchor back.
func TestAnchorFollowsTheStreamAndSurvivesItsRecreation(t *testing.T) {
	js, _ := anchoredServer(t, true, natsx.AnchorOptions{Check: 10 * time.Millisecond, Idle: 50 * time.Millisecond, Refresh: 10})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	subject := natsx.AnchorSubject(natsx.StreamPipeline)
	anchors := func() uint64 {
		t.Helper()
		s, err := js.Stream(ctx, natsx.StreamPipeline)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Subjects[subject]
	}

	first := waitAnchor(t, js, 1)
	for i := range 50 {
		if _, err := js.Publish(ctx, natsx.SubjectClassified, fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	moved := waitAnchor(t, js, first+40) // within Refresh of the last message
	if n := anchors(); n != 1 {
		t.Fatalf("stream holds %d anchors after it moved from %d to %d, want 1", n, first, moved)
	}

	if err := js.DeleteStream(ctx, natsx.StreamPipeline); err != nil {
		t.Fatal(err)
	}
	testkit.WithTopology(t, js)
	waitAnchor(t, js, 1)
	if n := anchors(); n != 1 {
		t.Fatalf("recreated stream holds %d anchors, want 1", n)
	}
}

// A stream created before anchors (no anchor subject, no rollups) gets
// both when the topology is ensured again, as `up` and `switchyard
// provision` do at start, and then keeps its anchor.
func TestTopologyUpdateAnchorsAnOlderStream(t *testing.T) {
	_, js := testkit.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	old := natsx.DefaultTopology().Streams()[1]
	if old.Name != natsx.StreamPipeline {
		t.Fatalf("stream 1 is %s", old.Name)
	}
	old.AllowRollup = false
	old.Subjects = old.Subjects[:len(old.Subjects)-1]
	if _, err := js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, natsx.SubjectClassified, []byte("queued before the update")); err != nil {
		t.Fatal(err)
	}
	testkit.WithTopology(t, js)
	s, err := js.Stream(ctx, natsx.StreamPipeline)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := s.CachedInfo().Config; !cfg.AllowRollup || cfg.Subjects[len(cfg.Subjects)-1] != natsx.AnchorSubject(natsx.StreamPipeline) {
		t.Fatalf("updated stream: rollups %v, subjects %v", cfg.AllowRollup, cfg.Subjects)
	}
	kctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		natsx.KeepAnchor(kctx, js, natsx.StreamPipeline, zerolog.Nop(), natsx.AnchorOptions{})
	}()
	defer func() { stop(); <-done }()
	waitAnchor(t, js, 2)
	if n, err := natsx.WorkMessages(ctx, s); err != nil || n != 1 {
		t.Fatalf("work messages %d (%v), want the one queued before the update", n, err)
	}
}
