package fsm

import (
	"testing"
	"unsafe"
)

// goSizeClasses are the Go allocator's small size classes up to 1 KiB
// (runtime/sizeclasses.go; unchanged since Go 1.x for these sizes).
var goSizeClasses = []uintptr{8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256,
	288, 320, 352, 384, 416, 448, 480, 512, 576, 640, 704, 768, 896, 1024}

func sizeClass(n uintptr) uintptr {
	for _, c := range goSizeClasses {
		if n <= c {
			return c
		}
	}
	return n
}

// TestSetNodesAreNotInTheRecordsSizeClass: a full B-tree node's item and
// child arrays (grown by append to a power of two) must not share a size
// class with the records the sets hold. Every write's copy-on-write path
// leaves such arrays behind; in the records' class they are interleaved with
// the long-lived records, and after a fill those spans stay part-used
// (with degree 16 both were 256 bytes: fsm/instset.go, setDegree).
func TestSetNodesAreNotInTheRecordsSizeClass(t *testing.T) {
	pow2 := uintptr(1)
	for pow2 < 2*setDegree {
		pow2 <<= 1
	}
	items := sizeClass(pow2 * unsafe.Sizeof((*Instance)(nil)))
	for name, size := range map[string]uintptr{
		"Instance": unsafe.Sizeof(Instance{}),
		"Check":    unsafe.Sizeof(Check{}),
	} {
		if c := sizeClass(size); c == items {
			t.Errorf("a full set node's arrays (%d bytes, degree %d) share the %d-byte size class of %s (%d bytes)",
				pow2*unsafe.Sizeof((*Instance)(nil)), setDegree, c, name, size)
		}
	}
}
