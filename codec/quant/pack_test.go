package quant

import (
	"bytes"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"github.com/heft-dev/heft/codec/safetensors"
)

// §14.13: unpack(pack(q)) == q for every code value and for row lengths not
// divisible by 8 (or by the codes per word), both layouts and both packing
// dimensions.
func TestPackRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	for bits := 1; bits <= 8; bits++ {
		lo, hi := -(1 << (bits - 1)), 1<<(bits-1)-1
		for _, layout := range []Layout{Dense, ElementAligned} {
			for _, cols := range []int{1, 3, 7, 8, 9, 31, 32, 33, 100, 257} {
				rows := 1 + rng.IntN(5)
				q := make([]int8, rows*cols)
				for i := range q {
					// Every code value appears: cycle through the range, then
					// shuffle.
					q[i] = int8(lo + i%(hi-lo+1))
				}
				rng.Shuffle(len(q), func(i, j int) { q[i], q[j] = q[j], q[i] })
				packed, err := PackInt32(q, cols, bits, layout)
				if err != nil {
					t.Fatal(err)
				}
				if len(packed) != rows*PackedWords(cols, bits, layout) {
					t.Errorf("%d-bit %s %d cols: %d words", bits, layout, cols, len(packed))
				}
				back, err := UnpackInt32(packed, cols, bits, layout)
				if err != nil || !slices.Equal(back, q) {
					t.Errorf("%d-bit %s %d cols: round trip failed: %v", bits, layout, cols, err)
				}
				// The byte-level unpacker the kernels use agrees.
				raw := int32sToBytes(packed)
				w := PackedWords(cols, bits, layout)
				u := make([]uint8, cols)
				for r := range rows {
					unpackRowBytes(u, raw[4*r*w:4*(r+1)*w], bits, layout)
					for c, v := range u {
						if int(v)+lo != int(q[r*cols+c]) {
							t.Fatalf("%d-bit %s %d cols: unpackRowBytes row %d col %d = %d, want %d", bits, layout, cols, r, c, int(v)+lo, q[r*cols+c])
						}
					}
				}
				// Along dim 0, the matrix's rows become the packed dimension.
				p0, err := PackInt32Dim0(q, rows, cols, bits, layout)
				if err != nil {
					t.Fatal(err)
				}
				back0, err := UnpackInt32Dim0(p0, rows, cols, bits, layout)
				if err != nil || !slices.Equal(back0, q) {
					t.Errorf("%d-bit %s [%d,%d] dim 0: round trip failed: %v", bits, layout, rows, cols, err)
				}
			}
		}
	}
}

func TestPackRejects(t *testing.T) {
	if _, err := PackInt32([]int8{8}, 1, 4, Dense); err == nil {
		t.Error("4-bit code 8 accepted")
	}
	if _, err := PackInt32([]int8{-9}, 1, 4, Dense); err == nil {
		t.Error("4-bit code -9 accepted")
	}
	if _, err := PackInt32([]int8{1, 2, 3}, 2, 4, Dense); err == nil {
		t.Error("3 codes in rows of 2 accepted")
	}
	if _, err := PackInt32([]int8{1}, 1, 9, Dense); err == nil {
		t.Error("9 bits accepted")
	}
	if _, err := UnpackInt32([]int32{1, 2, 3}, 9, 4, Dense); err == nil {
		t.Error("3 words for rows of 2 words accepted")
	}
	if _, err := PackAWQ([]uint8{16, 0, 0, 0, 0, 0, 0, 0}, 8); err == nil {
		t.Error("AWQ value 16 accepted")
	}
	if _, err := PackAWQ(make([]uint8, 12), 12); err == nil {
		t.Error("AWQ row of 12 accepted")
	}
}

