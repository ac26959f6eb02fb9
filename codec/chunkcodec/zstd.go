package chunkcodec

import (
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// zstd settings, measured on 4 MiB of BF16 N(0, 0.02) (see
// BenchmarkZstdSettings):
//
//   - SpeedFastest and SpeedDefault find almost no matches in float data,
//     and then klauspost/zstd stores a block's literals raw unless
//     WithAllLitEntropyCompression is on (it is on by default only for the
//     slower levels): ratio 1.000 without it, 0.780 with it.
//     WithNoEntropyCompression(false) is the default and does not help;
//     WithLowerEncoderMem only trades speed for memory.
//   - SpeedDefault compresses text (tokenizer.json, configs) better than
//     SpeedFastest at about the same speed on float data, so it is used.
//   - No CRC: the store verifies every chunk with BLAKE3.
//
// Each pooled Encoder or Decoder has a concurrency of one, so EncodeAll and
// DecodeAll run on the calling goroutine and do not start workers, and many
// goroutines can compress at once without contending on a shared one.
const zstdMaxWindow = 8 << 20 // SpeedDefault's window

var zstdEncoders = sync.Pool{New: func() any {
	e, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithAllLitEntropyCompression(true),
		zstd.WithEncoderConcurrency(1),
		zstd.WithEncoderCRC(false),
		zstd.WithWindowSize(zstdMaxWindow),
	)
	if err != nil {
		panic(fmt.Sprintf("chunkcodec: zstd encoder options: %v", err))
	}
	return e
}}

var zstdDecoders = sync.Pool{New: func() any {
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		// Decode into the caller's buffer and never past its capacity,
		// which Decode sets to the declared raw length.
		zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderMaxWindow(zstdMaxWindow),
		zstd.WithDecoderMaxMemory(MaxRawLen),
		zstd.IgnoreChecksum(true),
	)
	if err != nil {
		panic(fmt.Sprintf("chunkcodec: zstd decoder options: %v", err))
	}
	return d
}}

// zstdEncode appends one zstd frame holding src to dst.
func zstdEncode(dst, src []byte) []byte {
	e := zstdEncoders.Get().(*zstd.Encoder)
	dst = e.EncodeAll(src, dst)
	zstdEncoders.Put(e)
	return dst
}

// zstdDecode decodes src, which must hold exactly one zstd frame's worth of
// content, into dst[:len(dst)], which it fills completely.
func zstdDecode(dst, src []byte) error {
	d := zstdDecoders.Get().(*zstd.Decoder)
	out, err := d.DecodeAll(src, dst[:0:len(dst)])
	zstdDecoders.Put(d)
	if err != nil {
		return corrupt("zstd: " + err.Error())
	}
	if len(out) != len(dst) {
		return corrupt(fmt.Sprintf("zstd: decoded %d bytes, want %d", len(out), len(dst)))
	}
	if len(out) > 0 && &out[0] != &dst[0] {
		// DecodeAll moved to a new buffer; with the cap limit on and
		// cap == len it does not, but copy rather than rely on that.
		copy(dst, out)
	}
	return nil
}
