package chunker

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/zeebo/blake3"
)

// randBytes returns n bytes from a SplitMix64 stream. The tests carry their
// own generator so that golden values cannot change with a library PRNG.
func randBytes(seed uint64, n int) []byte {
	b := make([]byte, n+8)
	s := seed
	for i := 0; i < n; i += 8 {
		s += 0x9e3779b97f4a7c15
		z := s
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		binary.LittleEndian.PutUint64(b[i:], z^(z>>31))
	}
	return b[:n]
}

func sum(b []byte) string {
	d := blake3.Sum256(b)
	return hex.EncodeToString(d[:])
}

// chunkAll returns copies of all chunks of r.
func chunkAll(t testing.TB, r io.Reader, p Params) [][]byte {
	t.Helper()
	c := New(r, p)
	var out [][]byte
	for {
		b, err := c.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, bytes.Clone(b))
	}
}

type golden struct {
	n   int
	sum string
}

// goldenDefault pins the chunks of randBytes(1, 32 MiB) with DefaultParams.
// Regenerate with HEFT_CHUNKER_GOLDEN=1 go test -run TestGolden -v, but only
// for a deliberate format change: see the package comment.
var goldenDefault = []golden{
	{1134219, "7299dc7e3db1ada34c43890bf1c086ce46747288f32c421c69f49aebd06ba79b"},
	{1421378, "a6fd1cd2e7b886cfc652414185b851eaa308bf2b56cc679d55851e2a5e75909c"},
	{1301446, "f5a753d104a303a617ce29e61ee36987c9e912c9161ef6856ae042599e1829fb"},
	{383648, "9cea2f84b9a388cf1450197c6da00aff39c16a0cf4894d144800a4a186d481ed"},
	{1597212, "334b8458bb27fddc2ec2c679681e17967565c1a4190b0283669899d3110b2ed4"},
	{1408088, "ad8d4d8d8349f7253805660af8cbfea2b3fad53767e17ee5f06b160a79bfa07c"},
	{1061336, "457e1e95d63b20d8c694fa8fe2abcd9a487c8b936474ae0eba93e34eba6dd6f9"},
	{1943681, "ee347f596f97e7a711d864a4e7f7b63de351fdf7f8d98bdd6782cda583be9be4"},
	{723191, "45de577df220c875d090a6efaead6bb32dab947040065c1215f50db0abfebfc3"},
	{1423572, "d240d647c8e330ab515a93ef8ae64e10e038a07796776344a629d3781824685c"},
	{1104656, "c68d6e9a34ce6deb0656f39e8d59f4d890201589336b671e839b78a2c829c492"},
	{1471691, "e9c2cb4233fd5a905c11001782be93f3ee0ad4f0d5b8c172e8796547f52a3283"},
	{1144408, "49a814af080a9e217b8dd373189b5c399d0b349a05e2d7311d43989a3607d8b7"},
	{1991731, "5d64c7192a4c98fa8fb0035bff69c0a3c525dfc5c9edc2632ac954a92b3b1e4f"},
	{551021, "d61e43676005b62d805edbc9b48409c28d450d8e28c8daed643a214ef2d18b79"},
	{1234990, "f85a70dcc85396e281cbff1d42201d4dff4c160f381c230ecbb5717169d6cccf"},
	{1176587, "b98af84a166b7eeec2f53f760e06a357c61b333ec552e0352a4db4ca9c5a9f32"},
	{1158027, "96620e16623a91571698f3179e94161d3caf6b3fe749cba1e1002c7edabc762e"},
	{2112816, "a9ecd945d81846cb5e2c91b8cca43e1279de04ad239900b697097a5b173315b5"},
	{1065477, "e8f8587d1f81440e538a85780adc724a5b0f71fde0e42505a51a2d819704a7d4"},
	{1099250, "408caf45c4170ae81bc9b96a0492afadb3bfeecd5dc8e973cefb417b194ad3b2"},
	{1159394, "82fc61e7d96d029874711067a63d5cbcb7ab39850e7594d1f583ca0d04c3947c"},
	{1325135, "6f39bf613893aad4845320a742ddae66614299ff93af768d7c236b147e8355dd"},
	{2003571, "8603dfa83e0958ec5ee4af334ebb174f2c8fc34a5a2600eeffee7b57f70b28ac"},
	{384808, "5a360b1da3b72b43da9874ec88998b43f39d1590d1ce4889167d476104bb91e7"},
	{1181801, "3bfd1adfa077142caf9066af9697b7ac4956ef4cf5a715f0f329c86385db94c6"},
	{991298, "8c754b8d6dbf8e77159e51892a5aea7b47a1f24431bf686e0f22ee1717a489d9"},
}

