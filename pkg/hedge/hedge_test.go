package hedge

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/switchyard-llm/switchyard/pkg/testkit"
)

// One branch wins, and keeps winning when its handler runs again after a
// redelivery (its reply must not be lost); the other loses.
func TestWinIsOneBranchAndIdempotent(t *testing.T) {
	_, js := testkit.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr, err := New(ctx, js, "")
	if err != nil {
		t.Fatal(err)
	}
	if won, err := tr.Win(ctx, "r1", 1); err != nil || !won {
		t.Fatalf("first claim: %v %v", won, err)
	}
	if won, _ := tr.Win(ctx, "r1", 0); won {
		t.Fatal("the other branch won too")
	}
	if won, err := tr.Win(ctx, "r1", 1); err != nil || !won {
		t.Fatalf("the winner's repeated claim: %v %v", won, err)
	}
}

// Done reports the total once every branch is done, whatever the order,
// and a repeated report is not counted twice.
func TestDoneTotalsEveryBranch(t *testing.T) {
	_, js := testkit.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr, err := New(ctx, js, "")
	if err != nil {
		t.Fatal(err)
	}
	if all, _, _, err := tr.Done(ctx, "r2", 1, 2, 0.25, 1); err != nil || all {
		t.Fatalf("one of two branches: all=%v %v", all, err)
	}
	if all, _, _, err := tr.Done(ctx, "r2", 1, 2, 0.25, 1); err != nil || all {
		t.Fatalf("the same branch again: all=%v %v", all, err)
	}
	all, total, calls, err := tr.Done(ctx, "r2", 0, 2, 0.5, 2)
	if err != nil || !all || math.Abs(total-0.75) > 1e-12 || calls != 3 {
		t.Fatalf("both branches: all=%v total=%v calls=%d %v", all, total, calls, err)
	}
}
