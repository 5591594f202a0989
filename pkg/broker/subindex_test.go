package broker

import "testing"

type countKicker struct{ n int }

func (k *countKicker) kick() { k.n++ }

// TestKickBatchWakesEachWriterOnce: within one publication a writer
// recorded twice in a row is woken once; within a batch (seen set) every
// writer is woken once, however its publications interleave.
func TestKickBatchWakesEachWriterOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		batch bool
		order []int // indexes of the kickers added, in order
		want  []int // kicks per kicker after run
	}{
		{"one publication, repeated in a row", false, []int{0, 0, 1}, []int{1, 1}},
		{"batch, interleaved", true, []int{0, 1, 0, 1, 1, 0}, []int{1, 1}},
		{"batch, one writer", true, []int{1, 0, 1, 1}, []int{1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ks := []*countKicker{{}, {}}
			kb := &kickBatch{}
			if tc.batch {
				kb.seen = map[kicker]struct{}{}
			}
			for _, i := range tc.order {
				kb.add(ks[i])
			}
			kb.run()
			for i, k := range ks {
				if k.n != tc.want[i] {
					t.Fatalf("kicker %d woken %d times, want %d", i, k.n, tc.want[i])
				}
			}
			if len(kb.ks) != 0 || len(kb.seen) != 0 {
				t.Fatalf("kick batch not emptied by run: %d kickers, %d seen", len(kb.ks), len(kb.seen))
			}
		})
	}
}