// goldenSmallLens and goldenSmallSum pin randBytes(2, 1 MiB) with small
// parameters, which exercises many more boundaries: the chunk lengths, and
// the BLAKE3 of the concatenated BLAKE3 digests of the chunks.
var goldenSmallLens = []int{11611, 17793, 9066, 9208, 11610, 4204, 9086, 9001, 6363, 9170, 8326, 8306, 8495, 8808, 8346, 8599, 9122, 2760, 9655, 7342, 8268, 9854, 12461, 10673, 10362, 12869, 9817, 10942, 10451, 10435, 10392, 6298, 10693, 8260, 8910, 13313, 8560, 10336, 11222, 11352, 9567, 8431, 8306, 8892, 9159, 8289, 8720, 9935, 14132, 11450, 8604, 6976, 8888, 9594, 9927, 4181, 11465, 8982, 10611, 4089, 9022, 11864, 12338, 8078, 9469, 9626, 8435, 8476, 11194, 3521, 9241, 14101, 8240, 11551, 10087, 9698, 8550, 2220, 9974, 18936, 11362, 9073, 9570, 12405, 9175, 8749, 9130, 8790, 10513, 9864, 10589, 11201, 5639, 9935, 7756, 9737, 8534, 9492, 3314, 9519, 10445, 8366, 9455, 10361, 12237, 8455, 8243, 9986, 8638, 3207, 10160, 7518}

const goldenSmallSum = "8dbee2fe2b30ef7591f9a94f861502b108c37239ce54ef2ebbcc16194d26410b"

var smallParams = Params{Min: 2048, Avg: 8192, Max: 32768}

func regenerate() bool { return os.Getenv("HEFT_CHUNKER_GOLDEN") != "" }

func checkGolden(t *testing.T, name string, data []byte, p Params, want []golden) {
	t.Helper()
	got := chunkAll(t, bytes.NewReader(data), p)
	if regenerate() {
		var sb strings.Builder
		fmt.Fprintf(&sb, "var %s = []golden{\n", name)
		for _, c := range got {
			fmt.Fprintf(&sb, "\t{%d, %q},\n", len(c), sum(c))
		}
		sb.WriteString("}\n")
		t.Log("\n" + sb.String())
		return
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d chunks, want %d", name, len(got), len(want))
	}
	for i, c := range got {
		if len(c) != want[i].n || sum(c) != want[i].sum {
			t.Errorf("%s: chunk %d: len %d sum %s, want len %d sum %s", name, i, len(c), sum(c), want[i].n, want[i].sum)
		}
	}
}

func TestGolden(t *testing.T) {
	checkGolden(t, "goldenDefault", randBytes(1, 32<<20), Params{}, goldenDefault)

	var lens []int
	h := blake3.New()
	for _, c := range chunkAll(t, bytes.NewReader(randBytes(2, 1<<20)), smallParams) {
		lens = append(lens, len(c))
		d := blake3.Sum256(c)
		h.Write(d[:])
	}
	all := hex.EncodeToString(h.Sum(nil))
	if regenerate() {
		t.Logf("\nvar goldenSmallLens = %#v\n\nconst goldenSmallSum = %q", lens, all)
		return
	}
	if fmt.Sprint(lens) != fmt.Sprint(goldenSmallLens) {
		t.Errorf("small: lengths %v, want %v", lens, goldenSmallLens)
	}
	if all != goldenSmallSum {
		t.Errorf("small: digest %s, want %s", all, goldenSmallSum)
	}
}

// TestGearTable pins the gear table; a change here is a format change.
func TestGearTable(t *testing.T) {
	var b []byte
	for _, v := range gear {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	const want = "00b067f2b05d45f09b9a22b3970abd7d14143d53db488877f06085b7058c4f67"
	if got := sum(b); got != want || regenerate() {
		t.Fatalf("gear table digest %s, want %s", got, want)
	}
}

func TestInvariants(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Params
		n    int
	}{
		{"default", Params{}, 40 << 20},
		{"small", smallParams, 3 << 20},
		{"tiny", Params{Min: 64, Avg: 256, Max: 1024}, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := randBytes(3, tc.n)
			p := tc.p.orDefault()
			// A reader that returns one byte at a time exercises fill.
			for _, r := range []io.Reader{bytes.NewReader(data), iotest.HalfReader(bytes.NewReader(data))} {
				chunks := chunkAll(t, r, tc.p)
				var cat []byte
				for i, c := range chunks {
					if len(c) > p.Max || (len(c) < p.Min && i != len(chunks)-1) || len(c) == 0 {
						t.Fatalf("chunk %d of %d has length %d outside [%d,%d]", i, len(chunks), len(c), p.Min, p.Max)
					}
					cat = append(cat, c...)
				}
				if !bytes.Equal(cat, data) {
					t.Fatal("concatenated chunks differ from input")
				}
			}
		})
	}
}