// §14.13: AWQ → compressed-tensors → AWQ is byte-identical, and both
// dequantize to the same bytes (§7: (q_ct − zp_ct)·s = (u − z)·s).
func TestAWQRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 12))
	for _, tc := range []struct{ out, in, group int }{{8, 8, 8}, {64, 256, 128}, {24, 96, 32}, {520, 384, 128}} {
		for _, zeros := range []bool{true, false} {
			sy := awqSynth(rng, tc.out, tc.in, tc.group, safetensors.F16, zeros)
			p := "model.layers.0.self_attn.q_proj"
			a := AWQTensors{QWeight: sy.data[p+".qweight"], QZeros: sy.data[p+".qzeros"], Scales: sy.data[p+".scales"]}
			ct, err := AWQToPacked(tc.out, tc.in, tc.group, a)
			if err != nil {
				t.Fatal(err)
			}
			if (ct.WeightZeroPoint == nil) == zeros {
				t.Errorf("zeros=%v: zero point %v", zeros, ct.WeightZeroPoint != nil)
			}
			back, err := PackedToAWQ(tc.out, tc.in, tc.group, ct)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(back.QWeight, a.QWeight) || !bytes.Equal(back.Scales, a.Scales) {
				t.Errorf("%v zeros=%v: qweight/scales changed in the round trip", tc, zeros)
			}
			if zeros && !bytes.Equal(back.QZeros, a.QZeros) {
				t.Errorf("%v: qzeros changed in the round trip", tc)
			}
			if !zeros {
				for _, b := range back.QZeros {
					if b != 0x88 {
						t.Fatalf("%v: symmetric module got qzeros %x, want all 8s", tc, back.QZeros)
					}
				}
			}

			// Dequantize both through Detect.
			awqOut, err := dequantSynth(t, sy, safetensors.F16)
			if err != nil {
				t.Fatal(err)
			}
			g := tc.group
			groups := tc.in / g
			cfg := ctConfig("pack-quantized", TypeInt, 4, StrategyGroup, g, [2]int{}, !zeros, false, false)
			tensors := []safetensors.TensorInfo{
				ti(p+".weight_packed", safetensors.I32, uint64(tc.out), uint64(tc.in/8)),
				ti(p+".weight_scale", safetensors.F16, uint64(tc.out), uint64(groups)),
				ti(p+".weight_shape", safetensors.I64, 2),
			}
			data := map[Role][]byte{RoleCodes: ct.WeightPacked, RoleScale: ct.WeightScale, RoleShape: ct.WeightShape}
			if zeros {
				tensors = append(tensors, ti(p+".weight_zero_point", safetensors.I32, uint64(tc.out/8), uint64(groups)))
				data[RoleZeroPoint] = ct.WeightZeroPoint
			}
			m, err := Detect([]byte(cfg), tensors, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctOut, err := Dequantize(m.Modules[0], data, safetensors.F16)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ctOut, awqOut) {
				t.Errorf("%v zeros=%v: AWQ and its compressed-tensors conversion dequantize differently", tc, zeros)
			}
		}
	}
	if _, err := AWQToPacked(12, 8, 8, AWQTensors{}); err == nil {
		t.Error("out = 12 accepted")
	}
	if _, err := AWQToPacked(8, 12, 8, AWQTensors{}); err == nil {
		t.Error("group 8 with in = 12 accepted")
	}
}

// Sizes come from callers and files: a huge dimension with no data must
// not allocate for it.
func TestPackBoundedAllocation(t *testing.T) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	func() {
		if q, err := UnpackInt32(nil, 1<<30, 4, Dense); err != nil || len(q) != 0 {
			t.Errorf("UnpackInt32(nil, 2^30): %v, %v", q, err)
		}
		if q, err := UnpackInt32Dim0(nil, 1<<30, 0, 4, Dense); err != nil || len(q) != 0 {
			t.Errorf("UnpackInt32Dim0(nil, 2^30, 0): %v, %v", q, err)
		}
		if p, err := PackInt32Dim0(nil, 1<<30, 0, 4, Dense); err != nil || len(p) != 0 {
			t.Errorf("PackInt32Dim0(nil, 2^30, 0): %v, %v", p, err)
		}
		if _, err := UnpackInt32(nil, 1<<40, 4, Dense); err == nil {
			t.Error("UnpackInt32 accepted 2^40 columns")
		}
	}()
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Errorf("allocated %d bytes", n)
	}
}
