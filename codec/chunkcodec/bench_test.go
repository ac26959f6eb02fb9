package chunkcodec

import (
	"fmt"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// Benchmarks on 4 MiB chunks, one goroutine (per-core speed):
//
//	go test ./codec/chunkcodec -run '^$' -bench 'Codec' -benchtime 2s
//
// MB/s is of raw (uncompressed) bytes for both directions; "ratio" is
// encoded/raw. Project targets for ByteGrouped on BF16 N(0, 0.02): ratio
// <= 0.68, encode >= 1.1 GB/s, decode >= 1.7 GB/s per core.

const benchChunk = 4 << 20

type benchInput struct {
	name string
	data []byte
	hint Hint
}

func benchInputs() []benchInput {
	return []benchInput{
		{"bf16", bf16Data(1, benchChunk/2, 0.02), Hint{2, true}},
		{"f32", f32Data(2, benchChunk/4, 0.02), Hint{4, true}},
		{"f16", f16Data(3, benchChunk/2, 0.02), Hint{2, true}},
		{"f8", f8Data(4, benchChunk, 0.02), Hint{1, true}},
	}
}

func BenchmarkCodec(b *testing.B) {
	for _, in := range benchInputs() {
		for _, id := range []ID{Zstd, ByteGrouped} {
			enc, err := EncodeWith(id, nil, in.data, in.hint)
			if err != nil {
				b.Fatal(err)
			}
			ratio := float64(len(enc)) / float64(len(in.data))
			b.Run(fmt.Sprintf("%s/%v/encode", in.name, id), func(b *testing.B) {
				b.SetBytes(int64(len(in.data)))
				dst := make([]byte, 0, len(in.data)+1<<20)
				for b.Loop() {
					if dst, err = EncodeWith(id, dst, in.data, in.hint); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(ratio, "ratio")
			})
			b.Run(fmt.Sprintf("%s/%v/decode", in.name, id), func(b *testing.B) {
				b.SetBytes(int64(len(in.data)))
				dst := make([]byte, len(in.data))
				for b.Loop() {
					if _, err := Decode(id, dst, enc, len(in.data)); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(ratio, "ratio")
			})
		}
	}
}

// BenchmarkEncodeAuto measures Encode, including the choice.
func BenchmarkEncodeAuto(b *testing.B) {
	ins := append(benchInputs(),
		benchInput{"random-bf16", randomBytes(5, benchChunk), Hint{2, true}},
		benchInput{"random-opaque", randomBytes(6, benchChunk), Hint{}},
		benchInput{"text", []byte(textish(benchChunk)), Hint{}},
	)
	for _, in := range ins {
		b.Run(in.name, func(b *testing.B) {
			b.SetBytes(int64(len(in.data)))
			dst := make([]byte, 0, len(in.data)+1<<20)
			var id ID
			var err error
			for b.Loop() {
				if id, dst, err = Encode(dst, in.data, in.hint); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(dst))/float64(len(in.data)), "ratio")
			b.ReportMetric(float64(id), "id")
		})
	}
}

// BenchmarkZstdSettings backs the settings chosen in zstd.go: without
// WithAllLitEntropyCompression the fast levels store float data raw.
func BenchmarkZstdSettings(b *testing.B) {
	data := bf16Data(1, benchChunk/2, 0.02)
	text := []byte(textish(benchChunk))
	for _, lvl := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression} {
		for _, opt := range []struct {
			name string
			o    []zstd.EOption
		}{
			{"plain", nil},
			{"noentropy=false", []zstd.EOption{zstd.WithNoEntropyCompression(false)}},
			{"lowmem", []zstd.EOption{zstd.WithLowerEncoderMem(true)}},
			{"alllit", []zstd.EOption{zstd.WithAllLitEntropyCompression(true)}},
		} {
			opts := append([]zstd.EOption{zstd.WithEncoderLevel(lvl), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false)}, opt.o...)
			e, err := zstd.NewWriter(nil, opts...)
			if err != nil {
				b.Fatal(err)
			}
			for _, in := range []struct {
				name string
				d    []byte
			}{{"bf16", data}, {"text", text}} {
				b.Run(fmt.Sprintf("%v/%s/%s", lvl, opt.name, in.name), func(b *testing.B) {
					b.SetBytes(int64(len(in.d)))
					var out []byte
					for b.Loop() {
						out = e.EncodeAll(in.d, out[:0])
					}
					b.ReportMetric(float64(len(out))/float64(len(in.d)), "ratio")
				})
			}
		}
	}
}

// BenchmarkKernels isolates the stages of ByteGrouped on BF16.
func BenchmarkKernels(b *testing.B) {
	data := bf16Data(1, benchChunk/2, 0.02)
	n := len(data) / 2
	lo, hi := make([]byte, n), make([]byte, n)
	split2(data, lo, hi, true)
	b.Run("split2", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			split2(data, lo, hi, true)
		}
	})
	b.Run("merge2", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		out := make([]byte, len(data))
		for b.Loop() {
			merge2(out, lo, hi, true)
		}
	})
	var hist [256]uint32
	histogram(&hist, hi)
	b.Run("histogram", func(b *testing.B) {
		b.SetBytes(int64(n))
		for b.Loop() {
			hist = [256]uint32{}
			histogram(&hist, hi)
		}
	})
	b.Run("histBlocks", func(b *testing.B) {
		b.SetBytes(int64(n))
		hs := make([][256]uint32, (n+1<<bgFineLog-1)>>bgFineLog)
		var pt [1 << 16]uint32
		for b.Loop() {
			histBlocks(hs, &hist, hi, bgFineLog, &pt, &[4]uint64{})
		}
	})
	var ht huffTable
	enc := new(bgEncoder)
	if _, err := buildTable(nil, &ht, &hist, &enc.hs, &enc.fs); err != nil {
		b.Fatal(err)
	}
	var et encTable
	ht.encTable(&et)
	var dt decTable
	ht.decTable(&dt)
	blk := hi[:1<<bgBlockLog]
	code := encode4X(nil, blk, &et, nil)
	var pt pairTable
	et.fillPairs(&pt)
	b.Run("encode4X", func(b *testing.B) {
		b.SetBytes(int64(len(blk)))
		out := make([]byte, 0, 2*len(blk))
		for b.Loop() {
			out = encode4X(out[:0], blk, &et, nil)
		}
	})
	b.Run("encode4X-pairs", func(b *testing.B) {
		b.SetBytes(int64(len(blk)))
		out := make([]byte, 0, 2*len(blk))
		for b.Loop() {
			out = encode4X(out[:0], blk, &et, &pt)
		}
	})
	b.Run("fillPairs", func(b *testing.B) {
		for b.Loop() {
			et.fillPairs(&pt)
		}
	})
	b.Run("decTable", func(b *testing.B) {
		for b.Loop() {
			ht.decTable(&dt)
		}
	})
	b.Run("decode4X", func(b *testing.B) {
		b.SetBytes(int64(len(blk)))
		out := make([]byte, len(blk))
		for b.Loop() {
			if err := decode4X(out, code, &dt); err != nil {
				b.Fatal(err)
			}
		}
	})
}