// TestZeros checks the Max cut: a run of zero bytes hashes to a constant and
// never matches a mask.
func TestZeros(t *testing.T) {
	p := smallParams
	data := make([]byte, 5*p.Max+123)
	chunks := chunkAll(t, bytes.NewReader(data), p)
	if len(chunks) != 6 {
		t.Fatalf("%d chunks, want 6", len(chunks))
	}
	for i, c := range chunks[:5] {
		if len(c) != p.Max {
			t.Fatalf("chunk %d has length %d, want %d", i, len(c), p.Max)
		}
	}
	if len(chunks[5]) != 123 {
		t.Fatalf("last chunk has length %d", len(chunks[5]))
	}
}

func TestShortInputs(t *testing.T) {
	for _, n := range []int{0, 1, 63, 64, 2047, 2048, 2049, 40000} {
		data := randBytes(4, n)
		chunks := chunkAll(t, bytes.NewReader(data), smallParams)
		if n == 0 && len(chunks) != 0 {
			t.Fatalf("empty input gave %d chunks", len(chunks))
		}
		if got := bytes.Join(chunks, nil); !bytes.Equal(got, data) {
			t.Fatalf("n=%d: chunks do not concatenate to the input", n)
		}
	}
}

// TestInsertion checks the point of content-defined chunking: inserting a
// few bytes in the middle of a 20 MiB input changes only the chunks around
// the edit.
func TestInsertion(t *testing.T) {
	data := randBytes(5, 20<<20)
	for _, ins := range []int{1, 7, 100} {
		at := len(data)/2 + 12345
		edited := append(append(append([]byte(nil), data[:at]...), randBytes(99, ins)...), data[at:]...)
		old := map[string]bool{}
		for _, c := range chunkAll(t, bytes.NewReader(data), Params{}) {
			old[sum(c)] = true
		}
		changed := 0
		for _, c := range chunkAll(t, bytes.NewReader(edited), Params{}) {
			if !old[sum(c)] {
				changed++
			}
		}
		if changed < 1 || changed > 3 {
			t.Errorf("inserting %d bytes changed %d chunks, want 1-3", ins, changed)
		}
	}
}

func TestParams(t *testing.T) {
	bad := []Params{
		{Min: 32, Avg: 1024, Max: 4096},
		{Min: 1024, Avg: 1024, Max: 4096},
		{Min: 1024, Avg: 3000, Max: 8192},
		{Min: 512, Avg: 1024, Max: 1024},
		{Avg: 1 << 20},
		{Min: 64, Avg: 128, Max: 4096},
	}
	for _, p := range bad {
		if p.Validate() == nil {
			t.Errorf("%+v: Validate accepted it", p)
		}
		c := New(strings.NewReader("x"), p)
		if _, err := c.Next(); err == nil || err == io.EOF {
			t.Errorf("%+v: Next returned %v", p, err)
		}
	}
	if err := DefaultParams().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestReadError(t *testing.T) {
	boom := errors.New("boom")
	r := io.MultiReader(bytes.NewReader(randBytes(6, 100)), iotest.ErrReader(boom))
	c := New(r, smallParams)
	if _, err := c.Next(); !errors.Is(err, boom) {
		t.Fatalf("Next returned %v, want %v", err, boom)
	}
	if _, err := c.Next(); !errors.Is(err, boom) {
		t.Fatalf("second Next returned %v, want %v", err, boom)
	}
}

func TestReset(t *testing.T) {
	a, b := randBytes(7, 1<<20), randBytes(8, 1<<20)
	c := New(bytes.NewReader(a), smallParams)
	for {
		if _, err := c.Next(); err != nil {
			break
		}
	}
	c.Reset(bytes.NewReader(b))
	var got [][]byte
	for {
		ch, err := c.Next()
		if err != nil {
			break
		}
		got = append(got, bytes.Clone(ch))
	}
	want := chunkAll(t, bytes.NewReader(b), smallParams)
	if len(got) != len(want) {
		t.Fatalf("after Reset: %d chunks, want %d", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("after Reset: chunk %d differs", i)
		}
	}
}

// BenchmarkChunker measures one core; the goal is at least 1 GB/s.
func BenchmarkChunker(b *testing.B) {
	data := randBytes(9, 64<<20)
	r := bytes.NewReader(data)
	c := New(r, Params{})
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(data)
		c.Reset(r)
		for {
			_, err := c.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkCut measures the boundary search alone, without the buffer copy.
func BenchmarkCut(b *testing.B) {
	data := randBytes(9, 64<<20)
	p := DefaultParams()
	s, l := p.masks()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		for d := data; len(d) > 0; {
			d = d[cut(d, p.Min, p.Avg, p.Max, s, l):]
		}
	}
}
