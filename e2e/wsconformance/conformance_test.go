package wsconformance

import (
	"strings"
	"testing"

	"github.com/bayeux-cluster/bayeux/internal/testproc"
)

// TestConformance runs every section against one node started as a user
// starts it (defaults: compression on, 1 MiB message limit), each case on
// a connection of its own.
func TestConformance(t *testing.T) {
	n := testproc.StartNode(t, nil, "--demo=false")
	sections := []struct {
		name  string
		cases []wsCase
	}{
		{"1 framing", framingCases()},
		{"2 pings and pongs", pingCases()},
		{"3 reserved bits", reservedBitCases()},
		{"4 opcodes", opcodeCases()},
		{"5 fragmentation", fragmentationCases()},
		{"6 UTF-8", utf8Cases()},
		{"7 close", closeCases()},
		{"9 limits", limitCases()},
		{"12-13 permessage-deflate", deflateCases()},
	}
	total := 0
	for _, s := range sections {
		t.Run(s.name, func(t *testing.T) {
			for _, c := range s.cases {
				total++
				t.Run(c.id+" "+c.desc, func(t *testing.T) {
					c.run(dial(t, n.URL, c.offer))
				})
			}
		})
	}
	t.Logf("%d cases", total)
}

// TestCompressionOff checks --ws-compression=false: no offer is accepted,
// and a compressed frame is then a protocol error.
func TestCompressionOff(t *testing.T) {
	n := testproc.StartNode(t, nil, "--demo=false", "--ws-compression=false")
	for _, offer := range []string{offerBrowser, offerNoCtx} {
		t.Run(offer, func(t *testing.T) {
			c := dial(t, n.URL, offer)
			if c.ext != "" || c.deflate {
				t.Fatalf("offer %q answered %q with compression off", offer, c.ext)
			}
			c.send(text(bayeux("plain")))
			c.expectEcho("plain")
			c.loose = true
			c.send(compressed(bayeux(strings.Repeat("z", 500))))
			c.expectClose(1002)
		})
	}
}
