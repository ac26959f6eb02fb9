package numeric

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// goldenDir is shared/testdata/golden relative to this package's directory,
// where go test runs.
var goldenDir = filepath.Join("..", "..", "..", "shared", "testdata", "golden")

const goldenE4M3SHA256 = "ecbb201b2182a3e8e84f521d57c51ff379e8e5ec61141119005be7d672db0d98"

// readGoldenE4M3 reads the exhaustive bf16 → E4M3FN table torch produced
// and checks it is undamaged before anything is compared against it.
func readGoldenE4M3(t testing.TB) []byte {
	t.Helper()
	table, err := os.ReadFile(filepath.Join(goldenDir, "bf16_to_f8e4m3fn.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if len(table) != 1<<16 {
		t.Fatalf("golden table is %d bytes, want 65536", len(table))
	}
	if sum := sha256.Sum256(table); hex.EncodeToString(sum[:]) != goldenE4M3SHA256 {
		t.Fatalf("golden table SHA-256 %x, want %s", sum, goldenE4M3SHA256)
	}
	return table
}

// mismatches collects failures and reports only the first few, so one
// systematic bug does not print 65,536 lines.
type mismatches struct {
	t     *testing.T
	name  string
	count int
}

func (m *mismatches) add(format string, args ...any) {
	m.t.Helper()
	if m.count < 8 {
		m.t.Errorf("%s: "+format, append([]any{m.name}, args...)...)
	}
	m.count++
}

func (m *mismatches) done() {
	m.t.Helper()
	if m.count > 8 {
		m.t.Errorf("%s: %d mismatches in all", m.name, m.count)
	}
}

func TestGoldenBF16ToE4M3FN(t *testing.T) {
	table := readGoldenE4M3(t)
	src := make([]byte, 2<<16)
	for u := range 1 << 16 {
		binary.LittleEndian.PutUint16(src[2*u:], uint16(u))
	}
	bulk := make([]byte, 1<<16)
	BF16ToE4M3FNSlice(bulk, src)
	viaF32 := make([]float32, 1<<16)
	BF16ToF32Slice(viaF32, src)
	bulkF32 := make([]byte, 1<<16)
	F32ToE4M3FNSlice(bulkF32, viaF32)

	m := mismatches{t: t, name: "F32ToE4M3FN"}
	for u := range 1 << 16 {
		x := math.Float32frombits(uint32(u) << 16)
		want := table[u]
		if got := F32ToE4M3FN(x); got != want {
			m.add("bf16 %#04x (%v): got %#02x want %#02x", u, x, got, want)
		}
		if got := BF16ToE4M3FN(uint16(u)); got != want {
			m.add("BF16ToE4M3FN(%#04x): got %#02x want %#02x", u, got, want)
		}
		if bulk[u] != want || bulkF32[u] != want {
			m.add("slices at bf16 %#04x: BF16ToE4M3FNSlice %#02x, F32ToE4M3FNSlice %#02x, want %#02x", u, bulk[u], bulkF32[u], want)
		}
	}
	m.done()

	// The clamped path agrees with the table wherever clamping is a no-op,
	// gives ±448 for every other non-NaN input, and keeps NaN.
	BF16ToE4M3FNSatSlice(bulk, src)
	F32ToE4M3FNSatSlice(bulkF32, viaF32)
	m = mismatches{t: t, name: "F32ToE4M3FNSat"}
	for u := range 1 << 16 {
		x := math.Float32frombits(uint32(u) << 16)
		want := table[u]
		switch a := math.Abs(float64(x)); {
		case math.IsNaN(a):
			want = 0x7F | uint8(u>>8)&0x80
		case a > 448:
			want = 0x7E | uint8(u>>8)&0x80
		}
		got := F32ToE4M3FNSat(x)
		if got != want || BF16ToE4M3FNSat(uint16(u)) != want || bulk[u] != want || bulkF32[u] != want {
			m.add("bf16 %#04x (%v): got %#02x (table %#02x, slices %#02x %#02x) want %#02x",
				u, x, got, BF16ToE4M3FNSat(uint16(u)), bulk[u], bulkF32[u], want)
		}
	}
	m.done()

	// Spot entries from the golden README, so a table and encoder that
	// were both wrong in the same way would still be caught.
	for u, want := range map[uint16]uint8{
		0x43E8: 0x7E, 0x43E9: 0x7F, 0x7F80: 0x7F, 0xFF80: 0xFF, 0xFFC0: 0xFF,
		0x3F80: 0x38, 0x3C80: 0x08, 0x3A80: 0x00, 0x3A81: 0x01,
	} {
		if table[u] != want {
			t.Errorf("golden table[%#04x] = %#02x, README says %#02x", u, table[u], want)
		}
	}
}

// §14.1: all 256 codes, decoded as float32 little-endian with NaN written as
// 0x7FC00000, hash to this value.
const decodeE4M3SHA256 = "422eccfaa21e72a6b26855bb10cdcfead6c1ce3262ecd813c99d8cbf9677f2e2"

func TestE4M3FNDecode(t *testing.T) {
	var buf bytes.Buffer
	for c := range 256 {
		v := E4M3FNToF32(uint8(c))
		bits := math.Float32bits(v)
		if v != v {
			bits = 0x7FC00000
		}
		binary.Write(&buf, binary.LittleEndian, bits)
		if !decoded(v).matches(refDecodeE4M3FN(uint8(c))) {
			t.Errorf("E4M3FNToF32(%#02x) = %v, reference %+v", c, v, refDecodeE4M3FN(uint8(c)))
		}
	}
	if sum := sha256.Sum256(buf.Bytes()); hex.EncodeToString(sum[:]) != decodeE4M3SHA256 {
		t.Errorf("decoded table SHA-256 %x, want %s", sum, decodeE4M3SHA256)
	}
	for c, want := range map[uint8]float32{
		0x00: 0, 0x01: 0.001953125, 0x07: 0.013671875, 0x08: 0.015625, 0x30: 0.5, 0x38: 1, 0x40: 2, 0x46: 3.5,
		0x70: 128, 0x77: 240, 0x78: 256, 0x7D: 416, 0x7E: 448, 0xFE: -448,
	} {
		if got := E4M3FNToF32(c); got != want {
			t.Errorf("E4M3FNToF32(%#02x) = %v, want %v", c, got, want)
		}
	}
	if v := E4M3FNToF32(0x80); v != 0 || !math.Signbit(float64(v)) {
		t.Errorf("E4M3FNToF32(0x80) = %v, want -0", v)
	}
	for _, c := range []uint8{0x7F, 0xFF} {
		if v := E4M3FNToF32(c); v == v {
			t.Errorf("E4M3FNToF32(%#02x) = %v, want NaN", c, v)
		}
	}

	codes := make([]byte, 256)
	for i := range codes {
		codes[i] = byte(i)
	}
	out := make([]float32, 256)
	E4M3FNToF32Slice(out, codes)
	for c, v := range out {
		if math.Float32bits(v) != math.Float32bits(E4M3FNToF32(uint8(c))) {
			t.Errorf("E4M3FNToF32Slice[%#02x] = %v, scalar %v", c, v, E4M3FNToF32(uint8(c)))
		}
	}
}

func TestE5M2Decode(t *testing.T) {
	for c := range 256 {
		v := E5M2ToF32(uint8(c))
		if want := refDecodeE5M2(uint8(c)); !decoded(v).matches(want) {
			t.Errorf("E5M2ToF32(%#02x) = %v, reference %+v", c, v, want)
		}
	}
	// formats.md §1.3 and §14.1.
	if v := E5M2ToF32(0x7B); v != E5M2Max {
		t.Errorf("E5M2ToF32(0x7B) = %v, want 57344", v)
	}
	if v := E5M2ToF32(0x7C); !math.IsInf(float64(v), 1) {
		t.Errorf("E5M2ToF32(0x7C) = %v, want +Inf", v)
	}
	for _, c := range []uint8{0x7D, 0x7E, 0x7F} {
		if v := E5M2ToF32(c); v == v {
			t.Errorf("E5M2ToF32(%#02x) = %v, want NaN", c, v)
		}
	}
	for m := range uint8(4) {
		if v, want := E5M2ToF32(m), float32(m)*0x1p-16; v != want {
			t.Errorf("E5M2ToF32(%#02x) = %v, want %v", m, v, want)
		}
	}
}

// decoded turns a float32 into a refResult for comparison.
func decoded(v float32) refResult {
	f := float64(v)
	return refResult{nan: math.IsNaN(f), neg: math.Signbit(f), abs: math.Abs(f)}
}

var (
	nan32    = float32(math.NaN())
	inf32    = float32(math.Inf(1))
	negInf32 = float32(math.Inf(-1))
)

// encodeVectors is formats.md §14.2. Inputs are the float32 values nearest
// the listed decimals (Go's constant conversion to float32 rounds
// correctly). viaBF16 is fp8(bf16(x)); for NaN inputs only NaN-ness is
// checked.
var encodeVectors = []struct {
	x                   float32
	e4m3, viaBF16, e5m2 uint8
	bf16                uint16
}{
	{0.0, 0x00, 0x00, 0x00, 0x0000},
	{float32(math.Copysign(0, -1)), 0x80, 0x80, 0x80, 0x8000},
	{448.0, 0x7E, 0x7E, 0x5F, 0x43E0},
	{449.0, 0x7E, 0x7E, 0x5F, 0x43E0},
	{456.0, 0x7E, 0x7E, 0x5F, 0x43E4},
	{460.0, 0x7E, 0x7E, 0x5F, 0x43E6},
	{463.99, 0x7E, 0x7E, 0x5F, 0x43E8},
	{464.0, 0x7E, 0x7E, 0x5F, 0x43E8},
	{464.01, 0x7F, 0x7E, 0x5F, 0x43E8},
	{465.0, 0x7F, 0x7E, 0x5F, 0x43E8},
	{472.0, 0x7F, 0x7F, 0x5F, 0x43EC},
	{479.0, 0x7F, 0x7F, 0x5F, 0x43F0},
	{479.99, 0x7F, 0x7F, 0x5F, 0x43F0},
	{480.0, 0x7F, 0x7F, 0x60, 0x43F0},
	{500.0, 0x7F, 0x7F, 0x60, 0x43FA},
	{10000.0, 0x7F, 0x7F, 0x71, 0x461C},
	{inf32, 0x7F, 0x7F, 0x7C, 0x7F80},
	{negInf32, 0xFF, 0xFF, 0xFC, 0xFF80},
	{nan32, 0x7F, 0x7F, 0x7F, 0xFFFF},
	{-464.0, 0xFE, 0xFE, 0xDF, 0xC3E8},
	{-465.0, 0xFF, 0xFE, 0xDF, 0xC3E8},
	{-480.0, 0xFF, 0xFF, 0xE0, 0xC3F0},
	{0.001953125, 0x01, 0x01, 0x18, 0x3B00},
	{0.0009765625, 0x00, 0x00, 0x14, 0x3A80},
	{0.00097656259765625, 0x01, 0x00, 0x14, 0x3A80},
	{0.00146484375, 0x01, 0x01, 0x16, 0x3AC0},
	{0.0029296875, 0x02, 0x02, 0x1A, 0x3B40},
	{0.0048828125, 0x02, 0x02, 0x1D, 0x3BA0},
	{0.015625, 0x08, 0x08, 0x24, 0x3C80},
	{0.0166015625, 0x08, 0x08, 0x24, 0x3C88},
	{0.0185546875, 0x0A, 0x0A, 0x25, 0x3C98},
	{1.0625, 0x38, 0x38, 0x3C, 0x3F88},
	{1.1875, 0x3A, 0x3A, 0x3D, 0x3F98},
	{0.3, 0x2A, 0x2A, 0x35, 0x3E9A},
	{-0.3, 0xAA, 0xAA, 0xB5, 0xBE9A},
	{1e-30, 0x00, 0x00, 0x00, 0x0DA2},
	{240.0, 0x77, 0x77, 0x5C, 0x4370},
	{241.0, 0x77, 0x77, 0x5C, 0x4371},
}

func TestEncodeVectors(t *testing.T) {
	isE4M3NaN := func(c uint8) bool { return c&0x7F == 0x7F }
	for _, v := range encodeVectors {
		name := fmt.Sprintf("%v (%#08x)", v.x, math.Float32bits(v.x))
		e4m3, e5m2, bf := F32ToE4M3FN(v.x), F32ToE5M2(v.x), F32ToBF16(v.x)
		via := F32ToE4M3FN(BF16ToF32(bf))
		if v.x != v.x {
			// NaN bytes are path-dependent (formats.md §1.2, §1.4).
			if !isE4M3NaN(e4m3) || !isE4M3NaN(via) || e5m2&0x7F <= 0x7C || BF16ToF32(bf) == BF16ToF32(bf) {
				t.Errorf("%s: E4M3 %#02x via-bf16 %#02x E5M2 %#02x BF16 %#04x, want NaNs", name, e4m3, via, e5m2, bf)
			}
			continue
		}
		if e4m3 != v.e4m3 {
			t.Errorf("%s: F32ToE4M3FN = %#02x, want %#02x", name, e4m3, v.e4m3)
		}
		if via != v.viaBF16 {
			t.Errorf("%s: via BF16 = %#02x, want %#02x", name, via, v.viaBF16)
		}
		if b := BF16ToE4M3FN(bf); b != v.viaBF16 {
			t.Errorf("%s: BF16ToE4M3FN(%#04x) = %#02x, want %#02x", name, bf, b, v.viaBF16)
		}
		if e5m2 != v.e5m2 {
			t.Errorf("%s: F32ToE5M2 = %#02x, want %#02x", name, e5m2, v.e5m2)
		}
		if bf != v.bf16 {
			t.Errorf("%s: F32ToBF16 = %#04x, want %#04x", name, bf, v.bf16)
		}
		// The quantizer's path clamps: never NaN for a non-NaN input.
		wantSat := v.e4m3
		if math.Abs(float64(v.x)) > 448 {
			wantSat = 0x7E | v.e4m3&0x80
		}
		if got := F32ToE4M3FNSat(v.x); got != wantSat {
			t.Errorf("%s: F32ToE4M3FNSat = %#02x, want %#02x", name, got, wantSat)
		}
	}
	if got := F32ToE4M3FN(-nan32); got != 0xFF {
		t.Errorf("F32ToE4M3FN(-NaN) = %#02x, want 0xFF (sign kept)", got)
	}
	if got := F32ToE4M3FNSat(-nan32); got != 0xFF {
		t.Errorf("F32ToE4M3FNSat(-NaN) = %#02x, want 0xFF", got)
	}
}

// TestBF16Vectors is formats.md §14.4.
func TestBF16Vectors(t *testing.T) {
	for _, v := range []struct {
		x    float32
		want uint16
	}{
		{1.00390625, 0x3F80},
		{1.01171875, 0x3F82},
		{1.0039072036743164, 0x3F81},
		{3.4028234663852886e38, 0x7F80},
		{3.3895313892515355e38, 0x7F7F},
		{1e-45, 0x0000},
		{-1.498046875, 0xBFC0},
		{0.3, 0x3E9A},
		{1e-30, 0x0DA2},
		{-inf32, 0xFF80},
	} {
		if got := F32ToBF16(v.x); got != v.want {
			t.Errorf("F32ToBF16(%v) = %#04x, want %#04x", v.x, got, v.want)
		}
	}
	for _, x := range []float32{nan32, -nan32, math.Float32frombits(0x7F800001), math.Float32frombits(0xFFFFFFFF)} {
		if got := F32ToBF16(x); BF16ToF32(got) == BF16ToF32(got) {
			t.Errorf("F32ToBF16(%#08x) = %#04x, want a NaN", math.Float32bits(x), got)
		}
	}
}

func TestF16Vectors(t *testing.T) {
	for _, v := range []struct {
		x    float32
		want uint16
	}{
		{0, 0x0000}, {1, 0x3C00}, {-2, 0xC000}, {65504, 0x7BFF}, {65519.99, 0x7BFF}, {65520, 0x7C00},
		{0x1p-24, 0x0001}, {0x1p-25, 0x0000}, {0x1.000002p-25, 0x0001}, {0x3p-25, 0x0002},
		{0x1p-14, 0x0400}, {0x1.ffcp-15, 0x0400}, {0x1.ff4p-15, 0x03FE}, {1 + 0x1p-11, 0x3C00}, {1 + 0x3p-11, 0x3C02},
		{inf32, 0x7C00}, {negInf32, 0xFC00}, {0.3, 0x34CD},
	} {
		if got := F32ToF16(v.x); got != v.want {
			t.Errorf("F32ToF16(%v) = %#04x, want %#04x", v.x, got, v.want)
		}
	}
	if got := F32ToF16(nan32); got&0x7C00 != 0x7C00 || got&0x3FF == 0 {
		t.Errorf("F32ToF16(NaN) = %#04x, want a NaN", got)
	}
	for h := range 1 << 16 {
		v := F16ToF32(uint16(h))
		if want := refDecodeF16(uint16(h)); !decoded(v).matches(want) {
			t.Errorf("F16ToF32(%#04x) = %v, reference %+v", h, v, want)
		}
	}
}

// TestRoundTrips covers formats.md §14.13's "encode(decode(c)·s / s) == c"
// for every E4M3FN code and power-of-two scales, and the exactness of every
// decoder: each code decodes to a value that encodes back to itself.
func TestRoundTrips(t *testing.T) {
	for c := range 256 {
		code := uint8(c)
		v := E4M3FNToF32(code)
		if v != v {
			continue
		}
		for k := -24; k <= 24; k++ {
			s := float32(math.Ldexp(1, k))
			x := v * s / s
			if got := F32ToE4M3FN(x); got != code {
				t.Errorf("E4M3FN %#02x with scale 2^%d: got %#02x", c, k, got)
			}
			if got := F32ToE4M3FNSat(x); got != code {
				t.Errorf("E4M3FN sat %#02x with scale 2^%d: got %#02x", c, k, got)
			}
		}
		if E5M2ToF32(code) == E5M2ToF32(code) && F32ToE5M2(E5M2ToF32(code)) != code {
			t.Errorf("E5M2 %#02x does not round-trip: %#02x", c, F32ToE5M2(E5M2ToF32(code)))
		}
	}
	for h := range 1 << 16 {
		u := uint16(h)
		if v := BF16ToF32(u); v == v && F32ToBF16(v) != u {
			t.Errorf("BF16 %#04x does not round-trip: %#04x", h, F32ToBF16(v))
		}
		if v := F16ToF32(u); v == v && F32ToF16(v) != u {
			t.Errorf("F16 %#04x does not round-trip: %#04x", h, F32ToF16(v))
		}
	}
}

// checkAgainstReference compares every encoder with its float64 reference
// on one input; it is shared by the deterministic sweep and the fuzzers.
func checkAgainstReference(t *testing.T, x float32) {
	t.Helper()
	bits := math.Float32bits(x)
	if got, want := F32ToE4M3FN(x), refE4M3FN(x); !refDecodeE4M3FN(got).matches(want) {
		t.Errorf("F32ToE4M3FN(%v = %#08x) = %#02x, reference %+v", x, bits, got, want)
	}
	if got, want := F32ToE4M3FNSat(x), refE4M3FNSat(x); !refDecodeE4M3FN(got).matches(want) {
		t.Errorf("F32ToE4M3FNSat(%v = %#08x) = %#02x, reference %+v", x, bits, got, want)
	}
	if got, want := F32ToE5M2(x), refE5M2(x); !refDecodeE5M2(got).matches(want) {
		t.Errorf("F32ToE5M2(%v = %#08x) = %#02x, reference %+v", x, bits, got, want)
	}
	if got, want := F32ToBF16(x), refBF16(x); !refDecodeBF16(got).matchesIgnoringNaNSign(want) {
		t.Errorf("F32ToBF16(%v = %#08x) = %#04x, reference %+v", x, bits, got, want)
	}
	if got, want := F32ToF16(x), refF16(x); !refDecodeF16(got).matches(want) {
		t.Errorf("F32ToF16(%v = %#08x) = %#04x, reference %+v", x, bits, got, want)
	}
}

// TestAgainstReference sweeps the inputs where rounding bugs live: every
// midpoint between neighbouring codes of each format and a few float32 ulps
// either side, every code itself, the format boundaries, and random float32
// bit patterns.
func TestAgainstReference(t *testing.T) {
	var inputs []float32
	around := func(v float32) {
		b := math.Float32bits(v)
		for d := uint32(0); d <= 3; d++ {
			inputs = append(inputs, math.Float32frombits(b+d), math.Float32frombits(b-d))
		}
	}
	addMidpoints := func(n int, decode func(int) float32) {
		prev := float32(0)
		for c := range n {
			v := decode(c)
			if v != v || math.IsInf(float64(v), 0) || v < 0 || math.Signbit(float64(v)) {
				continue
			}
			around(v)
			around(float32((float64(prev) + float64(v)) / 2)) // exact: fewer than 24 significant bits
			prev = v
		}
		around(float32(float64(prev) * (1 + 1.0/1024))) // just past the largest code
	}
	addMidpoints(128, func(c int) float32 { return E4M3FNToF32(uint8(c)) })
	addMidpoints(128, func(c int) float32 { return E5M2ToF32(uint8(c)) })
	addMidpoints(1<<15, func(c int) float32 { return BF16ToF32(uint16(c)) })
	addMidpoints(1<<15, func(c int) float32 { return F16ToF32(uint16(c)) })
	for _, v := range []float32{448, 464, 480, 57344, 61440, 65504, 65520, 0x1p-6, 0x1p-9, 0x1p-10, 0x1p-14, 0x1p-16, 0x1p-17, 0x1p-24, 0x1p-25, math.MaxFloat32, math.SmallestNonzeroFloat32} {
		around(v)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1 << 20 {
		inputs = append(inputs, math.Float32frombits(rng.Uint32()))
		// Uniform bits rarely land in FP8 range; also draw there.
		inputs = append(inputs, float32(rng.NormFloat64()*100))
	}
	n := len(inputs)
	for i := range n {
		inputs = append(inputs, -inputs[i])
	}
	inputs = append(inputs, nan32, -nan32, inf32, negInf32, math.Float32frombits(0x7F800001), math.Float32frombits(0xFFC00001))
	for _, x := range inputs {
		checkAgainstReference(t, x)
		if t.Failed() {
			return // the first failure says enough
		}
	}
}

// FuzzF32ToE4M3FN compares the FP8 encoders with the float64 reference on
// arbitrary float32 bit patterns (NaN payloads included).
func FuzzF32ToE4M3FN(f *testing.F) {
	for _, v := range encodeVectors {
		f.Add(math.Float32bits(v.x))
	}
	for _, b := range []uint32{0x43E80000, 0x43E80001, 0x43EFFFFF, 0x3A800000, 0x3A800001, 0x3C7FFFFF, 0x7F800001, 0xFFFFFFFF, 0x00000001} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, bits uint32) {
		checkAgainstReference(t, math.Float32frombits(bits))
	})
}

