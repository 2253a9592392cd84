package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// Events stored while a batch is being stored go together as the next
// batch, every Store returns once its own batch is stored (never before),
// and each event is stored exactly once.
func TestGroupCommitBatchesWhatArrivesDuringAPublish(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var batches [][]int
	published := make(chan struct{}, 100)
	g := &GroupCommit{Publish: func(ctx context.Context, batch []byte) error {
		var events []int
		if err := json.Unmarshal(batch, &events); err != nil {
			return err
		}
		if len(events) == 1 && events[0] == 0 {
			<-release // the first batch is stored slowly
		}
		mu.Lock()
		batches = append(batches, events)
		mu.Unlock()
		published <- struct{}{}
		return nil
	}}
	ctx := context.Background()
	stored := make(chan int, 10)
	store := func(i int) {
		if err := g.Store(ctx, []byte(fmt.Sprint(i))); err != nil {
			t.Error(err)
		}
		stored <- i
	}
	go store(0)
	testkit.Eventually(t, 10*time.Second, "a batch being stored", func() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.busy })
	for i := 1; i <= 5; i++ {
		go store(i)
	}
	testkit.Eventually(t, 10*time.Second, "5 events waiting", func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.queue) == 5 })
	select {
	case i := <-stored:
		t.Fatalf("Store(%d) returned before its batch was stored", i)
	default:
	}
	close(release)
	var got []int
	for range 6 {
		got = append(got, <-stored)
	}
	sort.Ints(got)
	if fmt.Sprint(got) != "[0 1 2 3 4 5]" {
		t.Fatalf("stored %v", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(batches) != 2 || len(batches[0]) != 1 || len(batches[1]) != 5 {
		t.Fatalf("batches %v, want [0] then the five that waited", batches)
	}
}

// Every Store of a batch that fails gets the failure; the next batch is
// still published (by the first of its events); Max bounds a batch.
func TestGroupCommitFailureReachesEveryEventOfItsBatch(t *testing.T) {
	fail := errors.New("stream unavailable")
	var mu sync.Mutex
	var sizes []int
	release := make(chan struct{})
	g := &GroupCommit{Max: 2, Publish: func(ctx context.Context, batch []byte) error {
		var events []int
		if err := json.Unmarshal(batch, &events); err != nil {
			return err
		}
		mu.Lock()
		sizes = append(sizes, len(events))
		first := len(sizes) == 1
		mu.Unlock()
		if first {
			<-release
			return nil
		}
		if events[0] >= 3 {
			return nil
		}
		return fail
	}}
	ctx := context.Background()
	errs := make(map[int]error)
	var emu sync.Mutex
	var wg sync.WaitGroup
	store := func(i int) {
		defer wg.Done()
		err := g.Store(ctx, []byte(fmt.Sprint(i)))
		emu.Lock()
		errs[i] = err
		emu.Unlock()
	}
	wg.Add(1)
	go store(0)
	testkit.Eventually(t, 10*time.Second, "a batch being stored", func() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.busy })
	for i := 1; i <= 4; i++ {
		wg.Add(1)
		go store(i)
		testkit.Eventually(t, 10*time.Second, fmt.Sprintf("%d events waiting", i), func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.queue) == i })
	}
	close(release)
	wg.Wait()
	// Batches: [0], [1 2] (fails), [3 4].
	for i, want := range []error{nil, fail, fail, nil, nil} {
		if !errors.Is(errs[i], want) {
			t.Fatalf("event %d: %v, want %v", i, errs[i], want)
		}
	}
	if fmt.Sprint(sizes) != "[1 2 2]" {
		t.Fatalf("batch sizes %v, want [1 2 2]", sizes)
	}
	if g.busy || len(g.queue) != 0 {
		t.Fatal("the group is left busy")
	}
}

// A publish that panics still answers the events waiting on its batch and
// hands the lead on, so nobody waits forever.
func TestGroupCommitPanicLeavesNobodyWaiting(t *testing.T) {
	release := make(chan struct{})
	calls := 0
	g := &GroupCommit{Publish: func(ctx context.Context, batch []byte) error {
		calls++
		if calls == 1 {
			<-release
			panic("boom")
		}
		return nil
	}}
	ctx := context.Background()
	panicked := make(chan any, 1)
	go func() {
		defer func() { panicked <- recover() }()
		_ = g.Store(ctx, []byte("0"))
	}()
	testkit.Eventually(t, 10*time.Second, "a batch being stored", func() bool { g.mu.Lock(); defer g.mu.Unlock(); return g.busy })
	done := make(chan error, 2)
	for i := 1; i <= 2; i++ {
		go func() { done <- g.Store(ctx, []byte(fmt.Sprint(i))) }()
	}
	testkit.Eventually(t, 10*time.Second, "2 events waiting", func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.queue) == 2 })
	close(release)
	if p := <-panicked; p != "boom" {
		t.Fatalf("recovered %v", p)
	}
	// Both waited in the batch after the one that panicked: stored.
	for range 2 {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a Store still waits after the publish panicked")
		}
	}
}