func TestSlicesMatchScalars(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 3, 4, 5, 1023} {
		f32 := make([]float32, n)
		bf := make([]byte, 2*n)
		codes := make([]byte, n)
		for i := range f32 {
			f32[i] = float32(rng.NormFloat64() * 200)
			if i%7 == 3 {
				f32[i] = math.Float32frombits(rng.Uint32())
			}
			binary.LittleEndian.PutUint16(bf[2*i:], uint16(rng.Uint32()))
			codes[i] = byte(rng.Uint32())
		}
		// dst is longer than needed: only the first n elements may change.
		const sentinel = 0xAB
		outB := bytes.Repeat([]byte{sentinel}, 2*n+2)
		outF := make([]float32, n+1)
		outF[n] = 12345

		F32ToBF16Slice(outB, f32)
		for i, x := range f32 {
			if got := binary.LittleEndian.Uint16(outB[2*i:]); got != F32ToBF16(x) {
				t.Fatalf("F32ToBF16Slice n=%d [%d]: %#04x, scalar %#04x", n, i, got, F32ToBF16(x))
			}
		}
		if outB[2*n] != sentinel {
			t.Fatalf("F32ToBF16Slice n=%d wrote past its elements", n)
		}
		BF16ToF32Slice(outF, bf)
		for i := range n {
			want := BF16ToF32(binary.LittleEndian.Uint16(bf[2*i:]))
			if math.Float32bits(outF[i]) != math.Float32bits(want) {
				t.Fatalf("BF16ToF32Slice n=%d [%d]: %v, scalar %v", n, i, outF[i], want)
			}
		}
		if outF[n] != 12345 {
			t.Fatalf("BF16ToF32Slice n=%d wrote past its elements", n)
		}
		for _, c := range []struct {
			name string
			run  func(dst []byte)
			want func(i int) uint8
		}{
			{"F32ToE4M3FNSlice", func(d []byte) { F32ToE4M3FNSlice(d, f32) }, func(i int) uint8 { return F32ToE4M3FN(f32[i]) }},
			{"F32ToE4M3FNSatSlice", func(d []byte) { F32ToE4M3FNSatSlice(d, f32) }, func(i int) uint8 { return F32ToE4M3FNSat(f32[i]) }},
			{"BF16ToE4M3FNSlice", func(d []byte) { BF16ToE4M3FNSlice(d, bf) }, func(i int) uint8 {
				return F32ToE4M3FN(BF16ToF32(binary.LittleEndian.Uint16(bf[2*i:])))
			}},
			{"BF16ToE4M3FNSatSlice", func(d []byte) { BF16ToE4M3FNSatSlice(d, bf) }, func(i int) uint8 {
				return F32ToE4M3FNSat(BF16ToF32(binary.LittleEndian.Uint16(bf[2*i:])))
			}},
		} {
			out := bytes.Repeat([]byte{sentinel}, n+1)
			c.run(out)
			for i := range n {
				if out[i] != c.want(i) {
					t.Fatalf("%s n=%d [%d]: %#02x, scalar %#02x", c.name, n, i, out[i], c.want(i))
				}
			}
			if out[n] != sentinel {
				t.Fatalf("%s n=%d wrote past its elements", c.name, n)
			}
		}
	}
}

func TestSlicePanics(t *testing.T) {
	for name, f := range map[string]func(){
		"short dst":     func() { BF16ToF32Slice(make([]float32, 1), make([]byte, 4)) },
		"odd src":       func() { BF16ToF32Slice(make([]float32, 4), make([]byte, 3)) },
		"odd src table": func() { BF16ToE4M3FNSatSlice(make([]byte, 4), make([]byte, 5)) },
		"short codes":   func() { F32ToE4M3FNSatSlice(make([]byte, 1), make([]float32, 2)) },
		"short bf16":    func() { F32ToBF16Slice(make([]byte, 3), make([]float32, 2)) },
		"short decode":  func() { E4M3FNToF32Slice(make([]float32, 1), make([]byte, 2)) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}
